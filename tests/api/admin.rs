//! Admin endpoints for users and products.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::TestApp;

#[tokio::test]
async fn admin_creates_users_and_products() {
    let app = TestApp::spawn().await;
    let (status, user) = app.admin_post("/api/v1/admin/users", json!({ "name": " kim " })).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["name"], "kim");
    assert!(user["id"].as_i64().unwrap() > 0);

    let (status, product) =
        app.admin_post("/api/v1/admin/products", json!({ "name": "socks", "price": 1500, "stock": 0 })).await;
    assert_eq!(status, StatusCode::CREATED, "{product}");
    assert_eq!(product["price"], 1500);
    assert_eq!(product["stock"], 0);
    assert_eq!(product["status"], "SOLD_OUT");
    let (_, product) = app.admin_post("/api/v1/admin/products", json!({ "name": "hat", "price": 0, "stock": 3 })).await;
    assert_eq!(product["status"], "ON_SALE");
}

#[tokio::test]
async fn admin_endpoints_refuse_everything_without_a_configured_token() {
    let mut config = crate::support::serve_config(crate::support::isolated_store().await);
    config.admin_token = None;
    let app = TestApp::spawn_with(config).await;
    let (status, body) = app.admin_post("/api/v1/admin/users", json!({ "name": "kim" })).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHORIZED")));
}
