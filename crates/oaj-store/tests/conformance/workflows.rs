//! Workflow versions: immutability and semver order.

use std::sync::Arc;

use oaj_store::{Store, StoreError, WorkflowInserted};

use crate::support::workflow;

async fn workflow_insert_same_is_unchanged(store: Arc<dyn Store>) {
    let first = store.workflow_insert(workflow("a", "1.0.0")).await.unwrap();
    let again = store.workflow_insert(workflow("a", "1.0.0")).await.unwrap();
    assert_eq!(first, WorkflowInserted::Inserted);
    assert_eq!(again, WorkflowInserted::Unchanged);
}

async fn workflow_insert_different_document_rejected(store: Arc<dyn Store>) {
    store.workflow_insert(workflow("a", "1.0.0")).await.unwrap();
    let mut changed = workflow("a", "1.0.0");
    changed.document = "{\"id\":\"a\",\"steps\":[1]}".to_owned();
    let error = store.workflow_insert(changed).await.unwrap_err();
    assert!(
        matches!(error, StoreError::WorkflowExistsWithDifferentDocument { ref id, .. } if id == "a"),
        "{error:?}"
    );
}

async fn workflow_insert_invalid_version_rejected(store: Arc<dyn Store>) {
    let error = store
        .workflow_insert(workflow("a", "one"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::WorkflowVersionInvalid { .. }),
        "{error:?}"
    );
}

async fn workflow_latest_by_semver(store: Arc<dyn Store>) {
    for version in ["1.9.0", "1.10.0", "1.2.3", "1.10.0-rc.1"] {
        store.workflow_insert(workflow("a", version)).await.unwrap();
    }
    let latest = store.workflow_get("a", None).await.unwrap().unwrap();
    assert_eq!(latest.version, "1.10.0");
    let exact = store
        .workflow_get("a", Some("1.9.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exact.version, "1.9.0");
    assert!(store
        .workflow_get("a", Some("2.0.0"))
        .await
        .unwrap()
        .is_none());
    assert!(store.workflow_get("b", None).await.unwrap().is_none());
}

async fn workflow_list_highest_of_each(store: Arc<dyn Store>) {
    for (id, version) in [
        ("b", "2.0.0"),
        ("a", "0.9.0"),
        ("b", "10.0.0"),
        ("a", "0.10.0"),
    ] {
        store.workflow_insert(workflow(id, version)).await.unwrap();
    }
    let listed: Vec<(String, String)> = store
        .workflow_list()
        .await
        .unwrap()
        .into_iter()
        .map(|record| (record.id, record.version))
        .collect();
    let expected = [("a", "0.10.0"), ("b", "10.0.0")].map(|(id, v)| (id.to_owned(), v.to_owned()));
    assert_eq!(listed, expected);
}

crate::store_tests!(
    workflow_insert_same_is_unchanged,
    workflow_insert_different_document_rejected,
    workflow_insert_invalid_version_rejected,
    workflow_latest_by_semver,
    workflow_list_highest_of_each,
);
