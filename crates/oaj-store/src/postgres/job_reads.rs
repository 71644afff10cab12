//! Reads of jobs, step runs, attempts and events, and the deletion of an ended job.

use std::collections::{BTreeMap, HashMap};

use oaj_core::{JobState, Priority};

use super::db::Db;
use super::job_moves::job_head;
use super::rows::{
    attempt_columns, attempt_from_row, decode_all, event_columns, event_from_row, job_columns,
    job_from_row, priority_from_rank, step_run_columns, step_run_from_row,
};
use super::tx::PgTx;
use crate::error::StoreError;
use crate::model::{Attempt, Event, EventFilter, Job, StepRun};
use crate::sqlite::errors::corrupt;

const SELECT_JOB: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");
const SELECT_QUEUE_DEPTH: &str =
    "SELECT priority, COUNT(*) FROM jobs WHERE state = 'queued' GROUP BY priority";
const SELECT_COUNTS: &str = "SELECT state, count FROM job_counts";
const SELECT_STEP_RUNS: &str = concat!(
    "SELECT ",
    step_run_columns!(),
    " FROM step_runs WHERE job_id = $1 ORDER BY step_id COLLATE \"C\", item"
);
// One index lookup per job. With `job_id = ANY($1)`, or with a LATERAL subquery that the planner
// may flatten into a join, PostgreSQL 15 scanned the whole table once it held a few thousand
// step runs, which took milliseconds per claim. `OFFSET 0` keeps the subquery from being
// flattened, so it runs once per job id with the job id as a parameter.
const SELECT_STEP_RUNS_MANY: &str = concat!(
    "SELECT s.* FROM unnest($1::text[]) WITH ORDINALITY AS c (id, n) CROSS JOIN LATERAL (",
    "SELECT ",
    step_run_columns!(),
    " FROM step_runs WHERE job_id = c.id OFFSET 0) s",
    " ORDER BY c.n, s.step_id COLLATE \"C\", s.item"
);
const SELECT_ATTEMPTS: &str = concat!(
    "SELECT ",
    attempt_columns!(),
    " FROM attempts WHERE job_id = $1 ORDER BY id"
);
const SELECT_JOB_EVENTS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
);
const SELECT_EVENTS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"
);
const DELETE_JOB: &str = "DELETE FROM jobs WHERE id = $1 RETURNING batch_id";
// A batch exists through its jobs, and its row only anchors their `batch_id`, so the row goes
// with the batch's last job. NOTE: two transactions that delete a batch's last two jobs at once
// each still see the other's job, so both leave the row. It then stays for good, a few bytes.
pub(crate) const DELETE_BATCHES_IF_EMPTY: &str = "DELETE FROM batches b
    WHERE b.id = ANY($1::text[]) AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = b.id)";
// Events, attempts and step runs have no foreign key to their job (migrations 0005 and 0007), so
// they are deleted here. This runs after the jobs' rows are deleted, as a statement of its own, so
// that its snapshot includes every row committed by a transaction that held a job's row before the
// delete locked it.
pub(crate) const DELETE_JOBS_ROWS: &str = "WITH deleted AS (SELECT unnest($1::text[]) AS job_id),
    attempts_deleted AS (DELETE FROM attempts a USING deleted d WHERE a.job_id = d.job_id),
    step_runs_deleted AS (DELETE FROM step_runs s USING deleted d WHERE s.job_id = d.job_id)
    DELETE FROM events e USING deleted d WHERE e.job_id = d.job_id";
/// Events returned by one list when the filter sets no limit, and the maximum it may request.
const EVENT_LIMIT_DEFAULT: u32 = 1000;

/// Reads one job.
pub(crate) async fn job_get(db: Db<'_>, id: &str) -> Result<Option<Job>, StoreError> {
    match db.query_opt(SELECT_JOB, &[&id]).await? {
        Some(row) => Ok(Some(job_from_row(&row)?)),
        None => Ok(None),
    }
}

