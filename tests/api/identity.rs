//! Identity and rate limits (API.md sections "Identity" and "Rate limits"): every bad token a 401, nobody acting
//! for another user, a flash sale with a token per user, a user over its limit, the gateway and none modes, the
//! start-up refusals, key rotation while serving, the token cache's bound, and no token in the log.

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{StreamExt, stream};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use stampede::identity::AuthMode;
use stampede::identity::limits::{Config as LimitsConfig, Rate};

use crate::coupons::{create_coupon, create_users, progress, wait_persisted};
use crate::support::{ADMIN_TOKEN, JWT_SECRET, TestApp, eventually, isolated_store, serve_config, token_for};

/// How long a key removed from `AUTH_JWT_KEYS` may still be accepted (API.md).
const ROTATION_WITHIN: Duration = Duration::from_secs(10);

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A compact JWS of any header and claims, HMAC-SHA256 signed with `secret`.
fn hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), &EncodingKey::from_secret(secret), Algorithm::HS256).unwrap();
    format!("{input}.{signature}")
}

/// An asymmetric key of the JWKS file: its `kid`, private key (PKCS#8) and public JWK.
struct TestKey {
    kid: String,
    algorithm: Algorithm,
    pkcs8: Vec<u8>,
    jwk: Value,
    /// The raw public key, for the algorithm-confusion token.
    public: Vec<u8>,
}

