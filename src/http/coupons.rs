//! Coupon endpoints: issuance and a user's coupons (public), campaign creation and progress (admin).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ErrorBody, Result};
use super::extract::{Admin, Json, Path, Query};
use crate::coupon::{Coupon, CouponSpec, DiscountType, HeldCoupon, HeldStatus, NewCoupon};
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
    user_id: UserId,
}

/// An issued coupon, as the 201 of an issuance reports it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCoupon {
    coupon_id: CouponId,
    user_id: UserId,
    status: HeldStatus,
    issued_at: DateTime<Utc>,
}

/// Issues the coupon to the user, first come first served.
#[utoipa::path(post, path = "/coupons/{couponId}/issue", tag = "coupons", request_body = IssueRequest,
    params(("couponId" = i64, Path, description = "coupon id", minimum = 1)),
    responses((status = 201, body = IssuedCoupon), (status = 400, body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND or USER_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "ALREADY_ISSUED", body = ErrorBody),
        (status = 410, description = "SOLD_OUT", body = ErrorBody),
        (status = 422, description = "COUPON_NOT_ACTIVE", body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn issue_coupon(
    State(app): State<AppState>,
    Path(coupon_id): Path<CouponId>,
    Json(req): Json<IssueRequest>,
) -> Result<(StatusCode, axum::Json<IssuedCoupon>)> {
    let issued = app.coupons.issue(coupon_id, req.user_id).await?;
    let body = IssuedCoupon {
        coupon_id: issued.coupon_id,
        user_id: issued.user_id,
        status: HeldStatus::Available,
        issued_at: issued.issued_at,
    };
    Ok((StatusCode::CREATED, axum::Json(body)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `AVAILABLE` or `USED`; absent means all.
    status: Option<HeldStatus>,
}

/// One coupon a user holds.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldItem {
    coupon_id: CouponId,
    name: String,
    discount_type: DiscountType,
    discount_value: i64,
    status: HeldStatus,
    issued_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
}

impl From<HeldCoupon> for HeldItem {
    fn from(held: HeldCoupon) -> Self {
        Self {
            coupon_id: held.coupon.id,
            name: held.coupon.name,
            discount_type: held.coupon.discount.kind(),
            discount_value: held.coupon.discount.value(),
            status: held.status,
            issued_at: held.issued_at,
            used_at: held.used_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct HeldList {
    coupons: Vec<HeldItem>,
}

/// The user's coupons, newest issuance first, including issuances not yet persisted.
#[utoipa::path(get, path = "/users/{userId}/coupons", tag = "coupons",
    params(("userId" = i64, Path, description = "user id", minimum = 1), ListQuery),
    responses((status = 200, body = HeldList), (status = 400, body = ErrorBody),
        (status = 404, description = "USER_NOT_FOUND", body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn list_user_coupons(
    State(app): State<AppState>,
    Path(user_id): Path<UserId>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<HeldList>> {
    let held = app.coupons.held(user_id, query.status).await?;
    Ok(axum::Json(HeldList { coupons: held.into_iter().map(HeldItem::from).collect() }))
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

/// A campaign.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouponBody {
    id: CouponId,
    name: String,
    discount_type: DiscountType,
    discount_value: i64,
    total_quantity: i64,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
}

impl From<&Coupon> for CouponBody {
    fn from(c: &Coupon) -> Self {
        Self {
            id: c.id,
            name: c.name.clone(),
            discount_type: c.discount.kind(),
            discount_value: c.discount.value(),
            total_quantity: c.total_quantity,
            starts_at: c.starts_at,
            ends_at: c.ends_at,
        }
    }
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

/// A campaign's sale and persistence progress.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouponProgress {
    id: CouponId,
    name: String,
    total_quantity: i64,
    /// Issuances accepted so far (Redis).
    issued: i64,
    /// `totalQuantity - issued` (Redis).
    remaining: i64,
    /// Issuances durable in MySQL.
    persisted: i64,
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
    let p = app.coupons.progress(coupon_id).await?;
    Ok(axum::Json(CouponProgress {
        id: p.coupon.id,
        name: p.coupon.name.clone(),
        total_quantity: p.coupon.total_quantity,
        issued: p.issued,
        remaining: p.remaining,
        persisted: p.persisted,
    }))
}
