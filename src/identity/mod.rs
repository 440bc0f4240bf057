//! Who is asking: the authenticated user of a request (`AUTH_MODE` `jwt`, `gateway` or `none`), and the per-user
//! and per-address rate limits. The contract is API.md's sections "Identity" and "Rate limits"; the rules and
//! their reasons are in docs/identity.md.
//!
//! This module knows no HTTP framework: the extractors in `http::auth` hand it header values and the peer's
//! address, and it answers with a [`Caller`] or an [`Error`].

pub mod config;
pub mod jwt;
pub mod limits;
pub mod token;

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

pub use self::config::{AuthMode, Config, DEV_JWT_SECRET};
use self::jwt::{Jwt, TokenError};
pub use self::limits::{Limit, Limits};
use crate::id::UserId;

/// Why a request is refused before it reaches its domain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 401 UNAUTHORIZED, `WWW-Authenticate: Bearer`: no credentials where they are needed.
    #[error("this request needs credentials: Authorization: Bearer <token>")]
    MissingCredentials,
    /// 401 UNAUTHORIZED, `WWW-Authenticate: Bearer error="invalid_token"`: a token was sent and refused.
    #[error("the bearer token was refused: {0}")]
    InvalidToken(#[from] TokenError),
    /// 401 UNAUTHORIZED: the gateway's user header came from a peer not in `AUTH_TRUSTED_PROXIES`, or was not an id.
    #[error("the user header is not accepted from this peer, or is not a user id")]
    UntrustedUserHeader,
    /// 403 FORBIDDEN: the request names a user other than the authenticated one.
    #[error("the request acts for user {named}, not for the authenticated user")]
    OtherUser { named: UserId },
    /// 400 INVALID_REQUEST: in `AUTH_MODE=none` the request must name its user.
    #[error("userId is required")]
    UserIdRequired,
    /// 429 TOO_MANY_REQUESTS with `Retry-After`.
    #[error("too many requests ({limit} limit): retry after {retry_after_seconds} s")]
    RateLimited { limit: Limit, retry_after_seconds: u64 },
}

/// Who a request acts for, as far as its credentials tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Authenticated (`jwt` or `gateway`): the request acts for this user only.
    User(UserId),
    /// `AUTH_MODE=none`: nobody is authenticated and the request acts for the user it names.
    Anyone,
}

impl Caller {
    /// The user a request acts for, given the user id its path or body names (if any): 403 for another
    /// user's id, the authenticated user when none is named.
    pub fn acting_for(self, named: Option<UserId>) -> Result<UserId, Error> {
        match (self, named) {
            (Caller::User(user), Some(named)) if named != user => Err(Error::OtherUser { named }),
            (Caller::User(user), _) => Ok(user),
            (Caller::Anyone, Some(named)) => Ok(named),
            (Caller::Anyone, None) => Err(Error::UserIdRequired),
        }
    }

    /// Whether something of `owner` (an order) may be shown to this caller; if not, it is answered as absent.
    pub fn may_see(self, owner: UserId) -> bool {
        match self {
            Caller::User(user) => user == owner,
            Caller::Anyone => true,
        }
    }
}

/// The credentials a request carries, as the HTTP layer found them.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The value of `Authorization`, if any.
    pub authorization: Option<&'a [u8]>,
    /// The value of the gateway's user header (`AUTH_USER_HEADER`), if any.
    pub user_header: Option<&'a [u8]>,
    /// The TCP peer; `None` only where no socket is involved (in-process router calls).
    pub peer: Option<IpAddr>,
}

/// Authentication and rate limits of one instance, shared by every request.
#[derive(Clone)]
pub struct Identity(Arc<Inner>);

struct Inner {
    mode: AuthMode,
    jwt: Option<Jwt>,
    /// The gateway's user header, lower-cased once (header names are case-insensitive).
    user_header: Box<str>,
    trusted_proxies: Vec<IpNet>,
    limits: Limits,
}

/// Why the identity settings cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("AUTH_JWT_SECRET must be at least {min} bytes long (it has {len})", min = config::MIN_SECRET_BYTES)]
    ShortSecret { len: usize },
    #[error("AUTH_MODE=jwt needs AUTH_JWT_SECRET or AUTH_JWT_KEYS: without a key every token would be refused")]
    NoKeys,
    #[error("AUTH_JWT_KEYS {path}: {reason}")]
    Keys { path: String, reason: String },
    #[error("AUTH_USER_HEADER {0:?} is not a valid header name")]
    UserHeader(String),
}

