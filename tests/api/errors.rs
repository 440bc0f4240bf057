//! Every malformed request gets its 4xx and the JSON envelope, and changes nothing.

use reqwest::{Method, StatusCode};

use crate::support::{ADMIN_TOKEN, TestApp};

/// One malformed request and what it must get.
struct Case {
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Option<String>,
    admin: bool,
    status: StatusCode,
    code: &'static str,
}

fn case(method: Method, path: &'static str, body: Option<&str>, status: StatusCode, code: &'static str) -> Case {
    Case {
        method,
        path,
        content_type: body.map(|_| "application/json"),
        body: body.map(str::to_owned),
        admin: true,
        status,
        code,
    }
}

fn table() -> Vec<Case> {
    use StatusCode as S;
    let users = "/api/v1/admin/users";
    let products = "/api/v1/admin/products";
    let mut cases = vec![
        case(Method::GET, "/nope", None, S::NOT_FOUND, "NOT_FOUND"),
        case(Method::GET, "/api/v1/nope/1", None, S::NOT_FOUND, "NOT_FOUND"),
        case(Method::DELETE, "/health/live", None, S::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
        case(Method::GET, users, None, S::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
        case(Method::POST, users, Some("{"), S::BAD_REQUEST, "INVALID_REQUEST"),
        case(Method::POST, users, Some("not json"), S::BAD_REQUEST, "INVALID_REQUEST"),
        case(Method::POST, users, Some("[]"), S::BAD_REQUEST, "INVALID_REQUEST"),
        case(Method::POST, users, Some("{}"), S::BAD_REQUEST, "INVALID_REQUEST"),
        case(Method::POST, users, Some(r#"{"name": 5}"#), S::BAD_REQUEST, "INVALID_REQUEST"),
        case(Method::POST, users, Some(r#"{"name": "   "}"#), S::BAD_REQUEST, "INVALID_REQUEST"),
        case(
            Method::POST,
            products,
            Some(r#"{"name": "a", "price": -1, "stock": 1}"#),
            S::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        case(
            Method::POST,
            products,
            Some(r#"{"name": "a", "price": 1, "stock": -1}"#),
            S::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        case(
            Method::POST,
            products,
            Some(r#"{"name": "a", "price": 1.5, "stock": 1}"#),
            S::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        case(
            Method::POST,
            products,
            Some(r#"{"name": "a", "price": "10", "stock": 1}"#),
            S::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        case(
            Method::POST,
            products,
            Some(r#"{"name": "", "price": 1, "stock": 1}"#),
            S::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
    ];
    cases.push(Case {
        admin: false,
        ..case(Method::POST, users, Some(r#"{"name": "kim"}"#), S::UNAUTHORIZED, "UNAUTHORIZED")
    });
    cases.push(Case {
        content_type: Some("text/plain"),
        ..case(Method::POST, users, Some(r#"{"name": "kim"}"#), S::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
    });
    cases.push(Case {
        content_type: None,
        ..case(Method::POST, users, Some(r#"{"name": "kim"}"#), S::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
    });
    let huge = format!(r#"{{"name": "{}"}}"#, "x".repeat(70 * 1024));
    cases.push(Case {
        body: Some(huge),
        ..case(Method::POST, users, Some(""), S::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
    });
    cases
}

#[tokio::test]
async fn malformed_requests_get_their_4xx_and_the_envelope_and_change_nothing() {
    let app = TestApp::spawn().await;
    for case in table() {
        let mut request = app.http.request(case.method.clone(), app.url(case.path));
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(body) = case.body.clone() {
            request = request.body(body);
        }
        if case.admin {
            request = request.bearer_auth(ADMIN_TOKEN);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let what = format!("{} {} {:?}", case.method, case.path, case.body.as_deref().map(|b| &b[..b.len().min(60)]));
        assert_eq!(status, case.status, "{what}: {text}");
        let body: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
        assert_eq!(body["code"], case.code, "{what}: {text}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: no message: {text}");
    }
    for table in ["users", "products"] {
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(app.db())
            .await
            .unwrap();
        assert_eq!(rows, 0, "a rejected request wrote to {table}");
    }
}

#[tokio::test]
async fn wrong_admin_token_gets_401() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .post(app.url("/api/v1/admin/users"))
        .bearer_auth("wrong")
        .json(&serde_json::json!({ "name": "kim" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "UNAUTHORIZED");
}

#[tokio::test]
async fn a_body_over_64_kib_gets_413_on_every_route_even_one_that_reads_no_body() {
    let app = TestApp::spawn().await;
    let huge = vec![b'x'; 1024 * 1024];
    let declared = app
        .http
        .post(app.url("/api/v1/admin/ranking/refresh"))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .body(huge.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = declared.json().await.unwrap();
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE", "{body}");

    // Chunked: no Content-Length, the limit is found by reading.
    let frames: Vec<Result<http_body::Frame<bytes::Bytes>, std::io::Error>> =
        huge.chunks(8 * 1024).map(|chunk| Ok(http_body::Frame::data(bytes::Bytes::copy_from_slice(chunk)))).collect();
    let chunks = http_body_util::StreamBody::new(futures::stream::iter(frames));
    let chunked = app
        .http
        .post(app.url("/api/v1/admin/ranking/refresh"))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .body(reqwest::Body::wrap(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let small = app.http.post(app.url("/api/v1/admin/ranking/refresh")).bearer_auth(crate::support::ADMIN_TOKEN);
    assert_eq!(small.body("x").send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn serve_refuses_the_development_token_on_an_address_other_than_loopback() {
    let mut config = crate::support::serve_config(crate::support::isolated_store().await);
    config.admin_token = Some(stampede::config::DEV_ADMIN_TOKEN.to_owned());
    config.bind_addr = "0.0.0.0:0".parse().unwrap();
    let refused = stampede::app::App::build(config.clone()).await.err().expect("refused");
    assert!(refused.to_string().contains("ADMIN_TOKEN"), "{refused}");
    config.bind_addr = "127.0.0.1:0".parse().unwrap();
    assert!(stampede::app::App::build(config).await.is_ok(), "loopback with the dev token is fine");
}
