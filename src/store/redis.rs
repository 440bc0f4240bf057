//! The Redis connection pool, key naming, and the typed script handle used by every Lua script.

use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script as FredScript;
use fred::types::{MultipleKeys, MultipleValues};

use super::StoreError;

/// A command that has not answered within this is failed, so a stuck Redis turns into 503s, not hung requests.
/// Below the contract's 2 s for a 503 (API.md), with room for the rest of the request: at 2 s a request
/// waiting on a dead cluster master was answered after 2.0-2.1 s (tests/api/cluster.rs).
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1_500);
/// Time allowed to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Loads of a script one call may make when Redis keeps answering NOSCRIPT (its scripts flushed again and
/// again); past it the call fails as unavailable (503).
const NOSCRIPT_ATTEMPTS: usize = 5;
/// Reconnect forever with capped exponential backoff: Redis coming back must heal the service by itself.
const RECONNECT_MIN_MS: u32 = 50;
const RECONNECT_MAX_MS: u32 = 2_000;
/// Cluster redirections fred follows by itself: none. fred 10.1 follows an ASK (a slot being migrated) by
/// writing ASKING and reading the next reply of that connection as ASKING's answer, while other commands may
/// be in flight on it; under load in the slot-move test that failed commands with "Max attempts reached",
/// dropped every connection and answered 500s. With none followed, fred fails a redirected command, unrun,
/// with "Too many redirections." (after refreshing its slot map on MOVED); script calls try again
/// ([`retry_unsettled`]), other commands on a moving slot answer 503 for those milliseconds.
/// docs/scaling.md#moving-a-slot
const MAX_REDIRECTIONS: u32 = 0;
/// A script call refused because its slot is moving (ASK or MOVED, or TRYAGAIN when its keys are split
/// between two nodes mid-migration) is tried again after this pause, doubled each time, at most
/// [`UNSETTLED_ATTEMPTS`] times. Redis refuses such a call before running any of it, so trying again never
/// applies it twice. `redis-cli --cluster reshard` moves a slot's keys in batches of ten and then announces
/// the new owner, a few milliseconds; six tries wait 10 + 20 + 40 + 80 + 160 ms, longer than that and the
/// request fails with 503 rather than hold its caller.
const UNSETTLED_PAUSE: Duration = Duration::from_millis(10);
const UNSETTLED_ATTEMPTS: u32 = 6;

/// A pool of auto-pipelining connections plus the deployment's key prefix.
#[derive(Clone)]
pub struct Redis {
    pub pool: Pool,
    /// One more connection, for background jobs: a job's large replies (the writer reads hundreds of stream
    /// entries at once) would otherwise queue the requests' small ones behind them on a shared connection.
    jobs: Pool,
    pub keys: Keys,
}

impl Redis {
    /// Connects to a node (`redis://`) or a cluster (`redis-cluster://`) and waits until connected.
    pub async fn connect(url: &str, prefix: &str, size: usize) -> Result<Self, StoreError> {
        let config = Config::from_url(url)?;
        let builder = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = CONNECT_TIMEOUT;
                c.internal_command_timeout = COMMAND_TIMEOUT;
                c.max_redirections = MAX_REDIRECTIONS;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, RECONNECT_MIN_MS, RECONNECT_MAX_MS, 2))
            .clone();
        let pool = builder.build_pool(size.max(1))?;
        let jobs = builder.build_pool(1)?;
        pool.init().await?;
        jobs.init().await?;
        Ok(Self { pool, jobs, keys: Keys::new(prefix) })
    }

    /// The same server and prefix, on the connection reserved for background jobs.
    pub fn for_jobs(&self) -> Self {
        Self { pool: self.jobs.clone(), jobs: self.jobs.clone(), keys: self.keys.clone() }
    }

    /// The next connection of the pool, round robin.
    pub fn client(&self) -> &Client {
        self.pool.next()
    }
}

