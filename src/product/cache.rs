//! Redis side of products: the short-lived listing and detail caches and the view counters.
//!
//! Views are counted in `<prefix>views:{views}:pending` (field = product id, value = views). The flusher
//! takes them as a batch by renaming that hash to `<prefix>views:{views}:batch` (see
//! `lua/product_views_take.lua`), so counting never waits for MySQL and no view is counted twice.

use fred::prelude::*;

use super::{PageRequest, ProductPage, StoredProduct};
use crate::id::ProductId;
use crate::store::{Redis, StoreError};

/// How long a listing page or a product's detail is served from Redis; stock and status shown may lag
/// MySQL by this much.
pub const PAGE_TTL_SECS: i64 = 3;

/// Keys per pipeline when dropping cached products.
const FORGET_CHUNK: usize = 1_000;

fn page_key(redis: &Redis, request: PageRequest) -> String {
    redis.keys.key(format_args!("products:page:{}:{}", request.page(), request.size()))
}

fn product_key(redis: &Redis, id: ProductId) -> String {
    redis.keys.key(format_args!("products:{id}"))
}

fn pending_key(redis: &Redis) -> String {
    redis.keys.key("views:{views}:pending")
}

fn batch_key(redis: &Redis) -> String {
    redis.keys.key("views:{views}:batch")
}

/// The cached page, if any. An undecodable copy (left by an older version) counts as a miss.
pub async fn page(redis: &Redis, request: PageRequest) -> Result<Option<ProductPage>, StoreError> {
    let cached: Option<String> = redis.client().get(page_key(redis, request)).await?;
    Ok(cached.and_then(|json| serde_json::from_str(&json).ok()))
}

pub async fn store_page(redis: &Redis, request: PageRequest, page: &ProductPage) -> Result<(), StoreError> {
    let json = serde_json::to_string(page).expect("a page serializes");
    let _: () =
        redis.client().set(page_key(redis, request), json, Some(Expiration::EX(PAGE_TTL_SECS)), None, false).await?;
    Ok(())
}

/// The cached product, if any. An undecodable copy counts as a miss.
pub async fn product(redis: &Redis, id: ProductId) -> Result<Option<StoredProduct>, StoreError> {
    let cached: Option<String> = redis.client().get(product_key(redis, id)).await?;
    Ok(cached.and_then(|json| serde_json::from_str(&json).ok()))
}

pub async fn store_product(redis: &Redis, stored: &StoredProduct) -> Result<(), StoreError> {
    let json = serde_json::to_string(stored).expect("a product serializes");
    let key = product_key(redis, stored.product.id);
    let _: () = redis.client().set(key, json, Some(Expiration::EX(PAGE_TTL_SECS)), None, false).await?;
    Ok(())
}

/// Drops the cached copies of these products, so their details show the views just flushed to MySQL.
pub async fn forget_products(redis: &Redis, ids: &[ProductId]) -> Result<(), StoreError> {
    for chunk in ids.chunks(FORGET_CHUNK) {
        // One DEL per key: on a cluster they live in different slots.
        let pipeline = redis.client().pipeline();
        for id in chunk {
            let _: () = pipeline.del(product_key(redis, *id)).await?;
        }
        let _: Vec<Value> = pipeline.all().await?;
    }
    Ok(())
}

/// Counts one view; returns the product's views not yet flushed to MySQL, this one included.
pub async fn record_view(redis: &Redis, id: ProductId) -> Result<i64, StoreError> {
    let pipeline = redis.client().pipeline();
    let _: () = pipeline.hincrby(pending_key(redis), id.get(), 1).await?;
    let _: () = pipeline.hget(batch_key(redis), id.get()).await?;
    let (pending, in_batch): (i64, Option<i64>) = pipeline.all().await?;
    Ok(pending + in_batch.unwrap_or(0))
}

/// Views taken out of Redis to be added to MySQL as one unit.
#[derive(Debug)]
pub struct ViewBatch {
    /// Unique per batch, recorded in MySQL with the counts so a retried batch is applied once.
    pub id: String,
    /// Ascending product ids with their views.
    pub views: Vec<(ProductId, i64)>,
}

/// The batch to flush: an unfinished one again, else everything pending; `None` when there is nothing.
pub async fn take_batch(redis: &Redis) -> Result<Option<ViewBatch>, StoreError> {
    let script = &crate::store::scripts::PRODUCT_VIEWS_TAKE;
    let new_id = uuid::Uuid::new_v4().to_string();
    let flat: Vec<String> = script.call(redis, vec![pending_key(redis), batch_key(redis)], vec![new_id]).await?;
    if flat.is_empty() {
        return Ok(None);
    }
    let mut id = None;
    let mut views = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks(2) {
        let [field, value] = pair else { return Err(script.unexpected(&flat)) };
        if field == "batch" {
            id = Some(value.clone());
            continue;
        }
        let product = field.parse().ok().and_then(ProductId::new);
        let count = value.parse::<i64>().ok();
        match (product, count) {
            (Some(product), Some(count)) => views.push((product, count)),
            _ => return Err(script.unexpected(pair)),
        }
    }
    let id = id.ok_or_else(|| script.unexpected("a batch without its id"))?;
    views.sort_unstable();
    Ok(Some(ViewBatch { id, views }))
}

/// Drops the batch once MySQL holds it; `false` when another flusher already did.
pub async fn ack_batch(redis: &Redis, batch_id: &str) -> Result<bool, StoreError> {
    let acked: i64 =
        crate::store::scripts::PRODUCT_VIEWS_ACK.call(redis, vec![batch_key(redis)], vec![batch_id]).await?;
    Ok(acked == 1)
}
