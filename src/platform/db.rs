//! SQL of the relay's side of the `outbox` table (the pay transaction inserts the rows: `order::db`).

use chrono::{DateTime, Utc};
use sqlx::{MySqlConnection, MySqlPool};

use crate::store::mysql;

/// An outbox row the relay still owes something.
#[derive(Debug, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    /// The event JSON as written by the pay transaction.
    pub payload: String,
    pub attempts: i32,
    pub delivered_at: Option<DateTime<Utc>>,
    pub sales_applied_at: Option<DateTime<Utc>>,
}

/// Locks up to `limit` due rows inside the caller's READ COMMITTED transaction. SKIP LOCKED leaves rows
/// another relay instance holds to it, so instances share the backlog without waiting on each other; READ
/// COMMITTED takes no gap locks, so the pay transactions' outbox INSERTs never wait on the relay.
pub async fn claim_due(
    tx: &mut MySqlConnection,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, CAST(payload AS CHAR) AS payload, attempts, delivered_at, sales_applied_at FROM outbox
         WHERE pending = 1 AND next_attempt_at <= ?
         ORDER BY next_attempt_at LIMIT ?
         FOR UPDATE SKIP LOCKED",
    )
    .bind(mysql::datetime(now))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
}

/// Records that this pass finished `ids` (delivered and sales applied, each at `now` unless done before), in
/// one statement: most passes finish every row they claimed.
pub async fn record_done(tx: &mut MySqlConnection, ids: &[i64], now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let now = mysql::datetime(now);
    let mut query = sqlx::QueryBuilder::new("UPDATE outbox SET delivered_at = COALESCE(delivered_at, ");
    query.push_bind(now).push("), sales_applied_at = COALESCE(sales_applied_at, ").push_bind(now);
    query.push("), next_attempt_at = ").push_bind(now).push(", last_error = NULL WHERE id IN ");
    mysql::push_list(&mut query, ids.iter().copied());
    query.build().execute(&mut *tx).await?;
    Ok(())
}

/// Records what one pass did to a row it did not finish, and when to try the rest again.
pub async fn record_unfinished(
    tx: &mut MySqlConnection,
    id: i64,
    delivered_at: Option<DateTime<Utc>>,
    sales_applied_at: Option<DateTime<Utc>>,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    last_error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET delivered_at = ?, sales_applied_at = ?, attempts = ?, next_attempt_at = ?, last_error = ?
         WHERE id = ?",
    )
    .bind(delivered_at.map(mysql::datetime))
    .bind(sales_applied_at.map(mysql::datetime))
    .bind(attempts)
    .bind(mysql::datetime(next_attempt_at))
    .bind(last_error)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Rows still owed and the creation time of the oldest.
pub async fn backlog(db: &MySqlPool) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE pending = 1").fetch_one(db).await
}

/// Deletes up to `limit` outbox rows delivered and ranked before `before` (the retention job); returns how
/// many. `pending = 0` is both done; the index on `delivered_at` finds the old ones.
pub async fn prune_delivered(db: &MySqlPool, before: DateTime<Utc>, limit: u64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM outbox WHERE delivered_at < ? AND pending = 0 LIMIT ?")
        .bind(mysql::datetime(before))
        .bind(limit)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}
