//! The users' existence index: the Redis bitmap and its in-process mirror must agree bit for bit.

use stampede::id::UserId;
use stampede::user::cache::KnownUsers;

use crate::support::TestApp;

#[tokio::test]
async fn the_known_users_mirror_loaded_from_redis_holds_exactly_the_created_users() {
    let app = TestApp::spawn().await;
    let mut created = Vec::new();
    for n in 0..20 {
        created.push(app.create_user(&format!("u{n}")).await);
    }
    // Ids 9 and 10 straddle a byte boundary of the bitmap; skip some so absent ids sit between present ones.
    let kept: Vec<i64> = created.iter().copied().filter(|id| id % 3 != 0).collect();
    sqlx::query("DELETE FROM users WHERE MOD(id, 3) = 0").execute(app.db()).await.unwrap();
    let redis = &app.state.stores.redis;
    let _: () = fred::prelude::KeysInterface::del(redis.client(), redis.keys.key("users:known")).await.unwrap();
    let ids: Vec<UserId> = kept.iter().map(|id| UserId::new(*id).unwrap()).collect();
    stampede::user::cache::remember(redis, &ids).await.unwrap();

    let mirror = KnownUsers::default();
    mirror.refresh(redis).await.unwrap();
    for id in 1..=created.iter().max().unwrap() + 16 {
        let expected = kept.contains(&id);
        assert_eq!(mirror.contains(UserId::new(id).unwrap()), expected, "user {id}");
    }

    // A user the mirror has not seen is still found (Redis, then MySQL), and a missing one is refused.
    let fresh = KnownUsers::default();
    stampede::user::ensure_known(&app.state.stores, &fresh, ids[0]).await.unwrap();
    assert!(fresh.contains(ids[0]));
    let missing = UserId::new(*created.iter().find(|id| *id % 3 == 0).unwrap()).unwrap();
    assert!(stampede::user::ensure_known(&app.state.stores, &fresh, missing).await.is_err());
    assert!(!fresh.contains(missing));
}

#[tokio::test]
async fn a_tail_refresh_reads_only_the_end_of_the_bitmap_and_a_full_one_the_rest() {
    let app = TestApp::spawn().await;
    let redis = &app.state.stores.redis;
    let key = redis.keys.key("users:known");
    // Far apart: 8,000,000 is 1 MB into the bitmap, so its tail is far past the first id.
    let (early, late, newest) =
        (UserId::new(3).unwrap(), UserId::new(8_000_000).unwrap(), UserId::new(8_000_100).unwrap());
    let _: () = fred::prelude::KeysInterface::del(redis.client(), &key).await.unwrap();
    stampede::user::cache::remember(redis, &[late]).await.unwrap();
    let mirror = KnownUsers::default();
    mirror.refresh(redis).await.unwrap();
    assert!(mirror.contains(late));

    // A new user near the end, and an old one remembered late far from it.
    stampede::user::cache::remember(redis, &[newest, early]).await.unwrap();
    mirror.refresh_tail(redis).await.unwrap();
    assert!(mirror.contains(newest), "the tail holds the newest users");
    assert!(!mirror.contains(early), "a tail refresh does not read the start of the bitmap");
    mirror.refresh(redis).await.unwrap();
    assert!(mirror.contains(early));
}
