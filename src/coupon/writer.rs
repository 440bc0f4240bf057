//! The background writer: moves issuances from the per-coupon Redis streams into MySQL.
//!
//! Each step reads the busy coupons' streams (every registered one once a second) through the consumer
//! group `writers`, one XREADGROUP per coupon, pipelined; inserts the batch with multi-row `INSERT IGNORE`
//! under a lock on its coupons' rows, only the entries decided by each coupon's current generation, and
//! re-decides the others through the issue script ([`super::fence`]); and only then acknowledges the entries
//! and trims them from the streams (`lua/coupon_queue_ack.lua`). A stream Redis lost meanwhile has nothing
//! to acknowledge, which never stops the writer.
//! Several instances run side by side: the group hands each entry to one consumer, and entries a dead
//! consumer left pending are claimed with XAUTOCLAIM once idle for [`CLAIM_IDLE`]. A replayed entry is
//! harmless: the `user_coupons` primary key makes its insert a no-op. While MySQL is down the batch in hand
//! is retried with backoff and the streams grow; issuance goes on. A campaign that ended over
//! [`UNREGISTER_AFTER_END`] ago leaves the registry once its stream is empty.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::cache::{self, IssueReply, Queued};
use super::db::{self, NewIssuance};
use super::fence::{self, Checked, ScriptGate};
use crate::id::CouponId;
use crate::store::{StoreError, Stores};

/// Entries read per coupon stream per step. An entry holds one script call's issuances (1 to 128).
pub const READ_COUNT: u64 = 500;
/// An entry delivered to a consumer and not acknowledged for this long is claimed by another one: its
/// consumer is taken for dead. A live writer acknowledges a batch within milliseconds, so 5 s only fires
/// after a crash or a long MySQL stall; claiming too early costs a duplicate (ignored) insert, too late
/// delays the recovery of a crashed instance's batch.
pub const CLAIM_IDLE: Duration = Duration::from_secs(5);
/// How often a step reads every registered coupon's stream (not only the busy ones), reclaims idle
/// entries, measures queue depth and pending count, and unregisters finished campaigns.
const RECLAIM_PERIOD: Duration = Duration::from_secs(1);
/// A stream without new entries for this long is read only on the reclaim step: registered campaigns
/// pile up over months, and reading each one's stream on every step cost more than the busy one's work.
const QUIET_AFTER: Duration = Duration::from_secs(10);
/// A campaign whose window ended this long ago and whose stream is empty leaves the registry: nothing can
/// be queued for it any more, while every registered campaign costs the full pass five commands a second.
/// The margin covers clock differences between instances and a script
/// call decided just before the end but run late.
pub const UNREGISTER_AFTER_END: Duration = Duration::from_secs(60);
/// Longest a read of the streams may hold the coupons' rows locked (see [`Writer::take_batch`]). A read takes
/// milliseconds; one waiting on a Redis master that died would otherwise hold them for the whole command
/// timeout, and every pay with an unpersisted coupon, every rebuild and every check of Redis with them. An
/// abandoned read leaves what it was delivered pending, claimed again after [`CLAIM_IDLE`].
const LOCKED_READ_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause after a step that drained the queue: bounds the issue-to-persist lag of a short queue.
const IDLE_SLEEP: Duration = Duration::from_millis(20);
/// Backoff after a failed step, doubling up to the maximum while the failure lasts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// After shutdown is requested the writer keeps draining the queue for at most this long.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This many issuances were persisted and acknowledged; `backlog`: some stream gave a full read, so
    /// more may be waiting.
    Persisted { issuances: usize, backlog: bool },
    /// Every stream was empty.
    Idle,
}

