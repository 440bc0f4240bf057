//! The retention job deletes exactly what is past its age, in batches, and nothing still needed.

use chrono::{DateTime, Duration, Utc};
use fred::prelude::*;
use stampede::coupon::writer::{Outcome, Writer};
use stampede::coupon::{self, Catalog, fence};
use stampede::id::{CouponId, UserId};
use stampede::retention::{self, Pruned};
use stampede::store::Stores;

use crate::coupons::{app_without_writer, campaign, create_users};

#[tokio::test]
async fn pruning_deletes_old_delivered_outbox_rows_and_old_keys_in_batches_and_keeps_the_rest() {
    // Built, not run: its own retention job would race the one pass this test makes.
    let app = app_without_writer().await;
    let stores = &app.state().stores;
    let db = &stores.db;
    let now = Utc::now();
    let old = now - Duration::days(8);
    // 2,500 old delivered-and-ranked rows (three batches), an old row still owed, a recent delivered row.
    sqlx::query(
        "INSERT INTO outbox (event_id, order_id, payload, created_at, delivered_at, sales_applied_at)
         SELECT UUID(), seq, '{}', ?, ?, ? FROM seq_1_to_2500",
    )
    .bind(old.naive_utc())
    .bind(old.naive_utc())
    .bind(old.naive_utc())
    .execute(db)
    .await
    .unwrap();
    for (delivered, applied) in [(None, None), (Some(now), Some(now)), (Some(old), None)] {
        sqlx::query(
            "INSERT INTO outbox (event_id, order_id, payload, created_at, delivered_at, sales_applied_at)
             VALUES (UUID(), 1, '{}', ?, ?, ?)",
        )
        .bind(old.naive_utc())
        .bind(delivered.map(|at| at.naive_utc()))
        .bind(applied.map(|at| at.naive_utc()))
        .execute(db)
        .await
        .unwrap();
    }
    for (key, age) in [("old", Duration::hours(49)), ("day", Duration::hours(23)), ("new", Duration::zero())] {
        sqlx::query(
            "INSERT INTO idempotency_keys (user_id, idem_key, amount, response, created_at) VALUES (1, ?, 1, '{}', ?)",
        )
        .bind(key)
        .bind((now - age).naive_utc())
        .execute(db)
        .await
        .unwrap();
    }

    let config = retention::Config::default();
    let pruned = retention::prune_once(stores, &config).await.unwrap();
    assert_eq!(pruned, Pruned { outbox: 2_500, idempotency_keys: 1, coupon_states: 0 });
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(db).await.unwrap();
    assert_eq!(left, 3, "the owed, the recent and the unranked rows stay");
    let keys: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT idem_key FROM idempotency_keys ORDER BY idem_key").fetch_all(db).await.unwrap();
    assert_eq!(keys, vec![b"day".to_vec(), b"new".to_vec()], "a key younger than 24 h is always remembered");
    assert_eq!(retention::prune_once(stores, &config).await.unwrap(), Pruned::default());
}

/// How many of the coupon's four Redis keys (meta, stock, issued, queue) exist.
async fn coupon_keys(stores: &Stores, coupon: CouponId) -> i64 {
    let keys: Vec<String> = ["meta", "stock", "issued", "queue"]
        .iter()
        .map(|k| stores.redis.keys.key(format!("coupon:{{{coupon}}}:{k}")))
        .collect();
    stores.redis.client().exists(keys).await.unwrap()
}

