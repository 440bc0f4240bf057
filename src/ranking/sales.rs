//! Counting a paid order's units in its day's sales set, exactly once per order
//! (`lua/ranking_record_sales.lua`). Called by the outbox relay.

use std::time::Duration;

use chrono::NaiveDate;

use crate::id::{OrderId, ProductId};
use crate::store::{Redis, StoreError};

/// How long a day's set and its applied-orders set live: the sets are kept 8 days, plus one of margin.
pub const DAY_TTL: Duration = Duration::from_secs(9 * 24 * 60 * 60);

/// Whether the call counted the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Counted now.
    Applied,
    /// Counted before; nothing changed (a replayed outbox row).
    AlreadyApplied,
}

/// Adds `units` (product, units) of `order_id` to `day`'s sales set unless that order was counted already.
pub async fn record(
    redis: &Redis,
    day: NaiveDate,
    order_id: OrderId,
    units: &[(ProductId, i64)],
) -> Result<Recorded, StoreError> {
    let keys = vec![super::day_key(&redis.keys, day), super::applied_key(&redis.keys, day)];
    let mut args = Vec::with_capacity(2 + 2 * units.len());
    args.push(order_id.get().to_string());
    args.push(DAY_TTL.as_secs().to_string());
    for (product_id, quantity) in units {
        args.push(product_id.get().to_string());
        args.push(quantity.to_string());
    }
    let script = &*crate::store::scripts::RANKING_RECORD_SALES;
    let reply: i64 = script.call(redis, keys, args).await?;
    match reply {
        1 => Ok(Recorded::Applied),
        0 => Ok(Recorded::AlreadyApplied),
        other => Err(script.unexpected(other)),
    }
}
