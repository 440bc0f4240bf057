//! Orders and payment: pricing, validation, the pay transaction's failure semantics, and payments racing
//! for real over stock, coupons and locks.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use axum::response::IntoResponse;
use stampede::coupon;
use stampede::id::UserId;
use stampede::order;

use crate::coupons::create_users;
use crate::support::{RedisServer, TestApp, isolated_store, serve_config};

async fn create(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.post("/api/v1/orders", body).await
}

async fn pay(app: &TestApp, user: i64, order: i64) -> (StatusCode, Value) {
    app.post(&format!("/api/v1/orders/{order}/pay"), json!({ "userId": user })).await
}

/// Creates a PENDING order and returns its id.
async fn pending(app: &TestApp, user: i64, items: Value) -> i64 {
    let (status, body) = create(app, json!({ "userId": user, "items": items })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["orderId"].as_i64().unwrap()
}

async fn product(app: &TestApp, id: i64) -> (i64, String) {
    sqlx::query_as(
        "SELECT CAST(SUM(stock) AS SIGNED), IF(SUM(stock) = 0, 'SOLD_OUT', 'ON_SALE') FROM product_options
         WHERE product_id = ?",
    )
    .bind(id)
    .fetch_one(app.db())
    .await
    .unwrap()
}

async fn order_status(app: &TestApp, id: i64) -> String {
    let (status, body) = app.get(&format!("/api/v1/orders/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["status"].as_str().unwrap().to_owned()
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(app.db()).await.unwrap()
}

async fn balance(app: &TestApp, user: i64) -> i64 {
    let (_, body) = app.get(&format!("/api/v1/users/{user}/balance")).await;
    body["balance"].as_i64().unwrap()
}

fn code(body: &Value) -> Option<&str> {
    body["code"].as_str()
}

#[tokio::test]
async fn create_prices_the_order_applies_the_coupon_and_stores_it_pending() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let socks = app.create_product("socks", 1_999, 10).await;
    let hat = app.create_product("hat", 5_000, 3).await;
    let fixed = app.insert_held_coupon(user, "FIXED", 3_000).await;

    let (status, body) = create(
        &app,
        json!({ "userId": user, "couponId": fixed, "items": [
            { "productId": hat, "quantity": 2 }, { "productId": socks, "quantity": 3 } ] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body["userId"], user);
    assert_eq!(body["couponId"], fixed);
    assert_eq!(
        body["items"],
        json!([
            { "productId": socks, "optionId": app.option_of(socks).await.get(), "optionName": "default",
              "quantity": 3, "unitPrice": 1_999, "amount": 5_997 },
            { "productId": hat, "optionId": app.option_of(hat).await.get(), "optionName": "default",
              "quantity": 2, "unitPrice": 5_000, "amount": 10_000 },
        ])
    );
    assert_eq!(
        (body["totalAmount"].as_i64(), body["discountAmount"].as_i64(), body["finalAmount"].as_i64()),
        (Some(15_997), Some(3_000), Some(12_997))
    );
    assert!(chrono::DateTime::parse_from_rfc3339(body["createdAt"].as_str().unwrap()).is_ok());
    let (status, read) = app.get(&format!("/api/v1/orders/{}", body["orderId"])).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read, body);
    // Creating reserves nothing.
    assert_eq!(product(&app, hat).await, (3, "ON_SALE".to_owned()));

    // RATE floors; FIXED never takes more than the total.
    let rate = app.insert_held_coupon(user, "RATE", 15).await;
    let (_, body) =
        create(&app, json!({ "userId": user, "couponId": rate, "items": [{ "productId": socks, "quantity": 1 }] }))
            .await;
    assert_eq!((body["discountAmount"].as_i64(), body["finalAmount"].as_i64()), (Some(299), Some(1_700)), "{body}");
    let big = app.insert_held_coupon(user, "FIXED", 1_000_000).await;
    let (_, body) =
        create(&app, json!({ "userId": user, "couponId": big, "items": [{ "productId": socks, "quantity": 1 }] }))
            .await;
    assert_eq!((body["discountAmount"].as_i64(), body["finalAmount"].as_i64()), (Some(1_999), Some(0)), "{body}");
}

#[tokio::test]
async fn create_refuses_bad_items_unknown_users_and_products_missing_stock_and_unusable_coupons() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let other = app.create_user("lee").await;
    let socks = app.create_product("socks", 1_000, 5).await;
    let item = json!([{ "productId": socks, "quantity": 1 }]);
    let cases = [
        (json!({ "userId": user, "items": [] }), StatusCode::BAD_REQUEST, "INVALID_ORDER"),
        (
            json!({ "userId": user, "items": [{ "productId": socks, "quantity": 0 }] }),
            StatusCode::BAD_REQUEST,
            "INVALID_ORDER",
        ),
        (
            json!({ "userId": user, "items": [{ "productId": socks, "quantity": 1001 }] }),
            StatusCode::BAD_REQUEST,
            "INVALID_ORDER",
        ),
        (
            json!({ "userId": user, "items": [{ "productId": socks, "quantity": 1 }, { "productId": socks, "quantity": 2 }] }),
            StatusCode::BAD_REQUEST,
            "INVALID_ORDER",
        ),
        (json!({ "userId": 999_999, "items": item }), StatusCode::NOT_FOUND, "USER_NOT_FOUND"),
        (
            json!({ "userId": user, "items": [{ "productId": 999_999, "quantity": 1 }] }),
            StatusCode::NOT_FOUND,
            "PRODUCT_NOT_FOUND",
        ),
        (
            json!({ "userId": user, "items": [{ "productId": socks, "quantity": 6 }] }),
            StatusCode::CONFLICT,
            "OUT_OF_STOCK",
        ),
        (json!({ "userId": user, "items": item, "couponId": 999_999 }), StatusCode::CONFLICT, "COUPON_UNAVAILABLE"),
    ];
    for (body, status, expected) in cases {
        let (got, reply) = create(&app, body.clone()).await;
        assert_eq!((got, code(&reply)), (status, Some(expected)), "{body}: {reply}");
    }
    // Another user's coupon, a used one, one not started yet and one that ended.
    let theirs = app.insert_held_coupon(other, "FIXED", 100).await;
    let used = app.insert_held_coupon(user, "FIXED", 100).await;
    sqlx::query("UPDATE user_coupons SET status = 'USED' WHERE coupon_id = ?")
        .bind(used)
        .execute(app.db())
        .await
        .unwrap();
    let future = app.insert_held_coupon(user, "FIXED", 100).await;
    sqlx::query("UPDATE coupons SET starts_at = NOW(6) + INTERVAL 1 DAY WHERE id = ?")
        .bind(future)
        .execute(app.db())
        .await
        .unwrap();
    let ended = app.insert_held_coupon(user, "FIXED", 100).await;
    sqlx::query("UPDATE coupons SET ends_at = NOW(6) - INTERVAL 1 SECOND WHERE id = ?")
        .bind(ended)
        .execute(app.db())
        .await
        .unwrap();
    for coupon in [theirs, used, future, ended] {
        let (status, reply) = create(&app, json!({ "userId": user, "items": item, "couponId": coupon })).await;
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::CONFLICT, Some("COUPON_UNAVAILABLE")),
            "coupon {coupon}: {reply}"
        );
    }
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders").await, 0);
}

