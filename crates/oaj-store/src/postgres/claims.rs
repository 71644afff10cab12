//! Claims and leases: how a worker takes queued jobs, keeps them, and proves it still holds them.

use std::collections::HashMap;

use oaj_core::{transition, JobState, Transition};
use serde_json::json;

use super::db::Params;
use super::job_reads::step_run_list_many;
use super::rows::{job_columns, job_from_row};
use super::tx::PgTx;
use super::workflows::WorkflowCache;
use crate::error::StoreError;
use crate::model::{ClaimParams, ClaimedJob, Job, Lease, LeaseExtend, LeaseStatus, StepRun};
use crate::sqlite::claims::control_parse;

// SKIP LOCKED lets workers of many processes claim at once. Each claim passes over the rows that
// another claim has locked instead of waiting for them, so no two claims return the same job.
// The function (migration 0004) runs `SELECT ... FOR UPDATE SKIP LOCKED` with a plan that reads
// jobs_queued in claim order whatever the statistics estimate. Its rows are sorted again here,
// because a set-returning function promises no order.
const SELECT_QUEUED: &str = "SELECT job_id FROM job_claim_queued($1)
    ORDER BY job_claim_key, job_id COLLATE \"C\"";
const SELECT_QUEUED_AMONG: &str = "SELECT id FROM jobs WHERE state = 'queued'
    AND id = ANY($2::text[]) ORDER BY claim_key, id LIMIT $1 FOR UPDATE SKIP LOCKED";
// The rows were locked while queued by the SELECT above, so they are still queued. The UPDATE
// reaches each one through the primary key. With `id = ANY($1) AND state = 'queued'`, PostgreSQL
// 15 read every queued job's entry of an index on state for each claim, so a claim slowed down
// as the queue grew.
const UPDATE_CLAIM: &str = concat!(
    "UPDATE jobs SET state = 'running', lease_owner = $2, lease_token = lease_token + 1,
    lease_expires_at = $3, started_at = COALESCE(started_at, $4), updated_at = $4,
    control = NULL FROM unnest($1::text[]) AS c (claimed_id) WHERE id = c.claimed_id RETURNING ",
    job_columns!()
);
const SELECT_LEASE: &str = "SELECT lease_token, state FROM jobs WHERE id = $1 FOR NO KEY UPDATE";
// Renews every current lease in one statement. The rows are locked in id order, because
// PostgreSQL sorts before it locks (documentation of SELECT, "The Locking Clause"), so two
// renewals of overlapping jobs never wait for each other in a cycle.
const UPDATE_EXTEND_MANY: &str = "WITH current AS (
    SELECT j.id FROM jobs j
    JOIN unnest($1::text[], $2::bigint[]) AS l (id, token)
        ON j.id = l.id AND j.lease_token = l.token
    WHERE j.state = 'running' ORDER BY j.id FOR NO KEY UPDATE OF j)
    UPDATE jobs SET lease_expires_at = $3 FROM current WHERE jobs.id = current.id
    RETURNING jobs.id, jobs.lease_token, jobs.control";

/// Claims up to `params.limit` queued jobs in claim order and gives each a new lease.
pub(crate) async fn job_claim(
    tx: &mut PgTx<'_>,
    cache: &WorkflowCache,
    params: &ClaimParams,
) -> Result<Vec<ClaimedJob>, StoreError> {
    transition(JobState::Queued, Transition::Claim).expect("queued jobs can be claimed");
    let limit = i64::from(params.limit);
    let rows = if params.job_ids.is_empty() {
        tx.query(SELECT_QUEUED, &[&limit]).await?
    } else {
        tx.query(SELECT_QUEUED_AMONG, &[&limit, &params.job_ids])
            .await?
    };
    let ids = rows
        .iter()
        .map(|row| row.try_get::<_, String>(0))
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }

    // The jobs' rows are locked since the SELECT above, so their step runs can be read in the
    // same round trip as the UPDATE.
    let expires_at = params.now + params.lease_ms;
    let claim_params: Params<'_> = &[&ids, &params.worker_id, &expires_at, &params.now];
    let db = tx.db();
    // `join!` and then `?` in statement order: after a failed statement the server fails the next
    // ones with 25P02 (transaction aborted), so the first error is the cause.
    let (rows, step_runs) = tokio::join!(
        db.query(UPDATE_CLAIM, claim_params),
        step_run_list_many(db, &ids),
    );
    let (rows, mut step_runs) = (rows?, step_runs?);
    let mut jobs = rows
        .iter()
        .map(job_from_row)
        .collect::<Result<Vec<Job>, _>>()?;
    assert_eq!(
        jobs.len(),
        ids.len(),
        "the claimed rows are locked by this transaction"
    );
    // UPDATE returns rows in no set order, so put them back in claim order.
    jobs.sort_by_key(|job| ids.iter().position(|id| *id == job.id));

    let mut claimed = Vec::with_capacity(jobs.len());
    for job in jobs {
        let steps = step_runs.remove(&job.id).unwrap_or_default();
        claimed.push(claimed_job(tx, cache, params, job, steps).await?);
    }
    let count = i64::try_from(claimed.len()).expect("a claim returns few jobs");
    tx.counts_move(JobState::Queued, JobState::Running, count);
    Ok(claimed)
}

