//! Fencing and lease renewal: a worker whose lease was taken cannot write.

use std::sync::Arc;

use oaj_core::JobState;
use oaj_store::{
    AttemptState, JobAction, JobOutcome, Lease, LeaseExtend, LeaseStatus, MaintenanceParams,
    StepState, StepUpdate, Store, StoreError,
};

use crate::support::*;

fn rescue_params(now: i64) -> MaintenanceParams {
    MaintenanceParams {
        now,
        interruptions_max: 5,
        retention_ms: None,
        batch_size: 100,
    }
}

fn is_lease_lost(error: &StoreError) -> bool {
    matches!(error, StoreError::LeaseLost { .. })
}

async fn old_token_rejected_after_reclaim(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let first = claim_one(&store, T0).await;
    store
        .maintenance(rescue_params(T0 + LEASE_MS + 1))
        .await
        .unwrap();
    let second = claim_one(&store, T0 + LEASE_MS + 2).await;
    assert_eq!(second.job.id, id);
    assert!(second.lease.token > first.lease.token);

    let start = store
        .attempt_start(attempt_start(&first.lease, "s1", T0))
        .await;
    assert!(is_lease_lost(&start.unwrap_err()));
    let update = StepUpdate {
        lease: first.lease.clone(),
        step_id: "s1".into(),
        item: None,
        state: StepState::Skipped,
        output: None,
        error: None,
        items_total: None,
        now: T0,
    };
    assert!(is_lease_lost(&store.step_update(update).await.unwrap_err()));
    let finish = oaj_store::JobFinish {
        lease: first.lease.clone(),
        attempts: Vec::new(),
        outcome: JobOutcome::Completed(serde_json::json!(1)),
        now: T0,
    };
    assert!(is_lease_lost(&store.job_finish(finish).await.unwrap_err()));

    assert!(
        store.step_run_list(&id).await.unwrap().is_empty(),
        "nothing was written"
    );
    assert!(store.attempt_list(&id).await.unwrap().is_empty());
    assert_eq!(job(&store, &id).await.state, JobState::Running);
}

async fn lease_rejected_after_job_finish(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    finish(&store, &claimed.lease, JobOutcome::Released, T0 + 1).await;
    let start = store
        .attempt_start(attempt_start(&claimed.lease, "s1", T0 + 2))
        .await;
    assert!(is_lease_lost(&start.unwrap_err()));
}

async fn lease_extend_reports_held_and_lost(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    let stale = Lease {
        job_id: id.clone(),
        token: claimed.lease.token - 1,
    };
    let statuses = store
        .lease_extend(LeaseExtend {
            worker_id: "worker-1".into(),
            leases: vec![claimed.lease.clone(), stale],
            now: T0 + 10_000,
            lease_ms: LEASE_MS,
        })
        .await
        .unwrap();
    assert_eq!(
        statuses,
        [
            LeaseStatus::Held {
                job_id: id.clone(),
                control: None
            },
            LeaseStatus::Lost { job_id: id.clone() },
        ]
    );
    assert_eq!(
        job(&store, &id).await.lease_expires_at,
        Some(T0 + 10_000 + LEASE_MS)
    );
}

async fn lease_extend_reports_control(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    store
        .job_action(&id, JobAction::Cancel, T0 + 1)
        .await
        .unwrap();
    let statuses = store
        .lease_extend(LeaseExtend {
            worker_id: "worker-1".into(),
            leases: vec![claimed.lease.clone()],
            now: T0 + 2,
            lease_ms: LEASE_MS,
        })
        .await
        .unwrap();
    assert_eq!(
        statuses,
        [LeaseStatus::Held {
            job_id: id,
            control: Some(oaj_store::Control::Cancel)
        }]
    );
}

async fn attempts_record_tokens_and_steps(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    let attempt_id = store
        .attempt_start(attempt_start(&claimed.lease, "s1", T0 + 1))
        .await
        .unwrap();
    let running = store.step_run_list(&id).await.unwrap();
    assert_eq!(running[0].state, StepState::Running);
    assert_eq!(running[0].attempts, 1);

    store
        .attempt_finish(attempt_success(&claimed.lease, attempt_id, "s1", T0 + 2))
        .await
        .unwrap();
    let steps = store.step_run_list(&id).await.unwrap();
    assert_eq!(steps[0].state, StepState::Completed);
    assert_eq!(
        steps[0].output,
        Some(serde_json::json!({ "summary": "hi" }))
    );
    let attempts = store.attempt_list(&id).await.unwrap();
    assert_eq!(attempts[0].state, oaj_store::AttemptState::Succeeded);
    assert_eq!(attempts[0].finished_at, Some(T0 + 2));
    let stored = job(&store, &id).await;
    assert_eq!(stored.prompt_tokens, 10);
    assert_eq!(stored.completion_tokens, 5);

    let again = store
        .attempt_finish(attempt_success(&claimed.lease, attempt_id, "s1", T0 + 3))
        .await
        .unwrap_err();
    assert!(
        matches!(again, StoreError::AttemptNotRunning { .. }),
        "{again:?}"
    );
}

