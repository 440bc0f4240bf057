//! Rate limits per user (`RATE_LIMIT_USER`, `RATE_LIMIT_ISSUE`) and per client address (`RATE_LIMIT_IP`):
//! GCRA limiters from `governor`, one state per key, kept per instance in memory.
//!
//! Memory stays bounded by forgetting idle keys: a key whose bucket has refilled is indistinguishable from a
//! new one, so [`Limits::forget_idle`] drops it. What stays is the keys active during the last sweep period,
//! each a user id or an address and one GCRA timestamp in a sharded hash map.

use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio_util::sync::CancellationToken;

use super::Error;
use crate::id::UserId;

/// How often idle keys are forgotten. Shorter frees memory sooner after a burst of distinct users, at the
/// price of a sweep over every key each time (a sweep of a million keys takes tens of milliseconds on one
/// core, holding each shard's lock only for its own part).
const FORGET_IDLE_EVERY: Duration = Duration::from_secs(10);

/// A limit: requests per second and burst, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    per_second: u32,
    burst: u32,
}

impl Rate {
    pub const OFF: Rate = Rate { per_second: 0, burst: 0 };

    /// `20/40` (20 per second, bursts of 40), `20` (burst = rate) or `0` (off).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let bad = || format!("{text:?} is not a rate like 20/40 (per second / burst) or 0 (off)");
        let (rate, burst) = match text.trim().split_once('/') {
            Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
            None => (text.trim(), None),
        };
        let per_second: u32 = rate.parse().map_err(|_| bad())?;
        let burst: u32 = match burst {
            Some(burst) => burst.parse().map_err(|_| bad())?,
            None => per_second,
        };
        match (per_second, burst) {
            (0, _) => Ok(Rate::OFF),
            (_, 0) => Err(bad()),
            _ => Ok(Rate { per_second, burst }),
        }
    }

    fn quota(self) -> Option<Quota> {
        let per_second = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst)?;
        Some(Quota::per_second(per_second).allow_burst(burst))
    }
}

/// `RATE_LIMIT_*` settings.
#[derive(Debug, Clone, Copy, clap::Args)]
#[group(id = "rate_limits")]
pub struct Config {
    /// Every user-acting request of one user: per second / burst, `0` = off.
    #[arg(long, env = "RATE_LIMIT_USER", default_value = "20/40", value_parser = Rate::parse)]
    pub rate_limit_user: Rate,

    /// Coupon issue requests of one user, on top of `RATE_LIMIT_USER`.
    #[arg(long, env = "RATE_LIMIT_ISSUE", default_value = "5/10", value_parser = Rate::parse)]
    pub rate_limit_issue: Rate,

    /// Requests to `/api/` of one client address (the peer, or the first untrusted `X-Forwarded-For` hop).
    #[arg(long, env = "RATE_LIMIT_IP", default_value = "0", value_parser = Rate::parse)]
    pub rate_limit_ip: Rate,
}

impl Config {
    /// Every limit off (local load tests, most integration tests).
    pub const OFF: Config =
        Config { rate_limit_user: Rate::OFF, rate_limit_issue: Rate::OFF, rate_limit_ip: Rate::OFF };
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rate_limit_user: Rate { per_second: 20, burst: 40 },
            rate_limit_issue: Rate { per_second: 5, burst: 10 },
            rate_limit_ip: Rate::OFF,
        }
    }
}

/// Which limit refused a request (the `limit` label of `rate_limited_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    User,
    Issue,
    Address,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::User => "user",
            Limit::Issue => "issue",
            Limit::Address => "address",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The limiters of one instance; a limit that is off has none.
pub struct Limits {
    user: Option<DefaultKeyedRateLimiter<UserId>>,
    issue: Option<DefaultKeyedRateLimiter<UserId>>,
    address: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Limits {
    pub fn new(config: &Config) -> Self {
        Self {
            user: config.rate_limit_user.quota().map(DefaultKeyedRateLimiter::keyed),
            issue: config.rate_limit_issue.quota().map(DefaultKeyedRateLimiter::keyed),
            address: config.rate_limit_ip.quota().map(DefaultKeyedRateLimiter::keyed),
        }
    }

    /// Counts one request of `user` (and, for an issue, one against the issue limit).
    pub fn check_user(&self, user: UserId, issue: bool) -> Result<(), Error> {
        check(self.user.as_ref(), &user, Limit::User)?;
        if issue {
            check(self.issue.as_ref(), &user, Limit::Issue)?;
        }
        Ok(())
    }

    pub fn check_address(&self, client: IpAddr) -> Result<(), Error> {
        check(self.address.as_ref(), &client.to_canonical(), Limit::Address)
    }

    /// Forgets idle keys every [`FORGET_IDLE_EVERY`] until `shutdown`.
    pub async fn forget_idle(&self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(FORGET_IDLE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {
                    self.forget_idle_once();
                }
            }
        }
    }

    /// Drops the keys whose buckets are full again; returns how many keys are left.
    pub fn forget_idle_once(&self) -> usize {
        fn sweep<K: Hash + Eq + Clone>(limiter: Option<&DefaultKeyedRateLimiter<K>>) -> usize {
            limiter.map_or(0, |limiter| {
                limiter.retain_recent();
                limiter.shrink_to_fit();
                limiter.len()
            })
        }
        let left = sweep(self.user.as_ref()) + sweep(self.issue.as_ref()) + sweep(self.address.as_ref());
        metrics::gauge!("rate_limit_keys").set(left as f64);
        left
    }
}

/// One cell of `key`'s bucket, or 429 with the whole seconds (at least 1) until one is free.
fn check<K: Hash + Eq + Clone>(
    limiter: Option<&DefaultKeyedRateLimiter<K>>,
    key: &K,
    limit: Limit,
) -> Result<(), Error> {
    let Some(limiter) = limiter else { return Ok(()) };
    limiter.check_key(key).map_err(|not_until| {
        metrics::counter!("rate_limited_total", "limit" => limit.as_str()).increment(1);
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        Error::RateLimited { limit, retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64 }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_and_burst_or_off() {
        assert_eq!(Rate::parse("20/40").unwrap(), Rate { per_second: 20, burst: 40 });
        assert_eq!(Rate::parse("5").unwrap(), Rate { per_second: 5, burst: 5 });
        assert_eq!(Rate::parse("0").unwrap(), Rate::OFF);
        for bad in ["", "x", "20/0", "-1", "20/40/60", "1.5"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_burst_is_admitted_then_refused_and_idle_keys_are_forgotten() {
        let limits = Limits::new(&Config { rate_limit_user: Rate::parse("1/3").unwrap(), ..Config::OFF });
        let user = UserId::new(7).unwrap();
        for _ in 0..3 {
            limits.check_user(user, true).unwrap();
        }
        let refused = limits.check_user(user, true).unwrap_err();
        assert!(matches!(refused, Error::RateLimited { limit: Limit::User, retry_after_seconds: 1 }), "{refused:?}");
        let other = UserId::new(8).unwrap();
        limits.check_user(other, false).unwrap();
        assert_eq!(limits.forget_idle_once(), 2, "both buckets are still refilling");
    }
}
