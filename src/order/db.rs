//! SQL of the `orders`, `order_items`, `payments` and `outbox` tables, and the guarded statements of the
//! pay transaction.

use chrono::{DateTime, Utc};
use sqlx::{Connection, MySqlConnection, MySqlPool, QueryBuilder};

use super::{Item, Order, Status};
use crate::id::{CouponId, OptionId, OrderId, ProductId, UserId};
use crate::platform::OrderEvent;
use crate::store::mysql;

/// The stock of each of `ids` that exists (a plain read: no lock).
pub async fn stocks(db: &MySqlPool, ids: &[OptionId]) -> Result<Vec<(OptionId, i64)>, sqlx::Error> {
    let mut query = QueryBuilder::new("SELECT id, CAST(stock AS SIGNED) FROM product_options WHERE id IN ");
    mysql::push_list(&mut query, ids.iter().copied());
    query.build_query_as().fetch_all(db).await
}

/// Stores a PENDING order with its items; returns its id.
pub async fn insert_order(db: &MySqlPool, order: &Order) -> Result<OrderId, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let mut tx = conn.begin().await?;
    let id = insert(&mut tx, order, Status::Pending, None).await?;
    tx.commit().await?;
    Ok(id)
}

/// Inserts `order` as PAID inside the caller's pay transaction (`"pay": true`); returns its id.
pub async fn insert_paid(tx: &mut MySqlConnection, order: &Order, now: DateTime<Utc>) -> Result<OrderId, sqlx::Error> {
    insert(tx, order, Status::Paid, Some(now)).await
}

async fn insert(
    tx: &mut MySqlConnection,
    order: &Order,
    status: Status,
    paid_at: Option<DateTime<Utc>>,
) -> Result<OrderId, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO orders (user_id, status, total_amount, discount_amount, final_amount, coupon_id, created_at, paid_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(order.user_id)
    .bind(status)
    .bind(order.total_amount)
    .bind(order.discount_amount)
    .bind(order.final_amount)
    .bind(order.coupon_id)
    .bind(mysql::datetime(order.created_at))
    .bind(paid_at.map(mysql::datetime))
    .execute(&mut *tx)
    .await?;
    let id = OrderId::new(done.last_insert_id() as i64).expect("AUTO_INCREMENT ids are positive");
    let mut items = QueryBuilder::new(
        "INSERT INTO order_items (order_id, product_id, option_id, option_name, quantity, unit_price, amount) ",
    );
    items.push_values(&order.items, |mut row, item| {
        row.push_bind(id)
            .push_bind(item.product_id)
            .push_bind(item.option_id)
            .push_bind(&item.option_name)
            .push_bind(item.quantity)
            .push_bind(item.unit_price)
            .push_bind(item.amount);
    });
    items.build().execute(&mut *tx).await?;
    Ok(id)
}

/// `PENDING -> PAID` for the owner; `false` when it is not PENDING any more (paid or failed meanwhile).
pub async fn mark_paid(
    tx: &mut MySqlConnection,
    order_id: OrderId,
    user_id: UserId,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE orders SET status = 'PAID', paid_at = ? WHERE id = ? AND user_id = ? AND status = 'PENDING'",
    )
    .bind(mysql::datetime(now))
    .bind(order_id)
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `PENDING -> FAILED`, outside any transaction; `false` (nothing changed) for an order paid or failed
/// meanwhile.
pub async fn mark_failed(db: &MySqlPool, order_id: OrderId) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE orders SET status = 'FAILED' WHERE id = ? AND status = 'PENDING'")
        .bind(order_id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes the exclusive lock on the user's coupon row, if it is persisted yet.
pub async fn lock_coupon(tx: &mut MySqlConnection, user_id: UserId, coupon_id: CouponId) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT status FROM user_coupons WHERE coupon_id = ? AND user_id = ? FOR UPDATE")
        .bind(coupon_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(())
}

/// Takes `quantity` units of an option and counts them sold; `false` (nothing changed) when fewer are left. An
/// option reaching 0 becomes SOLD_OUT: `status` is assigned first, from the stock before this UPDATE, which is
/// right whether the server evaluates assignments left to right (MySQL) or all from the old row. The sold
/// count rides on the same row lock as the stock, so it is exact under any concurrency at no extra cost.
pub async fn take_stock(tx: &mut MySqlConnection, option_id: OptionId, quantity: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE product_options SET status = IF(stock = ?, 'SOLD_OUT', status), stock = stock - ?, sold = sold + ?
         WHERE id = ? AND stock >= ?",
    )
    .bind(quantity)
    .bind(quantity)
    .bind(quantity)
    .bind(option_id)
    .bind(quantity)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn insert_payment(
    tx: &mut MySqlConnection,
    order_id: OrderId,
    user_id: UserId,
    amount: i64,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO payments (order_id, user_id, amount, paid_at) VALUES (?, ?, ?, ?)")
        .bind(order_id)
        .bind(user_id)
        .bind(amount)
        .bind(mysql::datetime(now))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Writes the order's event for the relay, in the pay transaction: committed with the payment or not at all.
pub async fn insert_outbox(tx: &mut MySqlConnection, event: &OrderEvent) -> Result<(), sqlx::Error> {
    let payload = serde_json::to_string(event).expect("an order event serializes");
    sqlx::query("INSERT INTO outbox (event_id, order_id, payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?)")
        .bind(&event.event_id)
        .bind(event.order_id)
        .bind(payload)
        .bind(mysql::datetime(event.paid_at))
        .bind(mysql::datetime(event.paid_at))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: OrderId,
    user_id: UserId,
    status: Status,
    total_amount: i64,
    discount_amount: i64,
    final_amount: i64,
    coupon_id: Option<CouponId>,
    created_at: DateTime<Utc>,
    paid_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    product_id: ProductId,
    option_id: OptionId,
    option_name: String,
    quantity: i64,
    unit_price: i64,
    amount: i64,
}

/// The order with its items (ascending product, then option id).
pub async fn find(db: &MySqlPool, order_id: OrderId) -> Result<Option<Order>, sqlx::Error> {
    let row: Option<OrderRow> = sqlx::query_as(
        "SELECT id, user_id, status, total_amount, discount_amount, final_amount, coupon_id, created_at, paid_at
         FROM orders WHERE id = ?",
    )
    .bind(order_id)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let items: Vec<ItemRow> = sqlx::query_as(
        "SELECT product_id, option_id, option_name, CAST(quantity AS SIGNED) AS quantity, unit_price, amount
         FROM order_items WHERE order_id = ? ORDER BY product_id, option_id",
    )
    .bind(order_id)
    .fetch_all(db)
    .await?;
    Ok(Some(Order {
        order_id: row.id,
        user_id: row.user_id,
        status: row.status,
        items: items
            .into_iter()
            .map(|i| Item {
                product_id: i.product_id,
                option_id: i.option_id,
                option_name: i.option_name,
                quantity: i.quantity,
                unit_price: i.unit_price,
                amount: i.amount,
            })
            .collect(),
        total_amount: row.total_amount,
        discount_amount: row.discount_amount,
        final_amount: row.final_amount,
        coupon_id: row.coupon_id,
        created_at: row.created_at,
        paid_at: row.paid_at,
    }))
}