/// One writer instance: its consumer name and the batch it holds.
pub struct Writer {
    consumer: String,
    /// Runs the issue script for re-decisions, never on a Redis that forgot it unchecked.
    gate: ScriptGate,
    /// Entries read but not yet acknowledged; kept across a failed step so it is retried first.
    in_hand: Vec<Queued>,
    /// The transaction holding the locks of the coupons `in_hand` was read from, with their fences, taken
    /// before the read (see [`Writer::take_batch`]); `None` once committed, or after a failed step.
    locked: Option<(sqlx::Transaction<'static, sqlx::MySql>, HashMap<CouponId, db::Fence>)>,
    /// Whether `in_hand` is persisted (inserted or re-decided) and only waits for its acknowledgement.
    persisted: Option<usize>,
    /// Whether the read that filled `in_hand` was full for some stream.
    backlog: bool,
    last_reclaim: Option<Instant>,
    /// The last full pass's chores, done once its batch is committed (no row lock held): the coupons it
    /// found finished, to unregister, and the delisting of quiet ones.
    chores: Option<Vec<CouponId>>,
    /// Coupons whose stream had entries within [`QUIET_AFTER`], and when it last had some.
    busy: HashMap<CouponId, Instant>,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    /// A writer with a consumer name unique to this process: hostname, pid and a random suffix.
    pub fn new() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "host".to_owned());
        let random = uuid::Uuid::new_v4().simple().to_string();
        let consumer = format!("{}-{}-{}", host.trim(), std::process::id(), &random[..8]);
        Self {
            consumer,
            gate: ScriptGate::default(),
            in_hand: Vec::new(),
            locked: None,
            persisted: None,
            backlog: false,
            last_reclaim: None,
            chores: None,
            busy: HashMap::new(),
        }
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Reads a batch (unless one is in hand), persists it and acknowledges it. On error the batch stays in
    /// hand for the next call, which resumes where this one stopped.
    pub async fn drain_once(&mut self, stores: &Stores) -> Result<Outcome, StoreError> {
        if self.take_batch(stores).await? == 0 {
            return Ok(Outcome::Idle);
        }
        let issuances = self.persist(stores).await?;
        self.acknowledge(stores).await?;
        self.do_chores(stores).await;
        Ok(Outcome::Persisted { issuances, backlog: self.backlog })
    }

    /// Step 1: reads a batch unless one is in hand; returns the entries in hand.
    ///
    /// The coupons' rows are locked (the lock of a rebuild, [`fence::rebuild`]) before their streams are read,
    /// and stay locked until the batch is committed: a batch is never in a writer's hand outside that lock,
    /// so a rebuild anywhere either comes before the read or sees the batch in MySQL. Were the lock taken
    /// after the read, a Redis replaced in between by a replica that lagged would sell the batch's stock a
    /// second time, and the batch would then be inserted beside it.
    pub async fn take_batch(&mut self, stores: &Stores) -> Result<usize, StoreError> {
        if self.in_hand.is_empty() {
            self.locked = None;
            // The coupons stay locked while their streams are read: not while this connection is still
            // reconnecting (the read would wait out the command timeout holding them, and every rebuild and
            // check with it). The next step tries again.
            if !fred::interfaces::ClientLike::is_connected(stores.redis.client()) {
                return Ok(0);
            }
            let (coupons, full_pass) = self.to_read(stores).await?;
            let mut locked = None;
            if !coupons.is_empty() {
                let mut tx = stores.db.begin().await?;
                let fences = db::lock_fences(&mut tx, &coupons).await?.into_iter().collect();
                locked = Some((tx, fences));
            }
            let read = tokio::time::timeout(LOCKED_READ_TIMEOUT, self.read(stores, &coupons, full_pass)).await;
            let Ok(read) = read else {
                let why =
                    format!("reading the coupon streams took over {LOCKED_READ_TIMEOUT:?} with their rows locked");
                return Err(fred::error::Error::new(fred::error::ErrorKind::Timeout, why).into());
            };
            self.in_hand = read?;
            self.persisted = None;
            if self.in_hand.is_empty() {
                drop(locked);
                self.do_chores(stores).await;
            } else {
                self.locked = locked;
            }
        }
        Ok(self.in_hand.len())
    }

