//! Products: the catalogue that orders buy from and the ranking names. A product is sold in one or more
//! options (size, colour, ...), each with its own price and stock; the product's stock is their sum.

pub mod catalog;
pub mod db;
mod listing;
pub mod views;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::id::{OptionId, ProductId};
use crate::store::StoreError;

pub use catalog::Catalog;

/// Most options of one product.
pub const MAX_OPTIONS: usize = 100;
/// Most units one restock adds.
pub const MAX_RESTOCK: i64 = 1_000_000;
/// Most units an option holds: its stock is a MySQL INT.
pub const MAX_STOCK: i64 = i32::MAX as i64;
/// The option a product created with a plain `stock` is sold in.
pub const DEFAULT_OPTION: &str = "default";

/// Why a product operation failed.
#[derive(Debug, Error)]
pub enum Error {
    #[error("product {0} not found")]
    NotFound(ProductId),
    #[error("product {product} has no option {option}")]
    OptionNotFound { product: ProductId, option: OptionId },
    #[error("product {product} already has an option named {name:?}")]
    OptionNameTaken { product: ProductId, name: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

crate::store::store_error_conversions!(Error);

fn invalid(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}

/// Whether a product or an option can be bought: `SOLD_OUT` exactly when its stock is 0.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema, sqlx::Encode, sqlx::Decode,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sqlx(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = ProductStatus)]
pub enum Status {
    OnSale,
    SoldOut,
}

crate::store::mysql::text_column!(Status);

impl Status {
    pub fn for_stock(stock: i64) -> Self {
        if stock == 0 { Status::SoldOut } else { Status::OnSale }
    }
}

/// One option of a product, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ProductOption)]
pub struct ProductOption {
    pub id: OptionId,
    pub name: String,
    /// Won per unit: the option's own price, or the product's when created without one.
    pub price: i64,
    pub stock: i64,
    pub status: Status,
}

/// A product with its options, in ascending option id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub id: ProductId,
    pub name: String,
    /// Won per unit of an option that names no price of its own.
    pub price: i64,
    /// The sum of the options' stock.
    pub stock: i64,
    /// `SOLD_OUT` when every option is.
    pub status: Status,
    /// Units sold in PAID orders, all time, every option counted.
    pub sold_count: i64,
    pub options: Vec<ProductOption>,
}

impl Product {
    /// The product with its stock and status computed from `options`, of which `sold_count` units were sold.
    pub fn new(id: ProductId, name: String, price: i64, options: Vec<ProductOption>, sold_count: i64) -> Self {
        let stock = options.iter().map(|option| option.stock).sum();
        Self { id, name, price, stock, status: Status::for_stock(stock), sold_count, options }
    }
}

/// A product as an admin asks for it: either one `stock` (sold in one option named `default`) or `options`.
#[derive(Debug, Clone)]
pub struct ProductSpec {
    pub name: String,
    pub price: i64,
    pub stock: Option<i64>,
    pub options: Option<Vec<OptionSpec>>,
}

/// An option as an admin asks for it; without a price it sells at its product's.
#[derive(Debug, Clone)]
pub struct OptionSpec {
    pub name: String,
    pub price: Option<i64>,
    pub stock: i64,
}

/// A valid new product: a 1..=200 character name, a price >= 0, and 1..=[`MAX_OPTIONS`] options of distinct
/// names.
#[derive(Debug, Clone)]
pub struct NewProduct {
    name: String,
    price: i64,
    options: Vec<NewOption>,
}

/// A valid new option: a 1..=100 character name, a price >= 0 or none (its product's), stock
/// 0..=[`MAX_STOCK`].
#[derive(Debug, Clone)]
pub struct NewOption {
    name: String,
    price: Option<i64>,
    stock: i64,
}

impl NewOption {
    /// Won per unit when sold in a product priced `product_price`.
    fn price_in(&self, product_price: i64) -> i64 {
        self.price.unwrap_or(product_price)
    }
}

fn valid_price(price: i64) -> Result<i64, Error> {
    if price < 0 {
        return Err(invalid("price must be >= 0"));
    }
    Ok(price)
}

/// `name` trimmed, if it has 1..=`max` characters.
fn valid_name(name: &str, what: &str, max: usize) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > max {
        return Err(invalid(format!("{what} must be 1..={max} characters")));
    }
    Ok(name.to_owned())
}

impl ProductSpec {
    /// A product sold in one option named `default`, as `{"name", "price", "stock"}` asks.
    pub fn single(name: &str, price: i64, stock: i64) -> Self {
        Self { name: name.to_owned(), price, stock: Some(stock), options: None }
    }

