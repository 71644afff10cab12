//! The worker list, derived from the leases of running jobs.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use oaj_core::JobState;
use oaj_store::{JobCursor, JobQuery, JobSort};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::{AppState, PAGE_LIMIT_MAX};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/workers", get(list))
}

/// A worker that holds at least one job.
#[derive(Debug, Default, Serialize, ToSchema)]
pub(crate) struct WorkerOut {
    /// Worker id, as written in leases.
    id: String,
    /// Jobs it holds.
    job_ids: Vec<String>,
    /// The latest lease expiry among its jobs: the worker's last heartbeat plus the lease
    /// length, in milliseconds since the Unix epoch.
    lease_expires_at: Option<i64>,
}

/// Lists workers that hold running jobs, with the jobs and the latest lease expiry.
///
/// TODO(workers): idle workers are not listed, because the store keeps no worker heartbeats yet;
/// add a `workers` table written by the engine's heartbeat.
#[utoipa::path(get, path = "/v1/workers", tag = "workers",
    responses((status = 200, description = "Workers with running jobs", body = [WorkerOut])))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Vec<WorkerOut>>, ApiError> {
    let mut workers: BTreeMap<String, WorkerOut> = BTreeMap::new();
    let mut after = None;
    loop {
        let query = JobQuery {
            states: vec![JobState::Running],
            sort: JobSort::CreatedAsc,
            after: after.take(),
            limit: PAGE_LIMIT_MAX,
            ..JobQuery::default()
        };
        let jobs = state.store().job_query(query).await?;
        for job in &jobs {
            let Some(owner) = &job.lease_owner else {
                continue;
            };
            let worker = workers.entry(owner.clone()).or_insert_with(|| WorkerOut {
                id: owner.clone(),
                ..WorkerOut::default()
            });
            worker.job_ids.push(job.id.clone());
            worker.lease_expires_at = worker.lease_expires_at.max(job.lease_expires_at);
        }
        match jobs.last() {
            Some(last) if jobs.len() == PAGE_LIMIT_MAX as usize => {
                after = Some(JobCursor::after(last, JobSort::CreatedAsc));
            }
            _ => break,
        }
    }
    Ok(Json(workers.into_values().collect()))
}
