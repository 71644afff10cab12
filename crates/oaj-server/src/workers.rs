//! The worker list: workers from their heartbeats, with the jobs each holds from the leases of
//! running jobs.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use oaj_core::JobState;
use oaj_store::{JobCursor, JobQuery, JobSort, WorkerRecord};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::{AppState, PAGE_LIMIT_MAX};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/workers", get(list))
}

/// A worker seen in the last hour, or one that holds a lease without a stored heartbeat. The
/// heartbeat fields are `null` for the latter, such as an engine that has not yet written its
/// first heartbeat.
#[derive(Debug, Default, Serialize, ToSchema)]
pub(crate) struct WorkerOut {
    /// Worker id, as written in leases.
    id: String,
    /// Host name of the machine it runs on.
    hostname: Option<String>,
    /// Operating system process id.
    pid: Option<u32>,
    /// When the worker process started, in milliseconds since the Unix epoch.
    started_at: Option<i64>,
    /// Time of its latest heartbeat, in milliseconds since the Unix epoch. Engines write one
    /// every five seconds.
    last_seen: Option<i64>,
    /// Jobs it held at its latest heartbeat.
    running: Option<u32>,
    /// Jobs it holds now, from the leases of running jobs.
    job_ids: Vec<String>,
    /// The latest lease expiry among its jobs, in milliseconds since the Unix epoch.
    lease_expires_at: Option<i64>,
}

impl From<WorkerRecord> for WorkerOut {
    fn from(record: WorkerRecord) -> WorkerOut {
        WorkerOut {
            id: record.worker_id,
            hostname: Some(record.hostname),
            pid: Some(record.pid),
            started_at: Some(record.started_at),
            last_seen: Some(record.last_seen),
            running: Some(record.running),
            ..WorkerOut::default()
        }
    }
}

/// Lists workers by id: every worker with a heartbeat in the last hour, idle ones included, and
/// every worker that holds a running job, with the jobs it holds.
#[utoipa::path(get, path = "/v1/workers", tag = "workers",
    responses((status = 200, description = "Workers by id", body = [WorkerOut])))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Vec<WorkerOut>>, ApiError> {
    let records = state.store().worker_list(state.now_ms()).await?;
    let mut workers: BTreeMap<String, WorkerOut> = records
        .into_iter()
        .map(|record| (record.worker_id.clone(), WorkerOut::from(record)))
        .collect();
    leases_attach(&state, &mut workers).await?;
    Ok(Json(workers.into_values().collect()))
}

/// Adds each running job to the worker that holds its lease, page by page.
async fn leases_attach(
    state: &AppState,
    workers: &mut BTreeMap<String, WorkerOut>,
) -> Result<(), ApiError> {
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
            _ => return Ok(()),
        }
    }
}
