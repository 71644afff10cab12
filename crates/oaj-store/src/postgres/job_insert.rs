//! Job inserts: validation of dependencies, idempotency keys, and the first state of each job.
//! The decisions (insert order, first state, request hash) are shared with the SQLite store.

use std::collections::HashMap;

use oaj_core::{transition, JobState};
use serde_json::json;

use super::tx::PgTx;
use super::workflows::WorkflowCache;
use crate::error::StoreError;
use crate::model::{JobNew, JobRef};
use crate::sqlite::errors::corrupt;
use crate::sqlite::job_insert::{first_state, insert_order, request_hash, FirstState};
use crate::sqlite::rows::dependency_failure_as_str;

const INSERT_BATCH: &str = "INSERT INTO batches (id, created_at) VALUES ($1, $2)";
// An insert that races another insert of the same idempotency key waits for it on the unique
// index and then inserts nothing, so the key is matched as if the other had come first.
const INSERT_JOB: &str = "INSERT INTO jobs (id, workflow_id, workflow_version, state, priority,
    claim_key, input, error, tags, metadata, batch_id, depends_on, on_dependency_failure,
    run_at, timeout_ms, idempotency_key, request_hash, created_at, updated_at, finished_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
    $18, $19) ON CONFLICT (idempotency_key) DO NOTHING";
const INSERT_DEPENDENCY: &str = "INSERT INTO job_dependencies (job_id, position, depends_on_id,
    settled) VALUES ($1, $2, $3, $4)";
const SELECT_BY_KEY: &str = "SELECT id, request_hash, state FROM jobs WHERE idempotency_key = $1";
// FOR SHARE waits for a transaction that is ending the dependency right now, so the new job sees
// its final state, or that transaction sees the new job's dependency row when it settles them.
const SELECT_STATE: &str = "SELECT state FROM jobs WHERE id = $1 FOR SHARE";

/// A job of the insert: its id and the state it is in.
type Inserted = (String, JobState);

/// Inserts jobs all or nothing and returns their ids in the order given.
pub(crate) async fn job_insert_many(
    tx: &mut PgTx<'_>,
    cache: &WorkflowCache,
    jobs: &[JobNew],
    batch_id: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let order = insert_order(jobs)?;
    if let Some(batch_id) = batch_id {
        let created_at = jobs
            .iter()
            .map(|job| job.created_at)
            .min()
            .unwrap_or_default();
        tx.execute(INSERT_BATCH, &[&batch_id, &created_at]).await?;
    }

    let mut inserted: HashMap<usize, Inserted> = HashMap::new();
    for index in order {
        let job = &jobs[index];
        let outcome = match idempotent_match(tx, job).await? {
            Some(existing) => existing,
            None => job_insert(tx, cache, job, index, &inserted, batch_id).await?,
        };
        inserted.insert(index, outcome);
    }
    Ok((0..jobs.len())
        .map(|index| inserted[&index].0.clone())
        .collect())
}

/// Returns the job stored under the insert's idempotency key when the requests match.
async fn idempotent_match(tx: &PgTx<'_>, job: &JobNew) -> Result<Option<Inserted>, StoreError> {
    let Some(key) = &job.idempotency_key else {
        return Ok(None);
    };
    let Some(row) = tx.query_opt(SELECT_BY_KEY, &[key]).await? else {
        return Ok(None);
    };
    let id: String = row.try_get(0)?;
    let hash: Option<String> = row.try_get(1)?;
    let state: String = row.try_get(2)?;
    let state = state.parse().map_err(|_| corrupt("jobs.state", &state))?;
    if hash.as_deref() != Some(request_hash(job).as_str()) {
        return Err(StoreError::IdempotencyKeyReused {
            key: key.clone(),
            job_id: id,
        });
    }
    Ok(Some((id, state)))
}

