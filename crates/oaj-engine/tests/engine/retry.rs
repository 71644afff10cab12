//! Retries: each retry is a new attempt, scheduled by the step's policy.

use oaj_core::JobState;
use oaj_store::{AttemptState, StepState};
use serde_json::json;

use crate::harness::Harness;

#[tokio::test]
async fn flaky_step_succeeds_after_retries() {
    let harness = Harness::start().await;
    let workflow = json!({
        "id": "flaky",
        "steps": [{
            "id": "flaky",
            "component": "fail",
            "inputs": {"message": "not yet", "succeed_on_attempt": 3},
            "retry": {"max_attempts": 5, "delay_seconds": 0.02, "backoff_multiplier": 2}
        }]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.error);

    let attempts = harness.store().attempt_list(&job_id).await.unwrap();
    let states: Vec<AttemptState> = attempts.iter().map(|attempt| attempt.state).collect();
    assert_eq!(
        states,
        [
            AttemptState::Failed,
            AttemptState::Failed,
            AttemptState::Succeeded
        ]
    );
    let numbers: Vec<u32> = attempts.iter().map(|attempt| attempt.number).collect();
    assert_eq!(numbers, [1, 2, 3]);
    // Each retry starts no earlier than its backoff delay after the failure: 20 ms, then 40 ms.
    for (pair, delay_ms) in attempts.windows(2).zip([20, 40]) {
        let failed_at = pair[0].finished_at.expect("finished");
        assert!(
            pair[1].started_at >= failed_at + delay_ms,
            "attempt {} started early",
            pair[1].number
        );
    }
}

#[tokio::test]
async fn retries_stop_at_max_attempts() {
    let harness = Harness::start().await;
    let workflow = json!({
        "id": "hopeless",
        "steps": [{
            "id": "hopeless",
            "component": "fail",
            "inputs": {"message": "always broken"},
            "retry": {"max_attempts": 3, "delay_seconds": 0.01}
        }]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Failed);
    assert!(job.error.unwrap().contains("always broken"));
    let run = harness.step(&job_id, "hopeless").await;
    assert_eq!(run.state, StepState::Failed);
    assert_eq!(run.attempts, 3);
}

#[tokio::test]
async fn non_retryable_error_fails_at_once() {
    let harness = Harness::start().await;
    let workflow = json!({
        "id": "permanent",
        "steps": [{
            "id": "bad",
            "component": "fail",
            "inputs": {"message": "bad request", "retryable": false},
            "retry": {"max_attempts": 5, "delay_seconds": 0.01}
        }]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    harness.wait_final(&job_id).await;
    assert_eq!(harness.step(&job_id, "bad").await.attempts, 1);
}

#[tokio::test]
async fn timed_out_attempt_is_retried_then_fails() {
    let harness = Harness::start().await;
    let workflow = json!({
        "id": "timeouts",
        "steps": [{
            "id": "slow",
            "component": "sleep",
            "inputs": {"seconds": 30},
            "timeout": 0.1,
            "retry": {"max_attempts": 2, "delay_seconds": 0.01}
        }]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Failed);
    let attempts = harness.store().attempt_list(&job_id).await.unwrap();
    let states: Vec<AttemptState> = attempts.iter().map(|attempt| attempt.state).collect();
    assert_eq!(states, [AttemptState::TimedOut, AttemptState::TimedOut]);
    assert!(attempts[0]
        .error
        .as_deref()
        .unwrap_or("")
        .contains("timed out"));
}