/// Builds the reply for one claimed job and writes its `job.running` event.
async fn claimed_job(
    tx: &mut PgTx<'_>,
    cache: &WorkflowCache,
    params: &ClaimParams,
    job: Job,
    steps: Vec<StepRun>,
) -> Result<ClaimedJob, StoreError> {
    let id = job.id.clone();
    let workflow = cache
        .get(tx.db(), &job.workflow_id, &job.workflow_version)
        .await?
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "job {id} runs workflow {} version {}, which is not stored",
                job.workflow_id, job.workflow_version
            ))
        })?;

    let data = json!({ "worker_id": params.worker_id, "token": job.lease_token });
    tx.job_event("job.running".to_owned(), &id, data, params.now);
    let lease = Lease {
        job_id: id,
        token: job.lease_token,
    };
    Ok(ClaimedJob {
        job,
        workflow,
        lease,
        steps,
    })
}

/// Locks the job's row and checks that `lease` is its current lease and the job is running
/// (fencing). The lock holds until the commit, so no rescue or claim can slip in between the
/// check and the write it guards.
///
/// Fails with [`StoreError::LeaseLost`] otherwise, including when the job was deleted.
pub(crate) async fn lease_check(tx: &PgTx<'_>, lease: &Lease) -> Result<(), StoreError> {
    let current = tx.query_opt(SELECT_LEASE, &[&lease.job_id]).await?;
    let is_current = match current {
        Some(row) => {
            let token: i64 = row.try_get(0)?;
            let state: String = row.try_get(1)?;
            token == lease.token && state == JobState::Running.as_str()
        }
        None => false,
    };
    if is_current {
        Ok(())
    } else {
        Err(StoreError::LeaseLost {
            job_id: lease.job_id.clone(),
            token: lease.token,
        })
    }
}

/// Renews each lease that is still current and reports the ones that are lost.
pub(crate) async fn lease_extend(
    tx: &mut PgTx<'_>,
    params: &LeaseExtend,
) -> Result<Vec<LeaseStatus>, StoreError> {
    let expires_at = params.now + params.lease_ms;
    let job_ids: Vec<&str> = params.leases.iter().map(|l| l.job_id.as_str()).collect();
    let tokens: Vec<i64> = params.leases.iter().map(|lease| lease.token).collect();
    let rows = tx
        .query(UPDATE_EXTEND_MANY, &[&job_ids, &tokens, &expires_at])
        .await?;
    let mut held = HashMap::with_capacity(rows.len());
    for row in rows {
        let job_id: String = row.try_get(0)?;
        let token: i64 = row.try_get(1)?;
        let control: Option<String> = row.try_get(2)?;
        held.insert((job_id, token), control);
    }
    params
        .leases
        .iter()
        .map(|lease| {
            let key = (lease.job_id.clone(), lease.token);
            Ok(match held.get(&key) {
                Some(control) => LeaseStatus::Held {
                    job_id: key.0,
                    control: control_parse(control.as_deref())?,
                },
                None => LeaseStatus::Lost { job_id: key.0 },
            })
        })
        .collect()
}
