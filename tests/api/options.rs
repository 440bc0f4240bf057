//! Product options: option-level stock and price from the catalogue to payment, the event and the ranking;
//! every new error path; products and orders written before options existed; the catalogue's freshness.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestApp;

fn code(body: &Value) -> Option<&str> {
    body["code"].as_str()
}

async fn scalar(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(app.db()).await.unwrap()
}

/// An option's stock and status as MySQL holds them.
async fn option_row(app: &TestApp, option: i64) -> (i64, String) {
    sqlx::query_as("SELECT CAST(stock AS SIGNED), status FROM product_options WHERE id = ?")
        .bind(option)
        .fetch_one(app.db())
        .await
        .unwrap()
}

/// Sum of balances and payments: constant whatever payments do, since money only moves between them.
async fn money(app: &TestApp) -> i64 {
    scalar(
        app,
        "SELECT CAST((SELECT SUM(amount) FROM balances) + (SELECT COALESCE(SUM(amount), 0) FROM payments) AS SIGNED)",
    )
    .await
}

async fn detail(app: &TestApp, product: i64) -> Value {
    let (status, body) = app.get(&format!("/api/v1/products/{product}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn restock(app: &TestApp, product: i64, option: i64, quantity: i64) -> (StatusCode, Value) {
    app.admin_post(
        &format!("/api/v1/admin/products/{product}/options/{option}/restock"),
        json!({ "quantity": quantity }),
    )
    .await
}

#[tokio::test]
async fn a_product_lists_its_options_with_their_own_price_stock_and_status() {
    let app = TestApp::spawn().await;
    let (status, created) = app
        .admin_post(
            "/api/v1/admin/products",
            json!({ "name": "t-shirt", "price": 20_000, "options": [
                { "name": "S", "stock": 0 }, { "name": "M", "stock": 5 }, { "name": "XL", "price": 23_000, "stock": 2 } ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!((created["stock"].as_i64(), created["status"].as_str()), (Some(7), Some("ON_SALE")));
    let options = created["options"].as_array().unwrap();
    let shown: Vec<_> = options
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap(),
                o["price"].as_i64().unwrap(),
                o["stock"].as_i64().unwrap(),
                o["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(shown, [("S", 20_000, 0, "SOLD_OUT"), ("M", 20_000, 5, "ON_SALE"), ("XL", 23_000, 2, "ON_SALE")]);

    let body = detail(&app, id).await;
    assert_eq!(body["options"], created["options"]);
    assert_eq!((body["stock"].as_i64(), body["viewCount"].as_i64()), (Some(7), Some(1)));
    let (_, page) = app.get("/api/v1/products").await;
    assert_eq!(page["products"][0]["options"], created["options"]);
    assert_eq!(page["products"][0]["stock"], 7);

    // An option added later takes the product's price unless it names one.
    let (status, added) =
        app.admin_post(&format!("/api/v1/admin/products/{id}/options"), json!({ "name": "L", "stock": 4 })).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(
        (added["name"].as_str(), added["price"].as_i64(), added["status"].as_str()),
        (Some("L"), Some(20_000), Some("ON_SALE"))
    );
    let body = detail(&app, id).await;
    assert_eq!((body["stock"].as_i64(), body["options"].as_array().unwrap().len()), (Some(11), 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_buyers_racing_for_one_option_of_fifty_get_exactly_fifty_and_leave_the_other_option_untouched() {
    let app = Arc::new(TestApp::spawn().await);
    let (product, options) = app.create_product_with_options("sneaker", 1_000, &[("260", 50), ("270", 30)]).await;
    let (hot, other) = (options[0], options[1]);
    let mut buyers = Vec::new();
    for n in 0..200 {
        let user = app.create_user(&format!("buyer{n}")).await;
        app.charge(user, 5_000).await;
        let order = json!({ "userId": user, "items": [{ "productId": product, "optionId": hot, "quantity": 1 }] });
        let (status, body) = app.post("/api/v1/orders", order).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        buyers.push((user, body["orderId"].as_i64().unwrap()));
    }
    let before = money(&app).await;
    let tasks = buyers.iter().map(|&(user, order)| {
        let app = app.clone();
        tokio::spawn(async move { app.post(&format!("/api/v1/orders/{order}/pay"), json!({ "userId": user })).await })
    });
    let results: Vec<(StatusCode, Value)> = join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    let paid = results.iter().filter(|(status, _)| *status == StatusCode::OK).count();
    let out_of_stock: Vec<_> = results.iter().filter(|(_, body)| code(body) == Some("OUT_OF_STOCK")).collect();
    assert_eq!(
        (paid, out_of_stock.len()),
        (50, 150),
        "{:?}",
        results.iter().find(|(s, b)| *s != StatusCode::OK && code(b) != Some("OUT_OF_STOCK"))
    );
    let message = out_of_stock[0].1["message"].as_str().unwrap();
    assert!(message.contains(&format!("option {hot}")) && message.contains("260"), "{message}");

    assert_eq!(option_row(&app, hot).await, (0, "SOLD_OUT".to_owned()));
    assert_eq!(option_row(&app, other).await, (30, "ON_SALE".to_owned()));
    assert_eq!(scalar(&app, "SELECT COUNT(*) FROM orders WHERE status = 'PAID'").await, 50);
    assert_eq!(scalar(&app, "SELECT COUNT(*) FROM orders WHERE status = 'FAILED'").await, 150);
    assert_eq!(money(&app).await, before, "money was made or lost");
    let body = detail(&app, product).await;
    assert_eq!((body["stock"].as_i64(), body["status"].as_str()), (Some(30), Some("ON_SALE")));
    assert_eq!(
        (body["options"][0]["stock"].as_i64(), body["options"][0]["status"].as_str()),
        (Some(0), Some("SOLD_OUT"))
    );

    // A restock brings the sold-out option back on sale; selling every option makes the product SOLD_OUT.
    let (status, restocked) = restock(&app, product, hot, 5).await;
    assert_eq!(status, StatusCode::OK, "{restocked}");
    assert_eq!((restocked["stock"].as_i64(), restocked["status"].as_str()), (Some(5), Some("ON_SALE")));
    let buyer = buyers[0].0;
    app.charge(buyer, 100_000).await;
    let order = json!({ "userId": buyer, "pay": true, "items": [
        { "productId": product, "optionId": other, "quantity": 30 }, { "productId": product, "optionId": hot, "quantity": 5 } ] });
    let (status, body) = app.post("/api/v1/orders", order).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let body = detail(&app, product).await;
    assert_eq!((body["stock"].as_i64(), body["status"].as_str()), (Some(0), Some("SOLD_OUT")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_multi_item_orders_over_options_in_opposite_orders_surface_no_deadlock_and_keep_stock_exact() {
    const ORDERS: usize = 300;
    let app = Arc::new(TestApp::spawn().await);
    let (a, a_options) = app.create_product_with_options("a", 10, &[("red", 100_000), ("blue", 100_000)]).await;
    let (b, b_options) = app.create_product_with_options("b", 10, &[("S", 100_000), ("M", 100_000)]).await;
    let lines = [(a, a_options[0]), (a, a_options[1]), (b, b_options[0]), (b, b_options[1])];
    let mut buyers = Vec::new();
    for n in 0..ORDERS {
        let user = app.create_user(&format!("buyer{n}")).await;
        app.charge(user, 1_000).await;
        buyers.push(user);
    }
    let before = money(&app).await;
    let tasks = buyers.iter().enumerate().map(|(n, &user)| {
        let app = app.clone();
        // Half list the lines forwards, half backwards.
        let mut items: Vec<Value> =
            lines.iter().map(|(p, o)| json!({ "productId": p, "optionId": o, "quantity": 1 })).collect();
        if n % 2 == 1 {
            items.reverse();
        }
        tokio::spawn(
            async move { app.post("/api/v1/orders", json!({ "userId": user, "pay": true, "items": items })).await },
        )
    });
    let results: Vec<(StatusCode, Value)> = join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    let failed: Vec<_> = results.iter().filter(|(status, _)| *status != StatusCode::CREATED).collect();
    assert!(failed.is_empty(), "{} failed, first: {:?}", failed.len(), failed.first());
    for (_, option) in lines {
        assert_eq!(option_row(&app, option).await.0, 100_000 - ORDERS as i64, "option {option}");
    }
    assert_eq!(money(&app).await, before);
    assert_eq!(scalar(&app, "SELECT COUNT(*) FROM order_items").await, 4 * ORDERS as i64);
}

#[tokio::test]
async fn every_option_error_answers_its_code_with_the_envelope() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let (shirt, shirt_options) = app.create_product_with_options("shirt", 100, &[("S", 5), ("M", 5)]).await;
    let (cap, cap_options) = app.create_product_with_options("cap", 100, &[("one size", 5)]).await;
    let order = |items: Value| json!({ "userId": user, "items": items });
    let cases = [
        (
            order(json!([{ "productId": shirt, "optionId": cap_options[0], "quantity": 1 }])),
            StatusCode::NOT_FOUND,
            "OPTION_NOT_FOUND",
        ),
        (
            order(json!([{ "productId": shirt, "optionId": 999_999, "quantity": 1 }])),
            StatusCode::NOT_FOUND,
            "OPTION_NOT_FOUND",
        ),
        (order(json!([{ "productId": shirt, "quantity": 1 }])), StatusCode::BAD_REQUEST, "INVALID_ORDER"),
        (
            order(json!([{ "productId": shirt, "optionId": shirt_options[0], "quantity": 1 },
                         { "productId": shirt, "optionId": shirt_options[0], "quantity": 2 }])),
            StatusCode::BAD_REQUEST,
            "INVALID_ORDER",
        ),
        (
            order(
                json!([{ "productId": cap, "quantity": 1 }, { "productId": cap, "optionId": cap_options[0], "quantity": 1 }]),
            ),
            StatusCode::BAD_REQUEST,
            "INVALID_ORDER",
        ),
        (
            order(json!([{ "productId": shirt, "optionId": 0, "quantity": 1 }])),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            order(json!([{ "productId": shirt, "optionId": shirt_options[1], "quantity": 6 }])),
            StatusCode::CONFLICT,
            "OUT_OF_STOCK",
        ),
    ];
    for (body, status, expected) in cases {
        let (got, answer) = app.post("/api/v1/orders", body.clone()).await;
        assert_eq!((got, code(&answer)), (status, Some(expected)), "{body}: {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    }

    let admin_cases = [
        (
            format!("/api/v1/admin/products/{shirt}/options"),
            json!({ "name": "S", "stock": 1 }),
            StatusCode::CONFLICT,
            "OPTION_NAME_TAKEN",
        ),
        (
            format!("/api/v1/admin/products/{shirt}/options"),
            json!({ "name": " ", "stock": 1 }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            format!("/api/v1/admin/products/{shirt}/options"),
            json!({ "name": "L", "stock": -1 }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            format!("/api/v1/admin/products/{shirt}/options"),
            json!({ "name": "L", "price": -1, "stock": 1 }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "/api/v1/admin/products/999999/options".to_owned(),
            json!({ "name": "L", "stock": 1 }),
            StatusCode::NOT_FOUND,
            "PRODUCT_NOT_FOUND",
        ),
        (
            format!("/api/v1/admin/products/{shirt}/options/{}/restock", shirt_options[0]),
            json!({ "quantity": 0 }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            format!("/api/v1/admin/products/{shirt}/options/{}/restock", shirt_options[0]),
            json!({ "quantity": 1_000_001 }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            format!("/api/v1/admin/products/{shirt}/options/{}/restock", cap_options[0]),
            json!({ "quantity": 1 }),
            StatusCode::NOT_FOUND,
            "OPTION_NOT_FOUND",
        ),
        (
            format!("/api/v1/admin/products/999999/options/{}/restock", shirt_options[0]),
            json!({ "quantity": 1 }),
            StatusCode::NOT_FOUND,
            "PRODUCT_NOT_FOUND",
        ),
        (
            "/api/v1/admin/products".to_owned(),
            json!({ "name": "x", "price": 1, "stock": 1, "options": [{ "name": "a", "stock": 1 }] }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "/api/v1/admin/products".to_owned(),
            json!({ "name": "x", "price": 1 }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "/api/v1/admin/products".to_owned(),
            json!({ "name": "x", "price": 1, "options": [] }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "/api/v1/admin/products".to_owned(),
            json!({ "name": "x", "price": 1, "options": [{ "name": "a", "stock": 1 }, { "name": "a ", "stock": 1 }] }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "/api/v1/admin/products".to_owned(),
            json!({ "name": "x", "price": 1, "options": (0..101).map(|n| json!({ "name": format!("o{n}"), "stock": 1 })).collect::<Vec<_>>() }),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
    ];
    for (path, body, status, expected) in admin_cases {
        let (got, answer) = app.admin_post(&path, body.clone()).await;
        assert_eq!((got, code(&answer)), (status, Some(expected)), "{path} {body}: {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    }

    // Names compare byte for byte: `s` is not `S`. A restock past the largest stock is refused, nothing changes.
    let (status, body) =
        app.admin_post(&format!("/api/v1/admin/products/{shirt}/options"), json!({ "name": "s", "stock": 1 })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let big = app.create_product_with_options("big", 1, &[("all", 2_147_483_000)]).await;
    let (status, body) = restock(&app, big.0, big.1[0], 1_000).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")), "{body}");
    assert_eq!(option_row(&app, big.1[0]).await.0, 2_147_483_000);
    // A product has at most 100 options.
    let (full, _) = app
        .create_product_with_options(
            "full",
            1,
            &(0..100)
                .map(|n| (format!("o{n}"), 1))
                .collect::<Vec<_>>()
                .iter()
                .map(|(n, s)| (n.as_str(), *s))
                .collect::<Vec<_>>(),
        )
        .await;
    let (status, body) = app
        .admin_post(&format!("/api/v1/admin/products/{full}/options"), json!({ "name": "one more", "stock": 1 }))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")), "{body}");
}

#[tokio::test]
async fn products_created_with_a_plain_stock_and_orders_without_option_ids_behave_as_before() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    app.charge(user, 10_000).await;
    let socks = app.create_product("socks", 1_000, 3).await;
    let body = detail(&app, socks).await;
    let options = body["options"].as_array().unwrap();
    assert_eq!(options.len(), 1);
    assert_eq!(
        (options[0]["name"].as_str(), options[0]["price"].as_i64(), options[0]["stock"].as_i64()),
        (Some("default"), Some(1_000), Some(3))
    );

    let (status, order) = app
        .post(
            "/api/v1/orders",
            json!({ "userId": user, "pay": true, "items": [{ "productId": socks, "quantity": 3 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["items"][0]["optionId"], options[0]["id"]);
    assert_eq!(
        (order["items"][0]["optionName"].as_str(), order["finalAmount"].as_i64()),
        (Some("default"), Some(3_000))
    );
    let body = detail(&app, socks).await;
    assert_eq!((body["stock"].as_i64(), body["status"].as_str()), (Some(0), Some("SOLD_OUT")));
    let (status, body) =
        app.post("/api/v1/orders", json!({ "userId": user, "items": [{ "productId": socks, "quantity": 1 }] })).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, Some("OUT_OF_STOCK")), "{body}");
}

#[tokio::test]
async fn the_event_carries_each_lines_option_and_the_ranking_counts_every_option_for_its_product() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    app.charge(user, 100_000).await;
    let (shirt, options) = app.create_product_with_options("shirt", 100, &[("S", 10), ("M", 10)]).await;
    let order = json!({ "userId": user, "pay": true, "items": [
        { "productId": shirt, "optionId": options[1], "quantity": 2 }, { "productId": shirt, "optionId": options[0], "quantity": 3 } ] });
    let (status, body) = app.post("/api/v1/orders", order).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let payload: String = sqlx::query_scalar("SELECT payload FROM outbox").fetch_one(app.db()).await.unwrap();
    let event: Value = serde_json::from_str(&payload).unwrap();
    let lines: Vec<_> = event["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["optionId"].as_i64().unwrap(),
                i["optionName"].as_str().unwrap().to_owned(),
                i["quantity"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines, [(options[0], "S".to_owned(), 3), (options[1], "M".to_owned(), 2)]);

    // Once the relay counted the order, the ranking shows the product's 5 units.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, top) = app.admin_post("/api/v1/admin/ranking/refresh", json!({})).await;
        if top["products"][0]["totalSales"] == 5 {
            assert_eq!(top["products"][0]["productId"], shirt);
            break;
        }
        assert!(Instant::now() < deadline, "the relay never counted the order: {top}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_and_a_restock_show_at_once_on_the_committing_instance_and_on_another_after_its_next_poll() {
    let app = TestApp::spawn().await;
    let other = TestApp::spawn_with(app.config.clone()).await;
    let user = app.create_user("kim").await;
    app.charge(user, 100_000).await;
    let (shirt, options) = app.create_product_with_options("shirt", 100, &[("S", 10), ("M", 10)]).await;
    // Both instances hold copies of the detail and the listing.
    for instance in [&app, &other] {
        assert_eq!(detail(instance, shirt).await["stock"], 20);
        assert_eq!(instance.get("/api/v1/products").await.1["products"][0]["stock"], 20);
    }

    let order = json!({ "userId": user, "pay": true, "items": [{ "productId": shirt, "optionId": options[0], "quantity": 10 }] });
    let (status, body) = app.post("/api/v1/orders", order).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let body = detail(&app, shirt).await;
    assert_eq!((body["stock"].as_i64(), body["options"][0]["status"].as_str()), (Some(10), Some("SOLD_OUT")));
    assert_eq!(app.get("/api/v1/products").await.1["products"][0]["stock"], 10);
    // The other instance: its poller (every 50 ms) drops its copies; a poll made now applies the change for sure.
    let started = Instant::now();
    while detail(&other, shirt).await["stock"] != 10 {
        assert!(started.elapsed() < Duration::from_secs(2), "the other instance kept its copy");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    other.state.products.poll().await.unwrap();
    assert_eq!(other.get("/api/v1/products").await.1["products"][0]["stock"], 10);

    let (status, body) = restock(&other, shirt, options[0], 7).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = detail(&other, shirt).await;
    assert_eq!((body["stock"].as_i64(), body["options"][0]["status"].as_str()), (Some(17), Some("ON_SALE")));
    let started = Instant::now();
    while detail(&app, shirt).await["stock"] != 17 {
        assert!(started.elapsed() < Duration::from_secs(2), "the first instance kept its copy");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.state.products.poll().await.unwrap();
    assert_eq!(app.get("/api/v1/products").await.1["products"][0]["status"], "ON_SALE");
}