impl TestKey {
    fn ed25519(kid: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap().as_ref().to_vec();
        let public = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap().public_key().as_ref().to_vec();
        let jwk =
            json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(&public), "kid": kid, "alg": "EdDSA", "use": "sig" });
        Self { kid: kid.to_owned(), algorithm: Algorithm::EdDSA, pkcs8, jwk, public }
    }

    fn p256(kid: &str) -> Self {
        let algorithm = &ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(algorithm, &SystemRandom::new()).unwrap().as_ref().to_vec();
        let public = EcdsaKeyPair::from_pkcs8(algorithm, &pkcs8).unwrap().public_key().as_ref().to_vec();
        // Uncompressed point: 0x04, x, y.
        let jwk = json!({ "kty": "EC", "crv": "P-256", "x": b64(&public[1..33]), "y": b64(&public[33..]), "kid": kid });
        Self { kid: kid.to_owned(), algorithm: Algorithm::ES256, pkcs8, jwk, public }
    }

    fn sign(&self, claims: &Value) -> String {
        let key = match self.algorithm {
            Algorithm::EdDSA => EncodingKey::from_ed_der(&self.pkcs8),
            _ => EncodingKey::from_ec_der(&self.pkcs8),
        };
        let header = Header { kid: Some(self.kid.clone()), ..Header::new(self.algorithm) };
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

/// Writes a JWKS file as a deployment would replace it: a new file renamed over the old one.
fn write_jwks(path: &std::path::Path, keys: &[&TestKey]) {
    let document = json!({ "keys": keys.iter().map(|key| key.jwk.clone()).collect::<Vec<_>>() });
    let next = path.with_extension("next");
    std::fs::write(&next, document.to_string()).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// A test app whose identity settings `configure` changes.
async fn app_with(configure: impl FnOnce(&mut stampede::config::ServeConfig)) -> TestApp {
    let mut config = serve_config(isolated_store().await);
    configure(&mut config);
    TestApp::spawn_with(config).await
}

/// One request with exactly these credentials: status, `WWW-Authenticate`, `Retry-After`, body.
struct Answer {
    status: StatusCode,
    challenge: Option<String>,
    retry_after: Option<u64>,
    body: Value,
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request reaches the app");
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let (status, challenge, retry_after) =
        (response.status(), header("www-authenticate"), header("retry-after").map(|v| v.parse().unwrap()));
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    Answer { status, challenge, retry_after, body }
}

fn with_token(app: &TestApp, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
    app.http.request(method, app.url(path)).bearer_auth(token)
}

async fn balance_in_mysql(app: &TestApp, user: i64) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT COALESCE((SELECT amount FROM balances WHERE user_id = ?), 0)")
        .bind(user)
        .fetch_one(app.db())
        .await
        .unwrap()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(app.db()).await.unwrap()
}

#[tokio::test]
async fn every_unusable_token_is_a_401_with_the_bearer_challenge_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    let (ed, es) = (TestKey::ed25519("ed-1"), TestKey::p256("es-1"));
    write_jwks(&keys, &[&ed, &es]);
    let app = app_with(|config| {
        config.auth.auth_jwt_keys = Some(keys.clone());
        config.auth.auth_jwt_issuer = Some("https://auth.test".into());
        config.auth.auth_jwt_audience = Some("stampede".into());
    })
    .await;
    let user = app.create_user("kim").await;
    let coupon = create_coupon(&app, 10).await;
    let secret = JWT_SECRET.as_bytes();
    let claims = |extra: Value| {
        let mut claims =
            json!({ "sub": user.to_string(), "exp": now() + 600, "iss": "https://auth.test", "aud": "stampede" });
        for (name, value) in extra.as_object().unwrap() {
            match value {
                Value::Null => claims.as_object_mut().unwrap().remove(name),
                value => claims.as_object_mut().unwrap().insert(name.clone(), value.clone()),
            };
        }
        claims
    };
    let hs = json!({ "alg": "HS256", "typ": "JWT" });
    let dot = |parts: &[&str]| parts.join(".");
    let good_claims = b64(claims(json!({})).to_string().as_bytes());
    let cases: Vec<(&str, String)> = vec![
        ("two parts", dot(&["abc", "def"])),
        ("four parts", dot(&["a", "b", "c", "d"])),
        ("bad base64", dot(&["!!!", "@@@", "###"])),
        ("64 KiB long", format!("{}.{}.{}", "a".repeat(32 * 1024), "b".repeat(32 * 1024), "c")),
        ("header not JSON", dot(&[&b64(b"nope"), &good_claims, "sig"])),
        ("alg none", dot(&[&b64(br#"{"alg":"none","typ":"JWT"}"#), &good_claims, ""])),
        (
            "HS256 with the Ed25519 public key",
            hs256(&ed.public, &json!({ "alg": "HS256", "kid": "ed-1" }), &claims(json!({}))),
        ),
        (
            "HS256 with the P-256 public key",
            hs256(&es.public, &json!({ "alg": "HS256", "kid": "es-1" }), &claims(json!({}))),
        ),
        (
            "HS256 with the secret under a public key's kid",
            hs256(secret, &json!({ "alg": "HS256", "kid": "ed-1" }), &claims(json!({}))),
        ),
        ("wrong secret", hs256(b"another-secret-of-at-least-32-bytes!", &hs, &claims(json!({})))),
        ("expired", hs256(secret, &hs, &claims(json!({ "exp": now() - 3_600 })))),
        ("nbf in the future", hs256(secret, &hs, &claims(json!({ "nbf": now() + 3_600 })))),
        ("iat in the future", hs256(secret, &hs, &claims(json!({ "iat": now() + 3_600 })))),
        ("no exp", hs256(secret, &hs, &claims(json!({ "exp": null })))),
        ("no sub", hs256(secret, &hs, &claims(json!({ "sub": null })))),
        ("sub not a number", hs256(secret, &hs, &claims(json!({ "sub": "kim" })))),
        ("sub a JSON number", hs256(secret, &hs, &claims(json!({ "sub": user })))),
        ("sub zero", hs256(secret, &hs, &claims(json!({ "sub": "0" })))),
        ("sub negative", hs256(secret, &hs, &claims(json!({ "sub": "-1" })))),
        ("sub past i64", hs256(secret, &hs, &claims(json!({ "sub": "9223372036854775808" })))),
        ("wrong iss", hs256(secret, &hs, &claims(json!({ "iss": "https://evil.test" })))),
        ("no iss", hs256(secret, &hs, &claims(json!({ "iss": null })))),
        ("wrong aud", hs256(secret, &hs, &claims(json!({ "aud": "other" })))),
        ("unknown kid", hs256(secret, &json!({ "alg": "HS256", "kid": "nope" }), &claims(json!({})))),
        ("EdDSA signed by a key not in the file", TestKey::ed25519("ed-1").sign(&claims(json!({})))),
        ("ES256 token under the EdDSA key's kid", TestKey::p256("ed-1").sign(&claims(json!({})))),
    ];
    let issue = format!("/api/v1/coupons/{coupon}/issue");
    let balance = format!("/api/v1/users/{user}/balance/charge");
    for (what, token) in &cases {
        for request in [
            with_token(&app, Method::POST, &issue, token).json(&json!({})),
            with_token(&app, Method::POST, &balance, token).json(&json!({ "amount": 100 })),
        ] {
            let answer = send(request).await;
            assert_eq!(
                (answer.status, answer.body["code"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("UNAUTHORIZED")),
                "{what}: {}",
                answer.body
            );
            assert_eq!(answer.challenge.as_deref(), Some(r#"Bearer error="invalid_token""#), "{what}");
        }
    }
    for request in [
        app.http.post(app.url(&issue)).json(&json!({ "userId": user })),
        app.http.post(app.url(&issue)).header("authorization", "Basic a2ltOnB3").json(&json!({ "userId": user })),
        app.http.get(app.url(&format!("/api/v1/users/{user}/balance"))),
    ] {
        let answer = send(request).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
        assert_eq!(answer.challenge.as_deref(), Some("Bearer"));
    }
    assert_eq!(progress(&app, coupon).await["issued"], 0);
    assert_eq!(balance_in_mysql(&app, user).await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM balance_history").await, 0);

    // The same checks let good tokens through: HS256 without kid, EdDSA and ES256 by kid.
    let good = [hs256(secret, &hs, &claims(json!({}))), ed.sign(&claims(json!({}))), es.sign(&claims(json!({})))];
    let answer = send(with_token(&app, Method::POST, &issue, &good[0]).json(&json!({}))).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    for token in &good {
        let answer = send(with_token(&app, Method::POST, &balance, token).json(&json!({ "amount": 100 }))).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    assert_eq!(balance_in_mysql(&app, user).await, 300);
    let nobody = hs256(secret, &hs, &claims(json!({ "sub": "999999" })));
    let answer = send(with_token(&app, Method::POST, &issue, &nobody).json(&json!({}))).await;
    assert_eq!((answer.status, answer.body["code"].as_str()), (StatusCode::NOT_FOUND, Some("USER_NOT_FOUND")));
    let answer = send(with_token(&app, Method::GET, "/api/v1/users/999999/balance", &nobody)).await;
    assert_eq!((answer.status, answer.body["code"].as_str()), (StatusCode::NOT_FOUND, Some("USER_NOT_FOUND")));
    // A user's token never opens an admin endpoint, and public reads need none.
    let answer = send(with_token(&app, Method::GET, &format!("/api/v1/admin/coupons/{coupon}"), &good[0])).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/api/v1/products").await.0, StatusCode::OK);
}

/// Sends `method path` with `token` (and `body` as JSON) and asserts its status and error code.
async fn assert_answers(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    (status, code): (StatusCode, &str),
) {
    let mut request = with_token(app, method.clone(), path, token);
    if let Some(body) = &body {
        request = request.json(body);
    }
    let answer = send(request).await;
    assert_eq!((answer.status, answer.body["code"].as_str()), (status, Some(code)), "{method} {path}");
}

#[tokio::test]
async fn nobody_acts_for_another_user_on_any_user_endpoint_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let (victim, attacker) = (app.create_user("victim").await, app.create_user("attacker").await);
    let product = app.create_product("socks", 100, 10).await;
    let coupon = create_coupon(&app, 10).await;
    app.charge(victim, 1_000).await;
    let (status, order) = app
        .post("/api/v1/orders", json!({ "userId": victim, "items": [{ "productId": product, "quantity": 1 }] }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let order = order["orderId"].as_i64().unwrap();
    let token = token_for(attacker);
    let items = json!([{ "productId": product, "quantity": 1 }]);
    let forbidden = [
        (Method::POST, format!("/api/v1/coupons/{coupon}/issue"), Some(json!({ "userId": victim }))),
        (Method::GET, format!("/api/v1/users/{victim}/coupons"), None),
        (Method::GET, format!("/api/v1/users/{victim}/balance"), None),
        (Method::POST, format!("/api/v1/users/{victim}/balance/charge"), Some(json!({ "amount": 5 }))),
        (Method::GET, format!("/api/v1/users/{victim}/balance/history"), None),
        (Method::POST, "/api/v1/orders".to_owned(), Some(json!({ "userId": victim, "items": items }))),
        (Method::POST, "/api/v1/orders".to_owned(), Some(json!({ "userId": victim, "items": items, "pay": true }))),
        (Method::POST, format!("/api/v1/orders/{order}/pay"), Some(json!({ "userId": victim }))),
    ];
    for (method, path, body) in forbidden {
        assert_answers(&app, &token, method, &path, body, (StatusCode::FORBIDDEN, "FORBIDDEN")).await;
    }
    let not_found = [
        (Method::GET, format!("/api/v1/orders/{order}"), None),
        (Method::POST, format!("/api/v1/orders/{order}/pay"), Some(json!({}))),
        (Method::POST, format!("/api/v1/orders/{order}/pay"), Some(json!({ "userId": attacker }))),
    ];
    for (method, path, body) in not_found {
        assert_answers(&app, &token, method, &path, body, (StatusCode::NOT_FOUND, "ORDER_NOT_FOUND")).await;
    }
    assert_eq!(balance_in_mysql(&app, victim).await, 1_000);
    assert_eq!(balance_in_mysql(&app, attacker).await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM balance_history").await, 1);
    assert_eq!(progress(&app, coupon).await["issued"], 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders WHERE status = 'PENDING'").await, 1);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM payments").await, 0);
    assert_eq!(count(&app, "SELECT CAST(SUM(stock) AS SIGNED) FROM product_options").await, 10);
    // The owner still reads and pays it.
    let (status, read) = app.get(&format!("/api/v1/orders/{order}")).await;
    assert_eq!((status, read["status"].as_str()), (StatusCode::OK, Some("PENDING")));
    let answer = send(
        with_token(&app, Method::POST, &format!("/api/v1/orders/{order}/pay"), &token_for(victim)).json(&json!({})),
    )
    .await;
    assert_eq!((answer.status, answer.body["balance"].as_i64()), (StatusCode::OK, Some(900)), "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flash_sale_of_a_thousand_users_each_with_a_token_for_300_coupons_issues_exactly_300_once_each() {
    // The contract's default limits: each user asks once, far under them.
    let app = app_with(|config| config.auth.limits = LimitsConfig::default()).await;
    let users = create_users(&app.state.stores, 1_000).await;
    let coupon = create_coupon(&app, 300).await;
    let tokens: Vec<(i64, String)> = users.iter().map(|user| (*user, token_for(*user))).collect();
    let issue = format!("/api/v1/coupons/{coupon}/issue");
    let results: Vec<(i64, StatusCode)> = stream::iter(tokens)
        .map(|(user, token)| {
            let request = with_token(&app, Method::POST, &issue, &token).json(&json!({}));
            async move { (user, request.send().await.unwrap().status()) }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let created: Vec<i64> = results.iter().filter(|(_, s)| *s == StatusCode::CREATED).map(|(u, _)| *u).collect();
    assert_eq!(created.len(), 300);
    assert_eq!(results.iter().filter(|(_, s)| *s == StatusCode::GONE).count(), 700);
    wait_persisted(&app, coupon, 300).await;
    let rows = count(&app, &format!("SELECT COUNT(*) FROM user_coupons WHERE coupon_id = {coupon}")).await;
    let holders =
        count(&app, &format!("SELECT COUNT(DISTINCT user_id) FROM user_coupons WHERE coupon_id = {coupon}")).await;
    assert_eq!((rows, holders), (300, 300));
    let mut winners: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM user_coupons WHERE coupon_id = ?")
        .bind(coupon)
        .fetch_all(app.db())
        .await
        .unwrap();
    let mut created = created;
    winners.sort_unstable();
    created.sort_unstable();
    assert_eq!(winners, created, "MySQL holds exactly the users told 201");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_user_asking_100_times_at_once_gets_the_burst_decided_and_429_for_the_rest_while_others_are_served() {
    let app = app_with(|config| config.auth.limits = LimitsConfig::default()).await;
    let users = create_users(&app.state.stores, 21).await;
    let (greedy, others) = (users[0], &users[1..]);
    let (first, second) = (create_coupon(&app, 1_000).await, create_coupon(&app, 1_000).await);
    let token = token_for(greedy);
    let issue = |coupon: i64| format!("/api/v1/coupons/{coupon}/issue");
    let started = Instant::now();
    let asks = stream::iter(0..100)
        .map(|_| send(with_token(&app, Method::POST, &issue(first), &token).json(&json!({}))))
        .buffer_unordered(100)
        .collect::<Vec<Answer>>();
    let others_ask = stream::iter(others.iter().copied())
        .map(|user| send(with_token(&app, Method::POST, &issue(first), &token_for(user)).json(&json!({}))))
        .buffer_unordered(20)
        .collect::<Vec<Answer>>();
    let (answers, others_answers) = futures::join!(asks, others_ask);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "the 100 asks took {elapsed:?}");

    let decided: Vec<&Answer> = answers.iter().filter(|a| a.status != StatusCode::TOO_MANY_REQUESTS).collect();
    let limited = answers.len() - decided.len();
    // RATE_LIMIT_ISSUE 5/10: the burst of 10 at once, then one more each 200 ms.
    let most = 10 + (elapsed.as_millis() / 200) as usize;
    assert!((10..=most).contains(&decided.len()), "{} decided in {elapsed:?}, at most {most}", decided.len());
    assert_eq!(decided.iter().filter(|a| a.status == StatusCode::CREATED).count(), 1);
    assert_eq!(decided.iter().filter(|a| a.status == StatusCode::CONFLICT).count(), decided.len() - 1);
    assert_eq!(limited, 100 - decided.len());
    for answer in answers.iter().filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS) {
        assert_eq!(answer.body["code"], "TOO_MANY_REQUESTS");
        assert!(answer.retry_after.is_some_and(|seconds| seconds >= 1), "Retry-After {:?}", answer.retry_after);
    }
    assert!(others_answers.iter().all(|a| a.status == StatusCode::CREATED), "another user was refused");
    assert_eq!(progress(&app, first).await["issued"], 21);

    // After the window the same user is decided as usual.
    tokio::time::sleep(Duration::from_secs(answers.iter().filter_map(|a| a.retry_after).max().unwrap_or(1))).await;
    let answer = send(with_token(&app, Method::POST, &issue(second), &token).json(&json!({}))).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let refused = r#"http_requests_total{method="POST",route="/api/v1/coupons/{couponId}/issue",status="429"}"#;
    assert!(metrics.lines().any(|line| line.starts_with(refused)), "no 429 counted by route");
    assert!(metrics.contains(r#"rate_limited_total{limit="issue"}"#), "no rate_limited_total for the issue limit");
}

#[tokio::test]
async fn a_user_over_the_user_limit_is_refused_on_every_user_endpoint_and_an_address_limit_counts_per_peer() {
    let app = app_with(|config| {
        config.auth.limits = LimitsConfig {
            rate_limit_user: Rate::parse("1/3").unwrap(),
            rate_limit_ip: Rate::parse("1/30").unwrap(),
            ..LimitsConfig::OFF
        }
    })
    .await;
    let started = Instant::now();
    let (kim, lee) = (app.create_user("kim").await, app.create_user("lee").await);
    let balance = |user: i64| format!("/api/v1/users/{user}/balance");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(send(with_token(&app, Method::GET, &balance(kim), &token_for(kim))).await.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 2, "{statuses:?}");
    assert_eq!(send(with_token(&app, Method::GET, &balance(lee), &token_for(lee))).await.status, StatusCode::OK);
    // 8 requests to /api/ from 127.0.0.1 so far (the two user creations are admin requests), so 22 of the
    // address's burst of 30 are left, plus one for each second gone by.
    let mut address = Vec::new();
    for _ in 0..40 {
        address.push(app.get("/api/v1/products").await.0);
    }
    let refused = address.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    let refilled = started.elapsed().as_secs() as usize + 1;
    assert!((18 - refilled..=18).contains(&refused), "{refused} of 40 refused");
    assert_eq!(app.get("/health/live").await.0, StatusCode::OK, "health is not under the address limit");
}

#[tokio::test]
async fn gateway_mode_believes_the_user_header_only_from_a_trusted_peer() {
    let app = app_with(|config| {
        config.auth.auth_mode = AuthMode::Gateway;
        config.auth.auth_trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let (kim, lee) = (app.create_user("kim").await, app.create_user("lee").await);
    let untrusted = reqwest::Client::builder().local_address("127.0.0.2".parse::<IpAddr>().ok()).build().unwrap();
    let balance = format!("/api/v1/users/{kim}/balance");
    let trusted = |path: &str, user: &str| app.http.get(app.url(path)).header("X-User-Id", user);

    let answer = send(trusted(&balance, &kim.to_string())).await;
    assert_eq!((answer.status, answer.body["userId"].as_i64()), (StatusCode::OK, Some(kim)), "{}", answer.body);
    let answer = send(untrusted.get(app.url(&balance)).header("X-User-Id", kim.to_string())).await;
    assert_eq!(
        (answer.status, answer.challenge.as_deref()),
        (StatusCode::UNAUTHORIZED, Some("Bearer")),
        "{}",
        answer.body
    );
    for bad in ["", "kim", "0", "-1", "+1", "9223372036854775808", "1,2"] {
        let answer = send(trusted(&balance, bad)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{bad:?}");
    }
    let answer = send(with_token(&app, Method::GET, &balance, &token_for(kim))).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "a bearer token is not the gateway's header");
    let answer = send(trusted(&balance, &lee.to_string())).await;
    assert_eq!((answer.status, answer.body["code"].as_str()), (StatusCode::FORBIDDEN, Some("FORBIDDEN")));
    let charge = format!("/api/v1/users/{kim}/balance/charge");
    let answer =
        send(untrusted.post(app.url(&charge)).header("X-User-Id", kim.to_string()).json(&json!({ "amount": 5 }))).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(balance_in_mysql(&app, kim).await, 0);
}

#[tokio::test]
async fn none_mode_believes_the_named_user_and_needs_it_named() {
    let app = app_with(|config| config.auth.auth_mode = AuthMode::None).await;
    let user = app.create_user("kim").await;
    let coupon = create_coupon(&app, 10).await;
    let issue = format!("/api/v1/coupons/{coupon}/issue");
    let answer = send(app.http.post(app.url(&issue)).json(&json!({ "userId": user }))).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let answer = send(app.http.post(app.url(&issue)).json(&json!({}))).await;
    assert_eq!((answer.status, answer.body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")));
    let answer = send(app.http.get(app.url(&format!("/api/v1/users/{user}/balance")))).await;
    assert_eq!(answer.status, StatusCode::OK);
}

/// A change to a test's serve configuration.
type Configure = dyn Fn(&mut stampede::config::ServeConfig);

#[tokio::test]
async fn serve_refuses_to_start_with_settings_safe_on_loopback_only_naming_the_variable() {
    let store = isolated_store().await;
    let open = |configure: &Configure| {
        let mut config = serve_config(store.clone());
        config.bind_addr = "0.0.0.0:0".parse().unwrap();
        configure(&mut config);
        config
    };
    let refusals: [(&Configure, &str); 5] = [
        (&|c| c.auth.auth_mode = AuthMode::None, "AUTH_MODE"),
        (&|c| c.auth.auth_jwt_secret = Some(stampede::identity::DEV_JWT_SECRET.into()), "AUTH_JWT_SECRET"),
        (&|c| c.auth.auth_jwt_secret = Some("short".into()), "AUTH_JWT_SECRET"),
        (&|c| c.auth.auth_jwt_secret = None, "AUTH_JWT_SECRET or AUTH_JWT_KEYS"),
        (&|c| c.auth.auth_jwt_keys = Some("/nonexistent/jwks.json".into()), "AUTH_JWT_KEYS"),
    ];
    for (configure, variable) in refusals {
        let error = stampede::app::App::build(open(configure)).await.err().expect("refused").to_string();
        assert!(error.contains(variable), "{error:?} does not name {variable}");
    }
    // The binary says so on its way out, before touching a store.
    let output = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .arg("serve")
        .env("BIND_ADDR", "0.0.0.0:0")
        .env("AUTH_MODE", "none")
        .env("DATABASE_URL", "mysql://nobody@127.0.0.1:1/none")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(log.contains("AUTH_MODE=none") && log.contains("loopback"), "{log}");
    // Both are fine on loopback, and `stampede token` signs with the secret the server checks.
    let output = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(["token", "--user", "42", "--ttl", "15m"])
        .env("AUTH_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let key = jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes());
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap().claims;
    assert_eq!(claims["sub"], "42");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_removed_from_the_jwks_file_is_refused_within_ten_seconds_while_serving_remembered_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    let (old, new, later) = (TestKey::ed25519("old"), TestKey::p256("new"), TestKey::ed25519("later"));
    write_jwks(&keys, &[&old, &new]);
    let app = app_with(|config| config.auth.auth_jwt_keys = Some(keys.clone())).await;
    let user = app.create_user("kim").await;
    let claims = |n: i64| json!({ "sub": user.to_string(), "exp": now() + 600, "jti": n });
    let balance = format!("/api/v1/users/{user}/balance");
    let (remembered, unseen, current) = (old.sign(&claims(1)), old.sign(&claims(2)), new.sign(&claims(3)));
    for token in [&remembered, &current] {
        assert_eq!(send(with_token(&app, Method::GET, &balance, token)).await.status, StatusCode::OK);
    }
    assert_eq!(
        send(with_token(&app, Method::GET, &balance, &later.sign(&claims(4)))).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Clients of the kept key keep being served while the file is replaced.
    let serving = async {
        let started = Instant::now();
        let mut served = 0;
        while started.elapsed() < Duration::from_secs(3) {
            let answer = send(with_token(&app, Method::GET, &balance, &current)).await;
            assert_eq!(answer.status, StatusCode::OK, "a token of the kept key was refused: {}", answer.body);
            served += 1;
        }
        served
    };
    let rotate = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        write_jwks(&keys, &[&new, &later]);
        let rotated = Instant::now();
        eventually("the removed key's remembered token is refused", ROTATION_WITHIN, || async {
            send(with_token(&app, Method::GET, &balance, &remembered)).await.status == StatusCode::UNAUTHORIZED
        })
        .await;
        rotated.elapsed()
    };
    let (served, took) = futures::join!(serving, rotate);
    assert!(served > 10, "only {served} requests during the rotation");
    assert!(took < ROTATION_WITHIN, "refused after {took:?}");
    let answer = send(with_token(&app, Method::GET, &balance, &unseen)).await;
    assert_eq!(
        (answer.status, answer.challenge.as_deref()),
        (StatusCode::UNAUTHORIZED, Some(r#"Bearer error="invalid_token""#))
    );
    assert_eq!(send(with_token(&app, Method::GET, &balance, &later.sign(&claims(5)))).await.status, StatusCode::OK);
    // A file that is not a JWKS keeps the keys read before.
    std::fs::write(&keys, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(send(with_token(&app, Method::GET, &balance, &new.sign(&claims(6)))).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_token_cache_holds_at_most_its_bound_and_never_serves_a_token_past_its_exp() {
    let app = app_with(|config| {
        config.auth.auth_token_cache = 50;
        config.auth.auth_jwt_leeway = Duration::ZERO;
    })
    .await;
    let user = app.create_user("kim").await;
    let balance = format!("/api/v1/users/{user}/balance");
    let hs = json!({ "alg": "HS256" });
    for n in 0..200 {
        let token =
            hs256(JWT_SECRET.as_bytes(), &hs, &json!({ "sub": user.to_string(), "exp": now() + 600, "jti": n }));
        assert_eq!(send(with_token(&app, Method::GET, &balance, &token)).await.status, StatusCode::OK);
    }
    let remembered = app.state.identity.remembered_tokens();
    assert!((1..=50).contains(&remembered), "{remembered} tokens remembered, bound 50");

    let short = hs256(JWT_SECRET.as_bytes(), &hs, &json!({ "sub": user.to_string(), "exp": now() + 1 }));
    assert_eq!(send(with_token(&app, Method::GET, &balance, &short)).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let answer = send(with_token(&app, Method::GET, &balance, &short)).await;
    assert_eq!(
        (answer.status, answer.challenge.as_deref()),
        (StatusCode::UNAUTHORIZED, Some(r#"Bearer error="invalid_token""#))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_sent_good_or_bad_is_ever_written_to_the_log() {
    let store = isolated_store().await;
    let port = crate::support::servers::free_port();
    let log_path = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .arg("serve")
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &store.database_url)
        .env("REDIS_URL", &store.redis_url)
        .env("REDIS_PREFIX", &store.redis_prefix)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("AUTH_JWT_SECRET", JWT_SECRET)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("the server is ready", Duration::from_secs(60), || async {
        http.get(format!("{base}/health/ready")).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    let created: Value = http
        .post(format!("{base}/api/v1/admin/users"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "name": "kim" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user = created["id"].as_i64().unwrap();
    let good = token_for(user);
    let expired = hs256(
        JWT_SECRET.as_bytes(),
        &json!({ "alg": "HS256" }),
        &json!({ "sub": user.to_string(), "exp": now() - 3_600 }),
    );
    let forged = format!("{}.forgedsignature", good.rsplit_once('.').unwrap().0);
    for token in [&good, &expired, &forged] {
        http.get(format!("{base}/api/v1/users/{user}/balance")).bearer_auth(token).send().await.unwrap();
        http.post(format!("{base}/api/v1/users/{user}/balance/charge"))
            .bearer_auth(token)
            .json(&json!({ "amount": 10 }))
            .send()
            .await
            .unwrap();
    }
    let _ = child.kill();
    let _ = child.wait();
    let written = std::fs::read_to_string(&log_path).unwrap();
    assert!(written.contains("serving"), "the log has no start-up line: {}", &written[..written.len().min(500)]);
    for secret in [good.as_str(), expired.as_str(), forged.as_str(), ADMIN_TOKEN, JWT_SECRET] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!written.contains(signature), "the log holds a token or secret");
    }
}

#[tokio::test]
async fn the_openapi_document_declares_the_bearer_scheme_on_every_user_operation_and_on_no_public_one() {
    let app = TestApp::spawn().await;
    let (status, spec) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spec["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let mut user_operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let schemes: Vec<&str> = operation["security"]
                .as_array()
                .map(|all| all.iter().flat_map(|one| one.as_object().unwrap().keys().map(String::as_str)).collect())
                .unwrap_or_default();
            let acts_for_a_user =
                path.starts_with("/api/v1/users/") || path.starts_with("/api/v1/orders") || path.ends_with("/issue");
            let what = format!("{method} {path}");
            if acts_for_a_user {
                user_operations += 1;
                assert_eq!(schemes, ["bearer"], "{what}");
                for code in ["401", "429"] {
                    assert!(operation["responses"][code].is_object(), "{what} documents no {code}");
                }
                assert!(operation["responses"]["401"]["headers"]["WWW-Authenticate"].is_object(), "{what}");
            } else if path.starts_with("/api/v1/admin/") {
                assert_eq!(schemes, ["admin"], "{what}");
            } else {
                assert!(schemes.is_empty(), "{what} is public but names {schemes:?}");
            }
        }
    }
    assert_eq!(user_operations, 8, "issue, coupons, balance, charge, history, create, pay, read");
}
