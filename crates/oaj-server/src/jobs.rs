//! Job routes: create, list, get, and the job's result, events, step runs and attempts.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use oaj_core::{JobState, Priority};
use oaj_engine::JobSubmit;
use oaj_store::{
    Attempt, DependencyFailure, Event, EventFilter, Job, JobCursor, JobQuery, JobRef, JobSort,
    StepRun,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::{AppState, PAGE_LIMIT_MAX};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(create).get(list))
        .route("/v1/jobs/{id}", get(fetch).delete(remove))
        .route("/v1/jobs/{id}/result", get(result))
        .route("/v1/jobs/{id}/events", get(events))
        .route("/v1/jobs/{id}/steps", get(steps))
        .route("/v1/jobs/{id}/attempts", get(attempts))
}

/// A job to create. Name a stored workflow with `workflow_id` (and optionally
/// `workflow_version`), or pass a whole document in `workflow`, which is registered first.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobCreate {
    /// Id of a stored workflow.
    workflow_id: Option<String>,
    /// Exact version; the highest stored version when absent.
    workflow_version: Option<String>,
    /// An inline workflow document, registered as a version before the job is created.
    #[schema(value_type = Option<Object>)]
    workflow: Option<Value>,
    /// Input, checked against the workflow's declared inputs.
    #[serde(default)]
    #[schema(value_type = Object)]
    input: Value,
    /// `low`, `medium`, `high` or `critical`; the workflow's default, else `medium`.
    #[schema(value_type = Option<String>)]
    priority: Option<Priority>,
    /// Labels for filtering.
    #[serde(default)]
    tags: Vec<String>,
    /// Free-form metadata.
    #[serde(default)]
    #[schema(value_type = Object)]
    metadata: Value,
    /// Jobs that must complete first: ids, or (in a batch) indexes of earlier batch entries.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    depends_on: Vec<JobRef>,
    /// `fail` (default) or `run`: what a failed or cancelled dependency does to this job.
    #[serde(default)]
    on_dependency_failure: DependencyFailure,
    /// Earliest start, in milliseconds since the Unix epoch, at most ten years from now.
    #[schema(minimum = 0)]
    run_at: Option<i64>,
    /// Earliest start as seconds from now. With an idempotency key, prefer `run_at`: a repeat
    /// computes a different start time and is rejected as a different request.
    delay_seconds: Option<f64>,
    /// Limit on the whole job's running time, in seconds.
    timeout_seconds: Option<f64>,
    /// Key that makes a repeated request return the first job instead of a new one.
    idempotency_key: Option<String>,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobPage {
    /// The jobs, in the requested order.
    jobs: Vec<Job>,
    /// Pass as `cursor` to read the next page; absent on the last page.
    next_cursor: Option<String>,
}

/// Filters, order and position of the job list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// States, comma-separated, such as `queued,running`.
    state: Option<String>,
    /// Workflow id.
    workflow: Option<String>,
    /// Batch id.
    batch: Option<String>,
    /// Tags, comma-separated; a job must carry all of them.
    tags: Option<String>,
    /// Priority.
    priority: Option<String>,
    /// Created at or after, in milliseconds since the Unix epoch.
    created_from: Option<i64>,
    /// Created before, in milliseconds since the Unix epoch.
    created_until: Option<i64>,
    /// Finished at or after, in milliseconds since the Unix epoch.
    finished_from: Option<i64>,
    /// Finished before, in milliseconds since the Unix epoch.
    finished_until: Option<i64>,
    /// `created_desc` (default), `created_asc` or `priority_desc`.
    sort: Option<String>,
    /// Cursor from the previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size, 1 to 1000; default 100.
    limit: Option<u32>,
}

/// Paging through a job's events.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Only events with a sequence number above this one.
    after: Option<i64>,
    /// Page size, 1 to 1000; default 1000.
    limit: Option<u32>,
}

