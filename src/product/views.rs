//! Product views: counted in process and sent to Redis in batches by [`ViewCounter`], moved from Redis to
//! `products.view_count` in batches by the flusher ([`run`]).
//!
//! Views are counted in `<prefix>views:{views}:pending` (field = product id, value = views). The flusher takes
//! them as a batch by renaming that hash to `<prefix>views:{views}:batch` (see `lua/product_views_take.lua`),
//! so counting never waits for MySQL and no view is counted twice.
//!
//! Exactly once: a batch is recorded in MySQL under its id in the same transaction as its counts, and dropped
//! from Redis only afterwards. A flusher dying between the two leaves the batch in Redis; the next run finds
//! its id in MySQL and just drops it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use super::{Catalog, Error, db};
use crate::id::ProductId;
use crate::store::{Redis, StoreError, Stores};

/// Idle time between flushes: how late a view may show up in MySQL.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(1);
/// How long batch ids are remembered; a failed batch is retried within seconds, so a day is ample.
const REMEMBER_BATCHES: chrono::TimeDelta = chrono::TimeDelta::days(1);
/// How often counted views are sent to Redis: the most an instance holds that Redis has not, far less than
/// what Redis itself may lose on a crash with `appendfsync everysec`.
pub const SEND_PERIOD: Duration = Duration::from_millis(10);
/// Products whose Redis count an instance remembers; beyond, those with nothing unsent are forgotten.
const REMEMBERED_PRODUCTS: usize = 100_000;

fn pending_key(redis: &Redis) -> String {
    redis.keys.key("views:{views}:pending")
}

fn batch_key(redis: &Redis) -> String {
    redis.keys.key("views:{views}:batch")
}

/// Counts views in process and sends them to Redis every [`SEND_PERIOD`] in one pipeline, so a detail costs
/// no Redis round trip of its own. A failed send keeps the views for the next; a graceful shutdown sends the
/// rest after the last request ([`ViewCounter::send`]). A crash loses at most the last period's views of
/// this instance, less than Redis itself may lose (docs/ranking.md#views). Cheap to clone.
#[derive(Clone, Default)]
pub struct ViewCounter(Arc<Counter>);

#[derive(Default)]
struct Counter {
    views: Mutex<HashMap<ProductId, Counted>>,
    /// Sends started so far: a send's number tells whether Redis answered it after a copy was loaded.
    sends: AtomicU64,
}

/// One product's views as this instance knows them.
#[derive(Clone, Copy, Default)]
struct Counted {
    /// Counted here, not sent to Redis yet.
    unsent: i64,
    /// Counted here, in a send Redis has not answered yet.
    in_flight: i64,
    /// Not yet flushed to MySQL, as Redis answered send (or measurement) number `measured`.
    in_redis: i64,
    measured: u64,
}

impl ViewCounter {
    /// The number to load a copy's flushed views under (taken before reading MySQL): Redis counts measured
    /// by sends started later exclude what that read may include.
    pub fn epoch(&self) -> u64 {
        self.0.sends.load(Ordering::Acquire)
    }

    /// Reads `product`'s views not yet flushed from Redis, right after its flushed views were read from MySQL
    /// for a new copy; returns the epoch to load that copy under, so this count is added to its sum. Without
    /// Redis the copy takes the epoch of now, leaving older counts out until the next send.
    pub async fn measure(&self, redis: &Redis, product: ProductId) -> u64 {
        let number = self.0.sends.fetch_add(1, Ordering::AcqRel) + 1;
        let Ok(in_redis) = unflushed(redis, product).await else { return number };
        let mut views = self.0.views.lock().expect("never poisoned");
        let counted = views.entry(product).or_default();
        if number > counted.measured {
            (counted.in_redis, counted.measured) = (in_redis, number);
        }
        number - 1
    }

    /// Counts one view of `product`; returns its views not yet flushed to MySQL, this one included, as far as
    /// they can be added to flushed views read at `epoch`. Redis's count from an earlier send may include views
    /// that read already has (a flush ran in between), so it is left out until the next send: the sum may
    /// undercount for a moment. Views in a send Redis has not answered yet are counted.
    pub fn count(&self, product: ProductId, epoch: u64) -> i64 {
        let mut views = self.0.views.lock().expect("never poisoned");
        let counted = views.entry(product).or_default();
        counted.unsent += 1;
        counted.unsent + counted.in_flight + if counted.measured > epoch { counted.in_redis } else { 0 }
    }

    /// Sends the views counted since the last send to Redis in one pipeline; on failure they stay for the next.
    pub async fn send(&self, redis: &Redis) -> Result<(), StoreError> {
        let unsent: BTreeMap<ProductId, i64> = {
            let mut views = self.0.views.lock().expect("never poisoned");
            views
                .iter_mut()
                .filter(|(_, counted)| counted.unsent > 0)
                .map(|(product, counted)| {
                    counted.in_flight += counted.unsent;
                    (*product, std::mem::take(&mut counted.unsent))
                })
                .collect()
        };
        if unsent.is_empty() {
            return Ok(());
        }
        let number = self.0.sends.fetch_add(1, Ordering::AcqRel) + 1;
        let sent = record(redis, &unsent).await;
        let mut views = self.0.views.lock().expect("never poisoned");
        for (product, count) in &unsent {
            let counted = views.entry(*product).or_default();
            counted.in_flight -= count;
            match &sent {
                Ok(in_redis) if number > counted.measured => {
                    (counted.in_redis, counted.measured) = (in_redis[product], number);
                }
                Ok(_) => {}
                Err(_) => counted.unsent += count,
            }
        }
        if views.len() > REMEMBERED_PRODUCTS {
            views.retain(|_, counted| counted.unsent > 0 || counted.in_flight > 0);
        }
        sent.map(drop).map_err(StoreError::from)
    }

