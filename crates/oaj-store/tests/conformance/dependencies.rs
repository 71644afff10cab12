//! Job dependencies: waiting, settling, failure cascades and cycles.

use std::sync::Arc;

use oaj_core::JobState;
use oaj_store::{DependencyFailure, JobAction, JobNew, JobOutcome, JobRef, Store, StoreError};
use serde_json::json;

use crate::support::*;

async fn dependent_queued_when_dependency_completes(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let first = insert(&store, job_new(T0)).await;
    let second = insert(&store, job_after(T0, vec![JobRef::Id(first.clone())])).await;
    assert_eq!(job(&store, &second).await.state, JobState::Pending);
    assert_eq!(job(&store, &second).await.depends_on, vec![first.clone()]);

    let claimed = claim_one(&store, T0).await;
    assert_eq!(claimed.job.id, first);
    finish(
        &store,
        &claimed.lease,
        JobOutcome::Completed(json!("done")),
        T0 + 1,
    )
    .await;
    assert_eq!(job(&store, &second).await.state, JobState::Queued);
}

async fn dependent_waits_for_every_dependency(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let ids = store
        .job_insert_many(
            vec![
                job_new(T0),
                job_new(T0 + 1),
                job_after(T0, vec![JobRef::Index(0), JobRef::Index(1)]),
            ],
            None,
        )
        .await
        .unwrap();
    let first = claim_one(&store, T0 + 2).await;
    finish(
        &store,
        &first.lease,
        JobOutcome::Completed(json!(1)),
        T0 + 3,
    )
    .await;
    assert_eq!(job(&store, &ids[2]).await.state, JobState::Pending);
    let second = claim_one(&store, T0 + 4).await;
    finish(
        &store,
        &second.lease,
        JobOutcome::Completed(json!(2)),
        T0 + 5,
    )
    .await;
    assert_eq!(job(&store, &ids[2]).await.state, JobState::Queued);
}

async fn dependent_fails_with_reason(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let first = insert(&store, job_new(T0)).await;
    let second = insert(&store, job_after(T0, vec![JobRef::Id(first.clone())])).await;
    let claimed = claim_one(&store, T0).await;
    finish(
        &store,
        &claimed.lease,
        JobOutcome::Failed("boom".into()),
        T0 + 1,
    )
    .await;

    let dependent = job(&store, &second).await;
    assert_eq!(dependent.state, JobState::Failed);
    assert_eq!(dependent.error, Some(format!("dependency {first} failed")));
    assert_eq!(dependent.finished_at, Some(T0 + 1));
}

/// Inserts a chain of `length` jobs, each waiting for the one before, then cancels the first at
/// `T0 + 1`. Returns the ids in chain order.
async fn chain_with_first_cancelled(store: &Arc<dyn Store>, length: usize) -> Vec<String> {
    workflow_setup(store).await;
    let mut jobs = vec![job_new(T0)];
    jobs.extend((1..length).map(|index| job_after(T0, vec![JobRef::Index(index - 1)])));
    let ids = store.job_insert_many(jobs, None).await.unwrap();
    store
        .job_action(&ids[0], JobAction::Cancel, T0 + 1)
        .await
        .unwrap();
    ids
}

async fn dependency_failure_cascades(store: Arc<dyn Store>) {
    let ids = chain_with_first_cancelled(&store, 3).await;

    let middle = job(&store, &ids[1]).await;
    assert_eq!(middle.state, JobState::Failed);
    assert_eq!(
        middle.error,
        Some(format!("dependency {} cancelled", ids[0]))
    );
    let last = job(&store, &ids[2]).await;
    assert_eq!(last.state, JobState::Failed);
    assert_eq!(last.error, Some(format!("dependency {} failed", ids[1])));
    assert_eq!(store.job_counts().await.unwrap()[&JobState::Failed], 2);
}

async fn dependent_runs_anyway_when_asked(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let first = insert(&store, job_new(T0)).await;
    let runs_anyway = JobNew {
        on_dependency_failure: DependencyFailure::Run,
        ..job_after(T0, vec![JobRef::Id(first.clone())])
    };
    let second = insert(&store, runs_anyway).await;
    let claimed = claim_one(&store, T0).await;
    finish(
        &store,
        &claimed.lease,
        JobOutcome::Failed("boom".into()),
        T0 + 1,
    )
    .await;
    assert_eq!(job(&store, &second).await.state, JobState::Queued);
}

async fn insert_after_failed_dependency_fails(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let first = insert(&store, job_new(T0)).await;
    store
        .job_action(&first, JobAction::Cancel, T0)
        .await
        .unwrap();
    let second = insert(&store, job_after(T0, vec![JobRef::Id(first.clone())])).await;
    let dependent = job(&store, &second).await;
    assert_eq!(dependent.state, JobState::Failed);
    assert_eq!(
        dependent.error,
        Some(format!("dependency {first} cancelled"))
    );
}

