//! Top products: daily sales in Redis sorted sets, unioned over a window of days.

pub mod cache;
pub mod db;
pub mod job;
pub mod sales;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Days, FixedOffset, NaiveDate, NaiveTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::id::{OrderId, ProductId};
use crate::store::{Keys, StoreError, Stores};

/// The business day (in the configured fixed offset) that `at` falls on.
pub fn business_day(at: DateTime<Utc>, tz: FixedOffset) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// `<prefix>sales:{rank}:YYYYMMDD`: the contract's name of one day's sales set (member = product id,
/// score = units). The `{rank}` hash tag keeps every day in one cluster slot so they can be unioned.
pub fn day_key(keys: &Keys, day: NaiveDate) -> String {
    keys.key(format_args!("sales:{{rank}}:{}", day.format("%Y%m%d")))
}

/// `<prefix>sales:{rank}:applied:YYYYMMDD`: the set of order ids already counted in that day's sales set.
/// Whoever writes a day set (the outbox relay adding one order, a rebuild replacing the day) writes this
/// set with it, atomically, which is what makes "exactly once per order" hold across replays and rebuilds.
pub fn applied_key(keys: &Keys, day: NaiveDate) -> String {
    keys.key(format_args!("sales:{{rank}}:applied:{}", day.format("%Y%m%d")))
}

/// Longest window served, in days.
pub const MAX_DAYS: u32 = 7;
/// Largest `limit` served; each window's cached list holds this many products.
pub const MAX_LIMIT: u32 = 50;
/// Days of sales kept in Redis, rebuilt by default and checked at start-up.
pub const KEPT_DAYS: u32 = 8;
/// TTL of a day's sets, the same the outbox relay gives them.
pub const DAY_TTL_SECS: i64 = 9 * 24 * 60 * 60;
/// Swap attempts of a rebuilt day before giving up; each retry only happens when the relay counted an
/// order between two attempts, so more than a couple means something is badly wrong.
const SWAP_ATTEMPTS: usize = 10;

/// Why a ranking operation failed.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("the sales of {0} kept changing while they were rebuilt")]
    RebuildContended(NaiveDate),
    #[error(transparent)]
    Store(#[from] StoreError),
}

crate::store::store_error_conversions!(Error);

/// A valid request for the top list: `days` 1..=7 ending today, `limit` 1..=50.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    days: u32,
    limit: u32,
}

impl Window {
    /// Three days, top five: what `GET /products/top` without parameters and the admin refresh return.
    pub const DEFAULT: Window = Window { days: 3, limit: 5 };

    /// Absent values take the defaults.
    pub fn parse(days: Option<i64>, limit: Option<i64>) -> Result<Self, Error> {
        let days = days.unwrap_or(Self::DEFAULT.days.into());
        let limit = limit.unwrap_or(Self::DEFAULT.limit.into());
        let days = u32::try_from(days).ok().filter(|d| (1..=MAX_DAYS).contains(d));
        let limit = u32::try_from(limit).ok().filter(|l| (1..=MAX_LIMIT).contains(l));
        match (days, limit) {
            (Some(days), Some(limit)) => Ok(Self { days, limit }),
            (None, _) => Err(Error::Invalid("days must be 1..=7")),
            (_, None) => Err(Error::Invalid("limit must be 1..=50")),
        }
    }

    pub fn days(self) -> u32 {
        self.days
    }

    pub fn limit(self) -> u32 {
        self.limit
    }
}

/// The best sellers of a window of days.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopProducts {
    pub days: u32,
    /// First day of the window in the business time zone, `YYYY-MM-DD`.
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    /// Last day of the window (today in the business time zone), `YYYY-MM-DD`.
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
    /// When the list was computed from the day sets; it lags sales by up to the refresh period.
    pub generated_at: DateTime<Utc>,
    /// Highest `totalSales` first, ties by lower `productId`; empty without sales.
    pub products: Vec<RankedProduct>,
}

impl TopProducts {
    fn truncated(mut self, limit: u32) -> Self {
        self.products.truncate(limit as usize);
        self
    }
}

/// One product of a top list.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RankedProduct {
    /// 1 for the best seller; ties get consecutive ranks in product id order.
    pub rank: u32,
    pub product_id: ProductId,
    pub name: String,
    /// Won per unit.
    pub price: i64,
    /// Units sold in PAID orders over the window.
    pub total_sales: i64,
}

