//! `/orders`: create (optionally paying at once), pay, read; each for the authenticated user's own orders.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::AuthUser;
use super::error::{ErrorBody, Result};
use super::extract::{Json, Path};
use crate::id::{CouponId, OrderId, UserId};
use crate::order::{self, ItemRequest, NewOrder, Order, Paid};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_order)).routes(routes!(pay_order)).routes(routes!(get_order))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateOrder {
    /// The authenticated user; may be left out (required in `AUTH_MODE=none`).
    user_id: Option<UserId>,
    /// 1..=100 distinct (product, option) lines, quantities 1..=1000.
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<ItemRequest>,
    coupon_id: Option<CouponId>,
    /// `true`: create and pay in one call; on a pay error no order is left behind.
    #[serde(default)]
    pay: bool,
}

/// Creates a PENDING order (or a PAID one with `"pay": true`).
#[utoipa::path(post, path = "/orders", tag = "orders", request_body = CreateOrder, security(("bearer" = [])),
    responses((status = 201, body = Order), (status = 400, body = ErrorBody),
        (status = 403, description = "FORBIDDEN: userId is another user", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn create_order(
    AuthUser(caller): AuthUser,
    State(app): State<AppState>,
    Json(req): Json<CreateOrder>,
) -> Result<(StatusCode, axum::Json<Order>)> {
    let new = NewOrder { user_id: caller.acting_for(req.user_id)?, items: req.items, coupon_id: req.coupon_id };
    let order = app.orders.create(new, req.pay).await?;
    Ok((StatusCode::CREATED, axum::Json(order)))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayRequest {
    /// The authenticated user, who must own the order; may be left out (required in `AUTH_MODE=none`).
    user_id: Option<UserId>,
}

/// Pays a PENDING order: stock, coupon, balance, payment and outbox event in one transaction.
#[utoipa::path(post, path = "/orders/{orderId}/pay", tag = "orders", request_body = PayRequest,
    security(("bearer" = [])), params(("orderId" = i64, Path, description = "Order id", minimum = 1)),
    responses((status = 200, body = Paid), (status = 400, body = ErrorBody),
        (status = 403, description = "FORBIDDEN: userId is another user", body = ErrorBody),
        (status = 404, description = "ORDER_NOT_FOUND, also for another user's order", body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn pay_order(
    AuthUser(caller): AuthUser,
    State(app): State<AppState>,
    Path(order_id): Path<OrderId>,
    Json(req): Json<PayRequest>,
) -> Result<axum::Json<Paid>> {
    Ok(axum::Json(app.orders.pay(caller.acting_for(req.user_id)?, order_id).await?))
}

/// The order with its current status; another user's order is answered as absent.
#[utoipa::path(get, path = "/orders/{orderId}", tag = "orders", security(("bearer" = [])),
    params(("orderId" = i64, Path, description = "Order id", minimum = 1)),
    responses((status = 200, body = Order), (status = 400, body = ErrorBody),
        (status = 404, description = "ORDER_NOT_FOUND, also for another user's order", body = ErrorBody)))]
async fn get_order(
    AuthUser(caller): AuthUser,
    State(app): State<AppState>,
    Path(order_id): Path<OrderId>,
) -> Result<axum::Json<Order>> {
    let order = app.orders.get(order_id).await?;
    if !caller.may_see(order.user_id) {
        return Err(order::Error::NotFound(order_id).into());
    }
    Ok(axum::Json(order))
}
