//! SQL of the `coupons` and `user_coupons` tables.

use chrono::{DateTime, Utc};
use sqlx::{MySqlConnection, MySqlPool};

use super::{Coupon, Discount, DiscountType, HeldCoupon, HeldStatus};
use crate::id::{CouponId, OrderId, UserId};

#[derive(sqlx::FromRow)]
struct HeldRow {
    id: CouponId,
    name: String,
    discount_type: String,
    discount_value: i64,
    total_quantity: i64,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
    user_id: UserId,
    status: String,
    issued_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
}

impl HeldRow {
    fn into_held(self) -> Result<HeldCoupon, sqlx::Error> {
        let corrupt = |what: &str| sqlx::Error::Decode(format!("coupon {}: bad {what}", self.id).into());
        let kind = DiscountType::parse(&self.discount_type).ok_or_else(|| corrupt("discount_type"))?;
        let discount = Discount::new(kind, self.discount_value).map_err(|_| corrupt("discount_value"))?;
        let status = match self.status.as_str() {
            "AVAILABLE" => HeldStatus::Available,
            "USED" => HeldStatus::Used,
            _ => return Err(corrupt("user_coupons.status")),
        };
        Ok(HeldCoupon {
            coupon: Coupon {
                id: self.id,
                name: self.name,
                discount,
                total_quantity: self.total_quantity,
                starts_at: self.starts_at,
                ends_at: self.ends_at,
            },
            user_id: self.user_id,
            status,
            issued_at: self.issued_at,
            used_at: self.used_at,
        })
    }
}

/// The persisted issuance of `coupon_id` to `user_id`, with its campaign.
pub async fn find_held(
    db: &MySqlPool,
    user_id: UserId,
    coupon_id: CouponId,
) -> Result<Option<HeldCoupon>, sqlx::Error> {
    let row: Option<HeldRow> = sqlx::query_as(
        "SELECT c.id, c.name, c.discount_type, c.discount_value, CAST(c.total_quantity AS SIGNED) AS total_quantity,
                c.starts_at, c.ends_at, uc.user_id, uc.status, uc.issued_at, uc.used_at
         FROM user_coupons uc JOIN coupons c ON c.id = uc.coupon_id
         WHERE uc.coupon_id = ? AND uc.user_id = ?",
    )
    .bind(coupon_id)
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    row.map(HeldRow::into_held).transpose()
}

/// Marks the coupon used by `order_id`, inside the caller's pay transaction; `false` when it is not
/// AVAILABLE to this user (already used, or never issued).
///
/// The issuance may not be persisted yet (the writer lags the Redis decision), so the row is first
/// inserted as the writer would; the writer's own `INSERT IGNORE` of it later changes nothing. The
/// conditional UPDATE is the guard: two transactions using one coupon serialize on its row lock and the
/// second sees `USED`.
pub async fn mark_used(
    tx: &mut MySqlConnection,
    user_id: UserId,
    coupon_id: CouponId,
    issued_at: DateTime<Utc>,
    order_id: OrderId,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "INSERT IGNORE INTO user_coupons (coupon_id, user_id, status, issued_at) VALUES (?, ?, 'AVAILABLE', ?)",
    )
    .bind(coupon_id)
    .bind(user_id)
    .bind(issued_at)
    .execute(&mut *tx)
    .await?;
    let done = sqlx::query(
        "UPDATE user_coupons SET status = 'USED', used_at = ?, order_id = ?
         WHERE coupon_id = ? AND user_id = ? AND status = 'AVAILABLE'",
    )
    .bind(now)
    .bind(order_id)
    .bind(coupon_id)
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}
