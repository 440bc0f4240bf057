//! Keeps "exactly Q" when Redis loses data (docs/coupons.md, "Redis losing data").
//!
//! MySQL is the record; Redis decides. When Redis loses the coupon's state (a wipe, lost keys), goes back in
//! time (restarted from an older file) or holds a state MySQL does not know, the state is rebuilt from
//! MySQL's rows under a lock on the coupon row, and gets a new generation:
//!
//! - The writer inserts a batch under the same lock (`FOR UPDATE`) and only the entries decided by the
//!   current generation; so a rebuild counts either all of a batch or none of it, and an entry decided by an
//!   older state is re-decided through the issue script against the rebuilt one (honoured while stock lasts,
//!   refused and counted otherwise) instead of being inserted beside rows the rebuild never counted.
//! - The writer records the highest stream id it persisted in the same transaction; a stream whose last id is
//!   below it, or a state whose generation is not MySQL's, is stale and rebuilt before it issues again.
//! - Redis forgets its scripts when it restarts: the issue script answering NOSCRIPT makes every coupon be
//!   checked before the script is loaded again ([`ScriptGate`]), so nothing issues from a restored file first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use futures::{StreamExt, TryStreamExt, stream};

use super::Coupon;
use super::cache::{self, IssueReply, State};
use super::db::{self, Fence};
use crate::id::{CouponId, UserId};
use crate::store::{StoreError, Stores};

/// Coupons checked at once after Redis forgot its scripts.
const CHECK_CONCURRENCY: usize = 16;
/// Listings one issue call may make. A second one is only needed when the writer unlisted the coupon
/// between our listing and our call, which takes a stream that stayed empty for its quiet period: in
/// practice never; past this the call fails as unavailable (503) rather than loop.
const LISTING_ATTEMPTS: usize = 3;

/// Why a coupon's Redis state was rebuilt; the `cause` label of `coupon_state_rebuilds_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Its `meta` is gone: a wipe, an eviction, deleted keys, or a new Redis.
    Missing,
    /// Its generation is not MySQL's: it predates the last rebuild (an older file) or a rebuild whose
    /// commit failed.
    Generation,
    /// Its stream is behind what MySQL persisted: Redis went back in time.
    Rollback,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Missing => "missing",
            Cause::Generation => "generation",
            Cause::Rollback => "rollback",
        }
    }
}

/// Why the Redis state cannot be trusted, or `None` when it can.
fn stale(state: &State, fence: &Fence) -> Option<Cause> {
    if !state.loaded {
        Some(Cause::Missing)
    } else if state.generation != fence.generation {
        Some(Cause::Generation)
    } else if state.last_id < fence.persisted {
        Some(Cause::Rollback)
    } else {
        None
    }
}

/// What a check of a coupon's Redis state found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// The state can be trusted (or MySQL has no such coupon).
    Trusted,
    /// The state was stale and this call rebuilt it.
    Rebuilt(Cause),
    /// The campaign ended and its state was pruned for good (`super::prune_ended`): it is never rebuilt, and
    /// it issues nothing.
    Pruned,
}

/// Checks the coupon's Redis state against MySQL and rebuilds it if stale.
pub async fn verify(stores: &Stores, coupon: &Coupon) -> Result<Checked, StoreError> {
    let state = cache::state(&stores.redis, coupon.id).await?;
    let Some(fence) = db::fence(&stores.db, coupon.id).await? else { return Ok(Checked::Trusted) };
    if fence.pruned {
        return Ok(Checked::Pruned);
    }
    if stale(&state, &fence).is_none() {
        return Ok(Checked::Trusted);
    }
    rebuild(stores, coupon).await
}

/// Rebuilds the coupon's Redis state from MySQL under the coupon row's lock, if it is still stale once the
/// lock is held (another request or instance may have rebuilt it meanwhile) and was not pruned meanwhile.
///
/// Issuances Redis accepted and lost before the writer persisted them are not in MySQL and so not restored;
/// the persistence setting bounds them (docs/operations.md).
pub async fn rebuild(stores: &Stores, coupon: &Coupon) -> Result<Checked, StoreError> {
    let mut tx = stores.db.begin().await?;
    let Some((_, fence)) = db::lock_fences(&mut tx, &[coupon.id]).await?.pop() else { return Ok(Checked::Trusted) };
    if fence.pruned {
        return Ok(Checked::Pruned);
    }
    let state = cache::state(&stores.redis, coupon.id).await?;
    let Some(cause) = stale(&state, &fence) else { return Ok(Checked::Trusted) };
    let rows = db::issued_rows(&mut tx, coupon.id).await?;
    let issued: Vec<(UserId, i64)> = rows.iter().map(|(user, at)| (*user, at.timestamp_micros())).collect();
    // Never a generation used before, even one whose commit failed: entries it decided must not pass as current.
    let generation = fence.generation.saturating_add(1).max(Utc::now().timestamp_micros());
    db::set_generation(&mut tx, coupon.id, generation).await?;
    cache::unload(&stores.redis, coupon.id).await?;
    cache::load(&stores.redis, coupon, &issued, generation, fence.persisted).await?;
    if let Err(error) = tx.commit().await {
        // Redis now holds a generation MySQL does not: unload it so the next request rebuilds again.
        if let Err(unload) = cache::unload(&stores.redis, coupon.id).await {
            tracing::error!(coupon.id = %coupon.id, error = %unload, "unloading an uncommitted rebuild failed");
        }
        return Err(error.into());
    }
    metrics::counter!("coupon_state_rebuilds_total", "cause" => cause.as_str()).increment(1);
    metrics::gauge!("coupon_generation", "coupon" => coupon.id.to_string()).set(generation as f64);
    tracing::warn!(
        coupon.id = %coupon.id,
        coupon.persisted = issued.len(),
        coupon.generation = generation,
        cause = cause.as_str(),
        redis.last_id = %state.last_id,
        mysql.persisted = %fence.persisted,
        "coupon state rebuilt from MySQL"
    );
    Ok(Checked::Rebuilt(cause))
}

