//! Whole attempts recorded in one write: alone with `attempts_record`, or ahead of the job's end
//! with `JobFinish::attempts`.

use std::sync::Arc;

use oaj_core::JobState;
use oaj_store::{
    AttemptRecord, AttemptState, Control, EventFilter, JobAction, JobFinish, JobOutcome, Lease,
    MaintenanceParams, StepState, Store, StoreError,
};
use serde_json::json;

use crate::support::*;

/// Builds a failed first attempt of `s1` that leaves the step retrying.
fn failed_first(lease: &Lease, now: i64) -> AttemptRecord {
    let mut finish = attempt_success(lease, 0, "s1", now + 1);
    finish.state = AttemptState::Failed;
    finish.step_state = StepState::Retrying;
    finish.output = None;
    finish.error = Some("upstream timed out".to_owned());
    finish.next_attempt_at = Some(now + 100);
    finish.prompt_tokens = 3;
    finish.completion_tokens = 0;
    AttemptRecord {
        start: attempt_start(lease, "s1", now),
        finish,
    }
}

/// Builds a successful second attempt of `s1`.
fn succeeded_second(lease: &Lease, now: i64) -> AttemptRecord {
    let mut start = attempt_start(lease, "s1", now);
    start.number = 2;
    AttemptRecord {
        start,
        finish: attempt_success(lease, 0, "s1", now + 1),
    }
}

fn event_kinds(events: &[oaj_store::Event]) -> Vec<&str> {
    events.iter().map(|event| event.kind.as_str()).collect()
}

async fn finish_writes_records_first(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    let lease = claimed.lease.clone();
    let finish = JobFinish {
        lease: lease.clone(),
        attempts: vec![
            failed_first(&lease, T0 + 1),
            succeeded_second(&lease, T0 + 3),
        ],
        outcome: JobOutcome::Completed(json!({ "summary": "hi" })),
        now: T0 + 5,
    };
    store.job_finish(finish).await.unwrap();

    let attempts = store.attempt_list(&id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].number, 1);
    assert_eq!(attempts[0].state, AttemptState::Failed);
    assert_eq!(attempts[0].error.as_deref(), Some("upstream timed out"));
    assert_eq!(attempts[0].started_at, T0 + 1);
    assert_eq!(attempts[0].finished_at, Some(T0 + 2));
    assert_eq!(attempts[1].number, 2);
    assert_eq!(attempts[1].state, AttemptState::Succeeded);
    assert_eq!(attempts[1].lease_token, lease.token);

    let steps = store.step_run_list(&id).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].state, StepState::Completed);
    assert_eq!(steps[0].attempts, 2);
    assert_eq!(steps[0].output, Some(json!({ "summary": "hi" })));
    assert_eq!(steps[0].error, None);
    assert_eq!(steps[0].next_attempt_at, None);

    let job = job(&store, &id).await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.prompt_tokens, 13);
    assert_eq!(job.completion_tokens, 5);
    let filter = EventFilter {
        job_id: Some(id.clone()),
        ..EventFilter::default()
    };
    let events = store.event_list(filter).await.unwrap();
    assert_eq!(
        event_kinds(&events),
        [
            "job.created",
            "job.running",
            "attempt.started",
            "attempt.failed",
            "attempt.started",
            "attempt.succeeded",
            "job.completed"
        ]
    );
    assert_eq!(events[3].attempt, Some(1));
    assert_eq!(events[5].attempt, Some(2));
}

async fn finish_with_lost_lease_records_nothing(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let first = claim_one(&store, T0).await;
    let rescue = MaintenanceParams {
        now: T0 + LEASE_MS + 1,
        interruptions_max: 5,
        retention_ms: None,
        batch_size: 100,
    };
    store.maintenance(rescue).await.unwrap();
    let second = claim_one(&store, T0 + LEASE_MS + 2).await;
    assert_eq!(second.job.id, id);

    let finish = JobFinish {
        lease: first.lease.clone(),
        attempts: vec![succeeded_second(&first.lease, T0 + 1)],
        outcome: JobOutcome::Completed(json!(1)),
        now: T0 + 3,
    };
    let error = store.job_finish(finish).await.unwrap_err();
    assert!(matches!(error, StoreError::LeaseLost { .. }), "{error:?}");
    let records = vec![failed_first(&first.lease, T0 + 1)];
    let error = store.attempts_record(records).await.unwrap_err();
    assert!(matches!(error, StoreError::LeaseLost { .. }), "{error:?}");

    assert!(store.attempt_list(&id).await.unwrap().is_empty());
    assert!(store.step_run_list(&id).await.unwrap().is_empty());
    assert_eq!(job(&store, &id).await.state, JobState::Running);
}

async fn attempts_record_returns_control(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    let records = vec![failed_first(&claimed.lease, T0 + 1)];
    assert_eq!(store.attempts_record(records).await.unwrap(), None);

    store
        .job_action(&id, JobAction::Pause, T0 + 2)
        .await
        .unwrap();
    let records = vec![succeeded_second(&claimed.lease, T0 + 3)];
    let control = store.attempts_record(records).await.unwrap();
    assert_eq!(control, Some(Control::Pause));

    let attempts = store.attempt_list(&id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    let steps = store.step_run_list(&id).await.unwrap();
    assert_eq!(steps[0].state, StepState::Completed);
    assert_eq!(steps[0].attempts, 2);
}

crate::store_tests!(
    finish_writes_records_first,
    finish_with_lost_lease_records_nothing,
    attempts_record_returns_control,
);
