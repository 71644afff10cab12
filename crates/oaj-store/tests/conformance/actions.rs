//! User actions on jobs in each state, and the conflicts.

use std::sync::Arc;

use oaj_core::JobState;
use oaj_store::{
    AttemptFinish, AttemptState, Control, JobAction, JobNew, JobOutcome, StepState, Store,
    StoreError,
};

use crate::support::*;

fn is_conflict(error: &StoreError) -> bool {
    matches!(error, StoreError::JobStateConflict { .. })
}

async fn cancel_queued_is_immediate(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let cancelled = store
        .job_action(&id, JobAction::Cancel, T0 + 1)
        .await
        .unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(cancelled.finished_at, Some(T0 + 1));
    assert!(claim(&store, "worker-1", 1, T0 + 2).await.is_empty());
}

async fn cancel_running_sets_control(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    let requested = store
        .job_action(&id, JobAction::Cancel, T0 + 1)
        .await
        .unwrap();
    assert_eq!(requested.state, JobState::Running);
    assert_eq!(requested.control, Some(Control::Cancel));

    store
        .attempt_start(attempt_start(&claimed.lease, "s1", T0 + 1))
        .await
        .unwrap();
    finish(&store, &claimed.lease, JobOutcome::Cancelled, T0 + 2).await;
    let ended = job(&store, &id).await;
    assert_eq!(ended.state, JobState::Cancelled);
    assert_eq!(ended.control, None);
    let steps = store.step_run_list(&id).await.unwrap();
    assert_eq!(steps[0].state, StepState::Cancelled);
}

/// Regression: a job cancelled while a step waited for its next attempt kept that step
/// `retrying` forever.
async fn cancel_ends_retrying_step(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    let attempt_id = store
        .attempt_start(attempt_start(&claimed.lease, "s1", T0 + 1))
        .await
        .unwrap();
    let failed = AttemptFinish {
        state: AttemptState::Failed,
        step_state: StepState::Retrying,
        output: None,
        error: Some("try again".to_owned()),
        next_attempt_at: Some(T0 + 60_000),
        ..attempt_success(&claimed.lease, attempt_id, "s1", T0 + 2)
    };
    store.attempt_finish(failed).await.unwrap();

    finish(&store, &claimed.lease, JobOutcome::Cancelled, T0 + 3).await;
    let steps = store.step_run_list(&id).await.unwrap();
    assert_eq!(steps[0].state, StepState::Cancelled);
    assert_eq!(steps[0].next_attempt_at, None);
}

async fn attempt_finish_returns_pending_request(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    let first = store
        .attempt_start(attempt_start(&claimed.lease, "s1", T0 + 1))
        .await
        .unwrap();
    let control = store
        .attempt_finish(attempt_success(&claimed.lease, first, "s1", T0 + 2))
        .await
        .unwrap();
    assert_eq!(control, None, "no request is pending yet");

    let second = store
        .attempt_start(attempt_start(&claimed.lease, "s2", T0 + 3))
        .await
        .unwrap();
    store
        .job_action(&id, JobAction::Pause, T0 + 4)
        .await
        .unwrap();
    let control = store
        .attempt_finish(attempt_success(&claimed.lease, second, "s2", T0 + 5))
        .await
        .unwrap();
    assert_eq!(control, Some(Control::Pause));
}

async fn pause_and_resume_queued(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let paused = store
        .job_action(&id, JobAction::Pause, T0 + 1)
        .await
        .unwrap();
    assert_eq!(paused.state, JobState::Paused);
    assert!(claim(&store, "worker-1", 1, T0 + 2).await.is_empty());
    let resumed = store
        .job_action(&id, JobAction::Resume, T0 + 3)
        .await
        .unwrap();
    assert_eq!(resumed.state, JobState::Queued);
}