    /// Step 2: in the transaction of step 1 (or, retrying after a failure, a new one locking the coupons in
    /// hand), inserts the entries of each coupon's current generation and raises its persisted mark; then
    /// re-decides the entries of older generations. Returns the issuances inserted. Done once per batch: a
    /// retry after a failed acknowledgement skips it.
    pub async fn persist(&mut self, stores: &Stores) -> Result<usize, StoreError> {
        if let Some(inserted) = self.persisted {
            return Ok(inserted);
        }
        let mut by_coupon: BTreeMap<CouponId, Vec<&Queued>> = BTreeMap::new();
        for entry in &self.in_hand {
            by_coupon.entry(entry.coupon_id).or_default().push(entry);
        }
        let (mut tx, fences) = match self.locked.take() {
            Some(locked) => locked,
            None => {
                let ids: Vec<CouponId> = by_coupon.keys().copied().collect();
                let mut tx = stores.db.begin().await?;
                let fences = db::lock_fences(&mut tx, &ids).await?.into_iter().collect();
                (tx, fences)
            }
        };
        let mut rows: Vec<NewIssuance> = Vec::new();
        let mut stale: Vec<(CouponId, Vec<&Queued>)> = Vec::new();
        for (coupon_id, entries) in &by_coupon {
            let Some(fence) = fences.get(coupon_id) else {
                tracing::error!(coupon.id = %coupon_id, entries = entries.len(), "queued issuances of a coupon MySQL does not have: dropped");
                continue;
            };
            let (current, older): (Vec<&Queued>, Vec<&Queued>) =
                entries.iter().partition(|entry| entry.generation == fence.generation);
            if !older.is_empty() {
                stale.push((*coupon_id, older));
            }
            if let Some(highest) = current.iter().map(|entry| entry.stream_id).max() {
                db::advance_persisted(&mut tx, *coupon_id, highest).await?;
            }
            rows.extend(current.iter().flat_map(|entry| {
                let (coupon_id, issued_at) = (entry.coupon_id, entry.issued_at);
                entry.user_ids.iter().map(move |&user_id| NewIssuance { coupon_id, user_id, issued_at })
            }));
        }
        // In key order: neighbouring rows land on the same index pages, and two instances inserting
        // overlapping batches (a reclaimed entry) take their row locks in the same order.
        rows.sort_unstable_by_key(|row| (row.coupon_id, row.user_id));
        db::insert_issued(&mut tx, &rows).await?;
        tx.commit().await?;
        record_lag(&rows);

        for (coupon_id, entries) in &stale {
            self.redecide(stores, *coupon_id, entries).await?;
        }
        self.persisted = Some(rows.len());
        Ok(rows.len())
    }

    /// Step 3: acknowledges and trims the batch in hand, then lets it go.
    pub async fn acknowledge(&mut self, stores: &Stores) -> Result<(), StoreError> {
        cache::ack(&stores.redis, &self.in_hand).await?;
        self.in_hand.clear();
        self.persisted = None;
        Ok(())
    }

