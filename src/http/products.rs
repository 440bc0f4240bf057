//! Products (listing, detail with view counts) and the top-products ranking, plus the admin refresh of the
//! ranking.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ErrorBody, Result};
use super::extract::{Admin, Path, Query};
use crate::id::ProductId;
use crate::product::{self, PageRequest, ProductDetail, ProductPage};
use crate::ranking::{self, TopProducts, Window};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    // `/products/top` is a static segment, which axum matches before the `{productId}` capture.
    OpenApiRouter::new()
        .routes(routes!(list_products))
        .routes(routes!(top_products))
        .routes(routes!(get_product))
        .routes(routes!(refresh_ranking))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page number from 0; default 0.
    #[param(minimum = 0)]
    page: Option<i64>,
    /// Products per page, 1..=100; default 20.
    #[param(minimum = 1, maximum = 100)]
    size: Option<i64>,
}

/// Lists products by id. Served from a cache a few seconds old: stock and status may lag by that much.
#[utoipa::path(get, path = "/products", tag = "products", params(PageQuery),
    responses((status = 200, body = ProductPage), (status = 400, body = ErrorBody)))]
async fn list_products(State(app): State<AppState>, Query(query): Query<PageQuery>) -> Result<axum::Json<ProductPage>> {
    let request = PageRequest::parse(query.page, query.size)?;
    Ok(axum::Json(product::list(&app.stores, &app.product_gate, request).await?))
}

/// One product, counting a view; `viewCount` includes views not yet flushed to MySQL.
#[utoipa::path(get, path = "/products/{productId}", tag = "products",
    params(("productId" = i64, Path, description = "product id", minimum = 1)),
    responses((status = 200, body = ProductDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_product(
    State(app): State<AppState>,
    Path(product_id): Path<ProductId>,
) -> Result<axum::Json<ProductDetail>> {
    Ok(axum::Json(product::view(&app.stores, &app.product_gate, product_id).await?))
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
    let (settings, now) = (app.config.ranking_settings(), Utc::now());
    let body = ranking::top_json(&app.stores, settings, &app.ranking_gate, &app.ranking_copy, window, now).await?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

/// Recomputes every ranking window now; returns the default window (3 days, top 5).
#[utoipa::path(post, path = "/admin/ranking/refresh", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = TopProducts), (status = 401, body = ErrorBody)))]
async fn refresh_ranking(_: Admin, State(app): State<AppState>) -> Result<axum::Json<TopProducts>> {
    let (settings, now) = (app.config.ranking_settings(), Utc::now());
    let top = ranking::refresh(&app.stores, settings, now).await?;
    // This instance serves the new lists at once; the others at their next version check.
    app.ranking_copy.reload(&app.stores.redis, settings, now).await.map_err(ranking::Error::from)?;
    Ok(axum::Json(top))
}