#[tokio::test]
async fn an_ended_fully_persisted_campaign_loses_its_redis_state_for_good_and_still_answers_its_holders() {
    let app = app_without_writer().await;
    let state = app.state();
    let stores = &state.stores;
    let now = Utc::now();
    let window = |name: &'static str, end: DateTime<Utc>| {
        let spec = coupon::CouponSpec {
            starts_at: Some(end - Duration::hours(1)),
            ends_at: Some(end),
            ..coupon::CouponSpec::open_ended(name, coupon::DiscountType::Fixed, 500, 10)
        };
        coupon::NewCoupon::parse(spec, now).unwrap()
    };
    let long_ago = now - Duration::hours(2);
    let done = state.coupons.create(window("done", long_ago)).await.unwrap().id;
    let queued = state.coupons.create(window("queued", long_ago)).await.unwrap().id;
    let recent = state.coupons.create(window("recent", now - Duration::minutes(10))).await.unwrap().id;
    let running = campaign(state, 10).await;
    let users: Vec<UserId> = create_users(stores, 4).await.into_iter().map(|u| UserId::new(u).unwrap()).collect();
    let gate = fence::ScriptGate::default();
    // Decided inside each window (the script takes the decision time from its caller), then persisted.
    let before_end = (long_ago - Duration::minutes(1)).timestamp_micros();
    let replies = gate.issue(stores, done, &users[..3], before_end).await.unwrap();
    assert!(replies.iter().all(|r| matches!(r, coupon::cache::IssueReply::Issued(_))), "{replies:?}");
    gate.issue(stores, queued, &users[..1], before_end).await.unwrap();
    let mut writer = Writer::new();
    assert_eq!(writer.drain_once(stores).await.unwrap(), Outcome::Persisted { issuances: 4, backlog: false });
    // `queued` has one more issuance waiting for the writer (decided just before its end, run late).
    gate.issue(stores, queued, &users[1..2], before_end).await.unwrap();

    let config = retention::Config::default();
    let pruned = retention::prune_once(stores, &config).await.unwrap();
    assert_eq!(pruned.coupon_states, 1, "only `done`: ended over an hour ago with nothing left to persist");
    assert_eq!(coupon_keys(stores, done).await, 0);
    assert_eq!(coupon_keys(stores, queued).await, 4, "its stream still holds an entry");
    assert_eq!(coupon_keys(stores, recent).await, 3, "ended 10 minutes ago (no holder, so no `issued` hash)");
    assert!(!coupon::cache::registered(&stores.redis).await.unwrap().contains(&done));

    // Holders and everyone else get the contract's answer for an ended campaign, and nothing issues.
    for user in &users {
        let refused = state.coupons.issue(done, *user).await.unwrap_err();
        assert!(matches!(refused, coupon::Error::NotActive(_)), "{refused:?}");
    }
    let progress = state.coupons.progress(done).await.unwrap();
    assert_eq!((progress.issued, progress.remaining, progress.persisted), (3, 7, 3));
    // users[1]'s `queued` is not persisted yet: the list finds it in Redis, `done` in MySQL.
    let held = state.coupons.held(users[1], None).await.unwrap();
    assert_eq!(held.iter().map(|h| h.coupon.id).collect::<Vec<_>>(), vec![queued, done]);
    assert!(coupon::held_by(stores, users[2], done).await.unwrap().is_some());

    // Nothing loads it back: not the start-up check, not the check after Redis forgot its scripts, not a
    // rebuild asked for directly.
    coupon::restore_all(stores, &Catalog::default()).await.unwrap();
    let _: () = stores.redis.client().script_flush_cluster(false).await.unwrap();
    gate.issue(stores, running, &users[..1], Utc::now().timestamp_micros()).await.unwrap();
    let coupon = coupon::db::find_coupon(&stores.db, done).await.unwrap().unwrap();
    assert_eq!(fence::verify(stores, &coupon).await.unwrap(), fence::Checked::Pruned);
    assert_eq!(fence::rebuild(stores, &coupon).await.unwrap(), fence::Checked::Pruned);
    assert_eq!(coupon_keys(stores, done).await, 0);

    // Once the writer persisted `queued`'s entry, the next pass prunes it too; then there is nothing left.
    // A new writer: its first step reads every registered stream, not only the ones busy in this one.
    let mut writer = Writer::new();
    while writer.drain_once(stores).await.unwrap() != Outcome::Idle {}
    assert_eq!(retention::prune_once(stores, &config).await.unwrap().coupon_states, 1);
    assert_eq!(coupon_keys(stores, queued).await, 0);
    assert_eq!(retention::prune_once(stores, &config).await.unwrap(), Pruned::default());
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_coupons").fetch_one(&stores.db).await.unwrap();
    assert_eq!(rows, 6, "3 of `done`, 2 of `queued`, 1 of `running`");
}
