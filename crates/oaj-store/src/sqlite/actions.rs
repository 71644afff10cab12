//! User actions on jobs (cancel, pause, resume, retry) and approval decisions.

use oaj_core::{JobState, Transition};
use rusqlite::params;
use serde_json::json;

use super::job_moves::{
    has_unsettled_dependencies, is_due, job_end, job_head, job_move, JobHead, JobMove,
};
use super::job_reads::job_get;
use super::rows::{control_as_str, query_all};
use super::worker_writes::step_event;
use super::writer::WriteTx;
use crate::error::StoreError;
use crate::model::{ApprovalDecide, Control, Job, JobAction};

const UPDATE_CONTROL: &str = "UPDATE jobs SET control = ?2, updated_at = ?3 WHERE id = ?1";
const UPDATE_STEPS_RETRY: &str = "UPDATE step_runs SET state = 'pending', error = NULL,
    next_attempt_at = NULL, updated_at = ?2
    WHERE job_id = ?1 AND state IN ('failed', 'cancelled', 'running', 'retrying')";
// A retry queues the job whatever its dependencies, so it waits for none of them afterwards.
// An edge left unsettled (the dependency that failed it, or one deleted since) would send the job
// to pending on a later resume, where nothing would ever settle it.
const UPDATE_EDGES_RETRY: &str =
    "UPDATE job_dependencies SET settled = 1 WHERE job_id = ?1 AND settled = 0";
const SELECT_APPROVAL_STEPS: &str = "SELECT step_id, state, decision_at IS NOT NULL
    FROM step_runs WHERE job_id = ?1 AND item = -1 AND (?2 IS NULL OR step_id = ?2)
    AND (?2 IS NOT NULL OR state = 'waiting')";
const UPDATE_DECISION: &str = "UPDATE step_runs SET decision_approved = ?3, decision_by = ?4,
    decision_comment = ?5, decision_at = ?6, updated_at = ?6
    WHERE job_id = ?1 AND step_id = ?2 AND item = -1";

/// Applies a user action and returns the job afterwards.
pub(crate) fn job_action(
    tx: &mut WriteTx<'_>,
    id: &str,
    action: JobAction,
    now: i64,
) -> Result<Job, StoreError> {
    let head = job_head(tx.conn, id)?.ok_or_else(|| StoreError::JobNotFound(id.to_owned()))?;
    let step = JobMove::new(id, &head, Transition::Cancel, now);
    use JobState::*;
    match (action, head.state) {
        (JobAction::Cancel, Running) => control_request(tx, id, Control::Cancel, now)?,
        (JobAction::Cancel, Created | Pending | Queued | Paused) => {
            job_end(tx, &step)?;
        }
        (JobAction::Pause, Running) => {
            // A cancel already requested goes further than a pause, so it stays.
            if head.control.as_deref() != Some(control_as_str(Control::Cancel)) {
                control_request(tx, id, Control::Pause, now)?;
            }
        }
        (JobAction::Pause, Pending | Queued) => {
            job_move(
                tx,
                &JobMove {
                    transition: Transition::Pause,
                    ..step
                },
            )?;
        }
        (JobAction::Resume, Paused) => resume(tx, &head, step)?,
        (JobAction::Resume, Running) if head.control.as_deref() == Some("pause") => {
            tx.conn
                .prepare_cached(UPDATE_CONTROL)?
                .execute(params![id, None::<String>, now])?;
            tx.job_event("job.pause_withdrawn".to_owned(), id, json!({}), now)?;
        }
        (JobAction::Retry, Failed | Cancelled) => {
            tx.conn
                .prepare_cached(UPDATE_STEPS_RETRY)?
                .execute(params![id, now])?;
            tx.conn.prepare_cached(UPDATE_EDGES_RETRY)?.execute([id])?;
            job_move(
                tx,
                &JobMove {
                    transition: Transition::Retry,
                    ..step
                },
            )?;
        }
        (action, state) => return Err(action_conflict(id, action, state)),
    }
    Ok(job_get(tx.conn, id)?.expect("the job was read in this transaction"))
}