/// Creates a job. A repeat with the same idempotency key and request returns the first job with
/// 200; the same key with a different request is 409.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = JobCreate,
    responses((status = 201, description = "Created", body = Job),
        (status = 200, description = "Idempotent repeat: the existing job", body = Job),
        (status = 404, description = "Workflow not found", body = ApiError),
        (status = 409, description = "Idempotency key used by a different request", body = ApiError),
        (status = 422, description = "Invalid input, workflow or dependency", body = ApiError),
        (status = 415, description = "Content-Type is not application/json", body = ApiError),
        (status = 503, description = "The store cannot serve now, or the job is stored but could not be read back (`job_stored_unread`)", body = ApiError)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<JobCreate>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let started = state.now_ms();
    let submit = job_submit(&state, request, "").await?;
    let id = state.engine.job_submit(submit).await?;
    // The job is committed, so a failed read must not look like a failed submit: a client that
    // sent it again without an idempotency key would create a second job.
    let job = match state.store().job_get(&id).await {
        Ok(Some(job)) => job,
        Ok(None) => return Err(stored_unread(&id, "it was deleted at once")),
        Err(error) => return Err(stored_unread(&id, &error.to_string())),
    };
    // The store returns the first job's id for an idempotent repeat, and that job was created
    // before this request began.
    // NOTE: a repeat within the same millisecond as the first request is reported as 201.
    let status = if job.created_at < started {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(job)))
}

/// Builds the 503 for a job that is stored but could not be read back, and logs it.
fn stored_unread(id: &str, cause: &str) -> ApiError {
    tracing::warn!(job_id = %id, error = %cause, "job stored, but reading it back failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "job_stored_unread",
        format!(
            "job {id} is stored, but reading it back failed ({cause}): get it with \
             GET /v1/jobs/{id} instead of submitting it again"
        ),
    )
}

/// Turns a create request into an engine submission, registering an inline workflow first.
/// `path` prefixes JSON pointers in errors, for entries of a batch.
pub(crate) async fn job_submit(
    state: &AppState,
    request: JobCreate,
    path: &str,
) -> Result<JobSubmit, ApiError> {
    let (workflow_id, workflow_version) = match (request.workflow, request.workflow_id) {
        (Some(document), None) => {
            let (workflow, _) = state
                .engine
                .workflow_register(&document.to_string())
                .await?;
            (workflow.id, Some(workflow.version))
        }
        (None, Some(id)) => (id, request.workflow_version),
        _ => {
            return Err(unprocessable(
                "workflow_missing",
                "give exactly one of workflow_id and workflow",
                format!("{path}/workflow_id"),
            ))
        }
    };
    let now = state.now_ms();
    if let Some(run_at) = request.run_at {
        run_at_check(run_at, now, &format!("{path}/run_at"))?;
    }
    let delay_ms = seconds_to_ms(request.delay_seconds, &format!("{path}/delay_seconds"))?;
    let run_at = match (request.run_at, delay_ms) {
        (Some(_), Some(_)) => {
            return Err(unprocessable(
                "run_at_conflict",
                "give at most one of run_at and delay_seconds",
                format!("{path}/delay_seconds"),
            ))
        }
        (run_at, delay_ms) => run_at.or(delay_ms.map(|delay| now.saturating_add(delay))),
    };
    Ok(JobSubmit {
        workflow_id,
        workflow_version,
        input: request.input,
        priority: request.priority,
        tags: request.tags,
        metadata: request.metadata,
        depends_on: request.depends_on,
        on_dependency_failure: request.on_dependency_failure,
        run_at,
        timeout_ms: seconds_to_ms(request.timeout_seconds, &format!("{path}/timeout_seconds"))?,
        idempotency_key: request.idempotency_key,
    })
}

/// Checks that `run_at`, in milliseconds since the Unix epoch, is not negative and at most ten
/// years after `now`, the same bound as `delay_seconds`.
fn run_at_check(run_at: i64, now: i64, path: &str) -> Result<(), ApiError> {
    let latest = now.saturating_add(315_360_000_000);
    if (0..=latest).contains(&run_at) {
        return Ok(());
    }
    Err(unprocessable(
        "run_at_out_of_range",
        format!(
            "{run_at} is out of range: expected milliseconds since the Unix epoch, from 0 to \
             {latest} (ten years from now)"
        ),
        path.to_owned(),
    ))
}

