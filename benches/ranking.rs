//! Ranking benchmarks against the dev services (`scripts/services.sh start dev`; `DATABASE_URL` and
//! `REDIS_URL` override them, `RANKING_SHARDS` the shard count, 64 by default, `RANKING_BENCH_PRODUCTS` the
//! catalogue sizes, `10000,100000` by default): the scheduled refresh with sales on each of the last 7 days,
//! and the request path reading a cached top list from Redis and from the in-process copy.
//!
//! The refresh is measured in four situations, each a criterion benchmark timing only the refresh:
//! - `steady`: nothing sold since the previous refresh (the shards only read their window sets);
//! - `1000_sales`: 1,000 one-line orders of random products recorded (by the relay's script) before each
//!   refresh, which folds them into the window sets;
//! - `made_anew`: every shard's window state deleted before each refresh, which makes all window sets from
//!   the day sets (the first refresh, or one after the sets were lost);
//! - `midnight`: the first refresh of the next day (its `now` one day on, 100 sales of that day recorded),
//!   which moves the window sets on a day, after an untimed refresh of today.
//!
//! Beside criterion's times it prints, per situation, what each refresh cost Redis: refresh p50 and max over
//! every timed refresh (warm-up included), the slowest single Redis call of any of them (SLOWLOG at a 0 µs
//! threshold, reset before each), the calls over 5 ms, and the script calls' `INFO commandstats` mean
//! (reset before each). It changes the server's SLOWLOG settings while it runs and puts them back after, so
//! point it at a Redis of its own.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use futures::StreamExt;
use rand::Rng;
use stampede::config::StoreConfig;
use stampede::id::{OrderId, ProductId};
use stampede::product;
use stampede::ranking::published::Published;
use stampede::ranking::{self, ComputeGate, Settings, Shards, Window};
use stampede::store::Stores;
use tokio::runtime::Runtime;

/// Catalogue sizes of the refresh benchmark unless `RANKING_BENCH_PRODUCTS` names others.
const SIZES: &str = "10000,100000";
/// One-line orders recorded before each refresh of the `1000_sales` situation.
const SALES_PER_REFRESH: usize = 1_000;
/// Criterion's measurement time per situation and size.
const MEASUREMENT: Duration = Duration::from_secs(5);
/// Sales of the new day recorded before the timed refresh of the `midnight` situation.
const MIDNIGHT_SALES: usize = 100;
/// Orders recorded at once while setting up.
const RECORD_PARALLEL: usize = 64;
/// Products of the cached-read benchmark.
const READ_SIZE: usize = 1_000;
/// Days with sales, today included: every day a refresh reads.
const SALES_DAYS: u64 = 7;
/// Members per ZADD while setting up.
const ZADD_CHUNK: usize = 1_000;
/// Products per INSERT while setting up.
const INSERT_CHUNK: usize = 5_000;
/// The budget for one Redis call of a refresh, in µs.
const SLOW_CALL_US: i64 = 5_000;

fn store_config() -> StoreConfig {
    StoreConfig {
        database_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "mysql://stampede:stampede@127.0.0.1:3390/stampede".to_owned()),
        redis_url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6390".to_owned()),
        redis_prefix: format!("bench:ranking:{}:", uuid::Uuid::new_v4().simple()),
        database_pool_size: 4,
        redis_pool_size: 2,
        redis_wait_replicas: 0,
    }
}

fn settings() -> Settings {
    let shards = std::env::var("RANKING_SHARDS").map_or(Shards::DEFAULT, |s| Shards::parse(&s).unwrap());
    Settings { business_tz: stampede::config::parse_offset("+09:00").expect("a valid offset"), shards }
}

/// Makes sure `count` products exist and returns the ids of the first `count`.
async fn products(stores: &Stores, count: usize) -> Vec<ProductId> {
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products").fetch_one(&stores.db).await.unwrap();
    let missing = count.saturating_sub(existing as usize);
    for from in (0..missing).step_by(INSERT_CHUNK) {
        let rows: Vec<_> = (from..missing.min(from + INSERT_CHUNK))
            .map(|n| product::ProductSpec::single(&format!("bench-product-{n}"), 1_000, 1_000).validate().unwrap())
            .collect();
        product::db::insert_batch(&stores.db, &rows).await.unwrap();
    }
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM products ORDER BY id LIMIT ?")
        .bind(count as i64)
        .fetch_all(&stores.db)
        .await
        .unwrap();
    ids.into_iter().filter_map(ProductId::new).collect()
}

