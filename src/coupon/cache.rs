//! Redis side of coupons: the per-coupon keys, the typed wrappers of `lua/coupon_issue.lua`,
//! `lua/coupon_load.lua` and `lua/coupon_state.lua`, the registry of loaded coupons and the stream commands
//! of the writer.
//!
//! Keys of coupon 42 (one hash tag, so each script call stays in one cluster slot):
//! `<prefix>coupon:{42}:meta` (window and generation), `:stock` (counter), `:issued` (user -> issued_at in µs),
//! `:queue` (stream of issuances not yet persisted, one entry per script call that issued any).
//! `<prefix>coupons` is the set of loaded coupon ids; `<prefix>coupons:unpersisted` the sorted set of coupons
//! whose `issued` hash may hold a user MySQL does not have yet (see `lua/coupon_issue.lua`, "Why the
//! listing"), which is all the user-coupon list asks Redis about.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use fred::prelude::*;
use fred::types::scan::Scanner;
use fred::types::sorted_sets::Ordering;
use fred::types::streams::{XID, XReadResponse, XReadValue};

use super::Coupon;
use crate::id::{CouponId, UserId};
use crate::store::{Redis, StoreError};

/// Consumer group of the MySQL writer on every coupon stream.
pub const WRITER_GROUP: &str = "writers";

/// Issued-hash fields per HSET when a rebuild copies MySQL rows back into Redis.
const LOAD_CHUNK: usize = 1_000;
/// HSETs per pipeline during a rebuild.
const LOAD_CHUNKS_PER_PIPELINE: usize = 20;

/// The four keys of one coupon, in the order both scripts take them.
struct CouponKeys {
    meta: String,
    stock: String,
    issued: String,
    queue: String,
}

impl CouponKeys {
    fn new(redis: &Redis, id: CouponId) -> Self {
        let key = |what: &str| redis.keys.key(format_args!("coupon:{{{id}}}:{what}"));
        Self { meta: key("meta"), stock: key("stock"), issued: key("issued"), queue: key("queue") }
    }

    fn all(self) -> Vec<String> {
        vec![self.meta, self.stock, self.issued, self.queue]
    }
}

/// `<prefix>coupons`: ids of the coupons loaded in Redis, which the writer walks to find the streams.
fn registry_key(redis: &Redis) -> String {
    redis.keys.key("coupons")
}

/// `<prefix>coupons:unpersisted`: member = coupon id, score = the epoch it was listed with.
fn unpersisted_key(redis: &Redis) -> String {
    redis.keys.key("coupons:unpersisted")
}

/// What `coupon_issue.lua` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueReply {
    /// Issued now, at this time (µs since the epoch).
    Issued(i64),
    /// The user already holds it since this time (µs).
    AlreadyIssued(i64),
    SoldOut,
    NotActive,
    /// Redis has no state for the coupon: rebuild it from MySQL, then retry.
    NotLoaded,
    /// Nothing decided: some user would win but the coupon is not listed. List it with this epoch
    /// ([`list`]), then call again passing the epoch; [`super::fence::ScriptGate::issue`] does both.
    Unlisted(i64),
}

