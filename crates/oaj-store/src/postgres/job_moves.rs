//! Job state changes: every move goes through `oaj_core::transition`, updates the counters and
//! writes its event in the same transaction. Ending a job settles the jobs that depend on it.
//!
//! A transaction that moves a job first locks its row (`FOR NO KEY UPDATE`), so two processes
//! never decide a move from the same stale state.

use oaj_core::{transition, JobState, Priority, Transition};
use serde_json::{json, Value};
use tokio_postgres::Row;

use super::rows::{priority_from_rank, state_at};
use super::tx::PgTx;
use crate::error::StoreError;
use crate::model::DependencyFailure;
use crate::sqlite::job_moves::{dependency_effect, DependencyEffect};
use crate::sqlite::rows::dependency_failure_from_str;

// Every move leaves the job without a lease and without a pending user request, because both
// exist only while a worker has the job. Claims set them in their own statement.
const UPDATE_MOVE: &str = "UPDATE jobs SET state = $2, updated_at = $3, lease_owner = NULL,
    lease_expires_at = NULL, control = NULL, claim_key = COALESCE($4::bigint, claim_key),
    finished_at = $5, result = $6, error = $7,
    run_at = CASE WHEN $8::boolean THEN $9::bigint ELSE run_at END
    WHERE id = $1";
const SELECT_HEAD: &str = "SELECT state, priority, on_dependency_failure, run_at, control
    FROM jobs WHERE id = $1 FOR NO KEY UPDATE";
const SELECT_UNSETTLED_DEPENDENTS: &str = "SELECT d.job_id, d.position, j.state, j.priority,
    j.on_dependency_failure, j.run_at FROM job_dependencies d JOIN jobs j ON j.id = d.job_id
    WHERE d.depends_on_id = $1 AND NOT d.settled ORDER BY d.job_id, d.position
    FOR NO KEY UPDATE OF j";
const UPDATE_SETTLE_EDGE: &str =
    "UPDATE job_dependencies SET settled = TRUE WHERE job_id = $1 AND position = $2";
const SELECT_HAS_UNSETTLED: &str =
    "SELECT EXISTS (SELECT 1 FROM job_dependencies WHERE job_id = $1 AND NOT settled)";
const UPDATE_CANCEL_RUNNING_STEPS: &str = "UPDATE step_runs SET state = 'cancelled',
    next_attempt_at = NULL, updated_at = $2
    WHERE job_id = $1 AND state IN ('running', 'retrying', 'waiting')";

/// The fields of a job that decide its moves.
#[derive(Debug, Clone)]
pub(crate) struct JobHead {
    pub(crate) state: JobState,
    pub(crate) priority: Priority,
    pub(crate) on_dependency_failure: DependencyFailure,
    pub(crate) run_at: Option<i64>,
    pub(crate) control: Option<String>,
}

/// Locks a job's row and reads the fields that decide its moves, or `None` when there is no
/// such job.
pub(crate) async fn job_head(tx: &PgTx<'_>, job_id: &str) -> Result<Option<JobHead>, StoreError> {
    let Some(row) = tx.query_opt(SELECT_HEAD, &[&job_id]).await? else {
        return Ok(None);
    };
    Ok(Some(JobHead {
        state: state_at(&row, 0)?,
        priority: priority_from_rank(row.try_get(1)?)?,
        on_dependency_failure: dependency_failure_from_str(&row.try_get::<_, String>(2)?)?,
        run_at: row.try_get(3)?,
        control: row.try_get(4)?,
    }))
}

/// One state change of one job, with the values the new state carries.
#[derive(Debug, Clone)]
pub(crate) struct JobMove<'a> {
    pub(crate) job_id: &'a str,
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
pub(crate) async fn job_move(
    tx: &mut PgTx<'_>,
    step: &JobMove<'_>,
) -> Result<JobState, StoreError> {
    let to = transition(step.from, step.transition).unwrap_or_else(|illegal| {
        panic!(
            "store asked for an illegal move of job {}: {illegal}",
            step.job_id
        )
    });
    let claim_key = (to == JobState::Queued).then(|| step.priority.claim_key(step.now));
    let finished_at = to.is_final().then_some(step.now);
    let result = step.result.map(Value::to_string);
    let sets_run_at = step.run_at.is_some();
    let run_at = step.run_at.flatten();
    tx.execute(
        UPDATE_MOVE,
        &[
            &step.job_id,
            &to.as_str(),
            &step.now,
            &claim_key,
            &finished_at,
            &result,
            &step.error,
            &sets_run_at,
            &run_at,
        ],
    )
    .await?;
    job_move_note(tx, step, to);
    Ok(to)
}

