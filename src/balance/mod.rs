//! Balances: charging (limited, idempotent, race-proof), reading, and the history of every change.
//!
//! A charge is one MySQL transaction: a conditional `UPDATE` that can neither overshoot the limit nor lose
//! a concurrent update (the row lock serializes charges of one user), plus a history row holding the
//! balance after it. Payments deduct inside the order's pay transaction through [`db::deduct`].

pub mod db;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::id::UserId;
use crate::store::{StoreError, Stores, mysql};
use crate::user;

/// Longest accepted `Idempotency-Key`, in characters (the column is VARBINARY(128); keys are ASCII).
pub const IDEMPOTENCY_KEY_MAX: usize = 128;
/// Largest `limit` of a history page.
pub const HISTORY_LIMIT_MAX: u32 = 1000;

/// Why a balance operation failed.
#[derive(Debug, Error)]
pub enum Error {
    /// 400 INVALID_AMOUNT: outside the configured per-charge range.
    #[error("amount must be {min}..={max} won")]
    InvalidAmount { min: i64, max: i64 },
    /// 400 INVALID_REQUEST: a malformed idempotency key or query.
    #[error("{0}")]
    Invalid(&'static str),
    /// 404 USER_NOT_FOUND.
    #[error("user {0} not found")]
    UserNotFound(UserId),
    /// 422 BALANCE_LIMIT_EXCEEDED: the charge would raise the balance above the maximum; nothing changed.
    #[error("the balance may not exceed {max} won")]
    LimitExceeded { max: i64 },
    /// 409 IDEMPOTENCY_KEY_REUSED: the key was first used for another amount.
    #[error("this Idempotency-Key was used for a charge of another amount")]
    IdempotencyKeyReused,
    /// 503: the transaction kept losing lock conflicts; retrying later is safe.
    #[error("the balance is busy, retry later")]
    Contended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

crate::store::store_error_conversions!(Error);

crate::user::user_error_conversions!(Error);

impl Error {
    fn is_lock_conflict(&self) -> bool {
        matches!(self, Error::Store(StoreError::Mysql(e)) if mysql::is_lock_conflict(e))
    }
}

/// Balance rules the contract makes configurable.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Limits {
    /// Smallest amount one charge may add, in won.
    #[arg(long, env = "CHARGE_MIN", default_value_t = 1)]
    pub charge_min: i64,

    /// Largest amount one charge may add, in won.
    #[arg(long, env = "CHARGE_MAX", default_value_t = 10_000_000)]
    pub charge_max: i64,

    /// A balance may never exceed this, in won.
    #[arg(long, env = "BALANCE_MAX", default_value_t = 100_000_000)]
    pub balance_max: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { charge_min: 1, charge_max: 10_000_000, balance_max: 100_000_000 }
    }
}

/// A user's balance.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    pub user_id: UserId,
    /// Won.
    pub balance: i64,
}

/// The result of a charge; stored verbatim for an idempotent retry, so a retry gets the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Charged {
    pub user_id: UserId,
    /// Won, right after this charge.
    pub balance: i64,
    pub charged_amount: i64,
    /// Id of the history entry this charge wrote.
    pub transaction_id: i64,
    pub charged_at: DateTime<Utc>,
}

/// Kind of a history entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, sqlx::Encode, sqlx::Decode)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sqlx(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntryType {
    Charge,
    Payment,
    Refund,
}

crate::store::mysql::text_column!(EntryType);

/// One balance change.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub transaction_id: i64,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub kind: EntryType,
    /// Won; negative for a payment.
    pub amount: i64,
    pub balance_after: i64,
    pub created_at: DateTime<Utc>,
}

/// A client-chosen key that makes a charge safe to retry: 1..=128 printable ASCII characters.
///
/// Stored as bytes (migration 0050), so keys differing only in case or trailing spaces are different keys.
/// Remembered for `--idempotency-retention-hours` (default 48, at least the contract's 24), then pruned by
/// the retention job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let valid = !raw.is_empty()
            && raw.len() <= IDEMPOTENCY_KEY_MAX
            && raw.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Error::Invalid("Idempotency-Key must be 1..=128 printable ASCII characters"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An amount inside the configured per-charge range.
#[derive(Debug, Clone, Copy)]
struct ChargeAmount(i64);

impl ChargeAmount {
    pub fn parse(amount: i64, limits: &Limits) -> Result<Self, Error> {
        if (limits.charge_min..=limits.charge_max).contains(&amount) {
            Ok(Self(amount))
        } else {
            Err(Error::InvalidAmount { min: limits.charge_min, max: limits.charge_max })
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// A page of a user's balance changes.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct History {
    /// Newest first.
    pub entries: Vec<Entry>,
}

/// The balance domain's handle: read, charge and list a user's balance. Cheap to clone.
#[derive(Clone)]
pub struct Balances {
    stores: Stores,
    limits: Limits,
}

impl Balances {
    pub fn new(stores: Stores, limits: Limits) -> Self {
        Self { stores, limits }
    }

    /// The current balance; 0 for a user who never charged.
    pub async fn get(&self, user_id: UserId) -> Result<Balance, Error> {
        let stores = &self.stores;
        user::ensure_exists(stores, user_id).await?;
        let balance = db::amount(&stores.db, user_id).await?.unwrap_or(0);
        Ok(Balance { user_id, balance })
    }

    /// Newest first, at most `limit` (1..=1000) entries.
    pub async fn history(&self, user_id: UserId, limit: u32) -> Result<History, Error> {
        let stores = &self.stores;
        if !(1..=HISTORY_LIMIT_MAX).contains(&limit) {
            return Err(Error::Invalid("limit must be 1..=1000"));
        }
        user::ensure_exists(stores, user_id).await?;
        Ok(History { entries: db::history(&stores.db, user_id, limit).await? })
    }

    /// Adds `amount` (won, within the configured [`Limits`]) to the balance. With a key, a retry (also one
    /// racing the first call) returns the first call's response and charges nothing; the same key with another
    /// amount is refused.
    pub async fn charge(&self, user_id: UserId, amount: i64, key: Option<&IdempotencyKey>) -> Result<Charged, Error> {
        let (stores, limits) = (&self.stores, &self.limits);
        let amount = ChargeAmount::parse(amount, limits)?;
        // No existence check first: the transaction finds an unknown user itself (no balance row, and
        // creating one violates its foreign key: `NoUser`), so a charge costs no Redis round trip.
        let outcome = mysql::retry_on_conflict(
            || async {
                // DATETIME(6) keeps microseconds: truncate now so a replayed response equals the first one.
                let now = Utc::now().trunc_subsecs(6);
                Ok::<_, Error>(db::charge(&stores.db, user_id, amount.get(), limits.balance_max, key, now).await?)
            },
            Error::is_lock_conflict,
        )
        .await;
        match outcome {
            Ok(db::ChargeOutcome::Charged(charged)) => Ok(charged),
            Ok(db::ChargeOutcome::Replayed { amount: first, response }) if first == amount.get() => Ok(response),
            Ok(db::ChargeOutcome::Replayed { .. }) => Err(Error::IdempotencyKeyReused),
            Ok(db::ChargeOutcome::OverLimit) => Err(Error::LimitExceeded { max: limits.balance_max }),
            Ok(db::ChargeOutcome::NoUser) => Err(Error::UserNotFound(user_id)),
            Err(e) if e.is_lock_conflict() => {
                tracing::warn!(user.id = %user_id, error = %e, "charge kept losing lock conflicts");
                Err(Error::Contended)
            }
            Err(e) => Err(e),
        }
    }
}
