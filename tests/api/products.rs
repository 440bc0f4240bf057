//! Products: the cached listing, the detail and its view counts, and malformed inputs.

use futures::future::join_all;
use reqwest::StatusCode;
use stampede::product::db;
use stampede::product::views::{self, Flushed};

use crate::support::TestApp;

async fn view_count(app: &TestApp, id: i64) -> i64 {
    sqlx::query_scalar("SELECT view_count FROM products WHERE id = ?").bind(id).fetch_one(app.db()).await.unwrap()
}

/// Flushes until Redis holds no more views (the background flusher may be flushing at the same time).
async fn flush_all(app: &TestApp) {
    while views::flush_once(&app.state.stores, &app.state.products).await.unwrap() != Flushed::Nothing {}
}

async fn view_concurrently(app: &TestApp, id: i64, n: usize) {
    let path = format!("/api/v1/products/{id}");
    let results = join_all((0..n).map(|_| app.get(&path))).await;
    let failed: Vec<_> = results.iter().filter(|(status, _)| *status != StatusCode::OK).collect();
    assert!(failed.is_empty(), "{} views failed, first: {:?}", failed.len(), failed.first());
}

#[tokio::test]
async fn listing_pages_by_id_with_total_elements() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for n in 0..25 {
        ids.push(app.create_product(&format!("p{n}"), 1000 + n, n % 3).await);
    }

    let (status, body) = app.get("/api/v1/products").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["page"].as_i64(), body["size"].as_i64()), (Some(0), Some(20)));
    assert_eq!(body["totalElements"], 25);
    let listed: Vec<i64> = body["products"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(listed, ids[..20]);
    let first = &body["products"][0];
    assert_eq!((first["name"].as_str(), first["price"].as_i64()), (Some("p0"), Some(1000)));
    assert_eq!((first["stock"].as_i64(), first["status"].as_str()), (Some(0), Some("SOLD_OUT")));
    assert_eq!(body["products"][1]["status"], "ON_SALE");

    let (_, body) = app.get("/api/v1/products?page=2&size=10").await;
    let listed: Vec<i64> = body["products"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(listed, ids[20..]);
    let (_, body) = app.get("/api/v1/products?page=99&size=100").await;
    assert_eq!((body["products"].as_array().unwrap().len(), body["totalElements"].as_i64()), (0, Some(25)));
}

#[tokio::test]
async fn a_new_product_shows_in_the_listing_at_once() {
    let app = TestApp::spawn().await;
    app.create_product("first", 100, 1).await;
    let (_, body) = app.get("/api/v1/products").await;
    assert_eq!(body["totalElements"], 1);
    app.create_product("second", 100, 1).await;
    let (_, body) = app.get("/api/v1/products").await;
    assert_eq!(body["totalElements"], 2, "{body}");
    assert_eq!(body["products"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn detail_returns_the_product_with_its_view_count() {
    let app = TestApp::spawn().await;
    let id = app.create_product("lamp", 25_000, 4).await;
    let (status, body) = app.get(&format!("/api/v1/products/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], id);
    assert_eq!((body["name"].as_str(), body["price"].as_i64()), (Some("lamp"), Some(25_000)));
    assert_eq!((body["stock"].as_i64(), body["status"].as_str()), (Some(4), Some("ON_SALE")));
    assert_eq!(body["viewCount"], 1);
    let (_, body) = app.get(&format!("/api/v1/products/{id}")).await;
    assert_eq!(body["viewCount"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_views_are_counted_exactly_once_after_a_flush() {
    let app = TestApp::spawn().await;
    let id = app.create_product("hot", 1_000, 10).await;
    let other = app.create_product("quiet", 1_000, 10).await;

    view_concurrently(&app, id, 1_000).await;
    flush_all(&app).await;

    assert_eq!(view_count(&app, id).await, 1_000);
    assert_eq!(view_count(&app, other).await, 0);
    let (_, body) = app.get(&format!("/api/v1/products/{id}")).await;
    assert_eq!(body["viewCount"], 1_001, "flushed views plus this one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn views_survive_a_graceful_restart_exactly_once() {
    let app = TestApp::spawn().await;
    let id = app.create_product("hot", 1_000, 10).await;
    view_concurrently(&app, id, 1_000).await;

    let config = app.stop().await;
    let app = TestApp::spawn_with(config).await;
    assert_eq!(view_count(&app, id).await, 1_000, "the shutdown flushed every counted view");

    view_concurrently(&app, id, 500).await;
    let config = app.stop().await;
    let app = TestApp::spawn_with(config).await;
    flush_all(&app).await;
    assert_eq!(view_count(&app, id).await, 1_500);
}

#[tokio::test]
async fn a_batch_applied_before_a_crash_is_not_counted_again() {
    let app = TestApp::spawn().await;
    let id = app.create_product("hot", 1_000, 10).await;
    view_concurrently(&app, id, 10).await;
    let stores = &app.state.stores;

    // A flusher that wrote MySQL and died before dropping the batch from Redis. (The background flusher
    // may take the batch first; then this applies nothing and the batch is already gone.)
    if let Some(batch) = views::take_batch(&stores.redis).await.unwrap() {
        db::add_views(&stores.db, &batch.id, &batch.views, chrono::Utc::now()).await.unwrap();
    }
    let outcome = views::flush_once(stores, &app.state.products).await.unwrap();
    assert!(matches!(outcome, Flushed::AlreadyApplied | Flushed::Nothing), "{outcome:?}");
    flush_all(&app).await;
    assert_eq!(view_count(&app, id).await, 10);
    assert!(views::take_batch(&stores.redis).await.unwrap().is_none());
}

#[tokio::test]
async fn malformed_product_requests_get_400_and_unknown_products_404() {
    let app = TestApp::spawn().await;
    let id = app.create_product("lamp", 1, 1).await;
    let bad = [
        "/api/v1/products?size=0",
        "/api/v1/products?size=101",
        "/api/v1/products?page=-1",
        "/api/v1/products?page=abc",
        "/api/v1/products?size=1.5",
        "/api/v1/products?size=",
        "/api/v1/products/0",
        "/api/v1/products/-1",
        "/api/v1/products/abc",
        "/api/v1/products/1.0",
        "/api/v1/products/99999999999999999999",
        "/api/v1/products/top?days=0",
        "/api/v1/products/top?days=8",
        "/api/v1/products/top?limit=0",
        "/api/v1/products/top?limit=51",
        "/api/v1/products/top?days=three",
        "/api/v1/products/top?limit=-5",
    ];
    for path in bad {
        let (status, body) = app.get(path).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")),
            "{path}: {body}"
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}: {body}");
    }
    let (status, body) = app.get(&format!("/api/v1/products/{}", id + 1)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("PRODUCT_NOT_FOUND")), "{body}");
    let (status, body) = app.post("/api/v1/admin/ranking/refresh", serde_json::json!({})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHORIZED")), "{body}");
    assert_eq!(view_count(&app, id).await, 0);
    assert!(views::take_batch(&app.state.stores.redis).await.unwrap().is_none(), "a rejected request counted a view");
}

#[tokio::test]
async fn openapi_document_lists_the_product_and_ranking_routes() {
    let app = TestApp::spawn().await;
    let (_, spec) = app.get("/openapi.json").await;
    for (path, method) in [
        ("/api/v1/products", "get"),
        ("/api/v1/products/{productId}", "get"),
        ("/api/v1/products/top", "get"),
        ("/api/v1/admin/ranking/refresh", "post"),
    ] {
        let operation = &spec["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} missing from the OpenAPI document");
        assert!(operation["responses"]["200"].is_object(), "{method} {path}: no 200 response");
    }
    assert!(spec["paths"]["/api/v1/products/top"]["get"]["responses"]["400"].is_object());
    assert!(spec["paths"]["/api/v1/products/{productId}"]["get"]["responses"]["404"].is_object());
}
