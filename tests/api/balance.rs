//! Balance: reading, charging within the limits, idempotent retries, history, and charges racing for real.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::TestApp;

fn charge_path(user: i64) -> String {
    format!("/api/v1/users/{user}/balance/charge")
}

async fn balance_of(app: &TestApp, user: i64) -> i64 {
    let (status, body) = app.get(&format!("/api/v1/users/{user}/balance")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["balance"].as_i64().unwrap()
}

async fn history_rows(app: &TestApp, user: i64) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM balance_history WHERE user_id = ?")
        .bind(user)
        .fetch_one(app.db())
        .await
        .unwrap()
}

/// A charge with an `Idempotency-Key` header; returns status and body.
async fn charge_with_key(app: &TestApp, user: i64, amount: i64, key: &str) -> (StatusCode, Value) {
    let response = app
        .http
        .post(app.url(&charge_path(user)))
        .bearer_auth(crate::support::token_for(user))
        .header("Idempotency-Key", key)
        .json(&json!({ "amount": amount }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_user_who_never_charged_has_balance_zero_and_an_empty_history() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let (status, body) = app.get(&format!("/api/v1/users/{user}/balance")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "userId": user, "balance": 0 }));
    let (status, body) = app.get(&format!("/api/v1/users/{user}/balance/history")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "entries": [] }));
}

#[tokio::test]
async fn charges_add_up_and_the_history_lists_them_newest_first() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let (status, first) = app.post(&charge_path(user), json!({ "amount": 1000 })).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        (first["userId"].as_i64(), first["balance"].as_i64(), first["chargedAmount"].as_i64()),
        (Some(user), Some(1000), Some(1000))
    );
    assert!(first["transactionId"].as_i64().unwrap() > 0);
    assert!(chrono::DateTime::parse_from_rfc3339(first["chargedAt"].as_str().unwrap()).is_ok(), "{first}");
    let (_, second) = app.post(&charge_path(user), json!({ "amount": 250 })).await;
    assert_eq!(second["balance"], 1250);
    assert_eq!(balance_of(&app, user).await, 1250);

    let (status, body) = app.get(&format!("/api/v1/users/{user}/balance/history?limit=20")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entries = body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["transactionId"], second["transactionId"]);
    assert_eq!(
        (entries[0]["type"].as_str(), entries[0]["amount"].as_i64(), entries[0]["balanceAfter"].as_i64()),
        (Some("CHARGE"), Some(250), Some(1250))
    );
    assert_eq!(entries[0]["createdAt"], second["chargedAt"]);
    assert_eq!((entries[1]["amount"].as_i64(), entries[1]["balanceAfter"].as_i64()), (Some(1000), Some(1000)));
    let (_, body) = app.get(&format!("/api/v1/users/{user}/balance/history?limit=1")).await;
    assert_eq!(body["entries"].as_array().unwrap().len(), 1);
    assert_eq!(body["entries"][0]["transactionId"], second["transactionId"]);
}