/// Inserts one job and its dependency rows, and returns its id and first state.
async fn job_insert(
    tx: &mut PgTx<'_>,
    cache: &WorkflowCache,
    job: &JobNew,
    index: usize,
    inserted: &HashMap<usize, Inserted>,
    batch_id: Option<&str>,
) -> Result<Inserted, StoreError> {
    if cache
        .get(tx.db(), &job.workflow_id, &job.workflow_version)
        .await?
        .is_none()
    {
        return Err(StoreError::WorkflowNotFound {
            id: job.workflow_id.clone(),
            version: job.workflow_version.clone(),
        });
    }
    let dependencies = dependencies_resolve(tx, job, index, inserted).await?;
    let first = first_state(job, &dependencies);
    let state = transition(JobState::Created, first.transition)
        .expect("a created job may be deferred, queued or failed");
    let id = uuid::Uuid::now_v7().to_string();

    let row = JobRow {
        job,
        id: &id,
        state,
        first: &first,
        dependencies: &dependencies,
        batch_id,
    };
    if !job_row_insert(tx, &row).await? {
        // Another insert stored this key after our check; it is committed now, so match it.
        return idempotent_match(tx, job)
            .await?
            .ok_or_else(|| StoreError::Database("idempotency key vanished during insert".into()));
    }
    for (position, ((dependency_id, _), settled)) in
        dependencies.iter().zip(&first.settled).enumerate()
    {
        let position = position as i64;
        tx.execute(INSERT_DEPENDENCY, &[&id, &position, dependency_id, settled])
            .await?;
    }
    tx.counts_add(state, 1);
    if state == JobState::Queued {
        tx.wake_workers();
    }
    let data = json!({
        "workflow_id": job.workflow_id,
        "version": job.workflow_version,
        "priority": job.priority.as_str(),
        "state": state.as_str(),
    });
    tx.job_event("job.created".to_owned(), &id, data, job.created_at);
    Ok((id, state))
}

/// Looks up each dependency's id and state, from this insert or from the store.
async fn dependencies_resolve(
    tx: &PgTx<'_>,
    job: &JobNew,
    index: usize,
    inserted: &HashMap<usize, Inserted>,
) -> Result<Vec<Inserted>, StoreError> {
    let mut resolved = Vec::with_capacity(job.depends_on.len());
    for dependency in &job.depends_on {
        let found = match dependency {
            JobRef::Index(target) => inserted
                .get(target)
                .cloned()
                .expect("insert_order puts dependencies first"),
            JobRef::Id(id) => (id.clone(), stored_state(tx, index, id).await?),
        };
        resolved.push(found);
    }
    Ok(resolved)
}

async fn stored_state(tx: &PgTx<'_>, index: usize, id: &str) -> Result<JobState, StoreError> {
    let Some(row) = tx.query_opt(SELECT_STATE, &[&id]).await? else {
        return Err(StoreError::DependencyInvalid(format!(
            "job {index} depends on job {id}, which does not exist"
        )));
    };
    let state: String = row.try_get(0)?;
    state.parse().map_err(|_| corrupt("jobs.state", state))
}

/// The values of one new job row.
struct JobRow<'a> {
    job: &'a JobNew,
    id: &'a str,
    state: JobState,
    first: &'a FirstState,
    dependencies: &'a [Inserted],
    batch_id: Option<&'a str>,
}

/// Inserts the job row. Returns false when a committed job holds its idempotency key.
async fn job_row_insert(tx: &PgTx<'_>, row: &JobRow<'_>) -> Result<bool, StoreError> {
    let job = row.job;
    let depends_on: Vec<&str> = row.dependencies.iter().map(|(id, _)| id.as_str()).collect();
    let hash = job.idempotency_key.as_ref().map(|_| request_hash(job));
    let inserted = tx
        .execute(
            INSERT_JOB,
            &[
                &row.id,
                &job.workflow_id,
                &job.workflow_version,
                &row.state.as_str(),
                &job.priority.rank(),
                &job.priority.claim_key(job.created_at),
                &job.input.to_string(),
                &row.first.error,
                &json!(job.tags).to_string(),
                &job.metadata.to_string(),
                &row.batch_id,
                &json!(depends_on).to_string(),
                &dependency_failure_as_str(job.on_dependency_failure),
                &job.run_at,
                &job.timeout_ms,
                &job.idempotency_key,
                &hash,
                &job.created_at,
                &row.state.is_final().then_some(job.created_at),
            ],
        )
        .await?;
    Ok(inserted == 1)
}