/// Builds every Redis key from the deployment prefix, so tests and deployments can share a server.
#[derive(Clone, Debug)]
pub struct Keys {
    /// Shared, not copied: every request clones the app state, and with it this.
    prefix: std::sync::Arc<str>,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The prefix itself (`stampede:` by default).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix><suffix>`.
    pub fn key(&self, suffix: impl std::fmt::Display) -> String {
        format!("{}{suffix}", self.prefix)
    }
}

/// A Lua script from `lua/`, loaded once by SHA and called with EVALSHA, reloaded on NOSCRIPT.
pub struct Script {
    /// File stem, for logs and metrics.
    pub name: &'static str,
    script: FredScript,
}

impl Script {
    pub fn new(name: &'static str, source: &'static str) -> Self {
        Self { name, script: FredScript::from_lua(source) }
    }

    /// SCRIPT LOAD on every primary, so the first EVALSHA does not pay for it.
    pub async fn load(&self, redis: &Redis) -> Result<(), StoreError> {
        self.script.load(redis.client()).await?;
        Ok(())
    }

    /// Runs the script; if Redis lost it (restart, SCRIPT FLUSH) it is loaded again and retried, up to
    /// [`NOSCRIPT_ATTEMPTS`] times: another client may flush the scripts again between our load and our
    /// retry (fred's own reload retries once, so a second flush in that gap failed the call with a 500).
    pub async fn call<R, K, V>(&self, redis: &Redis, keys: K, args: V) -> Result<R, StoreError>
    where
        R: FromValue,
        K: Into<MultipleKeys> + Send,
        V: TryInto<MultipleValues> + Send,
        V::Error: Into<fred::error::Error> + Send,
    {
        let (keys, args) = (keys.into(), args.try_into().map_err(Into::into)?);
        for _ in 0..NOSCRIPT_ATTEMPTS {
            if let Some(reply) = self.evalsha(redis, &keys, &args).await? {
                return Ok(reply);
            }
            self.load(redis).await?;
        }
        metrics::counter!("redis_script_errors_total", "script" => self.name).increment(1);
        let lost = format!("script {} flushed again after each of {NOSCRIPT_ATTEMPTS} loads", self.name);
        Err(fred::error::Error::new(fred::error::ErrorKind::IO, lost).into())
    }

    /// Runs the script if Redis still has it; `Ok(None)` on NOSCRIPT, which means Redis restarted or its
    /// scripts were flushed. A gated script (the coupon issue script) is loaded again only after the caller
    /// has checked what such a Redis may also have lost.
    pub async fn call_if_loaded<R, K, V>(&self, redis: &Redis, keys: K, args: V) -> Result<Option<R>, StoreError>
    where
        R: FromValue,
        K: Into<MultipleKeys> + Send,
        V: TryInto<MultipleValues> + Send,
        V::Error: Into<fred::error::Error> + Send,
    {
        self.evalsha(redis, &keys.into(), &args.try_into().map_err(Into::into)?).await
    }

    /// One EVALSHA (retried while its slot moves); `Ok(None)` on NOSCRIPT.
    async fn evalsha<R: FromValue>(
        &self,
        redis: &Redis,
        keys: &MultipleKeys,
        args: &MultipleValues,
    ) -> Result<Option<R>, StoreError> {
        match retry_unsettled(|| self.script.evalsha(redis.client(), keys.clone(), args.clone())).await {
            Ok(reply) => Ok(Some(reply)),
            Err(error) if error.details().starts_with("NOSCRIPT") => Ok(None),
            Err(error) => {
                metrics::counter!("redis_script_errors_total", "script" => self.name).increment(1);
                tracing::debug!(script = self.name, %error, "script failed");
                Err(error.into())
            }
        }
    }

    /// Wraps an undecodable reply into an error naming this script.
    pub fn unexpected(&self, reply: impl std::fmt::Debug) -> StoreError {
        StoreError::ScriptReply { script: self.name, reply: format!("{reply:?}") }
    }
}

/// Runs `call` again while its slot is moving, as [`UNSETTLED_PAUSE`] describes.
async fn retry_unsettled<R, F, Fut>(mut call: F) -> Result<R, fred::error::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<R, fred::error::Error>>,
{
    let mut pause = UNSETTLED_PAUSE;
    for _ in 1..UNSETTLED_ATTEMPTS {
        match call().await {
            Err(error) if is_unsettled(&error) => {
                metrics::counter!("redis_slot_moving_retries_total").increment(1);
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            result => return result,
        }
    }
    call().await
}

/// Whether Redis refused the command, unexecuted, because its slot is moving between cluster nodes.
fn is_unsettled(error: &fred::error::Error) -> bool {
    error.details().starts_with("TRYAGAIN")
        || (*error.kind() == fred::error::ErrorKind::Routing && error.details() == "Too many redirections.")
}
