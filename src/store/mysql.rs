//! The MySQL (or MariaDB) pool and the embedded migrations.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::MySqlPool;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use super::StoreError;

/// How long a request waits for a free connection before the pool reports MySQL unavailable (503).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Every migration under `migrations/`, compiled in so the binary migrates without the source tree.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens a pool. Sessions run in UTC (sqlx's default `time_zone`), so DATETIME columns hold UTC.
pub async fn connect(url: &str, max_connections: u32) -> Result<MySqlPool, StoreError> {
    let options = MySqlConnectOptions::from_str(url)?;
    let pool = MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Gives an enum stored in a VARCHAR column the column's `sqlx::Type`, for enums that
/// `#[derive(sqlx::Encode, sqlx::Decode)]` their variants' names (`#[sqlx(rename_all = ...)]`).
/// `#[derive(sqlx::Type)]` alone declares MySQL's ENUM type, and sqlx 0.9 then refuses to decode a VARCHAR
/// column ("mismatched types", also an `ENUM ... NOT NULL` one, tried on MariaDB 10.11): the type is text's.
macro_rules! text_column {
    ($enum:ty) => {
        impl sqlx::Type<sqlx::MySql> for $enum {
            fn type_info() -> sqlx::mysql::MySqlTypeInfo {
                <str as sqlx::Type<sqlx::MySql>>::type_info()
            }

            fn compatible(ty: &sqlx::mysql::MySqlTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::MySql>>::compatible(ty)
            }
        }
    };
}
pub(crate) use text_column;

/// Appends `(?, ?, ...)` binding each of `values`: the list of an `IN`.
pub fn push_list<T>(query: &mut sqlx::QueryBuilder<sqlx::MySql>, values: impl IntoIterator<Item = T>)
where
    T: for<'t> sqlx::Encode<'t, sqlx::MySql> + sqlx::Type<sqlx::MySql>,
{
    query.push("(");
    let mut list = query.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    list.push_unseparated(")");
}

/// An instant as a query parameter: every instant bound to a query goes through here.
///
/// sqlx sends a `DateTime<Utc>` typed TIMESTAMP, and MariaDB converts such a parameter through TIMESTAMP's
/// range, which ends at 2038-01-19T03:14:07Z: a later instant arrived as NULL (a 500 for a NOT NULL column,
/// and silently "no end" for a coupon's `ends_at`). A `NaiveDateTime` is sent typed DATETIME, which holds
/// every instant up to 9999-12-31T23:59:59.999999 exactly. Sessions run in UTC (see [`connect`]), so the UTC
/// wall time is the instant.
pub fn datetime(at: DateTime<Utc>) -> NaiveDateTime {
    at.naive_utc()
}

/// Applies pending migrations; safe to run from several instances at once (sqlx takes a lock).
pub async fn migrate(pool: &MySqlPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// This database's random name, which namespaces its Redis keys (empty for a database older than it).
pub async fn database_nonce(pool: &MySqlPool) -> Result<String, StoreError> {
    Ok(sqlx::query_scalar("SELECT nonce FROM database_identity WHERE id = 1").fetch_one(pool).await?)
}

/// How many times a transaction that lost a deadlock or a lock wait is run in all before giving up.
pub const CONFLICT_ATTEMPTS: u32 = 5;
/// Pause before a rerun, times the attempt number, plus jitter so the losers do not collide again.
const CONFLICT_BACKOFF: Duration = Duration::from_millis(5);

/// MariaDB/MySQL `ER_LOCK_DEADLOCK`: InnoDB rolled the transaction back to break a cycle.
const ER_LOCK_DEADLOCK: u16 = 1213;
/// `ER_LOCK_WAIT_TIMEOUT`: a row lock was not granted within `innodb_lock_wait_timeout`.
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;

/// `ER_CON_COUNT_ERROR`: the server is at `max_connections` and refused a new connection.
const ER_CON_COUNT_ERROR: u16 = 1040;
/// `ER_SERVER_SHUTDOWN`: the server is shutting down.
const ER_SERVER_SHUTDOWN: u16 = 1053;
/// `ER_TOO_MANY_USER_CONNECTIONS`: the account is at its `max_user_connections`.
const ER_TOO_MANY_USER_CONNECTIONS: u16 = 1203;

/// The server's error number, for errors the server sent.
fn error_number(error: &sqlx::Error) -> Option<u16> {
    error.as_database_error().and_then(|e| e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()).map(|e| e.number())
}

/// True for a deadlock or lock-wait timeout: the transaction did nothing and may simply be run again.
pub fn is_lock_conflict(error: &sqlx::Error) -> bool {
    matches!(error_number(error), Some(ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT))
}

/// True for a server that cannot serve now but may in a moment: at its connection limit, shutting down, or
/// a statement outside [`retry_on_conflict`] that lost a lock conflict. The client is told to retry (503).
pub fn is_busy(error: &sqlx::Error) -> bool {
    is_lock_conflict(error)
        || matches!(error_number(error), Some(ER_CON_COUNT_ERROR | ER_SERVER_SHUTDOWN | ER_TOO_MANY_USER_CONNECTIONS))
}

/// Runs `transaction` until it succeeds, fails for another reason, or lost [`CONFLICT_ATTEMPTS`] lock
/// conflicts (`conflict` tells them apart); returns its last result. The last line of defence: transactions
/// lock in a fixed order, so conflicts should be rare.
pub async fn retry_on_conflict<T, E, F, Fut>(mut transaction: F, conflict: impl Fn(&E) -> bool) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match transaction().await {
            Err(e) if conflict(&e) && attempt < CONFLICT_ATTEMPTS => {
                metrics::counter!("mysql_lock_conflict_retries_total").increment(1);
                let jitter = Duration::from_micros(rand::random_range(0..2_000));
                tokio::time::sleep(CONFLICT_BACKOFF * attempt + jitter).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}