async fn resume_waits_for_run_at(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let later = JobNew {
        run_at: Some(T0 + 60_000),
        ..job_new(T0)
    };
    let id = insert(&store, later).await;
    store
        .job_action(&id, JobAction::Pause, T0 + 1)
        .await
        .unwrap();
    let resumed = store
        .job_action(&id, JobAction::Resume, T0 + 2)
        .await
        .unwrap();
    assert_eq!(resumed.state, JobState::Pending);
}

async fn pause_running_sets_control(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    let requested = store
        .job_action(&id, JobAction::Pause, T0 + 1)
        .await
        .unwrap();
    assert_eq!(requested.control, Some(Control::Pause));
    finish(&store, &claimed.lease, JobOutcome::Paused, T0 + 2).await;
    let paused = job(&store, &id).await;
    assert_eq!(paused.state, JobState::Paused);
    assert_eq!(paused.control, None);
    assert_eq!(paused.lease_owner, None);
}

async fn retry_failed_resets_failed_steps(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    let done = store
        .attempt_start(attempt_start(&claimed.lease, "s1", T0 + 1))
        .await
        .unwrap();
    store
        .attempt_finish(attempt_success(&claimed.lease, done, "s1", T0 + 2))
        .await
        .unwrap();
    let failed = store
        .attempt_start(attempt_start(&claimed.lease, "s2", T0 + 3))
        .await
        .unwrap();
    let failure = AttemptFinish {
        state: AttemptState::Failed,
        step_state: StepState::Failed,
        output: None,
        error: Some("bad".into()),
        ..attempt_success(&claimed.lease, failed, "s2", T0 + 4)
    };
    store.attempt_finish(failure).await.unwrap();
    finish(
        &store,
        &claimed.lease,
        JobOutcome::Failed("s2 failed".into()),
        T0 + 5,
    )
    .await;

    let retried = store
        .job_action(&id, JobAction::Retry, T0 + 6)
        .await
        .unwrap();
    assert_eq!(retried.state, JobState::Queued);
    assert_eq!(retried.error, None);
    assert_eq!(retried.finished_at, None);
    let steps = store.step_run_list(&id).await.unwrap();
    assert_eq!(steps[0].state, StepState::Completed);
    assert_eq!(steps[1].state, StepState::Pending);
    assert_eq!(steps[1].attempts, 1, "attempt counts are kept");
    assert_eq!(store.job_counts().await.unwrap()[&JobState::Failed], 0);
}

async fn actions_conflict_on_wrong_state(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let queued = insert(&store, job_new(T0)).await;
    let error = store
        .job_action(&queued, JobAction::Resume, T0)
        .await
        .unwrap_err();
    assert!(is_conflict(&error), "{error:?}");
    assert!(error.to_string().contains("resume"), "{error}");
    let error = store
        .job_action(&queued, JobAction::Retry, T0)
        .await
        .unwrap_err();
    assert!(is_conflict(&error), "{error:?}");

    let claimed = claim_one(&store, T0).await;
    finish(
        &store,
        &claimed.lease,
        JobOutcome::Completed(serde_json::json!(1)),
        T0 + 1,
    )
    .await;
    for action in [
        JobAction::Cancel,
        JobAction::Pause,
        JobAction::Resume,
        JobAction::Retry,
    ] {
        let error = store.job_action(&queued, action, T0 + 2).await.unwrap_err();
        assert!(
            is_conflict(&error),
            "{action:?} on a completed job: {error:?}"
        );
    }
    let missing = store
        .job_action("missing", JobAction::Cancel, T0)
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::JobNotFound(_)), "{missing:?}");
}

crate::store_tests!(
    cancel_ends_retrying_step,
    cancel_queued_is_immediate,
    cancel_running_sets_control,
    attempt_finish_returns_pending_request,
    pause_and_resume_queued,
    resume_waits_for_run_at,
    pause_running_sets_control,
    retry_failed_resets_failed_steps,
    actions_conflict_on_wrong_state,
);