impl Identity {
    /// Builds the identity of an instance; in `jwt` mode the keys are read now, so a bad key file fails the start.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let jwt = match config.auth_mode {
            AuthMode::Jwt => Some(Jwt::new(config)?),
            AuthMode::Gateway | AuthMode::None => None,
        };
        let user_header = config.auth_user_header.to_ascii_lowercase();
        if user_header.is_empty() || !user_header.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
            return Err(ConfigError::UserHeader(config.auth_user_header.clone()));
        }
        Ok(Self(Arc::new(Inner {
            mode: config.auth_mode,
            jwt,
            user_header: user_header.into(),
            trusted_proxies: config.auth_trusted_proxies.clone(),
            limits: Limits::new(&config.limits),
        })))
    }

    /// Verified tokens remembered right now (0 outside `jwt` mode).
    pub fn remembered_tokens(&self) -> usize {
        self.0.jwt.as_ref().map_or(0, Jwt::remembered)
    }

    /// The (lower-case) name of the gateway's user header.
    pub fn user_header(&self) -> &str {
        &self.0.user_header
    }

    /// Who the request is, by the credentials it carries, and whether the user may send one more request
    /// now (`issue` also counts it against the issue limit).
    pub fn authenticate(&self, credentials: Credentials<'_>, issue: bool) -> Result<Caller, Error> {
        let caller = match self.0.mode {
            AuthMode::Jwt => {
                let jwt = self.0.jwt.as_ref().expect("jwt mode has its keys");
                let token = credentials.authorization.and_then(bearer).ok_or(Error::MissingCredentials)?;
                Caller::User(jwt.verify(token)?)
            }
            AuthMode::Gateway => Caller::User(self.gateway_user(credentials)?),
            AuthMode::None => Caller::Anyone,
        };
        if let Caller::User(user) = caller {
            self.0.limits.check_user(user, issue)?;
        }
        Ok(caller)
    }

    /// Gateway mode: the header's user, believed only from a trusted peer.
    fn gateway_user(&self, credentials: Credentials<'_>) -> Result<UserId, Error> {
        let header = credentials.user_header.ok_or(Error::MissingCredentials)?;
        if !credentials.peer.is_some_and(|peer| self.is_trusted(peer)) {
            return Err(Error::UntrustedUserHeader);
        }
        parse_user_id(header).ok_or(Error::UntrustedUserHeader)
    }

    fn is_trusted(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.0.trusted_proxies.iter().any(|net| net.contains(&peer))
    }

    /// The client's address: the peer, or the first untrusted hop of `X-Forwarded-For` (read from the right)
    /// when the peer is a trusted proxy.
    pub fn client_address(&self, peer: IpAddr, forwarded_for: Option<&[u8]>) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let Some(hops) = forwarded_for.and_then(|v| std::str::from_utf8(v).ok()) else { return peer };
        let mut client = peer;
        for hop in hops.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(hop) if self.is_trusted(hop) => client = hop,
                Ok(hop) => return hop,
                // An unparsable hop was written by someone we cannot trust: the last trusted hop is the client.
                Err(_) => return client,
            }
        }
        client
    }

    /// Counts a request of `client` against `RATE_LIMIT_IP`.
    pub fn check_address(&self, client: IpAddr) -> Result<(), Error> {
        self.0.limits.check_address(client)
    }

    /// Forgets idle rate-limit keys and, in `jwt` mode, re-reads `AUTH_JWT_KEYS` when it changes, until
    /// `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let keys = self.0.jwt.clone().map(|jwt| tokio::spawn(jwt.watch_keys(shutdown.clone())));
        self.0.limits.forget_idle(shutdown).await;
        if let Some(keys) = keys {
            let _ = keys.await;
        }
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme is case-insensitive).
fn bearer(value: &[u8]) -> Option<&str> {
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    std::str::from_utf8(token).ok().map(str::trim).filter(|t| !t.is_empty())
}

/// A positive decimal id, as `sub` and the gateway header carry it: digits only, no sign, no spaces.
fn parse_user_id(text: &[u8]) -> Option<UserId> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse::<i64>().ok().and_then(UserId::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_id_is_digits_of_a_positive_i64_only() {
        assert_eq!(parse_user_id(b"42"), UserId::new(42));
        for bad in [&b""[..], b"0", b"-1", b"+1", b" 1", b"1.0", b"9223372036854775808", b"abc"] {
            assert_eq!(parse_user_id(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_caller_acts_for_itself_only() {
        let (me, other) = (UserId::new(1).unwrap(), UserId::new(2).unwrap());
        assert_eq!(Caller::User(me).acting_for(None).unwrap(), me);
        assert_eq!(Caller::User(me).acting_for(Some(me)).unwrap(), me);
        assert!(matches!(Caller::User(me).acting_for(Some(other)), Err(Error::OtherUser { .. })));
        assert_eq!(Caller::Anyone.acting_for(Some(other)).unwrap(), other);
        assert!(matches!(Caller::Anyone.acting_for(None), Err(Error::UserIdRequired)));
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_behind_trusted_proxies_and_else_the_peer() {
        let proxies = |cidrs: &[&str]| {
            let config = Config {
                auth_mode: AuthMode::None,
                auth_trusted_proxies: cidrs.iter().map(|cidr| cidr.parse().unwrap()).collect(),
                ..Config::default()
            };
            Identity::new(&config).unwrap()
        };
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let loopback = proxies(&["127.0.0.0/8"]);
        let hops = Some(&b"203.0.113.7, 10.0.0.1"[..]);
        assert_eq!(loopback.client_address(ip("127.0.0.1"), hops), ip("10.0.0.1"));
        assert_eq!(proxies(&["127.0.0.0/8", "10.0.0.0/8"]).client_address(ip("127.0.0.1"), hops), ip("203.0.113.7"));
        assert_eq!(loopback.client_address(ip("198.51.100.1"), hops), ip("198.51.100.1"), "an untrusted peer's header");
        assert_eq!(loopback.client_address(ip("127.0.0.1"), Some(b"junk")), ip("127.0.0.1"));
        assert_eq!(loopback.client_address(ip("127.0.0.1"), None), ip("127.0.0.1"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_needs_a_token() {
        assert_eq!(bearer(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer(b"bearer abc"), Some("abc"));
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
