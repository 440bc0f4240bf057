//! Product views: counted in Redis by [`ViewCounter`], moved to `products.view_count` in batches by the
//! flusher ([`run`]).
//!
//! Views are counted in `<prefix>views:{views}:pending` (field = product id, value = views). The flusher takes
//! them as a batch by renaming that hash to `<prefix>views:{views}:batch` (see `lua/product_views_take.lua`),
//! so counting never waits for MySQL and no view is counted twice.
//!
//! Exactly once: a batch is recorded in MySQL under its id in the same transaction as its counts, and dropped
//! from Redis only afterwards. A flusher dying between the two leaves the batch in Redis; the next run finds
//! its id in MySQL and just drops it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use fred::prelude::*;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Catalog, Error, db};
use crate::id::ProductId;
use crate::store::{Redis, StoreError, Stores};

/// Idle time between flushes: how late a view may show up in MySQL.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(1);
/// How long batch ids are remembered; a failed batch is retried within seconds, so a day is ample.
const REMEMBER_BATCHES: chrono::TimeDelta = chrono::TimeDelta::days(1);
/// Most views counted by one Redis pipeline.
const MAX_COUNTED_AT_ONCE: usize = 4_096;

fn pending_key(redis: &Redis) -> String {
    redis.keys.key("views:{views}:pending")
}

fn batch_key(redis: &Redis) -> String {
    redis.keys.key("views:{views}:batch")
}

/// Counts views in Redis, many requests' views per round trip: while one pipeline is in flight, the views
/// that arrive wait for the next one. A request is answered only after Redis holds its view, so none is
/// lost, and a detail costs a share of a round trip rather than one. Cheap to clone.
#[derive(Clone)]
pub struct ViewCounter(mpsc::UnboundedSender<View>);

struct View {
    product: ProductId,
    /// The product's views not yet flushed to MySQL, this one included.
    unflushed: oneshot::Sender<Result<i64, fred::error::Error>>,
}

impl ViewCounter {
    /// Starts the task that counts; it ends when the last clone is dropped.
    pub fn start(redis: Redis) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(count_batches(redis, receiver));
        Self(sender)
    }

    /// Counts one view of `product`; returns its views not yet flushed to MySQL, this one included.
    pub async fn count(&self, product: ProductId) -> Result<i64, StoreError> {
        let (unflushed, counted) = oneshot::channel();
        self.0.send(View { product, unflushed }).map_err(|_| counter_gone())?;
        Ok(counted.await.map_err(|_| counter_gone())??)
    }
}

fn counter_gone() -> StoreError {
    StoreError::Redis(fred::error::Error::new(fred::error::ErrorKind::Canceled, "the view counter stopped"))
}

async fn count_batches(redis: Redis, mut views: mpsc::UnboundedReceiver<View>) {
    let mut batch = Vec::new();
    while views.recv_many(&mut batch, MAX_COUNTED_AT_ONCE).await > 0 {
        let mut counts: BTreeMap<ProductId, i64> = BTreeMap::new();
        for view in &batch {
            *counts.entry(view.product).or_default() += 1;
        }
        let counted = record(&redis, &counts).await;
        for view in batch.drain(..) {
            let reply = counted.as_ref().map(|unflushed| unflushed[&view.product]).map_err(Clone::clone);
            // A request that gave up (its client left) no longer waits for the answer; its view counted.
            let _ = view.unflushed.send(reply);
        }
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
    // Until every instance drops its copies (this one at once, the others within catalog::POLL), a detail
    // shows these views neither as flushed nor as pending: it may undercount briefly, never overcount.
    let ids: Vec<ProductId> = batch.views.iter().map(|(id, _)| *id).collect();
    catalog.changed(&ids).await;
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
pub async fn run(stores: Stores, catalog: Catalog, shutdown: CancellationToken) {
    loop {
        let stopping = shutdown.is_cancelled();
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
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(FLUSH_PERIOD) => {}
        }
    }
}