/// Checks `coupons` (every campaign whose state was not pruned: at start-up, and when Redis forgot its
/// scripts); returns how many were rebuilt.
pub async fn verify_all(stores: &Stores, coupons: &[Coupon]) -> Result<usize, StoreError> {
    // Owned futures: one borrowing `stores` and a coupon trips the compiler's `Send` check when spawned.
    let checks = coupons.iter().cloned().map(|coupon| {
        let stores = stores.clone();
        async move { verify(&stores, &coupon).await }
    });
    let checked: Vec<Checked> = stream::iter(checks).buffer_unordered(CHECK_CONCURRENCY).try_collect().await?;
    Ok(checked.iter().filter(|checked| matches!(checked, Checked::Rebuilt(_))).count())
}

/// Runs the issue script, and when Redis answers that it does not have it, checks every coupon before
/// loading it again. Cheap to clone; clones share one check.
#[derive(Clone, Default)]
pub struct ScriptGate {
    inner: Arc<GateInner>,
}

#[derive(Default)]
struct GateInner {
    /// Bumped after each reload, so callers that saw the same NOSCRIPT skip the check that already ran.
    reloads: AtomicU64,
    checking: tokio::sync::Mutex<()>,
}

impl ScriptGate {
    /// `lua/coupon_issue.lua` for `users` at `now_micros`, as [`cache::issue`], never on unchecked state, and
    /// listing the coupon first when the script asks for it (never answers [`IssueReply::Unlisted`]).
    pub async fn issue(
        &self,
        stores: &Stores,
        id: CouponId,
        users: &[UserId],
        now_micros: i64,
    ) -> Result<Vec<IssueReply>, StoreError> {
        let (mut listing, mut listings) = (0, 0);
        loop {
            let reloads = self.inner.reloads.load(Ordering::Acquire);
            match cache::issue(&stores.redis, id, users, now_micros, listing).await? {
                None => self.check_and_reload(stores, reloads).await?,
                Some(replies) => match replies.first() {
                    Some(&IssueReply::Unlisted(epoch)) if listings < LISTING_ATTEMPTS => {
                        cache::list(&stores.redis, id, epoch).await?;
                        (listing, listings) = (epoch, listings + 1);
                    }
                    Some(IssueReply::Unlisted(_)) => {
                        let why = format!("coupon {id} unlisted again after each of {LISTING_ATTEMPTS} listings");
                        return Err(fred::error::Error::new(fred::error::ErrorKind::IO, why).into());
                    }
                    _ => return Ok(replies),
                },
            }
        }
    }

    async fn check_and_reload(&self, stores: &Stores, seen: u64) -> Result<(), StoreError> {
        let _one_at_a_time = self.inner.checking.lock().await;
        if self.inner.reloads.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        let rebuilt = verify_all(stores, &db::unpruned_coupons(&stores.db).await?).await?;
        crate::store::scripts::COUPON_ISSUE.load(&stores.redis).await?;
        self.inner.reloads.fetch_add(1, Ordering::Release);
        metrics::counter!("coupon_script_reloads_total").increment(1);
        // Also the normal start of an instance: the issue script is never loaded unchecked, not even at boot.
        tracing::info!(
            coupons.rebuilt = rebuilt,
            "issue script missing from Redis (a first start, a Redis restart or a flush): every coupon checked, script loaded"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coupon::cache::StreamId;

    fn state(loaded: bool, generation: i64, ms: i64, seq: i64) -> State {
        State { loaded, generation, last_id: StreamId { ms, seq } }
    }

    fn fence(generation: i64, ms: i64, seq: i64) -> Fence {
        Fence { generation, persisted: StreamId { ms, seq }, pruned: false }
    }

    #[test]
    fn a_state_is_trusted_only_when_loaded_of_the_current_generation_and_not_behind_mysql() {
        assert_eq!(stale(&state(true, 7, 100, 2), &fence(7, 100, 2)), None);
        assert_eq!(stale(&state(true, 7, 101, 0), &fence(7, 100, 2)), None);
        assert_eq!(stale(&state(false, 0, 0, 0), &fence(0, 0, 0)), Some(Cause::Missing));
        assert_eq!(stale(&state(true, 6, 200, 0), &fence(7, 100, 2)), Some(Cause::Generation));
        assert_eq!(stale(&state(true, 8, 200, 0), &fence(7, 100, 2)), Some(Cause::Generation));
        assert_eq!(stale(&state(true, 7, 100, 1), &fence(7, 100, 2)), Some(Cause::Rollback));
        assert_eq!(stale(&state(true, 7, 99, 9), &fence(7, 100, 0)), Some(Cause::Rollback));
    }

    #[test]
    fn stream_ids_order_as_redis_orders_them_and_round_trip() {
        let parse = |raw| StreamId::parse(raw).unwrap();
        assert!(parse("1700000000000-10") > parse("1700000000000-9"));
        assert!(parse("1700000000001-0") > parse("1700000000000-99"));
        assert_eq!(parse("12-3").to_string(), "12-3");
        assert_eq!(StreamId::parse("12"), None);
        assert_eq!(StreamId::parse("a-1"), None);
    }
}