/// Writes sales of every product on each of the last [`SALES_DAYS`] days, in its shard, and the days'
/// rebuild markers as a rebuild leaves them (so the refresh measured is not a healing one).
async fn write_sales(stores: &Stores, settings: Settings, ids: &[ProductId]) {
    let today = ranking::business_day(Utc::now(), settings.business_tz);
    let redis = &stores.redis;
    for back in 0..SALES_DAYS {
        let day = today - Days::new(back);
        for shard in settings.shards.all() {
            let key = ranking::day_key(&redis.keys, shard, day);
            let members: Vec<ProductId> = ids.iter().copied().filter(|id| settings.shards.of(*id) == shard).collect();
            for chunk in members.chunks(ZADD_CHUNK) {
                let members: Vec<(f64, i64)> = {
                    let mut rng = rand::rng();
                    chunk.iter().map(|id| (rng.random_range(1..=20) as f64, id.get())).collect()
                };
                let _: i64 = redis.client().zadd(&key, None, None, false, false, members).await.unwrap();
            }
            let marker = ranking::rebuilt_key(&redis.keys, shard, day);
            let _: () = redis.client().set(&marker, settings.shards.count(), None, None, false).await.unwrap();
        }
    }
}

/// Records `count` one-line orders (1..=3 units of a random product of `ids`) on `day`, as the relay does.
async fn record_sales(stores: &Stores, settings: Settings, ids: &[ProductId], day: NaiveDate, count: usize) {
    static ORDERS: AtomicI64 = AtomicI64::new(1);
    let lines: Vec<(OrderId, ProductId, i64)> = {
        let mut rng = rand::rng();
        (0..count)
            .map(|_| {
                let order = OrderId::new(ORDERS.fetch_add(1, Ordering::Relaxed)).unwrap();
                (order, ids[rng.random_range(0..ids.len())], rng.random_range(1..=3))
            })
            .collect()
    };
    futures::stream::iter(lines)
        .for_each_concurrent(RECORD_PARALLEL, |(order, product, units)| async move {
            ranking::sales::record(&stores.redis, settings.shards, day, order, &[(product, units)]).await.unwrap();
        })
        .await;
}

/// Deletes what was recorded on `day` (its sales, applied and unfolded sets in every shard).
async fn forget_day(stores: &Stores, settings: Settings, day: NaiveDate) {
    let keys = &stores.redis.keys;
    for shard in settings.shards.all() {
        let day_keys = vec![
            ranking::day_key(keys, shard, day),
            ranking::applied_key(keys, shard, day),
            ranking::unfolded_key(keys, shard, day),
        ];
        let _: i64 = stores.redis.client().del(day_keys).await.unwrap();
    }
}

/// Deletes every key of this run's prefix.
async fn forget_prefix(stores: &Stores) {
    let pattern = stores.redis.keys.key("*");
    let keys: Vec<String> = command(stores, "KEYS", vec![pattern]).await.convert().unwrap();
    for chunk in keys.chunks(ZADD_CHUNK) {
        let _: i64 = stores.redis.client().del(chunk.to_vec()).await.unwrap();
    }
}

/// A runtime and migrated stores on the dev services.
fn connect() -> (Runtime, Stores) {
    let runtime = Runtime::new().unwrap();
    let stores =
        runtime.block_on(Stores::connect(&store_config())).expect("dev services up: scripts/services.sh start dev");
    (runtime, stores)
}

async fn command(stores: &Stores, name: &'static str, args: Vec<String>) -> Value {
    let command = CustomCommand::new_static(name, ClusterHash::Random, false);
    stores.redis.client().custom(command, args).await.unwrap()
}

async fn config_set(stores: &Stores, name: &str, value: &str) {
    command(stores, "CONFIG", vec!["SET".into(), name.into(), value.into()]).await;
}

async fn config_get(stores: &Stores, name: &str) -> String {
    let reply = command(stores, "CONFIG", vec!["GET".into(), name.into()]).await;
    let pair: Vec<String> = reply.convert().unwrap();
    pair[1].clone()
}

