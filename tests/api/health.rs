//! Probes, metrics and the OpenAPI document.

use reqwest::StatusCode;

use crate::support::TestApp;

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
