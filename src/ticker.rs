//! The loop of the jobs that poll or send on a short period (catalogue changes, views, the ranking copy).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `tick` every `period` until `shutdown`, never two at once; a late tick delays the next rather than
/// bunching up. Only the wait races the token, never a tick.
pub async fn every<F, Fut>(period: Duration, shutdown: &CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        tick().await;
    }
}