#[tokio::test]
async fn paying_takes_stock_coupon_and_balance_and_records_payment_history_and_event() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let socks = app.create_product("socks", 1_000, 5).await;
    let hat = app.create_product("hat", 4_000, 2).await;
    let coupon = app.insert_held_coupon(user, "RATE", 10).await;
    app.charge(user, 20_000).await;
    let (_, order) = create(
        &app,
        json!({ "userId": user, "couponId": coupon, "items": [
            { "productId": socks, "quantity": 3 }, { "productId": hat, "quantity": 2 } ] }),
    )
    .await;
    let id = order["orderId"].as_i64().unwrap();
    assert_eq!(order["finalAmount"], 9_900);

    let (status, paid) = pay(&app, user, id).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!((paid["orderId"].as_i64(), paid["status"].as_str()), (Some(id), Some("PAID")));
    assert_eq!((paid["finalAmount"].as_i64(), paid["balance"].as_i64()), (Some(9_900), Some(10_100)));
    assert_eq!(product(&app, socks).await, (2, "ON_SALE".to_owned()));
    assert_eq!(product(&app, hat).await, (0, "SOLD_OUT".to_owned()));
    let (status, read) = app.get(&format!("/api/v1/orders/{id}")).await;
    assert_eq!((status, read["status"].as_str()), (StatusCode::OK, Some("PAID")));
    assert_eq!(read["paidAt"], paid["paidAt"]);
    let coupon_row: (String, Option<i64>) =
        sqlx::query_as("SELECT status, order_id FROM user_coupons WHERE coupon_id = ?")
            .bind(coupon)
            .fetch_one(app.db())
            .await
            .unwrap();
    assert_eq!(coupon_row, ("USED".to_owned(), Some(id)));
    let (_, history) = app.get(&format!("/api/v1/users/{user}/balance/history")).await;
    assert_eq!(history["entries"][0]["type"], "PAYMENT");
    assert_eq!(
        (history["entries"][0]["amount"].as_i64(), history["entries"][0]["balanceAfter"].as_i64()),
        (Some(-9_900), Some(10_100))
    );
    assert_eq!(count(&app, "SELECT COUNT(*) FROM payments WHERE amount = 9900").await, 1);
    let payload: String = sqlx::query_scalar("SELECT CAST(payload AS CHAR) FROM outbox WHERE order_id = ?")
        .bind(id)
        .fetch_one(app.db())
        .await
        .unwrap();
    let event: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(
        (event["orderId"].as_i64(), event["userId"].as_i64(), event["finalAmount"].as_i64()),
        (Some(id), Some(user), Some(9_900))
    );
    assert_eq!(event["items"], order["items"]);
    assert_eq!(event["paidAt"], paid["paidAt"]);
    assert_eq!(event["eventId"].as_str().unwrap().len(), 36);

    // Paying twice, or someone else's order, is refused.
    let (status, body) = pay(&app, user, id).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, Some("ORDER_NOT_PAYABLE")), "{body}");
    let other = app.create_user("lee").await;
    let (status, body) = pay(&app, other, id).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, Some("ORDER_NOT_FOUND")), "{body}");
    let (status, body) = pay(&app, user, 999_999).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, Some("ORDER_NOT_FOUND")), "{body}");
    let (status, body) = app.get("/api/v1/orders/999999").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, Some("ORDER_NOT_FOUND")), "{body}");
}

