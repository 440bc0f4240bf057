//! The view flusher: a background job moving view counts from Redis to `products.view_count` in batches.
//!
//! Exactly once: a batch is recorded in MySQL under its id in the same transaction as its counts, and
//! dropped from Redis only afterwards. A flusher dying between the two leaves the batch in Redis; the next
//! run finds its id in MySQL and just drops it.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{Error, cache, db};
use crate::store::Stores;

/// Idle time between flushes: how late a view may show up in MySQL.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(1);
/// How long batch ids are remembered; a failed batch is retried within seconds, so a day is ample.
const REMEMBER_BATCHES: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// What one flush did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// No views were waiting.
    Nothing,
    /// A batch was added to MySQL.
    Applied { products: usize, views: i64 },
    /// The batch had already been added (by a flusher that died, or another instance); it was dropped.
    AlreadyApplied,
}

/// Moves one batch of views to MySQL.
pub async fn flush_once(stores: &Stores) -> Result<Flushed, Error> {
    let Some(batch) = cache::take_batch(&stores.redis).await? else {
        return Ok(Flushed::Nothing);
    };
    let now = Utc::now();
    let applied = db::add_views(&stores.db, &batch.id, &batch.views, now).await?;
    cache::ack_batch(&stores.redis, &batch.id).await?;
    // Until the cached copies go (milliseconds), a detail shows these views neither as flushed nor as
    // pending: it may undercount briefly, never overcount.
    let ids: Vec<_> = batch.views.iter().map(|(id, _)| *id).collect();
    cache::forget_products(&stores.redis, &ids).await?;
    if !applied {
        return Ok(Flushed::AlreadyApplied);
    }
    if let Err(error) = db::prune_view_flushes(&stores.db, now - REMEMBER_BATCHES).await {
        tracing::warn!(error = %error, "pruning old view batch ids failed");
    }
    let views = batch.views.iter().map(|(_, n)| n).sum();
    metrics::counter!("product_views_flushed_total").increment(views as u64);
    Ok(Flushed::Applied { products: batch.views.len(), views })
}

/// Flushes every [`FLUSH_PERIOD`] until `shutdown`, then once more so that views counted before it are
/// in MySQL when the process exits (views counted by requests still draining stay in Redis for the next
/// start). Only the idle sleep races the shutdown, never a flush.
pub async fn run(stores: Stores, shutdown: CancellationToken) {
    loop {
        let stopping = shutdown.is_cancelled();
        match flush_once(&stores).await {
            Ok(Flushed::Applied { products, views }) => {
                tracing::debug!(product.count = products, views, "views flushed");
            }
            Ok(Flushed::Nothing | Flushed::AlreadyApplied) => {}
            Err(error) => tracing::warn!(error = %error, "view flush failed; the batch stays in Redis"),
        }
        if stopping {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(FLUSH_PERIOD) => {}
        }
    }
}
