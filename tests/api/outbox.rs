//! The outbox relay: every paid order reaches the data platform at least once (through failures, replays
//! and a killed process) and is counted in the day's sales set exactly once.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use fred::prelude::*;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stampede::platform::relay::Relay;
use stampede::ranking;

use crate::support::{ADMIN_TOKEN, TestApp, eventually, isolated_store, serve_config, servers::free_port};

/// How long a relay may take to catch up in these tests.
const CATCH_UP: Duration = Duration::from_secs(30);

/// A data platform inside the test: refuses while `accepting` is false and for the first `fail_first`
/// requests, records the bodies it accepted.
#[derive(Clone, Default)]
struct Platform {
    accepting: Arc<AtomicBool>,
    fail_first: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    accepted: Arc<Mutex<Vec<Value>>>,
}

impl Platform {
    /// Starts it on 127.0.0.1:0; returns it and its URL.
    async fn start(accepting: bool, fail_first: usize) -> (Self, String) {
        let platform = Self::default();
        platform.accepting.store(accepting, Ordering::SeqCst);
        platform.fail_first.store(fail_first, Ordering::SeqCst);
        let router = axum::Router::new().route("/events", axum::routing::post(receive)).with_state(platform.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (platform, url)
    }

    fn accepted_ids(&self) -> Vec<String> {
        self.accepted.lock().unwrap().iter().map(|event| event["eventId"].as_str().unwrap().to_owned()).collect()
    }
}

async fn receive(State(platform): State<Platform>, axum::Json(event): axum::Json<Value>) -> AxumStatus {
    platform.requests.fetch_add(1, Ordering::SeqCst);
    let failing = platform.fail_first.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    if failing || !platform.accepting.load(Ordering::SeqCst) {
        return AxumStatus::INTERNAL_SERVER_ERROR;
    }
    platform.accepted.lock().unwrap().push(event);
    AxumStatus::OK
}

async fn app_with_platform(url: &str) -> TestApp {
    let mut config = serve_config(isolated_store().await);
    config.data_platform_url = Some(url.to_owned());
    TestApp::spawn_with(config).await
}

/// Creates and pays an order of `quantity` units; returns the 201 body.
async fn buy(app: &TestApp, user: i64, product: i64, quantity: i64) -> Value {
    let body = json!({ "userId": user, "pay": true, "items": [{ "productId": product, "quantity": quantity }] });
    let (status, order) = app.post("/api/v1/orders", body).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    order
}

/// The product's units in the sales set of the day `paid_at` falls on.
async fn units_sold(app: &TestApp, paid_at: &Value, product: i64) -> f64 {
    let paid_at: chrono::DateTime<chrono::Utc> = serde_json::from_value(paid_at.clone()).unwrap();
    let day = ranking::business_day(paid_at, app.config.business_tz);
    let shard = app.config.ranking.shards.of(stampede::id::ProductId::new(product).unwrap());
    let key = ranking::day_key(&app.state.stores.redis.keys, shard, day);
    let score: Option<f64> = app.state.stores.redis.client().zscore(key, product).await.unwrap();
    score.unwrap_or(0.0)
}

async fn owed(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL OR sales_applied_at IS NULL")
        .fetch_one(app.db())
        .await
        .unwrap()
}

async fn event_ids(db: &sqlx::MySqlPool) -> Vec<String> {
    sqlx::query_scalar("SELECT event_id FROM outbox ORDER BY id").fetch_all(db).await.unwrap()
}

#[tokio::test]
async fn without_a_platform_a_paid_order_goes_to_the_log_sink_and_is_counted_in_the_days_sales() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let socks = app.create_product("socks", 100, 10).await;
    app.charge(user, 10_000).await;
    let order = buy(&app, user, socks, 3).await;
    eventually("the event is relayed", CATCH_UP, || async { owed(&app).await == 0 }).await;
    assert_eq!(units_sold(&app, &order["paidAt"], socks).await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_platform_failing_the_first_deliveries_still_gets_every_order_and_sales_count_each_once() {
    let (platform, url) = Platform::start(true, 7).await;
    let app = app_with_platform(&url).await;
    let socks = app.create_product("socks", 100, 1_000).await;
    let mut orders = Vec::new();
    for n in 0..10 {
        let user = app.create_user(&format!("u{n}")).await;
        app.charge(user, 10_000).await;
        orders.push(buy(&app, user, socks, 2).await);
    }
    eventually("every event delivered", CATCH_UP, || async { owed(&app).await == 0 }).await;
    let accepted = platform.accepted_ids();
    for id in event_ids(app.db()).await {
        assert!(accepted.contains(&id), "event {id} never accepted");
    }
    assert!(platform.requests.load(Ordering::SeqCst) >= 17, "the first 7 deliveries were refused and retried");
    assert_eq!(units_sold(&app, &orders[0]["paidAt"], socks).await, 20.0);
    let retried: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE attempts > 0").fetch_one(app.db()).await.unwrap();
    assert!(retried >= 1);

    // A replay of every row (as after a crash before the marks were committed) delivers again with the
    // same eventIds but counts no sale twice.
    sqlx::query("UPDATE outbox SET delivered_at = NULL, sales_applied_at = NULL").execute(app.db()).await.unwrap();
    let relay = Relay::new(Some(&url), app.config.ranking_settings());
    let outcome = relay.drain_once(&app.state.stores).await.unwrap();
    assert_eq!(outcome.sales_applied, 0, "{outcome:?}");
    eventually("every event delivered again", CATCH_UP, || async { owed(&app).await == 0 }).await;
    assert_eq!(units_sold(&app, &orders[0]["paidAt"], socks).await, 20.0);
    let accepted = platform.accepted_ids();
    for id in event_ids(app.db()).await {
        assert_eq!(accepted.iter().filter(|seen| **seen == id).count(), 2, "event {id}");
    }
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for name in [
        "outbox_backlog",
        "outbox_oldest_age_seconds",
        "outbox_delivery_attempts_total",
        "outbox_delivery_failures_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_relays_draining_one_backlog_deliver_each_event_exactly_once() {
    let (platform, url) = Platform::start(false, 0).await;
    let app = Arc::new(app_with_platform(&url).await);
    let socks = app.create_product("socks", 10, 1_000).await;
    let user = app.create_user("kim").await;
    app.charge(user, 100_000).await;
    for _ in 0..60 {
        buy(&app, user, socks, 1).await;
    }
    platform.accepting.store(true, Ordering::SeqCst);
    sqlx::query("UPDATE outbox SET next_attempt_at = NOW(6)").execute(app.db()).await.unwrap();
    // The app's own relay plus three more, all at once.
    let relays = (0..3).map(|_| {
        let app = app.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let relay = Relay::new(Some(&url), app.config.ranking_settings());
            while owed(&app).await > 0 {
                relay.drain_once(&app.state.stores).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });
    tokio::time::timeout(CATCH_UP, join_all(relays)).await.expect("the relays catch up");
    let mut accepted = platform.accepted_ids();
    accepted.sort();
    let mut expected = event_ids(app.db()).await;
    expected.sort();
    assert_eq!(accepted, expected);
}

/// The real binary, killed when dropped.
struct Server(Child);

impl Server {
    fn spawn(addr: &str, store: &stampede::config::StoreConfig, platform_url: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_stampede"))
            .arg("serve")
            .env("BIND_ADDR", addr)
            .env("DATABASE_URL", &store.database_url)
            .env("REDIS_URL", &store.redis_url)
            .env("REDIS_PREFIX", &store.redis_prefix)
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("AUTH_JWT_SECRET", crate::support::JWT_SECRET)
            .env("DATA_PLATFORM_URL", platform_url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn stampede");
        Self(child)
    }

    fn sigkill(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_before_the_process_is_killed_is_delivered_after_restart() {
    let (platform, url) = Platform::start(false, 0).await;
    let store = isolated_store().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{addr}/api/v1");
    let http = reqwest::Client::new();
    let ready = || async {
        http.get(format!("http://{addr}/health/ready")).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
    };
    let mut server = Server::spawn(&addr, &store, &url);
    eventually("the server is ready", Duration::from_secs(60), ready).await;

    let admin_post =
        |path: &str, body: Value| http.post(format!("{base}{path}")).bearer_auth(ADMIN_TOKEN).json(&body).send();
    let user: Value = admin_post("/admin/users", json!({ "name": "kim" })).await.unwrap().json().await.unwrap();
    let product: Value = admin_post("/admin/products", json!({ "name": "socks", "price": 100, "stock": 5 }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let charged = http
        .post(format!("{base}/users/{}/balance/charge", user["id"]))
        .bearer_auth(crate::support::token_for(user["id"].as_i64().unwrap()))
        .json(&json!({ "amount": 1_000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(charged.status(), StatusCode::OK);
    let order = http
        .post(format!("{base}/orders"))
        .bearer_auth(crate::support::token_for(user["id"].as_i64().unwrap()))
        .json(&json!({ "userId": user["id"], "pay": true, "items": [{ "productId": product["id"], "quantity": 2 }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), StatusCode::CREATED);

    // The payment is committed and the relay has tried (and been refused) at least once: kill it now.
    eventually("a delivery is attempted", CATCH_UP, || async { platform.requests.load(Ordering::SeqCst) > 0 }).await;
    server.sigkill();
    let db = stampede::store::mysql::connect(&store.database_url, 1).await.unwrap();
    let ids = event_ids(&db).await;
    assert_eq!(ids.len(), 1);
    let delivered: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT delivered_at FROM outbox").fetch_one(&db).await.unwrap();
    assert_eq!(delivered, None);
    assert!(platform.accepted_ids().is_empty());

    platform.accepting.store(true, Ordering::SeqCst);
    let _restarted = Server::spawn(&addr, &store, &url);
    eventually("the event is delivered after restart", CATCH_UP, || async { platform.accepted_ids() == ids }).await;
    eventually("the delivery is recorded", CATCH_UP, || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NOT NULL")
            .fetch_one(&db)
            .await
            .unwrap()
            == 1
    })
    .await;
}
