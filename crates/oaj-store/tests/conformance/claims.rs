//! Claim order (priority, FIFO, ageing) and exclusivity.

use std::collections::HashSet;
use std::sync::Arc;

use oaj_core::{JobState, Priority};
use oaj_store::{ClaimParams, JobNew, JobOutcome, Store};

use crate::support::{claim, finish, insert, job, job_new, workflow_setup, LEASE_MS, T0};

fn with_priority(priority: Priority, created_at: i64) -> JobNew {
    JobNew {
        priority,
        ..job_new(created_at)
    }
}

async fn claim_orders_by_priority(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let low = insert(&store, with_priority(Priority::Low, T0)).await;
    let critical = insert(&store, with_priority(Priority::Critical, T0)).await;
    let medium = insert(&store, with_priority(Priority::Medium, T0)).await;
    let high = insert(&store, with_priority(Priority::High, T0)).await;

    let claimed = claim(&store, "worker-1", 10, T0).await;
    let order: Vec<&str> = claimed.iter().map(|c| c.job.id.as_str()).collect();
    assert_eq!(order, [&critical, &high, &medium, &low].map(String::as_str));
}

async fn claim_is_fifo_within_priority(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let first = insert(&store, job_new(T0)).await;
    let second = insert(&store, job_new(T0 + 1)).await;
    let third = insert(&store, job_new(T0 + 2)).await;

    let claimed = claim(&store, "worker-1", 2, T0 + 10).await;
    let order: Vec<&str> = claimed.iter().map(|c| c.job.id.as_str()).collect();
    assert_eq!(order, [first.as_str(), second.as_str()]);
    let rest = claim(&store, "worker-1", 2, T0 + 10).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].job.id, third);
}

async fn claim_ages_old_low_jobs(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    // A low job that waited more than three ageing steps (60 s each) goes before a critical job
    // queued just now.
    let old_low = insert(&store, with_priority(Priority::Low, T0)).await;
    let new_critical = insert(&store, with_priority(Priority::Critical, T0 + 180_001)).await;
    let claimed = claim(&store, "worker-1", 2, T0 + 180_001).await;
    let order: Vec<&str> = claimed.iter().map(|c| c.job.id.as_str()).collect();
    assert_eq!(order, [old_low.as_str(), new_critical.as_str()]);
}

async fn claim_limited_to_job_ids(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let _first = insert(&store, with_priority(Priority::Critical, T0)).await;
    let wanted = insert(&store, job_new(T0 + 1)).await;
    let params = oaj_store::ClaimParams {
        worker_id: "worker-1".to_owned(),
        limit: 10,
        now: T0 + 2,
        lease_ms: LEASE_MS,
        job_ids: vec![wanted.clone(), "no-such-job".to_owned()],
    };
    let claimed = store.job_claim(params).await.expect("the claim succeeds");
    let ids: Vec<&str> = claimed.iter().map(|c| c.job.id.as_str()).collect();
    assert_eq!(ids, [wanted.as_str()]);
}

async fn claim_sets_lease_and_returns_workflow(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim(&store, "worker-7", 1, T0 + 5).await;
    assert_eq!(claimed.len(), 1);
    let claimed = &claimed[0];
    assert_eq!(claimed.job.id, id);
    assert_eq!(claimed.job.state, JobState::Running);
    assert_eq!(claimed.job.lease_owner.as_deref(), Some("worker-7"));
    assert_eq!(claimed.job.lease_expires_at, Some(T0 + 5 + LEASE_MS));
    assert_eq!(claimed.job.started_at, Some(T0 + 5));
    assert_eq!(claimed.lease.token, 1);
    assert_eq!(claimed.lease.token, claimed.job.lease_token);
    assert_eq!(claimed.workflow.id, crate::support::WORKFLOW_ID);
    assert!(claimed.steps.is_empty());
    assert_eq!(job(&store, &id).await.state, JobState::Running);
}

async fn claim_skips_pending_jobs(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    insert(
        &store,
        JobNew {
            run_at: Some(T0 + 1_000),
            ..job_new(T0)
        },
    )
    .await;
    assert!(claim(&store, "worker-1", 10, T0).await.is_empty());
}

