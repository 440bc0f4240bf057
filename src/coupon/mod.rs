//! Coupons: campaigns, first-come-first-served issuance, and the rules orders use to apply a discount.
//!
//! Issuance is decided in Redis by `lua/coupon_issue.lua` (see [`cache`]), called in batches by the
//! [`issuer`], and persisted to MySQL by the background [`writer`]. MySQL is the durable record; Redis
//! state that goes missing, goes back in time or disagrees with it is rebuilt from it under a lock the
//! writer also takes ([`fence`]), so a coupon is never persisted beyond its quantity or twice to one user.

pub mod cache;
pub mod db;
pub mod fence;
pub mod issuer;
pub mod view;
pub mod writer;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use self::cache::IssueReply;
pub use self::issuer::Issuer;
use crate::id::{CouponId, UserId};
use crate::store::{StoreError, Stores};
use crate::user;

/// Why a coupon operation failed.
#[derive(Debug, Error)]
pub enum Error {
    #[error("coupon {0} not found")]
    NotFound(CouponId),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("coupon {coupon} was already issued to user {user}")]
    AlreadyIssued { coupon: CouponId, user: UserId },
    #[error("coupon {0} is sold out")]
    SoldOut(CouponId),
    #[error("coupon {0} is not active now")]
    NotActive(CouponId),
    #[error("user {0} not found")]
    UserNotFound(UserId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

crate::user::user_error_conversions!(Error);

crate::store::store_error_conversions!(Error);

/// How a coupon discounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, sqlx::Encode, sqlx::Decode)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sqlx(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiscountType {
    /// `discountValue` won off.
    Fixed,
    /// `discountValue` percent off.
    Rate,
}

crate::store::mysql::text_column!(DiscountType);

/// A valid discount: FIXED takes more than 0 won, RATE 1..=100 percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discount {
    kind: DiscountType,
    value: i64,
}

impl Discount {
    pub fn new(kind: DiscountType, value: i64) -> Result<Self, Error> {
        match kind {
            DiscountType::Fixed if value <= 0 => Err(Error::Invalid("a FIXED discountValue must be > 0")),
            DiscountType::Rate if !(1..=100).contains(&value) => {
                Err(Error::Invalid("a RATE discountValue must be 1..=100"))
            }
            _ => Ok(Self { kind, value }),
        }
    }

    pub fn kind(self) -> DiscountType {
        self.kind
    }

    pub fn value(self) -> i64 {
        self.value
    }

    /// Won off `total`: FIXED takes `min(value, total)`, RATE `floor(total * rate / 100)`.
    pub fn amount_off(self, total: i64) -> i64 {
        match self.kind {
            DiscountType::Fixed => self.value.min(total),
            // i128: total * 100 must not overflow for any i64 total.
            DiscountType::Rate => (i128::from(total) * i128::from(self.value) / 100) as i64,
        }
    }
}

/// A coupon campaign.
#[derive(Debug, Clone)]
pub struct Coupon {
    pub id: CouponId,
    pub name: String,
    pub discount: Discount,
    pub total_quantity: i64,
    pub starts_at: DateTime<Utc>,
    /// `None`: no end.
    pub ends_at: Option<DateTime<Utc>>,
}

impl Coupon {
    /// Whether the campaign's window contains `now` (start inclusive, end exclusive).
    pub fn is_active_at(&self, now: DateTime<Utc>) -> bool {
        self.starts_at <= now && self.ends_at.is_none_or(|end| now < end)
    }

    /// Whether the campaign's window is over at `now` (its end is exclusive).
    pub fn has_ended_at(&self, now: DateTime<Utc>) -> bool {
        self.ends_at.is_some_and(|end| end <= now)
    }
}

/// Whether an issued coupon can still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, sqlx::Encode, sqlx::Decode)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sqlx(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HeldStatus {
    Available,
    Used,
}

crate::store::mysql::text_column!(HeldStatus);

/// A coupon issued to a user.
#[derive(Debug, Clone)]
pub struct HeldCoupon {
    pub coupon: Coupon,
    pub user_id: UserId,
    pub status: HeldStatus,
    pub issued_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    /// `Some(g)`: known only to Redis state of generation `g`, not persisted yet; the pay transaction
    /// inserts its row only while that generation is current ([`db::generation_is`]).
    pub unpersisted_generation: Option<i64>,
}

