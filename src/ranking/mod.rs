//! Top products: daily sales in Redis sorted sets, unioned over a window of days.

pub mod sales;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

use crate::store::Keys;

/// The business day (in the configured fixed offset) that `at` falls on.
pub fn business_day(at: DateTime<Utc>, tz: FixedOffset) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// `<prefix>sales:{rank}:YYYYMMDD`: the contract's name of one day's sales set (member = product id,
/// score = units). The `{rank}` hash tag keeps every day in one cluster slot so they can be unioned.
pub fn day_key(keys: &Keys, day: NaiveDate) -> String {
    keys.key(format_args!("sales:{{rank}}:{}", day.format("%Y%m%d")))
}

/// `<prefix>sales:{rank}:applied:YYYYMMDD`: the set of order ids already counted in that day's sales set.
/// Whoever writes a day set (the outbox relay adding one order, a rebuild replacing the day) writes this
/// set with it, atomically, which is what makes "exactly once per order" hold across replays and rebuilds.
pub fn applied_key(keys: &Keys, day: NaiveDate) -> String {
    keys.key(format_args!("sales:{{rank}}:applied:{}", day.format("%Y%m%d")))
}
