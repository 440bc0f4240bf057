//! Coupons: campaigns, first-come-first-served issuance, and the rules orders use to apply a discount.

pub mod db;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::id::{CouponId, UserId};
use crate::store::{StoreError, Stores};

/// Why a coupon operation failed.
#[derive(Debug, Error)]
pub enum Error {
    #[error("coupon {0} not found")]
    NotFound(CouponId),
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

/// How a coupon discounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiscountType {
    /// `discountValue` won off.
    Fixed,
    /// `discountValue` percent off.
    Rate,
}

impl DiscountType {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscountType::Fixed => "FIXED",
            DiscountType::Rate => "RATE",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "FIXED" => Some(DiscountType::Fixed),
            "RATE" => Some(DiscountType::Rate),
            _ => None,
        }
    }
}

/// A valid discount: FIXED takes more than 0 won, RATE 1..=100 percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discount {
    kind: DiscountType,
    value: i64,
}

impl Discount {
    pub fn new(kind: DiscountType, value: i64) -> Result<Self, Error> {
        match kind {
            DiscountType::Fixed if value <= 0 => Err(Error::Invalid("a FIXED discountValue must be > 0")),
            DiscountType::Rate if !(1..=100).contains(&value) => {
                Err(Error::Invalid("a RATE discountValue must be 1..=100"))
            }
            _ => Ok(Self { kind, value }),
        }
    }

    pub fn kind(self) -> DiscountType {
        self.kind
    }

    pub fn value(self) -> i64 {
        self.value
    }

    /// Won off `total`: FIXED takes `min(value, total)`, RATE `floor(total * rate / 100)`.
    pub fn amount_off(self, total: i64) -> i64 {
        match self.kind {
            DiscountType::Fixed => self.value.min(total),
            // i128: total * 100 must not overflow for any i64 total.
            DiscountType::Rate => (i128::from(total) * i128::from(self.value) / 100) as i64,
        }
    }
}

/// A coupon campaign.
#[derive(Debug, Clone)]
pub struct Coupon {
    pub id: CouponId,
    pub name: String,
    pub discount: Discount,
    pub total_quantity: i64,
    pub starts_at: DateTime<Utc>,
    /// `None`: no end.
    pub ends_at: Option<DateTime<Utc>>,
}

impl Coupon {
    /// Whether the campaign's window contains `now` (start inclusive, end exclusive).
    pub fn is_active_at(&self, now: DateTime<Utc>) -> bool {
        self.starts_at <= now && self.ends_at.is_none_or(|end| now < end)
    }
}

/// Whether an issued coupon can still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HeldStatus {
    Available,
    Used,
}

/// A coupon issued to a user.
#[derive(Debug, Clone)]
pub struct HeldCoupon {
    pub coupon: Coupon,
    pub user_id: UserId,
    pub status: HeldStatus,
    pub issued_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// The coupon `coupon_id` as held by `user_id`, or `None` when it was never issued to them.
pub async fn held_by(stores: &Stores, user_id: UserId, coupon_id: CouponId) -> Result<Option<HeldCoupon>, Error> {
    Ok(db::find_held(&stores.db, user_id, coupon_id).await?)
}
