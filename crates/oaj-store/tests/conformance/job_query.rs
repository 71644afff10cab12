//! Job queries with filters, sort orders and cursors; workflow versions and their deletion; queue
//! depth by priority.

use std::collections::HashSet;
use std::sync::Arc;

use oaj_core::{JobState, Priority};
use oaj_store::{JobCursor, JobQuery, JobSort, Store, StoreError};

use crate::support::{job_new, workflow, T0, WORKFLOW_ID, WORKFLOW_VERSION};

async fn insert(store: &Arc<dyn Store>, jobs: Vec<oaj_store::JobNew>) -> Vec<String> {
    store
        .workflow_insert(workflow(WORKFLOW_ID, WORKFLOW_VERSION))
        .await
        .unwrap();
    store.job_insert_many(jobs, None).await.unwrap()
}

async fn page_all(store: &Arc<dyn Store>, sort: JobSort, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let query = JobQuery {
            sort,
            after: after.take(),
            limit,
            ..JobQuery::default()
        };
        let jobs = store.job_query(query).await.unwrap();
        ids.extend(jobs.iter().map(|job| job.id.clone()));
        match jobs.last() {
            Some(last) if jobs.len() == limit as usize => {
                after = Some(JobCursor::after(last, sort))
            }
            _ => return ids,
        }
    }
}

async fn job_query_pages_every_order_exactly(store: Arc<dyn Store>) {
    let priorities = [
        Priority::Low,
        Priority::High,
        Priority::Medium,
        Priority::High,
    ];
    let jobs = (0..20)
        .map(|index| {
            let mut job = job_new(T0 + index / 3);
            job.priority = priorities[index as usize % priorities.len()];
            job
        })
        .collect();
    let inserted = insert(&store, jobs).await;
    for sort in [
        JobSort::CreatedDesc,
        JobSort::CreatedAsc,
        JobSort::PriorityDesc,
    ] {
        let ids = page_all(&store, sort, 3).await;
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(ids.len(), 20, "{sort:?} returned {} jobs", ids.len());
        assert_eq!(unique.len(), 20, "{sort:?} repeated a job");
        let whole = page_all(&store, sort, 100).await;
        assert_eq!(ids, whole, "{sort:?} pages differ from one page");
    }
    let oldest_first = page_all(&store, JobSort::CreatedAsc, 100).await;
    assert_eq!(oldest_first[0], inserted[0]);
}

async fn job_query_filters_tags_priority_and_times(store: Arc<dyn Store>) {
    let mut tagged = job_new(T0);
    tagged.tags = vec!["a".to_owned(), "b".to_owned()];
    let mut urgent = job_new(T0 + 10);
    urgent.priority = Priority::Critical;
    let ids = insert(&store, vec![tagged, urgent]).await;
    let query = |query: JobQuery| {
        let store = Arc::clone(&store);
        async move {
            let jobs = store.job_query(query).await.unwrap();
            jobs.into_iter().map(|job| job.id).collect::<Vec<_>>()
        }
    };
    let both_tags = vec!["a".to_owned(), "b".to_owned()];
    let found = query(JobQuery {
        tags: both_tags,
        ..JobQuery::default()
    })
    .await;
    assert_eq!(found, vec![ids[0].clone()]);
    let found = query(JobQuery {
        tags: vec!["zzz".to_owned()],
        ..JobQuery::default()
    })
    .await;
    assert!(found.is_empty());
    let found = query(JobQuery {
        priority: Some(Priority::Critical),
        ..JobQuery::default()
    })
    .await;
    assert_eq!(found, vec![ids[1].clone()]);
    let found = query(JobQuery {
        created_from: Some(T0 + 5),
        ..JobQuery::default()
    })
    .await;
    assert_eq!(found, vec![ids[1].clone()]);
    let found = query(JobQuery {
        created_until: Some(T0 + 5),
        ..JobQuery::default()
    })
    .await;
    assert_eq!(found, vec![ids[0].clone()]);
    let found = query(JobQuery {
        states: vec![JobState::Completed],
        ..JobQuery::default()
    })
    .await;
    assert!(found.is_empty());
    let found = query(JobQuery {
        finished_from: Some(T0),
        ..JobQuery::default()
    })
    .await;
    assert!(found.is_empty(), "unfinished jobs have no finish time");
}

async fn queue_depth_counts_queued_by_priority(store: Arc<dyn Store>) {
    let mut high = job_new(T0);
    high.priority = Priority::High;
    let mut later = job_new(T0);
    later.run_at = Some(T0 + 60_000);
    insert(&store, vec![high, job_new(T0), job_new(T0), later]).await;
    let depth = store.queue_depth().await.unwrap();
    assert_eq!(depth.get(&Priority::High), Some(&1));
    assert_eq!(
        depth.get(&Priority::Medium),
        Some(&2),
        "the pending job is not queued"
    );
    assert_eq!(depth.get(&Priority::Low), None);
}

async fn workflow_versions_and_delete(store: Arc<dyn Store>) {
    for version in ["1.0.0", "1.10.0", "1.2.0"] {
        store.workflow_insert(workflow("w", version)).await.unwrap();
    }
    let versions: Vec<_> = store
        .workflow_versions("w")
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.version)
        .collect();
    assert_eq!(versions, vec!["1.10.0", "1.2.0", "1.0.0"]);
    assert!(store.workflow_versions("none").await.unwrap().is_empty());

    store.workflow_delete("w", "1.10.0").await.unwrap();
    assert!(store
        .workflow_get("w", Some("1.10.0"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .workflow_get("w", None)
            .await
            .unwrap()
            .unwrap()
            .version,
        "1.2.0"
    );
    let error = store.workflow_delete("w", "1.10.0").await.unwrap_err();
    assert!(
        matches!(error, StoreError::WorkflowNotFound { .. }),
        "{error:?}"
    );
}

async fn workflow_delete_in_use_rejected(store: Arc<dyn Store>) {
    let ids = insert(&store, vec![job_new(T0)]).await;
    let error = store
        .workflow_delete(WORKFLOW_ID, WORKFLOW_VERSION)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::WorkflowInUse { ref job_id, .. } if *job_id == ids[0]),
        "{error:?}"
    );
}

crate::store_tests!(
    job_query_pages_every_order_exactly,
    job_query_filters_tags_priority_and_times,
    queue_depth_counts_queued_by_priority,
    workflow_versions_and_delete,
    workflow_delete_in_use_rejected,
);
