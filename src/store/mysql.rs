//! The MySQL (or MariaDB) pool and the embedded migrations.

use std::str::FromStr;
use std::time::Duration;

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

/// Applies pending migrations; safe to run from several instances at once (sqlx takes a lock).
pub async fn migrate(pool: &MySqlPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
