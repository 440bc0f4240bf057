//! SQL of the ranking: units sold in PAID orders (the source of truth the Redis day sets are rebuilt from)
//! and the names and prices that ranked products are shown with.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{MySqlPool, QueryBuilder};

use crate::id::{OrderId, ProductId};
use crate::store::mysql;

/// Ids per `IN (...)` list.
const IN_CHUNK: usize = 1_000;

/// One paid order line.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct PaidLine {
    pub order_id: OrderId,
    pub product_id: ProductId,
    pub quantity: i64,
}

/// Every line of the orders PAID in `[from, to)`.
pub async fn paid_lines(db: &MySqlPool, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<PaidLine>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.id AS order_id, i.product_id, CAST(i.quantity AS SIGNED) AS quantity
         FROM orders o JOIN order_items i ON i.order_id = o.id
         WHERE o.status = 'PAID' AND o.paid_at >= ? AND o.paid_at < ?",
    )
    .bind(mysql::datetime(from))
    .bind(mysql::datetime(to))
    .fetch_all(db)
    .await
}

/// The lines of those of `orders` that were PAID in `[from, to)`.
pub async fn paid_lines_of(
    db: &MySqlPool,
    orders: &[OrderId],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<PaidLine>, sqlx::Error> {
    let mut lines = Vec::new();
    for chunk in orders.chunks(IN_CHUNK) {
        let mut query = QueryBuilder::new(
            "SELECT o.id AS order_id, i.product_id, CAST(i.quantity AS SIGNED) AS quantity
             FROM orders o JOIN order_items i ON i.order_id = o.id
             WHERE o.status = 'PAID' AND o.paid_at >= ",
        );
        query
            .push_bind(mysql::datetime(from))
            .push(" AND o.paid_at < ")
            .push_bind(mysql::datetime(to))
            .push(" AND o.id IN ");
        mysql::push_list(&mut query, chunk.iter().copied());
        lines.extend(query.build_query_as::<PaidLine>().fetch_all(db).await?);
    }
    Ok(lines)
}

/// Whether any order was PAID in `[from, to)` (an index range probe on `orders_paid_by_time`).
pub async fn any_paid(db: &MySqlPool, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT id FROM orders WHERE status = 'PAID' AND paid_at >= ? AND paid_at < ? LIMIT 1")
            .bind(mysql::datetime(from))
            .bind(mysql::datetime(to))
            .fetch_optional(db)
            .await?;
    Ok(found.is_some())
}

/// Name and price of each of `ids` that exists.
pub async fn names_and_prices(
    db: &MySqlPool,
    ids: &[ProductId],
) -> Result<HashMap<ProductId, (String, i64)>, sqlx::Error> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(IN_CHUNK) {
        let mut query = QueryBuilder::new("SELECT id, name, price FROM products WHERE id IN ");
        mysql::push_list(&mut query, chunk.iter().copied());
        let rows: Vec<(ProductId, String, i64)> = query.build_query_as().fetch_all(db).await?;
        found.extend(rows.into_iter().map(|(id, name, price)| (id, (name, price))));
    }
    Ok(found)
}
