//! Store setup in one place: the MySQL pool and migrator, the Redis client and its script registry, and the
//! classification of their errors. Nothing here knows a coupon or an order.

pub mod mysql;
pub mod redis;
pub mod scripts;

use thiserror::Error;

pub use self::redis::{Keys, Redis, Script};

use crate::config::StoreConfig;

/// Both stores, cheap to clone (each holds pools).
#[derive(Clone)]
pub struct Stores {
    pub db: sqlx::MySqlPool,
    pub redis: Redis,
}

impl Stores {
    /// Connects to MySQL and migrates it, then connects to Redis with every key under the prefix and this
    /// database's nonce (`migrations/0100_database_identity.sql`), and loads every Lua script.
    ///
    /// Why the nonce: Redis holds a cache of this database's decisions. A fresh database beside a Redis that
    /// kept an earlier sale under the same `REDIS_PREFIX` would otherwise take that sale's stock, holders,
    /// queue and known users for its own; under its own names it finds nothing and starts clean.
    pub async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        let db = mysql::connect(&config.database_url, config.database_pool_size).await?;
        mysql::migrate(&db).await?;
        let nonce = mysql::database_nonce(&db).await?;
        let prefix =
            if nonce.is_empty() { config.redis_prefix.clone() } else { format!("{}{nonce}:", config.redis_prefix) };
        let redis =
            Redis::connect(&config.redis_url, &prefix, config.redis_pool_size, config.redis_wait_replicas).await?;
        scripts::load_all(&redis).await?;
        Ok(Self { db, redis })
    }

    /// The same stores, with Redis on the connection reserved for background jobs.
    pub fn for_jobs(&self) -> Self {
        Self { db: self.db.clone(), redis: self.redis.for_jobs() }
    }
}

/// A failure of MySQL or Redis, never of the client's request.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("MySQL: {0}")]
    Mysql(#[from] sqlx::Error),
    #[error("MySQL migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("Redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("Redis script {script} replied unexpectedly: {reply}")]
    ScriptReply { script: &'static str, reply: String },
}

impl StoreError {
    /// True when the store could not be reached or cannot serve now (an operator problem, answered with 503),
    /// as opposed to a bug such as a malformed query (500).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Mysql(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_)
                ) || mysql::is_busy(e)
            }
            StoreError::Redis(e) => {
                matches!(
                    e.kind(),
                    fred::error::ErrorKind::IO
                        | fred::error::ErrorKind::Timeout
                        | fred::error::ErrorKind::Canceled
                        | fred::error::ErrorKind::Cluster
                        // fred gave up following a cluster's redirections (a slot moving): retrying later works.
                        | fred::error::ErrorKind::Routing
                        | fred::error::ErrorKind::Backpressure
                ) || is_redis_busy(e)
            }
            StoreError::Migrate(_) | StoreError::ScriptReply { .. } => false,
        }
    }

    /// Which store failed, for logs, metrics and the readiness report.
    pub fn store(&self) -> &'static str {
        match self {
            StoreError::Mysql(_) | StoreError::Migrate(_) => "mysql",
            StoreError::Redis(_) | StoreError::ScriptReply { .. } => "redis",
        }
    }
}

/// Replies of a Redis that is up but cannot serve now: loading its data set after a restart, busy with a
/// long script, refusing writes after a failed save, or a cluster moving slots or without a majority. fred
/// reports them as unknown errors; they are the operator's problem (503), not a bug.
const REDIS_BUSY_REPLIES: [&str; 7] =
    ["LOADING", "BUSY", "MISCONF", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY"];

fn is_redis_busy(error: &fred::error::Error) -> bool {
    let details = error.details();
    REDIS_BUSY_REPLIES.iter().any(|reply| details.starts_with(reply))
}

/// Lets a domain error enum with a `Store(StoreError)` variant take sqlx and fred errors with `?`.
macro_rules! store_error_conversions {
    ($error:ty) => {
        impl From<sqlx::Error> for $error {
            fn from(e: sqlx::Error) -> Self {
                Self::Store(e.into())
            }
        }

        impl From<fred::error::Error> for $error {
            fn from(e: fred::error::Error) -> Self {
                Self::Store(e.into())
            }
        }
    };
}
pub(crate) use store_error_conversions;
