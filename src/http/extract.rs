//! axum's extractors, wrapped so that their rejections use our envelope instead of plain text.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::Error;
use crate::state::AppState;

/// `axum::Json` with the contract's 400/413/415 envelope.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub struct Json<T>(pub T);

/// `axum::extract::Path` with a 400 INVALID_REQUEST envelope.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with a 400 INVALID_REQUEST envelope.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub struct Query<T>(pub T);

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
        if constant_time_eq(presented.as_bytes(), expected.as_bytes()) { Ok(Admin) } else { Err(Error::Unauthorized) }
    }
}

/// Compares without an early exit, so response timing does not reveal how much of the token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
