//! The error envelope `{"code", "message"}` and the single place where every domain error becomes a status
//! and a contract code.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thiserror::Error;

use crate::store::StoreError;
use crate::{balance, coupon, identity, order, product, ranking, user};

/// What handlers return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable code such as `SOLD_OUT`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

/// Every way a request can fail, from HTTP framing to the domains.
#[derive(Debug, Error)]
pub enum Error {
    /// 400 INVALID_REQUEST: malformed path, query or body.
    #[error("{0}")]
    InvalidRequest(String),
    /// 401 UNAUTHORIZED (`WWW-Authenticate: Bearer`): missing or wrong admin bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// 404 NOT_FOUND: no such route.
    #[error("no route for this path")]
    RouteNotFound,
    /// 405 METHOD_NOT_ALLOWED: the route exists with other methods.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// 413 PAYLOAD_TOO_LARGE: body over 64 KiB.
    #[error("request body is larger than 64 KiB")]
    PayloadTooLarge,
    /// 415 UNSUPPORTED_MEDIA_TYPE: a body sent without `Content-Type: application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// 500 INTERNAL_ERROR: a handler panicked.
    #[error("internal error")]
    Panic,
    /// 400, 401, 403 or 429: see [`identity::Error`].
    #[error(transparent)]
    Identity(#[from] identity::Error),
    #[error(transparent)]
    User(#[from] user::Error),
    #[error(transparent)]
    Product(#[from] product::Error),
    #[error(transparent)]
    Coupon(#[from] coupon::Error),
    #[error(transparent)]
    Balance(#[from] balance::Error),
    #[error(transparent)]
    Order(#[from] order::Error),
    #[error(transparent)]
    Ranking(#[from] ranking::Error),
    /// 503 SERVICE_UNAVAILABLE or 500, depending on the failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// Status, code and client message: the one mapping of errors to the contract.
    fn parts(&self) -> (StatusCode, &'static str, String) {
        use StatusCode as S;
        let message = self.to_string();
        match self {
            Error::InvalidRequest(_) => (S::BAD_REQUEST, "INVALID_REQUEST", message),
            Error::Unauthorized => (S::UNAUTHORIZED, "UNAUTHORIZED", message),
            Error::RouteNotFound => (S::NOT_FOUND, "NOT_FOUND", message),
            Error::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", message),
            Error::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", message),
            Error::UnsupportedMediaType => (S::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE", message),
            Error::Panic => (S::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", message),
            Error::Identity(e) => match e {
                identity::Error::MissingCredentials
                | identity::Error::InvalidToken(_)
                | identity::Error::UntrustedUserHeader => (S::UNAUTHORIZED, "UNAUTHORIZED", message),
                identity::Error::OtherUser { .. } => (S::FORBIDDEN, "FORBIDDEN", message),
                identity::Error::UserIdRequired => (S::BAD_REQUEST, "INVALID_REQUEST", message),
                identity::Error::RateLimited { .. } => (S::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS", message),
            },
            Error::User(e) => match e {
                user::Error::NotFound(_) => (S::NOT_FOUND, "USER_NOT_FOUND", message),
                user::Error::Invalid(_) => (S::BAD_REQUEST, "INVALID_REQUEST", message),
                user::Error::Store(e) => store_parts(e),
            },
            Error::Product(e) => match e {
                product::Error::NotFound(_) => (S::NOT_FOUND, "PRODUCT_NOT_FOUND", message),
                product::Error::OptionNotFound { .. } => (S::NOT_FOUND, "OPTION_NOT_FOUND", message),
                product::Error::OptionNameTaken { .. } => (S::CONFLICT, "OPTION_NAME_TAKEN", message),
                product::Error::Invalid(_) => (S::BAD_REQUEST, "INVALID_REQUEST", message),
                product::Error::Store(e) => store_parts(e),
            },
            Error::Coupon(e) => match e {
                coupon::Error::NotFound(_) => (S::NOT_FOUND, "COUPON_NOT_FOUND", message),
                coupon::Error::UserNotFound(_) => (S::NOT_FOUND, "USER_NOT_FOUND", message),
                coupon::Error::Invalid(_) => (S::BAD_REQUEST, "INVALID_REQUEST", message),
                coupon::Error::AlreadyIssued { .. } => (S::CONFLICT, "ALREADY_ISSUED", message),
                coupon::Error::SoldOut(_) => (S::GONE, "SOLD_OUT", message),
                coupon::Error::NotActive(_) => (S::UNPROCESSABLE_ENTITY, "COUPON_NOT_ACTIVE", message),
                coupon::Error::Store(e) => store_parts(e),
            },
            Error::Balance(e) => match e {
                balance::Error::InvalidAmount { .. } => (S::BAD_REQUEST, "INVALID_AMOUNT", message),
                balance::Error::Invalid(_) => (S::BAD_REQUEST, "INVALID_REQUEST", message),
                balance::Error::UserNotFound(_) => (S::NOT_FOUND, "USER_NOT_FOUND", message),
                balance::Error::LimitExceeded { .. } => (S::UNPROCESSABLE_ENTITY, "BALANCE_LIMIT_EXCEEDED", message),
                balance::Error::IdempotencyKeyReused => (S::CONFLICT, "IDEMPOTENCY_KEY_REUSED", message),
                balance::Error::Contended => (S::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", message),
                balance::Error::Store(e) => store_parts(e),
            },
            Error::Order(e) => match e {
                order::Error::Invalid(_) => (S::BAD_REQUEST, "INVALID_ORDER", message),
                order::Error::UserNotFound(_) => (S::NOT_FOUND, "USER_NOT_FOUND", message),
                order::Error::ProductNotFound(_) => (S::NOT_FOUND, "PRODUCT_NOT_FOUND", message),
                order::Error::OptionNotFound { .. } => (S::NOT_FOUND, "OPTION_NOT_FOUND", message),
                order::Error::OutOfStock { .. } => (S::CONFLICT, "OUT_OF_STOCK", message),
                order::Error::CouponUnavailable(_) => (S::CONFLICT, "COUPON_UNAVAILABLE", message),
                order::Error::InsufficientBalance(_) => (S::CONFLICT, "INSUFFICIENT_BALANCE", message),
                order::Error::NotFound(_) => (S::NOT_FOUND, "ORDER_NOT_FOUND", message),
                order::Error::NotPayable(_) => (S::CONFLICT, "ORDER_NOT_PAYABLE", message),
                order::Error::Contended => (S::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", message),
                order::Error::Store(e) => store_parts(e),
            },
            Error::Ranking(e) => match e {
                ranking::Error::Invalid(_) => (S::BAD_REQUEST, "INVALID_REQUEST", message),
                ranking::Error::RebuildContended(_) | ranking::Error::RefreshContended(_) => {
                    tracing::error!(error = %e, "ranking rebuild or refresh failed");
                    (S::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "internal error".to_owned())
                }
                ranking::Error::Store(e) => store_parts(e),
            },
            Error::Store(e) => store_parts(e),
        }
    }
}

/// What every 503 tells the client to wait before retrying: the stores reconnect within about a second
/// (see `store::redis`), and a longer hint would only idle clients once they are back.
const RETRY_AFTER_SECONDS: u32 = 1;

/// A store failure never leaks details to the client; it is logged once here, inside the request span.
fn store_parts(error: &StoreError) -> (StatusCode, &'static str, String) {
    metrics::counter!("store_errors_total", "store" => error.store()).increment(1);
    if error.is_unavailable() {
        tracing::warn!(store = error.store(), error = %error, "store unavailable");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            format!("{} is unavailable, retry later", error.store()),
        )
    } else {
        tracing::error!(store = error.store(), error = ?error, "store failure");
        (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "internal error".to_owned())
    }
}

impl Error {
    /// The header a status needs beside the body: `WWW-Authenticate` on a 401, `Retry-After` on a 429 or 503.
    fn header(&self, status: StatusCode) -> Option<(axum::http::HeaderName, HeaderValue)> {
        match (self, status) {
            (Error::Identity(identity::Error::InvalidToken(_)), _) => {
                Some((WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer error="invalid_token""#)))
            }
            (_, StatusCode::UNAUTHORIZED) => Some((WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))),
            (Error::Identity(identity::Error::RateLimited { retry_after_seconds, .. }), _) => {
                Some((RETRY_AFTER, (*retry_after_seconds).into()))
            }
            (_, StatusCode::SERVICE_UNAVAILABLE) => Some((RETRY_AFTER, RETRY_AFTER_SECONDS.into())),
            _ => None,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let header = self.header(status);
        let mut response = (status, Json(ErrorBody { code, message })).into_response();
        if let Some((name, value)) = header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Error::UnsupportedMediaType,
            JsonRejection::BytesRejection(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge,
            other => Error::InvalidRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for Error {
    fn from(rejection: PathRejection) -> Self {
        Error::InvalidRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for Error {
    fn from(rejection: QueryRejection) -> Self {
        Error::InvalidRequest(rejection.body_text())
    }
}