/// Serializes request-path computations of a window that is not cached (first boot, Redis lost it), so
/// a burst of such requests on one instance computes it once. Cheap to clone.
#[derive(Clone, Default)]
pub struct ComputeGate(Arc<tokio::sync::Mutex<()>>);

/// The top of `window`, read from the list the scheduled refresh cached. A window not cached for today
/// is computed here once (others wait for it) and cached.
pub async fn top(
    stores: &Stores,
    tz: FixedOffset,
    gate: &ComputeGate,
    window: Window,
    now: DateTime<Utc>,
) -> Result<TopProducts, Error> {
    let today = business_day(now, tz);
    if let Some(cached) = cached_for(stores, window.days, today).await? {
        return Ok(cached.truncated(window.limit));
    }
    let _computing = gate.0.lock().await;
    if let Some(cached) = cached_for(stores, window.days, today).await? {
        return Ok(cached.truncated(window.limit));
    }
    let windows = compute(stores, tz, window.days, now).await?;
    cache::store_windows(&stores.redis, &windows).await?;
    let top = windows.into_iter().find(|w| w.days == window.days).expect("the asked window is computed");
    Ok(top.truncated(window.limit))
}

/// The cached list of the `days` window if it ends `today` (a list from before midnight is stale).
async fn cached_for(stores: &Stores, days: u32, today: NaiveDate) -> Result<Option<TopProducts>, Error> {
    Ok(cache::window(&stores.redis, days).await?.filter(|cached| cached.to == today))
}

/// Recomputes and caches every window (1..=7 days); returns the default window.
pub async fn refresh(stores: &Stores, tz: FixedOffset, now: DateTime<Utc>) -> Result<TopProducts, Error> {
    let started = std::time::Instant::now();
    let windows = compute(stores, tz, MAX_DAYS, now).await?;
    cache::store_windows(&stores.redis, &windows).await?;
    metrics::histogram!("ranking_refresh_duration_seconds").record(started.elapsed());
    let default = windows.into_iter().find(|w| w.days == Window::DEFAULT.days).expect("every window is computed");
    Ok(default.truncated(Window::DEFAULT.limit))
}

/// The joined top lists of the windows of 1..=`max_days` days ending today.
///
/// This is the union of the day sets, computed here rather than by ZUNIONSTORE: the day sets are read in
/// small ZSCAN steps and summed in this process, so Redis is never blocked for more than one step (a
/// ZUNIONSTORE of three 100,000-member days blocks it for about 100 ms, stalling the coupon path), ties
/// are broken by product id exactly, and one read of the days yields every window.
async fn compute(
    stores: &Stores,
    tz: FixedOffset,
    max_days: u32,
    now: DateTime<Utc>,
) -> Result<Vec<TopProducts>, Error> {
    let today = business_day(now, tz);
    let days: Vec<NaiveDate> = (0..max_days).map(|back| today - Days::new(back.into())).collect();
    let sales = futures::future::try_join_all(days.iter().map(|day| cache::day_sales(&stores.redis, *day))).await?;
    let mut totals: HashMap<ProductId, i64> = HashMap::new();
    let mut bests = Vec::with_capacity(days.len());
    for day_sales in &sales {
        for (id, units) in day_sales {
            *totals.entry(*id).or_default() += units;
        }
        bests.push(best(&totals, MAX_LIMIT as usize));
    }
    let ids: BTreeSet<ProductId> = bests.iter().flatten().map(|(id, _)| *id).collect();
    let names = db::names_and_prices(&stores.db, &ids.into_iter().collect::<Vec<_>>()).await?;
    let windows = bests
        .into_iter()
        .zip(&days)
        .enumerate()
        .map(|(back, (best, from))| TopProducts {
            days: back as u32 + 1,
            from: *from,
            to: today,
            generated_at: now,
            products: best
                .into_iter()
                .filter_map(|(id, units)| names.get(&id).map(|(name, price)| (id, name, *price, units)))
                .zip(1..)
                .map(|((product_id, name, price, total_sales), rank)| RankedProduct {
                    rank,
                    product_id,
                    name: name.clone(),
                    price,
                    total_sales,
                })
                .collect(),
        })
        .collect();
    Ok(windows)
}

/// The `n` best sellers with sales: most units first, ties by lower id.
fn best(totals: &HashMap<ProductId, i64>, n: usize) -> Vec<(ProductId, i64)> {
    let order = |a: &(ProductId, i64), b: &(ProductId, i64)| b.1.cmp(&a.1).then(a.0.cmp(&b.0));
    let mut all: Vec<(ProductId, i64)> =
        totals.iter().filter(|(_, units)| **units > 0).map(|(id, u)| (*id, *u)).collect();
    if all.len() > n {
        all.select_nth_unstable_by(n, order);
        all.truncate(n);
    }
    all.sort_unstable_by(order);
    all
}

