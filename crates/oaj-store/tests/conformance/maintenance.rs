//! Maintenance: lease rescue, promotion of due jobs, retention.

use std::sync::Arc;

use oaj_core::JobState;
use oaj_store::{
    AttemptRecord, AttemptState, Control, EventFilter, JobAction, JobFinish, JobNew, JobOutcome,
    MaintenanceParams, StepState, Store,
};
use serde_json::json;

use crate::support::*;

fn params(now: i64) -> MaintenanceParams {
    MaintenanceParams {
        now,
        interruptions_max: 3,
        retention_ms: None,
        batch_size: 100,
    }
}

async fn rescue_requeues_expired_lease(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    store
        .attempt_start(attempt_start(&claimed.lease, "s1", T0 + 1))
        .await
        .unwrap();

    let early = store.maintenance(params(T0 + LEASE_MS - 1)).await.unwrap();
    assert_eq!(
        early.rescued, 0,
        "a lease that has not expired is left alone"
    );
    let report = store.maintenance(params(T0 + LEASE_MS + 1)).await.unwrap();
    assert_eq!(report.rescued, 1);

    let rescued = job(&store, &id).await;
    assert_eq!(rescued.state, JobState::Queued);
    assert_eq!(rescued.interruptions, 1);
    assert_eq!(rescued.lease_owner, None);
    let attempts = store.attempt_list(&id).await.unwrap();
    assert_eq!(attempts[0].state, AttemptState::Interrupted);
    let steps = store.step_run_list(&id).await.unwrap();
    assert_eq!(steps[0].state, StepState::Pending);
    assert_eq!(steps[0].interruptions, 1);
}

async fn rescue_fails_after_max_interruptions(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let mut now = T0;
    for round in 1..=3 {
        claim_one(&store, now).await;
        now += LEASE_MS + 1;
        let report = store.maintenance(params(now)).await.unwrap();
        if round < 3 {
            assert_eq!(report.rescued, 1, "round {round}");
        } else {
            assert_eq!(report.rescue_failed, 1, "round {round}");
        }
    }
    let failed = job(&store, &id).await;
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.interruptions, 3);
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("interrupted 3 times"), "{error}");
}

async fn rescue_honours_cancel_request(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    claim_one(&store, T0).await;
    let requested = store
        .job_action(&id, JobAction::Cancel, T0 + 1)
        .await
        .unwrap();
    assert_eq!(requested.control, Some(Control::Cancel));
    store.maintenance(params(T0 + LEASE_MS + 1)).await.unwrap();
    assert_eq!(job(&store, &id).await.state, JobState::Cancelled);
}

async fn promote_due_pending_job(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let later = JobNew {
        run_at: Some(T0 + 1_000),
        ..job_new(T0)
    };
    let id = insert(&store, later).await;
    let early = store.maintenance(params(T0 + 999)).await.unwrap();
    assert_eq!(early.promoted, 0);
    assert_eq!(job(&store, &id).await.state, JobState::Pending);
    let report = store.maintenance(params(T0 + 1_000)).await.unwrap();
    assert_eq!(report.promoted, 1);
    assert_eq!(job(&store, &id).await.state, JobState::Queued);
}

async fn parked_job_promoted_at_deadline(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    let deadline = Some(T0 + 5_000);
    finish(
        &store,
        &claimed.lease,
        JobOutcome::Parked { deadline },
        T0 + 1,
    )
    .await;
    assert_eq!(job(&store, &id).await.state, JobState::Pending);
    store.maintenance(params(T0 + 5_000)).await.unwrap();
    assert_eq!(job(&store, &id).await.state, JobState::Queued);
}

async fn retention_deletes_only_old_ended_jobs(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let old = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    finish(
        &store,
        &claimed.lease,
        JobOutcome::Completed(json!(1)),
        T0 + 1,
    )
    .await;
    let recent = insert(&store, job_new(T0 + 50_000)).await;
    let claimed = claim_one(&store, T0 + 50_000).await;
    finish(
        &store,
        &claimed.lease,
        JobOutcome::Completed(json!(2)),
        T0 + 50_001,
    )
    .await;
    let running = insert(&store, job_new(T0)).await;
    let queued = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0 + 2).await;
    assert_eq!(claimed.job.id, running);

    let retention = MaintenanceParams {
        retention_ms: Some(10_000),
        ..params(T0 + 60_000)
    };
    let report = store.maintenance(retention).await.unwrap();
    assert_eq!(report.deleted, 1);
    assert!(store.job_get(&old).await.unwrap().is_none());
    assert!(store.job_get(&recent).await.unwrap().is_some());
    assert!(store.job_get(&running).await.unwrap().is_some());
    assert!(store.job_get(&queued).await.unwrap().is_some());
    let counts = store.job_counts().await.unwrap();
    assert_eq!(counts[&JobState::Completed], 1);
    assert!(store.attempt_list(&old).await.unwrap().is_empty());
}

async fn retention_works_in_batches(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    for _ in 0..5 {
        let id = insert(&store, job_new(T0)).await;
        store.job_action(&id, JobAction::Cancel, T0).await.unwrap();
    }
    let retention = MaintenanceParams {
        retention_ms: Some(1),
        batch_size: 2,
        ..params(T0 + 10)
    };
    assert_eq!(store.maintenance(retention).await.unwrap().deleted, 2);
    assert_eq!(store.maintenance(retention).await.unwrap().deleted, 2);
    assert_eq!(store.maintenance(retention).await.unwrap().deleted, 1);
    assert_eq!(store.job_counts().await.unwrap()[&JobState::Cancelled], 0);
}

