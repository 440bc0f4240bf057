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
pub fn router(mut spec: utoipa::openapi::OpenApi) -> Router<AppState> {
    document_common_answers(&mut spec);
    let json = spec.to_pretty_json().expect("the OpenAPI document serializes");
    Router::new().route(
        "/openapi.json",
        get(move || {
            let json = json.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], json) }
        }),
    )
}

/// Adds the answers an operation gives by its kind rather than by its handler, in one place: 413 and 415
/// where it takes a JSON body, 401 where it needs the admin token, 503 (with `Retry-After`) wherever it
/// touches a store. A handler's own description of one of these codes is kept.
fn document_common_answers(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, ResponseBuilder, path::HttpMethod};

    let error = |description: &str| {
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
        ResponseBuilder::new().description(description).content("application/json", content)
    };
    let retry_after = HeaderBuilder::new()
        .schema(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::Integer))
        .description(Some("Seconds to wait before retrying"))
        .build();
    for (path, item) in spec.paths.paths.iter_mut() {
        let storeless = ["/health/live", "/metrics", "/openapi.json"].contains(&path.as_str());
        for method in [HttpMethod::Get, HttpMethod::Post, HttpMethod::Put, HttpMethod::Delete, HttpMethod::Patch] {
            let operation = match method {
                HttpMethod::Get => item.get.as_mut(),
                HttpMethod::Post => item.post.as_mut(),
                HttpMethod::Put => item.put.as_mut(),
                HttpMethod::Delete => item.delete.as_mut(),
                HttpMethod::Patch => item.patch.as_mut(),
                _ => None,
            };
            let Some(operation) = operation else { continue };
            let has_body = operation.request_body.is_some();
            let admin = operation.security.as_ref().is_some_and(|security| !security.is_empty());
            let responses = &mut operation.responses.responses;
            let mut add = |code: &str, response: utoipa::openapi::Response| {
                responses.entry(code.to_owned()).or_insert_with(|| response.into());
            };
            if has_body {
                add("413", error("PAYLOAD_TOO_LARGE: a body over 64 KiB").build());
                add("415", error("UNSUPPORTED_MEDIA_TYPE: the body is not `application/json`").build());
            }
            if admin {
                add("401", error("UNAUTHORIZED: missing or wrong admin token").build());
            }
            if !storeless {
                let unavailable = error("SERVICE_UNAVAILABLE: Redis or MySQL cannot serve now")
                    .header("Retry-After", retry_after.clone())
                    .build();
                add("503", unavailable);
            }
        }
    }
}