    /// Decides again, against the coupon's current state, entries of one coupon that an older state decided:
    /// their users keep their original `issued_at` and are honoured while stock lasts; the rest are refused,
    /// counted and logged. The campaign is read and its state checked once for all of them.
    async fn redecide(&self, stores: &Stores, coupon_id: CouponId, entries: &[&Queued]) -> Result<(), StoreError> {
        let Some(coupon) = db::find_coupon(&stores.db, coupon_id).await? else { return Ok(()) };
        // A state Redis holds but MySQL does not know is rebuilt first, or the winners would be queued with a
        // generation the next step re-decides again.
        let mut pruned = fence::verify(stores, &coupon).await? == Checked::Pruned;
        for entry in entries {
            let at = entry.issued_at.timestamp_micros();
            let mut replies = Vec::new();
            if !pruned {
                replies = self.gate.issue(stores, coupon.id, &entry.user_ids, at).await?;
                if replies.contains(&IssueReply::NotLoaded) {
                    // Lost again since the check: rebuild once more, then give up for this step.
                    pruned = fence::verify(stores, &coupon).await? == Checked::Pruned;
                    if !pruned {
                        replies = self.gate.issue(stores, coupon.id, &entry.user_ids, at).await?;
                    }
                }
            }
            if pruned {
                // Pruned only with an empty stream, so entries in hand here outlived the stream they came from
                // (Redis lost it) by longer than the campaign's retention: the campaign is over, nothing issues.
                replies = vec![IssueReply::NotActive; entry.user_ids.len()];
            } else if replies.contains(&IssueReply::NotLoaded) {
                return Err(crate::store::scripts::COUPON_ISSUE.unexpected("state missing after rebuild"));
            }
            for (user, reply) in entry.user_ids.iter().zip(&replies) {
                let result = match reply {
                    IssueReply::Issued(_) => "honoured",
                    IssueReply::AlreadyIssued(_) => "already_held",
                    IssueReply::SoldOut | IssueReply::NotActive | IssueReply::NotLoaded | IssueReply::Unlisted(_) => {
                        // Redis had answered 201 before it lost the state that said so.
                        tracing::warn!(coupon.id = %coupon.id, user.id = %user, ?reply, entry.generation = entry.generation, "issuance lost with Redis state refused on re-decision");
                        "refused"
                    }
                };
                metrics::counter!("coupon_redecided_total", "result" => result).increment(1);
            }
        }
        Ok(())
    }

    /// The coupons whose streams the next read takes: the busy ones, or on the reclaim step every registered
    /// one, with what that full pass does beside reading.
    async fn to_read(&self, stores: &Stores) -> Result<(Vec<CouponId>, Option<cache::FullPass>), StoreError> {
        if self.last_reclaim.is_some_and(|at| at.elapsed() < RECLAIM_PERIOD) {
            return Ok((self.busy.keys().copied().collect(), None));
        }
        let full_pass = cache::FullPass {
            claim_idle_ms: CLAIM_IDLE.as_millis() as u64,
            ended_before: chrono::Utc::now().timestamp_micros() - UNREGISTER_AFTER_END.as_micros() as i64,
        };
        Ok((cache::registered(&stores.redis).await?, Some(full_pass)))
    }

    /// Reads the busy streams, or on the reclaim step every registered one. A coupon that wakes up after
    /// [`QUIET_AFTER`] (or a new one) is found by the next reclaim step, so its lag is at most
    /// [`RECLAIM_PERIOD`] longer.
    async fn read(
        &mut self,
        stores: &Stores,
        coupons: &[CouponId],
        full_pass: Option<cache::FullPass>,
    ) -> Result<Vec<Queued>, StoreError> {
        let read = cache::read_queues(&stores.redis, coupons, &self.consumer, READ_COUNT, full_pass).await?;
        let now = Instant::now();
        if full_pass.is_some() {
            self.last_reclaim = Some(now);
            self.chores = Some(read.finished.clone());
        }
        let mut read_per_coupon: HashMap<CouponId, u64> = HashMap::new();
        for entry in &read.entries {
            self.busy.insert(entry.coupon_id, now);
            *read_per_coupon.entry(entry.coupon_id).or_default() += 1;
        }
        self.backlog = read_per_coupon.values().any(|&read| read >= READ_COUNT);
        self.busy.retain(|_, seen| now.duration_since(*seen) < QUIET_AFTER);
        if let Some(depth) = read.depth {
            metrics::gauge!("coupon_writer_queue_depth").set(depth as f64);
        }
        if let Some(pending) = read.pending {
            metrics::gauge!("coupon_writer_pending").set(pending as f64);
        }
        Ok(read.entries)
    }

    /// The full pass's chores, once no coupon row is locked: unregisters the finished coupons it found and
    /// delists the quiet ones. Like unregistering, a failed delisting only leaves coupons listed until the
    /// next full pass.
    async fn do_chores(&mut self, stores: &Stores) {
        let Some(finished) = self.chores.take() else { return };
        self.unregister(stores, &finished).await;
        if let Err(error) = delist_quiet(stores, QUIET_AFTER).await {
            tracing::warn!(%error, "delisting persisted coupons failed");
        }
    }

