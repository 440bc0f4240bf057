//! `AUTH_MODE=jwt`: verifying compact JWS tokens against `AUTH_JWT_SECRET` (HS256) and the public keys of the
//! `AUTH_JWT_KEYS` JWKS file, remembering verified tokens, and re-reading the file when it changes.
//!
//! The algorithm of a token is the one of its key, never the token's own choice: a token without `kid` is
//! checked as HS256 with the secret, a token with `kid` with that key's one algorithm (EdDSA for an Ed25519
//! key, ES256 for P-256, RS256 for RSA). `alg: none`, or HS256 against a public key, fails that check.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::config::{Config, MIN_SECRET_BYTES};
use super::{ConfigError, parse_user_id};
use crate::id::UserId;

/// Longest token looked at; a longer one is refused unread (a real one is a few hundred bytes).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How often `AUTH_JWT_KEYS` is read to see whether it changed. The contract allows 10 s from a key's removal
/// to its refusal; a read of a small file each second costs nothing measurable, and unlike a file watcher it
/// also sees a replacement by rename and a file on a mounted volume.
const KEYS_POLL_PERIOD: Duration = Duration::from_secs(1);

/// Why a token was refused. The messages never quote the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("the token is not a signed JWT")]
    Malformed,
    #[error("the token's kid names no known key")]
    UnknownKey,
    #[error("the token has no kid and no AUTH_JWT_SECRET is configured")]
    NoSecret,
    #[error("the token's signature or algorithm does not match its key")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token lacks a required claim (exp, sub, or the configured iss/aud)")]
    MissingClaim,
    #[error("the token's issuer or audience is not the one expected")]
    WrongIssuerOrAudience,
    #[error("the token's sub is not a user id")]
    BadSubject,
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(error: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match error.kind() {
            K::InvalidSignature | K::InvalidAlgorithm | K::InvalidAlgorithmName | K::InvalidKeyFormat => {
                TokenError::BadSignature
            }
            K::ExpiredSignature => TokenError::Expired,
            K::ImmatureSignature => TokenError::NotYetValid,
            K::MissingRequiredClaim(_) => TokenError::MissingClaim,
            K::InvalidIssuer | K::InvalidAudience => TokenError::WrongIssuerOrAudience,
            K::InvalidSubject => TokenError::BadSubject,
            _ => TokenError::Malformed,
        }
    }
}

/// A key and the one algorithm tokens signed with it must name.
struct Key {
    decoding: DecodingKey,
    validation: Validation,
}

/// The claims looked at; the library checks `exp`, `nbf`, `iss` and `aud` itself.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: Option<u64>,
}

/// A verified token, remembered until its `exp`.
#[derive(Clone, Copy)]
struct Verified {
    user: UserId,
    /// The token's `exp` (Unix seconds): after it the entry is not used, and the token is checked again (the
    /// leeway may still accept it for a few seconds; the cache never does).
    exp: u64,
    /// The key generation it was verified under; an entry of an older one is checked again.
    generation: u64,
}

/// The verifier of one instance.
#[derive(Clone)]
pub struct Jwt(Arc<Inner>);

