//! Redis side of the ranking: each shard's window sets (`lua/ranking_shard_top.lua`), the rebuild markers, the
//! cached top list per window, the refresh lock, and the temporary copies a rebuild swaps in.

use std::collections::HashMap;

use chrono::NaiveDate;
use fred::prelude::*;

use super::{
    Shard, Shards, TopProducts, applied_key, day_key, rebuilt_key, unfolded_key, window_set_key, windows_state_key,
};
use crate::id::{OrderId, ProductId};
use crate::store::{Redis, StoreError};

/// A cached window older than this is recomputed by the next request, so a stalled scheduler (every
/// instance failing to refresh) cannot serve an old list for long.
pub(super) const WINDOW_TTL_SECS: i64 = 600;
/// How long one instance's refresh keeps the others from refreshing: ticks of several instances that fall
/// within this of each other refresh once. Longer than a refresh takes at 100,000 products.
const REFRESH_LOCK_MS: i64 = 5_000;
/// Lifetime of a rebuild's temporary copies, should the rebuild die before swapping them in.
const TEMP_TTL_SECS: i64 = 600;
/// Commands per pipeline when filling the temporary copies.
const FILL_CHUNK: usize = 1_000;

/// Members one refresh call may feed to ZUNIONSTORE while it makes a shard's window sets (its first union
/// runs whatever its size). A member costs ~0.25 µs of Redis here (docs/performance.md), so ~1.5 ms a call:
/// well inside the 5 ms one call may hold Redis. Larger means fewer round trips when the sets are made;
/// smaller, a shorter stall on a slower machine.
const UNION_BUDGET: u32 = 6_000;
/// ZINCRBYs one refresh call may run folding new units into a shard's window sets: ~1.9 µs each here, so
/// ~1.5 ms a call, like [`UNION_BUDGET`]. The script compares the two to decide whether folding or making
/// the sets anew takes fewer calls, so they must stand for about the same Redis time.
const FOLD_BUDGET: u32 = 800;
/// How long a shard's window sets and their state outlive the last refresh that touched them: a day without
/// a refresh drops them (memory: 6 windows of the shard's products) and the next refresh makes them anew.
const WINDOW_SETS_TTL_SECS: i64 = 24 * 60 * 60;

/// What one call of `lua/ranking_shard_top.lua` did for a shard.
#[derive(Debug)]
pub enum ShardStep {
    /// It used its budget bringing the window sets up to date; call again.
    Working,
    /// The window sets are current: the shard's part of every window.
    Top(ShardTop),
}

/// One shard's part of every window, as `lua/ranking_shard_top.lua` returns it.
#[derive(Debug)]
pub struct ShardTop {
    /// Per day asked for (today first): whether the shard's rebuild marker of that day is present.
    pub marked: Vec<bool>,
    /// Per window of 1, 2, ... days: the shard's best products with their units, every product tied with
    /// the last of them included, in no particular order among ties.
    pub windows: Vec<Vec<(ProductId, i64)>>,
}

