//! The Redis connection pool, key naming, and the typed script handle used by every Lua script.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script as FredScript;
use fred::types::{MultipleKeys, MultipleValues};
use fred::util::redis_keyslot;

use super::StoreError;

/// A command that has not answered within this is failed, so a stuck Redis turns into 503s, not hung requests.
/// Below the contract's 2 s for a 503 (API.md), with room for the rest of the request: at 2 s a request
/// waiting on a dead cluster master was answered after 2.0-2.1 s (tests/api/cluster.rs).
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1_500);
/// Time allowed to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an issue call waits for `REDIS_WAIT_REPLICAS` replicas to acknowledge it before answering 503: with
/// the command timeout it stays below the contract's 2 s.
const WAIT_TIMEOUT: Duration = Duration::from_millis(300);
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
    /// On a cluster, where script calls go: straight to their slot's master (see [`Masters`]).
    masters: Option<Arc<Masters>>,
    jobs_masters: Option<Arc<Masters>>,
    pub keys: Keys,
    /// Replicas that must acknowledge an issuance before its 201 (`REDIS_WAIT_REPLICAS`; 0: none).
    wait_replicas: u32,
    /// Reconnections since start, on every pool: a new connection may reach another Redis (restarted from a
    /// file, a promoted replica) than the one the state was last checked on.
    connections: Arc<AtomicU64>,
}

impl Redis {
    /// Connects to a node (`redis://`) or a cluster (`redis-cluster://`) and waits until connected.
    pub async fn connect(url: &str, prefix: &str, size: usize, wait_replicas: u32) -> Result<Self, StoreError> {
        let config = Config::from_url(url)?;
        let clustered = config.server.is_clustered();
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
        let connections = Arc::new(AtomicU64::new(0));
        count_connections(&pool, &connections, false);
        count_connections(&jobs, &connections, false);
        pool.init().await?;
        jobs.init().await?;
        let (masters, jobs_masters) = if clustered {
            let masters = Masters::connect(pool.clone(), &builder, size.max(1), &connections).await?;
            let jobs_masters = Masters::connect(jobs.clone(), &builder, 1, &connections).await?;
            (Some(Arc::new(masters)), Some(Arc::new(jobs_masters)))
        } else {
            (None, None)
        };
        Ok(Self { pool, jobs, masters, jobs_masters, keys: Keys::new(prefix), wait_replicas, connections })
    }

    /// How many connections were made again since start; a change means a check of what Redis holds is due
    /// before it decides again (`coupon::fence::ScriptGate`).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    /// A connection to every node script calls reach: each master of a cluster, or the one node.
    fn nodes(&self) -> Vec<Client> {
        match &self.masters {
            Some(masters) => {
                masters.pools.read().expect("not poisoned").values().map(|pool| pool.next().clone()).collect()
            }
            None => vec![self.client().clone()],
        }
    }

