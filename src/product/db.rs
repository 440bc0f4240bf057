//! SQL of the `products` table.

use sqlx::{MySqlPool, QueryBuilder};

use super::Status;
use crate::id::ProductId;

pub async fn insert(
    db: &MySqlPool,
    name: &str,
    price: i64,
    stock: i64,
    status: Status,
) -> Result<ProductId, sqlx::Error> {
    let done = sqlx::query("INSERT INTO products (name, price, stock, status) VALUES (?, ?, ?, ?)")
        .bind(name)
        .bind(price)
        .bind(stock)
        .bind(status.as_str())
        .execute(db)
        .await?;
    Ok(ProductId::new(done.last_insert_id() as i64).expect("AUTO_INCREMENT ids are positive"))
}

/// Inserts `(name, price, stock)` rows in one statement; returns how many.
pub async fn insert_batch(db: &MySqlPool, rows: &[(String, i64, i64)]) -> Result<u64, sqlx::Error> {
    let mut query = QueryBuilder::new("INSERT INTO products (name, price, stock, status) ");
    query.push_values(rows, |mut row, (name, price, stock)| {
        row.push_bind(name).push_bind(price).push_bind(stock).push_bind(Status::for_stock(*stock).as_str());
    });
    Ok(query.build().execute(db).await?.rows_affected())
}
