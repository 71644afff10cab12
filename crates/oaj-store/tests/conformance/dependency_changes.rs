//! Dependencies added and removed after insert, and the list of a job's dependents.

use std::sync::Arc;

use oaj_core::JobState;
use oaj_store::{
    DependencyChange, DependencyFailure, EventFilter, JobNew, JobOutcome, JobRef, Store, StoreError,
};
use serde_json::json;

use crate::support::*;

fn change(job_id: &str, depends_on_id: &str, now: i64) -> DependencyChange {
    DependencyChange {
        job_id: job_id.to_owned(),
        depends_on_id: depends_on_id.to_owned(),
        now,
    }
}

async fn add(store: &Arc<dyn Store>, job_id: &str, depends_on_id: &str) -> oaj_store::Job {
    store
        .job_dependency_add(change(job_id, depends_on_id, T0 + 10))
        .await
        .expect("the dependency is added")
}

async fn event_kinds(store: &Arc<dyn Store>, job_id: &str) -> Vec<String> {
    let filter = EventFilter {
        job_id: Some(job_id.to_owned()),
        ..EventFilter::default()
    };
    let events = store.event_list(filter).await.unwrap();
    events.into_iter().map(|event| event.kind).collect()
}

/// Inserts a job, claims it and ends it with `outcome`, returning its id.
async fn ended_job(store: &Arc<dyn Store>, outcome: JobOutcome) -> String {
    let id = insert(store, job_new(T0)).await;
    let claimed = claim_one(store, T0 + 1).await;
    assert_eq!(claimed.job.id, id);
    finish(store, &claimed.lease, outcome, T0 + 2).await;
    id
}

async fn dependency_add_defers_queued_job(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let first = insert(&store, job_new(T0)).await;
    let second = insert(&store, job_new(T0)).await;

    let updated = add(&store, &second, &first).await;
    assert_eq!(updated.state, JobState::Pending);
    assert_eq!(updated.depends_on, vec![first.clone()]);
    let kinds = event_kinds(&store, &second).await;
    assert_eq!(
        kinds,
        ["job.created", "job.dependency_added", "job.pending"]
    );

    let claimed = claim_one(&store, T0 + 20).await;
    assert_eq!(claimed.job.id, first);
    finish(
        &store,
        &claimed.lease,
        JobOutcome::Completed(json!(1)),
        T0 + 21,
    )
    .await;
    assert_eq!(job(&store, &second).await.state, JobState::Queued);
}

async fn dependency_add_completed_is_settled(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let done = ended_job(&store, JobOutcome::Completed(json!(1))).await;
    let second = insert(&store, job_new(T0)).await;

    let updated = add(&store, &second, &done).await;
    assert_eq!(updated.state, JobState::Queued);
    assert_eq!(updated.depends_on, vec![done]);
}

async fn dependency_add_failed_fails_job(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let failed = ended_job(&store, JobOutcome::Failed("boom".into())).await;
    let second = insert(&store, job_new(T0)).await;
    let third = insert(&store, job_after(T0, vec![JobRef::Id(second.clone())])).await;

    let updated = add(&store, &second, &failed).await;
    assert_eq!(updated.state, JobState::Failed);
    assert_eq!(updated.error, Some(format!("dependency {failed} failed")));
    assert_eq!(job(&store, &third).await.state, JobState::Failed);
}

async fn dependency_add_failed_runs_anyway(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let failed = ended_job(&store, JobOutcome::Failed("boom".into())).await;
    let tolerant = JobNew {
        on_dependency_failure: DependencyFailure::Run,
        ..job_new(T0)
    };
    let second = insert(&store, tolerant).await;

    let updated = add(&store, &second, &failed).await;
    assert_eq!(updated.state, JobState::Queued);
}

async fn dependency_add_twice_is_noop(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let first = insert(&store, job_new(T0)).await;
    let second = insert(&store, job_new(T0)).await;
    add(&store, &second, &first).await;

    let updated = add(&store, &second, &first).await;
    assert_eq!(updated.depends_on, vec![first]);
    let kinds = event_kinds(&store, &second).await;
    let added = kinds.iter().filter(|kind| *kind == "job.dependency_added");
    assert_eq!(added.count(), 1);
}

