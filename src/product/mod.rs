//! Products: the catalogue that orders buy from and the ranking names.

pub mod cache;
pub mod db;
pub mod views;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::id::ProductId;
use crate::store::{StoreError, Stores};

/// Why a product operation failed.
#[derive(Debug, Error)]
pub enum Error {
    #[error("product {0} not found")]
    NotFound(ProductId),
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

crate::store::store_error_conversions!(Error);

/// Whether a product can be bought: `SOLD_OUT` exactly when its stock is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = ProductStatus)]
pub enum Status {
    OnSale,
    SoldOut,
}

impl Status {
    pub fn for_stock(stock: i64) -> Self {
        if stock == 0 { Status::SoldOut } else { Status::OnSale }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::OnSale => "ON_SALE",
            Status::SoldOut => "SOLD_OUT",
        }
    }
}

/// A product as stored.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub id: ProductId,
    pub name: String,
    /// Won per unit.
    pub price: i64,
    pub stock: i64,
    pub status: Status,
}

/// A valid new product: a 1..=200 character name, price and stock not negative.
#[derive(Debug, Clone)]
pub struct NewProduct {
    name: String,
    price: i64,
    stock: i64,
}

impl NewProduct {
    pub fn parse(name: &str, price: i64, stock: i64) -> Result<Self, Error> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(Error::Invalid("name must be 1..=200 characters"));
        }
        if price < 0 {
            return Err(Error::Invalid("price must be >= 0"));
        }
        if !(0..=i64::from(i32::MAX)).contains(&stock) {
            return Err(Error::Invalid("stock must be 0..=2147483647"));
        }
        Ok(Self { name: name.to_owned(), price, stock })
    }
}

/// Stores a new product.
pub async fn create(db: &sqlx::MySqlPool, new: NewProduct) -> Result<Product, Error> {
    let status = Status::for_stock(new.stock);
    let id = db::insert(db, &new.name, new.price, new.stock, status).await?;
    Ok(Product { id, name: new.name, price: new.price, stock: new.stock, status })
}

/// A valid page of the listing: `page >= 0`, `size` 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    page: i64,
    size: i64,
}

impl PageRequest {
    pub const DEFAULT_SIZE: i64 = 20;
    pub const MAX_SIZE: i64 = 100;

    /// Absent values take the defaults (page 0, size 20).
    pub fn parse(page: Option<i64>, size: Option<i64>) -> Result<Self, Error> {
        let (page, size) = (page.unwrap_or(0), size.unwrap_or(Self::DEFAULT_SIZE));
        if page < 0 {
            return Err(Error::Invalid("page must be >= 0"));
        }
        if !(1..=Self::MAX_SIZE).contains(&size) {
            return Err(Error::Invalid("size must be 1..=100"));
        }
        Ok(Self { page, size })
    }

    pub fn page(self) -> i64 {
        self.page
    }

    pub fn size(self) -> i64 {
        self.size
    }

    /// Rows to skip; saturates, since a page that far out is simply empty.
    fn offset(self) -> i64 {
        self.page.saturating_mul(self.size)
    }
}

/// One page of the catalogue, ordered by id.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductPage {
    pub products: Vec<Product>,
    pub page: i64,
    pub size: i64,
    /// Products in the whole catalogue.
    pub total_elements: i64,
}

/// A product with how often its detail was viewed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductDetail {
    pub id: ProductId,
    pub name: String,
    /// Won per unit.
    pub price: i64,
    pub stock: i64,
    pub status: Status,
    /// Views flushed to MySQL plus those still counted in Redis, this one included.
    pub view_count: i64,
}

/// Stripes of [`LoadGate`]: concurrent misses of different keys rarely share one.
const LOAD_STRIPES: usize = 64;

/// Serializes cache misses of one key (a product, a page) within this instance, so a burst of requests
/// for a hot product reaches MySQL once per cache period instead of once per request. Cheap to clone.
#[derive(Clone)]
pub struct LoadGate(Arc<[tokio::sync::Mutex<()>]>);

impl Default for LoadGate {
    fn default() -> Self {
        Self((0..LOAD_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect())
    }
}

impl LoadGate {
    async fn lock(&self, key: u64) -> tokio::sync::MutexGuard<'_, ()> {
        self.0[(key % LOAD_STRIPES as u64) as usize].lock().await
    }
}

/// A product as cached for its detail page: the row and the views already flushed to MySQL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredProduct {
    pub product: Product,
    pub flushed_views: i64,
}

/// One page of the listing. Served from a Redis copy up to [`cache::PAGE_TTL_SECS`] old, so stock and
/// status may lag MySQL by that much; a miss reads MySQL and stores the copy.
pub async fn list(stores: &Stores, gate: &LoadGate, request: PageRequest) -> Result<ProductPage, Error> {
    if let Some(page) = cache::page(&stores.redis, request).await? {
        return Ok(page);
    }
    let _loading = gate.lock(request.page.unsigned_abs().wrapping_mul(131) ^ request.size.unsigned_abs()).await;
    if let Some(page) = cache::page(&stores.redis, request).await? {
        return Ok(page);
    }
    let (products, total_elements) =
        tokio::try_join!(db::page(&stores.db, request.size, request.offset()), db::count(&stores.db))?;
    let page = ProductPage { products, page: request.page, size: request.size, total_elements };
    cache::store_page(&stores.redis, request, &page).await?;
    Ok(page)
}

/// The product's detail, counting this view. The product comes from a Redis copy up to
/// [`cache::PAGE_TTL_SECS`] old (like the listing); the view is counted in Redis only, and
/// [`views::flush_once`] moves the counts to MySQL in batches.
pub async fn view(stores: &Stores, gate: &LoadGate, id: ProductId) -> Result<ProductDetail, Error> {
    let stored = match cache::product(&stores.redis, id).await? {
        Some(stored) => stored,
        None => load(stores, gate, id).await?,
    };
    let unflushed = cache::record_view(&stores.redis, id).await?;
    let StoredProduct { product, flushed_views } = stored;
    Ok(ProductDetail {
        id: product.id,
        name: product.name,
        price: product.price,
        stock: product.stock,
        status: product.status,
        view_count: flushed_views + unflushed,
    })
}

/// Reads a product from MySQL into the cache, once per burst of misses.
async fn load(stores: &Stores, gate: &LoadGate, id: ProductId) -> Result<StoredProduct, Error> {
    let _loading = gate.lock(id.get().unsigned_abs()).await;
    if let Some(stored) = cache::product(&stores.redis, id).await? {
        return Ok(stored);
    }
    let stored = db::find(&stores.db, id).await?.ok_or(Error::NotFound(id))?;
    cache::store_product(&stores.redis, &stored).await?;
    Ok(stored)
}
