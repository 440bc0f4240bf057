//! The catalogue as the shop reads and changes it: listing pages (from the copy of the whole catalogue in
//! `listing`) and product details served from copies kept in this process, already serialized, and dropped
//! or marked stale when a change commits.
//!
//! Freshness (docs/orders.md#catalogue): the instance that commits a payment, a restock or a new product or
//! option drops (or marks stale) its copies of the products involved before it answers, then announces them in Redis
//! (`lua/catalog_announce.lua`, every [`ANNOUNCE_PERIOD`], one call for all its changes). Every instance asks
//! Redis for announcements every [`POLL`] and drops what they name, so a change shows everywhere within about
//! that long. A detail copy is served only while this instance has heard from Redis within [`SYNC_STALE`], and
//! never once older than [`MAX_AGE`], which bounds staleness when an announcement itself is lost (Redis down
//! right after a commit); the listing's copy is read whole again every [`listing::RELOAD_PERIOD`] instead.
//!
//! A copy being loaded while its product changes is not kept: loads compare per-product change counters
//! before and after reading MySQL.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::db::{self, AddedOption, Restocked};
use super::listing::{self, Listing};
use super::views::ViewCounter;
use super::{Error, ListRequest, NewOption, NewProduct, Product, ProductOption, Restock, Status};
use crate::id::{OptionId, ProductId};
use crate::store::scripts::{CATALOG_ANNOUNCE, CATALOG_CHANGES};
use crate::store::{Redis, StoreError, Stores};

/// How often an instance asks Redis for announced changes: with [`ANNOUNCE_PERIOD`], how late another
/// instance's commit may show.
pub const POLL: Duration = Duration::from_millis(50);
/// How often an instance announces its changes, all of them in one call: a payment costs no Redis call.
pub const ANNOUNCE_PERIOD: Duration = Duration::from_millis(10);
/// Copies are not served when this instance has not heard from Redis for this long: it could be missing
/// announcements.
const SYNC_STALE: Duration = Duration::from_secs(1);
/// The oldest copy served: the bound on staleness when an announcement was lost.
pub(super) const MAX_AGE: Duration = Duration::from_secs(2);
/// Versions the announcement set remembers; an instance further behind drops every copy.
const REMEMBERED_VERSIONS: i64 = 100_000;
/// Most products one poll names; more drop every copy.
const MAX_CHANGES_PER_POLL: usize = 10_000;
/// Most product details kept; beyond it the copies are dropped and loaded again.
const MAX_DETAILS: usize = 100_000;
/// Stripes of the per-product change counters and of the load gate.
const STRIPES: usize = 1_024;

/// The catalogue handle: cheap to clone, one per process.
#[derive(Clone)]
pub struct Catalog(Arc<Inner>);

struct Inner {
    stores: Stores,
    copies: Copies,
    listing: Listing,
    views: ViewCounter,
    /// Announcement members not sent yet: one announcement every [`ANNOUNCE_PERIOD`] carries them all.
    unannounced: Mutex<BTreeSet<String>>,
    /// Serializes loads of one product, so a burst of requests for it reads MySQL once.
    gate: Box<[tokio::sync::Mutex<()>]>,
}

/// The in-process detail copies and what tells whether they may be served.
struct Copies {
    details: RwLock<HashMap<ProductId, Arc<DetailCopy>>>,
    /// Raised when a product of the stripe changes.
    stripes: Box<[AtomicU64]>,
    /// Raised when everything is dropped.
    everything: AtomicU64,
    /// The announcement version applied (-1: none yet).
    version: AtomicI64,
    /// When Redis last answered a poll, as [`Copies::started`] + this many milliseconds (0: never).
    synced_ms: AtomicU64,
    started: Instant,
}

/// A product's detail, serialized around its view count.
#[derive(Clone)]
struct DetailCopy {
    /// `{"id":..,"status":..,"viewCount":`
    head: Bytes,
    /// `,"options":[..]}`
    tail: Bytes,
    flushed_views: i64,
    /// [`ViewCounter::epoch`] when `flushed_views` was read.
    views_epoch: u64,
    loaded: Instant,
}

