//! One shopper's flash-sale day across every domain: coupon issued in Redis, used at once in a paid order,
//! money and stock moved in MySQL, the sale counted in the ranking by the outbox relay.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{TestApp, eventually};

#[tokio::test]
async fn a_coupon_issued_a_moment_ago_pays_an_order_that_reaches_the_ranking() {
    let app = TestApp::spawn().await;
    let user = app.create_user("shopper").await;
    let product = app.create_product("sneakers", 10_000, 5).await;
    assert_eq!(app.charge(user, 50_000).await, 50_000);
    let (status, coupon) = app
        .admin_post(
            "/api/v1/admin/coupons",
            json!({ "name": "10% off", "discountType": "RATE", "discountValue": 10, "totalQuantity": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{coupon}");
    let coupon = coupon["id"].as_i64().unwrap();

    let (status, issued) = app.post(&format!("/api/v1/coupons/{coupon}/issue"), json!({ "userId": user })).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let order_body =
        json!({ "userId": user, "items": [{ "productId": product, "quantity": 2 }], "couponId": coupon, "pay": true });
    let (status, order) = app.post("/api/v1/orders", order_body).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "PAID");
    assert_eq!((order["totalAmount"].as_i64(), order["discountAmount"].as_i64()), (Some(20_000), Some(2_000)));
    assert_eq!(order["finalAmount"], 18_000);

    let (_, balance) = app.get(&format!("/api/v1/users/{user}/balance")).await;
    assert_eq!(balance["balance"], 32_000);
    let (_, history) = app.get(&format!("/api/v1/users/{user}/balance/history")).await;
    let kinds: Vec<(&str, i64)> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["amount"].as_i64().unwrap()))
        .collect();
    assert_eq!(kinds, [("PAYMENT", -18_000), ("CHARGE", 50_000)]);
    let (_, used) = app.get(&format!("/api/v1/users/{user}/coupons?status=USED")).await;
    assert_eq!(used["coupons"].as_array().unwrap().len(), 1, "{used}");
    assert_eq!(used["coupons"][0]["couponId"], coupon);
    let (_, detail) = app.get(&format!("/api/v1/products/{product}")).await;
    assert_eq!((detail["stock"].as_i64(), detail["status"].as_str()), (Some(3), Some("ON_SALE")));

    // The relay counts the sale in today's set after commit; a refresh makes the ranking current.
    eventually("the paid order reaches the ranking", Duration::from_secs(10), || async {
        let (status, top) = app.call(Method::POST, "/api/v1/admin/ranking/refresh", None, true).await;
        assert_eq!(status, StatusCode::OK, "{top}");
        top["products"].as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    let (_, top) = app.get("/api/v1/products/top").await;
    assert_eq!(top["products"][0]["productId"], product, "{top}");
    assert_eq!(top["products"][0]["totalSales"], 2, "{top}");
    assert_eq!(top["products"][0]["rank"], 1, "{top}");
    assert_eq!(top["products"].as_array().unwrap().len(), 1, "{top}");

    eventually("the writer persists the issuance", Duration::from_secs(10), || async {
        let (_, progress) = app.call(Method::GET, &format!("/api/v1/admin/coupons/{coupon}"), None, true).await;
        progress["persisted"] == 1 && progress["issued"] == 1 && progress["remaining"] == 0
    })
    .await;
}
