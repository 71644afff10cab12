//! Approval steps wait for a human decision, with an optional deadline.

use oaj_core::{Clock, JobState, SystemClock};
use oaj_store::{ApprovalDecide, ApprovalDecision, StepState};
use serde_json::{json, Value};

use crate::harness::Harness;

fn workflow(timeout_seconds: Option<f64>) -> Value {
    let mut approval = json!({"prompt": "ship it?"});
    if let Some(seconds) = timeout_seconds {
        approval["timeout_seconds"] = json!(seconds);
    }
    json!({
        "id": "approve-me",
        "steps": [
            {"id": "draft", "component": "echo", "inputs": {"text": "draft"}},
            {"id": "review", "component": "approval", "approval": approval, "depends_on": ["draft"]},
            {"id": "publish", "component": "echo", "inputs": {"decision": "${steps.review.outputs}"}}
        ]
    })
}

async fn decide(harness: &Harness, job_id: &str, approved: bool) {
    let decision = ApprovalDecision {
        approved,
        by: Some("lee".into()),
        comment: Some("checked".into()),
        at: SystemClock.now_ms(),
    };
    let decide = ApprovalDecide {
        job_id: job_id.to_owned(),
        step_id: Some("review".into()),
        decision,
    };
    harness
        .store()
        .approval_decide(decide)
        .await
        .expect("decision recorded");
}

#[tokio::test]
async fn approved_step_lets_job_complete() {
    let harness = Harness::start().await;
    let job_id = harness.submit(&workflow(None), json!({})).await;
    harness.wait_state(&job_id, JobState::Pending).await;
    assert_eq!(
        harness.step(&job_id, "review").await.state,
        StepState::Waiting
    );

    decide(&harness, &job_id, true).await;
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.error);
    let publish = harness.step(&job_id, "publish").await;
    assert_eq!(publish.output.unwrap()["decision"]["approved"], json!(true));
}

#[tokio::test]
async fn rejected_step_fails_job() {
    let harness = Harness::start().await;
    let job_id = harness.submit(&workflow(None), json!({})).await;
    harness.wait_state(&job_id, JobState::Pending).await;
    decide(&harness, &job_id, false).await;
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Failed);
    let error = job.error.unwrap();
    assert!(error.contains("rejected by lee"), "{error}");
    let publish_ran = harness
        .steps(&job_id)
        .await
        .iter()
        .any(|run| run.step_id == "publish");
    assert!(
        !publish_ran,
        "a step after a rejected approval does not run"
    );
}

#[tokio::test]
async fn approval_without_decision_fails_at_deadline() {
    let harness = Harness::start().await;
    let job_id = harness.submit(&workflow(Some(0.2)), json!({})).await;
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Failed);
    assert!(job.error.unwrap().contains("no approval decision"));
}
