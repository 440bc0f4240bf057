//! The top-products ranking: windows over the sharded daily sales sets, ties, the scheduled and admin
//! refresh, recording each order once per shard, rebuilding the day sets from PAID orders in MySQL, and
//! healing after Redis lost them while the service runs.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};
use fred::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stampede::id::{OrderId, ProductId};
use stampede::ranking::{self, Shards, job};

use crate::support::{RedisServer, TestApp, eventually, insert_paid_order, isolated_store, serve_config};

fn today(app: &TestApp) -> NaiveDate {
    ranking::business_day(Utc::now(), app.config.business_tz)
}

fn shard_of(app: &TestApp, product: i64) -> ranking::Shard {
    app.config.ranking.shards.of(ProductId::new(product).unwrap())
}

/// Synthetic order ids of [`sell`], far above any id the test's database hands out.
static SOLD: AtomicI64 = AtomicI64::new(1_000_000_000);

/// Counts `units` of `product` on the day `days_ago` days before today, as the relay counts an order of that
/// one line (a new synthetic order id each call).
async fn sell(app: &TestApp, days_ago: u64, product: i64, units: i64) {
    sell_on(app, today(app) - Days::new(days_ago), product, units).await;
}

async fn sell_on(app: &TestApp, day: NaiveDate, product: i64, units: i64) {
    let order = OrderId::new(SOLD.fetch_add(1, Ordering::Relaxed)).unwrap();
    let line = [(ProductId::new(product).unwrap(), units)];
    let recorded =
        ranking::sales::record(&app.state.stores.redis, app.config.ranking.shards, day, order, &line).await.unwrap();
    assert_eq!(recorded, ranking::sales::Recorded::Applied);
}

/// Order ids in the applied sets of every shard of `day`, sorted, an order once per shard that counted it.
async fn applied_orders(app: &TestApp, day: NaiveDate) -> Vec<i64> {
    let redis = &app.state.stores.redis;
    let mut applied = Vec::new();
    for shard in app.config.ranking.shards.all() {
        let members: Vec<i64> = redis.client().smembers(ranking::applied_key(&redis.keys, shard, day)).await.unwrap();
        applied.extend(members);
    }
    applied.sort_unstable();
    applied
}

/// `(productId, totalSales)` of a top list.
fn entries(body: &Value) -> Vec<(i64, i64)> {
    body["products"]
        .as_array()
        .unwrap_or_else(|| panic!("no products: {body}"))
        .iter()
        .map(|p| (p["productId"].as_i64().unwrap(), p["totalSales"].as_i64().unwrap()))
        .collect()
}

