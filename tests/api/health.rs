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
    let store = crate::support::store_config(
        crate::support::create_database(mariadb.url("").trim_end_matches('/')).await,
        crate::support::RedisServer::start().url(),
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

#[tokio::test]
async fn metrics_count_requests_per_route_and_status() {
    let app = TestApp::spawn().await;
    app.get("/health/live").await;
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("http_requests_total")
                && l.contains(r#"route="/health/live""#)
                && l.contains(r#"status="200""#)
        })
        .unwrap_or_else(|| panic!("no request counter for /health/live in:\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{line}");
    assert!(text.contains("http_request_duration_seconds_bucket"), "no latency histogram");
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
