//! Batch routes: create many jobs at once, read a batch's counts, cancel a batch.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use oaj_core::JobState;
use oaj_store::{JobAction, JobCursor, JobQuery, JobSort, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::jobs::{job_submit, unprocessable, JobCreate};
use crate::{AppState, PAGE_LIMIT_MAX};

/// Most jobs one batch request creates, so that one insert transaction stays short.
const BATCH_JOBS_MAX: usize = 10_000;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/batches", post(create))
        .route("/v1/batches/{id}", get(fetch))
        .route("/v1/batches/{id}/cancel", post(cancel))
}

/// Jobs to create together. An entry's `depends_on` may name earlier or later entries by their
/// index in `jobs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchCreate {
    /// The jobs, 1 to 10000.
    jobs: Vec<JobCreate>,
}

/// A created batch.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchCreated {
    /// Batch id.
    batch_id: String,
    /// Ids of the new jobs, in request order.
    job_ids: Vec<String>,
}

/// A batch and its jobs counted by state.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchOut {
    /// Batch id.
    id: String,
    /// Number of jobs.
    total: u64,
    /// Jobs by state; states with no job are absent.
    #[schema(value_type = Object)]
    counts: BTreeMap<JobState, u64>,
    /// Whether every job has ended.
    is_finished: bool,
}

/// Creates jobs in one transaction as a batch.
#[utoipa::path(post, path = "/v1/batches", tag = "batches", request_body = BatchCreate,
    responses((status = 201, description = "Created", body = BatchCreated),
        (status = 404, description = "A workflow was not found", body = ApiError),
        (status = 422, description = "An entry is invalid", body = ApiError),
        (status = 415, description = "Content-Type is not application/json", body = ApiError)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<BatchCreate>,
) -> Result<(StatusCode, Json<BatchCreated>), ApiError> {
    if request.jobs.is_empty() || request.jobs.len() > BATCH_JOBS_MAX {
        return Err(unprocessable(
            "batch_size_invalid",
            format!(
                "a batch has {} jobs: expected 1 to {BATCH_JOBS_MAX}",
                request.jobs.len()
            ),
            "/jobs".to_owned(),
        ));
    }
    let mut submits = Vec::with_capacity(request.jobs.len());
    for (index, job) in request.jobs.into_iter().enumerate() {
        submits.push(job_submit(&state, job, &format!("/jobs/{index}")).await?);
    }
    let batch_id = uuid::Uuid::now_v7().to_string();
    let job_ids = state
        .engine
        .job_submit_many(submits, Some(batch_id.clone()))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(BatchCreated { batch_id, job_ids }),
    ))
}

/// Reads a batch's jobs counted by state.
#[utoipa::path(get, path = "/v1/batches/{id}", tag = "batches",
    params(("id" = String, Path, description = "Batch id")),
    responses((status = 200, description = "The batch", body = BatchOut),
        (status = 404, description = "No such batch", body = ApiError)))]
pub(crate) async fn fetch(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BatchOut>, ApiError> {
    let mut counts = BTreeMap::new();
    batch_each(&state, &id, |job| {
        *counts.entry(job.state).or_insert(0) += 1;
    })
    .await?;
    Ok(Json(batch_out(id, counts)?))
}

fn batch_out(id: String, counts: BTreeMap<JobState, u64>) -> Result<BatchOut, ApiError> {
    let total = counts.values().sum();
    if total == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "batch_not_found",
            format!("batch {id} not found"),
        ));
    }
    let is_finished = counts.keys().all(|state| state.is_final());
    Ok(BatchOut {
        id,
        total,
        counts,
        is_finished,
    })
}

/// Cancels every job of a batch that has not ended, and returns the batch afterwards.
#[utoipa::path(post, path = "/v1/batches/{id}/cancel", tag = "batches",
    params(("id" = String, Path, description = "Batch id")),
    responses((status = 200, description = "The batch afterwards", body = BatchOut),
        (status = 404, description = "No such batch", body = ApiError)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BatchOut>, ApiError> {
    let mut open = Vec::new();
    batch_each(&state, &id, |job| {
        if !job.state.is_final() {
            open.push(job.id.clone());
        }
    })
    .await?;
    let now = state.now_ms();
    for job_id in open {
        match state
            .store()
            .job_action(&job_id, JobAction::Cancel, now)
            .await
        {
            // The job ended or was deleted since it was listed, which is what cancel wants.
            Ok(_) | Err(StoreError::JobStateConflict { .. } | StoreError::JobNotFound(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    fetch(State(state), Path(id)).await
}

/// Visits every job of a batch, a page at a time.
async fn batch_each(
    state: &AppState,
    batch_id: &str,
    mut visit: impl FnMut(&oaj_store::Job),
) -> Result<(), ApiError> {
    let mut after = None;
    loop {
        let query = JobQuery {
            batch_id: Some(batch_id.to_owned()),
            sort: JobSort::CreatedAsc,
            after: after.take(),
            limit: PAGE_LIMIT_MAX,
            ..JobQuery::default()
        };
        let jobs = state.store().job_query(query).await?;
        jobs.iter().for_each(&mut visit);
        match jobs.last() {
            Some(last) if jobs.len() == PAGE_LIMIT_MAX as usize => {
                after = Some(JobCursor::after(last, JobSort::CreatedAsc));
            }
            _ => return Ok(()),
        }
    }
}
