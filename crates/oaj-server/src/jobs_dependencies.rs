//! Changes to a job's dependencies after it was created, and the list of jobs that wait for it.

use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use oaj_store::{DependencyChange, Job, StoreError};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs/{id}/dependencies", post(add))
        .route("/v1/jobs/{id}/dependencies/{dep}", delete(remove))
        .route("/v1/jobs/{id}/dependents", get(dependents))
}

/// A dependency to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DependencyNew {
    /// Id of the job that must end first.
    depends_on: String,
}

/// Makes a job wait for another job. The job must not have started: it is created, pending,
/// queued or paused. A dependency that already completed counts as met. One that failed or was
/// cancelled fails the job unless its `on_dependency_failure` is `run`. Adding a dependency
/// that is already stored changes nothing.
#[utoipa::path(post, path = "/v1/jobs/{id}/dependencies", tag = "job dependencies",
    params(("id" = String, Path, description = "Id of the job that waits")),
    request_body = DependencyNew,
    responses((status = 200, description = "The job afterwards", body = Job),
        (status = 404, description = "No job has one of the ids (code job_not_found)",
            body = ApiError),
        (status = 409, description = "The job is running or has ended (job_state_conflict), or \
            the dependency would close a cycle (dependency_cycle)", body = ApiError),
        (status = 415, description = "Content-Type is not application/json", body = ApiError)))]
pub(crate) async fn add(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DependencyNew>,
) -> Result<Json<Job>, ApiError> {
    let change = DependencyChange {
        job_id: id.clone(),
        depends_on_id: body.depends_on.clone(),
        now: state.now_ms(),
    };
    match state.store().job_dependency_add(change).await {
        Ok(job) => Ok(Json(job)),
        // Point at the body when the unknown id is the one it names.
        Err(StoreError::JobNotFound(missing)) if missing != id => {
            Err(ApiError::job_not_found(&missing).at("/depends_on"))
        }
        Err(error) => Err(error.into()),
    }
}

/// Removes a dependency. A pending job whose other dependencies are all met, and whose `run_at`
/// has come, is queued.
#[utoipa::path(delete, path = "/v1/jobs/{id}/dependencies/{dep}", tag = "job dependencies",
    params(("id" = String, Path, description = "Id of the job that waits"),
        ("dep" = String, Path, description = "Id of the dependency to remove")),
    responses((status = 200, description = "The job afterwards", body = Job),
        (status = 404, description = "No such job (job_not_found), or the job does not depend \
            on `dep` (dependency_not_found)", body = ApiError),
        (status = 409, description = "The job is running or has ended (job_state_conflict)",
            body = ApiError)))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Path((id, dep)): Path<(String, String)>,
) -> Result<Json<Job>, ApiError> {
    let change = DependencyChange {
        job_id: id,
        depends_on_id: dep,
        now: state.now_ms(),
    };
    Ok(Json(state.store().job_dependency_remove(change).await?))
}

/// Lists the jobs that depend on a job, in any state, oldest first.
#[utoipa::path(get, path = "/v1/jobs/{id}/dependents", tag = "job dependencies",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "Jobs that depend on the job", body = [Job]),
        (status = 404, description = "No such job", body = ApiError)))]
pub(crate) async fn dependents(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Job>>, ApiError> {
    Ok(Json(state.store().job_dependents(&id).await?))
}
