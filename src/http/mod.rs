//! The HTTP layer: routing, middleware, the error envelope and one module per resource. Handlers only
//! translate HTTP to domain calls; they know no SQL and no Redis command.

pub mod admin;
pub mod auth;
pub mod balance;
pub mod coupons;
pub mod error;
pub mod extract;
pub mod health;
pub mod middleware;
pub mod openapi;
pub mod orders;
pub mod products;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_axum::router::OpenApiRouter;

pub use self::error::{Error, Result};
use crate::state::AppState;

/// Largest accepted request body; larger gets 413 PAYLOAD_TOO_LARGE.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every documented route, with its OpenAPI description collected from the handlers.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base()).merge(health::router()).nest(
        "/api/v1",
        OpenApiRouter::new()
            .merge(admin::router())
            .merge(coupons::router())
            .merge(balance::router())
            .merge(orders::router())
            .merge(products::router()),
    )
}

/// The complete application: routes, `/openapi.json`, JSON fallbacks and middleware.
pub fn router(state: AppState) -> Router {
    let (routes, spec) = api().split_for_parts();
    routes
        .merge(openapi::router(spec))
        .fallback(|| async { Error::RouteNotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(middleware::limit_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::limit_address))
        .layer(CatchPanicLayer::custom(|_| Error::Panic.into_response()))
        .layer(axum::middleware::from_fn(middleware::observe))
        .with_state(state)
}