/// The counters a load compares before and after reading MySQL.
#[derive(PartialEq, Eq)]
struct Epoch {
    everything: u64,
    stripes: Vec<u64>,
}

fn stripe(id: ProductId) -> usize {
    (id.get() as u64 % STRIPES as u64) as usize
}

impl Catalog {
    /// The catalogue on `stores`. Its jobs ([`Catalog::run`]) poll for changes and send counted views.
    pub fn new(stores: Stores) -> Self {
        Self(Arc::new(Inner {
            stores,
            copies: Copies::new(),
            listing: Listing::new(),
            views: ViewCounter::default(),
            unannounced: Mutex::default(),
            gate: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }))
    }

    /// Stores a new product; this instance's listing shows it at once, every other's within [`POLL`].
    pub async fn create(&self, new: NewProduct) -> Result<Product, Error> {
        let product = db::insert(&self.0.stores.db, &new).await?;
        self.changed(&[product.id]);
        Ok(product)
    }

    /// Adds an option to a product.
    pub async fn add_option(&self, product_id: ProductId, new: NewOption) -> Result<ProductOption, Error> {
        match db::add_option(&self.0.stores.db, product_id, &new).await? {
            AddedOption::Added(option) => {
                self.changed(&[product_id]);
                Ok(option)
            }
            AddedOption::NoProduct => Err(Error::NotFound(product_id)),
            AddedOption::Full => Err(Error::Invalid(format!("a product has at most {} options", super::MAX_OPTIONS))),
            AddedOption::NameTaken => Err(Error::OptionNameTaken { product: product_id, name: new.name }),
        }
    }

    /// Adds units to an option; a sold-out option (and its product) is on sale again.
    pub async fn restock(
        &self,
        product_id: ProductId,
        option_id: OptionId,
        restock: Restock,
    ) -> Result<ProductOption, Error> {
        match db::restock(&self.0.stores.db, product_id, option_id, restock.get()).await? {
            Restocked::Done(option) => {
                self.changed(&[product_id]);
                Ok(option)
            }
            Restocked::NoProduct => Err(Error::NotFound(product_id)),
            Restocked::NoOption => Err(Error::OptionNotFound { product: product_id, option: option_id }),
            Restocked::TooMuch => {
                Err(Error::Invalid(format!("option {option_id} would hold more than {} units", super::MAX_STOCK)))
            }
        }
    }

    /// Drops this instance's copies of `ids` at once and announces the change to the others within
    /// [`ANNOUNCE_PERIOD`]. Called after a commit changed their stock; the announcement never delays the
    /// answer, and a lost one leaves the other instances' copies to expire within [`MAX_AGE`].
    pub fn changed(&self, ids: &[ProductId]) {
        self.drop_products(ids);
        self.announce_later(ids.iter().map(|id| id.to_string()));
    }

    /// Drops the detail copies of `ids` and marks them stale in the listing.
    fn drop_products(&self, ids: &[ProductId]) {
        self.0.copies.drop_products(ids);
        self.0.listing.changed(ids);
    }

    fn drop_everything(&self) {
        self.0.copies.drop_everything();
        self.0.listing.changed_everything();
    }

    fn announce_later(&self, members: impl IntoIterator<Item = String>) {
        self.0.unannounced.lock().expect("never poisoned").extend(members);
    }

    /// Announces the changes made here since the last call, in one call; on failure they are kept for the
    /// next. Called every [`ANNOUNCE_PERIOD`], and once more after the last request of a graceful shutdown.
    pub async fn announce(&self) -> Result<(), StoreError> {
        let members: Vec<String> =
            std::mem::take(&mut *self.0.unannounced.lock().expect("never poisoned")).into_iter().collect();
        if members.is_empty() {
            return Ok(());
        }
        let redis = &self.0.stores.redis;
        let mut args = Vec::with_capacity(members.len() + 1);
        args.push(REMEMBERED_VERSIONS.to_string());
        args.extend(members.iter().cloned());
        if let Err(error) = CATALOG_ANNOUNCE.call::<i64, _, _>(redis, keys(redis), args).await {
            metrics::counter!("catalog_announce_failures_total").increment(1);
            self.announce_later(members);
            return Err(error);
        }
        Ok(())
    }

