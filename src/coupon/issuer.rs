//! Coalesces concurrent issuances into one call of `lua/coupon_issue.lua` per coupon.
//!
//! Why: a request alone costs one EVALSHA, and under a stampede the fixed cost of each call dominated
//! the script's own work: fred flushes the socket after every EVALSHA (two scripts never share a
//! write), Redis reads, dispatches and answers each one, and every write wakes the other side of the
//! loopback. A profile of the issue run put 28% of the server's CPU in `writev`, one write per request to
//! Redis beside the one of the HTTP response. Here, requests that arrive while earlier batches are in
//! flight wait in a queue and go out together, so a lone request is sent at once (no added wait) and a
//! burst shares round trips. Each user is still decided atomically and in arrival order (see the script).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::cache::IssueReply;
use super::fence::ScriptGate;
use crate::id::{CouponId, UserId};
use crate::store::{StoreError, Stores};

/// Most users in one script call: at a few microseconds each, a full batch holds Redis well under 1 ms.
const MAX_BATCH: usize = 128;
/// Batches in flight at once, each on the next connection of the pool.
const WORKERS: usize = 4;
/// Requests waiting for a batch; beyond this a request waits to enter the queue (backpressure).
const QUEUE_CAPACITY: usize = 16 * 1024;
/// A request still queued after this is answered 503 rather than sent: with a Redis command allowed 1.5 s
/// (`store::redis`), it keeps every answer within the contract's 2 s for a 503. The queue only grows this
/// long when every worker waits on a Redis that does not answer; otherwise a request waits milliseconds.
const MAX_QUEUE_WAIT: Duration = Duration::from_millis(300);

/// Hands issuances to the batching workers. Cheap to clone; the workers stop once every clone is dropped.
#[derive(Clone)]
pub struct Issuer {
    queue: mpsc::Sender<Request>,
}

struct Request {
    coupon: CouponId,
    user: UserId,
    queued_at: Instant,
    reply: oneshot::Sender<Result<IssueReply, StoreError>>,
}

impl Issuer {
    /// Starts the workers on the current runtime. `gate` checks the coupons before the issue script is
    /// loaded again after Redis lost it.
    pub fn start(stores: Stores, gate: ScriptGate) -> Self {
        let (queue, received) = mpsc::channel(QUEUE_CAPACITY);
        let received = Arc::new(Mutex::new(received));
        for _ in 0..WORKERS {
            tokio::spawn(work(stores.clone(), gate.clone(), received.clone()));
        }
        Self { queue }
    }

    /// What the script decided for `user`, decided together with the requests queued beside it.
    pub async fn issue(&self, coupon: CouponId, user: UserId) -> Result<IssueReply, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Request { coupon, user, queued_at: Instant::now(), reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// One worker: takes everything queued (up to [`MAX_BATCH`]), decides it, repeats. While it waits on Redis
/// the next worker takes the queue, so up to [`WORKERS`] batches are in flight. The coupons of one batch
/// are called side by side, so a coupon whose Redis master does not answer holds up no other.
async fn work(stores: Stores, gate: ScriptGate, queue: Arc<Mutex<mpsc::Receiver<Request>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if queue.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        metrics::histogram!("coupon_issue_batch_size").record(batch.len() as f64);
        let taken_at = Instant::now();
        let (late, on_time): (Vec<_>, Vec<_>) =
            batch.drain(..).partition(|request| taken_at - request.queued_at > MAX_QUEUE_WAIT);
        if !late.is_empty() {
            metrics::counter!("coupon_issue_shed_total").increment(late.len() as u64);
            let waited = format!("waited over {MAX_QUEUE_WAIT:?} for a Redis call");
            answer(late, Err(fred::error::Error::new(fred::error::ErrorKind::Timeout, waited).into()));
        }
        let now = Utc::now().timestamp_micros();
        futures::future::join_all(by_coupon(on_time).into_iter().map(|group| {
            let (stores, gate) = (&stores, &gate);
            async move {
                let (coupon, users): (_, Vec<UserId>) = (group[0].coupon, group.iter().map(|r| r.user).collect());
                answer(group, gate.issue(stores, coupon, &users, now).await);
            }
        }))
        .await;
    }
}

/// The requests grouped by coupon, each group in arrival order (the script decides its users in order).
fn by_coupon(mut requests: Vec<Request>) -> Vec<Vec<Request>> {
    requests.sort_by_key(|request| request.coupon); // stable
    let mut groups: Vec<Vec<Request>> = Vec::new();
    for request in requests {
        match groups.last_mut() {
            Some(group) if group[0].coupon == request.coupon => group.push(request),
            _ => groups.push(vec![request]),
        }
    }
    groups
}

/// Sends each request its reply, or its copy of the error the whole call failed with. A requester that
/// gave up (its client disconnected) just does not read it.
fn answer(group: Vec<Request>, decided: Result<Vec<IssueReply>, StoreError>) {
    match decided {
        Ok(replies) => {
            for (request, reply) in group.into_iter().zip(replies) {
                let _ = request.reply.send(Ok(reply));
            }
        }
        Err(error) => {
            tracing::warn!(%error, users = group.len(), "coupon issue batch failed");
            for request in group {
                let _ = request.reply.send(Err(copy_of(&error)));
            }
        }
    }
}

/// The error of a shared call, for one of its requesters.
fn copy_of(error: &StoreError) -> StoreError {
    match error {
        StoreError::Redis(e) => StoreError::Redis(e.clone()),
        StoreError::ScriptReply { script, reply } => StoreError::ScriptReply { script, reply: reply.clone() },
        // From the check after Redis lost its scripts (sqlx errors are not `Clone`): same class, same text.
        StoreError::Mysql(e) if error.is_unavailable() => {
            StoreError::Mysql(sqlx::Error::Io(std::io::Error::other(e.to_string())))
        }
        StoreError::Mysql(e) => StoreError::Mysql(sqlx::Error::Protocol(e.to_string())),
        other => crate::store::scripts::COUPON_ISSUE.unexpected(other),
    }
}

/// The workers are gone: the service is shutting down.
fn stopped() -> StoreError {
    StoreError::Redis(fred::error::Error::new_canceled())
}