    /// `<run_id>/<master_replid>` of every node script calls reach, sorted. The run id changes when a node
    /// restarts or another process (a promoted replica) takes its place; the replication id when a node is
    /// promoted or takes a whole copy of another master's data. Neither changes otherwise, so an unchanged
    /// list tells a reconnection, or scripts flushed, on the same data from other data.
    pub async fn node_ids(&self) -> Result<Vec<String>, StoreError> {
        let field = |info: &str, name: &str| {
            info.lines().find_map(|line| line.strip_prefix(name)).unwrap_or_default().trim().to_owned()
        };
        let mut ids = Vec::new();
        for client in self.nodes() {
            let server: String = client.info(Some(fred::types::InfoKind::Server)).await?;
            let replication: String = client.info(Some(fred::types::InfoKind::Replication)).await?;
            ids.push(format!("{}/{}", field(&server, "run_id:"), field(&replication, "master_replid:")));
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The `maxmemory-policy` of every node script calls reach (each master of a cluster): from `CONFIG GET`,
    /// or from `INFO memory` where `CONFIG` is disabled (managed Redis).
    pub async fn eviction_policies(&self) -> Result<Vec<String>, StoreError> {
        let clients = self.nodes();
        let mut policies = Vec::with_capacity(clients.len());
        for client in clients {
            let configured: Result<HashMap<String, String>, _> = client.config_get("maxmemory-policy").await;
            let policy = match configured.ok().and_then(|mut pairs| pairs.remove("maxmemory-policy")) {
                Some(policy) => policy,
                None => {
                    let info: String = client.info(Some(fred::types::InfoKind::Memory)).await?;
                    info.lines()
                        .find_map(|line| line.strip_prefix("maxmemory_policy:"))
                        .map(|policy| policy.trim().to_owned())
                        .unwrap_or_default()
                }
            };
            policies.push(policy);
        }
        Ok(policies)
    }

    /// The same server and prefix, on the connections reserved for background jobs.
    pub fn for_jobs(&self) -> Self {
        Self {
            pool: self.jobs.clone(),
            jobs: self.jobs.clone(),
            masters: self.jobs_masters.clone(),
            jobs_masters: self.jobs_masters.clone(),
            keys: self.keys.clone(),
            wait_replicas: self.wait_replicas,
            connections: self.connections.clone(),
        }
    }

    /// The next connection of the pool, round robin.
    pub fn client(&self) -> &Client {
        self.pool.next()
    }

    /// A connection for commands on `key`: on a cluster, straight to the master of its slot (see [`Masters`]),
    /// or an unavailable error (503) at once while that master's connection is down; otherwise the next
    /// connection of the pool.
    pub fn client_for(&self, key: &[u8]) -> Result<Client, fred::error::Error> {
        self.client_for_slot(self.masters.as_ref().map(|_| redis_keyslot(key)))
    }

    /// [`Redis::client_for`] a key of cluster slot `slot`; `None` (a single node, or no key) takes the pool's.
    fn client_for_slot(&self, slot: Option<u16>) -> Result<Client, fred::error::Error> {
        let routed = slot.zip(self.masters.as_ref()).and_then(|(slot, masters)| masters.client_for(slot));
        let Some(master) = routed else {
            return Ok(self.client().clone());
        };
        if master.state() == ClientState::Connected {
            Ok(master)
        } else {
            Err(fred::error::Error::new(fred::error::ErrorKind::Canceled, "the slot's master is not connected"))
        }
    }

    /// The cluster slot a script call on `keys` is routed by (a script's keys share one); `None` on a single
    /// node, where nothing is routed (and the keys are not looked at).
    fn script_slot(&self, keys: &MultipleKeys) -> Option<u16> {
        self.masters.as_ref()?;
        keys.clone().inner().first().map(Key::cluster_hash)
    }

    /// After a MOVED: every cluster connection of the pool reads the slot map again, so the next script call
    /// goes to the new owner and the pool's other commands do not each meet the MOVED first.
    async fn moved(&self) {
        if let Some(masters) = &self.masters {
            futures::future::join_all(masters.cluster.clients().iter().map(|client| client.sync_cluster())).await;
        }
    }
}

/// Plain (non-cluster) connections to each master of a cluster, for script calls.
///
/// Why: fred 10.1's cluster client, once it loses one node, reconnects as a whole: it connects to every
/// master in `CLUSTER SLOTS`, fails on the dead one, and routes no command meanwhile, so one master refusing
/// connections stopped every coupon (docs/scaling.md#a-master-down). A script call (and the issue path's
/// other per-request read, a user's existence bit) sent here on its own connection to its slot's master
/// depends on that master only, and fails at once while it is unreachable. The cluster client keeps the slot
/// map (its last one, also while it reconnects) and serves every other command.
struct Masters {
    /// The cluster connections; the slot map of the next one routes a call.
    cluster: Pool,
    /// The cluster's builder, whose settings (timeouts, reconnect policy, TLS) each master's pool takes.
    builder: Builder,
    size: usize,
    pools: RwLock<HashMap<Server, Pool>>,
    /// [`Redis::connections`], counted on every master's pool too.
    connections: Arc<AtomicU64>,
}

impl Masters {
    /// One pool per master of the current slot map, connected.
    async fn connect(
        cluster: Pool,
        builder: &Builder,
        size: usize,
        connections: &Arc<AtomicU64>,
    ) -> Result<Self, StoreError> {
        let masters = Self {
            cluster,
            builder: builder.clone(),
            size,
            pools: RwLock::default(),
            connections: connections.clone(),
        };
        let servers: Vec<Server> =
            masters.cluster.cached_cluster_state().map(|state| state.unique_primary_nodes()).unwrap_or_default();
        for server in servers {
            // Fails the start-up like the cluster connection does when a master cannot be reached.
            let pool = masters.pool(&server, true)?;
            pool.init().await?;
            masters.pools.write().expect("not poisoned").insert(server, pool);
        }
        Ok(masters)
    }

    /// A connection to the master serving `slot`, as the slot map says; `None` when the map has no owner.
    fn client_for(&self, slot: u16) -> Option<Client> {
        let server = self.cluster.next().cached_cluster_state()?.get_server(slot)?.clone();
        if let Some(pool) = self.pools.read().expect("not poisoned").get(&server) {
            return Some(pool.next().clone());
        }
        // A master the map did not name at start (a node added, a slot moved to it): connect in the
        // background, retrying until it answers; calls for it answer 503 until it is connected.
        let pool = self.pool(&server, false).ok()?;
        pool.connect_pool();
        let mut pools = self.pools.write().expect("not poisoned");
        Some(pools.entry(server).or_insert(pool).next().clone())
    }

    /// A pool of plain connections to `server` with the cluster's settings; with `fail_fast` false it keeps
    /// trying when its first connection fails, as it does after losing a connection.
    fn pool(&self, server: &Server, fail_fast: bool) -> Result<Pool, fred::error::Error> {
        // A pool made at start (`fail_fast`) is checked by the start-up check; a later one reaches a master
        // that may hold anything, so its first connection counts.
        let mut config = self.builder.get_config().expect("built from a config").clone();
        config.server = ServerConfig::Centralized { server: server.clone() };
        config.fail_fast = fail_fast;
        let mut builder = self.builder.clone();
        builder.set_config(config);
        let pool = builder.build_pool(self.size)?;
        count_connections(&pool, &self.connections, !fail_fast);
        Ok(pool)
    }
}

/// Counts the connections `pool` makes into `connections`: every reconnection, and with `first` also each
/// client's first connection (a pool made while serving, to a master the service did not know at start).
fn count_connections(pool: &Pool, connections: &Arc<AtomicU64>, first: bool) {
    for client in pool.clients() {
        let (connections, first_seen) = (connections.clone(), Arc::new(AtomicBool::new(first)));
        // Detached: the listener ends with the client.
        let _listener = client.on_reconnect(move |_| {
            // fred announces the first connection as a reconnection too.
            if first_seen.swap(true, Ordering::AcqRel) {
                connections.fetch_add(1, Ordering::AcqRel);
            }
            async { Ok(()) }
        });
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
            // Where the call went: on a cluster, the one master that lost it (the others may be down).
            self.script.load(&redis.client_for_slot(redis.script_slot(&keys))?).await?;
        }
        metrics::counter!("redis_script_errors_total", "script" => self.name).increment(1);
        let lost = format!("script {} flushed again after each of {NOSCRIPT_ATTEMPTS} loads", self.name);
        Err(fred::error::Error::new(fred::error::ErrorKind::IO, lost).into())
    }

    /// Runs the script if Redis still has it; `Ok(None)` on NOSCRIPT, which means Redis restarted or its
    /// scripts were flushed. A gated script (the coupon issue script) is loaded again only after the caller
    /// has checked what such a Redis may also have lost.
    pub async fn call_if_loaded<R, K, V>(
        &self,
        redis: &Redis,
        keys: K,
        args: V,
    ) -> Result<Option<Called<R>>, StoreError>
    where
        R: FromValue,
        K: Into<MultipleKeys> + Send,
        V: TryInto<MultipleValues> + Send,
        V::Error: Into<fred::error::Error> + Send,
    {
        self.evalsha_on(redis, &keys.into(), &args.try_into().map_err(Into::into)?).await
    }

    /// One EVALSHA (retried while its slot moves); `Ok(None)` on NOSCRIPT.
    async fn evalsha<R: FromValue>(
        &self,
        redis: &Redis,
        keys: &MultipleKeys,
        args: &MultipleValues,
    ) -> Result<Option<R>, StoreError> {
        Ok(self.evalsha_on(redis, keys, args).await?.map(|called| called.reply))
    }

    /// [`Script::evalsha`], keeping the connection the call went out on.
    async fn evalsha_on<R: FromValue>(
        &self,
        redis: &Redis,
        keys: &MultipleKeys,
        args: &MultipleValues,
    ) -> Result<Option<Called<R>>, StoreError> {
        let slot = redis.script_slot(keys);
        let call = || {
            let (client, keys, args) = (redis.client_for_slot(slot), keys.clone(), args.clone());
            async move {
                let client = client?;
                let reply = self.script.evalsha(&client, keys, args).await?;
                Ok(Called { reply, client })
            }
        };
        match retry_unsettled(redis, call).await {
            Ok(called) => Ok(Some(called)),
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

/// A script's reply, with the connection it came on.
pub struct Called<R> {
    pub reply: R,
    client: Client,
}

impl<R> Called<R> {
    /// Whether the replicas `REDIS_WAIT_REPLICAS` asks for have every write this call's connection made
    /// (`WAIT`, at most [`WAIT_TIMEOUT`]); `true` at once when it asks for none. WAIT counts the writes of its
    /// own connection, so it must go out on the one the script call took.
    pub async fn replicated(&self, redis: &Redis) -> Result<bool, StoreError> {
        if redis.wait_replicas == 0 {
            return Ok(true);
        }
        let acknowledged: i64 =
            self.client.wait(i64::from(redis.wait_replicas), WAIT_TIMEOUT.as_millis() as i64).await?;
        Ok(acknowledged >= i64::from(redis.wait_replicas))
    }
}

/// Runs `call` again while its slot is moving, as [`UNSETTLED_PAUSE`] describes; after a MOVED, once the
/// slot map is read again.
async fn retry_unsettled<R, F, Fut>(redis: &Redis, mut call: F) -> Result<R, fred::error::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<R, fred::error::Error>>,
{
    let mut pause = UNSETTLED_PAUSE;
    for _ in 1..UNSETTLED_ATTEMPTS {
        match call().await {
            Err(error) if is_unsettled(&error) => {
                metrics::counter!("redis_slot_moving_retries_total").increment(1);
                if error.details().starts_with("MOVED ") {
                    redis.moved().await;
                }
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            result => return result,
        }
    }
    call().await
}

/// Whether Redis refused the command, unexecuted, because its slot is moving between cluster nodes: ASK,
/// MOVED or TRYAGAIN from a master (script calls go to masters directly), or fred's cluster client giving up
/// on a redirection.
fn is_unsettled(error: &fred::error::Error) -> bool {
    let details = error.details();
    details.starts_with("TRYAGAIN")
        || details.starts_with("MOVED ")
        || details.starts_with("ASK ")
        || (*error.kind() == fred::error::ErrorKind::Routing && details == "Too many redirections.")
}