    /// Reads the flushed view counts of `ids` into this instance's copies at once and announces the flush to
    /// the others, which do the same: their copies stay, only the counts change. A failed read is logged; those
    /// details undercount until their copies expire.
    pub async fn views_flushed(&self, ids: &[ProductId]) {
        if let Err(error) = self.refresh_views(ids).await {
            tracing::warn!(%error, "flushed view counts not read; details undercount until their copies expire");
        }
        self.announce_later(ids.iter().map(|id| format!("{VIEWS_FLUSHED}{id}")));
    }

    /// Replaces the flushed view count of the copies of `ids` this instance holds.
    async fn refresh_views(&self, ids: &[ProductId]) -> Result<(), StoreError> {
        let copies = &self.0.copies;
        let held: Vec<ProductId> = {
            let details = copies.details.read().expect("never poisoned");
            ids.iter().copied().filter(|id| details.contains_key(id)).collect()
        };
        if held.is_empty() {
            return Ok(());
        }
        let (before, views_epoch) = (copies.epoch(), self.0.views.epoch());
        let counts = db::view_counts(&self.0.stores.db, &held).await?;
        let mut details = copies.details.write().expect("never poisoned");
        for (id, flushed_views) in counts {
            if !copies.unchanged(&before, [id]) {
                continue;
            }
            if let Some(copy) = details.get_mut(&id) {
                *copy = Arc::new(DetailCopy { flushed_views, views_epoch, ..DetailCopy::clone(copy) });
            }
        }
        Ok(())
    }

    /// One page of the listing, serialized, from the copy of the whole catalogue (see `listing`).
    pub async fn list(&self, request: &ListRequest) -> Result<Bytes, Error> {
        Ok(self.0.listing.page(&self.0.stores.db, request).await?)
    }

    /// A product's detail, serialized, counting this view: `viewCount` includes it.
    pub async fn view(&self, id: ProductId) -> Result<Bytes, Error> {
        let copy = match self.0.copies.detail(id) {
            Some(copy) => copy,
            None => self.load(id).await?,
        };
        let unflushed = self.0.views.count(id, copy.views_epoch);
        let mut body = Vec::with_capacity(copy.head.len() + 20 + copy.tail.len());
        body.extend_from_slice(&copy.head);
        body.extend_from_slice((copy.flushed_views + unflushed).to_string().as_bytes());
        body.extend_from_slice(&copy.tail);
        Ok(Bytes::from(body))
    }

    async fn load(&self, id: ProductId) -> Result<Arc<DetailCopy>, Error> {
        let _loading = self.lock(id.get().unsigned_abs()).await;
        let copies = &self.0.copies;
        if let Some(copy) = copies.detail(id) {
            return Ok(copy);
        }
        let before = copies.epoch();
        let (product, flushed_views) = db::find(&self.0.stores.db, id).await?.ok_or(Error::NotFound(id))?;
        let views_epoch = self.0.views.measure(&self.0.stores.redis, id).await;
        let copy = Arc::new(DetailCopy::new(&product, flushed_views, views_epoch));
        copies.keep_detail(id, copy.clone(), before);
        Ok(copy)
    }

