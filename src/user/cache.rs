//! The Redis existence index of users: a bitmap `<prefix>users:known`, bit `id` set once the user is known
//! to exist. 1,000,000 users take 125 KB. Users are never deleted, so a set bit never goes stale.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

use crate::id::UserId;
use tokio_util::sync::CancellationToken;

use crate::store::Redis;

/// Redis bit offsets stop at 2^32 - 1; larger ids are always checked in MySQL.
const MAX_BIT: i64 = u32::MAX as i64;
/// The largest the bitmap can grow: 2^32 bits.
const BITMAP_MAX_BYTES: usize = 1 << 29;

fn key(redis: &Redis) -> String {
    redis.keys.key("users:known")
}

pub async fn is_known(redis: &Redis, id: UserId) -> Result<bool, fred::error::Error> {
    if id.get() > MAX_BIT {
        return Ok(false);
    }
    let getbit = CustomCommand::new_static("GETBIT", ClusterHash::FirstKey, false);
    let key = key(redis);
    let bit: u8 = redis.client_for(key.as_bytes())?.custom(getbit, vec![key, id.get().to_string()]).await?;
    Ok(bit == 1)
}

/// Marks users as existing, in one pipeline.
pub async fn remember(redis: &Redis, ids: &[UserId]) -> Result<(), fred::error::Error> {
    let key = key(redis);
    let pipeline = redis.client().pipeline();
    for id in ids.iter().filter(|id| id.get() <= MAX_BIT) {
        // fred has no typed SETBIT.
        let setbit = CustomCommand::new_static("SETBIT", ClusterHash::FirstKey, false);
        let _: () = pipeline.custom(setbit, vec![key.clone(), id.get().to_string(), "1".to_owned()]).await?;
    }
    let _: Vec<Value> = pipeline.all().await?;
    Ok(())
}

/// An in-process mirror of `users:known`, so the coupon path usually answers "does this user exist"
/// without a Redis round trip (one of the two it would otherwise make). It is loaded at start-up and
/// refreshed every [`KNOWN_USERS_REFRESH`]; a miss falls back to Redis, then MySQL. A set bit never goes
/// stale (users are not deleted), and a refresh ORs Redis into it, so a flushed Redis loses nothing here.
/// Memory: one bit per user id (1,000,000 users: 125 KB per instance); a refresh fetches only the bitmap's
/// last [`TAIL_BYTES`], the whole of it only every [`FULL_REFRESH_EVERY`] refreshes.
#[derive(Clone, Default)]
pub struct KnownUsers(Arc<RwLock<Vec<u8>>>);

/// How long a user created on another instance may take to reach this mirror (until then it is found
/// through Redis).
pub const KNOWN_USERS_REFRESH: Duration = Duration::from_secs(5);
/// Bytes at the end of the bitmap each refresh re-reads: the last 524,288 ids, far more than are created
/// in [`KNOWN_USERS_REFRESH`].
const TAIL_BYTES: usize = 64 * 1024;
/// Every this many refreshes (10 minutes) the whole bitmap is merged, for bits set far from its end: an
/// old user first found in MySQL and remembered then. Until that, such a user is found through Redis.
const FULL_REFRESH_EVERY: u64 = 120;

impl KnownUsers {
    /// Redis bitmap layout: bit `id` is bit `7 - id % 8` of byte `id / 8`.
    fn position(id: UserId) -> Option<(usize, u8)> {
        (id.get() <= MAX_BIT).then(|| ((id.get() / 8) as usize, 0x80 >> (id.get() % 8)))
    }

    pub fn contains(&self, id: UserId) -> bool {
        let Some((byte, mask)) = Self::position(id) else { return false };
        let bits = self.0.read().expect("known-users lock");
        bits.get(byte).is_some_and(|b| b & mask != 0)
    }

    pub fn insert(&self, id: UserId) {
        let Some((byte, mask)) = Self::position(id) else { return };
        let mut bits = self.0.write().expect("known-users lock");
        if bits.len() <= byte {
            bits.resize(byte + 1, 0);
        }
        bits[byte] |= mask;
    }

    /// Merges the whole Redis bitmap into the mirror (at start-up, and every [`FULL_REFRESH_EVERY`]).
    pub async fn refresh(&self, redis: &Redis) -> Result<(), fred::error::Error> {
        let remote: Option<Vec<u8>> = redis.client().get(key(redis)).await?;
        self.merge(0, &remote.unwrap_or_default());
        Ok(())
    }

    /// Merges only the end of the Redis bitmap, from [`TAIL_BYTES`] before the mirror's end: user ids grow
    /// (AUTO_INCREMENT), so the users created since the last refresh set bits there, and what one refresh
    /// moves no longer grows with the user count.
    pub async fn refresh_tail(&self, redis: &Redis) -> Result<(), fred::error::Error> {
        let start = self.0.read().expect("known-users lock").len().saturating_sub(TAIL_BYTES);
        // To the end: GETRANGE clamps an end past the value, and a bitmap stops at 512 MB.
        let remote: Vec<u8> = redis.client().getrange(key(redis), start, start + BITMAP_MAX_BYTES).await?;
        self.merge(start, &remote);
        Ok(())
    }

    /// ORs `remote`, the bitmap's bytes from `offset` on, into the mirror.
    fn merge(&self, offset: usize, remote: &[u8]) {
        let mut bits = self.0.write().expect("known-users lock");
        if bits.len() < offset + remote.len() {
            bits.resize(offset + remote.len(), 0);
        }
        for (local, remote) in bits[offset..].iter_mut().zip(remote) {
            *local |= remote;
        }
    }

    /// Refreshes the tail every [`KNOWN_USERS_REFRESH`] and the whole bitmap every [`FULL_REFRESH_EVERY`]
    /// of those, until `shutdown`; a failed refresh only means more misses.
    pub async fn run(self, redis: Redis, shutdown: CancellationToken) {
        for round in 1u64.. {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(KNOWN_USERS_REFRESH) => {}
            }
            let refreshed = if round % FULL_REFRESH_EVERY == 0 {
                self.refresh(&redis).await
            } else {
                self.refresh_tail(&redis).await
            };
            if let Err(error) = refreshed {
                tracing::warn!(%error, "known-users refresh failed");
            }
        }
    }
}
