//! Counting a paid order's units in its day's sales sets, one call of `lua/ranking_record_sales.lua` per
//! shard its products fall in, each exactly once per order and shard (and owed to the shard's window sets
//! through its unfolded set). Called by the outbox relay.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveDate;

use super::Shards;
use crate::id::{OrderId, ProductId};
use crate::store::{Redis, StoreError};

/// How long a day's set and its applied-orders set live: the sets are kept 8 days, plus one of margin.
pub const DAY_TTL: Duration = Duration::from_secs(9 * 24 * 60 * 60);

/// Whether the call counted the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Counted now, in at least one shard.
    Applied,
    /// Counted before in every shard; nothing changed (a replayed outbox row).
    AlreadyApplied,
}

/// Adds `units` (product, units) of `order_id` to `day`'s sales sets, in each shard unless that shard counted
/// the order already.
///
/// The shards are written by separate script calls (each single-slot, so they may live on different cluster
/// nodes), all in flight at once. An error means some shards may have counted the order and others not; the
/// caller retries the whole order, and the shards that have it skip it, which is why the caller may mark the
/// order applied only after an `Ok`.
pub async fn record(
    redis: &Redis,
    shards: Shards,
    day: NaiveDate,
    order_id: OrderId,
    units: &[(ProductId, i64)],
) -> Result<Recorded, StoreError> {
    let mut by_shard: BTreeMap<_, Vec<(ProductId, i64)>> = BTreeMap::new();
    for (product_id, quantity) in units {
        by_shard.entry(shards.of(*product_id)).or_default().push((*product_id, *quantity));
    }
    let script = &*crate::store::scripts::RANKING_RECORD_SALES;
    let calls = by_shard.into_iter().map(|(shard, units)| {
        let keys = vec![
            super::day_key(&redis.keys, shard, day),
            super::applied_key(&redis.keys, shard, day),
            super::unfolded_key(&redis.keys, shard, day),
        ];
        let mut args = Vec::with_capacity(2 + 2 * units.len());
        args.push(order_id.get().to_string());
        args.push(DAY_TTL.as_secs().to_string());
        for (product_id, quantity) in units {
            args.push(product_id.get().to_string());
            args.push(quantity.to_string());
        }
        script.call::<i64, _, _>(redis, keys, args)
    });
    let mut recorded = Recorded::AlreadyApplied;
    for reply in futures::future::try_join_all(calls).await? {
        match reply {
            1 => recorded = Recorded::Applied,
            0 => {}
            other => return Err(script.unexpected(other)),
        }
    }
    Ok(recorded)
}
