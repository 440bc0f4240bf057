//! SQL of the `coupons` and `user_coupons` tables.

use chrono::{DateTime, Utc};
use sqlx::{MySqlConnection, MySqlPool, QueryBuilder};

use super::cache::StreamId;
use super::{Coupon, Discount, DiscountType, HeldCoupon, HeldStatus, NewCoupon};
use crate::id::{CouponId, OrderId, UserId};
use crate::store::mysql;

/// An issuance joined with its campaign; the campaign's columns decode as a [`CouponRow`].
#[derive(sqlx::FromRow)]
struct HeldRow {
    #[sqlx(flatten)]
    coupon: CouponRow,
    user_id: UserId,
    status: HeldStatus,
    issued_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
}

impl HeldRow {
    fn into_held(self) -> Result<HeldCoupon, sqlx::Error> {
        Ok(HeldCoupon {
            coupon: self.coupon.into_coupon()?,
            user_id: self.user_id,
            status: self.status,
            issued_at: self.issued_at,
            used_at: self.used_at,
            unpersisted_generation: None,
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
    .bind(mysql::datetime(issued_at))
    .execute(&mut *tx)
    .await?;
    let done = sqlx::query(
        "UPDATE user_coupons SET status = 'USED', used_at = ?, order_id = ?
         WHERE coupon_id = ? AND user_id = ? AND status = 'AVAILABLE'",
    )
    .bind(mysql::datetime(now))
    .bind(order_id)
    .bind(coupon_id)
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[derive(sqlx::FromRow)]
struct CouponRow {
    id: CouponId,
    name: String,
    discount_type: DiscountType,
    discount_value: i64,
    total_quantity: i64,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
}

impl CouponRow {
    fn into_coupon(self) -> Result<Coupon, sqlx::Error> {
        let corrupt = |what: &str| sqlx::Error::Decode(format!("coupon {}: bad {what}", self.id).into());
        let discount = Discount::new(self.discount_type, self.discount_value).map_err(|_| corrupt("discount_value"))?;
        Ok(Coupon {
            id: self.id,
            name: self.name,
            discount,
            total_quantity: self.total_quantity,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
        })
    }
}

const COUPON_COLUMNS: &str =
    "id, name, discount_type, discount_value, CAST(total_quantity AS SIGNED) AS total_quantity,
    starts_at, ends_at";

/// Stores a campaign; returns its id.
pub async fn insert_coupon(db: &MySqlPool, new: &NewCoupon) -> Result<CouponId, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO coupons (name, discount_type, discount_value, total_quantity, starts_at, ends_at)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&new.name)
    .bind(new.discount.kind())
    .bind(new.discount.value())
    .bind(new.total_quantity)
    .bind(mysql::datetime(new.starts_at))
    .bind(new.ends_at.map(mysql::datetime))
    .execute(db)
    .await?;
    Ok(CouponId::new(done.last_insert_id() as i64).expect("AUTO_INCREMENT ids are positive"))
}

pub async fn find_coupon(db: &MySqlPool, id: CouponId) -> Result<Option<Coupon>, sqlx::Error> {
    let row: Option<CouponRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COUPON_COLUMNS} FROM coupons WHERE id = ?")))
            .bind(id)
            .fetch_optional(db)
            .await?;
    row.map(CouponRow::into_coupon).transpose()
}

/// Every campaign whose Redis state was not pruned, for the check of Redis state (at start-up, and when Redis
/// forgot its scripts): a pruned one has no state to check, and must not get one back.
pub async fn unpruned_coupons(db: &MySqlPool) -> Result<Vec<Coupon>, sqlx::Error> {
    let rows: Vec<CouponRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COUPON_COLUMNS} FROM coupons WHERE redis_pruned_at IS NULL ORDER BY id"
    )))
    .fetch_all(db)
    .await?;
    rows.into_iter().map(CouponRow::into_coupon).collect()
}

