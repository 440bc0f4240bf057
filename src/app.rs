//! Building the application (stores, state, listener) and running it until the shutdown token fires.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServeConfig;
use crate::state::{AppState, Shared};
use crate::store::{StoreError, Stores};
use crate::{product, ranking};

/// A built application: connected, migrated and bound, not yet serving.
pub struct App {
    listener: TcpListener,
    state: AppState,
}

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(
        "ADMIN_TOKEN is the well-known development token and BIND_ADDR {0} is not a loopback address: \
         set ADMIN_TOKEN to a secret, or bind to 127.0.0.1"
    )]
    DevTokenExposed(SocketAddr),
    #[error(
        "Redis runs with maxmemory-policy {0}: it would evict coupon state and issue coupons twice; \
         set maxmemory-policy noeviction on every Redis node (REDIS_URL)"
    )]
    EvictingRedis(String),
    #[error(
        "AUTH_JWT_SECRET is the well-known development secret and BIND_ADDR {0} is not a loopback address: \
         set AUTH_JWT_SECRET to a secret of your own, or bind to 127.0.0.1"
    )]
    DevSecretExposed(SocketAddr),
    #[error(
        "AUTH_MODE=none believes any userId and BIND_ADDR {0} is not a loopback address: \
         use AUTH_MODE=jwt or gateway, or bind to 127.0.0.1"
    )]
    NoAuthExposed(SocketAddr),
    #[error(transparent)]
    Identity(#[from] crate::identity::ConfigError),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("cannot load coupon state: {0}")]
    Coupon(#[from] crate::coupon::Error),
    #[error("rebuilding the ranking's lost day sets: {0}")]
    Ranking(#[from] ranking::Error),
}

impl App {
    /// Connects, migrates and binds (port 0 picks a free one, as tests do).
    pub async fn build(config: ServeConfig) -> Result<Self, StartError> {
        if config.admin_token.as_deref() == Some(crate::config::DEV_ADMIN_TOKEN) && !config.bind_addr.ip().is_loopback()
        {
            return Err(StartError::DevTokenExposed(config.bind_addr));
        }
        check_exposure(&config)?;
        let identity = crate::identity::Identity::new(&config.auth)?;
        let stores = Stores::connect(&config.store).await?;
        // An evicting Redis drops keys of a coupon's state one at a time (the dedupe hash first, as the
        // coldest): never start on one (docs/operations.md#redis-eviction).
        if let Some(policy) = stores.redis.eviction_policies().await?.into_iter().find(|policy| policy != "noeviction")
        {
            return Err(StartError::EvictingRedis(policy));
        }
        let catalog = crate::coupon::Catalog::default();
        let users = crate::user::cache::KnownUsers::default();
        users.refresh(&stores.redis).await.map_err(StoreError::from)?;
        crate::coupon::restore_all(&stores, &catalog).await?;
        for day in ranking::rebuild_missing(&stores, config.ranking_settings(), chrono::Utc::now()).await? {
            tracing::info!(day = %day.day, orders = day.orders, units = day.units, "ranking day rebuilt from MySQL");
        }
        let listener = TcpListener::bind(config.bind_addr)
            .await
            .map_err(|source| StartError::Bind { addr: config.bind_addr, source })?;
        crate::telemetry::metrics();
        let coupons = crate::coupon::Coupons::start(stores.clone(), catalog, users.clone());
        let products = product::Catalog::new(stores.clone());
        let state = AppState(Arc::new(Shared {
            orders: crate::order::Orders::new(stores.clone(), products.clone()),
            balances: crate::balance::Balances::new(stores.clone(), config.limits),
            ranking: ranking::Ranking::new(stores.clone(), config.ranking_settings()),
            products,
            stores,
            config: Arc::new(config),
            coupons,
            users,
            identity,
        }));
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests and lets every background job
    /// finish the unit of work in hand before returning.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let jobs = TaskTracker::new();
        // Cancelled once the last request is answered and its views are in Redis: the view flusher's last run
        // then moves them all to MySQL.
        let drained = CancellationToken::new();
        spawn_background_jobs(&self.state, &jobs, &shutdown, &drained);
        jobs.close();
        tracing::info!(addr = %self.local_addr(), "serving");
        let router = crate::http::router(self.state.clone());
        // The peer's address is what gateway mode trusts and the per-address limit counts.
        let served = axum::serve(self.listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .map_err(StartError::Serve);
        // A server error must stop the jobs too.
        shutdown.cancel();
        // Views counted and changes made by the last requests, which drained after the jobs' last ticks.
        if let Err(error) = self.state.products.send_views().await {
            tracing::warn!(%error, "the last views were not sent to Redis and are lost");
        }
        if let Err(error) = self.state.products.announce().await {
            tracing::warn!(%error, "the last catalogue changes were not announced; other instances' copies expire");
        }
        drained.cancel();
        jobs.wait().await;
        self.state.stores.db.close().await;
        tracing::info!("stopped");
        served
    }
}

/// Refuses the settings that are safe on loopback only: the development JWT secret and `AUTH_MODE=none`.
fn check_exposure(config: &ServeConfig) -> Result<(), StartError> {
    if config.bind_addr.ip().is_loopback() {
        return Ok(());
    }
    if config.auth.auth_mode == crate::identity::AuthMode::None {
        return Err(StartError::NoAuthExposed(config.bind_addr));
    }
    if config.auth.auth_jwt_secret.as_deref() == Some(crate::identity::DEV_JWT_SECRET) {
        return Err(StartError::DevSecretExposed(config.bind_addr));
    }
    Ok(())
}

/// Starts the writer, relays and schedulers; each stops when `shutdown` is cancelled (the view flusher when
/// `drained` is). The jobs talk to Redis on their own connection, so their bulk traffic never delays a
/// request's reply.
fn spawn_background_jobs(
    state: &AppState,
    jobs: &TaskTracker,
    shutdown: &CancellationToken,
    drained: &CancellationToken,
) {
    let stores = state.stores.for_jobs();
    jobs.spawn(crate::coupon::writer::run(stores.clone(), shutdown.clone()));
    jobs.spawn(state.identity.clone().run(shutdown.clone()));
    jobs.spawn(state.users.clone().run(stores.redis.clone(), shutdown.clone()));
    let relay =
        crate::platform::relay::Relay::new(state.config.data_platform_url.as_deref(), state.config.ranking_settings());
    jobs.spawn(crate::platform::relay::run(stores.clone(), relay, shutdown.clone()));
    jobs.spawn(product::views::run(stores.clone(), state.products.clone(), drained.clone()));
    jobs.spawn(state.products.clone().run(shutdown.clone()));
    jobs.spawn(crate::retention::run(stores.clone(), state.config.retention, shutdown.clone()));
    let copy = state.ranking.published().clone();
    jobs.spawn(ranking::published::run(stores.redis.clone(), state.config.ranking_settings(), copy, shutdown.clone()));
    jobs.spawn(ranking::job::run(
        stores,
        state.config.ranking_settings(),
        state.config.ranking.refresh.clone(),
        shutdown.clone(),
    ));
}