async fn claim_never_returns_job_twice(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let jobs: Vec<JobNew> = (0..200).map(|offset| job_new(T0 + offset)).collect();
    store.job_insert_many(jobs, None).await.unwrap();

    let claimers = (0..4).map(|worker| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let claimed = claim(&store, &format!("worker-{worker}"), 7, T0 + 1_000).await;
                if claimed.is_empty() {
                    return ids;
                }
                ids.extend(claimed.into_iter().map(|c| c.job.id));
            }
        })
    });
    let mut seen = HashSet::new();
    let mut total = 0;
    for claimer in claimers.collect::<Vec<_>>() {
        for id in claimer.await.unwrap() {
            total += 1;
            assert!(seen.insert(id.clone()), "job {id} was claimed twice");
        }
    }
    assert_eq!(total, 200);
}

async fn insert_claim_takes_in_claim_order(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let older = insert(&store, with_priority(Priority::High, T0)).await;
    let params = ClaimParams {
        worker_id: "worker-1".to_owned(),
        limit: 2,
        now: T0 + 5,
        lease_ms: LEASE_MS,
        job_ids: Vec::new(),
    };
    let jobs = vec![
        with_priority(Priority::Low, T0 + 1),
        with_priority(Priority::Medium, T0 + 2),
    ];
    let (ids, claimed) = store.job_insert_claim(jobs, None, params).await.unwrap();

    assert_eq!(ids.len(), 2);
    let claimed_ids: Vec<&str> = claimed.iter().map(|job| job.job.id.as_str()).collect();
    assert_eq!(claimed_ids, [older.as_str(), ids[1].as_str()]);
    for job in &claimed {
        assert_eq!(job.job.state, JobState::Running);
        assert_eq!(job.job.lease_owner.as_deref(), Some("worker-1"));
        assert_eq!(job.lease.token, job.job.lease_token);
    }
    assert_eq!(job(&store, &ids[0]).await.state, JobState::Queued);
    let counts = store.job_counts().await.unwrap();
    assert_eq!(counts[&JobState::Running], 2);
    assert_eq!(counts[&JobState::Queued], 1);
}

async fn insert_claim_failure_inserts_nothing(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let mut unknown = job_new(T0);
    unknown.workflow_id = "missing".to_owned();
    let params = ClaimParams {
        worker_id: "worker-1".to_owned(),
        limit: 1,
        now: T0,
        lease_ms: LEASE_MS,
        job_ids: Vec::new(),
    };
    let jobs = vec![job_new(T0), unknown];
    let result = store.job_insert_claim(jobs, None, params).await;

    assert!(result.is_err(), "{result:?}");
    let counts = store.job_counts().await.unwrap();
    assert_eq!(counts.values().sum::<u64>(), 0, "{counts:?}");
}

/// Checks that the claimed job is the stored row after the claim: on a first claim, and on a
/// second claim of a job released with a step run, which keeps its first start time.
async fn claimed_job_matches_stored_row(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let first = claim(&store, "worker-1", 1, T0 + 5).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].job, job(&store, &id).await);

    let update = oaj_store::StepUpdate {
        lease: first[0].lease.clone(),
        step_id: "s1".into(),
        item: None,
        state: oaj_store::StepState::Skipped,
        output: None,
        error: None,
        items_total: None,
        now: T0 + 6,
    };
    store
        .step_update(update)
        .await
        .expect("the step update succeeds");
    finish(&store, &first[0].lease, JobOutcome::Released, T0 + 7).await;

    let second = claim(&store, "worker-2", 1, T0 + 9).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].job, job(&store, &id).await);
    assert_eq!(second[0].job.started_at, Some(T0 + 5));
    assert_eq!(second[0].job.lease_token, 2);
    let steps: Vec<&str> = second[0]
        .steps
        .iter()
        .map(|step| step.step_id.as_str())
        .collect();
    assert_eq!(steps, ["s1"]);
}

crate::store_tests!(
    insert_claim_takes_in_claim_order,
    insert_claim_failure_inserts_nothing,
    claim_orders_by_priority,
    claim_is_fifo_within_priority,
    claim_ages_old_low_jobs,
    claim_sets_lease_and_returns_workflow,
    claim_skips_pending_jobs,
    claim_never_returns_job_twice,
    claim_limited_to_job_ids,
    claimed_job_matches_stored_row,
);
