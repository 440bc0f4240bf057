//! `/users/{userId}/balance`: read, charge (optionally idempotent) and history, for the authenticated user only.

use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::AuthUser;
use super::error::{ErrorBody, Result};
use super::extract::{Json, Path, Query};
use crate::balance::{Balance, Charged, History, IdempotencyKey};
use crate::id::UserId;
use crate::state::AppState;

/// The optional header that makes a charge safe to retry.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// History page size when `limit` is absent.
const DEFAULT_HISTORY_LIMIT: u32 = 20;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_balance))
        .routes(routes!(charge_balance))
        .routes(routes!(list_balance_history))
}

/// The balance; 0 for a user who never charged.
#[utoipa::path(get, path = "/users/{userId}/balance", tag = "balance", security(("bearer" = [])),
    params(("userId" = i64, Path, description = "User id", minimum = 1)),
    responses((status = 200, body = Balance), (status = 400, body = ErrorBody),
        (status = 403, description = "FORBIDDEN: another user's balance", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_balance(
    AuthUser(caller): AuthUser,
    State(app): State<AppState>,
    Path(user_id): Path<UserId>,
) -> Result<axum::Json<Balance>> {
    Ok(axum::Json(app.balances.get(caller.acting_for(Some(user_id))?).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct ChargeRequest {
    /// Won to add, within the configured range (default 1..=10,000,000).
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "crate::whole::i64")]
    amount: i64,
}

/// Adds to the balance. With `Idempotency-Key`, a retry returns the first response and charges once.
#[utoipa::path(post, path = "/users/{userId}/balance/charge", tag = "balance", request_body = ChargeRequest,
    security(("bearer" = [])),
    params(("userId" = i64, Path, description = "User id", minimum = 1),
        ("Idempotency-Key" = Option<String>, Header, description = "Up to 128 printable ASCII characters")),
    responses((status = 200, body = Charged), (status = 400, body = ErrorBody),
        (status = 403, description = "FORBIDDEN: another user's balance", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn charge_balance(
    AuthUser(caller): AuthUser,
    State(app): State<AppState>,
    Path(user_id): Path<UserId>,
    headers: HeaderMap,
    Json(req): Json<ChargeRequest>,
) -> Result<axum::Json<Charged>> {
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .map(|value| IdempotencyKey::parse(value.to_str().unwrap_or_default()))
        .transpose()?;
    Ok(axum::Json(app.balances.charge(caller.acting_for(Some(user_id))?, req.amount, key.as_ref()).await?))
}

#[derive(Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// Entries to return, 1..=1000 (default 20).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Balance changes, newest first.
#[utoipa::path(get, path = "/users/{userId}/balance/history", tag = "balance", security(("bearer" = [])),
    params(("userId" = i64, Path, description = "User id", minimum = 1), HistoryQuery),
    responses((status = 200, body = History), (status = 400, body = ErrorBody),
        (status = 403, description = "FORBIDDEN: another user's balance", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn list_balance_history(
    AuthUser(caller): AuthUser,
    State(app): State<AppState>,
    Path(user_id): Path<UserId>,
    Query(query): Query<HistoryQuery>,
) -> Result<axum::Json<History>> {
    let limit = query.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    Ok(axum::Json(app.balances.history(caller.acting_for(Some(user_id))?, limit).await?))
}
