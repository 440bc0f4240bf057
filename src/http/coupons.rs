//! Coupon endpoints: issuance and a user's coupons (the authenticated user's), campaign creation and progress
//! (admin).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Admin, AuthUser, IssuingUser};
use super::error::{ErrorBody, Result};
use super::extract::{Json, Path, Query};
use crate::coupon::view::{CouponBody, CouponProgress, HeldList, IssuedCoupon};
use crate::coupon::{CouponSpec, DiscountType, HeldStatus, NewCoupon};
use crate::id::{CouponId, UserId};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(issue_coupon))
        .routes(routes!(list_user_coupons))
        .routes(routes!(create_coupon))
        .routes(routes!(get_coupon_progress))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssueRequest {
    /// The authenticated user; may be left out (required in `AUTH_MODE=none`).
    user_id: Option<UserId>,
}

/// Issues the coupon to the user, first come first served.
#[utoipa::path(post, path = "/coupons/{couponId}/issue", tag = "coupons", request_body = IssueRequest,
    security(("bearer" = [])),
    params(("couponId" = i64, Path, description = "coupon id", minimum = 1)),
    responses((status = 201, body = IssuedCoupon), (status = 400, body = ErrorBody),
        (status = 403, description = "FORBIDDEN: userId is another user", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND or USER_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "ALREADY_ISSUED", body = ErrorBody),
        (status = 410, description = "SOLD_OUT", body = ErrorBody),
        (status = 422, description = "COUPON_NOT_ACTIVE", body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn issue_coupon(
    IssuingUser(caller): IssuingUser,
    State(app): State<AppState>,
    Path(coupon_id): Path<CouponId>,
    Json(req): Json<IssueRequest>,
) -> Result<(StatusCode, axum::Json<IssuedCoupon>)> {
    let issued = app.coupons.issue(coupon_id, caller.acting_for(req.user_id)?).await?;
    Ok((StatusCode::CREATED, axum::Json(issued.into())))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `AVAILABLE` or `USED`; absent means all.
    status: Option<HeldStatus>,
}

/// The user's coupons, newest issuance first, including issuances not yet persisted.
#[utoipa::path(get, path = "/users/{userId}/coupons", tag = "coupons", security(("bearer" = [])),
    params(("userId" = i64, Path, description = "user id", minimum = 1), ListQuery),
    responses((status = 200, body = HeldList), (status = 400, body = ErrorBody),
        (status = 403, description = "FORBIDDEN: another user's coupons", body = ErrorBody),
        (status = 404, description = "USER_NOT_FOUND", body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn list_user_coupons(
    AuthUser(caller): AuthUser,
    State(app): State<AppState>,
    Path(user_id): Path<UserId>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<HeldList>> {
    let held = app.coupons.held(caller.acting_for(Some(user_id))?, query.status).await?;
    Ok(axum::Json(held.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateCoupon {
    /// 1..=200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
    discount_type: DiscountType,
    /// FIXED: won off (> 0); RATE: percent off (1..=100).
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "crate::whole::i64")]
    discount_value: i64,
    /// 1..=2147483647.
    #[schema(minimum = 1, maximum = 2147483647)]
    #[serde(deserialize_with = "crate::whole::i64")]
    total_quantity: i64,
    /// Default: now.
    starts_at: Option<DateTime<Utc>>,
    /// Default: no end. Must be after `startsAt`.
    ends_at: Option<DateTime<Utc>>,
}

/// Creates a campaign; it is issuable as soon as this answers.
#[utoipa::path(post, path = "/admin/coupons", tag = "admin", security(("admin" = [])), request_body = CreateCoupon,
    responses((status = 201, body = CouponBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn create_coupon(
    _: Admin,
    State(app): State<AppState>,
    Json(req): Json<CreateCoupon>,
) -> Result<(StatusCode, axum::Json<CouponBody>)> {
    let spec = CouponSpec {
        name: &req.name,
        discount_type: req.discount_type,
        discount_value: req.discount_value,
        total_quantity: req.total_quantity,
        starts_at: req.starts_at,
        ends_at: req.ends_at,
    };
    let coupon = app.coupons.create(NewCoupon::parse(spec, Utc::now())?).await?;
    Ok((StatusCode::CREATED, axum::Json(CouponBody::from(&*coupon))))
}

/// How many were issued, remain, and are persisted.
#[utoipa::path(get, path = "/admin/coupons/{couponId}", tag = "admin", security(("admin" = [])),
    params(("couponId" = i64, Path, description = "coupon id", minimum = 1)),
    responses((status = 200, body = CouponProgress), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND", body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn get_coupon_progress(
    _: Admin,
    State(app): State<AppState>,
    Path(coupon_id): Path<CouponId>,
) -> Result<axum::Json<CouponProgress>> {
    Ok(axum::Json(app.coupons.progress(coupon_id).await?.into()))
}