/// `(µs, command)` of every SLOWLOG entry, slowest first.
async fn slowlog(stores: &Stores) -> Vec<(i64, String)> {
    let entries = command(stores, "SLOWLOG", vec!["GET".into(), "-1".into()]).await;
    let mut calls: Vec<(i64, String)> = entries
        .into_array()
        .into_iter()
        .map(|entry| {
            let fields = entry.into_array();
            let micros = fields[2].as_i64().unwrap();
            let name = fields[3].clone().into_array().first().and_then(|v| v.as_string()).unwrap_or_default();
            (micros, name)
        })
        .collect();
    calls.sort_by_key(|call| std::cmp::Reverse(call.0));
    calls
}

/// `(calls, µs)` of `cmdstat_evalsha` in `INFO commandstats`: every script call since the last RESETSTAT.
async fn script_stats(stores: &Stores) -> (i64, i64) {
    let info: String = command(stores, "INFO", vec!["commandstats".into()]).await.convert().unwrap();
    let Some(line) = info.lines().find_map(|line| line.strip_prefix("cmdstat_evalsha:")) else {
        return (0, 0);
    };
    let field = |name: &str| {
        line.split(',').find_map(|kv| kv.strip_prefix(name)).and_then(|v| v.parse().ok()).unwrap_or_default()
    };
    (field("calls="), field("usec="))
}

/// What every timed refresh of one situation cost, printed beside criterion's figures.
#[derive(Default)]
struct Costs {
    /// Wall time of each refresh.
    took: Vec<Duration>,
    /// The slowest single Redis call of any refresh, µs and command.
    slowest: (i64, String),
    /// Redis calls over [`SLOW_CALL_US`].
    slow_calls: usize,
    /// Script calls and their Redis time, µs.
    script_calls: i64,
    script_us: i64,
}

impl Costs {
    /// One refresh at `now`, timed, with SLOWLOG (every call) and the command stats reset just before it.
    async fn refresh(&mut self, stores: &Stores, settings: Settings, now: DateTime<Utc>) -> Duration {
        command(stores, "SLOWLOG", vec!["RESET".into()]).await;
        command(stores, "CONFIG", vec!["RESETSTAT".into()]).await;
        let started = Instant::now();
        ranking::refresh(stores, settings, now).await.unwrap();
        let took = started.elapsed();
        let calls = slowlog(stores).await;
        // The SLOWLOG and INFO calls of this measurement are not the refresh's.
        let refresh_calls = || calls.iter().filter(|(_, name)| !matches!(name.as_str(), "SLOWLOG" | "CONFIG" | "INFO"));
        if let Some(slowest) = refresh_calls().next().filter(|slowest| slowest.0 > self.slowest.0) {
            self.slowest = slowest.clone();
        }
        self.slow_calls += refresh_calls().filter(|(us, _)| *us > SLOW_CALL_US).count();
        let (calls, us) = script_stats(stores).await;
        self.script_calls += calls;
        self.script_us += us;
        self.took.push(took);
        took
    }

    /// One row of the table in docs/performance.md; nothing when criterion's filter skipped the situation.
    fn print(&self, situation: &str, size: usize, settings: Settings) {
        if self.took.is_empty() {
            return;
        }
        let mut took = self.took.clone();
        took.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
        let refreshes = took.len().max(1) as i64;
        println!(
            "| {size} | {} | {situation} | {} | {:.1} / {:.1} | {:.2} ms ({}) | {} | {:.0} | {} |",
            settings.shards,
            took.len(),
            took.get(took.len() / 2).map_or(0.0, |d| ms(*d)),
            took.last().map_or(0.0, |d| ms(*d)),
            self.slowest.0 as f64 / 1_000.0,
            self.slowest.1,
            self.script_calls / refreshes,
            self.script_us as f64 / self.script_calls.max(1) as f64,
            self.slow_calls,
        );
    }
}

/// `used_memory` of `INFO memory`, bytes.
async fn used_memory(stores: &Stores) -> i64 {
    let info: String = command(stores, "INFO", vec!["memory".into()]).await.convert().unwrap();
    info.lines().find_map(|line| line.strip_prefix("used_memory:")).and_then(|v| v.parse().ok()).unwrap_or_default()
}

/// Times one situation: `prepare` runs (untimed) before each refresh and returns that refresh's `now`.
fn situation<P, F>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &Runtime,
    stores: &Stores,
    (name, size): (&str, usize),
    prepare: P,
) where
    P: Fn() -> F,
    F: Future<Output = DateTime<Utc>>,
{
    let settings = settings();
    let mut costs = Costs::default();
    group.bench_function(BenchmarkId::new(name, size), |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let now = prepare().await;
                    total += costs.refresh(stores, settings, now).await;
                }
                total
            })
        });
    });
    costs.print(name, size, settings);
}

