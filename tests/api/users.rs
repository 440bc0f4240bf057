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