struct Inner {
    secret: Option<Key>,
    /// The JWKS file's keys by `kid`; replaced whole when the file changes.
    keys: RwLock<Arc<HashMap<String, Key>>>,
    keys_path: Option<PathBuf>,
    /// Bytes of the JWKS file last read, to see a change without parsing.
    keys_file: RwLock<Vec<u8>>,
    /// Bumped on every change of `keys`, before the cache is cleared.
    generation: AtomicU64,
    /// Verified tokens by their SHA-256; cleared when the keys change, so a removed key's tokens are refused.
    /// A verification that raced the change is caught by its entry's generation.
    cache: Option<quick_cache::sync::Cache<[u8; 32], Verified>>,
    leeway: u64,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Jwt {
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let base = Base {
            leeway: config.auth_jwt_leeway.as_secs(),
            issuer: config.auth_jwt_issuer.clone(),
            audience: config.auth_jwt_audience.clone(),
        };
        let secret = match &config.auth_jwt_secret {
            Some(secret) if secret.len() < MIN_SECRET_BYTES => {
                return Err(ConfigError::ShortSecret { len: secret.len() });
            }
            Some(secret) => Some(Key {
                decoding: DecodingKey::from_secret(secret.as_bytes()),
                validation: base.validation(Algorithm::HS256),
            }),
            None => None,
        };
        let (keys, file) = match &config.auth_jwt_keys {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| keys_error(path, e.to_string()))?;
                (parse_jwks(&bytes, &base).map_err(|reason| keys_error(path, reason))?, bytes)
            }
            None if secret.is_none() => return Err(ConfigError::NoKeys),
            None => (HashMap::new(), Vec::new()),
        };
        let cache = (config.auth_token_cache > 0).then(|| quick_cache::sync::Cache::new(config.auth_token_cache));
        Ok(Self(Arc::new(Inner {
            secret,
            keys: RwLock::new(Arc::new(keys)),
            keys_path: config.auth_jwt_keys.clone(),
            keys_file: RwLock::new(file),
            generation: AtomicU64::new(0),
            cache,
            leeway: base.leeway,
            issuer: base.issuer,
            audience: base.audience,
        })))
    }

    /// The user a token proves, from the cache or by checking its signature and claims.
    pub fn verify(&self, token: &str) -> Result<UserId, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let now = jsonwebtoken::get_current_timestamp();
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(cache) = &self.0.cache
            && let Some(verified) = cache.get(&hash)
        {
            if now <= verified.exp && verified.generation == self.0.generation.load(Ordering::Acquire) {
                return Ok(verified.user);
            }
            cache.remove(&hash);
        }
        let verified = self.check(token, now)?;
        if let Some(cache) = &self.0.cache {
            cache.insert(hash, verified);
        }
        Ok(verified.user)
    }

    /// The signature and the claims, without the cache.
    fn check(&self, token: &str, now: u64) -> Result<Verified, TokenError> {
        let header = jsonwebtoken::decode_header(token)?;
        // Read before the keys: a change after this makes the entry stale rather than wrongly fresh.
        let generation = self.0.generation.load(Ordering::Acquire);
        let keys = self.0.keys.read().expect("keys lock").clone();
        let key = match header.kid.as_deref() {
            Some(kid) => keys.get(kid).ok_or(TokenError::UnknownKey)?,
            None => self.0.secret.as_ref().ok_or(TokenError::NoSecret)?,
        };
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation)?.claims;
        if claims.iat.is_some_and(|iat| iat > now.saturating_add(self.0.leeway)) {
            return Err(TokenError::NotYetValid);
        }
        let user = parse_user_id(claims.sub.as_bytes()).ok_or(TokenError::BadSubject)?;
        Ok(Verified { user, exp: claims.exp, generation })
    }

    /// Reads `AUTH_JWT_KEYS` every [`KEYS_POLL_PERIOD`] until `shutdown`, and takes its keys when it changed.
    pub async fn watch_keys(self, shutdown: CancellationToken) {
        if self.0.keys_path.is_none() {
            return;
        }
        let mut ticks = tokio::time::interval(KEYS_POLL_PERIOD);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => self.reload_keys().await,
            }
        }
    }

    /// Re-reads the JWKS file; a file that cannot be read or parsed leaves the keys as they are (a writer
    /// that truncates and rewrites is seen between the two) and is logged.
    async fn reload_keys(&self) {
        let Some(path) = &self.0.keys_path else { return };
        let bytes = match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "AUTH_JWT_KEYS cannot be read; keeping the keys read before");
                return;
            }
        };
        if *self.0.keys_file.read().expect("keys file lock") == bytes {
            return;
        }
        let base = Base { leeway: self.0.leeway, issuer: self.0.issuer.clone(), audience: self.0.audience.clone() };
        match parse_jwks(&bytes, &base) {
            Ok(keys) => {
                let count = keys.len();
                *self.0.keys.write().expect("keys lock") = Arc::new(keys);
                *self.0.keys_file.write().expect("keys file lock") = bytes;
                self.0.generation.fetch_add(1, Ordering::AcqRel);
                // A token remembered under a key that just left must be refused from now on.
                if let Some(cache) = &self.0.cache {
                    cache.clear();
                }
                tracing::info!(path = %path.display(), keys = count, "AUTH_JWT_KEYS read again");
            }
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "AUTH_JWT_KEYS is not a usable JWKS; keeping the keys read before");
            }
        }
    }

    /// Verified tokens remembered right now.
    pub fn remembered(&self) -> usize {
        self.0.cache.as_ref().map_or(0, |cache| cache.len())
    }
}

fn keys_error(path: &std::path::Path, reason: String) -> ConfigError {
    ConfigError::Keys { path: path.display().to_string(), reason }
}

/// What every key's validation shares.
struct Base {
    leeway: u64,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Base {
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // The contract checks `aud` only when one is configured.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

/// The keys of a JWKS document by `kid`. A key without `kid`, of another type or curve, or whose `alg`
/// disagrees with its type is skipped with a warning, so one odd key does not take the others down.
fn parse_jwks(bytes: &[u8], base: &Base) -> Result<HashMap<String, Key>, String> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = HashMap::new();
    for (index, value) in document.keys.into_iter().enumerate() {
        match key_of(value) {
            Ok((kid, algorithm, decoding)) => {
                keys.insert(kid, Key { decoding, validation: base.validation(algorithm) });
            }
            Err(reason) => tracing::warn!(key = index, %reason, "AUTH_JWT_KEYS: key skipped"),
        }
    }
    Ok(keys)
}

fn key_of(value: serde_json::Value) -> Result<(String, Algorithm, DecodingKey), String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let kid = jwk.common.key_id.clone().ok_or("no kid")?;
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        _ => return Err(format!("key {kid:?}: only Ed25519, P-256 and RSA public keys are used")),
    };
    let expected = match algorithm {
        Algorithm::EdDSA => KeyAlgorithm::EdDSA,
        Algorithm::ES256 => KeyAlgorithm::ES256,
        _ => KeyAlgorithm::RS256,
    };
    if let Some(named) = jwk.common.key_algorithm
        && named != expected
    {
        return Err(format!("key {kid:?}: alg {named:?} is not the {algorithm:?} of its key type"));
    }
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
    Ok((kid, algorithm, decoding))
}
