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
    modifiers(&BearerSchemes),
    components(schemas(super::error::ErrorBody)),
)]
struct Base;

/// Declares the bearer schemes operations refer to: `admin` (the `ADMIN_TOKEN`) and `bearer` (a user's JWT,
/// API.md section Identity). Public reads name neither.
struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A user's token: `sub` is the user id (`stampede token --user <id>`)"))
                    .build(),
            ),
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
    let mut document = serde_json::to_value(&spec).expect("the OpenAPI document serializes");
    document_links(&mut document);
    let json = serde_json::to_string_pretty(&document).expect("a JSON value serializes");
    Router::new().route(
        "/openapi.json",
        get(move || {
            let json = json.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], json) }
        }),
    )
}

/// Adds the answers an operation gives by its kind rather than by its handler, in one place: 413 and 415
/// where it takes a JSON body, 401 where it needs the admin token or a user's, 429 where it counts against
/// a user's rate limit, 503 (with `Retry-After`) wherever it
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
            let needs = |scheme: &str| {
                let security = serde_json::to_value(&operation.security).unwrap_or_default();
                security.as_array().is_some_and(|all| all.iter().any(|one| one.get(scheme).is_some()))
            };
            let (admin, user) = (needs("admin"), needs("bearer"));
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
            if user {
                let challenge = HeaderBuilder::new()
                    .schema(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String))
                    .description(Some(r#"`Bearer`, or `Bearer error="invalid_token"` when a token was refused"#))
                    .build();
                add("401", error("UNAUTHORIZED: no usable credentials").header("WWW-Authenticate", challenge).build());
                let limited = error("TOO_MANY_REQUESTS: over the user's rate limit")
                    .header("Retry-After", retry_after.clone())
                    .build();
                add("429", limited);
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

/// A link from a create operation's answer to an operation that uses the id it answered with.
struct Link {
    from: &'static str,
    status: &'static str,
    name: &'static str,
    to: &'static str,
    /// `(parameter of the target, runtime expression giving it)`.
    parameters: &'static [(&'static str, &'static str)],
}

/// Where the id a create operation answers with is used next. Clients (and schemathesis' stateful phase)
/// follow these from a created resource to the operations on it.
const LINKS: &[Link] = &[
    Link {
        from: "create_user",
        status: "201",
        name: "GetBalance",
        to: "get_balance",
        parameters: &[("userId", "$response.body#/id")],
    },
    Link {
        from: "create_user",
        status: "201",
        name: "ChargeBalance",
        to: "charge_balance",
        parameters: &[("userId", "$response.body#/id")],
    },
    Link {
        from: "create_user",
        status: "201",
        name: "ListBalanceHistory",
        to: "list_balance_history",
        parameters: &[("userId", "$response.body#/id")],
    },
    Link {
        from: "create_user",
        status: "201",
        name: "ListUserCoupons",
        to: "list_user_coupons",
        parameters: &[("userId", "$response.body#/id")],
    },
    Link {
        from: "create_product",
        status: "201",
        name: "GetProduct",
        to: "get_product",
        parameters: &[("productId", "$response.body#/id")],
    },
    Link {
        from: "create_product",
        status: "201",
        name: "AddProductOption",
        to: "add_product_option",
        parameters: &[("productId", "$response.body#/id")],
    },
    Link {
        from: "add_product_option",
        status: "201",
        name: "RestockProductOption",
        to: "restock_product_option",
        parameters: &[("productId", "$request.path.productId"), ("optionId", "$response.body#/id")],
    },
    Link {
        from: "create_coupon",
        status: "201",
        name: "IssueCoupon",
        to: "issue_coupon",
        parameters: &[("couponId", "$response.body#/id")],
    },
    Link {
        from: "create_coupon",
        status: "201",
        name: "GetCouponProgress",
        to: "get_coupon_progress",
        parameters: &[("couponId", "$response.body#/id")],
    },
    Link {
        from: "issue_coupon",
        status: "201",
        name: "ListUserCoupons",
        to: "list_user_coupons",
        parameters: &[("userId", "$response.body#/userId")],
    },
    Link {
        from: "create_order",
        status: "201",
        name: "GetOrder",
        to: "get_order",
        parameters: &[("orderId", "$response.body#/orderId")],
    },
    Link {
        from: "create_order",
        status: "201",
        name: "PayOrder",
        to: "pay_order",
        parameters: &[("orderId", "$response.body#/orderId")],
    },
];

/// Adds [`LINKS`] to the create operations' success responses. Written into the JSON document, since
/// utoipa 5.5 serializes a link's `operationId` as `operation_id`.
fn document_links(document: &mut serde_json::Value) {
    let operations = document["paths"].as_object_mut().expect("paths").values_mut().flat_map(|item| {
        item.as_object_mut().expect("a path item").values_mut().filter(|operation| operation.is_object())
    });
    for operation in operations {
        let id = operation["operationId"].as_str().unwrap_or_default().to_owned();
        for link in LINKS.iter().filter(|link| link.from == id) {
            let response = &mut operation["responses"][link.status];
            assert!(response.is_object(), "{id} documents no {} to link from", link.status);
            let parameters: serde_json::Map<String, serde_json::Value> =
                link.parameters.iter().map(|(name, value)| ((*name).to_owned(), (*value).into())).collect();
            response["links"][link.name] = serde_json::json!({ "operationId": link.to, "parameters": parameters });
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_link_leads_from_a_documented_answer_to_an_operation_taking_its_parameters() {
        let (_, spec) = super::super::api().split_for_parts();
        let mut document = serde_json::to_value(&spec).unwrap();
        super::document_links(&mut document);
        let operations: Vec<&serde_json::Value> = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values().filter(|operation| operation.is_object()))
            .collect();
        let mut links = 0;
        for operation in &operations {
            for response in operation["responses"].as_object().unwrap().values() {
                for link in response["links"].as_object().into_iter().flat_map(|links| links.values()) {
                    let target = operations
                        .iter()
                        .find(|o| o["operationId"] == link["operationId"])
                        .unwrap_or_else(|| panic!("no operation {}", link["operationId"]));
                    let names: Vec<_> =
                        target["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
                    for parameter in link["parameters"].as_object().unwrap().keys() {
                        assert!(names.contains(&parameter.as_str()), "{} takes no {parameter}", link["operationId"]);
                    }
                    links += 1;
                }
            }
        }
        assert_eq!(links, super::LINKS.len());
    }
}
