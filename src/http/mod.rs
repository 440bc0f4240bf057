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

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
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
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), SequentialRequestIds::new()))
        .with_state(state)
}

/// The span of one request: method, matched route (not the raw path, to keep cardinality low) and id.
fn request_span(request: &Request<Body>) -> tracing::Span {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
    let id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info_span!("request", method = %request.method(), http.route = route, request.id = id)
}

/// Request count and latency per matched route and status. Every label value is a `'static` str, so
/// recording allocates nothing: this runs on every request of a stampede.
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |path| intern(path.as_str()));
    let response = next.run(request).await;
    let status = intern(response.status().as_str());
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed());
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A `'static` copy of a label value from a small fixed set (route templates, status codes): each is
/// leaked once, the first time it is seen.
fn intern(value: &str) -> &'static str {
    static SEEN: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(Default::default);
    if let Some(interned) = SEEN.read().expect("label set lock").get(value) {
        return interned;
    }
    let mut seen = SEEN.write().expect("label set lock");
    if let Some(interned) = seen.get(value) {
        return interned;
    }
    let interned: &'static str = Box::leak(value.into());
    seen.insert(interned);
    interned
}

/// Request ids that are unique without a random number per request: a random prefix per process and a
/// counter (`3f9a1c2e-1a2b`). A UUID v4 per request cost a `getrandom` system call each.
#[derive(Clone)]
struct SequentialRequestIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl SequentialRequestIds {
    fn new() -> Self {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self { prefix: random[..8].into(), next: Arc::default() }
    }
}

impl MakeRequestId for SequentialRequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id =
            HeaderValue::from_str(&format!("{}-{n:x}", self.prefix)).expect("hex digits and '-' are a valid header");
        Some(RequestId::new(id))
    }
}