    pub fn validate(self) -> Result<NewProduct, Error> {
        let name = valid_name(&self.name, "name", 200)?;
        let price = valid_price(self.price)?;
        let specs = match (self.stock, self.options) {
            (Some(stock), None) => vec![OptionSpec { name: DEFAULT_OPTION.to_owned(), price: None, stock }],
            (None, Some(options)) => options,
            _ => return Err(invalid("give either stock or options, not both")),
        };
        if !(1..=MAX_OPTIONS).contains(&specs.len()) {
            return Err(invalid(format!("a product needs 1..={MAX_OPTIONS} options")));
        }
        let options = specs.into_iter().map(OptionSpec::validate).collect::<Result<Vec<_>, _>>()?;
        let mut names: Vec<&str> = options.iter().map(|option| option.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(invalid(format!("option name {:?} appears twice", pair[0])));
        }
        Ok(NewProduct { name, price, options })
    }
}

impl OptionSpec {
    pub fn validate(self) -> Result<NewOption, Error> {
        let name = valid_name(&self.name, "option name", 100)?;
        let price = self.price.map(valid_price).transpose()?;
        if !(0..=MAX_STOCK).contains(&self.stock) {
            return Err(invalid(format!("stock must be 0..={MAX_STOCK}")));
        }
        Ok(NewOption { name, price, stock: self.stock })
    }
}

/// A valid restock: 1..=[`MAX_RESTOCK`] units.
#[derive(Debug, Clone, Copy)]
pub struct Restock(i64);

impl Restock {
    pub fn parse(quantity: i64) -> Result<Self, Error> {
        if !(1..=MAX_RESTOCK).contains(&quantity) {
            return Err(invalid(format!("quantity must be 1..={MAX_RESTOCK}")));
        }
        Ok(Self(quantity))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// A valid page of the listing: `page >= 0`, `size` 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
            return Err(invalid("page must be >= 0"));
        }
        if !(1..=Self::MAX_SIZE).contains(&size) {
            return Err(invalid("size must be 1..=100"));
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

/// The order of a listing; ties are always broken by lower id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, utoipa::ToSchema)]
#[schema(as = ProductSort)]
pub enum Sort {
    /// Ascending id.
    #[default]
    #[serde(rename = "id")]
    Id,
    /// Lowest price first.
    #[serde(rename = "price")]
    Price,
    /// Highest price first.
    #[serde(rename = "-price")]
    PriceDesc,
    /// Fewest units sold first.
    #[serde(rename = "sold")]
    Sold,
    /// Most units sold first.
    #[serde(rename = "-sold")]
    SoldDesc,
}

/// Most characters of a name search.
pub const MAX_QUERY_CHARS: usize = 100;

/// A valid listing filter, every part optional and all of them combined with AND: the status, a
/// case-insensitive substring of the name (matched literally, never as a pattern), an inclusive price range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    status: Option<Status>,
    /// The search folded by [`fold`], as the names it is compared with.
    name_contains: Option<String>,
    min_price: Option<i64>,
    max_price: Option<i64>,
}

impl Filter {
    /// `q` must have 1..=[`MAX_QUERY_CHARS`] characters; prices must be >= 0 and `min_price <= max_price`.
    pub fn parse(
        status: Option<Status>,
        q: Option<&str>,
        min_price: Option<i64>,
        max_price: Option<i64>,
    ) -> Result<Self, Error> {
        if let Some(q) = q
            && (q.is_empty() || q.chars().count() > MAX_QUERY_CHARS)
        {
            return Err(invalid(format!("q must be 1..={MAX_QUERY_CHARS} characters")));
        }
        if min_price.is_some_and(|price| price < 0) || max_price.is_some_and(|price| price < 0) {
            return Err(invalid("minPrice and maxPrice must be >= 0"));
        }
        if let (Some(min), Some(max)) = (min_price, max_price)
            && min > max
        {
            return Err(invalid(format!("minPrice {min} is above maxPrice {max}")));
        }
        Ok(Self { status, name_contains: q.map(fold), min_price, max_price })
    }

    /// Whether the filter lets every product through.
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `text` in lower case, character by character (no context rules such as a final sigma), so a search and a
/// name fold alike whatever surrounds them. Hangul has no case and stays as it is.
fn fold(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).collect()
}

/// A valid listing request: which products, in which order, which page of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListRequest {
    pub filter: Filter,
    pub sort: Sort,
    pub page: PageRequest,
}

/// One page of the products matching a filter, in the order asked for. Documents the body that
/// [`Catalog::list`] assembles from serialized products.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductPage {
    pub products: Vec<Product>,
    pub page: i64,
    pub size: i64,
    /// Products matching the filter (every product without one).
    pub total_elements: i64,
}

