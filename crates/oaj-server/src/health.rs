//! Liveness, readiness, and the answers for unknown routes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::AppState;

/// The body of the health and readiness checks.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Status {
    /// `ok`, or `shutting_down` while the server drains.
    status: &'static str,
}

/// Reports that the process serves requests. It needs no token.
#[utoipa::path(get, path = "/v1/health", tag = "health",
    responses((status = 200, description = "The server is up", body = Status)))]
pub(crate) async fn health() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Reports whether the server can do work: the store passes its readiness check (a read, and on
/// SQLite a running writer thread), and no shutdown started.
#[utoipa::path(get, path = "/v1/ready", tag = "health",
    responses((status = 200, description = "Ready", body = Status),
        (status = 503, description = "Shutting down or the store fails", body = ApiError)))]
pub(crate) async fn ready(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        ));
    }
    if let Err(error) = state.store().ready_check().await {
        tracing::warn!(error = %error, "readiness check failed to read the store");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store does not answer",
        ));
    }
    Ok(Json(Status { status: "ok" }))
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no route matches this path: see /v1/openapi.json",
    )
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept the method: see /v1/openapi.json",
    )
}
