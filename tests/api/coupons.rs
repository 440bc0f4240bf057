//! Coupons: first-come-first-served issuance racing for real, the writer, crash and outage recovery,
//! read-your-writes, and every error of the contract.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::prelude::*;
use futures::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::{Value, json};
use stampede::app::App;
use stampede::coupon::writer::{Outcome, Writer};
use stampede::coupon::{self, HeldStatus};
use stampede::id::{CouponId, OrderId, UserId};
use stampede::state::AppState;
use stampede::store::Stores;

use stampede::config::StoreConfig;

use crate::support::{ADMIN_TOKEN, MariaDb, RedisServer, TestApp, create_database, isolated_store, serve_config};

/// How long a test waits for the writer to catch up; it covers a crashed consumer's entries, which are
/// reclaimed only after `CLAIM_IDLE`.
const CATCH_UP: Duration = Duration::from_secs(40);

/// Requests in flight at once in the stampede tests.
const IN_FLIGHT: usize = 200;

/// Creates a coupon through the admin API; returns its id.
pub(crate) async fn create_coupon(app: &TestApp, quantity: i64) -> i64 {
    let body = json!({ "name": "flash", "discountType": "FIXED", "discountValue": 1000, "totalQuantity": quantity });
    let (status, body) = app.admin_post("/api/v1/admin/coupons", body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_i64().unwrap()
}

/// `count` users inserted in one statement and marked known in Redis, as `stampede seed` does.
pub(crate) async fn create_users(stores: &Stores, count: usize) -> Vec<i64> {
    let names: Vec<String> = (0..count).map(|n| format!("u{n}")).collect();
    let ids = stampede::user::db::insert_batch(&stores.db, &names).await.unwrap();
    stampede::user::cache::remember(&stores.redis, &ids).await.unwrap();
    ids.into_iter().map(UserId::get).collect()
}

pub(crate) async fn progress(app: &TestApp, coupon: i64) -> Value {
    let (status, body) = app.call(reqwest::Method::GET, &format!("/api/v1/admin/coupons/{coupon}"), None, true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Polls the admin progress until `persisted` reaches `expected`, or fails after [`CATCH_UP`].
pub(crate) async fn wait_persisted(app: &TestApp, coupon: i64, expected: i64) -> Value {
    let started = Instant::now();
    loop {
        let body = progress(app, coupon).await;
        if body["persisted"] == expected {
            return body;
        }
        assert!(started.elapsed() < CATCH_UP, "persisted stuck: {body}, want {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends every `(coupon, user)` issuance with [`IN_FLIGHT`] at once, spread over `apps`; returns
/// `(user, status)` per request.
pub(crate) async fn stampede(apps: &[&TestApp], requests: Vec<(i64, i64)>) -> Vec<(i64, StatusCode)> {
    stream::iter(requests.into_iter().enumerate())
        .map(|(n, (coupon, user))| {
            let app = apps[n % apps.len()];
            async move {
                let (status, body) =
                    app.post(&format!("/api/v1/coupons/{coupon}/issue"), json!({ "userId": user })).await;
                assert!(
                    [StatusCode::CREATED, StatusCode::CONFLICT, StatusCode::GONE].contains(&status),
                    "{status} {body}"
                );
                (user, status)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

pub(crate) fn winners(results: &[(i64, StatusCode)]) -> Vec<i64> {
    results.iter().filter(|(_, s)| *s == StatusCode::CREATED).map(|(u, _)| *u).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stampede_of_a_thousand_users_asking_three_times_gets_exactly_the_quantity_once_each() {
    let app = TestApp::spawn().await;
    // A second instance on the same stores: two catalogs, two writers in one consumer group.
    let other = TestApp::spawn_with(app.config.clone()).await;
    let users = create_users(&app.state.stores, 1_000).await;
    let coupon = create_coupon(&app, 500).await;
    let requests: Vec<(i64, i64)> = (0..3).flat_map(|_| users.iter().map(|u| (coupon, *u))).collect();

    let results = stampede(&[&app, &other], requests).await;

    let won = winners(&results);
    assert_eq!(won.len(), 500);
    assert_eq!(won.iter().collect::<HashSet<_>>().len(), 500, "a user won twice");
    let body = wait_persisted(&app, coupon, 500).await;
    assert_eq!((body["issued"].as_i64(), body["remaining"].as_i64()), (Some(500), Some(0)));
    let rows: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM user_coupons WHERE coupon_id = ?")
        .bind(coupon)
        .fetch_all(app.db())
        .await
        .unwrap();
    assert_eq!(rows.into_iter().collect::<HashSet<_>>(), won.into_iter().collect::<HashSet<_>>());
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("coupon_issue_total{result=\"issued\"}"), "{metrics}");
    assert!(metrics.contains("coupon_writer_lag_seconds"), "{metrics}");
}

#[tokio::test]
async fn issue_answers_every_error_of_the_contract_with_its_code() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.create_user("alice").await, app.create_user("bob").await);
    let coupon = create_coupon(&app, 1).await;
    let issue = |coupon: i64, user: i64| {
        let app = &app;
        async move { app.post(&format!("/api/v1/coupons/{coupon}/issue"), json!({ "userId": user })).await }
    };

    let (status, body) = issue(coupon, alice).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["couponId"].as_i64(), body["userId"].as_i64()), (Some(coupon), Some(alice)));
    assert_eq!(body["status"], "AVAILABLE");
    let issued_at = chrono::DateTime::parse_from_rfc3339(body["issuedAt"].as_str().unwrap()).unwrap();
    assert!((chrono::Utc::now() - issued_at.to_utc()).num_seconds().abs() < 60);

    let expect = |(status, body): (StatusCode, Value), want: StatusCode, code: &str| {
        assert_eq!((status, body["code"].as_str()), (want, Some(code)), "{body}");
    };
    expect(issue(coupon, alice).await, StatusCode::CONFLICT, "ALREADY_ISSUED");
    expect(issue(coupon, bob).await, StatusCode::GONE, "SOLD_OUT");
    expect(issue(coupon + 1000, bob).await, StatusCode::NOT_FOUND, "COUPON_NOT_FOUND");
    expect(issue(coupon, alice + 1000).await, StatusCode::NOT_FOUND, "USER_NOT_FOUND");

    let now = chrono::Utc::now();
    for (starts, ends) in [(now + chrono::Duration::hours(1), None), (now - chrono::Duration::hours(2), Some(now))] {
        let body = json!({ "name": "later", "discountType": "RATE", "discountValue": 10, "totalQuantity": 5,
            "startsAt": starts, "endsAt": ends });
        let (status, created) = app.admin_post("/api/v1/admin/coupons", body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        expect(
            issue(created["id"].as_i64().unwrap(), bob).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "COUPON_NOT_ACTIVE",
        );
    }

    // A user who exists in MySQL but not (yet) in the Redis index is found through the fallback.
    let carol = stampede::user::db::insert_batch(app.db(), &["carol".to_owned()]).await.unwrap()[0].get();
    let open = create_coupon(&app, 10).await;
    assert_eq!(issue(open, carol).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn admin_coupon_create_and_progress_report_the_contract_fields() {
    let app = TestApp::spawn().await;
    let starts = "2020-01-01T09:00:00+09:00";
    let body = json!({ "name": " spring ", "discountType": "RATE", "discountValue": 15, "totalQuantity": 3,
        "startsAt": starts, "endsAt": "2999-01-01T00:00:00Z" });
    let (status, created) = app.admin_post("/api/v1/admin/coupons", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "spring");
    assert_eq!((created["discountType"].as_str(), created["discountValue"].as_i64()), (Some("RATE"), Some(15)));
    assert_eq!(created["totalQuantity"], 3);
    let at = |field: &str| chrono::DateTime::parse_from_rfc3339(created[field].as_str().unwrap()).unwrap();
    assert_eq!(at("startsAt"), chrono::DateTime::parse_from_rfc3339(starts).unwrap());
    assert_eq!(at("endsAt"), chrono::DateTime::parse_from_rfc3339("2999-01-01T00:00:00Z").unwrap());
    let (_, open) = app
        .admin_post(
            "/api/v1/admin/coupons",
            json!({ "name": "open", "discountType": "FIXED", "discountValue": 500,
            "totalQuantity": 2 }),
        )
        .await;
    assert_eq!(open["endsAt"], Value::Null);
    assert!(open["startsAt"].is_string());

    let id = created["id"].as_i64().unwrap();
    let user = app.create_user("kim").await;
    app.post(&format!("/api/v1/coupons/{id}/issue"), json!({ "userId": user })).await;
    let body = wait_persisted(&app, id, 1).await;
    assert_eq!(
        body,
        json!({ "id": id, "name": "spring", "totalQuantity": 3, "issued": 1, "remaining": 2,
        "persisted": 1 })
    );
    let (status, body) = app.call(reqwest::Method::GET, "/api/v1/admin/coupons/999999", None, true).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("COUPON_NOT_FOUND")));
    let (status, _) = app.get(&format!("/api/v1/admin/coupons/{id}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_issue_script_survives_script_flush() {
    // A Redis of its own: flushing the shared one's scripts would make every other test's next script call
    // check all its coupons first, which answers 503 to a test that has stopped its MySQL meanwhile.
    let redis = RedisServer::start();
    let mut store = isolated_store().await;
    store.redis_url = redis.url();
    let app = TestApp::spawn_with(serve_config(store)).await;
    let users = create_users(&app.state.stores, 2).await;
    let coupon = create_coupon(&app, 10).await;
    for user in users {
        // Every primary's scripts on a cluster (on one Redis, its own).
        let _: () = app.state.stores.redis.client().script_flush_cluster(false).await.unwrap();
        let (status, body) = app.post(&format!("/api/v1/coupons/{coupon}/issue"), json!({ "userId": user })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    assert_eq!(progress(&app, coupon).await["issued"], 2);
}

#[tokio::test]
async fn one_script_call_decides_a_batch_in_order_as_single_calls_would() {
    let app = app_without_writer().await;
    let stores = &app.state().stores;
    let campaign = campaign(app.state(), 2).await;
    let [a, b, c] = [1, 2, 3].map(|id| UserId::new(id).unwrap());
    let now = chrono::Utc::now().timestamp_micros();

    let gate = coupon::fence::ScriptGate::default();
    let replies = gate.issue(stores, campaign, &[a, b, a, c, b], now).await.unwrap();
    use coupon::cache::IssueReply::*;
    assert_eq!(replies, vec![Issued(now), Issued(now), AlreadyIssued(now), SoldOut, AlreadyIssued(now)]);
    let (issued, remaining) = coupon::cache::counts(&stores.redis, campaign).await.unwrap();
    assert_eq!((issued, remaining), (2, 0));
    assert_eq!(queue_length(stores, campaign).await, 1, "one stream entry per script call");
    let mut writer = Writer::new();
    assert_eq!(writer.drain_once(stores).await.unwrap(), Outcome::Persisted { issuances: 2, backlog: false });
    let rows: Vec<(i64, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT user_id, issued_at FROM user_coupons WHERE coupon_id = ? ORDER BY user_id")
            .bind(campaign.get())
            .fetch_all(&stores.db)
            .await
            .unwrap();
    let issued_at = chrono::DateTime::from_timestamp_micros(now).unwrap();
    assert_eq!(rows, vec![(a.get(), issued_at), (b.get(), issued_at)]);

    let early = coupon::NewCoupon::parse(
        coupon::CouponSpec {
            starts_at: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
            ..coupon::CouponSpec::open_ended("later", coupon::DiscountType::Fixed, 100, 5)
        },
        chrono::Utc::now(),
    );
    let later = app.state().coupons.create(early.unwrap()).await.unwrap();
    let replies = gate.issue(stores, later.id, &[a, b], now).await.unwrap();
    assert_eq!(replies, vec![NotActive, NotActive]);
}

#[tokio::test]
async fn malformed_coupon_requests_get_400_and_the_envelope() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let coupon = create_coupon(&app, 10).await;
    let bad_ids = ["0", "-1", "abc", "9223372036854775808", "1.5"];
    for id in bad_ids {
        let (status, body) = app.post(&format!("/api/v1/coupons/{id}/issue"), json!({ "userId": user })).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")), "{id}");
        let (status, body) = app.get(&format!("/api/v1/users/{id}/coupons")).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")), "{id}");
        let (status, body) = app.call(reqwest::Method::GET, &format!("/api/v1/admin/coupons/{id}"), None, true).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")), "{id}");
    }
    let issue = format!("/api/v1/coupons/{coupon}/issue");
    // (`{}` is a valid ask in jwt mode: the token's user is the one asking.)
    for body in ["{", "[]", r#"{"userId": 0}"#, r#"{"userId": -3}"#, r#"{"userId": "1"}"#, r#"{"userId": 1.5}"#] {
        let request = app.as_user(reqwest::Method::POST, &issue, user).header("content-type", "application/json");
        let response = request.body(body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let envelope: Value = response.json().await.unwrap();
        assert_eq!(envelope["code"], "INVALID_REQUEST", "{body}");
    }
    for query in ["?status=BOGUS", "?status=available", "?status="] {
        let (status, body) = app.get(&format!("/api/v1/users/{user}/coupons{query}")).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")), "{query}");
    }
    let (status, body) = app.get("/api/v1/users/999999/coupons").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("USER_NOT_FOUND")));
    let valid = json!({ "name": "x", "discountType": "FIXED", "discountValue": 1, "totalQuantity": 1 });
    let invalid = [
        json!({ "discountType": "FIXED", "discountValue": 1, "totalQuantity": 1 }),
        json!({ "name": " ", "discountType": "FIXED", "discountValue": 1, "totalQuantity": 1 }),
        json!({ "name": "x", "discountType": "PERCENT", "discountValue": 1, "totalQuantity": 1 }),
        json!({ "name": "x", "discountType": "FIXED", "discountValue": 0, "totalQuantity": 1 }),
        json!({ "name": "x", "discountType": "RATE", "discountValue": 101, "totalQuantity": 1 }),
        json!({ "name": "x", "discountType": "RATE", "discountValue": 0, "totalQuantity": 1 }),
        json!({ "name": "x", "discountType": "FIXED", "discountValue": 1, "totalQuantity": 0 }),
        json!({ "name": "x", "discountType": "FIXED", "discountValue": 1, "totalQuantity": 2_147_483_648i64 }),
        json!({ "name": "x", "discountType": "FIXED", "discountValue": 1, "totalQuantity": 1, "startsAt": "soon" }),
        json!({ "name": "x", "discountType": "FIXED", "discountValue": 1, "totalQuantity": 1,
            "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2029-01-01T00:00:00Z" }),
        json!({ "name": "x", "discountType": "FIXED", "discountValue": 1, "totalQuantity": 1,
            "startsAt": "2030-01-01T00:00:00" }),
    ];
    for body in invalid {
        let (status, reply) = app.admin_post("/api/v1/admin/coupons", body.clone()).await;
        assert_eq!((status, reply["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")), "{body}");
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM coupons").fetch_one(app.db()).await.unwrap();
    assert_eq!(rows, 1, "a rejected campaign was stored");
    let response = app.http.post(app.url("/api/v1/admin/coupons")).json(&valid).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app.http.post(app.url("/api/v1/admin/coupons")).bearer_auth(ADMIN_TOKEN).json(&valid).send();
    assert_eq!(response.await.unwrap().status(), StatusCode::CREATED);
}

/// An app built but not run: no writer drains the queues, so a test decides when persistence happens.
pub(crate) async fn app_without_writer() -> App {
    App::build(serve_config(isolated_store().await)).await.expect("build app")
}

#[tokio::test]
async fn a_coupon_is_listed_and_usable_right_after_its_201_before_the_writer_persists_it() {
    let app = app_without_writer().await;
    let state = app.state();
    let stores = &state.stores;
    let user = UserId::new(create_users(stores, 1).await[0]).unwrap();
    let new = coupon::NewCoupon::parse(
        coupon::CouponSpec::open_ended("now", coupon::DiscountType::Fixed, 700, 5),
        chrono::Utc::now(),
    );
    let campaign = state.coupons.create(new.unwrap()).await.unwrap();
    let later = coupon::NewCoupon::parse(
        coupon::CouponSpec::open_ended("later", coupon::DiscountType::Rate, 5, 5),
        chrono::Utc::now(),
    );
    let second = state.coupons.create(later.unwrap()).await.unwrap();

    let issued = state.coupons.issue(campaign.id, user).await.unwrap();
    let persisted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_coupons").fetch_one(&stores.db).await.unwrap();
    assert_eq!(persisted, 0);
    let held = coupon::held_by(stores, user, campaign.id).await.unwrap().expect("held before persistence");
    assert_eq!(
        (held.status, held.issued_at, held.coupon.discount.value()),
        (HeldStatus::Available, issued.issued_at, 700)
    );
    assert!(coupon::held_by(stores, user, second.id).await.unwrap().is_none());
    let listed = state.coupons.held(user, Some(HeldStatus::Available)).await.unwrap();
    assert_eq!(listed.iter().map(|h| h.coupon.id).collect::<Vec<_>>(), vec![campaign.id]);

    // The order's pay transaction inserts the row first; the writer's later insert changes nothing.
    let mut tx = stores.db.begin().await.unwrap();
    let used =
        coupon::db::mark_used(&mut tx, user, campaign.id, held.issued_at, OrderId::new(9).unwrap(), chrono::Utc::now());
    assert!(used.await.unwrap());
    tx.commit().await.unwrap();
    state.coupons.issue(second.id, user).await.unwrap();
    let mut writer = Writer::new();
    assert_eq!(writer.drain_once(stores).await.unwrap(), Outcome::Persisted { issuances: 2, backlog: false });
    assert_eq!(writer.drain_once(stores).await.unwrap(), Outcome::Idle);

    let all = state.coupons.held(user, None).await.unwrap();
    let summary: Vec<(CouponId, HeldStatus)> = all.iter().map(|h| (h.coupon.id, h.status)).collect();
    assert_eq!(summary, vec![(second.id, HeldStatus::Available), (campaign.id, HeldStatus::Used)]);
    let used = state.coupons.held(user, Some(HeldStatus::Used)).await.unwrap();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].issued_at, issued.issued_at);
}

/// Calls of `command` Redis counted since its last `CONFIG RESETSTAT` (`INFO commandstats`).
async fn command_calls(stores: &Stores, command: &str) -> u64 {
    let info: String = stores.redis.client().info(Some(fred::types::InfoKind::CommandStats)).await.unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

#[tokio::test]
async fn a_users_coupon_list_asks_redis_only_about_the_campaigns_not_yet_persisted() {
    // A Redis of its own: the test counts the commands it serves.
    let redis = RedisServer::start();
    let mut store = isolated_store().await;
    store.redis_url = redis.url();
    let app = App::build(serve_config(store)).await.expect("build app");
    let state = app.state();
    let stores = &state.stores;
    let mut campaigns = Vec::new();
    for _ in 0..40 {
        campaigns.push(campaign(state, 10).await);
    }
    let users: Vec<UserId> = create_users(stores, 2).await.into_iter().map(|u| UserId::new(u).unwrap()).collect();
    let (kim, lee) = (users[0], users[1]);
    for &campaign in &campaigns {
        state.coupons.issue(campaign, lee).await.unwrap();
    }
    state.coupons.issue(campaigns[0], kim).await.unwrap();
    let mut writer = Writer::new();
    while writer.drain_once(stores).await.unwrap() != Outcome::Idle {}
    let delisted = coupon::writer::delist_quiet(stores, Duration::ZERO).await.unwrap();
    assert_eq!(delisted, 40, "every campaign sold, and everything it sold is persisted");
    assert_eq!(coupon::cache::listed(&stores.redis).await.unwrap(), vec![]);

    // A new issuance, not persisted: its campaign alone is listed again.
    let fresh = state.coupons.issue(campaigns[7], kim).await.unwrap();
    let listed: Vec<CouponId> =
        coupon::cache::listed(&stores.redis).await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(listed, vec![campaigns[7]]);
    let _: () = stores
        .redis
        .client()
        .custom(
            fred::types::CustomCommand::new_static("CONFIG", fred::types::ClusterHash::Random, false),
            vec!["RESETSTAT"],
        )
        .await
        .unwrap();
    let held = state.coupons.held(kim, None).await.unwrap();
    let held: Vec<(CouponId, chrono::DateTime<chrono::Utc>)> =
        held.iter().map(|h| (h.coupon.id, h.issued_at)).collect();
    assert_eq!(held[0], (campaigns[7], fresh.issued_at), "read-your-writes before the writer ran");
    assert_eq!(held.iter().map(|h| h.0).collect::<Vec<_>>(), vec![campaigns[7], campaigns[0]]);
    assert_eq!(command_calls(stores, "hget").await, 1, "one HGET: the one listed campaign, not 40");
    assert_eq!(command_calls(stores, "smembers").await, 0, "the registry of every campaign is not read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coupon_shows_in_the_list_right_after_its_201_while_the_writer_persists_and_delists_at_full_speed() {
    let app = app_without_writer().await;
    let state = app.state().clone();
    let stores = state.stores.clone();
    let mut campaigns = Vec::new();
    for _ in 0..5 {
        campaigns.push(campaign(&state, 1_000).await);
    }
    let users = create_users(&stores, 200).await;
    // The writer and the delisting with no quiet period, in a loop, racing the issuances: a campaign is
    // delisted the moment its stream is empty, and listed again by the next issuance. The issuances come in
    // five waves, each started only once the campaigns were delisted since the last, so every wave races a
    // delisting however slow the machine.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let delisted = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let racing = tokio::spawn({
        let (stores, stop, delisted) = (stores.clone(), stop.clone(), delisted.clone());
        async move {
            let mut writer = Writer::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                writer.drain_once(&stores).await.unwrap();
                let now = coupon::writer::delist_quiet(&stores, Duration::ZERO).await.unwrap();
                delisted.fetch_add(now, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let mut missing: Vec<(CouponId, UserId)> = Vec::new();
    for wave in users.chunks(users.len() / 5) {
        let before = delisted.load(std::sync::atomic::Ordering::Relaxed);
        let requests: Vec<(CouponId, UserId)> = wave
            .iter()
            .flat_map(|&user| campaigns.iter().map(move |&coupon| (coupon, UserId::new(user).unwrap())))
            .collect();
        let wave_missing: Vec<(CouponId, UserId)> = stream::iter(requests)
            .map(|(coupon, user)| {
                let state = state.clone();
                async move {
                    state.coupons.issue(coupon, user).await.unwrap();
                    let held = state.coupons.held(user, None).await.unwrap();
                    (!held.iter().any(|h| h.coupon.id == coupon)).then_some((coupon, user))
                }
            })
            .buffer_unordered(50)
            .filter_map(|missing| async move { missing })
            .collect()
            .await;
        missing.extend(wave_missing);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while delisted.load(std::sync::atomic::Ordering::Relaxed) == before {
            assert!(std::time::Instant::now() < deadline, "the writer never emptied the streams after a wave");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    racing.await.unwrap();

    assert_eq!(missing, vec![], "issued (201) but missing from the owner's list right after");
    let mut writer = Writer::new();
    while writer.drain_once(&stores).await.unwrap() != Outcome::Idle {}
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_coupons").fetch_one(&stores.db).await.unwrap();
    assert_eq!(rows, 1_000, "every issuance persisted once");
}

#[tokio::test]
async fn my_coupons_lists_them_over_http_with_the_status_filter() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let coupon = create_coupon(&app, 5).await;
    let (_, issued) = app.post(&format!("/api/v1/coupons/{coupon}/issue"), json!({ "userId": user })).await;
    // Right after the 201, whether or not the writer has run.
    let (status, body) = app.get(&format!("/api/v1/users/{user}/coupons")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["coupons"].as_array().unwrap().len(), 1, "{body}");
    let item = &body["coupons"][0];
    assert_eq!((item["couponId"].as_i64(), item["name"].as_str()), (Some(coupon), Some("flash")));
    assert_eq!((item["discountType"].as_str(), item["discountValue"].as_i64()), (Some("FIXED"), Some(1000)));
    assert_eq!((item["status"].as_str(), &item["usedAt"]), (Some("AVAILABLE"), &Value::Null));
    assert_eq!(item["issuedAt"], issued["issuedAt"]);
    let (_, body) = app.get(&format!("/api/v1/users/{user}/coupons?status=USED")).await;
    assert_eq!(body["coupons"], json!([]));
    let (_, body) = app.get(&format!("/api/v1/users/{user}/coupons?status=AVAILABLE")).await;
    assert_eq!(body["coupons"].as_array().unwrap().len(), 1);
    wait_persisted(&app, coupon, 1).await;
    let (_, after) = app.get(&format!("/api/v1/users/{user}/coupons")).await;
    assert_eq!(after["coupons"][0]["issuedAt"], issued["issuedAt"], "persisting changed issuedAt");
}

/// A campaign of `quantity` created in-process: FIXED 1 won off, active now, no end.
pub(crate) async fn campaign(state: &AppState, quantity: i64) -> CouponId {
    let new = coupon::NewCoupon::parse(
        coupon::CouponSpec::open_ended("c", coupon::DiscountType::Fixed, 1, quantity),
        chrono::Utc::now(),
    );
    state.coupons.create(new.unwrap()).await.unwrap().id
}

/// Runs the issue script itself for `users`, in one call, now.
pub(crate) async fn script_issue(stores: &Stores, coupon: CouponId, users: &[i64]) -> Vec<coupon::cache::IssueReply> {
    let users: Vec<UserId> = users.iter().map(|id| UserId::new(*id).unwrap()).collect();
    let gate = coupon::fence::ScriptGate::default();
    gate.issue(stores, coupon, &users, chrono::Utc::now().timestamp_micros()).await.unwrap()
}

/// The coupon's issuance stream.
pub(crate) fn queue_key(stores: &Stores, coupon: CouponId) -> String {
    format!("{}coupon:{{{coupon}}}:queue", stores.redis.keys.prefix())
}

/// Entries in the coupon's issuance stream.
async fn queue_length(stores: &Stores, coupon: CouponId) -> i64 {
    stores.redis.client().xlen(queue_key(stores, coupon)).await.unwrap()
}

#[tokio::test]
async fn acknowledged_entries_are_trimmed_but_never_past_one_still_pending() {
    let app = app_without_writer().await;
    let state = app.state();
    let stores = &state.stores;
    let campaign = campaign(state, 10).await;
    script_issue(stores, campaign, &[1]).await;
    script_issue(stores, campaign, &[2]).await;
    let slow = coupon::cache::read_queues(&stores.redis, &[campaign], "slow", 10, None).await.unwrap();
    script_issue(stores, campaign, &[3]).await;
    script_issue(stores, campaign, &[4]).await;
    let fast = coupon::cache::read_queues(&stores.redis, &[campaign], "fast", 10, None).await.unwrap();
    assert_eq!((slow.entries.len(), fast.entries.len()), (2, 2));

    // The newer entries are persisted first: trimming them would drop the older, pending ones too.
    coupon::cache::ack(&stores.redis, &fast.entries).await.unwrap();
    assert_eq!(queue_length(stores, campaign).await, 4);
    coupon::cache::ack(&stores.redis, &slow.entries).await.unwrap();
    assert_eq!(queue_length(stores, campaign).await, 0);

    // An entry not yet delivered stays when everything delivered is trimmed.
    script_issue(stores, campaign, &[5]).await;
    script_issue(stores, campaign, &[6]).await;
    let one = coupon::cache::read_queues(&stores.redis, &[campaign], "fast", 1, None).await.unwrap();
    coupon::cache::ack(&stores.redis, &one.entries).await.unwrap();
    assert_eq!(queue_length(stores, campaign).await, 1);
    let rest = coupon::cache::read_queues(&stores.redis, &[campaign], "fast", 10, None).await.unwrap();
    assert_eq!(
        rest.entries.iter().map(|e| e.user_ids.clone()).collect::<Vec<_>>(),
        vec![vec![UserId::new(6).unwrap()]]
    );
}

#[tokio::test]
async fn the_writer_reads_a_quiet_coupon_on_its_next_full_pass_only() {
    let app = app_without_writer().await;
    let stores = &app.state().stores;
    let (busy, quiet) = (campaign(app.state(), 10).await, campaign(app.state(), 10).await);
    script_issue(stores, busy, &[1]).await;
    let mut writer = Writer::new();
    assert_eq!(
        writer.drain_once(stores).await.unwrap(),
        Outcome::Persisted { issuances: 1, backlog: false },
        "the first pass reads every stream"
    );

    script_issue(stores, busy, &[2]).await;
    script_issue(stores, quiet, &[3]).await;
    assert_eq!(
        writer.drain_once(stores).await.unwrap(),
        Outcome::Persisted { issuances: 1, backlog: false },
        "only the busy stream"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        writer.drain_once(stores).await.unwrap(),
        Outcome::Persisted { issuances: 1, backlog: false },
        "the quiet one, a second later"
    );
    let persisted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_coupons").fetch_one(&stores.db).await.unwrap();
    assert_eq!(persisted, 3);
}

#[tokio::test]
async fn a_full_read_reports_a_backlog_and_the_next_step_takes_the_rest() {
    let app = app_without_writer().await;
    let stores = &app.state().stores;
    let full = coupon::writer::READ_COUNT as i64;
    let campaign = campaign(app.state(), full + 10).await;
    for user in 1..=full + 1 {
        script_issue(stores, campaign, &[user]).await;
    }
    let mut writer = Writer::new();
    let first = writer.drain_once(stores).await.unwrap();
    assert_eq!(first, Outcome::Persisted { issuances: full as usize, backlog: true });
    assert_eq!(writer.drain_once(stores).await.unwrap(), Outcome::Persisted { issuances: 1, backlog: false });
    assert_eq!(coupon::db::count_persisted(&stores.db, campaign).await.unwrap(), full + 1);
}

#[tokio::test]
async fn an_ended_campaign_leaves_the_registry_once_everything_it_issued_is_persisted() {
    let app = app_without_writer().await;
    let state = app.state();
    let stores = &state.stores;
    let now = chrono::Utc::now();
    let ended = |name: &str, end: chrono::DateTime<chrono::Utc>| {
        let start = end - chrono::TimeDelta::hours(1);
        coupon::NewCoupon::parse(
            coupon::CouponSpec {
                starts_at: Some(start),
                ends_at: Some(end),
                ..coupon::CouponSpec::open_ended(name, coupon::DiscountType::Fixed, 1, 10)
            },
            now,
        )
        .unwrap()
    };
    let long_ago = now - chrono::TimeDelta::hours(1);
    let drained = state.coupons.create(ended("drained", long_ago)).await.unwrap().id;
    let queued = state.coupons.create(ended("queued", long_ago)).await.unwrap().id;
    let just_ended = now - chrono::TimeDelta::seconds(10);
    let recent = state.coupons.create(ended("recent", just_ended)).await.unwrap().id;
    let running = campaign(state, 10).await;
    // An issuance decided just before `queued` ended, still waiting in its stream.
    let user = UserId::new(create_users(stores, 1).await[0]).unwrap();
    let at = (long_ago - chrono::TimeDelta::seconds(1)).timestamp_micros();
    let fields = vec![("u", user.get().to_string()), ("t", at.to_string())];
    let _: String = stores.redis.client().xadd(queue_key(stores, queued), false, None, "*", fields).await.unwrap();

    let registered = || async {
        let mut ids = coupon::cache::registered(&stores.redis).await.unwrap();
        ids.sort();
        ids
    };
    let mut writer = Writer::new();
    assert_eq!(writer.drain_once(stores).await.unwrap(), Outcome::Persisted { issuances: 1, backlog: false });
    assert!(!registered().await.contains(&drained), "ended over a minute ago with an empty stream");
    assert_eq!(registered().await, vec![queued, recent, running], "an entry was still queued for `queued`");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(writer.drain_once(stores).await.unwrap(), Outcome::Idle);
    assert_eq!(registered().await, vec![recent, running], "`recent` ended within the margin");

    // The user still sees the coupon, now from MySQL alone.
    let held = state.coupons.held(user, None).await.unwrap();
    let held: Vec<(CouponId, i64)> = held.iter().map(|h| (h.coupon.id, h.issued_at.timestamp_micros())).collect();
    assert_eq!(held, vec![(queued, at)]);
}

#[tokio::test]
async fn the_writer_reclaims_entries_a_dead_consumer_left_pending() {
    let app = app_without_writer().await;
    let state = app.state();
    let stores = &state.stores;
    let users = create_users(stores, 3).await;
    let campaign = campaign(state, 10).await;
    for user in &users {
        state.coupons.issue(campaign, UserId::new(*user).unwrap()).await.unwrap();
    }
    // A consumer takes the entries and dies before acknowledging them.
    let taken = coupon::cache::read_queues(&stores.redis, &[campaign], "dead", 10, None).await.unwrap();
    assert_eq!(taken.entries.len(), 3);

    let mut writer = Writer::new();
    let started = Instant::now();
    let mut persisted = 0;
    while persisted < 3 {
        assert!(started.elapsed() < CATCH_UP, "pending entries never reclaimed");
        match writer.drain_once(stores).await.unwrap() {
            Outcome::Persisted { issuances, .. } => persisted += issuances,
            Outcome::Idle => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert_eq!(persisted, 3);
    assert!(started.elapsed() >= coupon::writer::CLAIM_IDLE - Duration::from_millis(500), "claimed too early");
    let rows = coupon::db::count_persisted(&stores.db, campaign).await.unwrap();
    assert_eq!(rows, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issuance_keeps_answering_while_mysql_is_down_and_the_writer_catches_up() {
    let mut mariadb = MariaDb::start();
    let mut store = isolated_store().await;
    store.database_url = create_database(mariadb.url("").trim_end_matches('/')).await;
    let app = TestApp::spawn_with(serve_config(store)).await;
    let users = create_users(&app.state.stores, 300).await;
    let coupon = create_coupon(&app, 1_000).await;

    let before = stampede(&[&app], users[..100].iter().map(|u| (coupon, *u)).collect()).await;
    mariadb.kill();
    let during = stampede(&[&app], users[100..200].iter().map(|u| (coupon, *u)).collect()).await;
    assert_eq!(winners(&during).len(), 100, "issuance stopped with MySQL");
    // The writer is failing now; the queue holds what it cannot persist.
    tokio::time::sleep(Duration::from_millis(500)).await;
    mariadb.resume();
    let after = stampede(&[&app], users[200..].iter().map(|u| (coupon, *u)).collect()).await;

    assert_eq!(winners(&before).len() + winners(&after).len(), 200);
    let body = wait_persisted(&app, coupon, 300).await;
    assert_eq!(body["issued"], 300);
}

#[tokio::test]
async fn after_redis_is_wiped_the_rebuild_refuses_the_winners_and_has_no_stock_left() {
    let redis = RedisServer::start();
    let mut store = isolated_store().await;
    store.redis_url = redis.url();
    let app = TestApp::spawn_with(serve_config(store)).await;
    let users = create_users(&app.state.stores, 8).await;
    let coupon = create_coupon(&app, 5).await;
    let first = stampede(&[&app], users.iter().map(|u| (coupon, *u)).collect()).await;
    let won: HashSet<i64> = winners(&first).into_iter().collect();
    assert_eq!(won.len(), 5);
    wait_persisted(&app, coupon, 5).await;

    // Redis restarted without persistence: everything is gone, the process restarts.
    let flush = |app: &TestApp| {
        let client = app.state.stores.redis.client().clone();
        async move { client.flushall::<()>(false).await.unwrap() }
    };
    flush(&app).await;
    let config = app.stop().await;
    let app = TestApp::spawn_with(config).await;
    let again = stampede(&[&app], users.iter().map(|u| (coupon, *u)).collect()).await;
    for (user, status) in &again {
        let want = if won.contains(user) { StatusCode::CONFLICT } else { StatusCode::GONE };
        assert_eq!(*status, want, "user {user}");
    }
    let body = progress(&app, coupon).await;
    assert_eq!((body["issued"].as_i64(), body["remaining"].as_i64()), (Some(5), Some(0)));

    // Wiped under a running process: the first request finds the keys missing and rebuilds them.
    flush(&app).await;
    let again = stampede(&[&app], users.iter().map(|u| (coupon, *u)).collect()).await;
    assert!(
        again
            .iter()
            .all(|(user, status)| *status == if won.contains(user) { StatusCode::CONFLICT } else { StatusCode::GONE })
    );
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("coupon_state_rebuilds_total"), "{metrics}");
}

/// The real binary, serving on a free port with these stores.
struct Process {
    child: Child,
    app_url: String,
}

impl Process {
    async fn start(store: &stampede::config::StoreConfig) -> Self {
        let port = crate::support::servers::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_stampede"))
            .arg("serve")
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &store.database_url)
            .env("REDIS_URL", &store.redis_url)
            .env("REDIS_PREFIX", &store.redis_prefix)
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("AUTH_JWT_SECRET", crate::support::JWT_SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn stampede");
        let process = Self { child, app_url: format!("http://127.0.0.1:{port}") };
        let started = Instant::now();
        loop {
            let ready = reqwest::get(format!("{}/health/ready", process.app_url)).await;
            if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "stampede did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process
    }

    /// SIGKILL: no graceful shutdown, no final batch.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_killed_hard_after_a_burst_persists_every_issuance_after_restart() {
    let store = isolated_store().await;
    let stores = Stores::connect(&store).await.unwrap();
    let users = create_users(&stores, 400).await;
    let first = Process::start(&store).await;
    let http = reqwest::Client::new();
    let (quantity, url) = (300, first.app_url.clone());
    let created: Value = http
        .post(format!("{url}/api/v1/admin/coupons"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "name": "kill", "discountType": "FIXED", "discountValue": 1, "totalQuantity": quantity }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let coupon = created["id"].as_i64().unwrap();
    let statuses: Vec<StatusCode> = stream::iter(users.clone())
        .map(|user| {
            let (http, url) = (&http, &url);
            async move {
                let response =
                    http.post(format!("{url}/api/v1/coupons/{coupon}/issue")).json(&json!({ "userId": user }));
                let response = response.bearer_auth(crate::support::token_for(user)).send();
                response.await.unwrap().status()
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    first.kill();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), quantity);

    let second = Process::start(&store).await;
    let started = Instant::now();
    loop {
        let body: Value = http
            .get(format!("{}/api/v1/admin/coupons/{coupon}", second.app_url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["issued"], quantity, "{body}");
        if body["persisted"] == quantity {
            break;
        }
        assert!(started.elapsed() < CATCH_UP, "not caught up: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let distinct: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT user_id) FROM user_coupons WHERE coupon_id = ?")
        .bind(coupon)
        .fetch_one(&stores.db)
        .await
        .unwrap();
    assert_eq!(distinct, quantity as i64);
}

/// Runs `stampede seed --users <users> --coupons <coupons> --coupon-quantity <quantity>` on `store`.
pub(crate) async fn seed(store: &StoreConfig, users: u64, coupons: u64, quantity: u64) -> stampede::seed::Seeded {
    #[derive(clap::Parser)]
    struct Seed {
        #[command(flatten)]
        config: stampede::config::SeedConfig,
    }
    let (users, coupons, quantity) = (users.to_string(), coupons.to_string(), quantity.to_string());
    let args = [
        "seed",
        "--database-url",
        &store.database_url,
        "--redis-url",
        &store.redis_url,
        "--redis-prefix",
        &store.redis_prefix,
        "--users",
        &users,
        "--coupons",
        &coupons,
        "--coupon-quantity",
        &quantity,
    ];
    stampede::seed::run(&<Seed as clap::Parser>::parse_from(args).config).await.unwrap()
}

#[tokio::test]
async fn seed_creates_coupons_that_are_issuable_at_once() {
    let store = isolated_store().await;
    let seeded = seed(&store, 3, 2, 2).await;
    assert_eq!(seeded.coupons.len(), 2);

    let app = TestApp::spawn_with(serve_config(store)).await;
    let first = seeded.first_user.unwrap().get();
    for coupon in &seeded.coupons {
        let results = stampede(&[&app], (first..first + 3).map(|user| (coupon.get(), user)).collect()).await;
        assert_eq!(winners(&results).len(), 2, "coupon {coupon}");
    }
}

/// The edges of what the contract accepts: the epoch, the first second past 32-bit TIMESTAMP, 2099 in the
/// business offset, and the last microsecond of 9999.
pub(crate) const EDGES: [&str; 4] =
    ["1970-01-01T00:00:00Z", "2038-01-19T03:14:08Z", "2099-01-01T00:00:00+09:00", "9999-12-31T23:59:59.999999Z"];

#[tokio::test]
async fn coupon_windows_from_1970_to_9999_are_stored_and_returned_exactly() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    let instant = |raw: &str| chrono::DateTime::parse_from_rfc3339(raw).unwrap().to_utc();
    for window in EDGES.windows(2) {
        let (starts, ends) = (window[0], window[1]);
        let body = json!({ "name": "edge", "discountType": "FIXED", "discountValue": 100, "totalQuantity": 5,
            "startsAt": starts, "endsAt": ends });
        let (status, created) = app.admin_post("/api/v1/admin/coupons", body).await;
        assert_eq!(status, StatusCode::CREATED, "{starts}..{ends}: {created}");
        let at = |field: &str| instant(created[field].as_str().unwrap());
        assert_eq!((at("startsAt"), at("endsAt")), (instant(starts), instant(ends)), "{created}");
        let id = CouponId::new(created["id"].as_i64().unwrap()).unwrap();
        let stored = coupon::db::find_coupon(app.db(), id).await.unwrap().unwrap();
        assert_eq!((stored.starts_at, stored.ends_at), (instant(starts), Some(instant(ends))), "{starts}..{ends}");
        // Only the first window contains today.
        let (status, body) = app.post(&format!("/api/v1/coupons/{id}/issue"), json!({ "userId": user })).await;
        let expected = if starts.starts_with("1970") { StatusCode::CREATED } else { StatusCode::UNPROCESSABLE_ENTITY };
        assert_eq!(status, expected, "{starts}..{ends}: {body}");
    }
    for (starts, ends) in
        [("1969-12-31T23:59:59.999999Z", "2000-01-01T00:00:00Z"), ("2000-01-01T00:00:00Z", "9999-12-31T23:59:59-00:01")]
    {
        let body = json!({ "name": "out", "discountType": "FIXED", "discountValue": 100, "totalQuantity": 5,
            "startsAt": starts, "endsAt": ends });
        let (status, body) = app.admin_post("/api/v1/admin/coupons", body).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")),
            "{starts}..{ends}: {body}"
        );
    }
}
