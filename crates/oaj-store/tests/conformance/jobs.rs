//! Job inserts, reads, lists and counters.

use std::sync::Arc;

use oaj_core::JobState;
use oaj_store::{JobFilter, JobNew, Store, StoreError};

use crate::support::{insert, job, job_new, workflow, workflow_setup, T0};

async fn job_insert_then_get(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let mut new = job_new(T0);
    new.tags = vec!["a".into(), "b".into()];
    new.timeout_ms = Some(5_000);
    let id = insert(&store, new.clone()).await;

    let stored = job(&store, &id).await;
    assert_eq!(stored.state, JobState::Queued);
    assert_eq!(stored.workflow_id, new.workflow_id);
    assert_eq!(stored.input, new.input);
    assert_eq!(stored.tags, new.tags);
    assert_eq!(stored.timeout_ms, Some(5_000));
    assert_eq!(stored.created_at, T0);
    assert_eq!(stored.lease_token, 0);
    assert!(store.job_get("no-such-job").await.unwrap().is_none());
}

async fn job_insert_future_run_at_is_pending(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let new = JobNew {
        run_at: Some(T0 + 60_000),
        ..job_new(T0)
    };
    let id = insert(&store, new).await;
    assert_eq!(job(&store, &id).await.state, JobState::Pending);
}

async fn job_insert_unknown_workflow_rejected(store: Arc<dyn Store>) {
    let error = store
        .job_insert_many(vec![job_new(T0)], None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::WorkflowNotFound { .. }),
        "{error:?}"
    );
}

async fn job_insert_many_all_or_nothing(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let mut bad = job_new(T0);
    bad.workflow_version = "9.9.9".to_owned();
    let result = store.job_insert_many(vec![job_new(T0), bad], None).await;
    assert!(result.is_err());
    let listed = store.job_list(JobFilter::default()).await.unwrap();
    assert!(listed.is_empty(), "no job of a failed insert is stored");
    let counts = store.job_counts().await.unwrap();
    assert_eq!(counts.get(&JobState::Queued).copied().unwrap_or(0), 0);
}

async fn job_insert_batch_sets_batch_id(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let ids = store
        .job_insert_many(vec![job_new(T0), job_new(T0)], Some("batch-1".into()))
        .await
        .unwrap();
    for id in &ids {
        assert_eq!(job(&store, id).await.batch_id.as_deref(), Some("batch-1"));
    }
    let filter = JobFilter {
        batch_id: Some("batch-1".into()),
        ..JobFilter::default()
    };
    assert_eq!(store.job_list(filter).await.unwrap().len(), 2);
}

