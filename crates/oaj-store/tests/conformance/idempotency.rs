//! Idempotency keys: a repeated request returns the first job.

use std::sync::Arc;

use oaj_store::{JobFilter, JobNew, Store, StoreError};
use serde_json::json;

use crate::support::*;

fn keyed(key: &str) -> JobNew {
    JobNew {
        idempotency_key: Some(key.to_owned()),
        ..job_new(T0)
    }
}

async fn same_key_same_request_returns_same_id(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let first = insert(&store, keyed("order-1")).await;
    let mut again = keyed("order-1");
    again.created_at = T0 + 5_000; // a later submission of the same request
    let second = insert(&store, again).await;
    assert_eq!(first, second);
    assert_eq!(store.job_list(JobFilter::default()).await.unwrap().len(), 1);
}

async fn same_key_reordered_object_is_same_request(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let mut first = keyed("order-1");
    first.input = serde_json::from_str(r#"{"a": 1, "b": 2}"#).unwrap();
    let mut second = keyed("order-1");
    second.input = serde_json::from_str(r#"{"b": 2, "a": 1}"#).unwrap();
    assert_eq!(insert(&store, first).await, insert(&store, second).await);
}

async fn same_key_different_request_rejected(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let first = insert(&store, keyed("order-1")).await;
    let mut different = keyed("order-1");
    different.input = json!({ "text": "another" });
    let error = store
        .job_insert_many(vec![different], None)
        .await
        .unwrap_err();
    match error {
        StoreError::IdempotencyKeyReused { key, job_id } => {
            assert_eq!(key, "order-1");
            assert_eq!(job_id, first);
        }
        other => panic!("expected IdempotencyKeyReused, got {other:?}"),
    }
}

crate::store_tests!(
    same_key_same_request_returns_same_id,
    same_key_reordered_object_is_same_request,
    same_key_different_request_rejected,
);
