//! The identity settings: `AUTH_*` and `RATE_LIMIT_*` (API.md, section Configuration).

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// The HS256 secret `make run` and the load tests use: well known, so `serve` refuses it off loopback.
pub const DEV_JWT_SECRET: &str = "stampede-development-secret-do-not-deploy";

/// Shortest `AUTH_JWT_SECRET` accepted: an HS256 key shorter than its hash output (32 bytes) is guessable
/// faster than the hash is.
pub const MIN_SECRET_BYTES: usize = 32;

/// How a request's user is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuthMode {
    /// `Authorization: Bearer <JWT>`.
    #[default]
    Jwt,
    /// An authenticating gateway's header (`AUTH_USER_HEADER`), believed from `AUTH_TRUSTED_PROXIES` only.
    Gateway,
    /// Nobody is authenticated: the request's `userId` is believed. Loopback only.
    None,
}

/// `AUTH_*` settings.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "auth")]
pub struct Config {
    /// `jwt`, `gateway` or `none` (loopback only).
    #[arg(long, env = "AUTH_MODE", value_enum, default_value_t = AuthMode::Jwt)]
    pub auth_mode: AuthMode,

    /// HS256 key: the variable's bytes as they are, at least 32. Tokens without `kid` are checked with it.
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<String>,

    /// Path of a JWKS file of public keys (Ed25519 `EdDSA`, P-256 `ES256`, RSA `RS256`), chosen by a token's
    /// `kid`; read again when it changes.
    #[arg(long, env = "AUTH_JWT_KEYS")]
    pub auth_jwt_keys: Option<PathBuf>,

    /// Required `iss` of every token, when set.
    #[arg(long, env = "AUTH_JWT_ISSUER")]
    pub auth_jwt_issuer: Option<String>,

    /// Required `aud` of every token, when set.
    #[arg(long, env = "AUTH_JWT_AUDIENCE")]
    pub auth_jwt_audience: Option<String>,

    /// Clock skew allowed on `exp`, `nbf` and `iat` (`30s`, `1m`, or seconds).
    #[arg(long, env = "AUTH_JWT_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub auth_jwt_leeway: Duration,

    /// Verified tokens remembered, so a repeated token costs no signature check: each entry holds the token's
    /// SHA-256, its user and its `exp`, about 101 bytes per entry (docs/identity.md). `0`
    /// remembers none.
    #[arg(long, env = "AUTH_TOKEN_CACHE", default_value_t = 100_000)]
    pub auth_token_cache: usize,

    /// Gateway mode: the header carrying the user id.
    #[arg(long, env = "AUTH_USER_HEADER", default_value = "X-User-Id")]
    pub auth_user_header: String,

    /// Peers whose user header (gateway mode) and `X-Forwarded-For` are believed, as a comma-separated CIDR list.
    #[arg(long, env = "AUTH_TRUSTED_PROXIES", value_delimiter = ',', default_value = "127.0.0.0/8,::1/128")]
    pub auth_trusted_proxies: Vec<IpNet>,

    #[command(flatten)]
    pub limits: super::limits::Config,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            auth_mode: AuthMode::Jwt,
            auth_jwt_secret: None,
            auth_jwt_keys: None,
            auth_jwt_issuer: None,
            auth_jwt_audience: None,
            auth_jwt_leeway: Duration::from_secs(30),
            auth_token_cache: 100_000,
            auth_user_header: "X-User-Id".to_owned(),
            auth_trusted_proxies: vec!["127.0.0.0/8".parse().expect("a CIDR"), "::1/128".parse().expect("a CIDR")],
            limits: super::limits::Config::default(),
        }
    }
}

/// `90`, `90s`, `15m`, `1h`, `2d`: whole seconds, minutes, hours or days.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 30s, 15m or 1h"))?;
    let unit_seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    number.checked_mul(unit_seconds).map(Duration::from_secs).ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_whole_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3_600));
        for bad in ["", "h", "1.5h", "-1s", "1w", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
