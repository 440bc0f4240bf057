//! Minting HS256 tokens with `AUTH_JWT_SECRET`: `stampede token`, the tests and the load tests.

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use crate::id::UserId;

/// The claims of a minted token.
#[derive(Serialize)]
struct Claims {
    sub: String,
    iat: u64,
    exp: u64,
}

/// An HS256 token for `user`, valid from now for `ttl`.
pub fn mint(secret: &[u8], user: UserId, ttl: Duration) -> String {
    let iat = jsonwebtoken::get_current_timestamp();
    let claims = Claims { sub: user.to_string(), iat, exp: iat.saturating_add(ttl.as_secs()) };
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret))
        .expect("HS256 signing of plain claims cannot fail")
}