async fn job_list_newest_first_with_cursor(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let mut ids = Vec::new();
    for offset in 0..5 {
        ids.push(insert(&store, job_new(T0 + offset)).await);
    }
    let first_page = store
        .job_list(JobFilter {
            limit: 2,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let first_ids: Vec<&str> = first_page.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(first_ids, [ids[4].as_str(), ids[3].as_str()]);

    let second_page = store
        .job_list(JobFilter {
            limit: 2,
            before_id: Some(ids[3].clone()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let second_ids: Vec<&str> = second_page.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(second_ids, [ids[2].as_str(), ids[1].as_str()]);
}

async fn job_list_filters_state_and_workflow(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    store
        .workflow_insert(workflow("other", "1.0.0"))
        .await
        .unwrap();
    let queued = insert(&store, job_new(T0)).await;
    let pending = insert(
        &store,
        JobNew {
            run_at: Some(T0 + 1_000),
            ..job_new(T0)
        },
    )
    .await;
    let other = JobNew {
        workflow_id: "other".into(),
        ..job_new(T0)
    };
    let other = insert(&store, other).await;

    let by_state = store
        .job_list(JobFilter {
            states: vec![JobState::Pending],
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_state.len(), 1);
    assert_eq!(by_state[0].id, pending);

    let by_workflow = store
        .job_list(JobFilter {
            workflow_id: Some("other".into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_workflow.len(), 1);
    assert_eq!(by_workflow[0].id, other);

    let both_states = store
        .job_list(JobFilter {
            states: vec![JobState::Queued, JobState::Pending],
            workflow_id: Some(crate::support::WORKFLOW_ID.into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<String> = both_states.into_iter().map(|job| job.id).collect();
    ids.sort();
    let mut expected = vec![queued, pending];
    expected.sort();
    assert_eq!(ids, expected);
}

async fn job_list_limit_capped(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let jobs: Vec<JobNew> = (0..1005).map(|offset| job_new(T0 + offset)).collect();
    store.job_insert_many(jobs, None).await.unwrap();
    let listed = store
        .job_list(JobFilter {
            limit: 5000,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1000);
}

async fn job_counts_follow_changes(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    insert(&store, job_new(T0)).await;
    insert(&store, job_new(T0)).await;
    insert(
        &store,
        JobNew {
            run_at: Some(T0 + 1_000),
            ..job_new(T0)
        },
    )
    .await;
    crate::support::claim_one(&store, T0).await;

    let counts = store.job_counts().await.unwrap();
    assert_eq!(counts[&JobState::Queued], 1);
    assert_eq!(counts[&JobState::Running], 1);
    assert_eq!(counts[&JobState::Pending], 1);
    assert_eq!(counts[&JobState::Completed], 0);
}

async fn job_delete_only_when_ended(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let error = store.job_delete(&id).await.unwrap_err();
    assert!(
        matches!(error, StoreError::JobStateConflict { .. }),
        "{error:?}"
    );

    store
        .job_action(&id, oaj_store::JobAction::Cancel, T0)
        .await
        .unwrap();
    store.job_delete(&id).await.unwrap();
    assert!(store.job_get(&id).await.unwrap().is_none());
    assert_eq!(store.job_counts().await.unwrap()[&JobState::Cancelled], 0);
    let error = store.job_delete(&id).await.unwrap_err();
    assert!(matches!(error, StoreError::JobNotFound(_)), "{error:?}");
}

async fn concurrent_failure_keeps_other_writes(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    // Writes sent together may share one transaction, and a failing one must not undo the rest.
    let inserts = (0..20).map(|index| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut new = job_new(T0);
            if index % 2 == 1 {
                new.workflow_version = "9.9.9".to_owned();
            }
            store.job_insert_many(vec![new], None).await
        })
    });
    let mut failures = 0;
    for insert in inserts.collect::<Vec<_>>() {
        if insert.await.unwrap().is_err() {
            failures += 1;
        }
    }
    assert_eq!(failures, 10);
    assert_eq!(
        store.job_list(JobFilter::default()).await.unwrap().len(),
        10
    );
    assert_eq!(store.job_counts().await.unwrap()[&JobState::Queued], 10);
}

/// Checks that the list goes by creation time, then id, as `job_query` does, and not by id alone:
/// a job inserted later with an earlier creation time comes after one created later.
async fn job_list_orders_by_creation_time(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let created_late = insert(&store, job_new(T0 + 10)).await;
    let created_early = insert(&store, job_new(T0)).await;
    let listed = store.job_list(JobFilter::default()).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(ids, [created_late.as_str(), created_early.as_str()]);

    let after_first = JobFilter {
        before_id: Some(created_late.clone()),
        ..JobFilter::default()
    };
    let listed = store.job_list(after_first).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created_early);
}

async fn job_list_cursor_of_missing_job_fails(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    insert(&store, job_new(T0)).await;
    let filter = JobFilter {
        before_id: Some("no-such-job".to_owned()),
        ..JobFilter::default()
    };
    let error = store.job_list(filter).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::JobNotFound(id) if id == "no-such-job"),
        "{error:?}"
    );
}

crate::store_tests!(
    concurrent_failure_keeps_other_writes,
    job_insert_then_get,
    job_insert_future_run_at_is_pending,
    job_insert_unknown_workflow_rejected,
    job_insert_many_all_or_nothing,
    job_insert_batch_sets_batch_id,
    job_list_newest_first_with_cursor,
    job_list_filters_state_and_workflow,
    job_list_limit_capped,
    job_list_orders_by_creation_time,
    job_list_cursor_of_missing_job_fails,
    job_counts_follow_changes,
    job_delete_only_when_ended,
);
