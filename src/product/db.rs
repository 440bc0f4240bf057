//! SQL of the `products` table.

use chrono::{DateTime, Utc};
use sqlx::{MySqlPool, QueryBuilder};

use super::{Product, Status, StoredProduct};
use crate::id::ProductId;
use crate::store::mysql;

/// Products per UPDATE when adding views; each statement stays far below MySQL's placeholder limit.
const VIEW_UPDATE_CHUNK: usize = 500;

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

#[derive(sqlx::FromRow)]
struct ProductRow {
    id: ProductId,
    name: String,
    price: i64,
    stock: i64,
    view_count: i64,
}

impl ProductRow {
    fn into_product(self) -> Product {
        Product {
            id: self.id,
            name: self.name,
            price: self.price,
            stock: self.stock,
            status: Status::for_stock(self.stock),
        }
    }
}

pub async fn find(db: &MySqlPool, id: ProductId) -> Result<Option<StoredProduct>, sqlx::Error> {
    let row: Option<ProductRow> =
        sqlx::query_as("SELECT id, name, price, CAST(stock AS SIGNED) AS stock, view_count FROM products WHERE id = ?")
            .bind(id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|row| {
        let flushed_views = row.view_count;
        StoredProduct { product: row.into_product(), flushed_views }
    }))
}

/// `limit` products from `offset`, ordered by id.
pub async fn page(db: &MySqlPool, limit: i64, offset: i64) -> Result<Vec<Product>, sqlx::Error> {
    let rows: Vec<ProductRow> = sqlx::query_as(
        "SELECT id, name, price, CAST(stock AS SIGNED) AS stock, view_count FROM products ORDER BY id LIMIT ? OFFSET ?",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(ProductRow::into_product).collect())
}

pub async fn count(db: &MySqlPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM products").fetch_one(db).await
}

/// Adds a batch of views (ascending product ids) in one transaction recorded under `batch_id`; `false`
/// when that batch was already applied, in which case nothing changes.
pub async fn add_views(
    db: &MySqlPool,
    batch_id: &str,
    views: &[(ProductId, i64)],
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    // A concurrent flusher of the same batch waits on this row's lock, then finds it and skips.
    let recorded = sqlx::query("INSERT IGNORE INTO product_view_flushes (batch_id, flushed_at) VALUES (?, ?)")
        .bind(batch_id)
        .bind(mysql::datetime(now))
        .execute(&mut *tx)
        .await?;
    if recorded.rows_affected() == 0 {
        return Ok(false);
    }
    for chunk in views.chunks(VIEW_UPDATE_CHUNK) {
        // `WHERE id IN` is a primary-key range scan in ascending order, the same lock order the pay
        // transaction uses, so the two cannot deadlock.
        let mut query = QueryBuilder::new("UPDATE products SET view_count = view_count + CASE id");
        for (id, count) in chunk {
            query.push(" WHEN ").push_bind(*id).push(" THEN ").push_bind(*count);
        }
        query.push(" ELSE 0 END WHERE id IN (");
        let mut ids = query.separated(", ");
        for (id, _) in chunk {
            ids.push_bind(*id);
        }
        query.push(")");
        query.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Forgets batch ids recorded before `before`; a batch is retried within seconds, never days later.
pub async fn prune_view_flushes(db: &MySqlPool, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM product_view_flushes WHERE flushed_at < ? LIMIT 1000")
        .bind(mysql::datetime(before))
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}
