//! Top products: daily sales in Redis sorted sets split into shards by product, each shard's days unioned
//! by ZUNIONSTORE in Redis, the shards' bests merged here.

pub mod cache;
pub mod db;
pub mod job;
pub mod published;
pub mod sales;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Days, FixedOffset, NaiveDate, NaiveTime, TimeDelta, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::id::{OrderId, ProductId};
use crate::store::{Keys, StoreError, Stores};

/// The business day (in the configured fixed offset) that `at` falls on.
pub fn business_day(at: DateTime<Utc>, tz: FixedOffset) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// How many sorted sets each day's sales are split into (`RANKING_SHARDS`): a product's units live in shard
/// `productId mod shards`. More shards make each refresh call shorter (its union covers fewer products) and
/// spread the sets over more cluster slots, at one script call per shard per refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shards(u32);

impl Shards {
    /// The contract's default.
    pub const DEFAULT: Shards = Shards(64);
    /// Largest accepted count: beyond it a refresh would be more round trips than union work.
    pub const MAX: u32 = 1_024;

    /// `None` unless `count` is `1..=MAX`.
    pub fn new(count: u32) -> Option<Self> {
        (1..=Self::MAX).contains(&count).then_some(Self(count))
    }

    /// Parses `RANKING_SHARDS`.
    pub fn parse(s: &str) -> Result<Self, String> {
        s.parse().ok().and_then(Self::new).ok_or_else(|| format!("RANKING_SHARDS must be 1..={}, not {s:?}", Self::MAX))
    }

    pub fn count(self) -> u32 {
        self.0
    }

    /// The shard holding `product`'s units.
    pub fn of(self, product: ProductId) -> Shard {
        Shard((product.get() as u64 % u64::from(self.0)) as u32)
    }

    /// Every shard, in order.
    pub fn all(self) -> impl Iterator<Item = Shard> {
        (0..self.0).map(Shard)
    }
}