/// The coupon `coupon_id` as held by `user_id`, or `None` when it was never issued to them.
///
/// Read-your-writes: an issuance the writer has not persisted yet is found in Redis and reported
/// AVAILABLE with its real `issued_at`, which `db::mark_used` then inserts exactly as the writer would.
/// Redis is read before MySQL: a row only ever appears and moves from AVAILABLE to USED, so reading MySQL
/// second can only give the newer answer. If Redis does not answer, a persisted issuance is still found in
/// MySQL (issuance is down then anyway, and orders should not be); without one, whether the user holds the
/// coupon is unknown, and that is Redis's error, not a "no": an order must not turn FAILED because of it.
pub async fn held_by(stores: &Stores, user_id: UserId, coupon_id: CouponId) -> Result<Option<HeldCoupon>, Error> {
    let in_redis = cache::issued_at(&stores.redis, coupon_id, user_id).await;
    if let Some(held) = db::find_held(&stores.db, user_id, coupon_id).await? {
        return Ok(Some(held));
    }
    let Some((at, generation)) = in_redis? else { return Ok(None) };
    let Some(coupon) = db::find_coupon(&stores.db, coupon_id).await? else { return Ok(None) };
    Ok(Some(HeldCoupon {
        coupon,
        user_id,
        status: HeldStatus::Available,
        issued_at: from_micros(at)?,
        used_at: None,
        unpersisted_generation: Some(generation),
    }))
}

/// Largest `totalQuantity` (the column is a signed INT).
const MAX_QUANTITY: i64 = i32::MAX as i64;

/// A valid new campaign.
#[derive(Debug, Clone)]
pub struct NewCoupon {
    pub name: String,
    pub discount: Discount,
    pub total_quantity: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
}

/// A campaign as asked for, not yet validated.
#[derive(Debug, Clone)]
pub struct CouponSpec<'a> {
    pub name: &'a str,
    pub discount_type: DiscountType,
    pub discount_value: i64,
    pub total_quantity: i64,
    /// `None`: now.
    pub starts_at: Option<DateTime<Utc>>,
    /// `None`: no end.
    pub ends_at: Option<DateTime<Utc>>,
}

impl<'a> CouponSpec<'a> {
    /// A campaign active from now with no end, the common case (seeds, tests, benches); set `starts_at` or
    /// `ends_at` with struct update syntax for a window.
    pub fn open_ended(name: &'a str, discount_type: DiscountType, discount_value: i64, total_quantity: i64) -> Self {
        Self { name, discount_type, discount_value, total_quantity, starts_at: None, ends_at: None }
    }
}

impl NewCoupon {
    /// Validates a campaign: a 1..=200 character name, a valid discount, a quantity of 1..=2^31-1, and an
    /// end after the start. `starts_at` defaults to `now`; no `ends_at` means no end. Times are truncated
    /// to the microsecond MySQL keeps, so what the 201 says is what later reads say.
    pub fn parse(spec: CouponSpec<'_>, now: DateTime<Utc>) -> Result<Self, Error> {
        let CouponSpec { name, discount_type: kind, discount_value: value, total_quantity, starts_at, ends_at } = spec;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(Error::Invalid("name must be 1..=200 characters"));
        }
        let discount = Discount::new(kind, value)?;
        if !(1..=MAX_QUANTITY).contains(&total_quantity) {
            return Err(Error::Invalid("totalQuantity must be 1..=2147483647"));
        }
        let starts_at = to_micros_precision(starts_at.unwrap_or(now));
        let ends_at = ends_at.map(to_micros_precision);
        if !accepted_instant(starts_at) || ends_at.is_some_and(|end| !accepted_instant(end)) {
            return Err(Error::Invalid(
                "startsAt and endsAt must be within 1970-01-01T00:00:00Z..=9999-12-31T23:59:59.999999Z",
            ));
        }
        if ends_at.is_some_and(|end| end <= starts_at) {
            return Err(Error::Invalid("endsAt must be after startsAt"));
        }
        Ok(Self { name: name.to_owned(), discount, total_quantity, starts_at, ends_at })
    }
}

