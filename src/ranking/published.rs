//! The read path's copy of the cached windows: kept in this process, every (days, limit) pair already
//! serialized, so `GET /products/top` costs no Redis round trip and no JSON encoding. A refresh (on any
//! instance) writes a new `ranking:version` with the windows; each instance checks it every [`POLL`] and
//! loads the windows when it changed, so instances agree within about that long after a refresh.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use super::{MAX_DAYS, MAX_LIMIT, Settings, TopProducts, Window, business_day, cache};
use crate::store::{Redis, StoreError};

/// How often an instance asks Redis whether a refresh published new windows: the longest an instance
/// serves the previous lists after another one refreshed (plus one load). One GET per period per instance.
const POLL: Duration = Duration::from_millis(250);
/// A copy whose lists are older than this is not served: the request path then reads Redis as before,
/// which recomputes a window the scheduler has not refreshed for that long (the cached windows' TTL).
const MAX_AGE: TimeDelta = TimeDelta::seconds(cache::WINDOW_TTL_SECS);

/// The current copy, shared by the handlers and the job that replaces it. Cheap to clone.
#[derive(Clone, Default)]
pub struct Published(Arc<RwLock<Option<Arc<Snapshot>>>>);

/// Every window's list, serialized once per `limit`.
struct Snapshot {
    /// The `ranking:version` it was loaded for (`None`: Redis had none, e.g. after losing its data).
    version: Option<String>,
    /// The day the windows end on; a copy from before midnight is not served.
    today: NaiveDate,
    /// When the oldest of the windows was computed.
    generated_at: DateTime<Utc>,
    /// `bodies[(days - 1) * MAX_LIMIT + (limit - 1)]`.
    bodies: Vec<Bytes>,
}

impl Published {
    /// The serialized list of `window`, if the copy holds today's lists and they are fresh enough.
    pub fn body(&self, window: Window, now: DateTime<Utc>, settings: Settings) -> Option<Bytes> {
        let snapshot = self.0.read().expect("the copy's lock is never poisoned").clone()?;
        let fresh = snapshot.today == business_day(now, settings.business_tz) && now - snapshot.generated_at < MAX_AGE;
        let index = (window.days() - 1) * MAX_LIMIT + (window.limit() - 1);
        fresh.then(|| snapshot.bodies[index as usize].clone())
    }

    /// Loads the cached windows if the published version differs from the copy's (or the copy is not
    /// today's); returns whether the copy was replaced. Keeps the old copy when Redis lacks a window.
    pub async fn reload(&self, redis: &Redis, settings: Settings, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let today = business_day(now, settings.business_tz);
        let version = cache::version(redis).await?;
        let current = self.0.read().expect("the copy's lock is never poisoned").clone();
        if current.is_some_and(|snapshot| snapshot.version == version && snapshot.today == today) {
            return Ok(false);
        }
        let windows = cache::windows(redis).await?;
        let Some(windows) = windows.into_iter().collect::<Option<Vec<TopProducts>>>() else {
            return Ok(false);
        };
        if windows.iter().any(|window| window.to != today) {
            return Ok(false);
        }
        let snapshot = Snapshot::new(version, today, &windows);
        *self.0.write().expect("the copy's lock is never poisoned") = Some(Arc::new(snapshot));
        Ok(true)
    }
}

impl Snapshot {
    fn new(version: Option<String>, today: NaiveDate, windows: &[TopProducts]) -> Self {
        let generated_at = windows.iter().map(|w| w.generated_at).min().expect("every window is loaded");
        let mut bodies = Vec::with_capacity((MAX_DAYS * MAX_LIMIT) as usize);
        for window in windows {
            for limit in 1..=MAX_LIMIT {
                let list = window.clone().truncated(limit);
                bodies.push(Bytes::from(serde_json::to_vec(&list).expect("a top list serializes")));
            }
        }
        Self { version, today, generated_at, bodies }
    }
}

/// Keeps `published` current until `shutdown`: checks the version every [`POLL`]. A failed check keeps the
/// copy (it is still served while fresh) and is retried at the next tick.
pub async fn run(redis: Redis, settings: Settings, published: Published, shutdown: CancellationToken) {
    crate::ticker::every(POLL, &shutdown, || async {
        if let Err(error) = published.reload(&redis, settings, Utc::now()).await {
            tracing::debug!(%error, "ranking copy not reloaded; the current one stays");
        }
    })
    .await;
}
