//! Liveness and readiness probes, and the Prometheus scrape endpoint.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fred::prelude::*;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

/// A readiness check that takes longer than this counts as failed: a load balancer must not wait on us.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(live)).routes(routes!(ready)).routes(routes!(metrics))
}

#[derive(Serialize, ToSchema)]
pub struct Live {
    status: &'static str,
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/health/live", tag = "operations", responses((status = 200, body = Live)))]
async fn live() -> axum::Json<Live> {
    axum::Json(Live { status: "ok" })
}

/// Each dependency's state: `ok` or what went wrong.
#[derive(Serialize, ToSchema)]
pub struct Checks {
    redis: String,
    mysql: String,
}

/// Readiness; on failure it is the error envelope plus the checks.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    checks: Checks,
}

/// 200 when Redis and MySQL answer; 503 naming the one that failed.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses((status = 200, body = Ready), (status = 503, body = Ready)))]
async fn ready(State(app): State<AppState>) -> Response {
    let redis = check(async { app.stores.redis.client().ping::<String>(None).await.map(drop) });
    let mysql = check(async { sqlx::query("SELECT 1").execute(&app.stores.db).await.map(drop) });
    let (redis, mysql) = tokio::join!(redis, mysql);
    let failed: Vec<&str> = [("redis", &redis), ("mysql", &mysql)]
        .into_iter()
        .filter(|(_, state)| *state != "ok")
        .map(|(name, _)| name)
        .collect();
    let checks = Checks { redis, mysql };
    if failed.is_empty() {
        return axum::Json(Ready { status: "ok", code: None, message: None, checks }).into_response();
    }
    let body = Ready {
        status: "unavailable",
        code: Some("SERVICE_UNAVAILABLE"),
        message: Some(format!("not answering: {}", failed.join(", "))),
        checks,
    };
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

async fn check<E: std::fmt::Display>(probe: impl Future<Output = Result<(), E>>) -> String {
    match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => format!("timeout after {} ms", CHECK_TIMEOUT.as_millis()),
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::metrics().render())
}
