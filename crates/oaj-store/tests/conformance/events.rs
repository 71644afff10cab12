//! Events: one per change, stored and published in sequence order.

use std::sync::Arc;

use oaj_store::{EventFilter, JobOutcome, Store};
use serde_json::json;

use crate::support::*;

async fn events_recorded_in_order(store: Arc<dyn Store>) {
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
    finish(
        &store,
        &claimed.lease,
        JobOutcome::Completed(json!(1)),
        T0 + 3,
    )
    .await;

    let filter = EventFilter {
        job_id: Some(id.clone()),
        ..EventFilter::default()
    };
    let events = store.event_list(filter).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "job.created",
            "job.running",
            "attempt.started",
            "attempt.succeeded",
            "job.completed"
        ]
    );
    assert!(events.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    assert_eq!(events[2].step_id.as_deref(), Some("s1"));
    assert_eq!(events[2].attempt, Some(1));
    assert_eq!(events[1].data["worker_id"], "worker-1");
}

async fn events_after_seq_and_limit(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    for offset in 0..5 {
        insert(&store, job_new(T0 + offset)).await;
    }
    let all = store.event_list(EventFilter::default()).await.unwrap();
    assert_eq!(all.len(), 5);
    let page = store
        .event_list(EventFilter {
            after_seq: all[1].seq,
            limit: 2,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    let seqs: Vec<i64> = page.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, [all[2].seq, all[3].seq]);
}

async fn events_published_after_commit(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let mut subscriber = store.event_subscribe();
    let id = insert(&store, job_new(T0)).await;
    claim_one(&store, T0).await;
    let created = subscriber.recv().await.unwrap();
    let running = subscriber.recv().await.unwrap();
    assert_eq!(created.kind, "job.created");
    assert_eq!(created.job_id.as_deref(), Some(id.as_str()));
    assert_eq!(running.kind, "job.running");
    assert!(created.seq < running.seq);
    let stored = store.event_list(EventFilter::default()).await.unwrap();
    assert_eq!(stored, [created, running]);
}

/// Requests that write many events at once (an insert and a claim of 45 jobs) publish each
/// event with the sequence number it is stored under.
async fn events_published_as_stored_in_bulk(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let mut subscriber = store.event_subscribe();
    let jobs = (0..45).map(|n| job_new(T0 + n)).collect();
    store.job_insert_many(jobs, None).await.unwrap();
    let claimed = claim(&store, "worker-1", 45, T0 + 100).await;
    assert_eq!(claimed.len(), 45);

    let mut published = Vec::new();
    for _ in 0..90 {
        published.push(subscriber.recv().await.unwrap());
    }
    let stored = store
        .event_list(EventFilter {
            limit: 1000,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(stored, published);
    let running = published.iter().filter(|event| event.kind == "job.running");
    assert_eq!(running.count(), 45);
}

async fn failed_request_leaves_no_event(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    store
        .maintenance(oaj_store::MaintenanceParams {
            now: T0 + LEASE_MS + 1,
            interruptions_max: 5,
            retention_ms: None,
            batch_size: 10,
        })
        .await
        .unwrap();
    let before = store
        .event_list(EventFilter::default())
        .await
        .unwrap()
        .len();
    let lost = store
        .attempt_start(attempt_start(&claimed.lease, "s1", T0))
        .await;
    assert!(lost.is_err());
    let after = store
        .event_list(EventFilter::default())
        .await
        .unwrap()
        .len();
    assert_eq!(before, after);
}

async fn work_notify_wakes_on_insert(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let notify = store.work_notify();
    let woken = notify.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    insert(&store, job_new(T0)).await;
    tokio::time::timeout(std::time::Duration::from_secs(5), woken)
        .await
        .expect("inserting a queued job wakes the workers");
}

crate::store_tests!(
    events_recorded_in_order,
    events_after_seq_and_limit,
    events_published_after_commit,
    events_published_as_stored_in_bulk,
    failed_request_leaves_no_event,
    work_notify_wakes_on_insert,
);