/// A product with how often its detail was viewed. Documents the body that [`Catalog::view`] serializes.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductDetail {
    pub id: ProductId,
    pub name: String,
    /// Won per unit of an option that names no price of its own.
    pub price: i64,
    /// The sum of the options' stock.
    pub stock: i64,
    pub status: Status,
    /// Units sold in PAID orders, all time, every option counted.
    pub sold_count: i64,
    /// Views flushed to MySQL plus those still counted in Redis, this one included.
    pub view_count: i64,
    pub options: Vec<ProductOption>,
}

impl ProductDetail {
    pub fn new(product: Product, view_count: i64) -> Self {
        let Product { id, name, price, stock, status, sold_count, options } = product;
        Self { id, name, price, stock, status, sold_count, view_count, options }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(name: &str) -> OptionSpec {
        OptionSpec { name: name.to_owned(), price: None, stock: 1 }
    }

    fn spec(stock: Option<i64>, options: Option<Vec<OptionSpec>>) -> ProductSpec {
        ProductSpec { name: "shirt".to_owned(), price: 100, stock, options }
    }

    #[test]
    fn a_plain_stock_is_one_option_named_default_at_the_products_price() {
        let new = spec(Some(5), None).validate().unwrap();
        assert_eq!(new.options.len(), 1);
        assert_eq!(
            (new.options[0].name.as_str(), new.options[0].price_in(new.price), new.options[0].stock),
            ("default", 100, 5)
        );
    }

    #[test]
    fn exactly_one_of_stock_and_options_and_option_names_distinct_after_trimming() {
        assert!(spec(None, None).validate().is_err());
        assert!(spec(Some(1), Some(vec![option("S")])).validate().is_err());
        assert!(spec(None, Some(vec![])).validate().is_err());
        assert!(spec(None, Some(vec![option("S"), option(" S ")])).validate().is_err());
        assert!(spec(None, Some(vec![option("S"), option("s")])).validate().is_ok(), "names compare byte for byte");
        assert!(spec(None, Some((0..=MAX_OPTIONS).map(|n| option(&n.to_string())).collect())).validate().is_err());
    }

    #[test]
    fn an_option_keeps_its_own_price_and_refuses_negative_values() {
        let priced = OptionSpec { price: Some(250), ..option("XL") }.validate().unwrap();
        assert_eq!(priced.price_in(100), 250);
        assert!(OptionSpec { price: Some(-1), ..option("XL") }.validate().is_err());
        assert!(OptionSpec { stock: -1, ..option("XL") }.validate().is_err());
        assert!(OptionSpec { stock: MAX_STOCK + 1, ..option("XL") }.validate().is_err());
        assert!(option(&"x".repeat(101)).validate().is_err());
    }

    #[test]
    fn a_restock_is_one_to_a_million_units() {
        assert!(Restock::parse(0).is_err());
        assert!(Restock::parse(MAX_RESTOCK + 1).is_err());
        assert_eq!(Restock::parse(MAX_RESTOCK).unwrap().get(), MAX_RESTOCK);
    }

    #[test]
    fn a_filter_refuses_an_empty_or_long_search_negative_prices_and_an_empty_price_range() {
        let parse = |q: Option<&str>, min, max| Filter::parse(None, q, min, max);
        assert!(parse(Some(""), None, None).is_err());
        assert!(parse(Some(&"가".repeat(MAX_QUERY_CHARS + 1)), None, None).is_err());
        assert!(parse(Some(&"가".repeat(MAX_QUERY_CHARS)), None, None).is_ok(), "characters are counted, not bytes");
        assert!(parse(None, Some(-1), None).is_err());
        assert!(parse(None, None, Some(-1)).is_err());
        assert!(parse(None, Some(2), Some(1)).is_err());
        assert!(parse(None, Some(1), Some(1)).is_ok());
        assert!(parse(None, None, None).unwrap().is_empty());
    }

    #[test]
    fn a_search_folds_case_character_by_character_and_keeps_everything_else_literal() {
        assert_eq!(fold("T-Shirt 100%_\\'\""), "t-shirt 100%_\\'\"");
        assert_eq!(fold("반팔 티셔츠"), "반팔 티셔츠");
        assert_eq!(fold("ΟΔΟΣ"), "οδοσ", "no final-sigma rule: a search folds as the name does");
    }

    #[test]
    fn a_products_stock_is_the_sum_of_its_options_and_sold_out_at_zero() {
        let option = |id, stock| ProductOption {
            id: OptionId::new(id).unwrap(),
            name: id.to_string(),
            price: 1,
            stock,
            status: Status::for_stock(stock),
        };
        let product = Product::new(ProductId::new(1).unwrap(), "p".to_owned(), 1, vec![option(1, 0), option(2, 3)], 0);
        assert_eq!((product.stock, product.status), (3, Status::OnSale));
        let product = Product::new(ProductId::new(1).unwrap(), "p".to_owned(), 1, vec![option(1, 0), option(2, 0)], 0);
        assert_eq!((product.stock, product.status), (0, Status::SoldOut));
    }
}