/// Runs the issue script for `users` of one coupon, in order: one round trip (EVALSHA), one reply per user.
/// `listing` is the epoch the caller has just listed the coupon with ([`list`]), or 0. `None` when Redis
/// does not have the script (it restarted, or its scripts were flushed): the caller checks the coupons'
/// state before loading it again (see [`super::fence::ScriptGate`]).
pub async fn issue(
    redis: &Redis,
    id: CouponId,
    users: &[UserId],
    now_micros: i64,
    listing: i64,
) -> Result<Option<Vec<IssueReply>>, StoreError> {
    let script = &*crate::store::scripts::COUPON_ISSUE;
    let args: Vec<i64> = [now_micros, listing].into_iter().chain(users.iter().map(|user| user.get())).collect();
    let Some(called) = script.call_if_loaded::<Vec<i64>, _, _>(redis, CouponKeys::new(redis, id).all(), args).await?
    else {
        return Ok(None);
    };
    let reply = &called.reply;
    if reply.len() != 2 * users.len() {
        return Err(script.unexpected(reply));
    }
    // Code 0 is an issuance: with REDIS_WAIT_REPLICAS, its 201 waits for the replicas to have it.
    if reply.chunks_exact(2).any(|pair| pair[0] == 0) && !called.replicated(redis).await? {
        metrics::counter!("coupon_issue_unreplicated_total").increment(1);
        let why = format!("issuance of coupon {id} not acknowledged by the replicas REDIS_WAIT_REPLICAS asks for");
        return Err(fred::error::Error::new(fred::error::ErrorKind::Timeout, why).into());
    }
    reply
        .chunks_exact(2)
        .map(|pair| match *pair {
            [0, at] => Ok(IssueReply::Issued(at)),
            [1, at] => Ok(IssueReply::AlreadyIssued(at)),
            [2, _] => Ok(IssueReply::SoldOut),
            [3, _] => Ok(IssueReply::NotActive),
            [4, _] => Ok(IssueReply::NotLoaded),
            [5, epoch] => Ok(IssueReply::Unlisted(epoch)),
            _ => Err(script.unexpected(pair)),
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// A stream entry id, `<ms>-<seq>`; ordered as Redis orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    pub ms: i64,
    pub seq: i64,
}

impl StreamId {
    pub fn parse(raw: &str) -> Option<Self> {
        let (ms, seq) = raw.split_once('-')?;
        Some(Self { ms: ms.parse().ok()?, seq: seq.parse().ok()? })
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// What a coupon's Redis state says of itself (`lua/coupon_state.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Whether `meta` exists: the coupon can issue.
    pub loaded: bool,
    /// The generation the state was loaded with.
    pub generation: i64,
    /// The stream's last generated id: every entry this state ever queued has an id at most this.
    pub last_id: StreamId,
    /// Whether its keys agree with each other (`stock` is `total` minus the users `issued` holds, the
    /// stream exists): the check the issue script makes before it decides anything.
    pub whole: bool,
}

/// The coupon's state as Redis has it, read in one script call.
pub async fn state(redis: &Redis, id: CouponId) -> Result<State, StoreError> {
    let script = &*crate::store::scripts::COUPON_STATE;
    let reply: Vec<i64> = script.call(redis, CouponKeys::new(redis, id).all(), Vec::<String>::new()).await?;
    match reply[..] {
        [loaded, generation, ms, seq, whole] => {
            Ok(State { loaded: loaded == 1, generation, last_id: StreamId { ms, seq }, whole: whole == 1 })
        }
        _ => Err(script.unexpected(reply)),
    }
}

/// Entries per XRANGE and fields per HSCAN page while a rebuild collects what Redis still knows.
const SURVIVOR_PAGE: u64 = 1_000;

/// The winners Redis still knows of, with their issue time (µs): every user of every entry left in the
/// coupon's stream (read or not, of any generation), and, when `with_holders`, every user of its `issued`
/// hash. A rebuild keeps those MySQL does not have yet, so first come first served survives a lost key.
/// Paged, so a large campaign never blocks Redis for one long reply.
pub async fn survivors(redis: &Redis, id: CouponId, with_holders: bool) -> Result<Vec<(UserId, i64)>, StoreError> {
    let keys = CouponKeys::new(redis, id);
    let client = redis.client_for(keys.queue.as_bytes())?;
    let mut found = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let page: Vec<XReadValue<String, String, String>> =
            client.xrange_values(&keys.queue, start.as_str(), "+", Some(SURVIVOR_PAGE)).await?;
        let full = page.len() as u64 == SURVIVOR_PAGE;
        for value in page {
            start = format!("({}", value.0);
            if let Some(entry) = queued(id, value) {
                let at = entry.issued_at.timestamp_micros();
                found.extend(entry.user_ids.into_iter().map(|user| (user, at)));
            }
        }
        if !full {
            break;
        }
    }
    if with_holders {
        let mut pages = std::pin::pin!(client.hscan(&keys.issued, "*", Some(SURVIVOR_PAGE as u32)));
        while let Some(page) = futures::StreamExt::next(&mut pages).await {
            let mut page = page?;
            if let Some(map) = page.take_results() {
                for (user, at) in map.inner() {
                    let user = user.as_str().and_then(|user| user.parse().ok()).and_then(UserId::new);
                    if let (Some(user), Some(at)) = (user, at.as_str().and_then(|at| at.parse().ok())) {
                        found.push((user, at));
                    }
                }
            }
            page.next();
        }
    }
    Ok(found)
}

/// Deletes the coupon's `meta`, `stock` and `issued`, so it issues nothing until loaded again; the stream
/// stays, since the writer still has to persist or re-decide its entries.
pub async fn unload(redis: &Redis, id: CouponId) -> Result<(), StoreError> {
    let keys = CouponKeys::new(redis, id);
    // `meta` first: without it the issue script refuses at once, whatever is left of the rest.
    let _: i64 = redis.client().del(keys.meta).await?;
    let _: i64 = redis.client().del(vec![keys.stock, keys.issued]).await?;
    Ok(())
}

/// What a load puts into Redis beside the campaign.
#[derive(Debug, Default)]
pub struct Holders<'a> {
    /// Everyone who holds the coupon (user, issued_at µs): MySQL's rows and the winners only Redis knew.
    pub all: &'a [(UserId, i64)],
    /// Those of `all` MySQL does not have yet, queued again for the writer; then the coupon is listed with
    /// `listing`.
    pub unpersisted: &'a [(UserId, i64)],
    pub listing: i64,
}

/// Loads a coupon's state unless it is there: registers it for the writer, copies `holders.all` into the
/// issued hash, then runs `coupon_load.lua` with the `generation` and the highest `persisted` stream id MySQL
/// records, queueing `holders.unpersisted` again. `true` when this call loaded it.
pub async fn load(
    redis: &Redis,
    coupon: &Coupon,
    holders: Holders<'_>,
    generation: i64,
    persisted: StreamId,
) -> Result<bool, StoreError> {
    let keys = CouponKeys::new(redis, coupon.id);
    // Registered first: a coupon that can issue must be one the writer reads.
    let _: i64 = redis.client().sadd(registry_key(redis), coupon.id.get()).await?;
    if !holders.unpersisted.is_empty() {
        list(redis, coupon.id, holders.listing).await?;
    }
    // Pipelines of bounded size: one pipeline of a million users' fields outlasted the command timeout.
    for group in holders.all.chunks(LOAD_CHUNK * LOAD_CHUNKS_PER_PIPELINE) {
        let pipeline = redis.client().pipeline();
        for chunk in group.chunks(LOAD_CHUNK) {
            let fields: Vec<(String, i64)> = chunk.iter().map(|(user, at)| (user.get().to_string(), *at)).collect();
            let _: () = pipeline.hset(&keys.issued, fields).await?;
        }
        let _: Vec<Value> = pipeline.all().await?;
    }
    let mut args = vec![
        coupon.total_quantity.to_string(),
        coupon.starts_at.timestamp_micros().to_string(),
        coupon.ends_at.map_or_else(String::new, |end| end.timestamp_micros().to_string()),
        WRITER_GROUP.to_owned(),
        generation.to_string(),
        persisted.to_string(),
        if holders.unpersisted.is_empty() { "0".to_owned() } else { holders.listing.to_string() },
    ];
    // One entry per issue time, as the issue script wrote them.
    let mut by_time: std::collections::BTreeMap<i64, Vec<String>> = std::collections::BTreeMap::new();
    for (user, at) in holders.unpersisted {
        by_time.entry(*at).or_default().push(user.get().to_string());
    }
    for (at, users) in by_time {
        args.extend([at.to_string(), users.join(",")]);
    }
    let script = &*crate::store::scripts::COUPON_LOAD;
    let loaded: i64 = script.call(redis, keys.all(), args).await?;
    Ok(loaded == 1)
}

/// Whether the coupon's state is in Redis.
pub async fn is_loaded(redis: &Redis, id: CouponId) -> Result<bool, StoreError> {
    let found: i64 = redis.client().exists(CouponKeys::new(redis, id).meta).await?;
    Ok(found == 1)
}

/// `(issued, remaining)` as Redis counts them, in one pipeline.
pub async fn counts(redis: &Redis, id: CouponId) -> Result<(i64, i64), StoreError> {
    let keys = CouponKeys::new(redis, id);
    let pipeline = redis.client().pipeline();
    let _: () = pipeline.hlen(&keys.issued).await?;
    let _: () = pipeline.get(&keys.stock).await?;
    let (issued, stock): (i64, Option<i64>) = pipeline.all().await?;
    Ok((issued, stock.unwrap_or(0)))
}

/// When `user` was issued coupon `id` (µs), if Redis recorded it, with the generation of the state that
/// says so. The generation is read first, in the same pipeline: a rebuild between the two reads can only
/// make the pair look older than it is, which the pay transaction's fence then refuses.
pub async fn issued_at(redis: &Redis, id: CouponId, user: UserId) -> Result<Option<(i64, i64)>, StoreError> {
    let keys = CouponKeys::new(redis, id);
    let pipeline = redis.client().pipeline();
    let _: () = pipeline.hget(&keys.meta, "gen").await?;
    let _: () = pipeline.hget(&keys.issued, user.get()).await?;
    let (generation, at): (Option<i64>, Option<i64>) = pipeline.all().await?;
    Ok(at.map(|at| (at, generation.unwrap_or(0))))
}

/// Removes finished coupons from the registry: the writer stops reading their streams (MySQL holds all they
/// issued).
pub async fn unregister(redis: &Redis, ids: &[CouponId]) -> Result<(), StoreError> {
    let ids: Vec<i64> = ids.iter().map(|id| id.get()).collect();
    let _: i64 = redis.client().srem(registry_key(redis), ids).await?;
    Ok(())
}

/// Every coupon id in the registry.
pub async fn registered(redis: &Redis) -> Result<Vec<CouponId>, StoreError> {
    let ids: Vec<i64> = redis.client().smembers(registry_key(redis)).await?;
    Ok(ids.into_iter().filter_map(CouponId::new).collect())
}

/// Adds the coupon to `<prefix>coupons:unpersisted` with `epoch` as its score, unless it is there with a
/// higher one (ZADD GT): the step before an issue call that passes `epoch` as its listing. Scores are f64:
/// epochs (a generation in µs plus one per listing) stay far below 2^53, where they would stop being exact.
pub async fn list(redis: &Redis, id: CouponId, epoch: i64) -> Result<(), StoreError> {
    let _: i64 = redis
        .client()
        .zadd(unpersisted_key(redis), None, Some(Ordering::GreaterThan), false, false, (epoch as f64, id.get()))
        .await?;
    Ok(())
}

/// The coupons of `<prefix>coupons:unpersisted` with their scores: every coupon whose `issued` hash may hold
/// a user MySQL does not have yet.
pub async fn listed(redis: &Redis) -> Result<Vec<(CouponId, i64)>, StoreError> {
    // RESP2's flat reply: member, score, member, score, ...
    let flat: Vec<String> = redis.client().zrange(unpersisted_key(redis), 0, -1, None, false, None, true).await?;
    Ok(flat
        .chunks_exact(2)
        .filter_map(|pair| {
            let id = pair[0].parse().ok().and_then(CouponId::new)?;
            Some((id, pair[1].parse::<f64>().ok()? as i64))
        })
        .collect())
}

/// What `coupon_unlist.lua` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlisting {
    /// No state in Redis: nothing can be queued until a rebuild, which lists with a higher epoch.
    NoState,
    /// Not listed (any more) at this epoch: everything it issued is in MySQL.
    NotListed(i64),
    /// Still listed: entries wait in its stream, or one came within the quiet period.
    Listed,
}

