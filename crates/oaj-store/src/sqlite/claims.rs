//! Claims and leases: how a worker takes queued jobs, keeps them, and proves it still holds them.

use oaj_core::{transition, JobState, Transition};
use rusqlite::{params, Connection};
use serde_json::json;

use super::job_reads::step_run_list;
use super::rows::{job_columns, job_from_row, query_all, query_first, JOB_COLUMN_COUNT};
use super::workflows::WorkflowCache;
use super::writer::WriteTx;
use crate::error::StoreError;
use crate::model::{ClaimParams, ClaimedJob, Control, Job, Lease, LeaseExtend, LeaseStatus};

// The claim reads whole rows and applies the changes of UPDATE_CLAIM to them in memory
// (`claimed_row`). Reading each claimed job back after its update cost one more statement and one
// more lookup by id for every job, and RETURNING would build a temporary table on every call.
// Each row comes with its rowid, by which UPDATE_CLAIM finds it.
pub(crate) const SELECT_QUEUED: &str = concat!(
    "SELECT ",
    job_columns!(),
    ", rowid FROM jobs WHERE state = 'queued' ORDER BY claim_key, id LIMIT ?1"
);
const SELECT_QUEUED_AMONG: &str = concat!(
    "SELECT ",
    job_columns!(),
    ", rowid FROM jobs WHERE state = 'queued' AND id IN (SELECT value FROM json_each(?2))
    ORDER BY claim_key, id LIMIT ?1"
);
// `OR FAIL` spares SQLite a statement journal, and the rowid a search of the index of ids, as in
// `UPDATE_MOVE`.
pub(crate) const UPDATE_CLAIM: &str = "UPDATE OR FAIL jobs SET state = 'running',
    lease_owner = ?2, lease_token = lease_token + 1, lease_expires_at = ?3,
    started_at = COALESCE(started_at, ?4), updated_at = ?4, control = NULL
    WHERE rowid = ?1 AND state = 'queued'";
const SELECT_LEASE: &str = "SELECT lease_token, state FROM jobs WHERE id = ?1";
const UPDATE_EXTEND: &str = "UPDATE jobs SET lease_expires_at = ?3
    WHERE id = ?1 AND lease_token = ?2 AND state = 'running' RETURNING control";

/// Claims up to `params.limit` queued jobs in claim order and gives each a new lease.
pub(crate) fn job_claim(
    tx: &mut WriteTx<'_>,
    cache: &WorkflowCache,
    params: &ClaimParams,
) -> Result<Vec<ClaimedJob>, StoreError> {
    transition(JobState::Queued, Transition::Claim).expect("queued jobs can be claimed");
    let with_rowid = |row: &rusqlite::Row<'_>| -> Result<(Job, i64), StoreError> {
        Ok((job_from_row(row)?, row.get(JOB_COLUMN_COUNT)?))
    };
    let jobs = if params.job_ids.is_empty() {
        query_all(tx.conn, SELECT_QUEUED, [params.limit], with_rowid)?
    } else {
        let among = serde_json::to_string(&params.job_ids).expect("strings serialize");
        query_all(
            tx.conn,
            SELECT_QUEUED_AMONG,
            params![params.limit, among],
            with_rowid,
        )?
    };
    let mut claimed = Vec::with_capacity(jobs.len());
    for (job, rowid) in jobs {
        claimed.push(claim_one(tx, cache, params, job, rowid)?);
    }
    let count = i64::try_from(claimed.len()).expect("a claim returns few jobs");
    tx.count_add(JobState::Queued, -count);
    tx.count_add(JobState::Running, count);
    Ok(claimed)
}

fn claim_one(
    tx: &mut WriteTx<'_>,
    cache: &WorkflowCache,
    params: &ClaimParams,
    queued: Job,
    rowid: i64,
) -> Result<ClaimedJob, StoreError> {
    let id = queued.id.as_str();
    let expires_at = params.now + params.lease_ms;
    let changed = tx.conn.prepare_cached(UPDATE_CLAIM)?.execute(params![
        rowid,
        params.worker_id,
        expires_at,
        params.now
    ])?;
    assert_eq!(
        changed, 1,
        "job {id} was read as queued inside this transaction"
    );
    // Step runs are written only under a lease, so a job that never started has none.
    let has_run = queued.started_at.is_some();
    let job = claimed_row(queued, params);
    let id = job.id.as_str();
    let workflow = cache
        .get(tx.conn, &job.workflow_id, &job.workflow_version)?
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "job {id} runs workflow {} version {}, which is not stored",
                job.workflow_id, job.workflow_version
            ))
        })?;
    let steps = if has_run {
        step_run_list(tx.conn, id)?
    } else {
        Vec::new()
    };

    let data = json!({ "worker_id": params.worker_id, "token": job.lease_token });
    tx.job_event("job.running".to_owned(), id, data, params.now)?;
    let lease = Lease {
        job_id: id.to_owned(),
        token: job.lease_token,
    };
    Ok(ClaimedJob {
        job,
        workflow,
        lease,
        steps,
    })
}

/// Returns the row of a queued job as UPDATE_CLAIM leaves it.
fn claimed_row(mut job: Job, params: &ClaimParams) -> Job {
    job.state = JobState::Running;
    job.lease_owner = Some(params.worker_id.clone());
    job.lease_token += 1;
    job.lease_expires_at = Some(params.now + params.lease_ms);
    job.started_at = Some(job.started_at.unwrap_or(params.now));
    job.updated_at = params.now;
    job.control = None;
    job
}

/// Checks that `lease` is the job's current lease and the job is running (fencing).
///
/// Fails with [`StoreError::LeaseLost`] otherwise, including when the job was deleted.
pub(crate) fn lease_check(conn: &Connection, lease: &Lease) -> Result<(), StoreError> {
    let current = query_first(conn, SELECT_LEASE, [&lease.job_id], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
    })?;
    match current {
        Some((token, state)) if token == lease.token && state == JobState::Running.as_str() => {
            Ok(())
        }
        _ => Err(StoreError::LeaseLost {
            job_id: lease.job_id.clone(),
            token: lease.token,
        }),
    }
}

/// Renews each lease that is still current and reports the ones that are lost.
pub(crate) fn lease_extend(
    tx: &mut WriteTx<'_>,
    params: &LeaseExtend,
) -> Result<Vec<LeaseStatus>, StoreError> {
    let expires_at = params.now + params.lease_ms;
    let mut statuses = Vec::with_capacity(params.leases.len());
    for lease in &params.leases {
        let control = query_first(
            tx.conn,
            UPDATE_EXTEND,
            params![lease.job_id, lease.token, expires_at],
            |row| Ok(row.get::<_, Option<String>>(0)?),
        )?;
        let job_id = lease.job_id.clone();
        statuses.push(match control {
            Some(control) => LeaseStatus::Held {
                job_id,
                control: control_parse(control.as_deref())?,
            },
            None => LeaseStatus::Lost { job_id },
        });
    }
    Ok(statuses)
}

/// Parses a stored control request.
pub(crate) fn control_parse(text: Option<&str>) -> Result<Option<Control>, StoreError> {
    match text {
        None => Ok(None),
        Some("cancel") => Ok(Some(Control::Cancel)),
        Some("pause") => Ok(Some(Control::Pause)),
        Some(other) => Err(super::errors::corrupt("jobs.control", other)),
    }
}
