//! Shoppers looking around: the product list, a product's detail, the top 5 of the last 3 days.

use std::sync::Arc;

use goose::prelude::*;

use crate::Shared;
use crate::request::{self, PRODUCT, PRODUCTS, TOP};

/// Products per list page, the size a shop's listing would ask for.
const PAGE_SIZE: usize = 20;

/// A page of the product list, among the pages the catalog fills.
pub async fn list(user: &mut GooseUser, shared: Arc<Shared>) -> TransactionResult {
    let pages = shared.fixture()?.catalog.len().div_ceil(PAGE_SIZE).max(1);
    let page = rand::random_range(0..pages);
    let goose = user.get_named(&format!("/api/v1/products?page={page}&size={PAGE_SIZE}"), PRODUCTS).await?;
    request::succeeded(&goose)
}

/// A random catalog product's detail (which counts a view).
pub async fn detail(user: &mut GooseUser, shared: Arc<Shared>) -> TransactionResult {
    let catalog = &shared.fixture()?.catalog;
    let product = &catalog[rand::random_range(0..catalog.len())];
    let goose = user.get_named(&format!("/api/v1/products/{}", product.id), PRODUCT).await?;
    request::succeeded(&goose)
}

/// The ranking a shop's front page shows.
pub async fn top(user: &mut GooseUser, _: Arc<Shared>) -> TransactionResult {
    let goose = user.get_named("/api/v1/products/top?days=3&limit=5", TOP).await?;
    request::succeeded(&goose)
}