    /// Unregisters finished coupons. A failure only leaves them registered until the next full pass, so it
    /// is logged rather than failing the step (which holds entries just read).
    async fn unregister(&mut self, stores: &Stores, finished: &[CouponId]) {
        if finished.is_empty() {
            return;
        }
        match cache::unregister(&stores.redis, finished).await {
            Ok(()) => {
                for id in finished {
                    self.busy.remove(id);
                    tracing::info!(coupon.id = %id, "campaign ended and fully persisted: unregistered");
                }
                metrics::counter!("coupon_writer_unregistered_total").increment(finished.len() as u64);
            }
            Err(error) => tracing::warn!(%error, "unregistering finished campaigns failed"),
        }
    }
}

/// Drops from `<prefix>coupons:unpersisted` every coupon whose stream is empty and got no entry for `quiet`
/// (`lua/coupon_unlist.lua`, then `lua/coupon_delist.lua`), and those without Redis state; returns how many
/// left. Run on the writer's full pass, so the user-coupon list asks only about coupons selling now or
/// waiting for the writer. A coupon listed again meanwhile stays (see `lua/coupon_issue.lua`).
pub async fn delist_quiet(stores: &Stores, quiet: Duration) -> Result<i64, StoreError> {
    let listed = cache::listed(&stores.redis).await?;
    let checks = listed.iter().map(|&(id, score)| async move {
        Ok::<_, StoreError>(match cache::unlist(&stores.redis, id, quiet).await? {
            cache::Unlisting::NoState => Some((id, score)),
            cache::Unlisting::NotListed(epoch) => Some((id, epoch)),
            cache::Unlisting::Listed => None,
        })
    });
    let ended: Vec<(CouponId, i64)> = futures::future::try_join_all(checks).await?.into_iter().flatten().collect();
    let delisted = cache::delist(&stores.redis, &ended).await?;
    metrics::counter!("coupon_writer_delisted_total").increment(delisted as u64);
    Ok(delisted)
}

/// Records how long the persisted issuances waited in Redis.
fn record_lag(rows: &[NewIssuance]) {
    let now = chrono::Utc::now();
    metrics::histogram!("coupon_writer_batch_size").record(rows.len() as f64);
    let lag = metrics::histogram!("coupon_writer_lag_seconds");
    for row in rows {
        lag.record((now - row.issued_at).to_std().unwrap_or_default());
    }
}

/// Runs the writer until `shutdown`; then keeps draining until the queue is empty, a step fails, or
/// [`SHUTDOWN_DRAIN`] passes. A step is never interrupted: only the sleeps race the token.
pub async fn run(stores: Stores, shutdown: CancellationToken) {
    let mut writer = Writer::new();
    tracing::info!(writer.consumer = writer.consumer(), "coupon writer started");
    let mut backoff = BACKOFF_MIN;
    let mut drain_until = None;
    loop {
        if shutdown.is_cancelled()
            && Instant::now() >= *drain_until.get_or_insert_with(|| Instant::now() + SHUTDOWN_DRAIN)
        {
            break;
        }
        let pause = match writer.drain_once(&stores).await {
            Ok(Outcome::Persisted { backlog, .. }) => {
                backoff = BACKOFF_MIN;
                // A backlog: go on at once. Otherwise the step drained the queue: wait for the next batch
                // to gather, since a step's cost (round trips, a commit) is mostly fixed.
                if backlog {
                    continue;
                }
                IDLE_SLEEP
            }
            Ok(Outcome::Idle) => IDLE_SLEEP,
            Err(error) => {
                metrics::counter!("coupon_writer_errors_total", "store" => error.store()).increment(1);
                tracing::warn!(writer.consumer = writer.consumer(), %error, retry_in = ?backoff, "coupon writer step failed");
                let pause = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                pause
            }
        };
        if shutdown.is_cancelled() {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => {}
        }
    }
    tracing::info!(writer.consumer = writer.consumer(), "coupon writer stopped");
}