impl std::fmt::Display for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One of the [`Shards`]: the `<s>` of `{rank:<s>}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shard(u32);

impl Shard {
    pub fn get(self) -> u32 {
        self.0
    }
}

/// The ranking's settings on the command line; `config.rs` flattens them into `serve`.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "ranking")]
pub struct Config {
    /// Cron expression (with seconds) of the ranking refresh.
    #[arg(long = "ranking-refresh", env = "RANKING_REFRESH", default_value = "0 * * * * *")]
    pub refresh: job::Cron,

    /// Sorted sets each day's sales are split into (1..=1024). Every instance must use the same count;
    /// changing it is a rebuild, which start-up does by itself (the days' markers name the old count).
    #[arg(long = "ranking-shards", env = "RANKING_SHARDS", default_value = "64", value_parser = Shards::parse)]
    pub shards: Shards,
}

impl Default for Config {
    fn default() -> Self {
        Self { refresh: "0 * * * * *".parse().expect("a valid cron expression"), shards: Shards::DEFAULT }
    }
}

/// What every ranking operation needs to know about the deployment.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Offset of the business day a sale counts for.
    pub business_tz: FixedOffset,
    pub shards: Shards,
}

/// `<prefix>sales:{rank:<s>}:YYYYMMDD`: the contract's name of one shard of one day's sales (member = product
/// id, score = units). The `{rank:<s>}` hash tag puts every day of a shard in one cluster slot, so a shard's
/// days can be unioned, while different shards spread over the cluster.
pub fn day_key(keys: &Keys, shard: Shard, day: NaiveDate) -> String {
    keys.key(format_args!("sales:{{rank:{}}}:{}", shard.0, day.format("%Y%m%d")))
}

/// `<prefix>sales:{rank:<s>}:applied:YYYYMMDD`: the order ids already counted in that shard's day set.
/// Whoever writes a shard's day set (the outbox relay adding one order, a rebuild replacing the day) writes
/// this set with it, atomically, which is what makes "exactly once per order and shard" hold across replays
/// and rebuilds.
pub fn applied_key(keys: &Keys, shard: Shard, day: NaiveDate) -> String {
    keys.key(format_args!("sales:{{rank:{}}}:applied:{}", shard.0, day.format("%Y%m%d")))
}

/// `<prefix>sales:{rank:<s>}:rebuilt:YYYYMMDD`: holds the shard count, written by a rebuild in the same
/// script that swaps the shard's day in. The relay only ever adds to a day, so it cannot tell a new day from
/// one Redis lost; this marker can: a day with PAID orders in MySQL whose shards lack it (Redis lost data,
/// the day is new, or `RANKING_SHARDS` changed) is rebuilt by the next refresh.
pub fn rebuilt_key(keys: &Keys, shard: Shard, day: NaiveDate) -> String {
    keys.key(format_args!("sales:{{rank:{}}}:rebuilt:{}", shard.0, day.format("%Y%m%d")))
}

/// `<prefix>sales:{rank:<s>}:unfolded:YYYYMMDD`: units added to that shard's day set (by the relay, or by a
/// rebuild's swap) that the shard's window sets do not hold yet; the refresh folds them in and empties it.
pub fn unfolded_key(keys: &Keys, shard: Shard, day: NaiveDate) -> String {
    keys.key(format_args!("sales:{{rank:{}}}:unfolded:{}", shard.0, day.format("%Y%m%d")))
}

/// `<prefix>sales:{rank:<s>}:windows`: the state of the shard's window sets (the day they end on, how many are
/// made, their member counts), see `lua/ranking_shard_top.lua`.
pub fn windows_state_key(keys: &Keys, shard: Shard) -> String {
    keys.key(format_args!("sales:{{rank:{}}}:windows", shard.0))
}

/// `<prefix>sales:{rank:<s>}:window:<days>d`: the shard's window set of `days` (2..=[`MAX_DAYS`]) days ending on
/// the state's day, equal to the ZUNIONSTORE of its day sets once the unfolded units are folded in.
pub fn window_set_key(keys: &Keys, shard: Shard, days: u32) -> String {
    keys.key(format_args!("sales:{{rank:{}}}:window:{days}d", shard.0))
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
    #[error("the window sets of ranking shard {} were not brought up to date in {MAX_SHARD_CALLS} calls", .0.get())]
    RefreshContended(Shard),
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
    settings: Settings,
    gate: &ComputeGate,
    window: Window,
    now: DateTime<Utc>,
) -> Result<TopProducts, Error> {
    let today = business_day(now, settings.business_tz);
    if let Some(cached) = cached_for(stores, window.days, today).await? {
        return Ok(cached.truncated(window.limit));
    }
    let _computing = gate.0.lock().await;
    if let Some(cached) = cached_for(stores, window.days, today).await? {
        return Ok(cached.truncated(window.limit));
    }
    let windows = compute(stores, settings, now).await?.windows;
    cache::store_windows(&stores.redis, &windows).await?;
    let top = windows.into_iter().find(|w| w.days == window.days).expect("the asked window is computed");
    Ok(top.truncated(window.limit))
}

/// `window`'s list as JSON: from the in-process copy when it holds today's lists (no Redis round trip, no
/// encoding), else as [`top`] gives it.
pub async fn top_json(
    stores: &Stores,
    settings: Settings,
    gate: &ComputeGate,
    published: &published::Published,
    window: Window,
    now: DateTime<Utc>,
) -> Result<axum::body::Bytes, Error> {
    if let Some(body) = published.body(window, now, settings) {
        return Ok(body);
    }
    let top = top(stores, settings, gate, window, now).await?;
    Ok(serde_json::to_vec(&top).expect("a top list serializes").into())
}

/// The ranking's handle for requests: the lists as JSON, and a refresh that this instance serves at once.
/// Cheap to clone.
#[derive(Clone)]
pub struct Ranking {
    stores: Stores,
    settings: Settings,
    gate: ComputeGate,
    published: published::Published,
}

impl Ranking {
    pub fn new(stores: Stores, settings: Settings) -> Self {
        Self { stores, settings, gate: ComputeGate::default(), published: published::Published::default() }
    }

    /// The instance's copy of the lists, which [`published::run`] keeps current.
    pub fn published(&self) -> &published::Published {
        &self.published
    }

    /// `window`'s list as JSON, as [`top_json`] gives it.
    pub async fn top_json(&self, window: Window, now: DateTime<Utc>) -> Result<axum::body::Bytes, Error> {
        top_json(&self.stores, self.settings, &self.gate, &self.published, window, now).await
    }

    /// [`refresh`], then this instance serves the new lists at once (the others at their next version check).
    pub async fn refresh_now(&self, now: DateTime<Utc>) -> Result<TopProducts, Error> {
        let top = refresh(&self.stores, self.settings, now).await?;
        self.published.reload(&self.stores.redis, self.settings, now).await?;
        Ok(top)
    }
}

/// The cached list of the `days` window if it ends `today` (a list from before midnight is stale).
async fn cached_for(stores: &Stores, days: u32, today: NaiveDate) -> Result<Option<TopProducts>, Error> {
    Ok(cache::window(&stores.redis, days).await?.filter(|cached| cached.to == today))
}

/// Recomputes and caches every window (1..=7 days); returns the default window.
///
/// It also heals: a served day whose shards lack their rebuild marker while MySQL has PAID orders on it
/// (Redis lost data while the service ran, or the day is new) is rebuilt from MySQL first, so the lists it
/// caches count every PAID order again without a restart.
pub async fn refresh(stores: &Stores, settings: Settings, now: DateTime<Utc>) -> Result<TopProducts, Error> {
    let started = std::time::Instant::now();
    let mut computed = compute(stores, settings, now).await?;
    let rebuilt = heal(stores, settings, &computed.unmarked).await?;
    if !rebuilt.is_empty() {
        computed = compute(stores, settings, now).await?;
    }
    cache::store_windows(&stores.redis, &computed.windows).await?;
    cache::publish_version(&stores.redis).await?;
    metrics::histogram!("ranking_refresh_duration_seconds").record(started.elapsed());
    let default =
        computed.windows.into_iter().find(|w| w.days == Window::DEFAULT.days).expect("every window is computed");
    Ok(default.truncated(Window::DEFAULT.limit))
}

/// Every window of 1..=[`MAX_DAYS`] days ending today, and the days some shard of which lacks its marker.
struct Computed {
    windows: Vec<TopProducts>,
    unmarked: Vec<NaiveDate>,
}

/// Calls of `lua/ranking_shard_top.lua` one shard may take in one refresh. Making a shard's window sets
/// takes a handful and folding takes one per [`cache`]'s fold budget of new units, so reaching this means
/// something keeps resetting the sets (rebuilds in a loop) or a bug.
const MAX_SHARD_CALLS: u32 = 10_000;

/// Shard calls of a refresh in flight at once. Redis runs one script at a time, and calls sent together
/// reach it as one pipeline that it runs back to back before serving another client: with every shard in
/// flight, the coupon path would wait for all of them (a second and more when the window sets are made
/// anew at 1,000,000 products), and the last call could outwait the command timeout. A few keep Redis busy
/// while each other client waits for at most that many calls.
const SHARDS_IN_FLIGHT: usize = 4;

/// The joined top lists of the windows of 1..=[`MAX_DAYS`] days ending today.
///
/// Each shard keeps a window set per window, made by ZUNIONSTORE of its day sets and kept current by
/// folding in what was sold since (`lua/ranking_shard_top.lua`, called until it is current, [`SHARDS_IN_FLIGHT`]
/// shards at a time); it returns its best [`MAX_LIMIT`] per window plus every product tied with the last of
/// them. A product lives in exactly one shard, so the best of the shards' bests, ordered by units and then
/// lower id, is exactly the best of the whole union. Every window is computed, whatever is asked: the window
/// sets move together.
async fn compute(stores: &Stores, settings: Settings, now: DateTime<Utc>) -> Result<Computed, Error> {
    let today = business_day(now, settings.business_tz);
    let days: Vec<NaiveDate> = (0..MAX_DAYS).map(|back| today - Days::new(back.into())).collect();
    let tops: Vec<cache::ShardTop> = futures::stream::iter(settings.shards.all())
        .map(|shard| shard_top(stores, settings, shard, &days))
        .buffer_unordered(SHARDS_IN_FLIGHT)
        .try_collect()
        .await?;
    // A day is complete only when every one of its shards carries the marker of the day's last rebuild.
    let unmarked =
        days.iter().enumerate().filter(|(d, _)| tops.iter().any(|top| !top.marked[*d])).map(|(_, day)| *day).collect();
    let bests: Vec<Vec<(ProductId, i64)>> = (0..days.len())
        .map(|d| best(tops.iter().flat_map(|top| top.windows[d].iter().copied()).collect(), MAX_LIMIT as usize))
        .collect();
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
    Ok(Computed { windows, unmarked })
}

/// Calls the shard's script until its window sets are current; see [`compute`].
async fn shard_top(
    stores: &Stores,
    settings: Settings,
    shard: Shard,
    days: &[NaiveDate],
) -> Result<cache::ShardTop, Error> {
    for _ in 0..MAX_SHARD_CALLS {
        if let cache::ShardStep::Top(top) =
            cache::shard_step(&stores.redis, settings.shards, shard, days, MAX_LIMIT).await?
        {
            return Ok(top);
        }
    }
    Err(Error::RefreshContended(shard))
}

/// The `n` best sellers with sales: most units first, ties by lower id. Redis orders equal scores by member
/// string (`11` before `10`), so the order is decided here.
fn best(mut all: Vec<(ProductId, i64)>, n: usize) -> Vec<(ProductId, i64)> {
    let order = |a: &(ProductId, i64), b: &(ProductId, i64)| b.1.cmp(&a.1).then(a.0.cmp(&b.0));
    all.retain(|(_, units)| *units > 0);
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

/// Rebuilds the day sets of the `days` days ending today from PAID orders in MySQL, in the layout of
/// `settings.shards`, then drops the cached windows and every shard's window sets, so both are made anew from
/// the rebuilt days. Dropping the window sets (rather than folding in what the rebuild changed, as healing
/// does) also repairs sets that a hand edit of a day set had put out of step.
pub async fn rebuild(
    stores: &Stores,
    settings: Settings,
    days: u32,
    now: DateTime<Utc>,
) -> Result<Vec<RebuiltDay>, Error> {
    let today = business_day(now, settings.business_tz);
    let mut rebuilt = Vec::new();
    for back in 0..days {
        rebuilt.push(rebuild_day(stores, settings, today - Days::new(back.into())).await?);
    }
    cache::forget_window_sets(&stores.redis, settings.shards).await?;
    cache::forget_windows(&stores.redis).await?;
    Ok(rebuilt)
}

/// At start-up: rebuilds each of the last [`KEPT_DAYS`] days some shard of which lacks its rebuild marker
/// while MySQL has PAID orders on it (Redis lost data, or `RANKING_SHARDS` changed).
pub async fn rebuild_missing(
    stores: &Stores,
    settings: Settings,
    now: DateTime<Utc>,
) -> Result<Vec<RebuiltDay>, Error> {
    let today = business_day(now, settings.business_tz);
    let days: Vec<NaiveDate> = (0..KEPT_DAYS).map(|back| today - Days::new(back.into())).collect();
    let marked = cache::marked_days(&stores.redis, settings.shards, &days).await?;
    let unmarked: Vec<NaiveDate> = days.into_iter().zip(marked).filter(|(_, marked)| !marked).map(|(d, _)| d).collect();
    let rebuilt = heal(stores, settings, &unmarked).await?;
    if !rebuilt.is_empty() {
        cache::forget_windows(&stores.redis).await?;
    }
    Ok(rebuilt)
}

/// Rebuilds those of `unmarked` days on which MySQL has PAID orders. A day without any is left alone: there
/// is nothing to lose, and its first sale is rebuilt (and marked) by the refresh after it.
async fn heal(stores: &Stores, settings: Settings, unmarked: &[NaiveDate]) -> Result<Vec<RebuiltDay>, Error> {
    let mut rebuilt = Vec::new();
    for day in unmarked {
        let (from, to) = day_bounds(*day, settings.business_tz);
        if db::any_paid(&stores.db, from, to).await? {
            let day = rebuild_day(stores, settings, *day).await?;
            tracing::info!(day = %day.day, orders = day.orders, units = day.units,
                "ranking day rebuilt from MySQL: its shards lacked the rebuild marker");
            rebuilt.push(day);
        }
    }
    Ok(rebuilt)
}

/// Shards rebuilt at once: each is a few pipelines and one script; more in flight only queues on Redis.
const REBUILD_PARALLEL: usize = 8;

/// Replaces every shard of one day (sales set, applied-orders set, marker) by what the PAID orders of that
/// day in MySQL say; each shard atomically: its copies are built aside and swapped in by one script.
pub async fn rebuild_day(stores: &Stores, settings: Settings, day: NaiveDate) -> Result<RebuiltDay, Error> {
    let (from, to) = day_bounds(day, settings.business_tz);
    let mut by_shard: HashMap<Shard, Vec<db::PaidLine>> = HashMap::new();
    for line in db::paid_lines(&stores.db, from, to).await? {
        by_shard.entry(settings.shards.of(line.product_id)).or_default().push(line);
    }
    let shards = settings.shards.all().map(|shard| {
        let lines = by_shard.remove(&shard).unwrap_or_default();
        rebuild_shard_day(stores, settings, shard, day, lines)
    });
    let counted: Vec<ShardCounted> =
        futures::stream::iter(shards).buffer_unordered(REBUILD_PARALLEL).try_collect().await?;
    let orders: BTreeSet<OrderId> = counted.iter().flat_map(|c| c.orders.iter().copied()).collect();
    Ok(RebuiltDay { day, orders: orders.len(), units: counted.iter().map(|c| c.units).sum() })
}

/// What the rebuild of one shard of a day counted.
struct ShardCounted {
    orders: BTreeSet<OrderId>,
    units: i64,
}

async fn rebuild_shard_day(
    stores: &Stores,
    settings: Settings,
    shard: Shard,
    day: NaiveDate,
    lines: Vec<db::PaidLine>,
) -> Result<ShardCounted, Error> {
    let temp = cache::TempDay::new(&stores.redis, shard, day);
    let counted = fill_and_swap(stores, settings, &temp, lines).await;
    if counted.is_err() {
        // Best effort: the copies expire on their own anyway.
        let _ = temp.discard(&stores.redis).await;
    }
    counted
}

async fn fill_and_swap(
    stores: &Stores,
    settings: Settings,
    temp: &cache::TempDay,
    mut lines: Vec<db::PaidLine>,
) -> Result<ShardCounted, Error> {
    let (from, to) = day_bounds(temp.day(), settings.business_tz);
    let mut orders: Vec<OrderId> = lines.iter().map(|l| l.order_id).collect::<BTreeSet<_>>().into_iter().collect();
    let mut counted = ShardCounted { orders: BTreeSet::new(), units: 0 };
    for _ in 0..SWAP_ATTEMPTS {
        let mut units: HashMap<ProductId, i64> = HashMap::new();
        for line in &lines {
            *units.entry(line.product_id).or_default() += line.quantity;
        }
        counted.orders.extend(lines.iter().map(|l| l.order_id));
        counted.units += units.values().sum::<i64>();
        temp.add(&stores.redis, &units, &orders).await?;
        let missing = temp.replace_live(&stores.redis, settings.shards, DAY_TTL_SECS).await?;
        if missing.is_empty() {
            return Ok(counted);
        }
        // The relay counted these in this shard after MySQL was read. Add what MySQL confirms as PAID that
        // day, this shard's lines only; the rest are marked counted with no units, since MySQL (the source of
        // truth) says they sold nothing here.
        lines = db::paid_lines_of(&stores.db, &missing, from, to).await?;
        lines.retain(|line| settings.shards.of(line.product_id) == temp.shard());
        orders = missing;
    }
    Err(Error::RebuildContended(temp.day()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_shards_accepts_1_to_1024_and_puts_a_product_in_its_id_mod_the_count() {
        assert_eq!(["1", "64", "1024"].map(|s| Shards::parse(s).map(Shards::count)), [Ok(1), Ok(64), Ok(1_024)]);
        for refused in ["0", "1025", "-1", "sixty", ""] {
            assert!(Shards::parse(refused).is_err(), "{refused:?}");
        }
        let of = |shards: u32, id: i64| Shards::new(shards).unwrap().of(ProductId::new(id).unwrap()).get();
        assert_eq!([of(64, 1), of(64, 64), of(64, 130), of(1, 130), of(1_024, 1_025)], [1, 0, 2, 0, 1]);
        assert_eq!(Shards::DEFAULT.all().count(), 64);
    }

    #[test]
    fn best_keeps_the_most_units_first_and_breaks_ties_by_the_lower_id_numerically() {
        let id = |n| ProductId::new(n).unwrap();
        let all = vec![(id(11), 5), (id(9), 5), (id(100), 5), (id(10), 5), (id(3), 0), (id(2), 7)];
        assert_eq!(best(all, 3), [(id(2), 7), (id(9), 5), (id(10), 5)]);
    }
}
