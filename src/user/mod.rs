//! Users: creation (admin, seed) and the existence check that hot paths make without touching MySQL.

pub mod cache;
pub mod db;

use serde::Serialize;
use thiserror::Error;

use crate::id::UserId;
use crate::store::{StoreError, Stores};

/// Why a user operation failed.
#[derive(Debug, Error)]
pub enum Error {
    #[error("user {0} not found")]
    NotFound(UserId),
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

crate::store::store_error_conversions!(Error);

/// A display name: 1..=100 characters after trimming.
#[derive(Debug, Clone)]
pub struct UserName(String);

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let name = raw.trim();
        match name.chars().count() {
            0 => Err(Error::Invalid("name must not be empty")),
            1..=100 => Ok(Self(name.to_owned())),
            _ => Err(Error::Invalid("name must be at most 100 characters")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored user.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub name: String,
}

/// Stores a user and remembers it in the Redis existence index.
pub async fn create(stores: &Stores, name: UserName) -> Result<User, Error> {
    let id = db::insert(&stores.db, &name).await?;
    cache::remember(&stores.redis, &[id]).await?;
    Ok(User { id, name: name.0 })
}

/// `Ok` when the user exists. Answered by Redis once the user is known there, so the coupon path does not
/// query MySQL in steady state; an unknown id falls back to MySQL, so a lost Redis never loses a user. So
/// does a Redis that cannot answer (down, or the cluster master holding the index): MySQL knows every user,
/// and the request may not need Redis otherwise (a coupon on another master).
pub async fn ensure_exists(stores: &Stores, id: UserId) -> Result<(), Error> {
    let known = match cache::is_known(&stores.redis, id).await.map_err(StoreError::from) {
        Ok(known) => Some(known),
        Err(error) if error.is_unavailable() => None,
        Err(error) => return Err(error.into()),
    };
    if known == Some(true) {
        return Ok(());
    }
    if !db::exists(&stores.db, id).await? {
        return Err(Error::NotFound(id));
    }
    if known.is_some() {
        cache::remember(&stores.redis, &[id]).await?;
    }
    Ok(())
}

/// [`ensure_exists`] behind the in-process mirror: the hot coupon path's check, usually no round trip.
pub async fn ensure_known(stores: &Stores, known: &cache::KnownUsers, id: UserId) -> Result<(), Error> {
    if known.contains(id) {
        return Ok(());
    }
    ensure_exists(stores, id).await?;
    known.insert(id);
    Ok(())
}

/// Lets a domain error enum with `UserNotFound(UserId)`, `Invalid(..)` and `Store(StoreError)` variants
/// take a [`user::Error`](Error) with `?`.
macro_rules! user_error_conversions {
    ($error:ty) => {
        impl From<$crate::user::Error> for $error {
            fn from(e: $crate::user::Error) -> Self {
                match e {
                    $crate::user::Error::NotFound(id) => Self::UserNotFound(id),
                    $crate::user::Error::Invalid(why) => Self::Invalid(why.into()),
                    $crate::user::Error::Store(e) => Self::Store(e),
                }
            }
        }
    };
}
pub(crate) use user_error_conversions;
