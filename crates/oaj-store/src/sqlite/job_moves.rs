//! Job state changes: every move goes through `oaj_core::transition`, updates the counters and
//! writes its event in the same transaction. Ending a job settles the jobs that depend on it.

use oaj_core::{transition, JobState, Priority, Transition};
use rusqlite::{params, Connection, Row};
use serde_json::{json, Value};

use super::rows::{query_all, query_first};
use super::writer::WriteTx;
use crate::error::StoreError;
use crate::model::{DependencyFailure, Lease};

// Every move leaves the job without a lease and without a pending user request, because both
// exist only while a worker has the job. Claims set them in their own statement. `OR FAIL` spares
// SQLite a statement journal (see "Hot statements run without a statement journal" in
// docs/ARCHITECTURE.md). The row is found by the rowid its head was read with, which skips a
// search of the index of ids.
pub(crate) const UPDATE_MOVE: &str =
    "UPDATE OR FAIL jobs SET state = ?2, updated_at = ?3, lease_owner = NULL,
    lease_expires_at = NULL, control = NULL, claim_key = COALESCE(?4, claim_key),
    finished_at = ?5, result = ?6, error = ?7, run_at = CASE WHEN ?8 THEN ?9 ELSE run_at END
    WHERE rowid = ?1";
const SELECT_HEAD: &str = "SELECT state, priority, on_dependency_failure, run_at, control,
    rowid FROM jobs WHERE id = ?1";
const SELECT_HEAD_LEASED: &str = "SELECT state, priority, on_dependency_failure, run_at,
    control, rowid, lease_token FROM jobs WHERE id = ?1";
const SELECT_UNSETTLED_DEPENDENTS: &str = "SELECT d.job_id, d.position, j.state, j.priority,
    j.on_dependency_failure, j.run_at, j.rowid FROM job_dependencies d
    JOIN jobs j ON j.id = d.job_id WHERE d.depends_on_id = ?1 AND d.settled = 0";
const UPDATE_SETTLE_EDGE: &str =
    "UPDATE job_dependencies SET settled = 1 WHERE job_id = ?1 AND position = ?2";
const SELECT_HAS_UNSETTLED: &str =
    "SELECT EXISTS (SELECT 1 FROM job_dependencies WHERE job_id = ?1 AND settled = 0)";
const UPDATE_CANCEL_RUNNING_STEPS: &str = "UPDATE step_runs SET state = 'cancelled',
    next_attempt_at = NULL, updated_at = ?2
    WHERE job_id = ?1 AND state IN ('running', 'retrying', 'waiting')";

/// The fields of a job that decide its moves.
#[derive(Debug, Clone)]
pub(crate) struct JobHead {
    pub(crate) state: JobState,
    pub(crate) priority: Priority,
    pub(crate) on_dependency_failure: DependencyFailure,
    pub(crate) run_at: Option<i64>,
    pub(crate) control: Option<String>,
    /// The row's rowid, valid within the transaction that read it.
    pub(crate) rowid: i64,
}

/// Reads the fields of a job that decide its moves, or `None` when there is no such job.
pub(crate) fn job_head(conn: &Connection, job_id: &str) -> Result<Option<JobHead>, StoreError> {
    query_first(conn, SELECT_HEAD, [job_id], |row| {
        Ok(JobHead {
            state: state_column(row, 0)?,
            priority: priority_column(row, 1)?,
            on_dependency_failure: policy_column(row, 2)?,
            run_at: row.get(3)?,
            control: row.get(4)?,
            rowid: row.get(5)?,
        })
    })
}

/// Reads the fields of a job that decide its moves, after checking that `lease` is its current
/// lease and the job is running (the fencing of [`super::claims::lease_check`]).
pub(crate) fn job_head_leased(conn: &Connection, lease: &Lease) -> Result<JobHead, StoreError> {
    let row = query_first(conn, SELECT_HEAD_LEASED, [&lease.job_id], |row| {
        let head = JobHead {
            state: state_column(row, 0)?,
            priority: priority_column(row, 1)?,
            on_dependency_failure: policy_column(row, 2)?,
            run_at: row.get(3)?,
            control: row.get(4)?,
            rowid: row.get(5)?,
        };
        Ok((head, row.get::<_, i64>(6)?))
    })?;
    match row {
        Some((head, token)) if token == lease.token && head.state == JobState::Running => Ok(head),
        _ => Err(StoreError::LeaseLost {
            job_id: lease.job_id.clone(),
            token: lease.token,
        }),
    }
}