/// Events have no foreign key to their job (SQLite migration 0006, PostgreSQL migration 0005), nor
/// have attempts and step runs on PostgreSQL (migration 0007). So deleting a job, by hand or by
/// retention, must delete those rows too, and only those of the jobs it deletes.
async fn job_delete_removes_its_rows(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let mut ids = Vec::new();
    for offset in 0..3 {
        let id = insert(&store, job_new(T0 + offset)).await;
        let claimed = claim_one(&store, T0 + offset).await;
        assert_eq!(claimed.job.id, id);
        let lease = &claimed.lease;
        let record = AttemptRecord {
            start: attempt_start(lease, "s1", T0 + offset),
            finish: attempt_success(lease, 0, "s1", T0 + offset),
        };
        let finish = JobFinish {
            lease: lease.clone(),
            attempts: vec![record],
            outcome: JobOutcome::Completed(json!({})),
            now: T0 + offset,
        };
        store.job_finish(finish).await.unwrap();
        ids.push(id);
    }
    let running_id = insert(&store, job_new(T0 + 10)).await;
    let running = claim_one(&store, T0 + 10).await;
    store
        .attempt_start(attempt_start(&running.lease, "s1", T0 + 10))
        .await
        .unwrap();

    store.job_delete(&ids[0]).await.unwrap();
    let retention = MaintenanceParams {
        retention_ms: Some(1),
        ..params(T0 + 10)
    };
    let report = store.maintenance(retention).await.unwrap();
    assert_eq!(
        report.deleted, 2,
        "retention deletes the two other ended jobs"
    );

    for id in &ids {
        assert_eq!(
            job_events(&store, id).await,
            0,
            "events of deleted job {id}"
        );
        let attempts = store.attempt_list(id).await.unwrap();
        assert!(attempts.is_empty(), "attempts of deleted job {id}");
        let step_runs = store.step_run_list(id).await.unwrap();
        assert!(step_runs.is_empty(), "step runs of deleted job {id}");
    }
    assert_eq!(
        job_events(&store, &running_id).await,
        3,
        "the running job keeps its events"
    );
    let attempts = store.attempt_list(&running_id).await.unwrap();
    assert_eq!(attempts.len(), 1, "the running job keeps its attempt");
    let step_runs = store.step_run_list(&running_id).await.unwrap();
    assert_eq!(step_runs.len(), 1, "the running job keeps its step run");
}

/// Counts the stored events of one job.
async fn job_events(store: &Arc<dyn Store>, job_id: &str) -> usize {
    let filter = EventFilter {
        job_id: Some(job_id.to_owned()),
        ..EventFilter::default()
    };
    store.event_list(filter).await.unwrap().len()
}

/// Inserts two cancelled jobs as batch `batch_id` and returns their ids.
async fn cancelled_batch(store: &Arc<dyn Store>, batch_id: &str) -> Vec<String> {
    let ids = store
        .job_insert_many(vec![job_new(T0), job_new(T0)], Some(batch_id.to_owned()))
        .await
        .unwrap();
    for id in &ids {
        store.job_action(id, JobAction::Cancel, T0).await.unwrap();
    }
    ids
}

/// Reports whether a batch row with `batch_id` exists, by inserting a new batch with that id:
/// the store rejects an id that is taken. The probe batch is deleted again.
async fn batch_row_exists(store: &Arc<dyn Store>, batch_id: &str) -> bool {
    let Ok(ids) = store
        .job_insert_many(vec![job_new(T0)], Some(batch_id.to_owned()))
        .await
    else {
        return true;
    };
    store
        .job_action(&ids[0], JobAction::Cancel, T0)
        .await
        .unwrap();
    store.job_delete(&ids[0]).await.unwrap();
    false
}

/// Regression: retention and delete left the batch row of every batch whose jobs they removed,
/// one row per batch forever.
async fn batch_row_goes_with_its_last_job(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let by_retention = cancelled_batch(&store, "batch-retention").await;
    let by_delete = cancelled_batch(&store, "batch-delete").await;

    store.job_delete(&by_delete[0]).await.unwrap();
    assert!(batch_row_exists(&store, "batch-delete").await);
    store.job_delete(&by_delete[1]).await.unwrap();
    assert!(!batch_row_exists(&store, "batch-delete").await);

    let retention = MaintenanceParams {
        retention_ms: Some(1),
        ..params(T0 + 10)
    };
    assert_eq!(store.maintenance(retention).await.unwrap().deleted, 2);
    assert!(store.job_get(&by_retention[0]).await.unwrap().is_none());
    assert!(!batch_row_exists(&store, "batch-retention").await);
}

crate::store_tests!(
    batch_row_goes_with_its_last_job,
    rescue_requeues_expired_lease,
    rescue_fails_after_max_interruptions,
    rescue_honours_cancel_request,
    promote_due_pending_job,
    parked_job_promoted_at_deadline,
    retention_deletes_only_old_ended_jobs,
    retention_works_in_batches,
    job_delete_removes_its_rows,
);
