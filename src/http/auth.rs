//! The identity extractors: [`AuthUser`] (every user-acting route), [`IssuingUser`] (the coupon issue, which
//! has a limit of its own), the per-address limit as a middleware, and [`Admin`]. The rules live in
//! [`crate::identity`]; this file only finds the headers and the peer.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::Error;
use crate::identity::{Caller, Credentials};
use crate::state::AppState;

/// Who a user-acting request is ([`Caller`]), counted against `RATE_LIMIT_USER`.
pub struct AuthUser(pub Caller);

/// [`AuthUser`] for `POST /coupons/{couponId}/issue`, counted against `RATE_LIMIT_ISSUE` too.
pub struct IssuingUser(pub Caller);

fn peer(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())
}

fn authenticate(parts: &Parts, state: &AppState, issue: bool) -> Result<Caller, Error> {
    let identity = &state.identity;
    let credentials = Credentials {
        authorization: parts.headers.get(AUTHORIZATION).map(|v| v.as_bytes()),
        user_header: parts.headers.get(identity.user_header()).map(|v| v.as_bytes()),
        peer: peer(parts),
    };
    Ok(identity.authenticate(credentials, issue)?)
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        authenticate(parts, state, false).map(AuthUser)
    }
}

impl FromRequestParts<AppState> for IssuingUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        authenticate(parts, state, true).map(IssuingUser)
    }
}

/// `RATE_LIMIT_IP` on every `/api/` request: before authentication, so a flood of bad tokens from one
/// address is refused before any signature check.
pub async fn limit_address(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
        && request.uri().path().starts_with("/api/")
    {
        let forwarded = request.headers().get("x-forwarded-for").map(|v| v.as_bytes());
        let client = state.identity.client_address(peer.ip(), forwarded);
        if let Err(refused) = state.identity.check_address(client) {
            return Error::from(refused).into_response();
        }
    }
    next.run(request).await
}

/// Proof that the request carries `Authorization: Bearer <ADMIN_TOKEN>`.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let expected = state.config.admin_token.as_deref().ok_or(Error::Unauthorized)?;
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Error::Unauthorized)?;
        // Compared as hashes, in constant time: neither how much of the token matched nor its length shows in
        // the response time.
        let (presented, expected) = (Sha256::digest(presented.as_bytes()), Sha256::digest(expected.as_bytes()));
        if bool::from(presented.ct_eq(&expected)) { Ok(Admin) } else { Err(Error::Unauthorized) }
    }
}
