//! Reads of jobs, step runs and attempts, and the deletion of an ended job.

use std::collections::BTreeMap;

use oaj_core::{JobState, Priority};
use rusqlite::{params, Connection};

use super::job_moves::job_head;
use super::rows::{
    attempt_columns, attempt_from_row, job_columns, job_from_row, query_all, query_first,
    query_value, step_run_columns, step_run_from_row,
};
use super::writer::WriteTx;
use crate::error::StoreError;
use crate::model::{Attempt, Job, StepRun};

const SELECT_JOB: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ?1");
const SELECT_QUEUE_DEPTH: &str =
    "SELECT priority, COUNT(*) FROM jobs WHERE state = 'queued' GROUP BY priority";
const SELECT_COUNTS: &str = "SELECT state, count FROM job_counts";
const SELECT_STEP_RUNS: &str = concat!(
    "SELECT ",
    step_run_columns!(),
    " FROM step_runs WHERE job_id = ?1 ORDER BY step_id, item"
);
const SELECT_ATTEMPTS: &str = concat!(
    "SELECT ",
    attempt_columns!(),
    " FROM attempts WHERE job_id = ?1 ORDER BY id"
);
const DELETE_JOB: &str = "DELETE FROM jobs WHERE id = ?1 RETURNING batch_id";
// A batch exists through its jobs, and its row only anchors their `batch_id`, so the row goes
// with the batch's last job.
const DELETE_BATCH_IF_EMPTY: &str = "DELETE FROM batches WHERE id = ?1
    AND NOT EXISTS (SELECT 1 FROM jobs WHERE batch_id = ?1)";
// Events have no foreign key to their job (migration 0006), so they are deleted with it here.
pub(crate) const DELETE_JOB_EVENTS: &str = "DELETE FROM events WHERE job_id = ?1";

/// Reads one job.
pub(crate) fn job_get(conn: &Connection, id: &str) -> Result<Option<Job>, StoreError> {
    query_first(conn, SELECT_JOB, [id], job_from_row)
}

/// Reads the job counters.
pub(crate) fn job_counts(conn: &Connection) -> Result<BTreeMap<JobState, u64>, StoreError> {
    let rows = query_all(conn, SELECT_COUNTS, [], |row| {
        let state: String = row.get(0)?;
        let count: i64 = row.get(1)?;
        let state = state
            .parse::<JobState>()
            .map_err(|_| super::errors::corrupt("job_counts.state", &state))?;
        let count =
            u64::try_from(count).map_err(|_| super::errors::corrupt("job_counts.count", count))?;
        Ok((state, count))
    })?;
    Ok(rows.into_iter().collect())
}

/// Counts queued jobs by priority.
pub(crate) fn queue_depth(conn: &Connection) -> Result<BTreeMap<Priority, u64>, StoreError> {
    let rows = query_all(conn, SELECT_QUEUE_DEPTH, [], |row| {
        let rank: i64 = row.get(0)?;
        let count: i64 = row.get(1)?;
        let priority = Priority::from_rank(rank)
            .ok_or_else(|| super::errors::corrupt("jobs.priority", rank))?;
        let count = u64::try_from(count).map_err(|_| super::errors::corrupt("count", count))?;
        Ok((priority, count))
    })?;
    Ok(rows.into_iter().collect())
}

/// Lists a job's step runs by step id, then item (the step itself first).
pub(crate) fn step_run_list(conn: &Connection, job_id: &str) -> Result<Vec<StepRun>, StoreError> {
    query_all(conn, SELECT_STEP_RUNS, [job_id], step_run_from_row)
}

/// Lists a job's attempts, oldest first.
pub(crate) fn attempt_list(conn: &Connection, job_id: &str) -> Result<Vec<Attempt>, StoreError> {
    query_all(conn, SELECT_ATTEMPTS, [job_id], attempt_from_row)
}

/// Deletes an ended job with its rows and events.
///
/// It writes no event, because the job's events go with it and the trait gives no time to
/// stamp one with.
pub(crate) fn job_delete(tx: &mut WriteTx<'_>, id: &str) -> Result<(), StoreError> {
    let head = job_head(tx.conn, id)?.ok_or_else(|| StoreError::JobNotFound(id.to_owned()))?;
    if !head.state.is_final() {
        return Err(StoreError::JobStateConflict {
            job_id: id.to_owned(),
            state: head.state,
            message: "delete applies only to completed, failed or cancelled jobs: cancel it first"
                .to_owned(),
        });
    }
    let batch_id = query_value::<Option<String>>(tx.conn, DELETE_JOB, [id])?.flatten();
    tx.conn
        .prepare_cached(DELETE_JOB_EVENTS)?
        .execute(params![id])?;
    batches_delete_empty(tx, batch_id)?;
    tx.count_add(head.state, -1);
    Ok(())
}

/// Deletes the rows of the batches in `batch_ids` that no longer have a job.
pub(crate) fn batches_delete_empty(
    tx: &mut WriteTx<'_>,
    batch_ids: impl IntoIterator<Item = String>,
) -> Result<(), StoreError> {
    let mut delete = tx.conn.prepare_cached(DELETE_BATCH_IF_EMPTY)?;
    for batch_id in batch_ids {
        delete.execute([batch_id])?;
    }
    Ok(())
}
