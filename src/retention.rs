//! The retention job: deletes delivered outbox rows and idempotency keys once they are older than their
//! configured age, in small batches so no statement holds its locks for long, and counts what it deleted
//! (`retention_pruned_rows_total{table}`). Every instance runs it; the deletes are idempotent, so two
//! instances pruning at once only share the work.

use std::time::Duration;

use chrono::Utc;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::store::{StoreError, Stores};

/// Rows per DELETE: small enough that one statement holds its row locks for milliseconds.
const BATCH: u64 = 1_000;
/// Pause between two batches of one pass, so a large backlog never hogs MySQL.
const BATCH_PAUSE: Duration = Duration::from_millis(50);

/// How long side-table rows are kept.
#[derive(Debug, Clone, Copy, Args)]
#[group(id = "retention")]
pub struct Config {
    /// Hours a delivered (and ranked) outbox row is kept before it is deleted.
    #[arg(long, env = "OUTBOX_RETENTION_HOURS", default_value_t = 168, value_parser = clap::value_parser!(u32).range(1..))]
    pub outbox_retention_hours: u32,

    /// Hours an idempotency key is remembered; the contract asks for at least 24.
    #[arg(long, env = "IDEMPOTENCY_RETENTION_HOURS", default_value_t = 48, value_parser = clap::value_parser!(u32).range(24..))]
    pub idempotency_retention_hours: u32,

    /// Seconds between two pruning passes.
    #[arg(long = "retention-period-seconds", env = "RETENTION_PERIOD_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub period_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self { outbox_retention_hours: 168, idempotency_retention_hours: 48, period_seconds: 600 }
    }
}

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub outbox: u64,
    pub idempotency_keys: u64,
}

/// One pass: deletes everything past its age, batch by batch.
pub async fn prune_once(stores: &Stores, config: &Config) -> Result<Pruned, StoreError> {
    let now = Utc::now();
    let outbox_before = now - chrono::Duration::hours(config.outbox_retention_hours.into());
    let keys_before = now - chrono::Duration::hours(config.idempotency_retention_hours.into());
    let outbox =
        in_batches("outbox", || crate::platform::db::prune_delivered(&stores.db, outbox_before, BATCH)).await?;
    let idempotency_keys =
        in_batches("idempotency_keys", || crate::balance::db::prune_idempotency_keys(&stores.db, keys_before, BATCH))
            .await?;
    Ok(Pruned { outbox, idempotency_keys })
}

/// Repeats `delete` (one batch) until a batch comes back short; returns the rows deleted.
async fn in_batches<F, Fut>(table: &'static str, mut delete: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let deleted = delete().await?;
        total += deleted;
        metrics::counter!("retention_pruned_rows_total", "table" => table).increment(deleted);
        if deleted < BATCH {
            return Ok(total);
        }
        tokio::time::sleep(BATCH_PAUSE).await;
    }
}

/// Prunes every `period_seconds` until `shutdown`; a pass in progress finishes its current batch first.
pub async fn run(stores: Stores, config: Config, shutdown: CancellationToken) {
    let period = Duration::from_secs(config.period_seconds);
    loop {
        match prune_once(&stores, &config).await {
            Ok(pruned) if pruned != Pruned::default() => {
                tracing::info!(outbox = pruned.outbox, idempotency_keys = pruned.idempotency_keys, "pruned old rows");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "retention pass failed; retried next period"),
        }
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
