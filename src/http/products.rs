//! Products: the listing, details with view counts, the admin endpoints that create products and options and
//! restock them, and the top-products ranking with its admin refresh.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Admin;
use super::error::{ErrorBody, Result};
use super::extract::{Json, Path, Query};
use crate::id::{OptionId, ProductId};
use crate::product::{
    Filter, ListRequest, OptionSpec, PageRequest, ProductDetail, ProductOption, ProductPage, ProductSpec, Restock,
    Sort, Status,
};
use crate::ranking::{TopProducts, Window};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    // `/products/top` is a static segment, which axum matches before the `{productId}` capture.
    OpenApiRouter::new()
        .routes(routes!(list_products))
        .routes(routes!(top_products))
        .routes(routes!(get_product))
        .routes(routes!(create_product))
        .routes(routes!(add_product_option))
        .routes(routes!(restock_product_option))
        .routes(routes!(refresh_ranking))
}

/// A body serialized by the domain, sent as JSON.
fn json(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page number from 0; default 0.
    #[param(minimum = 0)]
    page: Option<i64>,
    /// Products per page, 1..=100; default 20.
    #[param(minimum = 1, maximum = 100)]
    size: Option<i64>,
    /// Only products of this status.
    #[param(inline)]
    status: Option<Status>,
    /// Only products whose name contains this, ignoring case; matched literally (`%`, `_` and `\` are plain
    /// characters), 1..=100 characters.
    #[param(min_length = 1, max_length = 100)]
    q: Option<String>,
    /// Only products priced at least this many won (inclusive), >= 0; at most `maxPrice`.
    #[param(minimum = 0)]
    min_price: Option<i64>,
    /// Only products priced at most this many won (inclusive), >= 0; at least `minPrice`.
    #[param(minimum = 0)]
    max_price: Option<i64>,
    /// The order: `id` (default), `price`, `-price` (highest first), `sold`, `-sold` (most sold first); ties
    /// by lower id.
    #[param(inline)]
    sort: Option<Sort>,
}

/// Lists the products matching the filters (all combined with AND) in the order asked for, with their options;
/// `totalElements` counts the matches. A committed payment or restock shows (in `stock`, `status`,
/// `soldCount` and so in the filters) at once on the instance that committed it and within 100 ms on the
/// others.
#[utoipa::path(get, path = "/products", tag = "products", params(ListQuery),
    responses((status = 200, body = ProductPage),
        (status = 400, description = "INVALID_REQUEST: a parameter out of range or malformed, or minPrice > maxPrice",
            body = ErrorBody)))]
async fn list_products(State(app): State<AppState>, Query(query): Query<ListQuery>) -> Result<Response> {
    let request = ListRequest {
        filter: Filter::parse(query.status, query.q.as_deref(), query.min_price, query.max_price)?,
        sort: query.sort.unwrap_or_default(),
        page: PageRequest::parse(query.page, query.size)?,
    };
    Ok(json(app.products.list(&request).await?))
}