/// Up to `limit` coupons after `after` (by id) that ended before `ended_before` and whose Redis state is
/// still there: the retention job's candidates, a page at a time (`coupons_by_end_unpruned`).
pub async fn ended_unpruned(
    db: &MySqlPool,
    ended_before: DateTime<Utc>,
    after: i64,
    limit: u64,
) -> Result<Vec<CouponId>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM coupons WHERE redis_pruned_at IS NULL AND ends_at < ? AND id > ? ORDER BY id LIMIT ?",
    )
    .bind(mysql::datetime(ended_before))
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Records that the coupon's Redis state is gone for good, under the lock of [`lock_fences`].
pub async fn set_pruned(tx: &mut MySqlConnection, id: CouponId, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE coupons SET redis_pruned_at = ? WHERE id = ?")
        .bind(mysql::datetime(at))
        .bind(id)
        .execute(tx)
        .await?;
    Ok(())
}

/// Who holds `coupon_id` according to MySQL, with the issue time: what a Redis rebuild starts from. Read
/// inside the rebuild's transaction, after its lock on the coupon row, so no writer commits beside it.
pub async fn issued_rows(
    tx: &mut MySqlConnection,
    coupon_id: CouponId,
) -> Result<Vec<(UserId, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT user_id, issued_at FROM user_coupons WHERE coupon_id = ?")
        .bind(coupon_id)
        .fetch_all(tx)
        .await
}

/// MySQL's side of the fence between rebuilds and the writer (`migrations/0040_coupon_fence.sql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The generation of the coupon's current Redis state; only its entries are inserted as they are.
    pub generation: i64,
    /// The highest stream id the writer persisted.
    pub persisted: StreamId,
    /// The retention job deleted the coupon's Redis state for good (`migrations/0085_coupon_redis_pruned.sql`).
    pub pruned: bool,
}

#[derive(sqlx::FromRow)]
struct FenceRow {
    id: CouponId,
    generation: i64,
    persisted_ms: i64,
    persisted_seq: i64,
    redis_pruned_at: Option<DateTime<Utc>>,
}

impl FenceRow {
    fn fence(&self) -> Fence {
        Fence {
            generation: self.generation,
            persisted: StreamId { ms: self.persisted_ms, seq: self.persisted_seq },
            pruned: self.redis_pruned_at.is_some(),
        }
    }
}

const FENCE_COLUMNS: &str = "SELECT id, generation, persisted_ms, persisted_seq, redis_pruned_at FROM coupons";

/// The coupon's fence, without a lock: for a check that a locked read then confirms.
pub async fn fence(db: &MySqlPool, id: CouponId) -> Result<Option<Fence>, sqlx::Error> {
    let row: Option<FenceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!("{FENCE_COLUMNS} WHERE id = ?")))
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(row.as_ref().map(FenceRow::fence))
}

/// Locks the coupon rows of `ids` (`FOR UPDATE`, ascending id, so two lockers never deadlock) and returns
/// their fences. The writer holds these locks while it inserts and a rebuild while it reloads Redis, so a
/// rebuild reads either all of a batch or none of it.
pub async fn lock_fences(tx: &mut MySqlConnection, ids: &[CouponId]) -> Result<Vec<(CouponId, Fence)>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = QueryBuilder::new(FENCE_COLUMNS);
    query.push(" WHERE id IN ");
    mysql::push_list(&mut query, ids.iter().copied());
    query.push(" ORDER BY id FOR UPDATE");
    let rows: Vec<FenceRow> = query.build_query_as().fetch_all(tx).await?;
    Ok(rows.iter().map(|row| (row.id, row.fence())).collect())
}

/// Gives the coupon a new generation (a rebuild, under the lock of [`lock_fences`]).
pub async fn set_generation(tx: &mut MySqlConnection, id: CouponId, generation: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE coupons SET generation = ? WHERE id = ?").bind(generation).bind(id).execute(tx).await?;
    Ok(())
}

/// Raises the coupon's persisted high-water mark to `id` (never lowers it), in the writer's transaction.
pub async fn advance_persisted(tx: &mut MySqlConnection, coupon: CouponId, id: StreamId) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE coupons SET persisted_ms = ?, persisted_seq = ?
         WHERE id = ? AND (persisted_ms < ? OR (persisted_ms = ? AND persisted_seq < ?))",
    )
    .bind(id.ms)
    .bind(id.seq)
    .bind(coupon)
    .bind(id.ms)
    .bind(id.ms)
    .bind(id.seq)
    .execute(tx)
    .await?;
    Ok(())
}