async fn top(app: &TestApp, query: &str) -> Value {
    let (status, body) = app.get(&format!("/api/v1/products/top{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body
}

/// Deletes every ranking key of the app's prefix (day sets, applied sets, cached windows).
async fn lose_ranking_keys(app: &TestApp) {
    let redis = &app.state.stores.redis;
    let mut keys: Vec<String> = Vec::new();
    // KEYS answers for one node: on a cluster, ask every primary.
    let client = redis.client();
    let nodes = match client.cached_cluster_state() {
        Some(state) => state.unique_primary_nodes().into_iter().map(Some).collect(),
        None => vec![None],
    };
    for node in nodes {
        for pattern in ["sales:*", "ranking:*"] {
            let command = fred::types::CustomCommand::new_static("KEYS", fred::types::ClusterHash::Random, false);
            let args = vec![redis.keys.key(pattern)];
            let found: Vec<String> = match &node {
                Some(node) => client.with_cluster_node(node.clone()).custom(command, args).await.unwrap(),
                None => client.custom(command, args).await.unwrap(),
            };
            keys.extend(found);
        }
    }
    assert!(!keys.is_empty());
    for key in keys {
        let _: i64 = redis.client().del(key).await.unwrap();
    }
}

fn days_ago(n: i64) -> DateTime<Utc> {
    Utc::now() - TimeDelta::days(n)
}

#[tokio::test]
async fn top_of_three_days_unions_the_days_and_breaks_ties_by_lower_product_id() {
    let app = TestApp::spawn().await;
    let user = app.create_user("buyer").await;
    let mut p = vec![0];
    for n in 1..=12 {
        p.push(app.create_product(&format!("p{n}"), n * 100, 50).await);
    }
    // Older days as the relay left them.
    sell(&app, 1, p[11], 6).await;
    sell(&app, 1, p[10], 12).await;
    sell(&app, 2, p[2], 8).await;
    sell(&app, 1, p[1], 5).await;
    sell(&app, 2, p[5], 7).await;
    sell(&app, 3, p[4], 100).await;
    sell(&app, 1, p[4], 1).await;
    // Today's sales exist only in MySQL: the restart below rebuilds today's missing set from them.
    let orders = [
        insert_paid_order(app.db(), user, Utc::now(), &[(p[11], 6), (p[3], 4)]).await,
        insert_paid_order(app.db(), user, Utc::now(), &[(p[3], 6), (p[1], 3)]).await,
        insert_paid_order(app.db(), user, Utc::now(), &[(p[6], 2)]).await,
    ];
    let app = TestApp::spawn_with(app.stop().await).await;
    let today = today(&app);

    let body = top(&app, "").await;
    // p10 and p11 tie at 12: Redis would list "11" first (equal scores go by member string).
    assert_eq!(entries(&body), [(p[10], 12), (p[11], 12), (p[3], 10), (p[1], 8), (p[2], 8)]);
    assert_eq!(body["days"], 3);
    assert_eq!(body["from"], (today - Days::new(2)).format("%Y-%m-%d").to_string());
    assert_eq!(body["to"], today.format("%Y-%m-%d").to_string());
    assert!(DateTime::parse_from_rfc3339(body["generatedAt"].as_str().unwrap()).is_ok(), "{body}");
    let first = &body["products"][0];
    assert_eq!(
        (first["rank"].as_i64(), first["name"].as_str(), first["price"].as_i64()),
        (Some(1), Some("p10"), Some(1000))
    );
    let ranks: Vec<i64> = body["products"].as_array().unwrap().iter().map(|p| p["rank"].as_i64().unwrap()).collect();
    assert_eq!(ranks, [1, 2, 3, 4, 5]);

    let body = top(&app, "?days=3&limit=50").await;
    assert_eq!(
        entries(&body),
        [(p[10], 12), (p[11], 12), (p[3], 10), (p[1], 8), (p[2], 8), (p[5], 7), (p[6], 2), (p[4], 1)]
    );
    let body = top(&app, "?days=3&limit=2").await;
    assert_eq!(entries(&body), [(p[10], 12), (p[11], 12)]);

    let body = top(&app, "?days=1&limit=50").await;
    assert_eq!(entries(&body), [(p[3], 10), (p[11], 6), (p[1], 3), (p[6], 2)]);
    assert_eq!((body["from"].clone(), body["to"].clone()), (json!(today.to_string()), json!(today.to_string())));

    let body = top(&app, "?days=7").await;
    assert_eq!(entries(&body), [(p[4], 101), (p[10], 12), (p[11], 12), (p[3], 10), (p[1], 8)]);
    assert_eq!(body["from"], (today - Days::new(6)).to_string());

    // The rebuilt day also records which orders each shard counted, so the relay will not count them again:
    // the first two orders have lines in two shards each.
    let mut expected = vec![orders[0], orders[0], orders[1], orders[1], orders[2]];
    expected.sort_unstable();
    assert_eq!(applied_orders(&app, today).await, expected);
}

#[tokio::test]
async fn no_sales_give_an_empty_list() {
    let app = TestApp::spawn().await;
    app.create_product("unsold", 100, 1).await;
    for query in ["", "?days=1", "?days=7&limit=50"] {
        let body = top(&app, query).await;
        assert_eq!(body["products"], json!([]), "{query}");
    }
}

/// An app whose scheduled refresh does not fire while the test runs.
async fn spawn_without_ticks() -> TestApp {
    let mut config = serve_config(isolated_store().await);
    config.ranking.refresh = NEVER.parse().unwrap();
    TestApp::spawn_with(config).await
}

/// A valid cron expression that fires once a year.
const NEVER: &str = "0 0 0 1 1 *";

#[tokio::test]
async fn the_list_is_cached_until_a_refresh_and_admin_refresh_makes_it_current() {
    let app = spawn_without_ticks().await;
    let a = app.create_product("a", 100, 1).await;
    let b = app.create_product("b", 200, 1).await;
    sell(&app, 0, a, 3).await;
    assert_eq!(entries(&top(&app, "").await), [(a, 3)]);

    sell(&app, 0, b, 5).await;
    assert_eq!(entries(&top(&app, "").await), [(a, 3)], "requests read the cached list");

    let (status, body) = app.admin_post("/api/v1/admin/ranking/refresh", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(entries(&body), [(b, 5), (a, 3)]);
    assert_eq!(body["days"], 3);
    assert_eq!(entries(&top(&app, "").await), [(b, 5), (a, 3)]);
    assert_eq!(entries(&top(&app, "?days=7").await), [(b, 5), (a, 3)], "every window was refreshed");
}

#[tokio::test]
async fn one_instance_refreshes_per_tick() {
    let app = spawn_without_ticks().await;
    let other = TestApp::spawn_with(app.config.clone()).await;
    let settings = app.config.ranking_settings();
    let ticks =
        futures::future::join_all([job::tick(&app.state.stores, settings), job::tick(&other.state.stores, settings)])
            .await;
    let refreshed = ticks.iter().filter(|t| matches!(t, Ok(job::Tick::Refreshed))).count();
    let skipped = ticks.iter().filter(|t| matches!(t, Ok(job::Tick::Skipped))).count();
    assert_eq!((refreshed, skipped), (1, 1), "{ticks:?}");
}

#[tokio::test]
async fn rebuild_after_the_ranking_keys_are_lost_gives_the_same_top_list() {
    let app = TestApp::spawn().await;
    let user = app.create_user("buyer").await;
    let mut p = vec![0];
    for n in 1..=5 {
        p.push(app.create_product(&format!("p{n}"), n * 100, 50).await);
    }
    insert_paid_order(app.db(), user, Utc::now(), &[(p[1], 2), (p[2], 1)]).await;
    insert_paid_order(app.db(), user, days_ago(1), &[(p[2], 4)]).await;
    insert_paid_order(app.db(), user, days_ago(3), &[(p[3], 9), (p[4], 1)]).await;
    insert_paid_order(app.db(), user, days_ago(6), &[(p[5], 20)]).await;
    // Not counted: unpaid, and paid before the kept days.
    sqlx::query("INSERT INTO orders (user_id, status, total_amount, discount_amount, final_amount) VALUES (?, 'PENDING', 0, 0, 0)")
        .bind(user)
        .execute(app.db())
        .await
        .unwrap();
    insert_paid_order(app.db(), user, days_ago(9), &[(p[4], 50)]).await;
    let expected = [(p[5], 20), (p[3], 9), (p[2], 5), (p[1], 2), (p[4], 1)];

    // Redis has none of it: the stores were filled behind the app's back, so a restart rebuilds.
    let app = TestApp::spawn_with(app.stop().await).await;
    let before = top(&app, "?days=7&limit=50").await;
    assert_eq!(entries(&before), expected);

    lose_ranking_keys(&app).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(["ranking", "rebuild", "--days", "8"])
        .env("DATABASE_URL", &app.config.store.database_url)
        .env("REDIS_URL", &app.config.store.redis_url)
        .env("REDIS_PREFIX", &app.config.store.redis_prefix)
        .env("BUSINESS_TZ", "+09:00")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let after = top(&app, "?days=7&limit=50").await;
    assert_eq!(entries(&after), expected);
    assert_eq!(
        (&after["from"], &after["to"], &after["products"]),
        (&before["from"], &before["to"], &before["products"])
    );
    assert_eq!(entries(&top(&app, "?days=1").await), [(p[1], 2), (p[2], 1)]);
    assert_eq!(entries(&top(&app, "?days=2").await), [(p[2], 5), (p[1], 2)]);
}

#[tokio::test]
async fn a_rebuild_keeps_orders_the_relay_counted_after_mysql_was_read() {
    // One shard, so that the late order lands in the shard whose copy is being built.
    let mut config = serve_config(isolated_store().await);
    config.ranking.shards = Shards::new(1).unwrap();
    let app = TestApp::spawn_with(config).await;
    let user = app.create_user("buyer").await;
    let a = app.create_product("a", 100, 50).await;
    let b = app.create_product("b", 100, 50).await;
    let early = insert_paid_order(app.db(), user, Utc::now(), &[(a, 2)]).await;
    let stores = &app.state.stores;
    let settings = app.config.ranking_settings();
    let day = today(&app);
    let shard = shard_of(&app, a);

    // The rebuild's copy was filled from MySQL holding only `early`; then an order was paid and the
    // relay counted it in the live day before the swap.
    let temp = ranking::cache::TempDay::new(&stores.redis, shard, day);
    let units = [(ProductId::new(a).unwrap(), 2)].into_iter().collect();
    temp.add(&stores.redis, &units, &[OrderId::new(early).unwrap()]).await.unwrap();
    let late = insert_paid_order(app.db(), user, Utc::now(), &[(b, 7)]).await;
    let line = [(ProductId::new(b).unwrap(), 7)];
    ranking::sales::record(&stores.redis, settings.shards, day, OrderId::new(late).unwrap(), &line).await.unwrap();
    let redis = stores.redis.client();

    let missing = temp.replace_live(&stores.redis, settings.shards, ranking::DAY_TTL_SECS).await.unwrap();
    assert_eq!(missing, [OrderId::new(late).unwrap()], "the swap waits for the late order");
    temp.discard(&stores.redis).await.unwrap();

    // The full rebuild of the day handles that by itself and counts both orders once.
    ranking::rebuild_day(stores, settings, day).await.unwrap();
    let day_key = ranking::day_key(&stores.redis.keys, shard, day);
    let scores: Vec<(String, f64)> = redis.zrange(&day_key, 0, -1, None, false, None, true).await.unwrap();
    assert_eq!(scores, [(a.to_string(), 2.0), (b.to_string(), 7.0)]);
    let ttl: i64 = redis.ttl(&day_key).await.unwrap();
    assert!(ttl > ranking::DAY_TTL_SECS - 60 && ttl <= ranking::DAY_TTL_SECS, "ttl {ttl}");
}

#[tokio::test]
async fn the_scheduled_refresh_brings_new_sales_into_the_cached_list() {
    let mut config = serve_config(isolated_store().await);
    config.ranking.refresh = "* * * * * *".parse().unwrap();
    let app = TestApp::spawn_with(config).await;
    let a = app.create_product("a", 100, 1).await;
    assert_eq!(top(&app, "").await["products"], json!([]));

    sell(&app, 0, a, 4).await;
    // Ticks every second, but the refresh lock lets one through every 5 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    while entries(&top(&app, "").await) != [(a, 4)] {
        assert!(Instant::now() < deadline, "no scheduled refresh picked up the sale");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Inserts [`PRODUCTS`] products named `p<n>` priced `price(n)`, each in one option of 10 units.
async fn insert_products(app: &TestApp, price: impl Fn(usize) -> i64) {
    let rows: Vec<_> = (0..PRODUCTS)
        .map(|n| stampede::product::ProductSpec::single(&format!("p{n}"), price(n), 10).validate().unwrap())
        .collect();
    stampede::product::db::insert_batch(app.db(), &rows).await.unwrap();
}

/// Products of the brute-force tests: about 5 per shard at 64 shards, and 300 in the one shard at 1.
const PRODUCTS: usize = 300;

/// A fixed linear congruential generator: the brute-force tests are random-looking but reproducible.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// `(productId, units)` of every product with sales in the `days` window, most units first, ties by lower id.
fn brute_force(ids: &[i64], sales: &[[i64; 7]], days: usize) -> Vec<(i64, i64)> {
    let mut totals: Vec<(i64, i64)> = ids
        .iter()
        .zip(sales)
        .map(|(id, daily)| (*id, daily[..days].iter().sum::<i64>()))
        .filter(|(_, units)| *units > 0)
        .collect();
    totals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    totals
}

/// Sells [`PRODUCTS`] products on each of the last 7 days (0..=3 units a day, so ties everywhere) plus eight
/// products tied at 35 units over 3 days, refreshes, and compares every window with the sum done here.
async fn every_window_equals_a_brute_force_sum(shards: u32) {
    let mut config = serve_config(isolated_store().await);
    config.ranking.shards = Shards::new(shards).unwrap();
    config.ranking.refresh = NEVER.parse().unwrap();
    let app = TestApp::spawn_with(config).await;
    insert_products(&app, |n| 100 + n as i64).await;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM products ORDER BY id").fetch_all(app.db()).await.unwrap();
    // Ids 9, 10, 11, 65, 66, 100, 129, 130: equal scores are ordered "10" < "100" < "11" < "129" < ... < "9"
    // by Redis, and at 64 shards 65/129 and 66/130 share a shard.
    let tied = [8, 9, 10, 64, 65, 99, 128, 129];
    let mut rng = Lcg(14);
    let mut sales = vec![[0_i64; 7]; ids.len()];
    for (n, daily) in sales.iter_mut().enumerate() {
        if let Some(k) = tied.iter().position(|t| *t == n) {
            daily[..3].copy_from_slice(if k % 2 == 0 { &[20, 10, 5] } else { &[5, 0, 30] });
        } else {
            daily.iter_mut().for_each(|units| *units = rng.below(4) as i64);
        }
    }
    for (id, daily) in ids.iter().zip(&sales) {
        for (back, units) in daily.iter().enumerate().filter(|(_, units)| **units > 0) {
            sell(&app, back as u64, *id, *units).await;
        }
    }
    let (status, body) = app.admin_post("/api/v1/admin/ranking/refresh", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let top5 = brute_force(&ids, &sales, 3);
    let tied_ids: Vec<i64> = tied.iter().map(|n| ids[*n]).collect();
    assert_eq!(top5[..5], tied_ids[..5].iter().map(|id| (*id, 35)).collect::<Vec<_>>());
    assert_eq!(top5[5], (tied_ids[5], 35), "the tie goes on past the fifth place");
    assert_eq!(entries(&body), top5[..5]);
    assert_eq!(entries(&top(&app, "?days=3&limit=5").await), top5[..5]);
    let top50 = brute_force(&ids, &sales, 3);
    assert_eq!((top50[49].1, top50[50].1), (7, 7), "the fiftieth place of 3 days is a tie too");
    for days in 1..=7 {
        let expected = brute_force(&ids, &sales, days);
        let body = top(&app, &format!("?days={days}&limit=50")).await;
        assert_eq!(entries(&body), expected[..50], "{days} days");
    }
    let shards_in_top: std::collections::HashSet<_> =
        brute_force(&ids, &sales, 7)[..50].iter().map(|(id, _)| shard_of(&app, *id)).collect();
    assert_eq!(shards_in_top.len() > 30, shards == 64, "{} shards in the top 50", shards_in_top.len());

    // More sales once the window sets exist, today's and late ones of earlier days: the next refresh folds
    // them in (one shard) or makes the small sets anew (64 shards), and every window is exact again.
    for _ in 0..40 {
        let (n, back, units) = (rng.below(ids.len() as u64) as usize, rng.below(7) as usize, 1 + rng.below(3) as i64);
        sales[n][back] += units;
        sell(&app, back as u64, ids[n], units).await;
    }
    let (status, _) = app.admin_post("/api/v1/admin/ranking/refresh", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    for days in 1..=7 {
        let expected = brute_force(&ids, &sales, days);
        let body = top(&app, &format!("?days={days}&limit=50")).await;
        assert_eq!(entries(&body), expected[..50], "{days} days, after more sales");
    }
}

#[tokio::test]
async fn every_window_equals_a_brute_force_sum_with_one_shard() {
    every_window_equals_a_brute_force_sum(1).await;
}

#[tokio::test]
async fn every_window_equals_a_brute_force_sum_with_sixty_four_shards() {
    every_window_equals_a_brute_force_sum(64).await;
}

/// An app on `redis`, with one ranking shard, no scheduled refresh and [`PRODUCTS`] products; their ids.
async fn one_shard_app(redis: &RedisServer) -> (TestApp, Vec<i64>) {
    let mut store = isolated_store().await;
    store.redis_url = redis.url();
    let mut config = serve_config(store);
    config.ranking.shards = Shards::new(1).unwrap();
    config.ranking.refresh = NEVER.parse().unwrap();
    let app = TestApp::spawn_with(config).await;
    insert_products(&app, |_| 100).await;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM products ORDER BY id").fetch_all(app.db()).await.unwrap();
    (app, ids)
}

/// An app on a Redis of its own (so that its `INFO commandstats` counts only this test's calls), one ranking
/// shard (so that a few new sales are folded rather than every window set made anew) and no scheduled
/// refresh (see [`one_shard_app`]), whose products sold 0..=3 units on each of the last 7 days but the
/// last one, which sold nothing; the products' ids and the units sold, per product and day.
async fn window_sets_app(redis: &RedisServer) -> (TestApp, Vec<i64>, Vec<[i64; 7]>) {
    let (app, ids) = one_shard_app(redis).await;
    let mut rng = Lcg(7);
    let mut sales: Vec<[i64; 7]> = ids.iter().map(|_| [0; 7].map(|_: i64| rng.below(4) as i64)).collect();
    *sales.last_mut().unwrap() = [0; 7];
    for (id, daily) in ids.iter().zip(&sales) {
        for (back, units) in daily.iter().enumerate().filter(|(_, units)| **units > 0) {
            sell(&app, back as u64, *id, *units).await;
        }
    }
    (app, ids, sales)
}

/// Refreshes as the scheduler would at `now` and checks every cached window (top 50) against the brute-force
/// sum of `sales` (units per product and day, `now`'s business day first).
async fn refresh_and_check_every_window(app: &TestApp, now: DateTime<Utc>, ids: &[i64], sales: &[[i64; 7]]) {
    ranking::refresh(&app.state.stores, app.config.ranking_settings(), now).await.unwrap();
    let windows = ranking::cache::windows(&app.state.stores.redis).await.unwrap();
    for (days, window) in (1..=7).zip(windows) {
        let window = window.unwrap_or_else(|| panic!("window of {days} days cached"));
        let listed: Vec<(i64, i64)> = window.products.iter().map(|p| (p.product_id.get(), p.total_sales)).collect();
        let expected = brute_force(ids, sales, days);
        assert_eq!(listed, expected[..50.min(expected.len())], "{days} days");
        assert_eq!(window.to, ranking::business_day(now, app.config.business_tz), "{days} days");
    }
}

/// ZUNIONSTORE calls the test's own Redis ran since the last `CONFIG RESETSTAT` (script calls included).
async fn unions_since_reset(app: &TestApp) -> u64 {
    let command = fred::types::CustomCommand::new_static("INFO", fred::types::ClusterHash::Random, false);
    let info: String = app.state.stores.redis.client().custom(command, vec!["commandstats"]).await.unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_zunionstore:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

async fn reset_stats(app: &TestApp) {
    let command = fred::types::CustomCommand::new_static("CONFIG", fred::types::ClusterHash::Random, false);
    let _: String = app.state.stores.redis.client().custom(command, vec!["RESETSTAT"]).await.unwrap();
}

#[tokio::test]
async fn new_and_late_sales_are_folded_into_the_window_sets_without_a_union_and_every_window_stays_exact() {
    let redis = RedisServer::start();
    let (app, ids, mut sales) = window_sets_app(&redis).await;
    reset_stats(&app).await;
    refresh_and_check_every_window(&app, Utc::now(), &ids, &sales).await;
    assert_eq!(unions_since_reset(&app).await, 6, "the first refresh makes the 6 window sets, a union each");

    // Today's sales, a late order of yesterday, one of six days ago, and a product selling for the first time.
    let mut rng = Lcg(3);
    for back in [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 6] {
        let n = rng.below(ids.len() as u64) as usize;
        sales[n][back] += 5;
        sell(&app, back as u64, ids[n], 5).await;
    }
    let unsold = ids.len() - 1;
    sales[unsold][2] = 60;
    sell(&app, 2, ids[unsold], 60).await;
    reset_stats(&app).await;
    refresh_and_check_every_window(&app, Utc::now(), &ids, &sales).await;
    assert_eq!(unions_since_reset(&app).await, 0, "folded by ZINCRBY, no window set made again");
    let window = |days| ranking::window_set_key(&app.state.stores.redis.keys, shard_of(&app, ids[0]), days);
    let units: Option<f64> = app.state.stores.redis.client().zscore(window(2), ids[unsold]).await.unwrap();
    assert_eq!(units, None, "the first sale two days ago is not in the 2-day window");
    let units: Option<f64> = app.state.stores.redis.client().zscore(window(3), ids[unsold]).await.unwrap();
    assert_eq!(units, Some(60.0));
}

#[tokio::test]
async fn at_midnight_the_window_sets_move_on_a_day_without_a_union_and_every_window_stays_exact() {
    let redis = RedisServer::start();
    let (app, ids, sales) = window_sets_app(&redis).await;
    refresh_and_check_every_window(&app, Utc::now(), &ids, &sales).await;

    // Before the first refresh of tomorrow: a late order of today, and tomorrow's first sales.
    let tomorrow = today(&app) + Days::new(1);
    let mut shifted: Vec<[i64; 7]> =
        sales.iter().map(|daily| [0, daily[0], daily[1], daily[2], daily[3], daily[4], daily[5]]).collect();
    shifted[4][1] += 9;
    sell(&app, 0, ids[4], 9).await;
    for n in [0, 7, 8, 50] {
        shifted[n][0] += 2 + n as i64;
        sell_on(&app, tomorrow, ids[n], 2 + n as i64).await;
    }
    reset_stats(&app).await;
    refresh_and_check_every_window(&app, Utc::now() + TimeDelta::days(1), &ids, &shifted).await;
    assert_eq!(unions_since_reset(&app).await, 0, "the window sets moved on a day, none was made again");
}

#[tokio::test]
async fn a_day_rebuilt_from_mysql_and_a_lost_window_set_leave_every_window_exact() {
    let redis = RedisServer::start();
    let (app, ids, mut sales) = window_sets_app(&redis).await;
    refresh_and_check_every_window(&app, Utc::now(), &ids, &sales).await;
    let window = |days| ranking::window_set_key(&app.state.stores.redis.keys, shard_of(&app, ids[0]), days);
    let only_five_days_ago = ids.len() - 1;
    sales[only_five_days_ago][5] = 30;
    sell(&app, 5, ids[only_five_days_ago], 30).await;
    refresh_and_check_every_window(&app, Utc::now(), &ids, &sales).await;
    let units: Option<f64> = app.state.stores.redis.client().zscore(window(7), ids[only_five_days_ago]).await.unwrap();
    assert_eq!(units, Some(30.0));

    // MySQL has one PAID order five days ago and nothing else: the next refresh heals that day (its marker
    // is missing), which replaces what the relay had counted there by that one order, taking units away from
    // the window sets that hold the day.
    let user = app.create_user("buyer").await;
    insert_paid_order(app.db(), user, days_ago(5), &[(ids[1], 40)]).await;
    sales.iter_mut().for_each(|daily| daily[5] = 0);
    sales[1][5] = 40;
    refresh_and_check_every_window(&app, Utc::now(), &ids, &sales).await;
    let units: Option<f64> = app.state.stores.redis.client().zscore(window(7), ids[only_five_days_ago]).await.unwrap();
    assert_eq!(units, None, "its only sale was on the rebuilt day, where MySQL has none");

    // A window set gone (evicted, deleted by hand): its count no longer matches, so all are made anew.
    let _: i64 = app.state.stores.redis.client().del(window(3)).await.unwrap();
    reset_stats(&app).await;
    refresh_and_check_every_window(&app, Utc::now(), &ids, &sales).await;
    assert_eq!(unions_since_reset(&app).await, 6);
}

#[tokio::test]
async fn a_rebuild_by_hand_also_repairs_window_sets_that_a_hand_edit_of_a_day_set_put_out_of_step() {
    let redis = RedisServer::start();
    let (app, ids) = one_shard_app(&redis).await;
    let (stores, settings) = (&app.state.stores, app.config.ranking_settings());
    let user = app.create_user("buyer").await;
    // MySQL and the day sets agree: every product sold today, and one sold 7 units yesterday. So many
    // products make folding a small difference cheaper than making the window sets anew.
    let mut sales = vec![[0_i64; 7]; ids.len()];
    let mut orders = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        sales[n][0] = 1 + (n % 3) as i64;
        orders.push((insert_paid_order(app.db(), user, Utc::now(), &[(*id, sales[n][0])]).await, 0, *id, sales[n][0]));
    }
    sales[2][1] = 7;
    orders.push((insert_paid_order(app.db(), user, days_ago(1), &[(ids[2], 7)]).await, 1, ids[2], 7));
    for (order, back, product, units) in orders {
        let line = [(ProductId::new(product).unwrap(), units)];
        let day = today(&app) - Days::new(back);
        ranking::sales::record(&stores.redis, settings.shards, day, OrderId::new(order).unwrap(), &line).await.unwrap();
    }
    refresh_and_check_every_window(&app, Utc::now(), &ids, &sales).await;

    // Units written straight into yesterday's set, past the relay's script: the window sets never hear of
    // them. Folding the rebuild's difference (-500) into them would take the 7 real units away as well.
    let yesterday = ranking::day_key(&stores.redis.keys, shard_of(&app, ids[2]), today(&app) - Days::new(1));
    let _: f64 = stores.redis.client().zincrby(yesterday, 500.0, ids[2]).await.unwrap();
    ranking::rebuild(stores, settings, ranking::KEPT_DAYS, Utc::now()).await.unwrap();
    refresh_and_check_every_window(&app, Utc::now(), &ids, &sales).await;
}

/// Outbox rows the relay still owes something.
async fn owed(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE pending = 1").fetch_one(app.db()).await.unwrap()
}

/// Creates and pays an order of `(product, quantity)` lines; returns its id.
async fn buy(app: &TestApp, user: i64, lines: &[(i64, i64)]) -> i64 {
    let items: Vec<Value> = lines.iter().map(|(p, q)| json!({ "productId": p, "quantity": q })).collect();
    let (status, order) = app.post("/api/v1/orders", json!({ "userId": user, "pay": true, "items": items })).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    order["orderId"].as_i64().unwrap()
}

async fn relayed(app: &TestApp) {
    eventually("the relay owes nothing", Duration::from_secs(30), || async { owed(app).await == 0 }).await;
}

/// `product`'s units in its shard's set of today.
async fn units_today(app: &TestApp, product: i64) -> f64 {
    let redis = &app.state.stores.redis;
    let key = ranking::day_key(&redis.keys, shard_of(app, product), today(app));
    let score: Option<f64> = redis.client().zscore(key, product).await.unwrap();
    score.unwrap_or(0.0)
}

async fn units_of<const N: usize>(app: &TestApp, products: [i64; N]) -> [f64; N] {
    let mut units = [0.0; N];
    for (product, units) in products.iter().zip(&mut units) {
        *units = units_today(app, *product).await;
    }
    units
}

#[tokio::test]
async fn an_order_in_three_shards_is_counted_once_in_each_through_replays_and_a_shard_that_missed_it() {
    let app = spawn_without_ticks().await;
    let user = app.create_user("buyer").await;
    app.charge(user, 100_000).await;
    let (a, b, c) = (
        app.create_product("a", 100, 50).await,
        app.create_product("b", 100, 50).await,
        app.create_product("c", 100, 50).await,
    );
    assert_eq!(
        [shard_of(&app, a), shard_of(&app, b), shard_of(&app, c)]
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3
    );
    let order = buy(&app, user, &[(a, 2), (b, 3), (c, 4)]).await;
    relayed(&app).await;
    let day = today(&app);
    assert_eq!(units_of(&app, [a, b, c]).await, [2.0, 3.0, 4.0]);
    assert_eq!(applied_orders(&app, day).await, [order, order, order]);

    // A plain replay (the marks lost after the scripts ran) counts nothing again.
    sqlx::query("UPDATE outbox SET sales_applied_at = NULL").execute(app.db()).await.unwrap();
    relayed(&app).await;
    assert_eq!(units_of(&app, [a, b, c]).await, [2.0, 3.0, 4.0]);

    // b's shard never got the order (its call failed while the others succeeded): the retry adds it there only.
    let redis = &app.state.stores.redis;
    let _: i64 = redis.client().srem(ranking::applied_key(&redis.keys, shard_of(&app, b), day), order).await.unwrap();
    let _: i64 = redis.client().zrem(ranking::day_key(&redis.keys, shard_of(&app, b), day), b).await.unwrap();
    sqlx::query("UPDATE outbox SET sales_applied_at = NULL").execute(app.db()).await.unwrap();
    relayed(&app).await;
    assert_eq!(units_of(&app, [a, b, c]).await, [2.0, 3.0, 4.0]);
    assert_eq!(applied_orders(&app, day).await, [order, order, order]);

    let (status, body) = app.admin_post("/api/v1/admin/ranking/refresh", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(entries(&body), [(c, 4), (b, 3), (a, 2)]);
}

/// Units per product in PAID orders, as the ranking of a window covering them all must list them.
async fn mysql_ranking(app: &TestApp) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "SELECT i.product_id, CAST(SUM(i.quantity) AS SIGNED) AS units FROM orders o JOIN order_items i ON i.order_id = o.id
         WHERE o.status = 'PAID' GROUP BY i.product_id ORDER BY units DESC, i.product_id",
    )
    .fetch_all(app.db())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_flushall_while_serving_one_more_order_and_a_refresh_give_the_mysql_ranking_again() {
    let redis = RedisServer::start();
    let mut store = isolated_store().await;
    store.redis_url = redis.url();
    let mut config = serve_config(store);
    config.ranking.refresh = NEVER.parse().unwrap();
    let app = TestApp::spawn_with(config).await;
    let user = app.create_user("buyer").await;
    app.charge(user, 1_000_000).await;
    let mut p = vec![0];
    for n in 1..=6 {
        p.push(app.create_product(&format!("p{n}"), 100, 100).await);
    }
    buy(&app, user, &[(p[1], 5), (p[2], 1)]).await;
    buy(&app, user, &[(p[3], 4), (p[1], 1)]).await;
    buy(&app, user, &[(p[4], 2), (p[5], 2), (p[6], 2)]).await;
    relayed(&app).await;
    let (status, body) = app.admin_post("/api/v1/admin/ranking/refresh", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = [(p[1], 6), (p[3], 4), (p[4], 2), (p[5], 2), (p[6], 2), (p[2], 1)];
    assert_eq!(mysql_ranking(&app).await, before);
    assert_eq!(entries(&top(&app, "?days=3&limit=50").await), before);

    let _: () = app.state.stores.redis.client().flushall(false).await.unwrap();
    buy(&app, user, &[(p[2], 3)]).await;
    relayed(&app).await;
    assert_eq!(units_today(&app, p[2]).await, 3.0, "the relay alone counts only the order after the flush");

    let (status, body) = app.admin_post("/api/v1/admin/ranking/refresh", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = [(p[1], 6), (p[2], 4), (p[3], 4), (p[4], 2), (p[5], 2), (p[6], 2)];
    assert_eq!(mysql_ranking(&app).await, after);
    assert_eq!(entries(&body), after[..5]);
    assert_eq!(entries(&top(&app, "?days=3&limit=50").await), after);
    assert_eq!(units_today(&app, p[2]).await, 4.0);
}

#[tokio::test]
async fn a_restart_with_another_shard_count_rebuilds_the_days_in_the_new_layout() {
    let app = TestApp::spawn().await;
    let user = app.create_user("buyer").await;
    let mut p = vec![0];
    for n in 1..=5 {
        p.push(app.create_product(&format!("p{n}"), 100, 100).await);
    }
    insert_paid_order(app.db(), user, Utc::now(), &[(p[1], 2), (p[2], 5), (p[5], 1)]).await;
    insert_paid_order(app.db(), user, days_ago(2), &[(p[3], 4), (p[4], 4)]).await;
    let expected = [(p[2], 5), (p[3], 4), (p[4], 4), (p[1], 2), (p[5], 1)];
    let mut config = app.stop().await;
    let app = TestApp::spawn_with(config.clone()).await;
    assert_eq!(entries(&top(&app, "?days=3").await), expected);

    config.ranking.shards = Shards::new(3).unwrap();
    let app = TestApp::spawn_with({
        app.stop().await;
        config
    })
    .await;
    assert_eq!(entries(&top(&app, "?days=3").await), expected);
    let redis = &app.state.stores.redis;
    let shard = app.config.ranking.shards.of(ProductId::new(p[5]).unwrap());
    let units: Option<f64> =
        redis.client().zscore(ranking::day_key(&redis.keys, shard, today(&app)), p[5]).await.unwrap();
    assert_eq!((shard.get(), units), ((p[5] % 3) as u32, Some(1.0)));
}

/// `(productId, totalSales)` of the default window as `app`'s in-process copy holds it, if it holds one.
fn copied(app: &TestApp) -> Option<Vec<(i64, i64)>> {
    let body =
        app.state.ranking.published().body(ranking::Window::DEFAULT, Utc::now(), app.config.ranking_settings())?;
    Some(entries(&serde_json::from_slice(&body).unwrap()))
}

#[tokio::test]
async fn the_top_list_is_served_from_each_instances_copy_which_follows_a_refresh_anywhere_within_a_second() {
    let app = spawn_without_ticks().await;
    let other = TestApp::spawn_with(app.config.clone()).await;
    let a = app.create_product("a", 100, 1).await;
    let b = app.create_product("b", 200, 1).await;
    sell(&app, 0, a, 3).await;
    assert_eq!((copied(&app), copied(&other)), (None, None), "nothing refreshed yet");
    let (status, body) = app.admin_post("/api/v1/admin/ranking/refresh", json!({})).await;
    assert_eq!((status, entries(&body)), (StatusCode::OK, vec![(a, 3)]));
    assert_eq!(copied(&app), Some(vec![(a, 3)]), "the refreshing instance holds the new lists at once");
    let started = Instant::now();
    eventually("the other instance loads them", Duration::from_secs(1), || async { copied(&other).is_some() }).await;
    let waited = started.elapsed();

    // Both answer from their copy: the lists gone from Redis and a new sale change nothing until a refresh.
    ranking::cache::forget_windows(&app.state.stores.redis).await.unwrap();
    sell(&app, 0, b, 5).await;
    for instance in [&app, &other] {
        assert_eq!(entries(&top(instance, "?days=7&limit=50").await), [(a, 3)]);
    }
    let (status, _) = other.admin_post("/api/v1/admin/ranking/refresh", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    eventually("the first instance follows", Duration::from_secs(1), || async {
        copied(&app) == Some(vec![(b, 5), (a, 3)])
    })
    .await;
    let (status, body) = app.get("/api/v1/products/top?days=2&limit=1").await;
    assert_eq!((status, entries(&body), &body["days"]), (StatusCode::OK, vec![(b, 5)], &json!(2)));
    assert!(waited < Duration::from_secs(1), "{waited:?}");
}
