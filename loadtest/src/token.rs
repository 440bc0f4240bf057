//! User tokens: HS256 JWTs signed with the server's `AUTH_JWT_SECRET`, as `stampede token` makes them, one per
//! user the load test acts for. Minted at set-up, so no signing shows in the measured requests.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Long enough for any run; the server refuses a token past its `exp`.
const TTL_SECONDS: u64 = 24 * 3_600;

#[derive(Serialize)]
struct Claims {
    sub: String,
    iat: u64,
    exp: u64,
}

/// A token proving `user_id` to a server checking tokens with `secret`.
pub fn mint(secret: &str, user_id: i64) -> String {
    let iat = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let claims = Claims { sub: user_id.to_string(), iat, exp: iat + TTL_SECONDS };
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("HS256 signing of plain claims")
}