/// Clears the coupon's listing if its stream is empty and got no entry for `quiet` (`lua/coupon_unlist.lua`).
pub async fn unlist(redis: &Redis, id: CouponId, quiet: std::time::Duration) -> Result<Unlisting, StoreError> {
    let keys = CouponKeys::new(redis, id);
    let script = &*crate::store::scripts::COUPON_UNLIST;
    let reply: Vec<i64> = script.call(redis, vec![keys.meta, keys.queue], quiet.as_millis() as i64).await?;
    match reply[..] {
        [0, _] => Ok(Unlisting::NoState),
        [1, epoch] => Ok(Unlisting::NotListed(epoch)),
        [2, _] => Ok(Unlisting::Listed),
        _ => Err(script.unexpected(reply)),
    }
}

/// Removes each `(coupon, epoch)` from `<prefix>coupons:unpersisted` unless it was listed again with a
/// higher epoch (`lua/coupon_delist.lua`); returns how many left.
pub async fn delist(redis: &Redis, ended: &[(CouponId, i64)]) -> Result<i64, StoreError> {
    if ended.is_empty() {
        return Ok(0);
    }
    let args: Vec<i64> = ended.iter().flat_map(|(id, epoch)| [id.get(), *epoch]).collect();
    let script = &*crate::store::scripts::COUPON_DELIST;
    script.call(redis, unpersisted_key(redis), args).await
}

