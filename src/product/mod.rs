//! Products: the catalogue that orders buy from and the ranking names.

pub mod db;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::id::ProductId;
use crate::store::StoreError;

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

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

/// Whether a product can be bought: `SOLD_OUT` exactly when its stock is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
