#![allow(dead_code, reason = "each test module uses a subset of the support")]
//! Test support: shared throw-away servers, one database and key prefix per test, and a running app
//! reached over real HTTP. `TEST_DATABASE_URL` (a server URL without database) and `TEST_REDIS_URL` use
//! existing servers instead.

pub mod proxy;
pub mod servers;

use std::net::SocketAddr;
use std::sync::OnceLock;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use stampede::app::App;
use stampede::config::{ServeConfig, StoreConfig};
use stampede::state::AppState;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use proxy::Proxy;
pub use servers::{MariaDb, RedisCluster, RedisServer};

/// The admin token every test app uses.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The HS256 secret every test app checks user tokens with (`AUTH_MODE=jwt`, the default).
pub const JWT_SECRET: &str = "test-jwt-secret-of-at-least-32-bytes";

/// A user-acting request that names no user (or an id that is none) is sent with a token for this id,
/// which is no user: it gets past authentication to the check it is about, and acts for nobody real.
pub const NOBODY: i64 = i64::MAX;

/// A token for `user_id`, signed with [`JWT_SECRET`], valid for an hour.
pub fn token_for(user_id: i64) -> String {
    let user = stampede::id::UserId::new(user_id).expect("a positive user id");
    stampede::identity::token::mint(JWT_SECRET.as_bytes(), user, std::time::Duration::from_secs(3_600))
}

/// Servers shared by every test of this binary, started on first use.
struct Shared {
    mysql_server_url: String,
    redis_url: String,
    _mariadb: Option<MariaDb>,
    _redis: Option<RedisServer>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (mysql_server_url, mariadb) = match std::env::var("TEST_DATABASE_URL") {
            Ok(url) => (url.trim_end_matches('/').to_owned(), None),
            Err(_) => {
                let server = MariaDb::start();
                (server.url("").trim_end_matches('/').to_owned(), Some(server))
            }
        };
        let (redis_url, redis) = match std::env::var("TEST_REDIS_URL") {
            Ok(url) => (url, None),
            Err(_) => {
                let server = RedisServer::start();
                (server.url(), Some(server))
            }
        };
        Shared { mysql_server_url, redis_url, _mariadb: mariadb, _redis: redis }
    })
}

/// A fresh, empty database on `server_url` (no trailing slash); returns its URL.
pub async fn create_database(server_url: &str) -> String {
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = stampede::store::mysql::connect(server_url, 1).await.expect("connect to the test MySQL server");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    format!("{server_url}/{name}")
}

/// Store settings for a new test: its own database and Redis key prefix.
pub async fn isolated_store() -> StoreConfig {
    let shared = shared();
    store_config(create_database(&shared.mysql_server_url).await, shared.redis_url.clone())
}

pub fn store_config(database_url: String, redis_url: String) -> StoreConfig {
    StoreConfig {
        database_url,
        redis_url,
        redis_prefix: format!("t{}:", uuid::Uuid::new_v4().simple()),
        database_pool_size: 16,
        redis_pool_size: 2,
        redis_wait_replicas: 0,
    }
}

/// The service configuration tests start from.
pub fn serve_config(store: StoreConfig) -> ServeConfig {
    ServeConfig {
        bind_addr: "127.0.0.1:0".parse().unwrap(),
        store,
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        data_platform_url: None,
        business_tz: stampede::config::parse_offset("+09:00").unwrap(),
        ranking: stampede::ranking::Config::default(),
        limits: stampede::balance::Limits::default(),
        retention: stampede::retention::Config::default(),
        // The default jwt mode with a test secret. Rate limits are off: many tests send far more than a user's
        // burst on purpose (200 parallel charges of one user); tests/api/identity.rs turns them on.
        auth: stampede::identity::Config {
            auth_jwt_secret: Some(JWT_SECRET.to_owned()),
            limits: stampede::identity::limits::Config::OFF,
            ..stampede::identity::Config::default()
        },
    }
}

