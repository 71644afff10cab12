//! Durability: what a store acknowledged is there after the store is dropped and reopened.
//! Opening by path is specific to SQLite; a PostgreSQL store reconnects to its database instead.

use std::path::Path;
use std::sync::Arc;

use oaj_core::JobState;
use oaj_store::{EventFilter, JobOutcome, SqliteStore, Store};
use serde_json::json;

use crate::support::*;

fn open(path: &Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(path).expect("the store opens"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_store_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oaj.db");
    let store = open(&path);
    workflow_setup(&store).await;
    let done = insert(&store, job_new(T0)).await;
    let waiting = insert(&store, job_new(T0 + 1)).await;
    let claimed = claim_one(&store, T0).await;
    let attempt_id = store
        .attempt_start(attempt_start(&claimed.lease, "s1", T0 + 1))
        .await
        .unwrap();
    store
        .attempt_finish(attempt_success(&claimed.lease, attempt_id, "s1", T0 + 2))
        .await
        .unwrap();
    finish(
        &store,
        &claimed.lease,
        JobOutcome::Completed(json!({ "n": 1 })),
        T0 + 3,
    )
    .await;
    let events_before = store.event_list(EventFilter::default()).await.unwrap();
    drop(store);

    let store = open(&path);
    let completed = job(&store, &done).await;
    assert_eq!(completed.state, JobState::Completed);
    assert_eq!(completed.result, Some(json!({ "n": 1 })));
    assert_eq!(job(&store, &waiting).await.state, JobState::Queued);
    assert_eq!(store.attempt_list(&done).await.unwrap().len(), 1);
    assert_eq!(store.step_run_list(&done).await.unwrap().len(), 1);
    assert_eq!(
        store.event_list(EventFilter::default()).await.unwrap(),
        events_before
    );
    let counts = store.job_counts().await.unwrap();
    assert_eq!(counts[&JobState::Completed], 1);
    assert_eq!(counts[&JobState::Queued], 1);
    assert!(store
        .workflow_get(WORKFLOW_ID, None)
        .await
        .unwrap()
        .is_some());

    let next = claim_one(&store, T0 + 10).await;
    assert_eq!(next.job.id, waiting);
}
