//! `/openapi.json`: generated from the handlers' `#[utoipa::path]` annotations, so it cannot drift.

use axum::Router;
use axum::routing::get;
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "stampede", description = "Redis-first coupon and ranking engine for flash sales"),
    modifiers(&AdminToken),
    components(schemas(super::error::ErrorBody)),
)]
struct Base;

/// Declares the bearer scheme the admin endpoints refer to.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document's fixed part; paths are merged in by the routers.
pub fn base() -> utoipa::openapi::OpenApi {
    Base::openapi()
}

/// Serves the finished document.
pub fn router(spec: utoipa::openapi::OpenApi) -> Router<AppState> {
    let json = spec.to_pretty_json().expect("the OpenAPI document serializes");
    Router::new().route(
        "/openapi.json",
        get(move || {
            let json = json.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], json) }
        }),
    )
}