/// Whether the coupon's Redis state is still of `generation`, holding a shared lock on the coupon row until
/// the transaction ends: the pay transaction, about to insert an issuance only Redis knows, must not do so
/// across a rebuild that did not count it. Taken before any `user_coupons` lock (the writer's order).
pub async fn generation_is(tx: &mut MySqlConnection, id: CouponId, generation: i64) -> Result<bool, sqlx::Error> {
    let current: Option<i64> = sqlx::query_scalar("SELECT generation FROM coupons WHERE id = ? LOCK IN SHARE MODE")
        .bind(id)
        .fetch_optional(tx)
        .await?;
    Ok(current == Some(generation))
}

/// Issuances of `coupon_id` durable in MySQL.
pub async fn count_persisted(db: &MySqlPool, coupon_id: CouponId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM user_coupons WHERE coupon_id = ?").bind(coupon_id).fetch_one(db).await
}

/// One issuance for [`insert_issued`].
pub struct NewIssuance {
    pub coupon_id: CouponId,
    pub user_id: UserId,
    pub issued_at: DateTime<Utc>,
}

/// Persists issuances with multi-row `INSERT IGNORE`s in the caller's transaction: a row already there (a
/// replayed stream entry, or one the pay transaction inserted first) is skipped by the primary key.
///
/// Why fixed statement sizes: each distinct row count is a distinct prepared statement, and preparing a
/// statement of hundreds of placeholders was a fifth of MariaDB's CPU in an issue run (parsing, and sending
/// back one metadata packet per placeholder). The batch is cut into powers of two from
/// [`INSERT_SIZES`]`[0]` down, and a tail below the smallest size is padded with copies of its last row
/// (the primary key skips them), so only a handful of statements are ever prepared on a connection and
/// sqlx's statement cache keeps them. Draining a backlog then cost MariaDB 5.4–6.3 µs of CPU per row
/// against 6.0–6.5 µs before.
pub async fn insert_issued(tx: &mut MySqlConnection, issuances: &[NewIssuance]) -> Result<(), sqlx::Error> {
    let mut rest = issuances;
    while let Some(last) = rest.last() {
        let size = INSERT_SIZES.iter().copied().find(|&size| size <= rest.len()).unwrap_or(MIN_INSERT);
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        let padding = std::iter::repeat_n(last, size - chunk.len());
        // `status` takes its default, AVAILABLE.
        let mut query = QueryBuilder::new("INSERT IGNORE INTO user_coupons (coupon_id, user_id, issued_at) ");
        query.push_values(chunk.iter().chain(padding), |mut row, issuance| {
            row.push_bind(issuance.coupon_id)
                .push_bind(issuance.user_id)
                .push_bind(mysql::datetime(issuance.issued_at));
        });
        query.build().execute(&mut *tx).await?;
        rest = tail;
    }
    Ok(())
}

/// Rows per `INSERT` statement, largest first: 3 placeholders a row stays far below MySQL's 65,535.
const INSERT_SIZES: [usize; 7] = [2048, 1024, 512, 256, 128, 64, 32];
const MIN_INSERT: usize = INSERT_SIZES[INSERT_SIZES.len() - 1];

/// Every persisted coupon of `user_id`, newest issuance first.
pub async fn list_held(db: &MySqlPool, user_id: UserId) -> Result<Vec<HeldCoupon>, sqlx::Error> {
    let rows: Vec<HeldRow> = sqlx::query_as(
        "SELECT c.id, c.name, c.discount_type, c.discount_value, CAST(c.total_quantity AS SIGNED) AS total_quantity,
                c.starts_at, c.ends_at, uc.user_id, uc.status, uc.issued_at, uc.used_at
         FROM user_coupons uc JOIN coupons c ON c.id = uc.coupon_id
         WHERE uc.user_id = ?
         ORDER BY uc.issued_at DESC, uc.coupon_id DESC",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    rows.into_iter().map(HeldRow::into_held).collect()
}