#[tokio::test]
async fn insufficient_balance_leaves_the_order_pending_until_a_charge() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let socks = app.create_product("socks", 1_000, 5).await;
    let id = pending(&app, user, json!([{ "productId": socks, "quantity": 2 }])).await;
    app.charge(user, 1_999).await;
    let (status, body) = pay(&app, user, id).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, Some("INSUFFICIENT_BALANCE")), "{body}");
    assert_eq!(order_status(&app, id).await, "PENDING");
    assert_eq!(product(&app, socks).await.0, 5);
    app.charge(user, 1).await;
    let (status, body) = pay(&app, user, id).await;
    assert_eq!((status, body["balance"].as_i64()), (StatusCode::OK, Some(0)), "{body}");
}

#[tokio::test]
async fn out_of_stock_or_a_used_coupon_at_pay_time_turns_the_order_failed() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let socks = app.create_product("socks", 100, 3).await;
    app.charge(user, 10_000).await;
    let first = pending(&app, user, json!([{ "productId": socks, "quantity": 2 }])).await;
    let second = pending(&app, user, json!([{ "productId": socks, "quantity": 2 }])).await;
    assert_eq!(pay(&app, user, first).await.0, StatusCode::OK);
    let (status, body) = pay(&app, user, second).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, Some("OUT_OF_STOCK")), "{body}");
    assert_eq!(order_status(&app, second).await, "FAILED");
    let (status, body) = pay(&app, user, second).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, Some("ORDER_NOT_PAYABLE")), "{body}");

    let coupon = app.insert_held_coupon(user, "FIXED", 10).await;
    let items = json!([{ "productId": socks, "quantity": 1 }]);
    let (_, a) = create(&app, json!({ "userId": user, "items": items, "couponId": coupon })).await;
    let (_, b) = create(&app, json!({ "userId": user, "items": items, "couponId": coupon })).await;
    assert_eq!(pay(&app, user, a["orderId"].as_i64().unwrap()).await.0, StatusCode::OK);
    let b = b["orderId"].as_i64().unwrap();
    let (status, body) = pay(&app, user, b).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, Some("COUPON_UNAVAILABLE")), "{body}");
    assert_eq!(order_status(&app, b).await, "FAILED");
    assert_eq!(balance(&app, user).await, 10_000 - 200 - 90);
}

