//! The outbox relay: a background job that, after commit, delivers each paid order's event to the data
//! platform (at least once, retried with exponential backoff until a 2xx) and adds the order's units to the
//! day's sales sets in Redis (exactly once per shard, by each shard's applied-orders set). The two are tracked apart
//! (`delivered_at`, `sales_applied_at`) so a platform outage never holds back the ranking, nor the reverse.
//! Nothing here can delay or undo a payment: it only reads committed rows.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use super::OrderEvent;
use super::db::{self, OutboxRow};
use super::sink::Sink;
use crate::ranking::{self, sales};
use crate::store::{StoreError, Stores};

/// Rows claimed per pass; they are handled concurrently, so a pass lasts about one delivery timeout at most.
pub const BATCH: u32 = 50;
/// Idle wait between passes when nothing was due: the delay a new event may wait before its first try.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Wait after a pass that failed on MySQL, so an outage is not hammered.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// First retry delay; doubled per failed attempt up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest retry delay: a platform back from an outage gets the backlog within this.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often the backlog gauges are refreshed (one indexed COUNT).
const BACKLOG_PERIOD: Duration = Duration::from_secs(5);
/// `outbox.last_error` is VARCHAR(500).
const LAST_ERROR_MAX_CHARS: usize = 500;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Rows due and claimed by this instance.
    pub claimed: usize,
    /// Events delivered in this pass.
    pub delivered: usize,
    /// Orders counted in the sales sets in this pass (replays not included).
    pub sales_applied: usize,
    /// Rows left owing something, rescheduled with backoff.
    pub retrying: usize,
}

/// The relay's settings, built once from the service configuration.
#[derive(Debug, Clone)]
pub struct Relay {
    pub sink: Sink,
    /// The business day a sale counts for, and the shards its lines go to.
    pub ranking: ranking::Settings,
}

impl Relay {
    pub fn new(data_platform_url: Option<&str>, ranking: ranking::Settings) -> Self {
        Self { sink: Sink::new(data_platform_url), ranking }
    }

