//! Probes, metrics and the OpenAPI document.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{MariaDb, TestApp, create_database, isolated_store, serve_config};

#[tokio::test]
async fn live_and_ready_answer_200_when_both_stores_are_up() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/health/live").await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, body) = app.get("/health/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["redis"], "ok");
    assert_eq!(body["checks"]["mysql"], "ok");
}

#[tokio::test]
async fn ready_answers_503_naming_mysql_when_it_is_down() {
    let mut mariadb = crate::support::MariaDb::start();
    // Bound for the whole test: a dropped server is killed.
    let redis = crate::support::RedisServer::start();
    let store = crate::support::store_config(
        crate::support::create_database(mariadb.url("").trim_end_matches('/')).await,
        redis.url(),
    );
    let app = TestApp::spawn_with(crate::support::serve_config(store)).await;
    mariadb.kill();
    let (status, body) = app.get("/health/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
    assert_eq!(body["checks"]["redis"], "ok");
    assert_ne!(body["checks"]["mysql"], "ok");
    assert!(body["message"].as_str().unwrap().contains("mysql"), "{body}");
}

async fn metrics_text(app: &TestApp) -> String {
    app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

/// The value of `http_requests_total` for `route` and `status`, 0 before the first such request.
async fn request_count(app: &TestApp, route: &str, status: &str) -> f64 {
    let text = metrics_text(app).await;
    let labels = [format!(r#"route="{route}""#), format!(r#"status="{status}""#)];
    text.lines()
        .find(|l| l.starts_with("http_requests_total") && labels.iter().all(|label| l.contains(label.as_str())))
        .map_or(0.0, |line| line.rsplit(' ').next().unwrap().parse().unwrap())
}

#[tokio::test]
async fn metrics_count_requests_per_route_and_status() {
    let app = TestApp::spawn().await;
    // The recorder is process-wide and other tests run beside this one: only the growth is checked.
    let before = (request_count(&app, "/health/live", "200").await, request_count(&app, "unmatched", "404").await);
    let requests = (0..20).map(|i| app.get(if i % 2 == 0 { "/health/live" } else { "/no/such/route" }));
    futures::future::join_all(requests).await;
    let after = (request_count(&app, "/health/live", "200").await, request_count(&app, "unmatched", "404").await);
    assert!(after.0 >= before.0 + 10.0, "/health/live 200: {before:?} -> {after:?}");
    assert!(after.1 >= before.1 + 10.0, "unmatched 404: {before:?} -> {after:?}");
    let text = metrics_text(&app).await;
    assert!(
        text.contains(r#"http_request_duration_seconds_bucket{method="GET",route="/health/live",status="200""#),
        "{text}"
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_the_callers() {
    let app = TestApp::spawn().await;
    let id_of = |response: reqwest::Response| {
        response.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_owned()).expect("x-request-id")
    };
    let first = id_of(app.http.get(app.url("/health/live")).send().await.unwrap());
    let second = id_of(app.http.get(app.url("/no/such/route")).send().await.unwrap());
    assert_ne!(first, second, "each request gets its own id");
    let kept = app.http.get(app.url("/health/live")).header("x-request-id", "caller-42").send().await.unwrap();
    assert_eq!(id_of(kept), "caller-42");
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let app = TestApp::spawn().await;
    let (status, spec) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/health/live", "/health/ready", "/metrics", "/api/v1/admin/users", "/api/v1/admin/products"] {
        assert!(spec["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
}

/// A 503 with the envelope and `Retry-After: 1`.
fn assert_unavailable(status: StatusCode, retry_after: Option<&str>, body: &Value, what: &str) {
    assert_eq!(
        (status, retry_after, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("1"), Some("SERVICE_UNAVAILABLE")),
        "{what}: {body}"
    );
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Option<String>, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_at_its_connection_limit_or_timing_out_a_lock_wait_answers_503_with_retry_after() {
    use sqlx::{Connection, Executor, MySqlConnection};

    let mariadb = MariaDb::start();
    let server = mariadb.url("").trim_end_matches('/').to_owned();
    let mut admin = MySqlConnection::connect(&server).await.unwrap();
    admin.execute("SET GLOBAL innodb_lock_wait_timeout = 1").await.unwrap();
    let mut store = isolated_store().await;
    store.database_url = create_database(&server).await;
    let database = store.database_url.rsplit('/').next().unwrap().to_owned();
    let app = TestApp::spawn_with(serve_config(store)).await;
    let user = app.create_user("kim").await;
    let product = app.create_product("socks", 100, 10).await;
    let order = json!({ "userId": user, "items": [{ "productId": product, "quantity": 1 }] });
    let create = || app.as_user(reqwest::Method::POST, "/api/v1/orders", user).json(&order);

    // The order's INSERT checks its user's row, which another transaction holds: 1205 after a second.
    let mut locker = admin.begin().await.unwrap();
    let locked = format!("SELECT id FROM {database}.users WHERE id = {user} FOR UPDATE");
    locker.execute(sqlx::AssertSqlSafe(locked)).await.unwrap();
    let (status, retry_after, body) = send(create()).await;
    assert_unavailable(status, retry_after.as_deref(), &body, "lock wait timeout");
    locker.rollback().await.unwrap();
    let (status, _, body) = send(create()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let order_id = body["orderId"].as_i64().unwrap();

    // The server full: the app's connections are killed and every slot is taken, so it gets 1040.
    admin.execute("SET GLOBAL max_connections = 10").await.unwrap();
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM information_schema.processlist WHERE db = ?")
        .bind(&database)
        .fetch_all(&mut admin)
        .await
        .unwrap();
    for id in ids {
        admin.execute(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}"))).await.unwrap();
    }
    let mut held = Vec::new();
    let refused = loop {
        match MySqlConnection::connect(&server).await {
            Ok(connection) => held.push(connection),
            Err(error) => break error,
        }
    };
    let number = refused.as_database_error().and_then(|e| e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>());
    assert_eq!(number.map(|e| e.number()), Some(1040), "{refused}");
    let read = || app.as_user(reqwest::Method::GET, &format!("/api/v1/orders/{order_id}"), user);
    let started = std::time::Instant::now();
    let (status, retry_after, body) = send(read()).await;
    assert_unavailable(status, retry_after.as_deref(), &body, "too many connections");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "answered after {:?}", started.elapsed());
    drop(held);
    admin.execute("SET GLOBAL max_connections = 2000").await.unwrap();
    let (status, _, body) = send(read()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
