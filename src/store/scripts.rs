//! The one registry of Lua scripts: each `lua/<domain>_<action>.lua` is compiled in here and loaded once
//! at boot by SHA. Domain modules wrap these handles in typed functions.

use std::sync::LazyLock;

use super::{Redis, Script, StoreError};

macro_rules! scripts {
    ($($name:ident => $file:literal),* $(,)?) => {
        $(
            #[doc = concat!("`lua/", $file, ".lua`")]
            pub static $name: LazyLock<Script> =
                LazyLock::new(|| Script::new($file, include_str!(concat!("../../lua/", $file, ".lua"))));
        )*
        /// Every script, for loading at boot.
        fn all() -> Vec<&'static Script> {
            vec![$(&*$name),*]
        }
    };
}

scripts! {
    CATALOG_ANNOUNCE => "catalog_announce",
    CATALOG_CHANGES => "catalog_changes",
    COUPON_ISSUE => "coupon_issue",
    COUPON_LOAD => "coupon_load",
    COUPON_QUEUE_ACK => "coupon_queue_ack",
    COUPON_STATE => "coupon_state",
    COUPON_UNLIST => "coupon_unlist",
    COUPON_DELIST => "coupon_delist",
    COUPON_PRUNE => "coupon_prune",
    RANKING_RECORD_SALES => "ranking_record_sales",
    PRODUCT_VIEWS_TAKE => "product_views_take",
    PRODUCT_VIEWS_ACK => "product_views_ack",
    RANKING_REPLACE_DAY => "ranking_replace_day",
    RANKING_SHARD_TOP => "ranking_shard_top",
}

/// Loads every script into Redis (every primary of a cluster) but the coupon issue script: that one is
/// loaded by `coupon::fence::ScriptGate` once every coupon's state is checked, since a Redis without it
/// may be one that restarted from an older file.
pub async fn load_all(redis: &Redis) -> Result<(), StoreError> {
    for script in all().into_iter().filter(|script| script.name != COUPON_ISSUE.name) {
        script.load(redis).await?;
    }
    Ok(())
}
