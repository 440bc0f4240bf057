//! The HTTP layer: routing, middleware, the error envelope and one module per resource. Handlers only
//! translate HTTP to domain calls; they know no SQL and no Redis command.

pub mod admin;
pub mod balance;
pub mod coupons;
pub mod error;
pub mod extract;
pub mod health;
pub mod openapi;
pub mod orders;
pub mod products;

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

pub use self::error::{Error, Result};
use crate::app::AppState;

/// Largest accepted request body; larger gets 413 PAYLOAD_TOO_LARGE.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
        .layer(middleware::from_fn(record_metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(|_| Error::Panic.into_response()))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .with_state(state)
}

/// The span of one request: method, matched route (not the raw path, to keep cardinality low) and id.
fn request_span(request: &Request<Body>) -> tracing::Span {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
    let id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info_span!("request", method = %request.method(), http.route = route, request.id = id)
}

/// Request count and latency per matched route and status.
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let labels = [("method", method), ("route", route), ("status", response.status().as_u16().to_string())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed());
    response
}