/// Adds the counter change, the `job.<state>` event and the wake-up of a move to `to` whose row
/// has been written.
pub(crate) fn job_move_note(tx: &mut PgTx<'_>, step: &JobMove<'_>, to: JobState) {
    tx.counts_move(step.from, to, 1);
    let data = match &step.error {
        Some(error) => json!({ "from": step.from.as_str(), "error": error }),
        None => json!({ "from": step.from.as_str() }),
    };
    tx.job_event(format!("job.{to}"), step.job_id, data, step.now);
    if to == JobState::Queued {
        tx.wake_workers();
    }
}

/// Moves a job to a final state, then settles the jobs that depend on it, and theirs in turn.
pub(crate) async fn job_end(tx: &mut PgTx<'_>, step: &JobMove<'_>) -> Result<JobState, StoreError> {
    let to = job_move(tx, step).await?;
    assert!(to.is_final(), "job_end moves to a final state, not {to}");
    if to == JobState::Cancelled {
        tx.execute(UPDATE_CANCEL_RUNNING_STEPS, &[&step.job_id, &step.now])
            .await?;
    }
    dependents_settle(tx, step.job_id, to, step.now).await?;
    Ok(to)
}

struct Dependent {
    job_id: String,
    position: i64,
    head: JobHead,
}

/// Settles the jobs that wait for `job_id`, which just ended in `state`, and cascades through
/// the jobs that fail as a result. A worklist instead of recursion keeps long chains safe.
pub(crate) async fn dependents_settle(
    tx: &mut PgTx<'_>,
    job_id: &str,
    state: JobState,
    now: i64,
) -> Result<(), StoreError> {
    let mut ended = vec![(job_id.to_owned(), state)];
    while let Some((dependency_id, dependency_state)) = ended.pop() {
        let rows = tx
            .query(SELECT_UNSETTLED_DEPENDENTS, &[&dependency_id])
            .await?;
        for row in rows {
            let dependent = dependent_from_row(&row)?;
            match dependency_effect(dependency_state, dependent.head.on_dependency_failure) {
                DependencyEffect::Satisfied => dependent_satisfy(tx, &dependent, now).await?,
                DependencyEffect::FailsDependent => {
                    let reason = format!("dependency {dependency_id} {dependency_state}");
                    if dependent_fail(tx, &dependent, reason, now).await? {
                        ended.push((dependent.job_id, JobState::Failed));
                    }
                }
            }
        }
    }
    Ok(())
}

fn dependent_from_row(row: &Row) -> Result<Dependent, StoreError> {
    Ok(Dependent {
        job_id: row.try_get(0)?,
        position: row.try_get(1)?,
        head: JobHead {
            state: state_at(row, 2)?,
            priority: priority_from_rank(row.try_get(3)?)?,
            on_dependency_failure: dependency_failure_from_str(&row.try_get::<_, String>(4)?)?,
            run_at: row.try_get(5)?,
            control: None,
        },
    })
}

/// Marks one dependency of a job as settled, and queues the job when it was the last one.
async fn dependent_satisfy(
    tx: &mut PgTx<'_>,
    dependent: &Dependent,
    now: i64,
) -> Result<(), StoreError> {
    tx.execute(
        UPDATE_SETTLE_EDGE,
        &[&dependent.job_id, &dependent.position],
    )
    .await?;
    if dependent.head.state != JobState::Pending || !is_due(dependent.head.run_at, now) {
        return Ok(());
    }
    if has_unsettled_dependencies(tx, &dependent.job_id).await? {
        return Ok(());
    }
    let step = JobMove::new(&dependent.job_id, &dependent.head, Transition::Enqueue, now);
    job_move(tx, &step).await?;
    Ok(())
}

/// Fails a job whose dependency failed, if it is still waiting. Returns whether it failed.
async fn dependent_fail(
    tx: &mut PgTx<'_>,
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
    job_move(tx, &step).await?;
    Ok(true)
}

/// Reports whether a job still waits for a dependency.
pub(crate) async fn has_unsettled_dependencies(
    tx: &PgTx<'_>,
    job_id: &str,
) -> Result<bool, StoreError> {
    tx.db().query_value(SELECT_HAS_UNSETTLED, &[&job_id]).await
}

pub(crate) use crate::sqlite::job_moves::is_due;
