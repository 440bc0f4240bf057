//! Redis side of the ranking: reading day sets, the cached top list per window, the refresh lock, and the
//! temporary copies a rebuild swaps in.

use std::collections::HashMap;

use chrono::NaiveDate;
use fred::prelude::*;
use fred::types::scan::Scanner;
use futures::TryStreamExt;

use super::{TopProducts, applied_key, day_key};
use crate::id::{OrderId, ProductId};
use crate::store::{Redis, StoreError};

/// Members per ZSCAN reply: each call holds Redis for well under a millisecond, so reading a 100,000-member
/// day set never blocks the coupon path for long (a ZUNIONSTORE of three such sets holds it for ~100 ms).
const SCAN_COUNT: u32 = 1_000;
/// A cached window older than this is recomputed by the next request, so a stalled scheduler (every
/// instance failing to refresh) cannot serve an old list for long.
const WINDOW_TTL_SECS: i64 = 600;
/// How long one instance's refresh keeps the others from refreshing: ticks of several instances that fall
/// within this of each other refresh once. Longer than a refresh takes at 100,000 products.
const REFRESH_LOCK_MS: i64 = 5_000;
/// Lifetime of a rebuild's temporary copies, should the rebuild die before swapping them in.
const TEMP_TTL_SECS: i64 = 600;
/// Commands per pipeline when filling the temporary copies.
const FILL_CHUNK: usize = 1_000;

/// Units per product in one day's sales set. Members that are not product ids are skipped.
pub async fn day_sales(redis: &Redis, day: NaiveDate) -> Result<HashMap<ProductId, i64>, StoreError> {
    let mut sales = HashMap::new();
    let mut pages = std::pin::pin!(redis.client().zscan(day_key(&redis.keys, day), "*", Some(SCAN_COUNT)));
    // ZSCAN may return a member twice (when the set is resized mid-scan); inserting keeps it once.
    while let Some(mut page) = pages.try_next().await? {
        for (member, score) in page.take_results().unwrap_or_default() {
            if let Some(id) = member.as_string().and_then(|s| s.parse().ok()).and_then(ProductId::new) {
                sales.insert(id, score as i64);
            }
        }
    }
    Ok(sales)
}

pub async fn day_exists(redis: &Redis, day: NaiveDate) -> Result<bool, StoreError> {
    let found: i64 = redis.client().exists(day_key(&redis.keys, day)).await?;
    Ok(found == 1)
}

/// `<prefix>ranking:top:<days>d`: the computed, joined top list of a window (at most [`super::MAX_LIMIT`]).
fn window_key(redis: &Redis, days: u32) -> String {
    redis.keys.key(format_args!("ranking:top:{days}d"))
}

/// The cached list of the `days` window, if any. An undecodable copy counts as missing.
pub async fn window(redis: &Redis, days: u32) -> Result<Option<TopProducts>, StoreError> {
    let cached: Option<String> = redis.client().get(window_key(redis, days)).await?;
    Ok(cached.and_then(|json| serde_json::from_str(&json).ok()))
}

pub async fn store_windows(redis: &Redis, windows: &[TopProducts]) -> Result<(), StoreError> {
    let pipeline = redis.client().pipeline();
    for window in windows {
        let json = serde_json::to_string(window).expect("a top list serializes");
        let _: () = pipeline
            .set(window_key(redis, window.days), json, Some(Expiration::EX(WINDOW_TTL_SECS)), None, false)
            .await?;
    }
    let _: Vec<Value> = pipeline.all().await?;
    Ok(())
}

/// Drops every cached window, so the next request recomputes from the day sets.
pub async fn forget_windows(redis: &Redis) -> Result<(), StoreError> {
    let keys: Vec<String> = (1..=super::MAX_DAYS).map(|days| window_key(redis, days)).collect();
    // One DEL per key: on a cluster the window keys live in different slots.
    let pipeline = redis.client().pipeline();
    for key in keys {
        let _: () = pipeline.del(key).await?;
    }
    let _: Vec<Value> = pipeline.all().await?;
    Ok(())
}

/// `true` when this instance may run the scheduled refresh now. Never released: it expires, which is what
/// stops other instances ticking at about the same time.
pub async fn try_refresh_lock(redis: &Redis) -> Result<bool, StoreError> {
    let token = uuid::Uuid::new_v4().to_string();
    let set: Option<String> = redis
        .client()
        .set(
            redis.keys.key("ranking:refresh-lock"),
            token,
            Some(Expiration::PX(REFRESH_LOCK_MS)),
            Some(SetOptions::NX),
            false,
        )
        .await?;
    Ok(set.is_some())
}

/// A rebuild's private copies of one day's sets, in the same `{rank}` slot as the live ones.
pub struct TempDay {
    day: NaiveDate,
    sales: String,
    applied: String,
}

impl TempDay {
    pub fn new(redis: &Redis, day: NaiveDate) -> Self {
        let run = uuid::Uuid::new_v4().simple();
        let ymd = day.format("%Y%m%d");
        Self {
            day,
            sales: redis.keys.key(format_args!("sales:{{rank}}:rebuild:{run}:{ymd}")),
            applied: redis.keys.key(format_args!("sales:{{rank}}:rebuild:{run}:applied:{ymd}")),
        }
    }

    /// Adds units per product and marks `orders` as counted.
    pub async fn add(
        &self,
        redis: &Redis,
        units: &HashMap<ProductId, i64>,
        orders: &[OrderId],
    ) -> Result<(), StoreError> {
        let units: Vec<(&ProductId, &i64)> = units.iter().collect();
        for chunk in units.chunks(FILL_CHUNK) {
            let pipeline = redis.client().pipeline();
            for (id, n) in chunk {
                let _: () = pipeline.zincrby(&self.sales, **n as f64, id.get()).await?;
            }
            let _: () = pipeline.expire(&self.sales, TEMP_TTL_SECS, None).await?;
            let _: Vec<Value> = pipeline.all().await?;
        }
        for chunk in orders.chunks(FILL_CHUNK) {
            let members: Vec<i64> = chunk.iter().map(|id| id.get()).collect();
            let pipeline = redis.client().pipeline();
            let _: () = pipeline.sadd(&self.applied, members).await?;
            let _: () = pipeline.expire(&self.applied, TEMP_TTL_SECS, None).await?;
            let _: Vec<Value> = pipeline.all().await?;
        }
        Ok(())
    }

    /// Swaps the copies in for the live day (see `lua/ranking_replace_day.lua`). Returns the orders the live
    /// day counts that the copies lack; when that is empty the swap happened.
    pub async fn replace_live(&self, redis: &Redis, ttl_secs: i64) -> Result<Vec<OrderId>, StoreError> {
        let script = &crate::store::scripts::RANKING_REPLACE_DAY;
        let keys = vec![
            day_key(&redis.keys, self.day),
            applied_key(&redis.keys, self.day),
            self.sales.clone(),
            self.applied.clone(),
        ];
        let missing: Vec<String> = script.call(redis, keys, vec![ttl_secs]).await?;
        missing.iter().map(|id| id.parse().ok().and_then(OrderId::new).ok_or_else(|| script.unexpected(id))).collect()
    }

    /// Deletes the copies (after a failed rebuild; a successful one renamed them away).
    pub async fn discard(&self, redis: &Redis) -> Result<(), StoreError> {
        let _: i64 = redis.client().del(vec![self.sales.clone(), self.applied.clone()]).await?;
        Ok(())
    }
}
