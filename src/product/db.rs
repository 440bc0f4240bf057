//! SQL of the `products` and `product_options` tables.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Connection, MySqlConnection, MySqlPool, QueryBuilder};

use super::{MAX_OPTIONS, MAX_STOCK, NewOption, NewProduct, Product, ProductOption, Status};
use crate::id::{OptionId, ProductId};
use crate::store::mysql;

/// Products per UPDATE when adding views; each statement stays far below MySQL's placeholder limit.
const VIEW_UPDATE_CHUNK: usize = 500;

/// Option rows per INSERT: 5 placeholders each, far below MySQL's limit of 65,535.
const OPTION_INSERT_CHUNK: usize = 10_000;

/// Stores a product and its options in one transaction; returns it as stored.
pub async fn insert(db: &MySqlPool, new: &NewProduct) -> Result<Product, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let mut tx = conn.begin().await?;
    let done = sqlx::query("INSERT INTO products (name, price) VALUES (?, ?)")
        .bind(&new.name)
        .bind(new.price)
        .execute(&mut *tx)
        .await?;
    let id = ProductId::new(done.last_insert_id() as i64).expect("AUTO_INCREMENT ids are positive");
    insert_options(&mut tx, &option_rows(id, new)).await?;
    let options = options_of(&mut *tx, &[id]).await?.remove(&id).unwrap_or_default();
    tx.commit().await?;
    Ok(Product::new(id, new.name.clone(), new.price, options, 0))
}

/// Stores many products with their options in one transaction; returns how many products.
///
/// One multi-row INSERT gets consecutive AUTO_INCREMENT ids (InnoDB reserves a known row count at once in
/// every lock mode), so the n-th product has the first id plus n.
pub async fn insert_batch(db: &MySqlPool, products: &[NewProduct]) -> Result<u64, sqlx::Error> {
    if products.is_empty() {
        return Ok(0);
    }
    let mut conn = db.acquire().await?;
    let mut tx = conn.begin().await?;
    let mut query = QueryBuilder::new("INSERT INTO products (name, price) ");
    query.push_values(products, |mut row, product| {
        row.push_bind(&product.name).push_bind(product.price);
    });
    let done = query.build().execute(&mut *tx).await?;
    let first = done.last_insert_id() as i64;
    let rows: Vec<OptionInsert> = products
        .iter()
        .zip(first..)
        .flat_map(|(product, id)| option_rows(ProductId::new(id).expect("AUTO_INCREMENT ids are positive"), product))
        .collect();
    for chunk in rows.chunks(OPTION_INSERT_CHUNK) {
        insert_options(&mut tx, chunk).await?;
    }
    tx.commit().await?;
    Ok(done.rows_affected())
}

/// An option row to insert: its product, its resolved price, the option.
type OptionInsert<'a> = (ProductId, i64, &'a NewOption);

fn option_rows(id: ProductId, product: &NewProduct) -> Vec<OptionInsert<'_>> {
    product.options.iter().map(|option| (id, option.price_in(product.price), option)).collect()
}

async fn insert_options(tx: &mut MySqlConnection, rows: &[OptionInsert<'_>]) -> Result<(), sqlx::Error> {
    let mut query = QueryBuilder::new("INSERT INTO product_options (product_id, name, price, stock, status) ");
    query.push_values(rows, |mut row, (product_id, price, option)| {
        row.push_bind(*product_id)
            .push_bind(&option.name)
            .push_bind(*price)
            .push_bind(option.stock)
            .push_bind(Status::for_stock(option.stock));
    });
    query.build().execute(&mut *tx).await?;
    Ok(())
}

/// What adding an option did.
pub enum AddedOption {
    Added(ProductOption),
    NoProduct,
    /// The product has [`MAX_OPTIONS`] already.
    Full,
    NameTaken,
}

/// Adds an option to a product. The product row is locked first, so the option count it checks cannot
/// change before the INSERT commits.
pub async fn add_option(db: &MySqlPool, product_id: ProductId, new: &NewOption) -> Result<AddedOption, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let mut tx = conn.begin().await?;
    let product_price: Option<i64> = sqlx::query_scalar("SELECT price FROM products WHERE id = ? FOR UPDATE")
        .bind(product_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(product_price) = product_price else { return Ok(AddedOption::NoProduct) };
    let price = new.price_in(product_price);
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM product_options WHERE product_id = ?")
        .bind(product_id)
        .fetch_one(&mut *tx)
        .await?;
    if count >= MAX_OPTIONS as i64 {
        return Ok(AddedOption::Full);
    }
    let inserted =
        sqlx::query("INSERT INTO product_options (product_id, name, price, stock, status) VALUES (?, ?, ?, ?, ?)")
            .bind(product_id)
            .bind(&new.name)
            .bind(price)
            .bind(new.stock)
            .bind(Status::for_stock(new.stock))
            .execute(&mut *tx)
            .await;
    let done = match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Ok(AddedOption::NameTaken),
        other => other?,
    };
    tx.commit().await?;
    let id = OptionId::new(done.last_insert_id() as i64).expect("AUTO_INCREMENT ids are positive");
    Ok(AddedOption::Added(ProductOption {
        id,
        name: new.name.clone(),
        price,
        stock: new.stock,
        status: Status::for_stock(new.stock),
    }))
}

/// What a restock did.
pub enum Restocked {
    Done(ProductOption),
    NoProduct,
    NoOption,
    /// The option would hold more than [`MAX_STOCK`] units.
    TooMuch,
}

