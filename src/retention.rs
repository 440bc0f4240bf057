//! The retention job: deletes delivered outbox rows and idempotency keys once they are older than their
//! configured age, in small batches so no statement holds its locks for long, and counts what it deleted
//! (`retention_pruned_rows_total{table}`); and deletes the Redis state of campaigns that ended long enough
//! ago and have everything persisted, a coupon at a time (`retention_pruned_coupon_states_total`, see
//! `coupon::prune_ended`). Every instance runs it; the deletes are idempotent, so two instances pruning at
//! once only share the work.

use std::time::Duration;

use chrono::Utc;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::store::{StoreError, Stores};

/// Rows per DELETE: small enough that one statement holds its row locks for milliseconds.
const BATCH: u64 = 1_000;
/// Pause between two batches of one pass, so a large backlog never hogs MySQL.
const BATCH_PAUSE: Duration = Duration::from_millis(50);
/// Campaigns looked at per page of coupon pruning; each is one short transaction and one script call that
/// UNLINKs (frees in the background) its four keys, so a page holds neither MySQL nor Redis for long.
const COUPON_PAGE: u64 = 100;

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

    /// Minutes after a campaign's `endsAt` before its Redis state (stock, holders, stream) is deleted, once
    /// everything it issued is persisted. Requests to an ended campaign are answered from its dates (422)
    /// either way; the margin covers clocks of instances that differ and script calls decided just before
    /// the end but run late (the writer's own margin is 1 minute).
    #[arg(long, env = "COUPON_STATE_RETENTION_MINUTES", default_value_t = 60, value_parser = clap::value_parser!(u32).range(2..))]
    pub coupon_state_retention_minutes: u32,

    /// Seconds between two pruning passes.
    #[arg(long = "retention-period-seconds", env = "RETENTION_PERIOD_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub period_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            outbox_retention_hours: 168,
            idempotency_retention_hours: 48,
            coupon_state_retention_minutes: 60,
            period_seconds: 600,
        }
    }
}

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub outbox: u64,
    pub idempotency_keys: u64,
    /// Campaigns whose Redis state was deleted.
    pub coupon_states: u64,
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
    let ended_before = now - chrono::Duration::minutes(config.coupon_state_retention_minutes.into());
    let coupon_states = coupon_states(stores, ended_before).await?;
    Ok(Pruned { outbox, idempotency_keys, coupon_states })
}

/// Prunes the Redis state of every campaign that ended before `ended_before` and has nothing left to
/// persist, a page of campaigns at a time; returns how many were pruned.
async fn coupon_states(stores: &Stores, ended_before: chrono::DateTime<Utc>) -> Result<u64, StoreError> {
    let (mut total, mut after) = (0, 0);
    loop {
        let page = crate::coupon::prune_ended(stores, ended_before, after, COUPON_PAGE).await?;
        total += page.pruned;
        metrics::counter!("retention_pruned_coupon_states_total").increment(page.pruned);
        if page.examined < COUPON_PAGE {
            return Ok(total);
        }
        after = page.last;
        tokio::time::sleep(BATCH_PAUSE).await;
    }
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
                tracing::info!(
                    outbox = pruned.outbox,
                    idempotency_keys = pruned.idempotency_keys,
                    coupon_states = pruned.coupon_states,
                    "pruned old rows and ended campaigns' Redis state"
                );
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
