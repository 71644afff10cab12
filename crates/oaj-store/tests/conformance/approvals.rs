//! Approval decisions on waiting steps.

use std::sync::Arc;

use oaj_core::JobState;
use oaj_store::{
    ApprovalDecide, ApprovalDecision, ClaimedJob, JobOutcome, StepState, StepUpdate, Store,
    StoreError,
};

use crate::support::*;

async fn park_waiting(store: &Arc<dyn Store>, step_ids: &[&str]) -> ClaimedJob {
    insert(store, job_new(T0)).await;
    let claimed = claim_one(store, T0).await;
    for step_id in step_ids {
        let update = StepUpdate {
            lease: claimed.lease.clone(),
            step_id: (*step_id).to_owned(),
            item: None,
            state: StepState::Waiting,
            output: None,
            error: None,
            items_total: None,
            now: T0 + 1,
        };
        store.step_update(update).await.unwrap();
    }
    finish(
        store,
        &claimed.lease,
        JobOutcome::Parked { deadline: None },
        T0 + 2,
    )
    .await;
    claimed
}

fn decide(job_id: &str, step_id: Option<&str>) -> ApprovalDecide {
    ApprovalDecide {
        job_id: job_id.to_owned(),
        step_id: step_id.map(str::to_owned),
        decision: ApprovalDecision {
            approved: true,
            by: Some("ana".into()),
            comment: Some("looks fine".into()),
            at: T0 + 10,
        },
    }
}

async fn approval_queues_parked_job(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let claimed = park_waiting(&store, &["review"]).await;
    let id = claimed.job.id.clone();
    assert_eq!(job(&store, &id).await.state, JobState::Pending);

    store
        .approval_decide(decide(&id, Some("review")))
        .await
        .unwrap();
    assert_eq!(job(&store, &id).await.state, JobState::Queued);
    let steps = store.step_run_list(&id).await.unwrap();
    let decision = steps[0].decision.clone().expect("the decision is stored");
    assert!(decision.approved);
    assert_eq!(decision.by.as_deref(), Some("ana"));
    assert_eq!(decision.comment.as_deref(), Some("looks fine"));
    assert_eq!(decision.at, T0 + 10);
}

async fn approval_without_step_takes_only_waiting(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let claimed = park_waiting(&store, &["review"]).await;
    store
        .approval_decide(decide(&claimed.job.id, None))
        .await
        .unwrap();
    assert_eq!(job(&store, &claimed.job.id).await.state, JobState::Queued);
}

async fn approval_rejected_when_not_waiting(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let claimed = park_waiting(&store, &["review"]).await;
    let id = claimed.job.id.clone();
    let wrong_step = store
        .approval_decide(decide(&id, Some("other")))
        .await
        .unwrap_err();
    assert!(
        matches!(wrong_step, StoreError::ApprovalNotWaiting { .. }),
        "{wrong_step:?}"
    );

    store
        .approval_decide(decide(&id, Some("review")))
        .await
        .unwrap();
    let twice = store
        .approval_decide(decide(&id, Some("review")))
        .await
        .unwrap_err();
    assert!(
        matches!(twice, StoreError::ApprovalNotWaiting { .. }),
        "{twice:?}"
    );
    let missing = store
        .approval_decide(decide("missing", None))
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::JobNotFound(_)), "{missing:?}");
}

async fn approval_without_step_ambiguous(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let claimed = park_waiting(&store, &["legal", "review"]).await;
    let error = store
        .approval_decide(decide(&claimed.job.id, None))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::ApprovalStepAmbiguous { .. }),
        "{error:?}"
    );
}

async fn parked_job_with_decision_goes_back_to_queue(store: Arc<dyn Store>) {
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    let update = StepUpdate {
        lease: claimed.lease.clone(),
        step_id: "review".into(),
        item: None,
        state: StepState::Waiting,
        output: None,
        error: None,
        items_total: None,
        now: T0 + 1,
    };
    store.step_update(update).await.unwrap();
    // The decision arrives while the worker still has the lease.
    store
        .approval_decide(decide(&id, Some("review")))
        .await
        .unwrap();
    finish(
        &store,
        &claimed.lease,
        JobOutcome::Parked { deadline: None },
        T0 + 2,
    )
    .await;
    assert_eq!(job(&store, &id).await.state, JobState::Queued);
}

crate::store_tests!(
    approval_queues_parked_job,
    approval_without_step_takes_only_waiting,
    approval_rejected_when_not_waiting,
    approval_without_step_ambiguous,
    parked_job_with_decision_goes_back_to_queue,
);