    /// Sends every [`SEND_PERIOD`] until `shutdown`; the last send is the caller's, after the last request.
    pub async fn run(self, redis: Redis, shutdown: CancellationToken) {
        crate::ticker::every(SEND_PERIOD, &shutdown, || async {
            if let Err(error) = self.send(&redis).await {
                tracing::warn!(%error, "views not sent to Redis; they are kept for the next send");
            }
        })
        .await;
    }
}

/// Adds `counts` to the pending views in one pipeline; returns each product's views not yet flushed.
async fn record(
    redis: &Redis,
    counts: &BTreeMap<ProductId, i64>,
) -> Result<BTreeMap<ProductId, i64>, fred::error::Error> {
    let pipeline = redis.client().pipeline();
    for (product, count) in counts {
        let _: () = pipeline.hincrby(pending_key(redis), product.get(), *count).await?;
        let _: () = pipeline.hget(batch_key(redis), product.get()).await?;
    }
    let replies: Vec<Option<i64>> = pipeline.all().await?;
    Ok(counts.keys().zip(replies.chunks(2)).map(|(product, pair)| (*product, pair.iter().flatten().sum())).collect())
}

/// `product`'s views in Redis, pending or in the batch being flushed.
async fn unflushed(redis: &Redis, product: ProductId) -> Result<i64, fred::error::Error> {
    let pipeline = redis.client().pipeline();
    let _: () = pipeline.hget(pending_key(redis), product.get()).await?;
    let _: () = pipeline.hget(batch_key(redis), product.get()).await?;
    let counts: Vec<Option<i64>> = pipeline.all().await?;
    Ok(counts.into_iter().flatten().sum())
}

/// Views taken out of Redis to be added to MySQL as one unit.
#[derive(Debug)]
pub struct ViewBatch {
    /// Unique per batch, recorded in MySQL with the counts so a retried batch is applied once.
    pub id: String,
    /// Ascending product ids with their views.
    pub views: Vec<(ProductId, i64)>,
}

/// The batch to flush: an unfinished one again, else everything pending; `None` when there is nothing.
pub async fn take_batch(redis: &Redis) -> Result<Option<ViewBatch>, StoreError> {
    let script = &crate::store::scripts::PRODUCT_VIEWS_TAKE;
    let new_id = uuid::Uuid::new_v4().to_string();
    let flat: Vec<String> = script.call(redis, vec![pending_key(redis), batch_key(redis)], vec![new_id]).await?;
    if flat.is_empty() {
        return Ok(None);
    }
    let mut id = None;
    let mut views = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks(2) {
        let [field, value] = pair else { return Err(script.unexpected(&flat)) };
        if field == "batch" {
            id = Some(value.clone());
            continue;
        }
        let product = field.parse().ok().and_then(ProductId::new);
        let count = value.parse::<i64>().ok();
        match (product, count) {
            (Some(product), Some(count)) => views.push((product, count)),
            _ => return Err(script.unexpected(pair)),
        }
    }
    let id = id.ok_or_else(|| script.unexpected("a batch without its id"))?;
    views.sort_unstable();
    Ok(Some(ViewBatch { id, views }))
}

/// Drops the batch once MySQL holds it; `false` when another flusher already did.
async fn ack_batch(redis: &Redis, batch_id: &str) -> Result<bool, StoreError> {
    let acked: i64 =
        crate::store::scripts::PRODUCT_VIEWS_ACK.call(redis, vec![batch_key(redis)], vec![batch_id]).await?;
    Ok(acked == 1)
}

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
pub async fn flush_once(stores: &Stores, catalog: &Catalog) -> Result<Flushed, Error> {
    let Some(batch) = take_batch(&stores.redis).await? else {
        return Ok(Flushed::Nothing);
    };
    let now = Utc::now();
    let applied = db::add_views(&stores.db, &batch.id, &batch.views, now).await?;
    ack_batch(&stores.redis, &batch.id).await?;
    // Until every instance reads the new counts (this one at once, the others within catalog::POLL), a detail
    // shows these views neither as flushed nor as pending: it may undercount briefly, never overcount.
    let ids: Vec<ProductId> = batch.views.iter().map(|(id, _)| *id).collect();
    catalog.views_flushed(&ids).await;
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

/// Flushes every [`FLUSH_PERIOD`] until `drained` (the server answered its last request and sent its views
/// to Redis), then once more, so every view counted before a graceful shutdown is in MySQL when the process
/// exits. Only the idle sleep races the token, never a flush.
pub async fn run(stores: Stores, catalog: Catalog, drained: CancellationToken) {
    loop {
        let stopping = drained.is_cancelled();
        match flush_once(&stores, &catalog).await {
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
            () = drained.cancelled() => {}
            () = tokio::time::sleep(FLUSH_PERIOD) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_counts_older_than_a_copys_flushed_views_are_left_out_so_no_view_counts_twice() {
        let counter = ViewCounter::default();
        let product = ProductId::new(1).unwrap();
        // A send (number 1) answered that Redis holds 1,000 views not yet flushed.
        counter
            .0
            .views
            .lock()
            .unwrap()
            .insert(product, Counted { unsent: 0, in_flight: 0, in_redis: 1_000, measured: 1 });
        counter.0.sends.store(1, Ordering::Release);
        assert_eq!(counter.count(product, 0), 1_001, "a copy read before that send adds the Redis count");
        // A copy read after send 1, perhaps after a flush moved those 1,000 views to MySQL.
        assert_eq!(counter.count(product, counter.epoch()), 2, "only the views counted here since");
    }
}