/// Deletes the coupon's Redis state if its stream is empty (`lua/coupon_prune.lua`), and drops it from the
/// registry; `false` (nothing deleted) when entries wait in the stream. Only for a campaign that ended,
/// under its MySQL row lock ([`super::prune_ended`]).
pub async fn prune(redis: &Redis, id: CouponId) -> Result<bool, StoreError> {
    let script = &*crate::store::scripts::COUPON_PRUNE;
    let pruned: i64 = script.call(redis, CouponKeys::new(redis, id).all(), Vec::<String>::new()).await?;
    if pruned == 1 {
        unregister(redis, &[id]).await?;
    }
    Ok(pruned == 1)
}

/// Which of `coupons` Redis says `user` holds, with the issue time (µs): one pipelined HGET per coupon.
pub async fn issued_to(redis: &Redis, user: UserId, coupons: &[CouponId]) -> Result<Vec<(CouponId, i64)>, StoreError> {
    if coupons.is_empty() {
        return Ok(Vec::new());
    }
    let pipeline = redis.client().pipeline();
    for id in coupons {
        let _: () = pipeline.hget(CouponKeys::new(redis, *id).issued, user.get()).await?;
    }
    let found: Vec<Option<i64>> = pipeline.all().await?;
    Ok(coupons.iter().zip(found).filter_map(|(id, at)| at.map(|at| (*id, at))).collect())
}

