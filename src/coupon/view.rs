//! The coupon bodies the HTTP contract answers with, built from the domain's types (which keep the
//! discount as one validated value and a held coupon's persistence state, neither of which is on the wire).

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Coupon, DiscountType, HeldCoupon, HeldStatus, Issued, Progress};
use crate::id::{CouponId, UserId};

/// An issued coupon, as the 201 of an issuance reports it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCoupon {
    coupon_id: CouponId,
    user_id: UserId,
    status: HeldStatus,
    issued_at: DateTime<Utc>,
}

impl From<Issued> for IssuedCoupon {
    fn from(issued: Issued) -> Self {
        Self {
            coupon_id: issued.coupon_id,
            user_id: issued.user_id,
            status: HeldStatus::Available,
            issued_at: issued.issued_at,
        }
    }
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

/// A user's coupons.
#[derive(Serialize, ToSchema)]
pub struct HeldList {
    coupons: Vec<HeldItem>,
}

impl From<Vec<HeldCoupon>> for HeldList {
    fn from(held: Vec<HeldCoupon>) -> Self {
        Self { coupons: held.into_iter().map(HeldItem::from).collect() }
    }
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

impl From<Progress> for CouponProgress {
    fn from(p: Progress) -> Self {
        Self {
            id: p.coupon.id,
            name: p.coupon.name.clone(),
            total_quantity: p.coupon.total_quantity,
            issued: p.issued,
            remaining: p.remaining,
            persisted: p.persisted,
        }
    }
}
