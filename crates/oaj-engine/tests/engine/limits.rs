//! Concurrency limits: per fan-out, per agent, and per `concurrency` key.

use std::collections::HashMap;

use oaj_core::JobState;
use oaj_store::Attempt;
use serde_json::json;

use crate::harness::{test_config, Harness};

/// Returns the largest number of attempts that ran at the same moment.
fn overlap_max(attempts: &[Attempt]) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for attempt in attempts {
        edges.push((attempt.started_at, 1));
        edges.push((attempt.finished_at.expect("attempt finished"), -1));
    }
    // At equal times, ends sort before starts, so touching attempts do not count as overlapping.
    edges.sort();
    let mut running = 0;
    let mut most = 0;
    for (_, change) in edges {
        running += change;
        most = most.max(running);
    }
    usize::try_from(most).unwrap_or(0)
}

async fn attempts_of(harness: &Harness, job_id: &str, step_id: &str) -> Vec<Attempt> {
    let attempts = harness.store().attempt_list(job_id).await.unwrap();
    attempts
        .into_iter()
        .filter(|attempt| attempt.step_id == step_id)
        .collect()
}

#[tokio::test]
async fn for_each_concurrency_bounds_running_items() {
    let harness = Harness::start().await;
    let workflow = json!({
        "id": "bounded-fan-out",
        "steps": [{"id": "each", "component": "sleep", "for_each": {"items": "${[30, 30, 30, 30, 30, 30]}", "concurrency": 2}, "inputs": {"ms": "${item}"}}]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    assert_eq!(harness.wait_final(&job_id).await.state, JobState::Completed);
    let attempts = attempts_of(&harness, &job_id, "each").await;
    assert_eq!(attempts.len(), 6);
    assert!(overlap_max(&attempts) <= 2, "more than 2 items ran at once");
}

#[tokio::test]
async fn agent_limit_bounds_attempts_across_jobs() {
    let mut config = test_config();
    config.agent_limits = HashMap::from([("sleep".to_owned(), 1)]);
    let harness = Harness::start_with(config, true).await;
    let workflow = json!({
        "id": "agent-limited",
        "steps": [{"id": "nap", "component": "sleep", "for_each": "${[20, 20, 20]}", "inputs": {"ms": "${item}"}}]
    });
    let first = harness.submit(&workflow, json!({})).await;
    let second = harness.submit(&workflow, json!({})).await;
    let mut attempts = Vec::new();
    for job_id in [&first, &second] {
        assert_eq!(harness.wait_final(job_id).await.state, JobState::Completed);
        attempts.extend(attempts_of(&harness, job_id, "nap").await);
    }
    assert_eq!(attempts.len(), 6);
    assert_eq!(
        overlap_max(&attempts),
        1,
        "the sleep agent ran more than one attempt at once"
    );
}

#[tokio::test]
async fn concurrency_key_bounds_attempts_sharing_it() {
    let harness = Harness::start().await;
    let workflow = json!({
        "id": "keyed",
        "inputs": {"tenant": {"type": "string"}},
        "steps": [{
            "id": "call",
            "component": "sleep",
            "for_each": "${[20, 20, 20, 20]}",
            "inputs": {"ms": "${item}"},
            "concurrency": {"key": "tenant-${inputs.tenant}", "limit": 1}
        }]
    });
    let job_id = harness.submit(&workflow, json!({"tenant": "acme"})).await;
    assert_eq!(harness.wait_final(&job_id).await.state, JobState::Completed);
    let attempts = attempts_of(&harness, &job_id, "call").await;
    assert_eq!(attempts.len(), 4);
    assert_eq!(overlap_max(&attempts), 1);
}