/// One product with its options, counting a view; `viewCount` includes views not yet flushed to MySQL.
#[utoipa::path(get, path = "/products/{productId}", tag = "products",
    params(("productId" = i64, Path, description = "product id", minimum = 1)),
    responses((status = 200, body = ProductDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_product(State(app): State<AppState>, Path(product_id): Path<ProductId>) -> Result<Response> {
    Ok(json(app.products.view(product_id).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateOption {
    /// 1..=100 characters, not only spaces; distinct within the product (compared byte for byte).
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    name: String,
    /// Won per unit, >= 0; the product's price when absent.
    #[schema(minimum = 0)]
    #[serde(default, deserialize_with = "crate::whole::option_i64")]
    price: Option<i64>,
    /// Units available, 0..=2147483647.
    #[schema(minimum = 0, maximum = 2147483647)]
    #[serde(deserialize_with = "crate::whole::i64")]
    stock: i64,
}

impl From<CreateOption> for OptionSpec {
    fn from(option: CreateOption) -> Self {
        OptionSpec { name: option.name, price: option.price, stock: option.stock }
    }
}

/// Either `stock` (one option named `default`) or `options`, not both.
#[derive(Deserialize, ToSchema)]
pub struct CreateProduct {
    /// 1..=200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
    /// Won per unit, >= 0: the price of every option that names none.
    #[schema(minimum = 0)]
    #[serde(deserialize_with = "crate::whole::i64")]
    price: i64,
    /// Units available, 0..=2147483647, sold in one option named `default`.
    #[schema(minimum = 0, maximum = 2147483647)]
    #[serde(default, deserialize_with = "crate::whole::option_i64")]
    stock: Option<i64>,
    /// 1..=100 options with distinct names.
    #[schema(min_items = 1, max_items = 100)]
    options: Option<Vec<CreateOption>>,
}

/// Creates a product sold in one option (`stock`) or several (`options`).
#[utoipa::path(post, path = "/admin/products", tag = "admin", security(("admin" = [])), request_body = CreateProduct,
    responses((status = 201, body = ProductDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_product(
    _: Admin,
    State(app): State<AppState>,
    Json(req): Json<CreateProduct>,
) -> Result<(StatusCode, axum::Json<ProductDetail>)> {
    let spec = ProductSpec {
        name: req.name,
        price: req.price,
        stock: req.stock,
        options: req.options.map(|options| options.into_iter().map(OptionSpec::from).collect()),
    };
    let product = app.products.create(spec.validate()?).await?;
    Ok((StatusCode::CREATED, axum::Json(ProductDetail::new(product, 0))))
}

/// Adds an option to a product (at most 100 per product).
#[utoipa::path(post, path = "/admin/products/{productId}/options", tag = "admin", security(("admin" = [])),
    request_body = CreateOption,
    params(("productId" = i64, Path, description = "product id", minimum = 1)),
    responses((status = 201, body = ProductOption), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn add_product_option(
    _: Admin,
    State(app): State<AppState>,
    Path(product_id): Path<ProductId>,
    Json(req): Json<CreateOption>,
) -> Result<(StatusCode, axum::Json<ProductOption>)> {
    let option = app.products.add_option(product_id, OptionSpec::from(req).validate()?).await?;
    Ok((StatusCode::CREATED, axum::Json(option)))
}

#[derive(Deserialize, ToSchema)]
pub struct RestockRequest {
    /// Units to add, 1..=1000000.
    #[schema(minimum = 1, maximum = 1000000)]
    #[serde(deserialize_with = "crate::whole::i64")]
    quantity: i64,
}

/// Adds units to an option; a sold-out option and its product are on sale again.
#[utoipa::path(post, path = "/admin/products/{productId}/options/{optionId}/restock", tag = "admin",
    security(("admin" = [])), request_body = RestockRequest,
    params(("productId" = i64, Path, description = "product id", minimum = 1),
        ("optionId" = i64, Path, description = "option id", minimum = 1)),
    responses((status = 200, body = ProductOption), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn restock_product_option(
    _: Admin,
    State(app): State<AppState>,
    Path((product_id, option_id)): Path<(ProductId, OptionId)>,
    Json(req): Json<RestockRequest>,
) -> Result<axum::Json<ProductOption>> {
    let restock = Restock::parse(req.quantity)?;
    Ok(axum::Json(app.products.restock(product_id, option_id, restock).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// Days in the window, today included, 1..=7; default 3.
    #[param(minimum = 1, maximum = 7)]
    days: Option<i64>,
    /// Products returned, 1..=50; default 5.
    #[param(minimum = 1, maximum = 50)]
    limit: Option<i64>,
}

/// Best sellers over the last `days` days, as of the last refresh. The body comes already serialized from
/// the instance's copy of the lists.
#[utoipa::path(get, path = "/products/top", tag = "products", params(TopQuery),
    responses((status = 200, body = TopProducts), (status = 400, body = ErrorBody)))]
async fn top_products(State(app): State<AppState>, Query(query): Query<TopQuery>) -> Result<Response> {
    let window = Window::parse(query.days, query.limit)?;
    Ok(json(app.ranking.top_json(window, Utc::now()).await?))
}

/// Recomputes every ranking window now; returns the default window (3 days, top 5).
#[utoipa::path(post, path = "/admin/ranking/refresh", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = TopProducts), (status = 401, body = ErrorBody)))]
async fn refresh_ranking(_: Admin, State(app): State<AppState>) -> Result<axum::Json<TopProducts>> {
    Ok(axum::Json(app.ranking.refresh_now(Utc::now()).await?))
}
