//! Cancel, pause, resume and retry of jobs while they run.

use std::time::Duration;

use oaj_core::JobState;
use oaj_engine::EngineConfig;
use oaj_store::{JobAction, StepState};
use serde_json::json;

use crate::harness::{lines, test_config, Harness};

fn append(path: &std::path::Path, line: &str) -> serde_json::Value {
    json!({"kind": "command", "command": ["sh", "-c", format!("echo {line} >> {}", path.display())]})
}

#[tokio::test]
async fn cancel_stops_running_attempt() {
    let harness = Harness::start().await;
    let workflow = json!({
        "id": "cancel-me",
        "steps": [{"id": "long", "component": "sleep", "inputs": {"seconds": 60}}]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    harness
        .wait_for(&job_id, |job| job.state == JobState::Running)
        .await;
    harness
        .store()
        .job_action(&job_id, JobAction::Cancel, 0)
        .await
        .unwrap();
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(
        harness.step(&job_id, "long").await.state,
        StepState::Cancelled
    );
}

#[tokio::test]
async fn pause_keeps_finished_steps_and_resume_continues() {
    let harness = Harness::start().await;
    let log = harness.path("steps.log");
    let workflow = json!({
        "id": "pausable",
        "agents": {"first": append(&log, "first"), "third": append(&log, "third")},
        "steps": [
            {"id": "first", "component": "first"},
            {"id": "second", "component": "sleep", "inputs": {"ms": 300}, "depends_on": ["first"]},
            {"id": "third", "component": "third", "depends_on": ["second"]}
        ]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    // Pause only once `second` runs: a pause that arrives while `first` is still being recorded
    // rightly keeps `second` from starting at all.
    harness
        .wait_step_state(&job_id, "second", StepState::Running)
        .await;
    harness
        .store()
        .job_action(&job_id, JobAction::Pause, 0)
        .await
        .unwrap();
    harness.wait_state(&job_id, JobState::Paused).await;
    assert_eq!(
        harness.step(&job_id, "second").await.state,
        StepState::Completed
    );
    assert_eq!(lines(&log), ["first"], "nothing new starts while paused");

    harness
        .store()
        .job_action(&job_id, JobAction::Resume, 0)
        .await
        .unwrap();
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.error);
    assert_eq!(
        lines(&log),
        ["first", "third"],
        "finished steps do not run again"
    );
}

#[tokio::test]
async fn retry_reruns_only_failed_steps() {
    let harness = Harness::start().await;
    let log = harness.path("steps.log");
    let flag = harness.path("fixed");
    let workflow = json!({
        "id": "retry-me",
        "agents": {
            "first": append(&log, "first"),
            "check": {"kind": "command", "command": ["sh", "-c", format!("echo check >> {}; test -e {}", log.display(), flag.display())]}
        },
        "steps": [
            {"id": "first", "component": "first"},
            {"id": "check", "component": "check", "depends_on": ["first"]}
        ]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    assert_eq!(harness.wait_final(&job_id).await.state, JobState::Failed);
    std::fs::write(&flag, "").unwrap();
    harness
        .store()
        .job_action(&job_id, JobAction::Retry, 0)
        .await
        .unwrap();
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.error);
    assert_eq!(lines(&log), ["first", "check", "check"]);
}

#[tokio::test]
async fn job_timeout_fails_job_and_stops_attempt() {
    let harness = Harness::start().await;
    let workflow = json!({
        "id": "job-timeout",
        "defaults": {"job_timeout": 0.2},
        "steps": [{"id": "long", "component": "sleep", "inputs": {"seconds": 60}}]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Failed);
    assert!(job.error.unwrap().contains("timed out"));
}

#[tokio::test]
async fn shutdown_lets_attempts_finish_and_requeues_job() {
    let mut harness = Harness::start().await;
    let workflow = json!({
        "id": "shutdown",
        "steps": [
            {"id": "first", "component": "sleep", "inputs": {"ms": 200}},
            {"id": "second", "component": "noop", "depends_on": ["first"]}
        ]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    harness
        .wait_step_state(&job_id, "first", StepState::Running)
        .await;
    harness.stop().await;

    let job = harness.store().job_get(&job_id).await.unwrap().unwrap();
    assert_eq!(
        job.state,
        JobState::Queued,
        "the job goes back to the queue for another worker"
    );
    assert_eq!(
        harness.step(&job_id, "first").await.state,
        StepState::Completed
    );
    let second_ran = harness
        .steps(&job_id)
        .await
        .iter()
        .any(|run| run.step_id == "second");
    assert!(!second_ran, "nothing new starts during shutdown");
}

#[tokio::test]
async fn pause_between_heartbeats_stops_next_step() {
    // Regression: a pause requested while an attempt ran reached the runner only with the next
    // heartbeat, so a step that ended before it let the following step start.
    let config = EngineConfig {
        heartbeat: Duration::from_secs(3600),
        ..test_config()
    };
    let harness = Harness::start_with(config, true).await;
    let log = harness.path("steps.log");
    let marker = harness.path("marker");
    let gate = format!(
        "echo gate >> {}; while [ ! -e {} ]; do sleep 0.02; done",
        log.display(),
        marker.display()
    );
    let workflow = json!({
        "id": "paused-between-heartbeats",
        "agents": {
            "gate": {"kind": "command", "command": ["sh", "-c", gate]},
            "after": append(&log, "after")
        },
        "steps": [
            {"id": "gate", "component": "gate"},
            {"id": "after", "component": "after", "depends_on": ["gate"]}
        ]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    harness
        .wait_step_state(&job_id, "gate", StepState::Running)
        .await;

    harness
        .store()
        .job_action(&job_id, JobAction::Pause, 0)
        .await
        .unwrap();
    std::fs::write(&marker, "").unwrap();

    harness.wait_state(&job_id, JobState::Paused).await;
    assert_eq!(
        lines(&log),
        ["gate"],
        "no step starts after the pause request"
    );
}

/// Regression: a pause that arrived while the last step ran left a finished job paused, with
/// nothing left to resume.
#[tokio::test]
async fn pause_during_last_step_completes_job() {
    let harness = Harness::start().await;
    let workflow = json!({
        "id": "last-step",
        "steps": [{"id": "only", "component": "sleep", "inputs": {"ms": 300}}]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    harness
        .wait_step_state(&job_id, "only", StepState::Running)
        .await;
    harness
        .store()
        .job_action(&job_id, JobAction::Pause, 0)
        .await
        .unwrap();
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.error);
}
