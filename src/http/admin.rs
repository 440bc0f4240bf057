//! Admin endpoints for operators and load-test set-up; every one requires the bearer token.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ErrorBody, Result};
use super::extract::{Admin, Json};
use crate::product::{self, NewProduct, Product};
use crate::state::AppState;
use crate::user::{self, User, UserName};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_user)).routes(routes!(create_product))
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

#[derive(Deserialize, ToSchema)]
pub struct CreateProduct {
    /// 1..=200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
    /// Won per unit, >= 0.
    #[schema(minimum = 0)]
    #[serde(deserialize_with = "crate::whole::i64")]
    price: i64,
    /// Units available, 0..=2147483647.
    #[schema(minimum = 0, maximum = 2147483647)]
    #[serde(deserialize_with = "crate::whole::i64")]
    stock: i64,
}

/// Creates a product.
#[utoipa::path(post, path = "/admin/products", tag = "admin", security(("admin" = [])), request_body = CreateProduct,
    responses((status = 201, body = Product), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_product(
    _: Admin,
    State(app): State<AppState>,
    Json(req): Json<CreateProduct>,
) -> Result<(StatusCode, axum::Json<Product>)> {
    let new = NewProduct::parse(&req.name, req.price, req.stock)?;
    let product = product::create(&app.stores.db, new).await?;
    Ok((StatusCode::CREATED, axum::Json(product)))
}