fn seconds_to_ms(seconds: Option<f64>, path: &str) -> Result<Option<i64>, ApiError> {
    let Some(seconds) = seconds else {
        return Ok(None);
    };
    // Ten years is far beyond any sensible delay and keeps the product well inside i64.
    if !(0.0..=315_360_000.0).contains(&seconds) {
        return Err(unprocessable(
            "seconds_out_of_range",
            format!("{seconds} is out of range: expected seconds from 0 to 315360000"),
            path.to_owned(),
        ));
    }
    Ok(Some((seconds * 1000.0).round() as i64))
}

pub(crate) fn unprocessable(
    code: &'static str,
    message: impl Into<String>,
    path: String,
) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).at(path)
}

/// Lists jobs with filters, a sort order and a cursor. Paging with `next_cursor` neither skips
/// nor repeats a job while jobs are created or change state, because every order sorts on keys
/// that never change.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, description = "A page of jobs", body = JobPage),
        (status = 400, description = "A parameter does not parse", body = ApiError),
        (status = 422, description = "Limit out of range", body = ApiError)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let job_query = job_query_parse(query)?;
    let (sort, limit) = (job_query.sort, job_query.limit);
    let jobs = state.store().job_query(job_query).await?;
    let next_cursor = match jobs.last() {
        Some(last) if jobs.len() == limit as usize => Some(cursor_encode(last, sort)),
        _ => None,
    };
    Ok(Json(JobPage { jobs, next_cursor }))
}

pub(crate) fn job_query_parse(query: ListQuery) -> Result<JobQuery, ApiError> {
    let limit = page_limit(query.limit, 100)?;
    let sort = match query.sort.as_deref() {
        None | Some("created_desc") => JobSort::CreatedDesc,
        Some("created_asc") => JobSort::CreatedAsc,
        Some("priority_desc") => JobSort::PriorityDesc,
        Some(other) => {
            return Err(ApiError::query(
                "sort",
                format!(
                    "invalid sort {other:?}: expected created_desc, created_asc or priority_desc"
                ),
            ))
        }
    };
    let states = split_list(query.state.as_deref())
        .map(|text| {
            text.parse::<JobState>()
                .map_err(|error| ApiError::query("state", error.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let priority = query
        .priority
        .map(|text| text.parse::<Priority>())
        .transpose()
        .map_err(|error| ApiError::query("priority", error.to_string()))?;
    let after = query
        .cursor
        .map(|text| cursor_decode(&text, sort))
        .transpose()?;
    Ok(JobQuery {
        states,
        workflow_id: query.workflow,
        batch_id: query.batch,
        tags: split_list(query.tags.as_deref())
            .map(str::to_owned)
            .collect(),
        priority,
        created_from: query.created_from,
        created_until: query.created_until,
        finished_from: query.finished_from,
        finished_until: query.finished_until,
        sort,
        after,
        limit,
    })
}

fn split_list(text: Option<&str>) -> impl Iterator<Item = &str> {
    text.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Checks a requested page size: 1 to [`PAGE_LIMIT_MAX`], or `default` when absent.
pub(crate) fn page_limit(limit: Option<u32>, default: u32) -> Result<u32, ApiError> {
    match limit {
        None => Ok(default),
        Some(limit) if (1..=PAGE_LIMIT_MAX).contains(&limit) => Ok(limit),
        Some(limit) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit_invalid",
            format!("limit {limit} is out of range: expected 1 to {PAGE_LIMIT_MAX}"),
        )
        .at("/limit")),
    }
}

/// Encodes a cursor as `sort.key.created_at.id`, readable on purpose: it reveals nothing the
/// page did not already show.
fn cursor_encode(job: &Job, sort: JobSort) -> String {
    let cursor = JobCursor::after(job, sort);
    format!("{}.{}.{}", cursor.key, cursor.created_at, cursor.id)
}

fn cursor_decode(text: &str, sort: JobSort) -> Result<JobCursor, ApiError> {
    let invalid = || {
        ApiError::query(
            "cursor",
            format!("invalid cursor {text:?}: pass next_cursor from the previous page unchanged"),
        )
    };
    let mut parts = text.splitn(3, '.');
    let key = parts
        .next()
        .and_then(|part| part.parse().ok())
        .ok_or_else(invalid)?;
    let created_at = parts
        .next()
        .and_then(|part| part.parse().ok())
        .ok_or_else(invalid)?;
    let id = parts
        .next()
        .filter(|id| !id.is_empty())
        .ok_or_else(invalid)?;
    let is_created_sort = matches!(sort, JobSort::CreatedDesc | JobSort::CreatedAsc);
    if is_created_sort && key != created_at {
        return Err(invalid());
    }
    Ok(JobCursor {
        key,
        created_at,
        id: id.to_owned(),
    })
}

/// Fetches a job.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The job", body = Job),
        (status = 404, description = "No such job", body = ApiError)))]