fn control_request(
    tx: &mut WriteTx<'_>,
    id: &str,
    control: Control,
    now: i64,
) -> Result<(), StoreError> {
    let name = control_as_str(control);
    tx.conn
        .prepare_cached(UPDATE_CONTROL)?
        .execute(params![id, name, now])?;
    tx.job_event(format!("job.{name}_requested"), id, json!({}), now)
}

/// Resumes a paused job: queued when it may run now, pending when it still waits.
fn resume(tx: &mut WriteTx<'_>, head: &JobHead, step: JobMove<'_>) -> Result<(), StoreError> {
    let waits = has_unsettled_dependencies(tx.conn, step.job_id)? || !is_due(head.run_at, step.now);
    let transition = if waits {
        Transition::Defer
    } else {
        Transition::Resume
    };
    job_move(tx, &JobMove { transition, ..step })?;
    Ok(())
}

pub(crate) fn action_conflict(id: &str, action: JobAction, state: JobState) -> StoreError {
    let (name, allowed) = match action {
        JobAction::Cancel => ("cancel", "created, pending, queued, running or paused"),
        JobAction::Pause => ("pause", "pending, queued or running"),
        JobAction::Resume => ("resume", "paused (or running with a pause requested)"),
        JobAction::Retry => ("retry", "failed or cancelled"),
    };
    StoreError::JobStateConflict {
        job_id: id.to_owned(),
        state,
        message: format!("{name} applies only to {allowed} jobs"),
    }
}

/// Records an approval decision on a waiting step and queues a parked job again.
pub(crate) fn approval_decide(
    tx: &mut WriteTx<'_>,
    decide: &ApprovalDecide,
) -> Result<(), StoreError> {
    let job_id = decide.job_id.as_str();
    let head =
        job_head(tx.conn, job_id)?.ok_or_else(|| StoreError::JobNotFound(job_id.to_owned()))?;
    let step_id = approval_step(tx, decide)?;
    let decision = &decide.decision;
    tx.conn.prepare_cached(UPDATE_DECISION)?.execute(params![
        job_id,
        step_id,
        decision.approved,
        decision.by,
        decision.comment,
        decision.at
    ])?;
    let data = json!({ "approved": decision.approved, "by": decision.by });
    tx.event_add(step_event(
        "approval.decided",
        job_id,
        &step_id,
        None,
        data,
        decision.at,
    ))?;

    if head.state == JobState::Pending {
        job_move(
            tx,
            &JobMove::new(job_id, &head, Transition::Enqueue, decision.at),
        )?;
    }
    Ok(())
}

/// Finds the step the decision is for: the named one, or the only one waiting.
fn approval_step(tx: &WriteTx<'_>, decide: &ApprovalDecide) -> Result<String, StoreError> {
    let steps = query_all(
        tx.conn,
        SELECT_APPROVAL_STEPS,
        params![decide.job_id, decide.step_id],
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, bool>(2)?,
            ))
        },
    )?;
    let not_waiting = || StoreError::ApprovalNotWaiting {
        job_id: decide.job_id.clone(),
        step_id: decide.step_id.clone(),
    };
    // A step that has a decision already waits only for the worker to act on it.
    let waiting: Vec<String> = steps
        .into_iter()
        .filter(|(_, state, is_decided)| state == "waiting" && !is_decided)
        .map(|(step_id, _, _)| step_id)
        .collect();
    match waiting.len() {
        0 => Err(not_waiting()),
        1 => Ok(waiting.into_iter().next().expect("one element")),
        _ => Err(StoreError::ApprovalStepAmbiguous {
            job_id: decide.job_id.clone(),
            step_ids: waiting,
        }),
    }
}
