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

use std::collections::{HashMap, HashSet};
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
    /// One of its other keys is gone or disagrees with `meta` (`issued`, `stock` or the stream deleted).
    Damaged,
    /// Its generation is not MySQL's: it predates the last rebuild (an older file) or a rebuild whose
    /// commit failed.
    Generation,
    /// Its stream is behind what MySQL persisted: Redis went back in time (an older file, or a replica that
    /// lagged promoted in its master's place).
    Rollback,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Missing => "missing",
            Cause::Damaged => "damaged",
            Cause::Generation => "generation",
            Cause::Rollback => "rollback",
        }
    }
}

/// Why the Redis state cannot be trusted, or `None` when it can.
fn stale(state: &State, fence: &Fence) -> Option<Cause> {
    if !state.loaded {
        Some(Cause::Missing)
    } else if !state.whole {
        Some(Cause::Damaged)
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
    /// The state can be trusted.
    Trusted,
    /// MySQL has no such coupon: there is nothing to check it against.
    Unknown,
    /// The state was stale and this call rebuilt it.
    Rebuilt(Cause),
    /// The campaign ended and its state was pruned for good (`super::prune_ended`): it is never rebuilt, and
    /// it issues nothing.
    Pruned,
}

/// Checks the coupon's Redis state against MySQL and rebuilds it if stale. The first look takes no lock (the
/// common answer is "trusted"); a stale one is confirmed under the lock by [`rebuild`].
pub async fn verify(stores: &Stores, coupon: &Coupon) -> Result<Checked, StoreError> {
    let state = cache::state(&stores.redis, coupon.id).await?;
    let Some(fence) = db::fence(&stores.db, coupon.id).await? else { return Ok(Checked::Unknown) };
    if fence.pruned {
        return Ok(Checked::Pruned);
    }
    if stale(&state, &fence).is_none() {
        return Ok(Checked::Trusted);
    }
    rebuild(stores, coupon).await
}

/// Rebuilds the coupon's Redis state under the coupon row's lock, if it is still stale once the lock is held
/// (another request or instance may have rebuilt it meanwhile) and was not pruned meanwhile.
///
/// The lock is the writer's too, and the writer takes it before it reads a batch from Redis: so no batch is in
/// a writer's hand outside it, and this waits for the batch any writer holds to be committed.
///
/// The rebuilt state holds MySQL's rows plus the winners Redis still knows of and MySQL does not have yet
/// ([`cache::survivors`]: the entries left in the stream, and the `issued` hash when `meta` says it is of the
/// current generation), first come first served: a rebuild never hands their stock to later askers. Those
/// are queued again for the writer. Should they exceed the quantity (a state that over-issued before it was
/// found out), the latest are refused, logged and counted in `coupon_issuances_lost_total`. Issuances Redis
/// accepted and lost altogether before the writer had them are not restored; the persistence setting bounds
/// them (docs/operations.md).
pub async fn rebuild(stores: &Stores, coupon: &Coupon) -> Result<Checked, StoreError> {
    let mut tx = stores.db.begin().await?;
    let Some((_, fence)) = db::lock_fences(&mut tx, &[coupon.id]).await?.pop() else { return Ok(Checked::Unknown) };
    if fence.pruned {
        return Ok(Checked::Pruned);
    }
    let state = cache::state(&stores.redis, coupon.id).await?;
    let Some(cause) = stale(&state, &fence) else { return Ok(Checked::Trusted) };
    let persisted = db::issued_rows(&mut tx, coupon.id).await?;
    let mut holders: Vec<(UserId, i64)> = persisted.iter().map(|(user, at)| (*user, at.timestamp_micros())).collect();
    let current = state.loaded && state.generation == fence.generation;
    let (kept, lost) = unpersisted_winners(
        &holders,
        cache::survivors(&stores.redis, coupon.id, current).await?,
        coupon.total_quantity,
    );
    holders.extend_from_slice(&kept);
    // Never a generation used before, even one whose commit failed: entries it decided must not pass as current.
    let generation = fence.generation.saturating_add(1).max(Utc::now().timestamp_micros());
    db::set_generation(&mut tx, coupon.id, generation).await?;
    cache::unload(&stores.redis, coupon.id).await?;
    let loaded = cache::Holders { all: &holders, unpersisted: &kept, listing: generation + 1 };
    cache::load(&stores.redis, coupon, loaded, generation, fence.persisted).await?;
    if let Err(error) = tx.commit().await {
        // Redis now holds a generation MySQL does not: unload it so the next request rebuilds again.
        if let Err(unload) = cache::unload(&stores.redis, coupon.id).await {
            tracing::error!(coupon.id = %coupon.id, error = %unload, "unloading an uncommitted rebuild failed");
        }
        return Err(error.into());
    }
    for (user, at) in &lost {
        tracing::warn!(coupon.id = %coupon.id, user.id = %user, issued_at = at, "issuance beyond the quantity found in Redis refused on rebuild");
    }
    metrics::counter!("coupon_issuances_lost_total", "at" => "rebuild").increment(lost.len() as u64);
    metrics::counter!("coupon_state_rebuilds_total", "cause" => cause.as_str()).increment(1);
    metrics::gauge!("coupon_generation", "coupon" => coupon.id.to_string()).set(generation as f64);
    tracing::warn!(
        coupon.id = %coupon.id,
        coupon.persisted = persisted.len(),
        coupon.kept_from_redis = kept.len(),
        coupon.lost = lost.len(),
        coupon.generation = generation,
        cause = cause.as_str(),
        redis.last_id = %state.last_id,
        mysql.persisted = %fence.persisted,
        "coupon state rebuilt from MySQL and what Redis still knew"
    );
    Ok(Checked::Rebuilt(cause))
}

/// A user and when it was issued the coupon (µs since the epoch).
type Winner = (UserId, i64);

/// Of `survivors` (winners Redis still knows of, possibly repeated), those MySQL's `persisted` holders do not
/// include, earliest first (ties by user id), split into the ones the quantity still has room for and the rest.
fn unpersisted_winners(persisted: &[Winner], mut survivors: Vec<Winner>, quantity: i64) -> (Vec<Winner>, Vec<Winner>) {
    let known: HashSet<UserId> = persisted.iter().map(|(user, _)| *user).collect();
    survivors.sort_unstable_by_key(|&(user, at)| (at, user));
    let mut seen = HashSet::new();
    survivors.retain(|(user, _)| !known.contains(user) && seen.insert(*user));
    let room = usize::try_from(quantity).unwrap_or(0).saturating_sub(persisted.len()).min(survivors.len());
    let lost = survivors.split_off(room);
    (survivors, lost)
}

/// Checks `coupons` (every campaign whose state was not pruned: at start-up, and when Redis forgot its
/// scripts or was reconnected to); returns how many were rebuilt.
///
/// The first look holds every one of their rows' locks at once (one statement), rather than trusting a look
/// without them: a writer may hold a batch read from a Redis that has since been replaced by a replica that
/// never got it, and only once its commit raised the persisted mark is the replica seen to be behind. The
/// stale ones are then rebuilt one by one, each under its own lock again ([`rebuild`] checks once more).
pub async fn verify_all(stores: &Stores, coupons: &[Coupon]) -> Result<usize, StoreError> {
    let ids: Vec<CouponId> = coupons.iter().map(|coupon| coupon.id).collect();
    let mut tx = stores.db.begin().await?;
    let fences: HashMap<CouponId, Fence> = db::lock_fences(&mut tx, &ids).await?.into_iter().collect();
    // Owned futures: one borrowing `stores` or a coupon trips the compiler's `Send` check when spawned.
    let unpruned: Vec<CouponId> = fences.iter().filter(|(_, fence)| !fence.pruned).map(|(id, _)| *id).collect();
    let checks = unpruned.into_iter().map(|id| {
        let redis = stores.redis.clone();
        async move { Ok::<_, StoreError>((id, cache::state(&redis, id).await?)) }
    });
    let states: Vec<(CouponId, State)> = stream::iter(checks).buffer_unordered(CHECK_CONCURRENCY).try_collect().await?;
    drop(tx);
    let stale: HashSet<CouponId> =
        states.into_iter().filter(|(id, state)| stale(state, &fences[id]).is_some()).map(|(id, _)| id).collect();
    let mut rebuilt = 0;
    for coupon in coupons.iter().filter(|coupon| stale.contains(&coupon.id)) {
        if matches!(rebuild(stores, coupon).await?, Checked::Rebuilt(_)) {
            rebuilt += 1;
        }
    }
    Ok(rebuilt)
}

/// Runs the issue script, and when Redis answers that it does not have it, or a connection to it was made
/// again, checks every coupon before it decides again, unless the nodes are the very processes and data
/// last checked (their run and replication ids, [`crate::store::Redis::node_ids`]). Cheap to clone; clones
/// share one check.
#[derive(Clone, Default)]
pub struct ScriptGate {
    inner: Arc<GateInner>,
}

#[derive(Default)]
struct GateInner {
    /// Bumped after each reload, so callers that saw the same NOSCRIPT skip the check that already ran.
    reloads: AtomicU64,
    /// [`crate::store::Redis::connections`] when every coupon was last checked: a connection made since may
    /// reach another Redis (a promoted replica that still has the script cached, a restart), so the state
    /// is checked again before it decides, NOSCRIPT or not.
    checked_connections: AtomicU64,
    /// One check at a time, holding the nodes' ids ([`crate::store::Redis::node_ids`]) when every coupon was
    /// last checked: a reconnection or NOSCRIPT that finds the same ones reached the same data.
    checked_nodes: tokio::sync::Mutex<Option<Vec<String>>>,
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
            if self.inner.checked_connections.load(Ordering::Acquire) != stores.redis.connections() {
                self.check_and_reload(stores, reloads).await?;
                continue;
            }
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

    /// Checks every coupon, unless the nodes are the very processes and data last checked (a dropped
    /// connection, scripts flushed), then loads the issue script.
    async fn check_and_reload(&self, stores: &Stores, seen: u64) -> Result<(), StoreError> {
        let mut checked_nodes = self.inner.checked_nodes.lock().await;
        if self.inner.reloads.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        // Read before the check: a connection made during it is checked by the next call.
        let connections = stores.redis.connections();
        let nodes = stores.redis.node_ids().await?;
        // The same processes on the same data (scripts flushed, a dropped connection): nothing to check.
        let same = checked_nodes.as_ref() == Some(&nodes);
        let rebuilt = if same { 0 } else { verify_all(stores, &db::unpruned_coupons(&stores.db).await?).await? };
        crate::store::scripts::COUPON_ISSUE.load(&stores.redis).await?;
        *checked_nodes = Some(nodes.clone());
        self.inner.checked_connections.store(connections, Ordering::Release);
        self.inner.reloads.fetch_add(1, Ordering::Release);
        metrics::counter!("coupon_script_reloads_total").increment(1);
        // Also the normal start of an instance: the issue script is never loaded unchecked, not even at boot.
        if !same {
            tracing::info!(
                coupons.rebuilt = rebuilt,
                redis.nodes = ?nodes,
                "Redis lost the issue script or was reconnected to on other data (a first start, a restart, a failover): every coupon checked, script loaded"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coupon::cache::StreamId;

    fn state(loaded: bool, generation: i64, ms: i64, seq: i64) -> State {
        State { loaded, generation, last_id: StreamId { ms, seq }, whole: loaded }
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
        let damaged = State { whole: false, ..state(true, 7, 100, 2) };
        assert_eq!(stale(&damaged, &fence(7, 100, 2)), Some(Cause::Damaged));
    }

    #[test]
    fn a_rebuild_keeps_redis_only_winners_earliest_first_within_the_quantity() {
        let user = |id| UserId::new(id).unwrap();
        let persisted = [(user(1), 10), (user(2), 11)];
        let survivors = vec![(user(2), 11), (user(5), 30), (user(4), 20), (user(3), 20), (user(4), 20), (user(6), 40)];
        let (kept, lost) = unpersisted_winners(&persisted, survivors, 5);
        assert_eq!(kept, [(user(3), 20), (user(4), 20), (user(5), 30)]);
        assert_eq!(lost, [(user(6), 40)]);
        let (kept, lost) = unpersisted_winners(&persisted, vec![(user(3), 1)], 2);
        assert_eq!((kept, lost), (vec![], vec![(user(3), 1)]));
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