/// Adds `quantity` units to an option of a product; a sold-out option is on sale again.
pub async fn restock(
    db: &MySqlPool,
    product_id: ProductId,
    option_id: OptionId,
    quantity: i64,
) -> Result<Restocked, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE product_options SET stock = stock + ?, status = 'ON_SALE'
         WHERE id = ? AND product_id = ? AND stock <= ?",
    )
    .bind(quantity)
    .bind(option_id)
    .bind(product_id)
    .bind(MAX_STOCK - quantity)
    .execute(db)
    .await?;
    let option = option(db, product_id, option_id).await?;
    Ok(match option {
        Some(option) if done.rows_affected() == 1 => Restocked::Done(option),
        Some(_) => Restocked::TooMuch,
        None if exists(db, product_id).await? => Restocked::NoOption,
        None => Restocked::NoProduct,
    })
}

#[derive(sqlx::FromRow)]
struct OptionRow {
    id: OptionId,
    product_id: ProductId,
    name: String,
    price: i64,
    stock: i64,
    sold: i64,
}

impl OptionRow {
    fn into_option(self) -> ProductOption {
        ProductOption {
            id: self.id,
            name: self.name,
            price: self.price,
            stock: self.stock,
            status: Status::for_stock(self.stock),
        }
    }
}

const OPTION_COLUMNS: &str =
    "SELECT id, product_id, name, price, CAST(stock AS SIGNED) AS stock, sold FROM product_options";

async fn option(
    db: &MySqlPool,
    product_id: ProductId,
    option_id: OptionId,
) -> Result<Option<ProductOption>, sqlx::Error> {
    let row: Option<OptionRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{OPTION_COLUMNS} WHERE id = ? AND product_id = ?")))
            .bind(option_id)
            .bind(product_id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(OptionRow::into_option))
}

async fn exists(db: &MySqlPool, product_id: ProductId) -> Result<bool, sqlx::Error> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT id FROM products WHERE id = ?").bind(product_id).fetch_optional(db).await?;
    Ok(found.is_some())
}

/// A product's options, in ascending option id order, and the units sold over all of them.
#[derive(Default)]
struct OptionsSold {
    options: Vec<ProductOption>,
    sold: i64,
}

/// The options of each of `ids` (of every product with `None`), with their units sold (a plain read: no lock).
async fn options_sold<'c>(
    db: impl sqlx::MySqlExecutor<'c>,
    ids: Option<&[ProductId]>,
) -> Result<HashMap<ProductId, OptionsSold>, sqlx::Error> {
    let mut by_product: HashMap<ProductId, OptionsSold> = HashMap::new();
    let mut query = QueryBuilder::new(OPTION_COLUMNS);
    if let Some(ids) = ids {
        if ids.is_empty() {
            return Ok(by_product);
        }
        query.push(" WHERE product_id IN ");
        mysql::push_list(&mut query, ids.iter().copied());
    }
    query.push(" ORDER BY product_id, id");
    let rows: Vec<OptionRow> = query.build_query_as().fetch_all(db).await?;
    for row in rows {
        let of = by_product.entry(row.product_id).or_default();
        of.sold += row.sold;
        of.options.push(row.into_option());
    }
    Ok(by_product)
}

/// The options of each of `ids`, in ascending option id order (a plain read: no lock).
pub async fn options_of<'c>(
    db: impl sqlx::MySqlExecutor<'c>,
    ids: &[ProductId],
) -> Result<HashMap<ProductId, Vec<ProductOption>>, sqlx::Error> {
    let by_product = options_sold(db, Some(ids)).await?;
    Ok(by_product.into_iter().map(|(id, of)| (id, of.options)).collect())
}

#[derive(sqlx::FromRow)]
struct ProductRow {
    id: ProductId,
    name: String,
    price: i64,
    view_count: i64,
}

impl ProductRow {
    fn into_product(self, of: OptionsSold) -> Product {
        Product::new(self.id, self.name, self.price, of.options, of.sold)
    }
}

/// A product with its options and the views already flushed to MySQL.
pub async fn find(db: &MySqlPool, id: ProductId) -> Result<Option<(Product, i64)>, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let row: Option<ProductRow> = sqlx::query_as("SELECT id, name, price, view_count FROM products WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let of = options_sold(&mut *conn, Some(&[id])).await?.remove(&id).unwrap_or_default();
    let view_count = row.view_count;
    Ok(Some((row.into_product(of), view_count)))
}

/// Those of `ids` that exist (every product with `None`), ascending id, with their options and units sold.
pub async fn products(db: &MySqlPool, ids: Option<&[ProductId]>) -> Result<Vec<Product>, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let mut query = QueryBuilder::new("SELECT id, name, price, view_count FROM products");
    if let Some(ids) = ids {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        query.push(" WHERE id IN ");
        mysql::push_list(&mut query, ids.iter().copied());
    }
    query.push(" ORDER BY id");
    let rows: Vec<ProductRow> = query.build_query_as().fetch_all(&mut *conn).await?;
    let mut options = options_sold(&mut *conn, ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let of = options.remove(&row.id).unwrap_or_default();
            row.into_product(of)
        })
        .collect())
}

/// The views flushed to MySQL of each of `ids` that exists.
pub async fn view_counts(db: &MySqlPool, ids: &[ProductId]) -> Result<Vec<(ProductId, i64)>, sqlx::Error> {
    let mut query = QueryBuilder::new("SELECT id, view_count FROM products WHERE id IN ");
    mysql::push_list(&mut query, ids.iter().copied());
    query.build_query_as().fetch_all(db).await
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
        query.push(" ELSE 0 END WHERE id IN ");
        mysql::push_list(&mut query, chunk.iter().map(|(id, _)| *id));
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