/// One entry read from a coupon stream: the issuances of one script call.
#[derive(Debug, Clone)]
pub struct Queued {
    pub coupon_id: CouponId,
    /// Stream entry id, to XACK once persisted.
    pub entry_id: String,
    /// The same id, parsed, for the persisted high-water mark.
    pub stream_id: StreamId,
    pub user_ids: Vec<UserId>,
    pub issued_at: DateTime<Utc>,
    /// Generation of the state that decided the entry (0 for entries older than generations).
    pub generation: i64,
}

/// What the writer's full pass does for each stream beside reading new entries.
#[derive(Debug, Clone, Copy)]
pub struct FullPass {
    /// Claims entries pending longer than this: their consumer died.
    pub claim_idle_ms: u64,
    /// A coupon whose window ended before this instant (µs since the epoch) is reported finished when its
    /// stream is empty.
    pub ended_before: i64,
}

/// What one read of every coupon stream found.
#[derive(Debug, Default)]
pub struct Read {
    pub entries: Vec<Queued>,
    /// On a full pass: coupons whose window ended before [`FullPass::ended_before`] and whose stream is
    /// empty, so everything they issued is persisted.
    pub finished: Vec<CouponId>,
    /// Entries in the streams (acknowledged ones are trimmed, so: not yet persisted), when measured.
    pub depth: Option<u64>,
    /// Entries delivered to some consumer and not yet acknowledged, when measured.
    pub pending: Option<u64>,
}

