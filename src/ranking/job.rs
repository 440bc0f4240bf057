//! The scheduled ranking refresh: a tokio-cron-scheduler job on `RANKING_REFRESH` recomputing every window,
//! run by one instance per tick (a Redis lock with expiry decides which).

use chrono::Utc;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tokio_util::sync::CancellationToken;

use super::{Error, Settings, cache, refresh};
use crate::store::Stores;

/// What one tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    Refreshed,
    /// Another instance holds the lock: it refreshed (or is refreshing) for this tick.
    Skipped,
}

/// One scheduled tick: refreshes unless another instance already does.
pub async fn tick(stores: &Stores, settings: Settings) -> Result<Tick, Error> {
    if !cache::try_refresh_lock(&stores.redis).await? {
        return Ok(Tick::Skipped);
    }
    refresh(stores, settings, Utc::now()).await?;
    Ok(Tick::Refreshed)
}

/// Runs the refresh on `cron` until `shutdown`. A tick in progress at shutdown is abandoned: a refresh
/// only overwrites cached lists, so half of one changes nothing.
pub async fn run(stores: Stores, settings: Settings, cron: Cron, shutdown: CancellationToken) {
    let mut scheduler = match start(stores, settings, cron.as_str()).await {
        Ok(scheduler) => scheduler,
        Err(error) => {
            tracing::error!(error = %error, cron = cron.as_str(), "ranking refresh not scheduled; requests compute missing windows");
            return;
        }
    };
    shutdown.cancelled().await;
    if let Err(error) = scheduler.shutdown().await {
        tracing::warn!(error = %error, "ranking scheduler did not shut down cleanly");
    }
}

async fn start(stores: Stores, settings: Settings, cron: &str) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    let job = Job::new_async(cron, move |_, _| {
        let stores = stores.clone();
        Box::pin(async move {
            match tick(&stores, settings).await {
                Ok(Tick::Refreshed) => tracing::debug!("ranking refreshed"),
                Ok(Tick::Skipped) => {}
                Err(error) => tracing::warn!(error = %error, "ranking refresh failed; the previous lists stay"),
            }
        })
    })?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    Ok(scheduler)
}

/// A cron expression the scheduler accepts (six fields, seconds first), checked when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron(String);

impl std::str::FromStr for Cron {
    type Err = String;

    fn from_str(cron: &str) -> Result<Self, String> {
        Job::new_async(cron, |_, _| Box::pin(async {})).map_err(|e| format!("not a cron expression: {e}"))?;
        Ok(Self(cron.to_owned()))
    }
}

impl Cron {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