/// One state change of one job, with the values the new state carries.
#[derive(Debug, Clone)]
pub(crate) struct JobMove<'a> {
    pub(crate) job_id: &'a str,
    /// The job's rowid, from the head the move was built from.
    pub(crate) rowid: i64,
    pub(crate) from: JobState,
    pub(crate) priority: Priority,
    pub(crate) transition: Transition,
    pub(crate) now: i64,
    /// Result of a completed job.
    pub(crate) result: Option<&'a Value>,
    /// Reason of a failed or cancelled job.
    pub(crate) error: Option<String>,
    /// `Some` to set `run_at`, as parking does; `None` keeps it.
    pub(crate) run_at: Option<Option<i64>>,
}

impl<'a> JobMove<'a> {
    /// Builds a move that carries no result, error or new `run_at`.
    pub(crate) fn new(job_id: &'a str, head: &JobHead, transition: Transition, now: i64) -> Self {
        JobMove {
            job_id,
            rowid: head.rowid,
            from: head.state,
            priority: head.priority,
            transition,
            now,
            result: None,
            error: None,
            run_at: None,
        }
    }
}

/// Moves a job, updates the counters and writes the `job.<state>` event. Does not settle
/// dependents: [`job_end`] does that for moves to a final state.
///
/// Panics when `oaj_core::transition` rejects the move, because callers check the state first.
pub(crate) fn job_move(tx: &mut WriteTx<'_>, step: &JobMove<'_>) -> Result<JobState, StoreError> {
    let to = transition(step.from, step.transition).unwrap_or_else(|illegal| {
        panic!(
            "store asked for an illegal move of job {}: {illegal}",
            step.job_id
        )
    });
    let claim_key = (to == JobState::Queued).then(|| step.priority.claim_key(step.now));
    let finished_at = to.is_final().then_some(step.now);
    let result = step.result.map(Value::to_string);
    tx.conn.prepare_cached(UPDATE_MOVE)?.execute(params![
        step.rowid,
        to.as_str(),
        step.now,
        claim_key,
        finished_at,
        result,
        step.error,
        step.run_at.is_some(),
        step.run_at.flatten(),
    ])?;
    tx.count_add(step.from, -1);
    tx.count_add(to, 1);

    let data = match &step.error {
        Some(error) => json!({ "from": step.from.as_str(), "error": error }),
        None => json!({ "from": step.from.as_str() }),
    };
    tx.job_event(format!("job.{to}"), step.job_id, data, step.now)?;
    if to == JobState::Queued {
        tx.wake_workers();
    }
    Ok(to)
}

/// Moves a job to a final state, then settles the jobs that depend on it, and theirs in turn.
pub(crate) fn job_end(tx: &mut WriteTx<'_>, step: &JobMove<'_>) -> Result<JobState, StoreError> {
    let to = job_move(tx, step)?;
    assert!(to.is_final(), "job_end moves to a final state, not {to}");
    if to == JobState::Cancelled {
        tx.conn
            .prepare_cached(UPDATE_CANCEL_RUNNING_STEPS)?
            .execute(params![step.job_id, step.now])?;
    }
    dependents_settle(tx, step.job_id, to, step.now)?;
    Ok(to)
}

/// The effect of an ended dependency on one job that waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DependencyEffect {
    /// The dependency no longer keeps the job waiting.
    Satisfied,
    /// The job fails because the dependency did not complete.
    FailsDependent,
}

pub(crate) fn dependency_effect(ended: JobState, policy: DependencyFailure) -> DependencyEffect {
    match (ended, policy) {
        (JobState::Completed, _) | (_, DependencyFailure::Run) => DependencyEffect::Satisfied,
        _ => DependencyEffect::FailsDependent,
    }
}

struct Dependent {
    job_id: String,
    position: i64,
    head: JobHead,
}