async fn dependency_add_rejects_cycle(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let a = insert(&store, job_new(T0)).await;
    let b = insert(&store, job_after(T0, vec![JobRef::Id(a.clone())])).await;
    let c = insert(&store, job_after(T0, vec![JobRef::Id(b.clone())])).await;

    let error = store
        .job_dependency_add(change(&a, &c, T0 + 10))
        .await
        .unwrap_err();
    let StoreError::DependencyCycle { cycle } = &error else {
        panic!("expected DependencyCycle, got {error:?}");
    };
    assert_eq!(cycle, &[a.clone(), c.clone(), b.clone(), a.clone()]);
    assert!(error
        .to_string()
        .contains(&format!("{a} -> {c} -> {b} -> {a}")));
    assert!(job(&store, &a).await.depends_on.is_empty());
}

async fn dependency_add_rejects_self(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let a = insert(&store, job_new(T0)).await;

    let error = store
        .job_dependency_add(change(&a, &a, T0 + 10))
        .await
        .unwrap_err();
    let StoreError::DependencyCycle { cycle } = &error else {
        panic!("expected DependencyCycle, got {error:?}");
    };
    assert_eq!(cycle, &[a.clone(), a.clone()]);
}

async fn dependency_add_rejects_started_job(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let other = insert(&store, job_new(T0 + 5)).await;
    let running = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0 + 1).await;
    assert_eq!(claimed.job.id, running);

    let error = store
        .job_dependency_add(change(&running, &other, T0 + 10))
        .await
        .unwrap_err();
    let StoreError::JobStateConflict { state, .. } = &error else {
        panic!("expected JobStateConflict, got {error:?}");
    };
    assert_eq!(*state, JobState::Running);
}

async fn dependency_add_rejects_unknown_ids(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let a = insert(&store, job_new(T0)).await;

    let unknown_job = store
        .job_dependency_add(change("missing", &a, T0 + 10))
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown_job, StoreError::JobNotFound(id) if id == "missing"),
        "{unknown_job:?}"
    );
    let unknown_dependency = store
        .job_dependency_add(change(&a, "missing", T0 + 10))
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown_dependency, StoreError::JobNotFound(id) if id == "missing"),
        "{unknown_dependency:?}"
    );
}

async fn dependency_remove_queues_job(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let first = insert(&store, job_new(T0)).await;
    let second = insert(&store, job_after(T0, vec![JobRef::Id(first.clone())])).await;

    let updated = store
        .job_dependency_remove(change(&second, &first, T0 + 10))
        .await
        .unwrap();
    assert_eq!(updated.state, JobState::Queued);
    assert!(updated.depends_on.is_empty());
    let kinds = event_kinds(&store, &second).await;
    assert_eq!(
        kinds,
        ["job.created", "job.dependency_removed", "job.queued"]
    );
}

async fn dependency_remove_keeps_waiting(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let first = insert(&store, job_new(T0)).await;
    let other = insert(&store, job_new(T0)).await;
    let deps = vec![JobRef::Id(first.clone()), JobRef::Id(other.clone())];
    let second = insert(&store, job_after(T0, deps)).await;

    let updated = store
        .job_dependency_remove(change(&second, &first, T0 + 10))
        .await
        .unwrap();
    assert_eq!(updated.state, JobState::Pending);
    assert_eq!(updated.depends_on, vec![other]);
}

async fn dependency_remove_unknown_edge(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let a = insert(&store, job_new(T0)).await;
    let b = insert(&store, job_new(T0)).await;

    let error = store
        .job_dependency_remove(change(&b, &a, T0 + 10))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::DependencyNotFound { job_id, depends_on_id }
            if *job_id == b && *depends_on_id == a),
        "{error:?}"
    );
}

async fn dependents_listed_by_id(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let first = insert(&store, job_new(T0)).await;
    let second = insert(&store, job_after(T0, vec![JobRef::Id(first.clone())])).await;
    let third = insert(&store, job_new(T0)).await;
    add(&store, &third, &first).await;

    let dependents = store.job_dependents(&first).await.unwrap();
    let ids: Vec<&str> = dependents.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(ids, [second.as_str(), third.as_str()]);
    assert!(store.job_dependents(&third).await.unwrap().is_empty());
    let missing = store.job_dependents("missing").await.unwrap_err();
    assert!(matches!(missing, StoreError::JobNotFound(_)), "{missing:?}");
}

crate::store_tests!(
    dependency_add_defers_queued_job,
    dependency_add_completed_is_settled,
    dependency_add_failed_fails_job,
    dependency_add_failed_runs_anyway,
    dependency_add_twice_is_noop,
    dependency_add_rejects_cycle,
    dependency_add_rejects_self,
    dependency_add_rejects_started_job,
    dependency_add_rejects_unknown_ids,
    dependency_remove_queues_job,
    dependency_remove_keeps_waiting,
    dependency_remove_unknown_edge,
    dependents_listed_by_id,
);
