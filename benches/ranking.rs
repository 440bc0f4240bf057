//! Ranking benchmarks against the dev services (`scripts/services.sh start dev`; `DATABASE_URL` and
//! `REDIS_URL` override them, `RANKING_SHARDS` the shard count, 64 by default): the scheduled refresh at
//! 1,000, 10,000 and 100,000 products with sales on each of the last 3 days, and the request path reading a
//! cached top list. Each size writes its day sets
//! under its own key prefix, set up before and deleted after the timed part.

use std::time::Duration;

use chrono::{Days, Utc};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fred::prelude::*;
use rand::Rng;
use stampede::config::StoreConfig;
use stampede::id::ProductId;
use stampede::product;
use stampede::ranking::{self, ComputeGate, Settings, Shards, Window};
use stampede::store::{Stores, mysql};
use tokio::runtime::Runtime;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
/// Days with sales, today included.
const SALES_DAYS: u64 = 3;
/// Members per ZADD while setting up.
const ZADD_CHUNK: usize = 1_000;
/// Products per INSERT while setting up.
const INSERT_CHUNK: usize = 5_000;

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
        let rows: Vec<(String, i64, i64)> =
            (from..missing.min(from + INSERT_CHUNK)).map(|n| (format!("bench-product-{n}"), 1_000, 1_000)).collect();
        product::db::insert_batch(&stores.db, &rows).await.unwrap();
    }
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM products ORDER BY id LIMIT ?")
        .bind(count as i64)
        .fetch_all(&stores.db)
        .await
        .unwrap();
    ids.into_iter().filter_map(ProductId::new).collect()
}

/// Writes sales of every product, in its shard, on each of the last [`SALES_DAYS`] days; returns the keys
/// written.
async fn write_sales(stores: &Stores, settings: Settings, ids: &[ProductId]) -> Vec<String> {
    let today = ranking::business_day(Utc::now(), settings.business_tz);
    let mut keys = Vec::new();
    for back in 0..SALES_DAYS {
        for shard in settings.shards.all() {
            let key = ranking::day_key(&stores.redis.keys, shard, today - Days::new(back));
            let members: Vec<ProductId> = ids.iter().copied().filter(|id| settings.shards.of(*id) == shard).collect();
            for chunk in members.chunks(ZADD_CHUNK) {
                let members: Vec<(f64, i64)> = {
                    let mut rng = rand::rng();
                    chunk.iter().map(|id| (rng.random_range(1..=20) as f64, id.get())).collect()
                };
                let _: i64 = stores.redis.client().zadd(&key, None, None, false, false, members).await.unwrap();
            }
            keys.push(key);
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

fn refresh(c: &mut Criterion) {
    let (runtime, stores) = connect();
    let settings = settings();
    let mut group = c.benchmark_group("ranking_refresh");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    for size in SIZES {
        let keys = runtime.block_on(async {
            let ids = products(&stores, size).await;
            write_sales(&stores, settings, &ids).await
        });
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.to_async(&runtime).iter(|| async { ranking::refresh(&stores, settings, Utc::now()).await.unwrap() });
        });
        runtime.block_on(async {
            let _: i64 = stores.redis.client().del(keys).await.unwrap();
        });
    }
    group.finish();
    runtime.block_on(async { ranking::cache::forget_windows(&stores.redis).await.unwrap() });
}

fn top_read(c: &mut Criterion) {
    let (runtime, stores) = connect();
    let settings = settings();
    let gate = ComputeGate::default();
    let keys = runtime.block_on(async {
        let ids = products(&stores, SIZES[0]).await;
        let keys = write_sales(&stores, settings, &ids).await;
        ranking::refresh(&stores, settings, Utc::now()).await.unwrap();
        keys
    });
    c.bench_function("ranking_top_read", |b| {
        b.to_async(&runtime)
            .iter(|| async { ranking::top(&stores, settings, &gate, Window::DEFAULT, Utc::now()).await.unwrap() });
    });
    runtime.block_on(async {
        let _: i64 = stores.redis.client().del(keys).await.unwrap();
        ranking::cache::forget_windows(&stores.redis).await.unwrap();
    });
}

criterion_group!(benches, refresh, top_read);
criterion_main!(benches);