/// Settles the jobs that wait for `job_id`, which just ended in `state`, and cascades through
/// the jobs that fail as a result. A worklist instead of recursion keeps long chains safe.
fn dependents_settle(
    tx: &mut WriteTx<'_>,
    job_id: &str,
    state: JobState,
    now: i64,
) -> Result<(), StoreError> {
    let mut ended = vec![(job_id.to_owned(), state)];
    while let Some((dependency_id, dependency_state)) = ended.pop() {
        for dependent in query_all(
            tx.conn,
            SELECT_UNSETTLED_DEPENDENTS,
            [&dependency_id],
            dependent_from_row,
        )? {
            match dependency_effect(dependency_state, dependent.head.on_dependency_failure) {
                DependencyEffect::Satisfied => dependent_satisfy(tx, &dependent, now)?,
                DependencyEffect::FailsDependent => {
                    let reason = format!("dependency {dependency_id} {dependency_state}");
                    if dependent_fail(tx, &dependent, reason, now)? {
                        ended.push((dependent.job_id, JobState::Failed));
                    }
                }
            }
        }
    }
    Ok(())
}

fn dependent_from_row(row: &Row<'_>) -> Result<Dependent, StoreError> {
    Ok(Dependent {
        job_id: row.get(0)?,
        position: row.get(1)?,
        head: JobHead {
            state: state_column(row, 2)?,
            priority: priority_column(row, 3)?,
            on_dependency_failure: policy_column(row, 4)?,
            run_at: row.get(5)?,
            control: None,
            rowid: row.get(6)?,
        },
    })
}

/// Marks one dependency of a job as settled, and queues the job when it was the last one.
fn dependent_satisfy(
    tx: &mut WriteTx<'_>,
    dependent: &Dependent,
    now: i64,
) -> Result<(), StoreError> {
    tx.conn
        .prepare_cached(UPDATE_SETTLE_EDGE)?
        .execute(params![dependent.job_id, dependent.position])?;
    if dependent.head.state != JobState::Pending || !is_due(dependent.head.run_at, now) {
        return Ok(());
    }
    if has_unsettled_dependencies(tx.conn, &dependent.job_id)? {
        return Ok(());
    }
    let step = JobMove::new(&dependent.job_id, &dependent.head, Transition::Enqueue, now);
    job_move(tx, &step)?;
    Ok(())
}

/// Fails a job whose dependency failed, if it is still waiting. Returns whether it failed.
fn dependent_fail(
    tx: &mut WriteTx<'_>,
    dependent: &Dependent,
    reason: String,
    now: i64,
) -> Result<bool, StoreError> {
    // A job that already ended, or that a user retried or that is running, is left alone.
    let is_waiting = matches!(
        dependent.head.state,
        JobState::Created | JobState::Pending | JobState::Paused
    );
    if !is_waiting {
        return Ok(false);
    }
    let mut step = JobMove::new(&dependent.job_id, &dependent.head, Transition::Fail, now);
    step.error = Some(reason);
    job_move(tx, &step)?;
    Ok(true)
}

/// Reports whether a job still waits for a dependency.
pub(crate) fn has_unsettled_dependencies(
    conn: &Connection,
    job_id: &str,
) -> Result<bool, StoreError> {
    let exists: bool = conn
        .prepare_cached(SELECT_HAS_UNSETTLED)?
        .query_row([job_id], |row| row.get(0))?;
    Ok(exists)
}

/// Reports whether a start time has come; no start time means now.
pub(crate) fn is_due(run_at: Option<i64>, now: i64) -> bool {
    run_at.is_none_or(|run_at| run_at <= now)
}

fn state_column(row: &Row<'_>, index: usize) -> Result<JobState, StoreError> {
    let text: String = row.get(index)?;
    text.parse()
        .map_err(|_| super::errors::corrupt("jobs.state", text))
}

fn priority_column(row: &Row<'_>, index: usize) -> Result<Priority, StoreError> {
    let rank: i64 = row.get(index)?;
    Priority::from_rank(rank).ok_or_else(|| super::errors::corrupt("jobs.priority", rank))
}

fn policy_column(row: &Row<'_>, index: usize) -> Result<DependencyFailure, StoreError> {
    let text: String = row.get(index)?;
    super::rows::dependency_failure_from_str(&text)
}