pub(crate) async fn fetch(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(job_load(&state, &id).await?))
}

pub(crate) async fn job_load(state: &AppState, id: &str) -> Result<Job, ApiError> {
    state
        .store()
        .job_get(id)
        .await?
        .ok_or_else(|| ApiError::job_not_found(id))
}

/// The result of a completed job.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobResult {
    /// Job id.
    job_id: String,
    /// The job's output.
    #[schema(value_type = Object)]
    result: Value,
}

/// Fetches a completed job's output. A job that has not completed is 409 `job_not_completed`,
/// with its state and error in the message.
#[utoipa::path(get, path = "/v1/jobs/{id}/result", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The output", body = JobResult),
        (status = 404, description = "No such job", body = ApiError),
        (status = 409, description = "The job has not completed", body = ApiError)))]
pub(crate) async fn result(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobResult>, ApiError> {
    let job = job_load(&state, &id).await?;
    match (job.state, job.result) {
        (JobState::Completed, Some(result)) => Ok(Json(JobResult { job_id: id, result })),
        (job_state, _) => {
            let reason = job
                .error
                .map(|error| format!(": {error}"))
                .unwrap_or_default();
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "job_not_completed",
                format!("job {id} is {job_state}{reason}"),
            ))
        }
    }
}

/// Lists a job's events in sequence order.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs",
    params(("id" = String, Path, description = "Job id"), EventsQuery),
    responses((status = 200, description = "Events", body = [Event]),
        (status = 404, description = "No such job", body = ApiError)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<Vec<Event>>, ApiError> {
    job_load(&state, &id).await?;
    let filter = EventFilter {
        job_id: Some(id),
        after_seq: query.after.unwrap_or(0),
        limit: page_limit(query.limit, PAGE_LIMIT_MAX)?,
    };
    Ok(Json(state.store().event_list(filter).await?))
}

/// Lists a job's step runs, by step id then item.
#[utoipa::path(get, path = "/v1/jobs/{id}/steps", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "Step runs", body = [StepRun]),
        (status = 404, description = "No such job", body = ApiError)))]
pub(crate) async fn steps(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<StepRun>>, ApiError> {
    job_load(&state, &id).await?;
    Ok(Json(state.store().step_run_list(&id).await?))
}

/// Lists a job's attempts with their logs, oldest first.
#[utoipa::path(get, path = "/v1/jobs/{id}/attempts", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "Attempts", body = [Attempt]),
        (status = 404, description = "No such job", body = ApiError)))]
pub(crate) async fn attempts(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Attempt>>, ApiError> {
    job_load(&state, &id).await?;
    Ok(Json(state.store().attempt_list(&id).await?))
}

/// Deletes a job that has ended, with its step runs, attempts and events.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such job", body = ApiError),
        (status = 409, description = "The job has not ended", body = ApiError)))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store().job_delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