fn refresh(c: &mut Criterion) {
    let (runtime, stores) = connect();
    let settings = settings();
    let (threshold, max_len) = runtime.block_on(async {
        let saved =
            (config_get(&stores, "slowlog-log-slower-than").await, config_get(&stores, "slowlog-max-len").await);
        config_set(&stores, "slowlog-max-len", "100000").await;
        config_set(&stores, "slowlog-log-slower-than", "0").await;
        saved
    });
    let sizes = std::env::var("RANKING_BENCH_PRODUCTS").unwrap_or_else(|_| SIZES.to_owned());
    let mut group = c.benchmark_group(format!("ranking_refresh_{}_shards", settings.shards));
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(MEASUREMENT);
    println!(
        "| products | shards | situation | refreshes | refresh ms p50 / max | slowest call | script calls per refresh | µs per script call | calls over 5 ms |"
    );
    for size in sizes.split(',').map(|size| size.trim().parse::<usize>().expect("RANKING_BENCH_PRODUCTS: sizes")) {
        let ids = runtime.block_on(async {
            let ids = products(&stores, size).await;
            let before = used_memory(&stores).await;
            write_sales(&stores, settings, &ids).await;
            let days = used_memory(&stores).await;
            let started = Instant::now();
            ranking::refresh(&stores, settings, Utc::now()).await.unwrap();
            let first = started.elapsed();
            let windows = used_memory(&stores).await;
            println!(
                "{size} products: day sets {} MB, window sets {} MB (used_memory); the first refresh, which made them, took {first:?}",
                (days - before) / 1_000_000,
                (windows - days) / 1_000_000
            );
            ids
        });
        situation(&mut group, &runtime, &stores, ("steady", size), || async { Utc::now() });
        situation(&mut group, &runtime, &stores, ("1000_sales", size), || async {
            let today = ranking::business_day(Utc::now(), settings.business_tz);
            record_sales(&stores, settings, &ids, today, SALES_PER_REFRESH).await;
            Utc::now()
        });
        situation(&mut group, &runtime, &stores, ("made_anew", size), || async {
            ranking::cache::forget_window_sets(&stores.redis, settings.shards).await.unwrap();
            Utc::now()
        });
        // Each of its refreshes is prepared by one that makes every window set: keep the count low.
        group.measurement_time(Duration::from_secs(1));
        situation(&mut group, &runtime, &stores, ("midnight", size), || async {
            let tomorrow = Utc::now() + TimeDelta::days(1);
            let day = ranking::business_day(tomorrow, settings.business_tz);
            forget_day(&stores, settings, day).await;
            ranking::refresh(&stores, settings, Utc::now()).await.unwrap();
            record_sales(&stores, settings, &ids, day, MIDNIGHT_SALES).await;
            tomorrow
        });
        group.measurement_time(MEASUREMENT);
        runtime.block_on(forget_prefix(&stores));
    }
    group.finish();
    runtime.block_on(async {
        config_set(&stores, "slowlog-log-slower-than", &threshold).await;
        config_set(&stores, "slowlog-max-len", &max_len).await;
    });
}

fn top_read(c: &mut Criterion) {
    let (runtime, stores) = connect();
    let settings = settings();
    let gate = ComputeGate::default();
    runtime.block_on(async {
        let ids = products(&stores, READ_SIZE).await;
        write_sales(&stores, settings, &ids).await;
        ranking::refresh(&stores, settings, Utc::now()).await.unwrap();
    });
    c.bench_function("ranking_top_read_from_redis", |b| {
        b.to_async(&runtime)
            .iter(|| async { ranking::top(&stores, settings, &gate, Window::DEFAULT, Utc::now()).await.unwrap() });
    });
    // What `GET /products/top` does: the serialized body from the in-process copy.
    let copy = Published::default();
    assert!(runtime.block_on(copy.reload(&stores.redis, settings, Utc::now())).unwrap(), "the copy loads");
    c.bench_function("ranking_top_read_from_copy", |b| {
        b.to_async(&runtime).iter(|| async {
            ranking::top_json(&stores, settings, &gate, &copy, Window::DEFAULT, Utc::now()).await.unwrap()
        });
    });
    runtime.block_on(forget_prefix(&stores));
}

criterion_group!(benches, refresh, top_read);
criterion_main!(benches);