/// Reads up to `count` new entries per coupon stream for `consumer`, in one pipeline. On a `full_pass`, the
/// same pipeline also claims idle pending entries, measures depth and pending, and finds the finished
/// coupons. A stream whose group is missing gets it created for the next read.
pub async fn read_queues(
    redis: &Redis,
    coupons: &[CouponId],
    consumer: &str,
    count: u64,
    full_pass: Option<FullPass>,
) -> Result<Read, StoreError> {
    let mut read = Read::default();
    if coupons.is_empty() {
        return Ok(read);
    }
    let client = redis.client();
    let pipeline = client.pipeline();
    for id in coupons {
        let CouponKeys { meta, queue, .. } = CouponKeys::new(redis, *id);
        if let Some(pass) = full_pass {
            let idle = pass.claim_idle_ms;
            let _: () = pipeline.xautoclaim(&queue, WRITER_GROUP, consumer, idle, "0-0", Some(count), false).await?;
            let _: () = pipeline.xlen(&queue).await?;
            let _: () = pipeline.xpending(&queue, WRITER_GROUP, ()).await?;
            let _: () = pipeline.hget(&meta, "ends").await?;
        }
        let _: () = pipeline.xreadgroup(WRITER_GROUP, consumer, Some(count), None, false, &queue, ">").await?;
    }
    let replies = pipeline.try_all::<Value>().await;
    let expected = coupons.len() * if full_pass.is_some() { 5 } else { 1 };
    if replies.len() != expected {
        // fred answers a pipeline it could not send whole (a cluster redirection it does not follow, see
        // store::redis) with one error for all of it: the writer's step fails and is retried.
        return Err(match replies.into_iter().find_map(Result::err) {
            Some(error) => error.into(),
            None => StoreError::ScriptReply { script: "read_queues pipeline", reply: format!("{expected} commands") },
        });
    }
    let mut replies = replies.into_iter();
    let (mut depth, mut pending) = (0u64, 0u64);
    let mut missing_groups = Vec::new();
    for id in coupons {
        if let Some(pass) = full_pass {
            let claimed = replies.next().expect("one reply per command");
            let len = replies.next().expect("one reply per command");
            let summary = replies.next().expect("one reply per command");
            let ends = replies.next().expect("one reply per command");
            match claimed {
                Ok(value) => {
                    let (_, values): (String, Vec<XReadValue<String, String, String>>) =
                        value.into_xautoclaim_values()?;
                    read.entries.extend(values.into_iter().filter_map(|v| queued(*id, v)));
                }
                Err(e) if is_nogroup(&e) => {}
                Err(e) => return Err(e.into()),
            }
            let len = len?.convert::<u64>()?;
            depth += len;
            if len == 0 && ends?.convert::<Option<i64>>()?.is_some_and(|end| end < pass.ended_before) {
                read.finished.push(*id);
            }
            if let Ok(summary) = summary {
                // XPENDING summary: [count, smallest id, greatest id, consumers].
                let summary: Vec<Value> = summary.convert()?;
                pending += summary.first().and_then(Value::as_u64).unwrap_or(0);
            }
        }
        match replies.next().expect("one reply per command") {
            Ok(Value::Null) => {}
            Ok(value) => {
                let streams: XReadResponse<String, String, String, String> = value.into_xread_response()?;
                for values in streams.into_values() {
                    read.entries.extend(values.into_iter().filter_map(|v| queued(*id, v)));
                }
            }
            Err(e) if is_nogroup(&e) => missing_groups.push(*id),
            Err(e) => return Err(e.into()),
        }
    }
    if full_pass.is_some() {
        read.depth = Some(depth);
        read.pending = Some(pending);
    }
    for id in missing_groups {
        create_group(redis, id).await?;
    }
    Ok(read)
}