/// One bounded step towards the windows of 1..=`days.len()` days (`days` consecutive, today first, at least
/// two) of one shard, each with at least its `n` best products once [`ShardStep::Top`].
pub async fn shard_step(
    redis: &Redis,
    shards: Shards,
    shard: Shard,
    days: &[NaiveDate],
    n: u32,
) -> Result<ShardStep, StoreError> {
    let keys = &redis.keys;
    let window_sets = (2..=days.len() as u32).map(|k| window_set_key(keys, shard, k));
    let mut script_keys = Vec::with_capacity(4 * days.len());
    script_keys.push(windows_state_key(keys, shard));
    script_keys.extend(window_sets);
    script_keys.extend(days.iter().map(|day| day_key(keys, shard, *day)));
    script_keys.extend(days.iter().map(|day| unfolded_key(keys, shard, *day)));
    script_keys.extend(days.iter().map(|day| rebuilt_key(keys, shard, *day)));
    let ymd = |day: NaiveDate| day.format("%Y%m%d").to_string();
    let args = vec![
        n.to_string(),
        shards.count().to_string(),
        ymd(days[0]),
        ymd(days[0] - chrono::Days::new(1)),
        UNION_BUDGET.to_string(),
        FOLD_BUDGET.to_string(),
        WINDOW_SETS_TTL_SECS.to_string(),
    ];
    let script = &*crate::store::scripts::RANKING_SHARD_TOP;
    let reply: Vec<Value> = script.call(redis, script_keys, args).await?;
    let mut parts = reply.into_iter();
    match parts.next().as_ref().and_then(Value::as_str).as_deref() {
        Some("more") => return Ok(ShardStep::Working),
        Some("top") => {}
        other => return Err(script.unexpected(other)),
    }
    let marked = match parts.next() {
        Some(Value::Array(marked)) => marked.iter().map(|m| m.as_i64() == Some(1)).collect::<Vec<_>>(),
        other => return Err(script.unexpected(other)),
    };
    let windows = parts
        .map(|window| match window {
            Value::Array(flat) => flat
                .chunks_exact(2)
                .map(|pair| {
                    let id = pair[0].as_string().and_then(|s| s.parse().ok()).and_then(ProductId::new);
                    let units = pair[1].as_f64();
                    id.zip(units).map(|(id, units)| (id, units as i64)).ok_or_else(|| script.unexpected(pair))
                })
                .collect::<Result<Vec<_>, _>>(),
            other => Err(script.unexpected(other)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if marked.len() != days.len() || windows.len() != days.len() {
        return Err(script.unexpected((marked, windows)));
    }
    Ok(ShardStep::Top(ShardTop { marked, windows }))
}

/// Deletes every shard's window state, so the next refresh makes each shard's window sets from its day sets.
pub async fn forget_window_sets(redis: &Redis, shards: Shards) -> Result<(), StoreError> {
    // One DEL per key: on a cluster the shards live in different slots.
    let pipeline = redis.client().pipeline();
    for shard in shards.all() {
        let _: () = pipeline.del(windows_state_key(&redis.keys, shard)).await?;
    }
    let _: Vec<Value> = pipeline.all().await?;
    Ok(())
}

/// Per day of `days`: whether every shard holds its rebuild marker for `shards` (one pipeline of GETs).
pub async fn marked_days(redis: &Redis, shards: Shards, days: &[NaiveDate]) -> Result<Vec<bool>, StoreError> {
    let pipeline = redis.client().pipeline();
    for day in days {
        for shard in shards.all() {
            let _: () = pipeline.get(rebuilt_key(&redis.keys, shard, *day)).await?;
        }
    }
    let markers: Vec<Option<String>> = pipeline.all().await?;
    let expected = shards.count().to_string();
    Ok(markers
        .chunks(shards.count() as usize)
        .map(|day| day.iter().all(|marker| marker.as_deref() == Some(expected.as_str())))
        .collect())
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

/// Every window of 1..=[`super::MAX_DAYS`] days, in that order; `None` for one missing or undecodable.
pub async fn windows(redis: &Redis) -> Result<Vec<Option<TopProducts>>, StoreError> {
    // One GET per key: on a cluster the window keys live in different slots.
    let pipeline = redis.client().pipeline();
    for days in 1..=super::MAX_DAYS {
        let _: () = pipeline.get(window_key(redis, days)).await?;
    }
    let cached: Vec<Option<String>> = pipeline.all().await?;
    Ok(cached.into_iter().map(|json| json.and_then(|json| serde_json::from_str(&json).ok())).collect())
}

/// `<prefix>ranking:version`: changed by every refresh after it stored the windows, so instances know when
/// to reload their in-process copy (`super::published`).
fn version_key(redis: &Redis) -> String {
    redis.keys.key("ranking:version")
}

pub async fn version(redis: &Redis) -> Result<Option<String>, StoreError> {
    Ok(redis.client().get(version_key(redis)).await?)
}

/// Marks the stored windows as new: every instance reloads its copy at its next check.
pub async fn publish_version(redis: &Redis) -> Result<(), StoreError> {
    let version = uuid::Uuid::new_v4().simple().to_string();
    let _: () =
        redis.client().set(version_key(redis), version, Some(Expiration::EX(WINDOW_TTL_SECS)), None, false).await?;
    Ok(())
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

/// A rebuild's private copies of one shard of one day, in the same `{rank:<s>}` slot as the live ones.
pub struct TempDay {
    shard: Shard,
    day: NaiveDate,
    sales: String,
    applied: String,
}

impl TempDay {
    pub fn new(redis: &Redis, shard: Shard, day: NaiveDate) -> Self {
        let run = uuid::Uuid::new_v4().simple();
        let (s, ymd) = (shard.get(), day.format("%Y%m%d"));
        Self {
            shard,
            day,
            sales: redis.keys.key(format_args!("sales:{{rank:{s}}}:rebuild:{run}:{ymd}")),
            applied: redis.keys.key(format_args!("sales:{{rank:{s}}}:rebuild:{run}:applied:{ymd}")),
        }
    }

    pub fn shard(&self) -> Shard {
        self.shard
    }

    pub fn day(&self) -> NaiveDate {
        self.day
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

    /// Swaps the copies in for the live shard of the day and marks it rebuilt for `shards` (see
    /// `lua/ranking_replace_day.lua`). Returns the orders the live shard counts that the copies lack; when
    /// that is empty the swap happened.
    pub async fn replace_live(&self, redis: &Redis, shards: Shards, ttl_secs: i64) -> Result<Vec<OrderId>, StoreError> {
        let script = &crate::store::scripts::RANKING_REPLACE_DAY;
        let keys = vec![
            day_key(&redis.keys, self.shard, self.day),
            applied_key(&redis.keys, self.shard, self.day),
            self.sales.clone(),
            self.applied.clone(),
            rebuilt_key(&redis.keys, self.shard, self.day),
            unfolded_key(&redis.keys, self.shard, self.day),
            windows_state_key(&redis.keys, self.shard),
        ];
        let missing: Vec<String> = script.call(redis, keys, vec![ttl_secs, i64::from(shards.count())]).await?;
        missing.iter().map(|id| id.parse().ok().and_then(OrderId::new).ok_or_else(|| script.unexpected(id))).collect()
    }

    /// Deletes the copies (after a failed rebuild; a successful one renamed them away).
    pub async fn discard(&self, redis: &Redis) -> Result<(), StoreError> {
        let _: i64 = redis.client().del(vec![self.sales.clone(), self.applied.clone()]).await?;
        Ok(())
    }
}