#[tokio::test]
async fn charges_outside_the_limits_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    for amount in [0, -5, 10_000_001] {
        let (status, body) = app.post(&charge_path(user), json!({ "amount": amount })).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_AMOUNT")),
            "{amount}: {body}"
        );
    }
    for _ in 0..10 {
        app.charge(user, 10_000_000).await;
    }
    let (status, body) = app.post(&charge_path(user), json!({ "amount": 1 })).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("BALANCE_LIMIT_EXCEEDED")),
        "{body}"
    );
    assert_eq!(balance_of(&app, user).await, 100_000_000);
    assert_eq!(history_rows(&app, user).await, 10);

    let (status, body) = app.post(&charge_path(999_999), json!({ "amount": 1 })).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("USER_NOT_FOUND")), "{body}");
    // With a key too; the key's row goes with the rolled-back transaction.
    let (status, body) = charge_with_key(&app, 999_999, 1, "unknown-user").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("USER_NOT_FOUND")), "{body}");
    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys WHERE user_id = 999999")
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(keys, 0);
    for path in ["/api/v1/users/999999/balance", "/api/v1/users/999999/balance/history"] {
        let (status, body) = app.get(path).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("USER_NOT_FOUND")), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_concurrent_charges_of_100_add_exactly_30000() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let path = charge_path(user);
    let results = join_all((0..300).map(|_| app.post(&path, json!({ "amount": 100 })))).await;
    let ok = results.iter().filter(|(status, _)| *status == StatusCode::OK).count();
    assert_eq!(ok, 300, "{:?}", results.iter().find(|(s, _)| *s != StatusCode::OK));
    assert_eq!(balance_of(&app, user).await, 30_000);
    assert_eq!(history_rows(&app, user).await, 300);
    // Every charge saw a distinct balance after it: no two read the same old value.
    let mut afters: Vec<i64> = results.iter().map(|(_, body)| body["balance"].as_i64().unwrap()).collect();
    afters.sort_unstable();
    assert_eq!(afters, (1..=300).map(|n| n * 100).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_charges_of_three_million_from_zero_exactly_thirty_three_succeed() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let path = charge_path(user);
    let results = join_all((0..50).map(|_| app.post(&path, json!({ "amount": 3_000_000 })))).await;
    let ok = results.iter().filter(|(status, _)| *status == StatusCode::OK).count();
    let over = results
        .iter()
        .filter(|(status, body)| {
            *status == StatusCode::UNPROCESSABLE_ENTITY && body["code"] == "BALANCE_LIMIT_EXCEEDED"
        })
        .count();
    assert_eq!((ok, over), (33, 17), "{results:?}");
    assert_eq!(balance_of(&app, user).await, 99_000_000);
    assert_eq!(history_rows(&app, user).await, 33);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_retries_with_one_key_charge_once_and_answer_identically() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let results = join_all((0..20).map(|_| charge_with_key(&app, user, 700, "retry-me"))).await;
    for (status, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body, &results[0].1);
    }
    assert_eq!(results[0].1["balance"], 700);
    assert_eq!(balance_of(&app, user).await, 700);
    assert_eq!(history_rows(&app, user).await, 1);
    // A later retry still gets the first response; a new key charges again.
    assert_eq!(charge_with_key(&app, user, 700, "retry-me").await, results[0]);
    let (status, body) = charge_with_key(&app, user, 700, "another").await;
    assert_eq!((status, body["balance"].as_i64()), (StatusCode::OK, Some(1400)));
}

#[tokio::test]
async fn the_same_key_with_another_amount_is_refused_with_409() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let other = app.create_user("lee").await;
    assert_eq!(charge_with_key(&app, user, 500, "k1").await.0, StatusCode::OK);
    let (status, body) = charge_with_key(&app, user, 600, "k1").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("IDEMPOTENCY_KEY_REUSED")), "{body}");
    assert_eq!(balance_of(&app, user).await, 500);
    // Keys are per user: another user's same key is a new charge.
    let (status, body) = charge_with_key(&app, other, 600, "k1").await;
    assert_eq!((status, body["balance"].as_i64()), (StatusCode::OK, Some(600)), "{body}");
}

