//! The retention job deletes exactly what is past its age, in batches, and nothing still needed.

use chrono::{Duration, Utc};
use stampede::retention::{self, Pruned};

use crate::coupons::app_without_writer;

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
    assert_eq!(pruned, Pruned { outbox: 2_500, idempotency_keys: 1 });
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(db).await.unwrap();
    assert_eq!(left, 3, "the owed, the recent and the unranked rows stay");
    let keys: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT idem_key FROM idempotency_keys ORDER BY idem_key").fetch_all(db).await.unwrap();
    assert_eq!(keys, vec![b"day".to_vec(), b"new".to_vec()], "a key younger than 24 h is always remembered");
    assert_eq!(retention::prune_once(stores, &config).await.unwrap(), Pruned::default());
}