    async fn lock(&self, key: u64) -> tokio::sync::MutexGuard<'_, ()> {
        self.0.gate[(key % STRIPES as u64) as usize].lock().await
    }

    /// Applies the announcements made since the last poll; `Err` leaves the copies to go stale.
    pub async fn poll(&self) -> Result<(), StoreError> {
        let copies = &self.0.copies;
        let seen = copies.version.load(Ordering::Acquire);
        let redis = &self.0.stores.redis;
        let args = vec![seen.to_string(), REMEMBERED_VERSIONS.to_string(), MAX_CHANGES_PER_POLL.to_string()];
        let reply: Vec<String> = CATALOG_CHANGES.call(redis, keys(redis), args).await?;
        let Some((version, members)) = reply.split_first() else { return Err(CATALOG_CHANGES.unexpected(&reply)) };
        let version: i64 = version.parse().map_err(|_| CATALOG_CHANGES.unexpected(&reply))?;
        let id = |member: &str| member.parse().ok().and_then(ProductId::new);
        if members.iter().any(|member| member == ALL) {
            self.drop_everything();
        } else if !members.is_empty() {
            let changed: Vec<ProductId> = members.iter().filter_map(|member| id(member)).collect();
            self.drop_products(&changed);
            let flushed: Vec<ProductId> =
                members.iter().filter_map(|member| member.strip_prefix(VIEWS_FLUSHED).and_then(id)).collect();
            if let Err(error) = self.refresh_views(&flushed).await {
                tracing::warn!(%error, "flushed view counts not read; details undercount until their copies expire");
            }
        }
        copies.version.store(version, Ordering::Release);
        copies.synced();
        Ok(())
    }

    /// Sends the views counted here to Redis; called once more after the last request of a graceful shutdown.
    pub async fn send_views(&self) -> Result<(), StoreError> {
        self.0.views.send(&self.0.stores.redis).await
    }

    /// Until `shutdown`: applies announcements every [`POLL`], announces this instance's changes every
    /// [`ANNOUNCE_PERIOD`], reads the listing's copy whole every [`listing::RELOAD_PERIOD`], and sends
    /// counted views to Redis every [`super::views::SEND_PERIOD`].
    pub async fn run(self, shutdown: CancellationToken) {
        let views = self.0.views.clone().run(self.0.stores.redis.clone(), shutdown.clone());
        let polls = crate::ticker::every(POLL, &shutdown, || async {
            if let Err(error) = self.poll().await {
                tracing::debug!(%error, "catalogue changes not polled; copies are served for at most a second more");
            }
        });
        let announcements = crate::ticker::every(ANNOUNCE_PERIOD, &shutdown, || async {
            if let Err(error) = self.announce().await {
                tracing::warn!(%error, "catalogue changes not announced; kept for the next try");
            }
        });
        let reloads = crate::ticker::every(listing::RELOAD_PERIOD, &shutdown, || async {
            if let Err(error) = self.0.listing.reload(&self.0.stores.db).await {
                tracing::warn!(%error, "the listing's copy not read again; a page reads it once it is too old");
            }
        });
        tokio::join!(views, polls, announcements, reloads);
    }
}

/// The announcement member that drops every copy.
const ALL: &str = "all";
/// Prefix of the announcement member saying a product's views were flushed to MySQL (`v<id>`).
const VIEWS_FLUSHED: &str = "v";

fn keys(redis: &Redis) -> Vec<String> {
    vec![redis.keys.key("catalog:{catalog}:version"), redis.keys.key("catalog:{catalog}:changed")]
}

impl Copies {
    fn new() -> Self {
        Self {
            details: RwLock::default(),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            everything: AtomicU64::new(0),
            version: AtomicI64::new(-1),
            synced_ms: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    fn synced(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.synced_ms.store(ms.max(1), Ordering::Release);
    }

    /// Whether copies may be served now: Redis answered a poll lately.
    fn in_sync(&self) -> bool {
        let synced = self.synced_ms.load(Ordering::Acquire);
        synced > 0 && self.started.elapsed().as_millis() as u64 <= synced + SYNC_STALE.as_millis() as u64
    }

    fn detail(&self, id: ProductId) -> Option<Arc<DetailCopy>> {
        let copy = self.details.read().expect("never poisoned").get(&id).cloned()?;
        (self.in_sync() && copy.loaded.elapsed() < MAX_AGE).then_some(copy)
    }

    fn epoch(&self) -> Epoch {
        Epoch {
            everything: self.everything.load(Ordering::Acquire),
            stripes: self.stripes.iter().map(|stripe| stripe.load(Ordering::Acquire)).collect(),
        }
    }

    /// Whether none of `ids` (nor everything) changed since `before`.
    fn unchanged(&self, before: &Epoch, ids: impl IntoIterator<Item = ProductId>) -> bool {
        self.everything.load(Ordering::Acquire) == before.everything
            && ids.into_iter().all(|id| self.stripes[stripe(id)].load(Ordering::Acquire) == before.stripes[stripe(id)])
    }

    fn keep_detail(&self, id: ProductId, copy: Arc<DetailCopy>, before: Epoch) {
        let mut details = self.details.write().expect("never poisoned");
        if !self.unchanged(&before, [id]) {
            return;
        }
        if details.len() >= MAX_DETAILS {
            details.clear();
        }
        details.insert(id, copy);
    }

    /// Drops the copies showing `ids`. The counters rise under the write locks, so a load that checks them
    /// under the same lock either sees the rise or is dropped here.
    fn drop_products(&self, ids: &[ProductId]) {
        let mut details = self.details.write().expect("never poisoned");
        for id in ids {
            self.stripes[stripe(*id)].fetch_add(1, Ordering::AcqRel);
            details.remove(id);
        }
    }

    fn drop_everything(&self) {
        let mut details = self.details.write().expect("never poisoned");
        self.everything.fetch_add(1, Ordering::AcqRel);
        details.clear();
    }
}

/// The detail's fields before `viewCount`, in the contract's order.
#[derive(Serialize)]
struct DetailHead<'a> {
    id: ProductId,
    name: &'a str,
    price: i64,
    stock: i64,
    status: Status,
    #[serde(rename = "soldCount")]
    sold_count: i64,
}

#[derive(Serialize)]
struct DetailTail<'a> {
    options: &'a [ProductOption],
}

