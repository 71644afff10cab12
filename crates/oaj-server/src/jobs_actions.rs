//! User actions on a job: cancel, pause, resume, retry, approve and reject.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use oaj_store::{ApprovalDecide, ApprovalDecision, Job, JobAction};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::jobs::job_load;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/pause", post(pause))
        .route("/v1/jobs/{id}/resume", post(resume))
        .route("/v1/jobs/{id}/retry", post(retry))
        .route("/v1/jobs/{id}/approve", post(approve))
        .route("/v1/jobs/{id}/reject", post(reject))
}

async fn act(state: &AppState, id: &str, action: JobAction) -> Result<Json<Job>, ApiError> {
    let job = state.store().job_action(id, action, state.now_ms()).await?;
    Ok(Json(job))
}

/// Cancels a job: at once when no worker holds it, otherwise the worker stops its attempts.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "job actions",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The job afterwards", body = Job),
        (status = 404, description = "No such job", body = ApiError),
        (status = 409, description = "The job has ended", body = ApiError)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    act(&state, &id, JobAction::Cancel).await
}

/// Pauses a job: no new attempt starts, and running attempts finish.
#[utoipa::path(post, path = "/v1/jobs/{id}/pause", tag = "job actions",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The job afterwards", body = Job),
        (status = 404, description = "No such job", body = ApiError),
        (status = 409, description = "The job cannot be paused now", body = ApiError)))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    act(&state, &id, JobAction::Pause).await
}

/// Resumes a paused job from its saved step results.
#[utoipa::path(post, path = "/v1/jobs/{id}/resume", tag = "job actions",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The job afterwards", body = Job),
        (status = 404, description = "No such job", body = ApiError),
        (status = 409, description = "The job is not paused", body = ApiError)))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    act(&state, &id, JobAction::Resume).await
}

/// Runs a failed or cancelled job again; completed step runs are kept.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "job actions",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The job afterwards", body = Job),
        (status = 404, description = "No such job", body = ApiError),
        (status = 409, description = "The job has not failed or been cancelled", body = ApiError)))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    act(&state, &id, JobAction::Retry).await
}

/// An approval decision; every field is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Decision {
    /// The approval step; may be left out while exactly one step waits.
    step: Option<String>,
    /// Who decides, recorded as given.
    by: Option<String>,
    /// Free-text reason.
    comment: Option<String>,
}

/// Approves the step of a job that waits for approval.
#[utoipa::path(post, path = "/v1/jobs/{id}/approve", tag = "job actions",
    params(("id" = String, Path, description = "Job id")), request_body = Decision,
    responses((status = 200, description = "The job afterwards", body = Job),
        (status = 404, description = "No such job", body = ApiError),
        (status = 409, description = "No step waits for approval", body = ApiError),
        (status = 422, description = "Several steps wait: name one", body = ApiError),
        (status = 415, description = "Content-Type is not application/json", body = ApiError)))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(decision): ApiJson<Decision>,
) -> Result<Json<Job>, ApiError> {
    decide(&state, id, decision, true).await
}

/// Rejects the step of a job that waits for approval.
#[utoipa::path(post, path = "/v1/jobs/{id}/reject", tag = "job actions",
    params(("id" = String, Path, description = "Job id")), request_body = Decision,
    responses((status = 200, description = "The job afterwards", body = Job),
        (status = 404, description = "No such job", body = ApiError),
        (status = 409, description = "No step waits for approval", body = ApiError),
        (status = 422, description = "Several steps wait: name one", body = ApiError),
        (status = 415, description = "Content-Type is not application/json", body = ApiError)))]
pub(crate) async fn reject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(decision): ApiJson<Decision>,
) -> Result<Json<Job>, ApiError> {
    decide(&state, id, decision, false).await
}

async fn decide(
    state: &AppState,
    id: String,
    decision: Decision,
    approved: bool,
) -> Result<Json<Job>, ApiError> {
    job_load(state, &id).await?;
    let decide = ApprovalDecide {
        job_id: id.clone(),
        step_id: decision.step,
        decision: ApprovalDecision {
            approved,
            by: decision.by,
            comment: decision.comment,
            at: state.now_ms(),
        },
    };
    state.store().approval_decide(decide).await?;
    Ok(Json(job_load(state, &id).await?))
}