/// Whether the contract accepts `at` (API.md: every instant from 1970-01-01 to 9999-12-31, in UTC): what
/// a DATETIME(6) column stores, and what the Redis window holds as non-negative microseconds.
fn accepted_instant(at: DateTime<Utc>) -> bool {
    (0..=LAST_ACCEPTED_MICROS).contains(&at.timestamp_micros())
}

/// 9999-12-31T23:59:59.999999Z in microseconds since the epoch.
const LAST_ACCEPTED_MICROS: i64 = 253_402_300_799_999_999;

fn to_micros_precision(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(at)
}

fn from_micros(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| crate::store::scripts::COUPON_ISSUE.unexpected(format_args!("issued_at {micros} out of range")))
}

/// Coupon campaigns cached in-process. Campaigns never change once created, so an entry never goes stale;
/// the stock and who holds a coupon live in Redis, which stays the authority for them.
#[derive(Clone, Default)]
pub struct Catalog {
    inner: Arc<CatalogInner>,
}

#[derive(Default)]
struct CatalogInner {
    coupons: RwLock<HashMap<CouponId, Arc<Coupon>>>,
    /// Serializes rebuilds of lost Redis state in this process, so a burst of requests that all find the
    /// state missing makes one MySQL read, not one each.
    restoring: tokio::sync::Mutex<()>,
}

impl Catalog {
    fn cached(&self, id: CouponId) -> Option<Arc<Coupon>> {
        self.inner.coupons.read().expect("catalog lock is never poisoned").get(&id).cloned()
    }

    fn remember(&self, coupon: Coupon) -> Arc<Coupon> {
        let coupon = Arc::new(coupon);
        self.inner.coupons.write().expect("catalog lock is never poisoned").insert(coupon.id, coupon.clone());
        coupon
    }

    /// The campaign, from memory, or from MySQL on first use.
    pub async fn coupon(&self, stores: &Stores, id: CouponId) -> Result<Arc<Coupon>, Error> {
        if let Some(coupon) = self.cached(id) {
            return Ok(coupon);
        }
        let coupon = db::find_coupon(&stores.db, id).await?.ok_or(Error::NotFound(id))?;
        Ok(self.remember(coupon))
    }

    /// Rebuilds the coupon's Redis state from MySQL unless another request did it first, or it was pruned.
    async fn restore(&self, stores: &Stores, coupon: &Coupon) -> Result<fence::Checked, Error> {
        let _one_at_a_time = self.inner.restoring.lock().await;
        Ok(fence::verify(stores, coupon).await?)
    }
}

/// At start-up: checks every campaign's Redis state against MySQL, rebuilding those Redis lost or that went
/// back in time, and loads the campaigns into the catalog. Campaigns whose state was pruned are neither
/// checked nor loaded here (the catalog reads them from MySQL on first use).
pub async fn restore_all(stores: &Stores, catalog: &Catalog) -> Result<(), Error> {
    let coupons = db::unpruned_coupons(&stores.db).await?;
    fence::verify_all(stores, &coupons).await?;
    for coupon in coupons {
        catalog.remember(coupon);
    }
    Ok(())
}

/// What one page of [`prune_ended`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrunedPage {
    /// Candidates looked at: a page shorter than asked for is the last.
    pub examined: u64,
    /// Campaigns whose Redis state was deleted.
    pub pruned: u64,
    /// The highest id looked at, where the next page starts.
    pub last: i64,
}

