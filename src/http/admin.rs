//! Admin endpoint for users (operators and load-test set-up); it requires the bearer token. The other admin
//! endpoints live with their resource: products, coupons, the ranking refresh.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Admin;
use super::error::{ErrorBody, Result};
use super::extract::Json;
use crate::state::AppState;
use crate::user::{self, User, UserName};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_user))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateUser {
    /// 1..=100 characters, not only spaces.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    name: String,
}

/// Creates a user.
#[utoipa::path(post, path = "/admin/users", tag = "admin", security(("admin" = [])), request_body = CreateUser,
    responses((status = 201, body = User), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_user(
    _: Admin,
    State(app): State<AppState>,
    Json(req): Json<CreateUser>,
) -> Result<(StatusCode, axum::Json<User>)> {
    let user = user::create(&app.stores, UserName::parse(&req.name)?).await?;
    Ok((StatusCode::CREATED, axum::Json(user)))
}
