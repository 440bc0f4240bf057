//! The top-products ranking: windows over the daily sales sets, ties, the scheduled and admin refresh,
//! and rebuilding the day sets from PAID orders in MySQL.

use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};
use fred::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stampede::ranking::{self, job};

use crate::support::{TestApp, insert_paid_order, isolated_store, serve_config};

fn today(app: &TestApp) -> NaiveDate {
    ranking::business_day(Utc::now(), app.config.business_tz)
}

/// Adds `units` of `product` to the sales set of `days_ago` days before today, as the relay would.
async fn sell(app: &TestApp, days_ago: u64, product: i64, units: i64) {
    let redis = &app.state.stores.redis;
    let key = ranking::day_key(&redis.keys, today(app) - Days::new(days_ago));
    let _: f64 = redis.client().zincrby(key, units as f64, product).await.unwrap();
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

    // The rebuilt day also records which orders it counted, so the relay will not count them again.
    let redis = &app.state.stores.redis;
    let mut applied: Vec<i64> = redis.client().smembers(ranking::applied_key(&redis.keys, today)).await.unwrap();
    applied.sort_unstable();
    assert_eq!(applied, orders);
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
    config.ranking_refresh = NEVER.to_owned();
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
    let tz = app.config.business_tz;
    let ticks = futures::future::join_all([job::tick(&app.state.stores, tz), job::tick(&other.state.stores, tz)]).await;
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
    let app = TestApp::spawn().await;
    let user = app.create_user("buyer").await;
    let a = app.create_product("a", 100, 50).await;
    let b = app.create_product("b", 100, 50).await;
    let early = insert_paid_order(app.db(), user, Utc::now(), &[(a, 2)]).await;
    let stores = &app.state.stores;
    let tz = app.config.business_tz;
    let day = today(&app);

    // The rebuild's copy was filled from MySQL holding only `early`; then an order was paid and the
    // relay counted it in the live day before the swap.
    let temp = ranking::cache::TempDay::new(&stores.redis, day);
    let units = [(stampede::id::ProductId::new(a).unwrap(), 2)].into_iter().collect();
    temp.add(&stores.redis, &units, &[stampede::id::OrderId::new(early).unwrap()]).await.unwrap();
    let late = insert_paid_order(app.db(), user, Utc::now(), &[(b, 7)]).await;
    let redis = stores.redis.client();
    let _: i64 = redis.sadd(ranking::applied_key(&stores.redis.keys, day), late).await.unwrap();
    sell(&app, 0, b, 7).await;

    let missing = temp.replace_live(&stores.redis, ranking::DAY_TTL_SECS).await.unwrap();
    assert_eq!(missing, [stampede::id::OrderId::new(late).unwrap()], "the swap waits for the late order");
    temp.discard(&stores.redis).await.unwrap();

    // The full rebuild of the day handles that by itself and counts both orders once.
    ranking::rebuild_day(stores, tz, day).await.unwrap();
    let day_key = ranking::day_key(&stores.redis.keys, day);
    let scores: Vec<(String, f64)> = redis.zrange(&day_key, 0, -1, None, false, None, true).await.unwrap();
    assert_eq!(scores, [(a.to_string(), 2.0), (b.to_string(), 7.0)]);
    let ttl: i64 = redis.ttl(&day_key).await.unwrap();
    assert!(ttl > ranking::DAY_TTL_SECS - 60 && ttl <= ranking::DAY_TTL_SECS, "ttl {ttl}");
}

#[tokio::test]
async fn the_scheduled_refresh_brings_new_sales_into_the_cached_list() {
    let mut config = serve_config(isolated_store().await);
    config.ranking_refresh = "* * * * * *".to_owned();
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