/// Deletes the Redis state (meta, stock, issued, queue) of up to `page` campaigns after id `after` that ended
/// before `ended_before` and have nothing left to persist; for the retention job.
///
/// Each coupon in a transaction of its own, holding the coupon row's lock (the one the writer's insert and
/// a rebuild take): the state is deleted only if its stream is empty (`lua/coupon_prune.lua`: one atomic
/// check-and-UNLINK), and the row is marked pruned before the lock is released, so no rebuild can load it
/// again. If the commit fails, the state is gone but the coupon is not marked: a request rebuilds it from
/// MySQL as after any loss, and the next pass prunes it again. A campaign with entries still queued is left
/// for a later pass.
pub async fn prune_ended(
    stores: &Stores,
    ended_before: DateTime<Utc>,
    after: i64,
    page: u64,
) -> Result<PrunedPage, StoreError> {
    let ids = db::ended_unpruned(&stores.db, ended_before, after, page).await?;
    let mut done = PrunedPage { examined: ids.len() as u64, pruned: 0, last: after };
    for id in ids {
        done.last = id.get();
        let mut tx = stores.db.begin().await?;
        let Some((_, fence)) = db::lock_fences(&mut tx, &[id]).await?.pop() else { continue };
        if fence.pruned || !cache::prune(&stores.redis, id).await? {
            continue;
        }
        db::set_pruned(&mut tx, id, Utc::now()).await?;
        tx.commit().await?;
        done.pruned += 1;
        tracing::info!(coupon.id = %id, "campaign ended and fully persisted: its Redis state pruned");
    }
    Ok(done)
}

/// A successful issuance.
#[derive(Debug, Clone)]
pub struct Issued {
    pub coupon_id: CouponId,
    pub user_id: UserId,
    pub issued_at: DateTime<Utc>,
}

/// A campaign with its live counts, for operators.
#[derive(Debug, Clone)]
pub struct Progress {
    pub coupon: Arc<Coupon>,
    /// Issuances Redis accepted.
    pub issued: i64,
    /// Stock left in Redis.
    pub remaining: i64,
    /// Issuances durable in MySQL; equals `issued` once the writer has caught up.
    pub persisted: i64,
}

/// The coupon domain's handle: what a request needs to create, issue, list and follow coupons. Cheap to
/// clone (every part is shared).
#[derive(Clone)]
pub struct Coupons {
    stores: Stores,
    /// Campaigns cached in-process, so the issue path needs no MySQL.
    catalog: Catalog,
    /// Batches concurrent issuances into shared script calls.
    issuer: Issuer,
    /// In-process mirror of the users known to exist, so the issue path skips a Redis round trip.
    known: user::cache::KnownUsers,
}

impl Coupons {
    /// The handle over `stores`, its issuer's workers started on the current runtime. `catalog` and `known`
    /// may already be filled (start-up loads them before serving).
    pub fn start(stores: Stores, catalog: Catalog, known: user::cache::KnownUsers) -> Self {
        let issuer = Issuer::start(stores.clone(), fence::ScriptGate::default());
        Self { stores, catalog, issuer, known }
    }

    /// The batching issuer alone, for benches that measure it.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// Stores a campaign in MySQL, then loads its state into Redis, so it is issuable when this returns.
    pub async fn create(&self, new: NewCoupon) -> Result<Arc<Coupon>, Error> {
        let stores = &self.stores;
        let id = db::insert_coupon(&stores.db, &new).await?;
        let coupon = Coupon {
            id,
            name: new.name,
            discount: new.discount,
            total_quantity: new.total_quantity,
            starts_at: new.starts_at,
            ends_at: new.ends_at,
        };
        // A new campaign: generation 0 and nothing persisted, as its MySQL row says.
        cache::load(&stores.redis, &coupon, cache::Holders::default(), 0, cache::StreamId::default()).await?;
        Ok(self.catalog.remember(coupon))
    }