/// A running app on a free port, with its own database and key prefix.
pub struct TestApp {
    pub addr: SocketAddr,
    pub state: AppState,
    pub config: ServeConfig,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl TestApp {
    /// A new app on an isolated database and prefix.
    pub async fn spawn() -> Self {
        Self::spawn_with(serve_config(isolated_store().await)).await
    }

    /// A new app with this configuration (for example the stores of a previous app, to test a restart).
    pub async fn spawn_with(config: ServeConfig) -> Self {
        let app = App::build(config.clone()).await.expect("build app");
        let addr = app.local_addr();
        let state = app.state().clone();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { app.run_until_stopped(token).await.expect("app runs") });
        let http = reqwest::Client::builder().pool_max_idle_per_host(512).build().unwrap();
        Self { addr, state, config, http, shutdown, task: Some(task) }
    }

    /// Graceful shutdown, as on SIGTERM; waits until the app has stopped.
    pub async fn stop(mut self) -> ServeConfig {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("app task");
        }
        self.config.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a request and returns status and JSON body (`Value::Null` for an empty body). A user-acting
    /// request carries a token for the user it acts for ([`TestApp::acting_user`]).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>, admin: bool) -> (StatusCode, Value) {
        let mut request = self.http.request(method.clone(), self.url(path));
        if admin {
            request = request.bearer_auth(ADMIN_TOKEN);
        } else if let Some(user) = self.acting_user(&method, path, body.as_ref()).await {
            request = request.bearer_auth(token_for(user));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request reaches the app");
        let status = response.status();
        let bytes = response.bytes().await.expect("response body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, body)
    }

    /// The user a request to `path` acts for, as a client of that user would know it: the `{userId}` of the
    /// path, the `userId` of the body, or the owner of the order read or paid (looked up in MySQL). `None` for
    /// a route that acts for no user; [`NOBODY`] for a user route whose user is not a valid id.
    pub async fn acting_user(&self, method: &Method, path: &str, body: Option<&Value>) -> Option<i64> {
        let path = path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
        let positive = |text: &str| text.parse::<i64>().ok().filter(|id| *id > 0);
        let named = body.and_then(|body| body["userId"].as_i64()).filter(|id| *id > 0);
        match segments.as_slice() {
            ["users", user, ..] => Some(positive(user).unwrap_or(NOBODY)),
            ["coupons", _, "issue"] | ["orders"] => Some(named.unwrap_or(NOBODY)),
            ["orders", order, ..] if *method == Method::GET || segments.get(2) == Some(&"pay") => {
                if let Some(named) = named {
                    return Some(named);
                }
                let owner = match positive(order) {
                    Some(order) => sqlx::query_scalar::<_, i64>("SELECT user_id FROM orders WHERE id = ?")
                        .bind(order)
                        .fetch_optional(self.db())
                        .await
                        .unwrap(),
                    None => None,
                };
                Some(owner.unwrap_or(NOBODY))
            }
            _ => None,
        }
    }

    /// A request to `path` that carries a token for `user_id`, for tests that build requests themselves.
    pub fn as_user(&self, method: Method, path: &str, user_id: i64) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(token_for(user_id))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None, false).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body), false).await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body), true).await
    }

    /// Creates a user through the admin API; returns its id.
    pub async fn create_user(&self, name: &str) -> i64 {
        let (status, body) = self.admin_post("/api/v1/admin/users", json!({ "name": name })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().unwrap()
    }

    /// Creates a product through the admin API; returns its id.
    pub async fn create_product(&self, name: &str, price: i64, stock: i64) -> i64 {
        let (status, body) =
            self.admin_post("/api/v1/admin/products", json!({ "name": name, "price": price, "stock": stock })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().unwrap()
    }

    /// Creates a product sold in options of `(name, stock)`, priced `price` each; returns its id and the
    /// options' ids in the order given.
    pub async fn create_product_with_options(
        &self,
        name: &str,
        price: i64,
        options: &[(&str, i64)],
    ) -> (i64, Vec<i64>) {
        let options: Vec<Value> = options.iter().map(|(name, stock)| json!({ "name": name, "stock": stock })).collect();
        let (status, body) = self
            .admin_post("/api/v1/admin/products", json!({ "name": name, "price": price, "options": options }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let ids = body["options"].as_array().unwrap().iter().map(|o| o["id"].as_i64().unwrap()).collect();
        (body["id"].as_i64().unwrap(), ids)
    }

    /// The id of the only option of a product created with a plain stock.
    pub async fn option_of(&self, product: i64) -> stampede::id::OptionId {
        let id: i64 = sqlx::query_scalar("SELECT id FROM product_options WHERE product_id = ?")
            .bind(product)
            .fetch_one(self.db())
            .await
            .unwrap();
        stampede::id::OptionId::new(id).unwrap()
    }

    /// The app's MySQL pool, for asserting on stored rows.
    pub fn db(&self) -> &sqlx::MySqlPool {
        &self.state.stores.db
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    /// Creates a coupon campaign and issues it to `user_id`, straight in MySQL (the admin coupon API is
    /// another module's): active since an hour ago, no end. Returns the coupon id.
    pub async fn insert_held_coupon(&self, user_id: i64, discount_type: &str, discount_value: i64) -> i64 {
        let now = chrono::Utc::now();
        let created = sqlx::query(
            "INSERT INTO coupons (name, discount_type, discount_value, total_quantity, starts_at) VALUES (?, ?, ?, 100, ?)",
        )
        .bind(format!("{discount_type} {discount_value}"))
        .bind(discount_type)
        .bind(discount_value)
        .bind(now - chrono::Duration::hours(1))
        .execute(self.db())
        .await
        .unwrap();
        let coupon_id = created.last_insert_id() as i64;
        sqlx::query("INSERT INTO user_coupons (coupon_id, user_id, status, issued_at) VALUES (?, ?, 'AVAILABLE', ?)")
            .bind(coupon_id)
            .bind(user_id)
            .bind(now)
            .execute(self.db())
            .await
            .unwrap();
        coupon_id
    }

    /// Charges `amount` to `user_id` through the API; returns the new balance.
    pub async fn charge(&self, user_id: i64, amount: i64) -> i64 {
        let (status, body) =
            self.post(&format!("/api/v1/users/{user_id}/balance/charge"), json!({ "amount": amount })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["balance"].as_i64().unwrap()
    }
}

/// Polls `condition` every 50 ms until it holds; panics after `timeout` naming `what`.
pub async fn eventually<F, Fut>(what: &str, timeout: std::time::Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "not within {timeout:?}: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Inserts a PAID order of `user_id`, paid at `paid_at`, with `(product_id, quantity)` lines (each of the
/// product's first option), straight in SQL as the pay transaction would leave it; returns the order id.
pub async fn insert_paid_order(
    db: &sqlx::MySqlPool,
    user_id: i64,
    paid_at: chrono::DateTime<chrono::Utc>,
    items: &[(i64, i64)],
) -> i64 {
    let done = sqlx::query(
        "INSERT INTO orders (user_id, status, total_amount, discount_amount, final_amount, paid_at)
         VALUES (?, 'PAID', 0, 0, 0, ?)",
    )
    .bind(user_id)
    .bind(paid_at)
    .execute(db)
    .await
    .unwrap();
    let order_id = done.last_insert_id() as i64;
    for (product_id, quantity) in items {
        sqlx::query(
            "INSERT INTO order_items (order_id, product_id, option_id, option_name, quantity, unit_price, amount)
             SELECT ?, product_id, MIN(id), 'default', ?, 0, 0 FROM product_options WHERE product_id = ?",
        )
        .bind(order_id)
        .bind(quantity)
        .bind(product_id)
        .execute(db)
        .await
        .unwrap();
    }
    order_id
}