#[tokio::test]
async fn balance_endpoints_reject_malformed_input_with_the_envelope() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let charge = charge_path(user);
    let cases: Vec<(Method, String, Option<&str>, StatusCode, &str)> = vec![
        (Method::GET, "/api/v1/users/0/balance".into(), None, StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        (Method::GET, "/api/v1/users/-1/balance".into(), None, StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        (Method::GET, "/api/v1/users/abc/balance".into(), None, StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        (
            Method::GET,
            "/api/v1/users/9223372036854775808/balance".into(),
            None,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/api/v1/users/0/balance/charge".into(),
            Some(r#"{"amount": 1}"#),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (Method::POST, charge.clone(), Some("{"), StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        (Method::POST, charge.clone(), Some("{}"), StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        (Method::POST, charge.clone(), Some(r#"{"amount": "100"}"#), StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        (Method::POST, charge.clone(), Some(r#"{"amount": 1.5}"#), StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        (
            Method::POST,
            charge.clone(),
            Some(r#"{"amount": 99999999999999999999}"#),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (Method::GET, charge.clone(), None, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
        (
            Method::GET,
            format!("/api/v1/users/{user}/balance/history?limit=0"),
            None,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::GET,
            format!("/api/v1/users/{user}/balance/history?limit=1001"),
            None,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::GET,
            format!("/api/v1/users/{user}/balance/history?limit=-1"),
            None,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::GET,
            format!("/api/v1/users/{user}/balance/history?limit=x"),
            None,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let mut request = app.http.request(method.clone(), app.url(&path)).bearer_auth(crate::support::token_for(user));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let got = response.status();
        let envelope: Value = response.json().await.unwrap();
        assert_eq!((got, envelope["code"].as_str()), (status, Some(code)), "{method} {path} {body:?}: {envelope}");
        assert!(envelope["message"].is_string(), "{envelope}");
    }
    for key in ["", &"k".repeat(129), "tab\tkey"] {
        let (status, body) = charge_with_key(&app, user, 1, key).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")),
            "{key:?}: {body}"
        );
    }
    assert_eq!(balance_of(&app, user).await, 0);
}

#[tokio::test]
async fn keys_differing_in_case_or_a_trailing_space_are_three_charges_and_are_remembered_past_a_day() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let (status, lower) = charge_with_key(&app, user, 100, "abc").await;
    assert_eq!((status, lower["balance"].as_i64()), (StatusCode::OK, Some(100)), "{lower}");
    let (status, upper) = charge_with_key(&app, user, 100, "ABC").await;
    assert_eq!((status, upper["balance"].as_i64()), (StatusCode::OK, Some(200)), "{upper}");
    // HTTP drops a header value's trailing whitespace before any server sees it (RFC 9110 section 5.5), so
    // `abc ` can only reach the charge through the domain call; there it is a key of its own.
    let balances = &app.state.balances;
    let user_id = stampede::id::UserId::new(user).unwrap();
    let spaced = stampede::balance::IdempotencyKey::parse("abc ").unwrap();
    let charged = balances.charge(user_id, 100, Some(&spaced)).await.unwrap();
    assert_eq!(charged.balance, 300);
    assert_eq!(balance_of(&app, user).await, 300);
    assert_eq!(history_rows(&app, user).await, 3);

    // Each key replays its own first response, also two days later.
    sqlx::query("UPDATE idempotency_keys SET created_at = created_at - INTERVAL 2 DAY")
        .execute(app.db())
        .await
        .unwrap();
    assert_eq!(charge_with_key(&app, user, 100, "abc").await, (StatusCode::OK, lower));
    assert_eq!(charge_with_key(&app, user, 100, "ABC").await, (StatusCode::OK, upper));
    let replayed = balances.charge(user_id, 100, Some(&spaced)).await.unwrap();
    assert_eq!(replayed, charged);
    assert_eq!(balance_of(&app, user).await, 300);
    assert_eq!(history_rows(&app, user).await, 3);
}

#[tokio::test]
async fn a_key_of_128_printable_characters_is_accepted_and_non_ascii_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let longest: String = (0..128u8).map(|i| char::from(b' ' + 1 + i % 94)).collect();
    let (status, body) = charge_with_key(&app, user, 100, &longest).await;
    assert_eq!((status, body["balance"].as_i64()), (StatusCode::OK, Some(100)), "{body}");
    let response = app
        .http
        .post(app.url(&charge_path(user)))
        .bearer_auth(crate::support::token_for(user))
        .header("Idempotency-Key", reqwest::header::HeaderValue::from_bytes("키".as_bytes()).unwrap())
        .json(&json!({ "amount": 100 }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")), "{body}");
    assert_eq!(balance_of(&app, user).await, 100);
}