    /// Issues `coupon_id` to `user_id`, first come first served. In steady state this is a share of one
    /// Redis round trip (the script, batched by the [`Issuer`]) and no MySQL query: the campaign comes from
    /// the catalog and the user from the in-process mirror of known users (a user it has not seen yet costs
    /// one more round trip).
    pub async fn issue(&self, coupon_id: CouponId, user_id: UserId) -> Result<Issued, Error> {
        let (stores, catalog, issuer) = (&self.stores, &self.catalog, &self.issuer);
        let coupon = catalog.coupon(stores, coupon_id).await?;
        user::ensure_known(stores, &self.known, user_id).await?;
        // An ended campaign is answered from its dates, before anything needs its Redis state: once it is
        // fully persisted, the retention job deletes that state (`prune_ended`).
        let mut reply = if coupon.has_ended_at(Utc::now()) {
            IssueReply::NotActive
        } else {
            issuer.issue(coupon_id, user_id).await?
        };
        if reply == IssueReply::NotLoaded {
            reply = match catalog.restore(stores, &coupon).await? {
                // Pruned: it ended (by the clock of the instance that pruned it), so nothing issues.
                fence::Checked::Pruned => IssueReply::NotActive,
                fence::Checked::Trusted | fence::Checked::Unknown | fence::Checked::Rebuilt(_) => {
                    issuer.issue(coupon_id, user_id).await?
                }
            };
        }
        let (result, outcome) = match reply {
            IssueReply::Issued(at) => ("issued", Ok(Issued { coupon_id, user_id, issued_at: from_micros(at)? })),
            IssueReply::AlreadyIssued(_) => {
                ("already_issued", Err(Error::AlreadyIssued { coupon: coupon_id, user: user_id }))
            }
            IssueReply::SoldOut => ("sold_out", Err(Error::SoldOut(coupon_id))),
            IssueReply::NotActive => ("not_active", Err(Error::NotActive(coupon_id))),
            IssueReply::NotLoaded => (
                "not_loaded",
                Err(crate::store::scripts::COUPON_ISSUE.unexpected("state missing after rebuild").into()),
            ),
            IssueReply::Unlisted(_) => (
                "not_loaded",
                Err(crate::store::scripts::COUPON_ISSUE.unexpected("unlisted reply past the script gate").into()),
            ),
        };
        metrics::counter!("coupon_issue_total", "result" => result).increment(1);
        outcome
    }

    /// The campaign and how far its sale and persistence have come.
    pub async fn progress(&self, id: CouponId) -> Result<Progress, Error> {
        let (stores, catalog) = (&self.stores, &self.catalog);
        let coupon = catalog.coupon(stores, id).await?;
        if !cache::is_loaded(&stores.redis, id).await?
            && catalog.restore(stores, &coupon).await? == fence::Checked::Pruned
        {
            // Pruned only once everything it issued was persisted: MySQL has the whole count.
            let persisted = db::count_persisted(&stores.db, id).await?;
            let remaining = (coupon.total_quantity - persisted).max(0);
            return Ok(Progress { coupon, issued: persisted, remaining, persisted });
        }
        let (issued, remaining) = cache::counts(&stores.redis, id).await?;
        let persisted = db::count_persisted(&stores.db, id).await?;
        Ok(Progress { coupon, issued, remaining, persisted })
    }

    /// The coupons `user_id` holds, optionally only those with `status`, newest issuance first; includes
    /// issuances not yet persisted (read-your-writes). Redis is read first for the reason given at
    /// [`held_by`].
    ///
    /// Cost: the user's MySQL rows, plus one pipelined HGET per coupon listed in
    /// `<prefix>coupons:unpersisted`, the only ones whose `issued` hash can hold a user MySQL does not
    /// (`lua/coupon_issue.lua`, "Why the listing"): those selling now or in the last seconds, and those
    /// whose issuances wait for the writer. Not one call per campaign ever created.
    pub async fn held(&self, user_id: UserId, status: Option<HeldStatus>) -> Result<Vec<HeldCoupon>, Error> {
        let stores = &self.stores;
        user::ensure_exists(stores, user_id).await?;
        let coupons: Vec<CouponId> = cache::listed(&stores.redis).await?.into_iter().map(|(id, _)| id).collect();
        let in_redis = cache::issued_to(&stores.redis, user_id, &coupons).await?;
        let mut held = db::list_held(&stores.db, user_id).await?;
        for (coupon_id, at) in in_redis {
            if held.iter().all(|h| h.coupon.id != coupon_id) {
                let coupon = match self.catalog.coupon(stores, coupon_id).await {
                    Ok(coupon) => coupon,
                    // A registry entry MySQL does not know (a database restored from an older backup):
                    // nothing the user can hold.
                    Err(Error::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                held.push(HeldCoupon {
                    coupon: Coupon::clone(&coupon),
                    user_id,
                    status: HeldStatus::Available,
                    issued_at: from_micros(at)?,
                    used_at: None,
                    // Listed, not paid with: the pay path reads it again through `held_by`.
                    unpersisted_generation: None,
                });
            }
        }
        held.retain(|h| status.is_none_or(|s| h.status == s));
        held.sort_by_key(|h| std::cmp::Reverse((h.issued_at, h.coupon.id)));
        Ok(held)
    }
}