impl DetailCopy {
    fn new(product: &Product, flushed_views: i64, views_epoch: u64) -> Self {
        let head = DetailHead {
            id: product.id,
            name: &product.name,
            price: product.price,
            stock: product.stock,
            status: product.status,
            sold_count: product.sold_count,
        };
        let mut head = serde_json::to_vec(&head).expect("a product serializes");
        head.pop(); // the closing brace
        head.extend_from_slice(b",\"viewCount\":");
        let mut tail = serde_json::to_vec(&DetailTail { options: &product.options }).expect("options serialize");
        tail[0] = b','; // the opening brace
        Self { head: head.into(), tail: tail.into(), flushed_views, views_epoch, loaded: Instant::now() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::product::ProductDetail;

    fn product() -> Product {
        let option = |id, name: &str, stock| ProductOption {
            id: OptionId::new(id).unwrap(),
            name: name.to_owned(),
            price: 1_500,
            stock,
            status: Status::for_stock(stock),
        };
        Product::new(
            ProductId::new(7).unwrap(),
            "t-\"shirt\"".to_owned(),
            1_000,
            vec![option(3, "S", 0), option(4, "M", 2)],
            5,
        )
    }

    #[test]
    fn a_detail_spliced_around_its_view_count_is_the_detail_serialized_whole() {
        let copy = DetailCopy::new(&product(), 40, 0);
        let mut spliced = copy.head.to_vec();
        spliced.extend_from_slice(b"42");
        spliced.extend_from_slice(&copy.tail);
        let whole = serde_json::to_vec(&ProductDetail::new(product(), 42)).unwrap();
        assert_eq!(String::from_utf8(spliced).unwrap(), String::from_utf8(whole).unwrap());
    }

    #[test]
    fn a_change_during_a_load_keeps_its_copy_out_and_other_products_changes_do_not() {
        let copies = Copies::new();
        let (seven, eight) = (ProductId::new(7).unwrap(), ProductId::new(8).unwrap());
        let before = copies.epoch();
        copies.drop_products(&[eight]);
        copies.keep_detail(seven, Arc::new(DetailCopy::new(&product(), 0, 0)), before);
        assert!(copies.details.read().unwrap().contains_key(&seven));

        let before = copies.epoch();
        copies.drop_products(&[seven]);
        copies.keep_detail(seven, Arc::new(DetailCopy::new(&product(), 0, 0)), before);
        assert!(copies.details.read().unwrap().is_empty(), "a copy loaded across a change was kept");
    }

    #[test]
    fn copies_are_served_only_while_the_change_feed_is_heard() {
        let copies = Copies::new();
        let seven = ProductId::new(7).unwrap();
        copies.keep_detail(seven, Arc::new(DetailCopy::new(&product(), 0, 0)), copies.epoch());
        assert!(copies.detail(seven).is_none(), "served before the first poll");
        copies.synced();
        assert!(copies.detail(seven).is_some());
    }
}
