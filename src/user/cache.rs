//! The Redis existence index of users: a bitmap `<prefix>users:known`, bit `id` set once the user is known
//! to exist. 1,000,000 users take 125 KB. Users are never deleted, so a set bit never goes stale.

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

use crate::id::UserId;
use crate::store::Redis;

/// Redis bit offsets stop at 2^32 - 1; larger ids are always checked in MySQL.
const MAX_BIT: i64 = u32::MAX as i64;

fn key(redis: &Redis) -> String {
    redis.keys.key("users:known")
}

pub async fn is_known(redis: &Redis, id: UserId) -> Result<bool, fred::error::Error> {
    if id.get() > MAX_BIT {
        return Ok(false);
    }
    let getbit = CustomCommand::new_static("GETBIT", ClusterHash::FirstKey, false);
    let bit: u8 = redis.client().custom(getbit, vec![key(redis), id.get().to_string()]).await?;
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