/// Reads the job counters.
pub(crate) async fn job_counts(db: Db<'_>) -> Result<BTreeMap<JobState, u64>, StoreError> {
    let mut counts = BTreeMap::new();
    for row in db.query(SELECT_COUNTS, &[]).await? {
        let state: String = row.try_get(0)?;
        let count: i64 = row.try_get(1)?;
        let state = state
            .parse::<JobState>()
            .map_err(|_| corrupt("job_counts.state", &state))?;
        let count = u64::try_from(count).map_err(|_| corrupt("job_counts.count", count))?;
        counts.insert(state, count);
    }
    Ok(counts)
}

/// Counts queued jobs by priority.
pub(crate) async fn queue_depth(db: Db<'_>) -> Result<BTreeMap<Priority, u64>, StoreError> {
    let mut depth = BTreeMap::new();
    for row in db.query(SELECT_QUEUE_DEPTH, &[]).await? {
        let priority = priority_from_rank(row.try_get(0)?)?;
        let count: i64 = row.try_get(1)?;
        let count = u64::try_from(count).map_err(|_| corrupt("count", count))?;
        depth.insert(priority, count);
    }
    Ok(depth)
}

/// Lists a job's step runs by step id, then item (the step itself first).
pub(crate) async fn step_run_list(db: Db<'_>, job_id: &str) -> Result<Vec<StepRun>, StoreError> {
    decode_all(
        db.query(SELECT_STEP_RUNS, &[&job_id]).await?,
        step_run_from_row,
    )
}

/// Lists the step runs of several jobs, grouped by job id, each job's in the order of
/// [`step_run_list`]. Jobs without step runs have no entry.
pub(crate) async fn step_run_list_many(
    db: Db<'_>,
    job_ids: &[String],
) -> Result<HashMap<String, Vec<StepRun>>, StoreError> {
    let rows = db.query(SELECT_STEP_RUNS_MANY, &[&job_ids]).await?;
    let mut lists: HashMap<String, Vec<StepRun>> = HashMap::new();
    for row in &rows {
        let step_run = step_run_from_row(row)?;
        lists
            .entry(step_run.job_id.clone())
            .or_default()
            .push(step_run);
    }
    Ok(lists)
}

/// Lists a job's attempts, oldest first.
pub(crate) async fn attempt_list(db: Db<'_>, job_id: &str) -> Result<Vec<Attempt>, StoreError> {
    decode_all(
        db.query(SELECT_ATTEMPTS, &[&job_id]).await?,
        attempt_from_row,
    )
}

/// Lists events after `filter.after_seq`, in sequence order.
pub(crate) async fn event_list(db: Db<'_>, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
    let limit = i64::from(match filter.limit {
        0 => EVENT_LIMIT_DEFAULT,
        limit => limit.min(EVENT_LIMIT_DEFAULT),
    });
    let rows = match &filter.job_id {
        Some(job_id) => {
            db.query(SELECT_JOB_EVENTS, &[job_id, &filter.after_seq, &limit])
                .await?
        }
        None => {
            db.query(SELECT_EVENTS, &[&filter.after_seq, &limit])
                .await?
        }
    };
    decode_all(rows, event_from_row)
}

/// Deletes an ended job with its rows and events.
///
/// It writes no event, because the job's events go with it and the trait gives no time to
/// stamp one with.
pub(crate) async fn job_delete(tx: &mut PgTx<'_>, id: &str) -> Result<(), StoreError> {
    let head = job_head(tx, id)
        .await?
        .ok_or_else(|| StoreError::JobNotFound(id.to_owned()))?;
    if !head.state.is_final() {
        return Err(StoreError::JobStateConflict {
            job_id: id.to_owned(),
            state: head.state,
            message: "delete applies only to completed, failed or cancelled jobs: cancel it first"
                .to_owned(),
        });
    }
    let batch_id: Option<String> = match tx.query_opt(DELETE_JOB, &[&id]).await? {
        Some(row) => row.try_get(0)?,
        None => None,
    };
    let job_ids: &[&str] = &[id];
    tx.execute(DELETE_JOBS_ROWS, &[&job_ids]).await?;
    if let Some(batch_id) = batch_id {
        let batch_ids: &[String] = &[batch_id];
        tx.execute(DELETE_BATCHES_IF_EMPTY, &[&batch_ids]).await?;
    }
    tx.counts_add(head.state, -1);
    Ok(())
}
