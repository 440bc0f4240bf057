//! axum's extractors, wrapped so that their rejections use our envelope instead of plain text. The identity
//! extractors are in [`super::auth`].

use axum::extract::{FromRequest, FromRequestParts};

use super::error::Error;

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
