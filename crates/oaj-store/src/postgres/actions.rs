//! User actions on jobs (cancel, pause, resume, retry) and approval decisions.

use oaj_core::{JobState, Transition};
use serde_json::json;

use super::job_moves::{
    has_unsettled_dependencies, is_due, job_end, job_head, job_move, JobHead, JobMove,
};
use super::job_reads::job_get;
use super::tx::PgTx;
use super::worker_writes::step_event;
use crate::error::StoreError;
use crate::model::{ApprovalDecide, Control, Job, JobAction};
use crate::sqlite::actions::action_conflict;
use crate::sqlite::rows::control_as_str;

const UPDATE_CONTROL: &str = "UPDATE jobs SET control = $2, updated_at = $3 WHERE id = $1";
const UPDATE_STEPS_RETRY: &str = "UPDATE step_runs SET state = 'pending', error = NULL,
    next_attempt_at = NULL, updated_at = $2
    WHERE job_id = $1 AND state IN ('failed', 'cancelled', 'running', 'retrying')";
// A retry queues the job whatever its dependencies, so it waits for none of them afterwards.
// An edge left unsettled (the dependency that failed it, or one deleted since) would send the job
// to pending on a later resume, where nothing would ever settle it.
const UPDATE_EDGES_RETRY: &str =
    "UPDATE job_dependencies SET settled = TRUE WHERE job_id = $1 AND NOT settled";
const SELECT_APPROVAL_STEPS: &str = "SELECT step_id, state, decision_at IS NOT NULL
    FROM step_runs WHERE job_id = $1 AND item = -1 AND ($2::text IS NULL OR step_id = $2)
    AND ($2::text IS NOT NULL OR state = 'waiting')";
const UPDATE_DECISION: &str = "UPDATE step_runs SET decision_approved = $3, decision_by = $4,
    decision_comment = $5, decision_at = $6, updated_at = $6
    WHERE job_id = $1 AND step_id = $2 AND item = -1";

/// Applies a user action and returns the job afterwards.
pub(crate) async fn job_action(
    tx: &mut PgTx<'_>,
    id: &str,
    action: JobAction,
    now: i64,
) -> Result<Job, StoreError> {
    let head = job_head(tx, id)
        .await?
        .ok_or_else(|| StoreError::JobNotFound(id.to_owned()))?;
    let step = JobMove::new(id, &head, Transition::Cancel, now);
    use JobState::*;
    match (action, head.state) {
        (JobAction::Cancel, Running) => control_request(tx, id, Control::Cancel, now).await?,
        (JobAction::Cancel, Created | Pending | Queued | Paused) => {
            job_end(tx, &step).await?;
        }
        (JobAction::Pause, Running) => {
            // A cancel already requested goes further than a pause, so it stays.
            if head.control.as_deref() != Some(control_as_str(Control::Cancel)) {
                control_request(tx, id, Control::Pause, now).await?;
            }
        }
        (JobAction::Pause, Pending | Queued) => {
            let transition = Transition::Pause;
            job_move(tx, &JobMove { transition, ..step }).await?;
        }
        (JobAction::Resume, Paused) => resume(tx, &head, step).await?,
        (JobAction::Resume, Running) if head.control.as_deref() == Some("pause") => {
            tx.execute(UPDATE_CONTROL, &[&id, &None::<String>, &now])
                .await?;
            tx.job_event("job.pause_withdrawn".to_owned(), id, json!({}), now);
        }
        (JobAction::Retry, Failed | Cancelled) => {
            tx.execute(UPDATE_STEPS_RETRY, &[&id, &now]).await?;
            tx.execute(UPDATE_EDGES_RETRY, &[&id]).await?;
            let transition = Transition::Retry;
            job_move(tx, &JobMove { transition, ..step }).await?;
        }
        (action, state) => return Err(action_conflict(id, action, state)),
    }
    Ok(job_get(tx.db(), id)
        .await?
        .expect("the job was read in this transaction"))
}

async fn control_request(
    tx: &mut PgTx<'_>,
    id: &str,
    control: Control,
    now: i64,
) -> Result<(), StoreError> {
    let name = control_as_str(control);
    tx.execute(UPDATE_CONTROL, &[&id, &name, &now]).await?;
    tx.job_event(format!("job.{name}_requested"), id, json!({}), now);
    Ok(())
}

/// Resumes a paused job: queued when it may run now, pending when it still waits.
async fn resume(tx: &mut PgTx<'_>, head: &JobHead, step: JobMove<'_>) -> Result<(), StoreError> {
    let waits =
        has_unsettled_dependencies(tx, step.job_id).await? || !is_due(head.run_at, step.now);
    let transition = if waits {
        Transition::Defer
    } else {
        Transition::Resume
    };
    job_move(tx, &JobMove { transition, ..step }).await?;
    Ok(())
}

/// Records an approval decision on a waiting step and queues a parked job again.
pub(crate) async fn approval_decide(
    tx: &mut PgTx<'_>,
    decide: &ApprovalDecide,
) -> Result<(), StoreError> {
    let job_id = decide.job_id.as_str();
    let head = job_head(tx, job_id)
        .await?
        .ok_or_else(|| StoreError::JobNotFound(job_id.to_owned()))?;
    let step_id = approval_step(tx, decide).await?;
    let decision = &decide.decision;
    tx.execute(
        UPDATE_DECISION,
        &[
            &job_id,
            &step_id,
            &decision.approved,
            &decision.by,
            &decision.comment,
            &decision.at,
        ],
    )
    .await?;
    let data = json!({ "approved": decision.approved, "by": decision.by });
    tx.event_add(step_event(
        "approval.decided",
        job_id,
        &step_id,
        None,
        data,
        decision.at,
    ));

    if head.state == JobState::Pending {
        let step = JobMove::new(job_id, &head, Transition::Enqueue, decision.at);
        job_move(tx, &step).await?;
    }
    Ok(())
}

/// Finds the step the decision is for: the named one, or the only one waiting.
async fn approval_step(tx: &PgTx<'_>, decide: &ApprovalDecide) -> Result<String, StoreError> {
    let rows = tx
        .query(SELECT_APPROVAL_STEPS, &[&decide.job_id, &decide.step_id])
        .await?;
    let not_waiting = || StoreError::ApprovalNotWaiting {
        job_id: decide.job_id.clone(),
        step_id: decide.step_id.clone(),
    };
    // A step that has a decision already waits only for the worker to act on it.
    let mut waiting = Vec::new();
    for row in rows {
        let state: String = row.try_get(1)?;
        let is_decided: bool = row.try_get(2)?;
        if state == "waiting" && !is_decided {
            waiting.push(row.try_get::<_, String>(0)?);
        }
    }
    match waiting.len() {
        0 => Err(not_waiting()),
        1 => Ok(waiting.into_iter().next().expect("one element")),
        _ => Err(StoreError::ApprovalStepAmbiguous {
            job_id: decide.job_id.clone(),
            step_ids: waiting,
        }),
    }
}