/// What a rebuild wrote for one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuiltDay {
    pub day: NaiveDate,
    /// Distinct PAID orders of the day.
    pub orders: usize,
    /// Units sold in them.
    pub units: i64,
}

/// Rebuilds the day sets of the `days` days ending today from PAID orders in MySQL, then drops the cached
/// windows so they are recomputed from the rebuilt days.
pub async fn rebuild(
    stores: &Stores,
    tz: FixedOffset,
    days: u32,
    now: DateTime<Utc>,
) -> Result<Vec<RebuiltDay>, Error> {
    let today = business_day(now, tz);
    let mut rebuilt = Vec::new();
    for back in 0..days {
        rebuilt.push(rebuild_day(stores, tz, today - Days::new(back.into())).await?);
    }
    cache::forget_windows(&stores.redis).await?;
    Ok(rebuilt)
}

/// At start-up: rebuilds each of the last [`KEPT_DAYS`] days whose sales set is missing in Redis while MySQL
/// has PAID orders on it (Redis lost its data).
pub async fn rebuild_missing(stores: &Stores, tz: FixedOffset, now: DateTime<Utc>) -> Result<Vec<RebuiltDay>, Error> {
    let today = business_day(now, tz);
    let mut rebuilt = Vec::new();
    for back in 0..KEPT_DAYS {
        let day = today - Days::new(back.into());
        let (from, to) = day_bounds(day, tz);
        if !cache::day_exists(&stores.redis, day).await? && db::any_paid(&stores.db, from, to).await? {
            rebuilt.push(rebuild_day(stores, tz, day).await?);
        }
    }
    if !rebuilt.is_empty() {
        cache::forget_windows(&stores.redis).await?;
    }
    Ok(rebuilt)
}

/// Replaces one day's sales set and its applied-orders set by what the PAID orders of that day in MySQL
/// say, atomically: the copies are built aside and swapped in by one script.
pub async fn rebuild_day(stores: &Stores, tz: FixedOffset, day: NaiveDate) -> Result<RebuiltDay, Error> {
    let temp = cache::TempDay::new(&stores.redis, day);
    let rebuilt = fill_and_swap(stores, &temp, day, tz).await;
    if rebuilt.is_err() {
        // Best effort: the copies expire on their own anyway.
        let _ = temp.discard(&stores.redis).await;
    }
    rebuilt
}

async fn fill_and_swap(
    stores: &Stores,
    temp: &cache::TempDay,
    day: NaiveDate,
    tz: FixedOffset,
) -> Result<RebuiltDay, Error> {
    let (from, to) = day_bounds(day, tz);
    let mut lines = db::paid_lines(&stores.db, from, to).await?;
    let mut orders: Vec<OrderId> = lines.iter().map(|l| l.order_id).collect::<BTreeSet<_>>().into_iter().collect();
    let mut rebuilt = RebuiltDay { day, orders: 0, units: 0 };
    for _ in 0..SWAP_ATTEMPTS {
        let mut units: HashMap<ProductId, i64> = HashMap::new();
        for line in &lines {
            *units.entry(line.product_id).or_default() += line.quantity;
        }
        rebuilt.orders += lines.iter().map(|l| l.order_id).collect::<BTreeSet<_>>().len();
        rebuilt.units += units.values().sum::<i64>();
        temp.add(&stores.redis, &units, &orders).await?;
        let missing = temp.replace_live(&stores.redis, DAY_TTL_SECS).await?;
        if missing.is_empty() {
            return Ok(rebuilt);
        }
        // The relay counted these after MySQL was read. Add what MySQL confirms as PAID that day; the
        // rest are marked counted with no units, since MySQL (the source of truth) says they sold nothing.
        lines = db::paid_lines_of(&stores.db, &missing, from, to).await?;
        orders = missing;
    }
    Err(Error::RebuildContended(day))
}

/// The UTC instants `[start, end)` of a business day.
pub fn day_bounds(day: NaiveDate, tz: FixedOffset) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = day
        .and_time(NaiveTime::MIN)
        .and_local_timezone(tz)
        .single()
        .expect("a fixed offset maps every local time exactly once")
        .with_timezone(&Utc);
    (start, start + TimeDelta::days(1))
}
