//! SQL of the `balances`, `balance_history` and `idempotency_keys` tables.

use chrono::{DateTime, Utc};
use sqlx::{Connection, MySqlConnection, MySqlPool};

use super::{Charged, Entry, EntryType, IdempotencyKey};
use crate::id::{OrderId, UserId};
use crate::store::mysql;

/// What a charge transaction did.
#[derive(Debug)]
pub enum ChargeOutcome {
    /// Committed now.
    Charged(Charged),
    /// The key was used before (by a committed charge): its amount and response.
    Replayed { amount: i64, response: Charged },
    /// The balance would exceed the maximum; nothing changed.
    OverLimit,
    /// No such user (the balance row's foreign key refused it).
    NoUser,
}

/// The balance, or `None` for a user who never charged.
pub async fn amount(db: &MySqlPool, user_id: UserId) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT amount FROM balances WHERE user_id = ?").bind(user_id).fetch_optional(db).await
}

/// One charge transaction.
///
/// With a key, the key row is inserted first: a concurrent retry's INSERT waits on that uncommitted row's
/// lock and then fails as a duplicate once the first commits, so it can read the stored response; if the
/// first rolled back, the retry's INSERT succeeds and it charges instead. Lock order: key row, then balance
/// row, as in every transaction touching a balance after an order row.
pub async fn charge(
    db: &MySqlPool,
    user_id: UserId,
    amount: i64,
    balance_max: i64,
    key: Option<&IdempotencyKey>,
    now: DateTime<Utc>,
) -> Result<ChargeOutcome, sqlx::Error> {
    let mut conn = db.acquire().await?;
    // A user's first charge finds no balance row: create it outside the charge transaction, then run the
    // transaction again (at most once more; creating the row is idempotent).
    for first_round in [true, false] {
        let mut tx = conn.begin().await?;
        if let Some(key) = key {
            let claimed = sqlx::query(
                "INSERT INTO idempotency_keys (user_id, idem_key, amount, response, created_at) VALUES (?, ?, ?, '{}', ?)",
            )
            .bind(user_id)
            .bind(key.as_str())
            .bind(amount)
            .bind(mysql::datetime(now))
            .execute(&mut *tx)
            .await;
            match claimed {
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    tx.rollback().await?;
                    return replay(&mut conn, user_id, key).await;
                }
                other => {
                    other?;
                }
            }
        }
        let updated =
            sqlx::query("UPDATE balances SET amount = LAST_INSERT_ID(amount + ?) WHERE user_id = ? AND amount <= ?")
                .bind(amount)
                .bind(user_id)
                .bind(balance_max - amount)
                .execute(&mut *tx)
                .await?;
        if updated.rows_affected() == 0 {
            let exists = sqlx::query_scalar::<_, i64>("SELECT amount FROM balances WHERE user_id = ?")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            tx.rollback().await?;
            if exists || amount > balance_max {
                return Ok(ChargeOutcome::OverLimit);
            }
            if !first_round || !create_row(&mut conn, user_id).await? {
                return Ok(ChargeOutcome::NoUser);
            }
            continue;
        }
        let balance = updated_amount(&updated);
        let transaction_id = insert_entry(&mut tx, user_id, EntryType::Charge, amount, balance, None, now).await?;
        let charged = Charged { user_id, balance, charged_amount: amount, transaction_id, charged_at: now };
        if let Some(key) = key {
            let response = serde_json::to_string(&charged).expect("a charge serializes");
            sqlx::query("UPDATE idempotency_keys SET response = ? WHERE user_id = ? AND idem_key = ?")
                .bind(response)
                .bind(user_id)
                .bind(key.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        return Ok(ChargeOutcome::Charged(charged));
    }
    unreachable!("the second round returns")
}

/// Creates a zero balance row; `false` when the user does not exist.
async fn create_row(conn: &mut MySqlConnection, user_id: UserId) -> Result<bool, sqlx::Error> {
    let created =
        sqlx::query("INSERT INTO balances (user_id, amount) VALUES (?, 0) ON DUPLICATE KEY UPDATE amount = amount")
            .bind(user_id)
            .execute(&mut *conn)
            .await;
    match created {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Ok(false),
        Err(e) => Err(e),
    }
}

/// The committed response of an earlier charge with this key.
async fn replay(
    conn: &mut MySqlConnection,
    user_id: UserId,
    key: &IdempotencyKey,
) -> Result<ChargeOutcome, sqlx::Error> {
    let (amount, response): (i64, String) = sqlx::query_as(
        "SELECT amount, CAST(response AS CHAR) FROM idempotency_keys WHERE user_id = ? AND idem_key = ?",
    )
    .bind(user_id)
    .bind(key.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let response = serde_json::from_str(&response)
        .map_err(|e| sqlx::Error::Decode(format!("idempotency_keys.response: {e}").into()))?;
    Ok(ChargeOutcome::Replayed { amount, response })
}

/// The balance an `UPDATE balances SET amount = LAST_INSERT_ID(<new amount>) ...` wrote: MySQL and MariaDB
/// return the argument of `LAST_INSERT_ID(expr)` as the statement's insert id, so the new balance comes back
/// with the update instead of from a second query (a pay runs a dozen statements; this was one of them).
/// Balances are never negative (guarded), so the unsigned id holds them.
fn updated_amount(updated: &sqlx::mysql::MySqlQueryResult) -> i64 {
    updated.last_insert_id() as i64
}

/// Appends a history row; returns its id (the `transactionId`).
async fn insert_entry(
    tx: &mut MySqlConnection,
    user_id: UserId,
    kind: EntryType,
    amount: i64,
    balance_after: i64,
    order_id: Option<OrderId>,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO balance_history (user_id, type, amount, balance_after, order_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(user_id)
    .bind(kind)
    .bind(amount)
    .bind(balance_after)
    .bind(order_id)
    .bind(mysql::datetime(now))
    .execute(&mut *tx)
    .await?;
    Ok(done.last_insert_id() as i64)
}

/// Deducts `amount` (>= 0) for `order_id` inside the caller's pay transaction and writes the PAYMENT entry;
/// `None` when the balance is short (nothing changed). The guard in the UPDATE, not an earlier read, is
/// what keeps a balance from going below 0 under concurrency.
pub async fn deduct(
    tx: &mut MySqlConnection,
    user_id: UserId,
    amount: i64,
    order_id: OrderId,
    now: DateTime<Utc>,
) -> Result<Option<i64>, sqlx::Error> {
    if amount == 0 {
        // Fully discounted: nothing to deduct and no entry (PAYMENT amounts are negative).
        let balance = sqlx::query_scalar("SELECT amount FROM balances WHERE user_id = ?")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        return Ok(Some(balance.unwrap_or(0)));
    }
    let updated =
        sqlx::query("UPDATE balances SET amount = LAST_INSERT_ID(amount - ?) WHERE user_id = ? AND amount >= ?")
            .bind(amount)
            .bind(user_id)
            .bind(amount)
            .execute(&mut *tx)
            .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    let balance = updated_amount(&updated);
    insert_entry(tx, user_id, EntryType::Payment, -amount, balance, Some(order_id), now).await?;
    Ok(Some(balance))
}

/// Newest first.
pub async fn history(db: &MySqlPool, user_id: UserId, limit: u32) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id AS transaction_id, type, amount, balance_after, created_at FROM balance_history
         WHERE user_id = ? ORDER BY id DESC LIMIT ?",
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Deletes up to `limit` idempotency keys created before `before` (the retention job); returns how many.
pub async fn prune_idempotency_keys(db: &MySqlPool, before: DateTime<Utc>, limit: u64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ? LIMIT ?")
        .bind(mysql::datetime(before))
        .bind(limit)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}