/// Decodes one stream entry (`u` = comma-separated user ids, `t` = issued_at µs, `g` = generation; an entry
/// of one user is just its id); a malformed one (never written by our script) is logged and skipped, which leaves it
/// pending rather than failing every batch.
fn queued(coupon_id: CouponId, (entry_id, fields): XReadValue<String, String, String>) -> Option<Queued> {
    let user_ids: Option<Vec<UserId>> = fields
        .get("u")
        .and_then(|users| users.split(',').map(|user| user.parse().ok().and_then(UserId::new)).collect());
    let issued_at = fields.get("t").and_then(|at| at.parse().ok()).and_then(DateTime::from_timestamp_micros);
    let generation = fields.get("g").map_or(Some(0), |g| g.parse().ok());
    match (user_ids, issued_at, generation, StreamId::parse(&entry_id)) {
        (Some(user_ids), Some(issued_at), Some(generation), Some(stream_id)) => {
            Some(Queued { coupon_id, entry_id, stream_id, user_ids, issued_at, generation })
        }
        _ => {
            tracing::error!(coupon.id = %coupon_id, entry.id = entry_id, "malformed coupon queue entry");
            None
        }
    }
}

fn is_nogroup(error: &fred::error::Error) -> bool {
    error.details().starts_with("NOGROUP")
}

/// XGROUP CREATE's answer when the stream does not exist.
fn is_missing_stream(error: &fred::error::Error) -> bool {
    error.details().contains("requires the key to exist")
}

/// Creates the writer group from id 0 (everything queued so far), if it is missing.
async fn create_group(redis: &Redis, id: CouponId) -> Result<(), StoreError> {
    let queue = CouponKeys::new(redis, id).queue;
    // Without MKSTREAM: a stream that is gone (a pruned campaign, or keys Redis lost) has nothing to read,
    // and creating it would leave an empty stream behind that nothing deletes.
    match redis.client().xgroup_create::<(), _, _, _>(&queue, WRITER_GROUP, XID::Manual("0".into()), false).await {
        Err(e) if !e.details().starts_with("BUSYGROUP") && !is_missing_stream(&e) => Err(e.into()),
        _ => Ok(()),
    }
}

/// Acknowledges persisted entries and trims them from their streams (`lua/coupon_queue_ack.lua`), one
/// script call per coupon, concurrently. A crash before this only leaves the entries pending, to be
/// claimed again and inserted as no-ops.
pub async fn ack(redis: &Redis, entries: &[Queued]) -> Result<(), StoreError> {
    let mut by_coupon: HashMap<CouponId, Vec<&str>> = HashMap::new();
    for entry in entries {
        by_coupon.entry(entry.coupon_id).or_default().push(&entry.entry_id);
    }
    let script = &*crate::store::scripts::COUPON_QUEUE_ACK;
    let calls = by_coupon.into_iter().map(|(id, ids)| {
        let args: Vec<&str> = std::iter::once(WRITER_GROUP).chain(ids).collect();
        script.call::<i64, _, _>(redis, CouponKeys::new(redis, id).queue, args)
    });
    futures::future::try_join_all(calls).await?;
    Ok(())
}