    /// One pass: claims due rows (`FOR UPDATE SKIP LOCKED`, in a READ COMMITTED transaction held while they
    /// are handled), applies sales and delivers each, records the results and commits. A crash or kill
    /// mid-pass rolls the claim back, and the rows are due again for the next pass of any instance.
    pub async fn drain_once(&self, stores: &Stores) -> Result<Outcome, StoreError> {
        let mut conn = stores.db.acquire().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").execute(&mut *conn).await?;
        let mut tx = conn.begin().await?;
        let rows = db::claim_due(&mut tx, Utc::now(), BATCH).await?;
        let mut outcome = Outcome { claimed: rows.len(), ..Outcome::default() };
        let handled = join_all(rows.iter().map(|row| self.handle(stores, row))).await;
        let now = Utc::now();
        let mut finished = Vec::with_capacity(rows.len());
        for (row, done) in rows.iter().zip(handled) {
            outcome.delivered += usize::from(row.delivered_at.is_none() && done.delivered);
            outcome.sales_applied += usize::from(done.counted_now);
            let Some(error) = done.error else {
                finished.push(row.id);
                continue;
            };
            outcome.retrying += 1;
            let delivered_at = row.delivered_at.or(done.delivered.then_some(now));
            let sales_applied_at = row.sales_applied_at.or(done.sales_applied.then_some(now));
            let attempts = row.attempts.saturating_add(1);
            let error: String = error.chars().take(LAST_ERROR_MAX_CHARS).collect();
            let next = now + backoff(attempts);
            db::record_unfinished(&mut tx, row.id, delivered_at, sales_applied_at, attempts, next, &error).await?;
        }
        db::record_done(&mut tx, &finished, now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Applies the sales and delivers one row's event, whichever is still owed.
    async fn handle(&self, stores: &Stores, row: &OutboxRow) -> Handled {
        let mut done = Handled {
            delivered: row.delivered_at.is_some(),
            sales_applied: row.sales_applied_at.is_some(),
            counted_now: false,
            error: None,
        };
        let event: OrderEvent = match serde_json::from_str(&row.payload) {
            Ok(event) => event,
            Err(e) => {
                tracing::error!(outbox.id = row.id, error = %e, "undecodable outbox payload");
                done.error = Some(format!("undecodable payload: {e}"));
                return done;
            }
        };
        let mut errors = Vec::new();
        if !done.sales_applied {
            let day = ranking::business_day(event.paid_at, self.ranking.business_tz);
            let units: Vec<_> = event.items.iter().map(|item| (item.product_id, item.quantity)).collect();
            // `sales_applied_at` is set only on `Ok`, that is once every shard of the order has counted it.
            match sales::record(&stores.redis, self.ranking.shards, day, event.order_id, &units).await {
                Ok(recorded) => {
                    done.sales_applied = true;
                    done.counted_now = recorded == sales::Recorded::Applied;
                }
                Err(e) => {
                    tracing::warn!(order.id = %event.order_id, error = %e, "sales not recorded, will retry");
                    errors.push(format!("sales: {e}"));
                }
            }
        }
        if !done.delivered {
            metrics::counter!("outbox_delivery_attempts_total").increment(1);
            match self.sink.deliver(&event, &row.payload).await {
                Ok(()) => done.delivered = true,
                Err(e) => {
                    metrics::counter!("outbox_delivery_failures_total").increment(1);
                    tracing::warn!(event.id = %event.event_id, order.id = %event.order_id, attempts = row.attempts + 1,
                        error = %e, "event not delivered, will retry");
                    errors.push(format!("delivery: {e}"));
                }
            }
        }
        if !errors.is_empty() {
            done.error = Some(errors.join("; "));
        }
        done
    }
}

/// What handling one row achieved.
struct Handled {
    delivered: bool,
    sales_applied: bool,
    /// The sales script counted the order in this pass (not a replay).
    counted_now: bool,
    error: Option<String>,
}

/// Delay before the next try after `attempts` failed ones: 250 ms, 500 ms, 1 s, ... capped at 60 s.
pub fn backoff(attempts: i32) -> chrono::Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(16);
    let delay = BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX);
    chrono::Duration::from_std(delay).expect("the backoff fits")
}

/// Runs passes until `shutdown`: at once again after a full batch, else after [`POLL_INTERVAL`]. Only the
/// idle wait races the shutdown, so a pass in progress always finishes.
pub async fn run(stores: Stores, relay: Relay, shutdown: CancellationToken) {
    let mut backlog_reported: Option<Instant> = None;
    loop {
        if backlog_reported.is_none_or(|at| at.elapsed() >= BACKLOG_PERIOD) {
            report_backlog(&stores).await;
            backlog_reported = Some(Instant::now());
        }
        let pause = match relay.drain_once(&stores).await {
            Ok(outcome) if outcome.claimed == BATCH as usize => None,
            Ok(_) => Some(POLL_INTERVAL),
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay pass failed");
                Some(ERROR_PAUSE)
            }
        };
        match pause {
            None if !shutdown.is_cancelled() => {}
            None => break,
            Some(pause) => {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// Sets `outbox_backlog` (rows still owed) and `outbox_oldest_age_seconds`.
async fn report_backlog(stores: &Stores) {
    match db::backlog(&stores.db).await {
        Ok((count, oldest)) => {
            metrics::gauge!("outbox_backlog").set(count as f64);
            let age = oldest.map_or(0.0, |at: DateTime<Utc>| (Utc::now() - at).as_seconds_f64().max(0.0));
            metrics::gauge!("outbox_oldest_age_seconds").set(age);
        }
        Err(e) => tracing::warn!(error = %e, "outbox backlog not measured"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_quarter_second_and_stops_at_a_minute() {
        let ms = |attempts| backoff(attempts).num_milliseconds();
        assert_eq!([ms(1), ms(2), ms(3), ms(4)], [250, 500, 1_000, 2_000]);
        assert_eq!(ms(9), 60_000);
        assert_eq!(ms(i32::MAX), 60_000);
    }
}
