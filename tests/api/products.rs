//! Products: the cached listing with its filters and sorts, the detail and its view counts, units sold, and
//! malformed inputs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stampede::product::db;
use stampede::product::views::{self, Flushed};

use crate::support::TestApp;

async fn view_count(app: &TestApp, id: i64) -> i64 {
    sqlx::query_scalar("SELECT view_count FROM products WHERE id = ?").bind(id).fetch_one(app.db()).await.unwrap()
}

/// Sends this instance's counted views to Redis, then flushes until Redis holds no more (the background
/// flusher may be flushing at the same time).
async fn flush_all(app: &TestApp) {
    app.state.products.send_views().await.unwrap();
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
    app.state.products.send_views().await.unwrap();
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
    let too_long = format!("/api/v1/products?q={}", encode(&"가".repeat(101)));
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
        "/api/v1/products?status=FOO",
        "/api/v1/products?status=on_sale",
        "/api/v1/products?status=",
        "/api/v1/products?sort=name",
        "/api/v1/products?sort=PRICE",
        "/api/v1/products?sort=",
        "/api/v1/products?minPrice=-1",
        "/api/v1/products?maxPrice=-1",
        "/api/v1/products?minPrice=2&maxPrice=1",
        "/api/v1/products?minPrice=abc",
        "/api/v1/products?maxPrice=1.5",
        "/api/v1/products?minPrice=",
        "/api/v1/products?minPrice=9223372036854775808",
        "/api/v1/products?maxPrice=99999999999999999999",
        "/api/v1/products?q=",
        &too_long,
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
    app.state.products.send_views().await.unwrap();
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

/// `text` percent-encoded for a query string: every byte but ASCII letters and digits.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// The ids a listing page shows, and its `totalElements`.
fn listed(body: &Value) -> (Vec<i64>, i64) {
    let ids = body["products"].as_array().unwrap_or_else(|| panic!("no products: {body}"));
    (ids.iter().map(|p| p["id"].as_i64().unwrap()).collect(), body["totalElements"].as_i64().unwrap())
}

async fn list(app: &TestApp, query: &str) -> Value {
    let (status, body) = app.get(&format!("/api/v1/products?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body
}

/// A product as the test made it: what the filters and sorts look at.
#[derive(Debug, Clone)]
struct Made {
    id: i64,
    name: String,
    price: i64,
    stock: i64,
    sold: i64,
}

/// One combination of list parameters, and the selection the contract gives for it over `made`.
#[derive(Debug, Clone, Default)]
struct Ask {
    status: Option<&'static str>,
    q: Option<&'static str>,
    min_price: Option<i64>,
    max_price: Option<i64>,
    sort: Option<&'static str>,
}

impl Ask {
    fn query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(status) = self.status {
            parts.push(format!("status={status}"));
        }
        if let Some(q) = self.q {
            parts.push(format!("q={}", encode(q)));
        }
        if let Some(min) = self.min_price {
            parts.push(format!("minPrice={min}"));
        }
        if let Some(max) = self.max_price {
            parts.push(format!("maxPrice={max}"));
        }
        if let Some(sort) = self.sort {
            parts.push(format!("sort={sort}"));
        }
        parts.join("&")
    }

    /// The ids that match, in order: computed here from the contract's words, not from the service's code.
    fn expected(&self, made: &[Made]) -> Vec<i64> {
        let lower = |text: &str| text.to_lowercase();
        let mut matching: Vec<&Made> = made
            .iter()
            .filter(|p| self.status.is_none_or(|s| s == if p.stock == 0 { "SOLD_OUT" } else { "ON_SALE" }))
            .filter(|p| self.q.is_none_or(|q| lower(&p.name).contains(&lower(q))))
            .filter(|p| {
                self.min_price.is_none_or(|min| p.price >= min) && self.max_price.is_none_or(|max| p.price <= max)
            })
            .collect();
        matching.sort_by_key(|p| p.id);
        match self.sort.unwrap_or("id") {
            "id" => {}
            "price" => matching.sort_by_key(|p| p.price),
            "-price" => matching.sort_by_key(|p| std::cmp::Reverse(p.price)),
            "sold" => matching.sort_by_key(|p| p.sold),
            "-sold" => matching.sort_by_key(|p| std::cmp::Reverse(p.sold)),
            other => panic!("no sort {other}"),
        }
        matching.iter().map(|p| p.id).collect()
    }
}

/// Makes `(name, price, stock)` products, then sells `(index, units)` of them in paid orders of one buyer.
async fn make(app: &TestApp, products: &[(&str, i64, i64)], sales: &[(usize, i64)]) -> Vec<Made> {
    let mut made = Vec::new();
    for &(name, price, stock) in products {
        let id = app.create_product(name, price, stock).await;
        made.push(Made { id, name: name.to_owned(), price, stock, sold: 0 });
    }
    let buyer = app.create_user("buyer").await;
    app.charge(buyer, 10_000_000).await;
    for &(index, units) in sales {
        let order =
            json!({ "userId": buyer, "pay": true, "items": [{ "productId": made[index].id, "quantity": units }] });
        let (status, body) = app.post("/api/v1/orders", order).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        made[index].stock -= units;
        made[index].sold += units;
    }
    made
}

/// Names in Korean and English, cases mixed, characters that are patterns in SQL; prices and sales with ties;
/// some sold out from the start, one sold out by its sale.
const CATALOGUE: &[(&str, i64, i64)] = &[
    ("반팔 티셔츠", 19_000, 5),
    ("긴팔 티셔츠", 29_000, 0),
    ("T-Shirt Basic", 19_000, 3),
    ("t-shirt PREMIUM", 45_000, 4),
    ("청바지", 59_000, 1),
    ("Shirt 100%", 30_000, 0),
    ("under_score", 30_000, 4),
    ("it's \"quoted\"", 10_000, 2),
    (r"back\slash", 0, 1),
    ("티셔츠 세트 (3 PACK)", 29_000, 6),
    ("100 cotton tee", 30_000, 2),
    ("underscore", 19_000, 3),
];
const SALES: &[(usize, i64)] = &[(0, 2), (2, 2), (3, 1), (4, 1), (9, 3), (11, 1)];

#[tokio::test]
async fn every_filter_and_sort_alone_and_combined_lists_the_selection_computed_here_with_its_exact_total() {
    let app = TestApp::spawn().await;
    let made = make(&app, CATALOGUE, SALES).await;
    let statuses = [None, Some("ON_SALE"), Some("SOLD_OUT")];
    let searches =
        [None, Some("티셔츠"), Some("SHIRT"), Some("%"), Some("_"), Some("'"), Some("\\"), Some("\""), Some(" ")];
    let ranges =
        [(None, None), (Some(19_000), Some(30_000)), (None, Some(29_000)), (Some(30_000), None), (Some(0), Some(0))];
    let sorts = [None, Some("id"), Some("price"), Some("-price"), Some("sold"), Some("-sold")];
    let mut asked = 0;
    for status in statuses {
        for q in searches {
            for (min_price, max_price) in ranges {
                for sort in sorts {
                    let ask = Ask { status, q, min_price, max_price, sort };
                    let body = list(&app, &format!("{}&size=100", ask.query())).await;
                    let expected = ask.expected(&made);
                    assert_eq!(listed(&body), (expected.clone(), expected.len() as i64), "{ask:?}");
                    asked += 1;
                }
            }
        }
    }
    assert_eq!(asked, 3 * 9 * 5 * 6);

    // Every product shows what the test made of it, soldCount included.
    let body = list(&app, "size=100").await;
    for (shown, made) in body["products"].as_array().unwrap().iter().zip(&made) {
        assert_eq!(
            (shown["id"].as_i64(), shown["stock"].as_i64(), shown["soldCount"].as_i64()),
            (Some(made.id), Some(made.stock), Some(made.sold)),
            "{shown}"
        );
    }
    let (_, detail) = app.get(&format!("/api/v1/products/{}", made[9].id)).await;
    assert_eq!((detail["soldCount"].as_i64(), detail["stock"].as_i64()), (Some(3), Some(3)), "{detail}");
}

#[tokio::test]
async fn a_search_is_a_literal_substring_of_the_name_ignoring_case() {
    let app = TestApp::spawn().await;
    let made = make(&app, CATALOGUE, &[]).await;
    let id = |index: usize| made[index].id;
    for (q, expected) in [
        ("%", vec![id(5)]),
        ("_", vec![id(6)]),
        ("under_score", vec![id(6)]),
        ("'", vec![id(7)]),
        ("\"quoted\"", vec![id(7)]),
        ("\\", vec![id(8)]),
        ("t-SHIRT", vec![id(2), id(3)]),
        ("티셔츠", vec![id(0), id(1), id(9)]),
        ("(3 pack)", vec![id(9)]),
        ("100%", vec![id(5)]),
        ("%%", vec![]),
        ("*", vec![]),
    ] {
        let body = list(&app, &format!("q={}&size=100", encode(q))).await;
        assert_eq!(listed(&body), (expected.clone(), expected.len() as i64), "q={q:?}");
    }
    let hundred = "셔".repeat(100);
    assert_eq!(listed(&list(&app, &format!("q={}", encode(&hundred))).await), (vec![], 0), "100 characters are fine");
}

#[tokio::test]
async fn paging_a_filtered_sorted_list_returns_every_match_exactly_once() {
    let app = TestApp::spawn().await;
    let names = ["셔츠", "바지", "Shirt"];
    let products: Vec<(String, i64, i64)> =
        (0..45).map(|n| (format!("{} {n}", names[n % 3]), 1_000 * (n as i64 % 4), (n as i64) % 5)).collect();
    let borrowed: Vec<(&str, i64, i64)> = products.iter().map(|(n, p, s)| (n.as_str(), *p, *s)).collect();
    let made = make(&app, &borrowed, &[(1, 1), (4, 2), (7, 1), (13, 3), (22, 1), (28, 2)]).await;
    for ask in [
        Ask { q: Some("셔츠"), sort: Some("-price"), ..Ask::default() },
        Ask { status: Some("ON_SALE"), max_price: Some(2_000), sort: Some("-sold"), ..Ask::default() },
        Ask { min_price: Some(1_000), sort: Some("price"), ..Ask::default() },
        Ask { status: Some("SOLD_OUT"), ..Ask::default() },
    ] {
        let expected = ask.expected(&made);
        assert!(expected.len() > 7, "{ask:?} selects too few to page");
        for size in [1, 4, 7] {
            let mut seen = Vec::new();
            for page in 0.. {
                let body = list(&app, &format!("{}&page={page}&size={size}", ask.query())).await;
                let (ids, total) = listed(&body);
                assert_eq!(total, expected.len() as i64, "{ask:?} page {page}");
                if ids.is_empty() {
                    break;
                }
                assert!(ids.len() <= size, "{ask:?}: {ids:?}");
                seen.extend(ids);
            }
            assert_eq!(seen, expected, "{ask:?} in pages of {size}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sold_count_after_500_concurrent_payments_over_three_options_equals_the_units_paid() {
    const PAYMENTS: usize = 500;
    let app = Arc::new(TestApp::spawn().await);
    // Option S runs out part way, so some payments fail and must not count.
    let (product, options) =
        app.create_product_with_options("셔츠", 1_000, &[("S", 300), ("M", 5_000), ("L", 5_000)]).await;
    let mut buyers = Vec::new();
    for n in 0..50 {
        let user = app.create_user(&format!("buyer{n}")).await;
        app.charge(user, 1_000_000).await;
        buyers.push(user);
    }
    let orders = join_all((0..PAYMENTS).map(|n| {
        let app = app.clone();
        let (user, option, quantity) = (buyers[n % buyers.len()], options[n % 3], 1 + (n as i64 % 4));
        async move {
            let order = json!({ "userId": user, "items": [{ "productId": product, "optionId": option, "quantity": quantity }] });
            let (status, body) = app.post("/api/v1/orders", order).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            (user, body["orderId"].as_i64().unwrap(), quantity)
        }
    }))
    .await;
    // Both instances' listings hold the product before the payments.
    assert_eq!(list(&app, "q=셔츠").await["products"][0]["soldCount"], 0);

    let results = join_all(orders.iter().map(|&(user, order, quantity)| {
        let app = app.clone();
        tokio::spawn(async move {
            let (status, body) = app.post(&format!("/api/v1/orders/{order}/pay"), json!({ "userId": user })).await;
            (status, body, quantity)
        })
    }))
    .await;
    let results: Vec<(StatusCode, Value, i64)> = results.into_iter().map(Result::unwrap).collect();
    let unexpected: Vec<_> =
        results.iter().filter(|(s, b, _)| *s != StatusCode::OK && b["code"] != "OUT_OF_STOCK").collect();
    assert!(unexpected.is_empty(), "{} unexpected answers, first: {:?}", unexpected.len(), unexpected.first());
    let paid: i64 = results.iter().filter(|(s, _, _)| *s == StatusCode::OK).map(|(_, _, q)| q).sum();
    let refused = results.iter().filter(|(s, _, _)| *s != StatusCode::OK).count();
    assert!(refused > 0, "option S should have run out");
    let in_mysql: i64 = sqlx::query_scalar(
        "SELECT CAST(SUM(i.quantity) AS SIGNED) FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.status = 'PAID'",
    )
    .fetch_one(app.db())
    .await
    .unwrap();
    assert_eq!(in_mysql, paid);

    // At once on this instance, in the detail, the listing and the sort by units sold.
    let (_, detail) = app.get(&format!("/api/v1/products/{product}")).await;
    assert_eq!((detail["soldCount"].as_i64(), detail["stock"].as_i64()), (Some(paid), Some(10_300 - paid)), "{detail}");
    let body = list(&app, "q=셔츠&sort=-sold").await;
    assert_eq!((body["products"][0]["soldCount"].as_i64(), body["totalElements"].as_i64()), (Some(paid), Some(1)));
    assert_eq!(body["products"][0]["options"][0]["stock"], 0, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_and_a_restock_move_a_product_between_the_status_lists_at_once_and_on_another_instance_soon_after() {
    let app = TestApp::spawn().await;
    let other = TestApp::spawn_with(app.config.clone()).await;
    let user = app.create_user("kim").await;
    app.charge(user, 100_000).await;
    let last = app.create_product("마지막 한 벌", 10_000, 1).await;
    let kept = app.create_product("넉넉한 재고", 10_000, 100).await;
    let on_sale = "status=ON_SALE&maxPrice=30000&sort=-sold";
    let sold_out = "status=SOLD_OUT&maxPrice=30000&sort=-sold";
    for instance in [&app, &other] {
        // Neither sold yet: ties by lower id.
        assert_eq!(listed(&list(instance, on_sale).await), (vec![last, kept], 2));
        assert_eq!(listed(&list(instance, sold_out).await), (vec![], 0));
    }

    let order = json!({ "userId": user, "pay": true, "items": [{ "productId": last, "quantity": 1 }] });
    let (status, body) = app.post("/api/v1/orders", order).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(listed(&list(&app, on_sale).await), (vec![kept], 1));
    let body = list(&app, sold_out).await;
    assert_eq!(listed(&body), (vec![last], 1));
    assert_eq!(
        (body["products"][0]["soldCount"].as_i64(), body["products"][0]["status"].as_str()),
        (Some(1), Some("SOLD_OUT"))
    );
    let started = Instant::now();
    while listed(&list(&other, sold_out).await).0 != [last] {
        assert!(started.elapsed() < Duration::from_secs(2), "the other instance kept its listing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(listed(&list(&other, on_sale).await), (vec![kept], 1));

    let option = other.option_of(last).await;
    let (status, body) = other
        .admin_post(&format!("/api/v1/admin/products/{last}/options/{option}/restock"), json!({ "quantity": 3 }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Sold once, so it now sorts before the product never sold.
    assert_eq!(listed(&list(&other, on_sale).await), (vec![last, kept], 2));
    assert_eq!(listed(&list(&other, sold_out).await), (vec![], 0));
    let started = Instant::now();
    while listed(&list(&app, sold_out).await).1 != 0 {
        assert!(started.elapsed() < Duration::from_secs(2), "the first instance kept its listing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(listed(&list(&app, on_sale).await), (vec![last, kept], 2));
}

#[tokio::test]
async fn openapi_documents_every_list_parameter_with_its_type_enum_and_bounds() {
    let app = TestApp::spawn().await;
    let (_, spec) = app.get("/openapi.json").await;
    let parameters = spec["paths"]["/api/v1/products"]["get"]["parameters"].as_array().unwrap().clone();
    let schema = |name: &str| -> Value {
        let parameter = parameters.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!((parameter["in"].as_str(), parameter["required"].as_bool()), (Some("query"), Some(false)));
        parameter["schema"].clone()
    };
    let fields = |name: &str, keys: &[&str]| -> Vec<Value> {
        let schema = schema(name);
        keys.iter().map(|key| schema[*key].clone()).collect()
    };
    let integer = json!(["integer", "null"]);
    assert_eq!(fields("page", &["minimum"]), [json!(0)]);
    assert_eq!(fields("size", &["minimum", "maximum"]), [json!(1), json!(100)]);
    assert_eq!(fields("q", &["minLength", "maxLength"]), [json!(1), json!(100)]);
    for price in ["minPrice", "maxPrice"] {
        let schema = schema(price);
        assert!(schema["type"] == "integer" || schema["type"] == integer, "{price}: {schema}");
        assert_eq!((&schema["minimum"], &schema["format"]), (&json!(0), &json!("int64")), "{price}: {schema}");
    }
    let values = |name: &str| -> Vec<String> {
        let schema = schema(name);
        let found = schema["enum"]
            .as_array()
            .or_else(|| schema["oneOf"].as_array().and_then(|one| one.iter().find_map(|s| s["enum"].as_array())));
        let found = found.unwrap_or_else(|| panic!("{name} has no enum: {schema}"));
        found.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
    };
    assert_eq!(values("status"), ["ON_SALE", "SOLD_OUT"]);
    assert_eq!(values("sort"), ["id", "price", "-price", "sold", "-sold"]);
    let page = &spec["components"]["schemas"]["ProductPage"]["properties"];
    assert!(page["totalElements"].is_object(), "{page}");
    assert!(spec["components"]["schemas"]["Product"]["properties"]["soldCount"].is_object());
    assert!(spec["components"]["schemas"]["ProductDetail"]["properties"]["soldCount"].is_object());
}
