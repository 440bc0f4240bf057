//! Ranking benchmarks against the dev services (`scripts/services.sh start dev`; `DATABASE_URL` and
//! `REDIS_URL` override them, `RANKING_SHARDS` the shard count, 64 by default): the scheduled refresh at
//! 10,000 and 100,000 products with sales on each of the last 7 days, and the request path reading a cached
//! top list from Redis and from the in-process copy. Each size writes its day sets under its own key prefix,
//! set up before and deleted after the timed part.
//!
//! Beside criterion's times it prints what the refresh costs Redis: the slowest single call of one refresh
//! (SLOWLOG at a 0 µs threshold around that one refresh), the calls over 5 ms during the whole timed part
//! (SLOWLOG at 5,000 µs) and the scripts' `INFO commandstats` line. It changes the server's SLOWLOG settings
//! while it runs and puts them back after, so point it at a Redis of its own.

use std::time::Duration;

use chrono::{Days, Utc};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use rand::Rng;
use stampede::config::StoreConfig;
use stampede::id::ProductId;
use stampede::product;
use stampede::ranking::published::Published;
use stampede::ranking::{self, ComputeGate, Settings, Shards, Window};
use stampede::store::{Stores, mysql};
use tokio::runtime::Runtime;

const SIZES: [usize; 2] = [10_000, 100_000];
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
/// rebuild markers as a rebuild leaves them (so the refresh measured is the steady one, not a healing one);
/// returns the keys written.
async fn write_sales(stores: &Stores, settings: Settings, ids: &[ProductId]) -> Vec<String> {
    let today = ranking::business_day(Utc::now(), settings.business_tz);
    let redis = &stores.redis;
    let mut keys = Vec::new();
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
            keys.extend([key, marker]);
        }
    }
    keys
}

/// A runtime and migrated stores on the dev services.
fn connect() -> (Runtime, Stores) {
    let runtime = Runtime::new().unwrap();
    let stores = runtime.block_on(async {
        let stores = Stores::connect(&store_config()).await.expect("dev services up: scripts/services.sh start dev");
        mysql::migrate(&stores.db).await.unwrap();
        stores
    });
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

/// The `cmdstat_evalsha` line of `INFO commandstats`: calls, total and mean µs of every script call.
async fn script_stats(stores: &Stores) -> String {
    let info: String = command(stores, "INFO", vec!["commandstats".into()]).await.convert().unwrap();
    info.lines().find(|line| line.starts_with("cmdstat_evalsha")).unwrap_or("no script call").to_owned()
}

fn refresh(c: &mut Criterion) {
    let (runtime, stores) = connect();
    let settings = settings();
    let (threshold, max_len) = runtime.block_on(async {
        (config_get(&stores, "slowlog-log-slower-than").await, config_get(&stores, "slowlog-max-len").await)
    });
    let mut group = c.benchmark_group(format!("ranking_refresh_{}_shards", settings.shards));
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    for size in SIZES {
        let keys = runtime.block_on(async {
            let ids = products(&stores, size).await;
            let keys = write_sales(&stores, settings, &ids).await;
            // One refresh with every call logged: its slowest single call.
            config_set(&stores, "slowlog-max-len", "100000").await;
            config_set(&stores, "slowlog-log-slower-than", "0").await;
            command(&stores, "SLOWLOG", vec!["RESET".into()]).await;
            let started = std::time::Instant::now();
            ranking::refresh(&stores, settings, Utc::now()).await.unwrap();
            let took = started.elapsed();
            config_set(&stores, "slowlog-log-slower-than", &SLOW_CALL_US.to_string()).await;
            let calls = slowlog(&stores).await;
            let scripts: Vec<i64> = calls.iter().filter(|(_, name)| name == "EVALSHA").map(|(us, _)| *us).collect();
            println!(
                "{size} products: one refresh took {took:?}; slowest Redis call {:?}; {} script calls, mean {} µs",
                calls.first(),
                scripts.len(),
                scripts.iter().sum::<i64>() / scripts.len().max(1) as i64,
            );
            command(&stores, "SLOWLOG", vec!["RESET".into()]).await;
            command(&stores, "CONFIG", vec!["RESETSTAT".into()]).await;
            keys
        });
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.to_async(&runtime).iter(|| async { ranking::refresh(&stores, settings, Utc::now()).await.unwrap() });
        });
        runtime.block_on(async {
            let slow = slowlog(&stores).await;
            println!(
                "{size} products, timed part: {} Redis calls over {SLOW_CALL_US} µs (slowest {:?}); {}",
                slow.len(),
                slow.first(),
                script_stats(&stores).await
            );
            for chunk in keys.chunks(ZADD_CHUNK) {
                let _: i64 = stores.redis.client().del(chunk.to_vec()).await.unwrap();
            }
        });
    }
    group.finish();
    runtime.block_on(async {
        config_set(&stores, "slowlog-log-slower-than", &threshold).await;
        config_set(&stores, "slowlog-max-len", &max_len).await;
        ranking::cache::forget_windows(&stores.redis).await.unwrap();
    });
}

fn top_read(c: &mut Criterion) {
    let (runtime, stores) = connect();
    let settings = settings();
    let gate = ComputeGate::default();
    let keys = runtime.block_on(async {
        let ids = products(&stores, READ_SIZE).await;
        let keys = write_sales(&stores, settings, &ids).await;
        ranking::refresh(&stores, settings, Utc::now()).await.unwrap();
        keys
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
    runtime.block_on(async {
        for chunk in keys.chunks(ZADD_CHUNK) {
            let _: i64 = stores.redis.client().del(chunk.to_vec()).await.unwrap();
        }
        ranking::cache::forget_windows(&stores.redis).await.unwrap();
    });
}

criterion_group!(benches, refresh, top_read);
criterion_main!(benches);