#[tokio::test]
async fn pay_true_creates_and_pays_at_once_and_leaves_no_order_when_paying_fails() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let socks = app.create_product("socks", 1_000, 2).await;
    let (status, body) =
        create(&app, json!({ "userId": user, "items": [{ "productId": socks, "quantity": 1 }], "pay": true })).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, Some("INSUFFICIENT_BALANCE")), "{body}");
    app.charge(user, 5_000).await;
    let (status, body) =
        create(&app, json!({ "userId": user, "items": [{ "productId": socks, "quantity": 2 }], "pay": true })).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::CREATED, Some("PAID")), "{body}");
    assert_eq!(body["finalAmount"], 2_000);
    assert_eq!(order_status(&app, body["orderId"].as_i64().unwrap()).await, "PAID");
    assert_eq!(product(&app, socks).await, (0, "SOLD_OUT".to_owned()));
    let (status, body) =
        create(&app, json!({ "userId": user, "items": [{ "productId": socks, "quantity": 1 }], "pay": true })).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, Some("OUT_OF_STOCK")), "{body}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(balance(&app, user).await, 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_buyers_of_fifty_units_paying_at_once_gives_exactly_fifty_paid() {
    let app = Arc::new(TestApp::spawn().await);
    let product_id = app.create_product("flash", 1_000, 50).await;
    let mut buyers = Vec::new();
    for n in 0..200 {
        let user = app.create_user(&format!("buyer{n}")).await;
        app.charge(user, 5_000).await;
        buyers.push((user, pending(&app, user, json!([{ "productId": product_id, "quantity": 1 }])).await));
    }
    let tasks = buyers.iter().map(|&(user, order)| {
        let app = app.clone();
        tokio::spawn(async move { pay(&app, user, order).await })
    });
    let results: Vec<(StatusCode, Value)> = join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    let paid = results.iter().filter(|(status, _)| *status == StatusCode::OK).count();
    let sold_out = results
        .iter()
        .filter(|(status, body)| *status == StatusCode::CONFLICT && code(body) == Some("OUT_OF_STOCK"))
        .count();
    assert_eq!(
        (paid, sold_out),
        (50, 150),
        "{:?}",
        results.iter().find(|(s, b)| *s != StatusCode::OK && code(b) != Some("OUT_OF_STOCK"))
    );
    assert_eq!(product(&app, product_id).await, (0, "SOLD_OUT".to_owned()));
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders WHERE status = 'PAID'").await, 50);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders WHERE status = 'FAILED'").await, 150);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM payments").await, 50);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM outbox").await, 50);
    // Money is conserved: what was charged is either still in a balance or in a payment.
    let balances = count(&app, "SELECT CAST(SUM(amount) AS SIGNED) FROM balances").await;
    let payments = count(&app, "SELECT CAST(SUM(amount) AS SIGNED) FROM payments").await;
    assert_eq!((balances, payments), (200 * 5_000 - 50_000, 50_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_coupon_in_ten_concurrent_paid_orders_is_used_exactly_once() {
    let app = Arc::new(TestApp::spawn().await);
    let user = app.create_user("kim").await;
    let socks = app.create_product("socks", 1_000, 100).await;
    let coupon = app.insert_held_coupon(user, "FIXED", 500).await;
    app.charge(user, 100_000).await;
    let tasks = (0..10).map(|_| {
        let app = app.clone();
        tokio::spawn(async move {
            create(&app, json!({ "userId": user, "couponId": coupon, "pay": true, "items": [{ "productId": socks, "quantity": 1 }] })).await
        })
    });
    let results: Vec<(StatusCode, Value)> = join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    let paid = results.iter().filter(|(status, _)| *status == StatusCode::CREATED).count();
    let refused = results
        .iter()
        .filter(|(status, body)| *status == StatusCode::CONFLICT && code(body) == Some("COUPON_UNAVAILABLE"))
        .count();
    assert_eq!((paid, refused), (1, 9), "{results:?}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(product(&app, socks).await.0, 99);
    assert_eq!(balance(&app, user).await, 100_000 - 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_item_orders_listing_products_in_opposite_orders_never_surface_a_deadlock() {
    let app = Arc::new(TestApp::spawn().await);
    let a = app.create_product("a", 10, 1_000).await;
    let b = app.create_product("b", 20, 1_000).await;
    let c = app.create_product("c", 30, 1_000).await;
    let forward = app.create_user("forward").await;
    let backward = app.create_user("backward").await;
    app.charge(forward, 1_000_000).await;
    app.charge(backward, 1_000_000).await;
    let rounds = 40;
    let tasks = (0..rounds).flat_map(|_| {
        [(forward, json!([a, b, c])), (backward, json!([c, b, a]))].map(|(user, ids)| {
            let app = app.clone();
            let items: Vec<Value> =
                ids.as_array().unwrap().iter().map(|id| json!({ "productId": id, "quantity": 1 })).collect();
            tokio::spawn(async move { create(&app, json!({ "userId": user, "items": items, "pay": true })).await })
        })
    });
    let results: Vec<(StatusCode, Value)> = join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    for (status, body) in &results {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
    }
    for id in [a, b, c] {
        assert_eq!(product(&app, id).await.0, 1_000 - 2 * rounds);
    }
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders WHERE status = 'PAID'").await, 2 * rounds);
}

#[tokio::test]
async fn order_endpoints_reject_malformed_input_with_the_envelope() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let socks = app.create_product("socks", 1, 1).await;
    let cases: Vec<(Method, String, Option<String>, StatusCode, &str)> = vec![
        (Method::GET, "/api/v1/orders/0".into(), None, StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        (Method::GET, "/api/v1/orders/x".into(), None, StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        (Method::GET, "/api/v1/orders/-3".into(), None, StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        (
            Method::POST,
            "/api/v1/orders/0/pay".into(),
            Some(format!(r#"{{"userId": {user}}}"#)),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/api/v1/orders/1/pay".into(),
            Some(r#"{"userId": 0}"#.into()),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        // In jwt mode a pay may leave out its userId: the token's user pays, and order 1 is none of theirs.
        (Method::POST, "/api/v1/orders/1/pay".into(), Some("{}".into()), StatusCode::NOT_FOUND, "ORDER_NOT_FOUND"),
        (Method::POST, "/api/v1/orders".into(), Some("nope".into()), StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        (
            Method::POST,
            "/api/v1/orders".into(),
            Some(format!(r#"{{"userId": {user}}}"#)),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/api/v1/orders".into(),
            Some(format!(r#"{{"userId": -1, "items": [{{"productId": {socks}, "quantity": 1}}]}}"#)),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/api/v1/orders".into(),
            Some(format!(r#"{{"userId": {user}, "items": [{{"productId": 0, "quantity": 1}}]}}"#)),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/api/v1/orders".into(),
            Some(format!(r#"{{"userId": {user}, "items": [{{"productId": {socks}, "quantity": "1"}}]}}"#)),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/api/v1/orders".into(),
            Some(format!(r#"{{"userId": {user}, "couponId": 0, "items": [{{"productId": {socks}, "quantity": 1}}]}}"#)),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/api/v1/orders".into(),
            Some(format!(r#"{{"userId": {user}, "pay": "yes", "items": [{{"productId": {socks}, "quantity": 1}}]}}"#)),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/api/v1/orders".into(),
            Some(format!(r#"{{"userId": {user}, "items": [{{"productId": {socks}, "quantity": -1}}]}}"#)),
            StatusCode::BAD_REQUEST,
            "INVALID_ORDER",
        ),
        (Method::DELETE, "/api/v1/orders/1".into(), None, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
    ];
    for (method, path, body, status, expected) in cases {
        let mut request = app.as_user(method.clone(), &path, user);
        if let Some(body) = &body {
            request = request.header("content-type", "application/json").body(body.clone());
        }
        let response = request.send().await.unwrap();
        let got = response.status();
        let envelope: Value = response.json().await.unwrap();
        assert_eq!((got, code(&envelope)), (status, Some(expected)), "{method} {path} {body:?}: {envelope}");
        assert!(envelope["message"].is_string(), "{envelope}");
    }
    let too_many: Vec<Value> = (1..=101).map(|id| json!({ "productId": id, "quantity": 1 })).collect();
    let (status, body) = create(&app, json!({ "userId": user, "items": too_many })).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, Some("INVALID_ORDER")), "{body}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders").await, 0);
}

#[tokio::test]
async fn orders_payments_used_coupons_and_history_keep_every_instant_from_1970_to_9999() {
    use stampede::id::{CouponId, OrderId, ProductId, UserId};
    use stampede::order::{Item, Order, Status};

    let app = TestApp::spawn().await;
    let db = app.db();
    let user = app.create_user("kim").await;
    let user_id = UserId::new(user).unwrap();
    let product = ProductId::new(app.create_product("socks", 100, 10).await).unwrap();
    for edge in crate::coupons::EDGES {
        let at = chrono::DateTime::parse_from_rfc3339(edge).unwrap().to_utc();
        let coupon = crate::coupons::create_coupon(&app, 1).await;
        let coupon = CouponId::new(coupon).unwrap();
        let order = Order {
            order_id: OrderId::new(i64::MAX).unwrap(),
            user_id,
            status: Status::Pending,
            items: vec![Item {
                product_id: product,
                option_id: app.option_of(product.get()).await,
                option_name: "default".to_owned(),
                quantity: 1,
                unit_price: 100,
                amount: 100,
            }],
            total_amount: 100,
            discount_amount: 0,
            final_amount: 100,
            coupon_id: Some(coupon),
            created_at: at,
            paid_at: None,
        };
        // Written as the pay transaction writes them, at that instant.
        let mut tx = db.begin().await.unwrap();
        let id = stampede::order::db::insert_paid(&mut tx, &order, at).await.unwrap();
        stampede::order::db::insert_payment(&mut tx, id, user_id, 100, at).await.unwrap();
        assert!(stampede::coupon::db::mark_used(&mut tx, user_id, coupon, at, id, at).await.unwrap());
        tx.commit().await.unwrap();

        let (status, body) = app.get(&format!("/api/v1/orders/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let read = |field: &str| chrono::DateTime::parse_from_rfc3339(body[field].as_str().unwrap()).unwrap();
        assert_eq!((read("createdAt"), read("paidAt")), (at.fixed_offset(), at.fixed_offset()), "{edge}: {body}");
        let paid_at: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("SELECT paid_at FROM payments WHERE order_id = ?").bind(id).fetch_one(db).await.unwrap();
        assert_eq!(paid_at, at, "{edge}");
        let held = stampede::coupon::db::find_held(db, user_id, coupon).await.unwrap().unwrap();
        assert_eq!((held.issued_at, held.used_at), (at, Some(at)), "{edge}");

        let charged = stampede::balance::db::charge(db, user_id, 1, 100_000_000, None, at).await.unwrap();
        assert!(
            matches!(charged, stampede::balance::db::ChargeOutcome::Charged(ref c) if c.charged_at == at),
            "{charged:?}"
        );
        let newest = stampede::balance::db::history(db, user_id, 1).await.unwrap();
        assert_eq!(newest[0].created_at, at, "{edge}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_loser_of_each_of_three_hundred_double_clicked_pays_gets_409_order_not_payable() {
    const PER_KIND: usize = 100;
    let app = TestApp::spawn().await;
    let shared = app.create_product("shared", 1_000, 10_000).await;
    // Three kinds of orders, each with one thing that suffices for exactly one payment: the coupon, the
    // product's stock, or the balance. A loser that checked it after the winner committed would find it
    // gone and answer COUPON_UNAVAILABLE, OUT_OF_STOCK or INSUFFICIENT_BALANCE.
    let setups = (0..3 * PER_KIND).map(|n| {
        let app = &app;
        async move {
            let user = app.create_user(&format!("u{n}")).await;
            let kind = n % 3;
            let product = if kind == 1 { app.create_product(&format!("p{n}"), 1_000, 1).await } else { shared };
            let coupon = if kind == 0 { Some(app.insert_held_coupon(user, "FIXED", 100).await) } else { None };
            let charged = if kind == 2 { 1_000 } else { 10_000_000 };
            app.charge(user, charged).await;
            let body =
                json!({ "userId": user, "items": [{ "productId": product, "quantity": 1 }], "couponId": coupon });
            let (status, body) = create(app, body).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            (user, body["orderId"].as_i64().unwrap(), charged)
        }
    });
    let orders = join_all(setups).await;
    let charged: i64 = orders.iter().map(|(_, _, charged)| charged).sum();

    // The second click lands a little later, by a different delay per order, so across the orders it
    // arrives at every point of the first one's payment, the commit included.
    let clicks = orders.iter().enumerate().flat_map(|(n, &(user, order, _))| {
        let app = &app;
        let late = Duration::from_micros((n as u64 * 397) % 12_000);
        [
            Box::pin(pay(app, user, order)) as std::pin::Pin<Box<dyn Future<Output = _> + Send>>,
            Box::pin(async move {
                tokio::time::sleep(late).await;
                pay(app, user, order).await
            }),
        ]
    });
    let results = join_all(clicks).await;
    for (pair, &(_, order, _)) in results.chunks(2).zip(&orders) {
        let mut outcomes: Vec<(StatusCode, Option<&str>)> = pair.iter().map(|(s, b)| (*s, code(b))).collect();
        outcomes.sort();
        assert_eq!(
            outcomes,
            [(StatusCode::OK, None), (StatusCode::CONFLICT, Some("ORDER_NOT_PAYABLE"))],
            "order {order}: {pair:?}"
        );
        assert_eq!(order_status(&app, order).await, "PAID");
    }
    assert_eq!(count(&app, "SELECT COUNT(*) FROM payments").await, 3 * PER_KIND as i64);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM user_coupons WHERE status = 'USED'").await, PER_KIND as i64);
    let money =
        count(&app, "SELECT CAST((SELECT SUM(amount) FROM balances) + (SELECT SUM(amount) FROM payments) AS SIGNED)");
    assert_eq!(money.await, charged);
}

/// Sends SIGSTOP or SIGCONT to a test Redis: a stopped Redis keeps its connections open and answers
/// nothing, so every command times out as against a Redis stuck or cut off by the network.
fn signal_redis(redis: &RedisServer, signal: &str) {
    let pid = std::fs::read_to_string(redis.dir.join("redis.pid")).unwrap();
    let sent = std::process::Command::new("kill").args([signal, pid.trim()]).status().unwrap();
    assert!(sent.success(), "kill {signal} {pid}");
}

/// Status and code a domain error is answered with, through the one mapping of the HTTP layer.
fn answer(error: order::Error) -> (StatusCode, Option<String>) {
    let response = stampede::http::Error::from(error).into_response();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (StatusCode::from_u16(response.status().as_u16()).unwrap(), retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_timing_out_while_two_hundred_orders_pay_with_unpersisted_coupons_answers_503_and_keeps_them_pending() {
    const ORDERS: usize = 200;
    let redis = RedisServer::start();
    let mut store = isolated_store().await;
    store.redis_url = redis.url();
    // Built, not run: no writer persists the issuances, so every coupon is known to Redis only.
    let app = stampede::app::App::build(serve_config(store)).await.unwrap();
    let (state, now) = (app.state(), chrono::Utc::now());
    let (stores, orders_of) = (&state.stores, &state.orders);
    let new = stampede::product::ProductSpec::single("socks", 1_000, 10_000).validate().unwrap();
    let product = state.products.create(new).await.unwrap().id;
    let new = coupon::NewCoupon::parse(
        coupon::CouponSpec::open_ended("flash", coupon::DiscountType::Fixed, 100, ORDERS as i64),
        now,
    );
    let campaign = state.coupons.create(new.unwrap()).await.unwrap().id;
    let items = vec![order::ItemRequest { product_id: product, option_id: None, quantity: 1 }];
    let mut orders = Vec::new();
    for user in create_users(stores, ORDERS).await {
        let user = UserId::new(user).unwrap();
        state.coupons.issue(campaign, user).await.unwrap();
        state.balances.charge(user, 10_000, None).await.unwrap();
        let new = order::NewOrder { user_id: user, items: items.clone(), coupon_id: Some(campaign) };
        orders.push((user, orders_of.create(new, false).await.unwrap().order_id));
    }
    let persisted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_coupons").fetch_one(&stores.db).await.unwrap();
    assert_eq!(persisted, 0);

    signal_redis(&redis, "-STOP");
    let pays = join_all(orders.iter().map(|&(user, id)| orders_of.pay(user, id)));
    let creates = join_all(orders.iter().take(20).map(|&(user, _)| {
        orders_of.create(order::NewOrder { user_id: user, items: items.clone(), coupon_id: Some(campaign) }, false)
    }));
    let (pays, creates) = tokio::join!(pays, creates);
    signal_redis(&redis, "-CONT");
    let service_unavailable = (StatusCode::SERVICE_UNAVAILABLE, Some("1".to_owned()));
    let outcomes = pays.into_iter().map(|r| r.map(drop)).chain(creates.into_iter().map(|r| r.map(drop)));
    for outcome in outcomes {
        assert_eq!(answer(outcome.expect_err("Redis is stopped")), service_unavailable);
    }
    for &(_, id) in &orders {
        assert_eq!(orders_of.get(id).await.unwrap().status, order::Status::Pending, "order {id}");
    }
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders").fetch_one(&stores.db).await.unwrap();
    assert_eq!(stored, ORDERS as i64, "a create during the outage stored an order");

    // Redis back: every order pays with its coupon, and no won was made or lost.
    let paid = join_all(orders.iter().map(|&(user, id)| orders_of.pay(user, id))).await;
    assert_eq!(paid.iter().filter(|p| p.as_ref().is_ok_and(|p| p.final_amount == 900)).count(), ORDERS, "{paid:?}");
    let money: i64 = sqlx::query_scalar(
        "SELECT CAST((SELECT SUM(amount) FROM balances) + (SELECT SUM(amount) FROM payments) AS SIGNED)",
    )
    .fetch_one(&stores.db)
    .await
    .unwrap();
    assert_eq!(money, 10_000 * ORDERS as i64);
}