async fn claimed_job_brings_saved_steps(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    let attempt_id = store
        .attempt_start(attempt_start(&claimed.lease, "s1", T0 + 1))
        .await
        .unwrap();
    store
        .attempt_finish(attempt_success(&claimed.lease, attempt_id, "s1", T0 + 2))
        .await
        .unwrap();
    finish(&store, &claimed.lease, JobOutcome::Released, T0 + 3).await;

    let again = claim_one(&store, T0 + 4).await;
    assert_eq!(again.job.id, id);
    assert_eq!(again.steps.len(), 1);
    assert_eq!(again.steps[0].state, StepState::Completed);
}

async fn attempt_record_writes_whole_attempt(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    let start = attempt_start(&claimed.lease, "s1", T0 + 1);
    let finish = attempt_success(&claimed.lease, 0, "s1", T0 + 2);
    let attempt_id = store.attempt_record(start, finish).await.unwrap();

    let attempts = store.attempt_list(&id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].id, attempt_id);
    assert_eq!(attempts[0].state, AttemptState::Succeeded);
    assert_eq!(attempts[0].started_at, T0 + 1);
    assert_eq!(attempts[0].finished_at, Some(T0 + 2));
    let steps = store.step_run_list(&id).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].state, StepState::Completed);
    assert_eq!(steps[0].attempts, 1);
}

async fn attempt_record_rejected_after_reclaim(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let first = claim_one(&store, T0).await;
    store
        .maintenance(rescue_params(T0 + LEASE_MS + 1))
        .await
        .unwrap();
    claim_one(&store, T0 + LEASE_MS + 2).await;

    let start = attempt_start(&first.lease, "s1", T0 + 1);
    let finish = attempt_success(&first.lease, 0, "s1", T0 + 2);
    let recorded = store.attempt_record(start, finish).await;
    assert!(is_lease_lost(&recorded.unwrap_err()));
    assert!(store.attempt_list(&id).await.unwrap().is_empty());
    assert!(store.step_run_list(&id).await.unwrap().is_empty());
}

/// Writes an attempt and the end of one job, and returns the job finish's result.
async fn job_run_through(
    store: Arc<dyn Store>,
    lease: Lease,
    finish_lease: Lease,
) -> Result<(), StoreError> {
    let start = attempt_start(&lease, "s1", T0 + 1);
    let attempt = attempt_success(&lease, 0, "s1", T0 + 2);
    store.attempt_record(start, attempt).await?;
    store
        .job_finish(oaj_store::JobFinish {
            lease: finish_lease,
            attempts: Vec::new(),
            outcome: JobOutcome::Completed(serde_json::json!({ "n": 1 })),
            now: T0 + 3,
        })
        .await
}

/// Many writes at once, which the PostgreSQL store runs in one transaction: the one with a stale
/// lease fails alone, and the writes around it stay.
async fn concurrent_writes_lost_lease_fails_alone(store: Arc<dyn Store>) {
    const JOBS: usize = 20;
    const STALE: usize = 7;
    workflow_setup(&store).await;
    for _ in 0..JOBS {
        insert(&store, job_new(T0)).await;
    }
    let claimed = claim(&store, "worker-1", JOBS as u32, T0).await;
    assert_eq!(claimed.len(), JOBS);

    let mut tasks = Vec::new();
    for (index, job) in claimed.iter().enumerate() {
        let mut finish_lease = job.lease.clone();
        if index == STALE {
            finish_lease.token += 1;
        }
        let run = job_run_through(Arc::clone(&store), job.lease.clone(), finish_lease);
        tasks.push(tokio::spawn(run));
    }
    for (index, task) in tasks.into_iter().enumerate() {
        let outcome = task.await.expect("the write task does not panic");
        if index == STALE {
            assert!(is_lease_lost(&outcome.unwrap_err()));
        } else {
            outcome.expect("a write with a current lease succeeds");
        }
    }

    let counts = store.job_counts().await.unwrap();
    assert_eq!(counts[&JobState::Completed], JOBS as u64 - 1);
    assert_eq!(counts[&JobState::Running], 1);
    for (index, job) in claimed.iter().enumerate() {
        let id = &job.job.id;
        let state = crate::support::job(&store, id).await.state;
        let expected = if index == STALE {
            JobState::Running
        } else {
            JobState::Completed
        };
        assert_eq!(state, expected, "state of job {index}");
        assert_eq!(store.attempt_list(id).await.unwrap().len(), 1);
        let events = store
            .event_list(oaj_store::EventFilter {
                job_id: Some(id.clone()),
                after_seq: 0,
                limit: 100,
            })
            .await
            .unwrap();
        let kinds: Vec<&str> = events.iter().map(|event| event.kind.as_str()).collect();
        let completed = kinds.contains(&"job.completed");
        assert_eq!(completed, index != STALE, "job.completed of job {index}");
        assert!(
            kinds.contains(&"attempt.started"),
            "attempt.started of job {index}"
        );
        assert!(
            kinds.contains(&"attempt.succeeded"),
            "attempt.succeeded of job {index}"
        );
    }
}

crate::store_tests!(
    concurrent_writes_lost_lease_fails_alone,
    attempt_record_writes_whole_attempt,
    attempt_record_rejected_after_reclaim,
    old_token_rejected_after_reclaim,
    lease_rejected_after_job_finish,
    lease_extend_reports_held_and_lost,
    lease_extend_reports_control,
    attempts_record_tokens_and_steps,
    claimed_job_brings_saved_steps,
);