async fn insert_after_completed_dependency_queued(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let first = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    finish(
        &store,
        &claimed.lease,
        JobOutcome::Completed(json!(1)),
        T0 + 1,
    )
    .await;
    let second = insert(&store, job_after(T0 + 2, vec![JobRef::Id(first)])).await;
    assert_eq!(job(&store, &second).await.state, JobState::Queued);
}

async fn dependency_on_missing_job_rejected(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let error = store
        .job_insert_many(
            vec![job_after(T0, vec![JobRef::Id("missing".into())])],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::DependencyInvalid(ref m) if m.contains("missing")),
        "{error:?}"
    );
}

async fn dependency_index_errors_rejected(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let out_of_range = store
        .job_insert_many(vec![job_after(T0, vec![JobRef::Index(3)])], None)
        .await
        .unwrap_err();
    assert!(
        matches!(out_of_range, StoreError::DependencyInvalid(_)),
        "{out_of_range:?}"
    );
    let on_itself = store
        .job_insert_many(vec![job_after(T0, vec![JobRef::Index(0)])], None)
        .await
        .unwrap_err();
    assert!(
        matches!(on_itself, StoreError::DependencyInvalid(_)),
        "{on_itself:?}"
    );
}

async fn dependency_cycle_rejected(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let jobs = vec![
        job_after(T0, vec![JobRef::Index(2)]),
        job_new(T0),
        job_after(T0, vec![JobRef::Index(0)]),
    ];
    let error = store.job_insert_many(jobs, None).await.unwrap_err();
    let StoreError::DependencyInvalid(message) = &error else {
        panic!("expected DependencyInvalid, got {error:?}");
    };
    assert!(message.contains("0 -> 2 -> 0"), "{message}");
    assert!(store.job_list(Default::default()).await.unwrap().is_empty());
}

/// Jobs that end at the same moment settle their dependents as they would one at a time. The
/// PostgreSQL store writes such finishes together when they share a write group.
async fn dependencies_ending_at_once_settle(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let jobs = vec![
        job_new(T0),
        job_new(T0 + 1),
        job_new(T0 + 2),
        job_after(T0, vec![JobRef::Index(0), JobRef::Index(1)]),
        job_after(T0, vec![JobRef::Index(2)]),
        job_after(T0, vec![JobRef::Index(4)]),
    ];
    let ids = store.job_insert_many(jobs, None).await.unwrap();
    let claimed = claim(&store, "worker-1", 3, T0 + 3).await;
    assert_eq!(claimed.len(), 3);

    let mut tasks = Vec::new();
    for job in claimed {
        let outcome = if job.job.id == ids[2] {
            JobOutcome::Failed("step failed".to_owned())
        } else {
            JobOutcome::Completed(json!(1))
        };
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            finish(&store, &job.lease, outcome, T0 + 4).await;
        }));
    }
    for task in tasks {
        task.await.expect("the finish task does not panic");
    }

    assert_eq!(job(&store, &ids[3]).await.state, JobState::Queued);
    let failed = job(&store, &ids[4]).await;
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(
        failed.error.as_deref(),
        Some(format!("dependency {} failed", ids[2]).as_str())
    );
    assert_eq!(job(&store, &ids[5]).await.state, JobState::Failed);
    let counts = store.job_counts().await.unwrap();
    assert_eq!(counts[&JobState::Completed], 2);
    assert_eq!(counts[&JobState::Failed], 3);
    assert_eq!(counts[&JobState::Queued], 1);
}

/// Checks that a retried job no longer waits for the dependency that failed it: a pause and a
/// resume after the retry queue it again instead of leaving it pending for ever.
async fn retried_dependent_resumes_to_queue(store: Arc<dyn Store>) {
    let ids = chain_with_first_cancelled(&store, 2).await;
    assert_eq!(job(&store, &ids[1]).await.state, JobState::Failed);

    let retried = store
        .job_action(&ids[1], JobAction::Retry, T0 + 2)
        .await
        .unwrap();
    assert_eq!(retried.state, JobState::Queued);
    let paused = store
        .job_action(&ids[1], JobAction::Pause, T0 + 3)
        .await
        .unwrap();
    assert_eq!(paused.state, JobState::Paused);
    let resumed = store
        .job_action(&ids[1], JobAction::Resume, T0 + 4)
        .await
        .unwrap();
    assert_eq!(resumed.state, JobState::Queued);
}

crate::store_tests!(
    dependent_queued_when_dependency_completes,
    dependent_waits_for_every_dependency,
    dependent_fails_with_reason,
    dependency_failure_cascades,
    dependent_runs_anyway_when_asked,
    insert_after_failed_dependency_fails,
    insert_after_completed_dependency_queued,
    dependency_on_missing_job_rejected,
    dependency_index_errors_rejected,
    dependency_cycle_rejected,
    dependencies_ending_at_once_settle,
    retried_dependent_resumes_to_queue,
);
