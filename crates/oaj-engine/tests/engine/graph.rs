//! Steps run in the order the graph allows: data flows, fan-outs, conditions and skips.

use oaj_core::JobState;
use oaj_store::StepState;
use serde_json::json;

use crate::harness::Harness;

#[tokio::test]
async fn linear_workflow_passes_outputs_along() {
    let harness = Harness::start().await;
    let workflow = json!({
        "id": "linear",
        "inputs": {"name": {"type": "string"}},
        "steps": [
            {"id": "greet", "component": "echo", "inputs": {"text": "hello ${inputs.name}", "n": 2}},
            {"id": "shout", "component": "transform", "inputs": {"length": "${size(steps.greet.outputs.text)}", "twice": "${steps.greet.outputs.n * 2}"}}
        ],
        "outputs": {"result": {"value": "${steps.shout.outputs}"}}
    });
    let job_id = harness.submit(&workflow, json!({"name": "ada"})).await;
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.error);
    assert_eq!(
        job.result,
        Some(json!({"result": {"length": 9, "twice": 4}}))
    );
}

#[tokio::test]
async fn fan_out_gathers_outputs_in_item_order() {
    let harness = Harness::start().await;
    let workflow = json!({
        "id": "fan-out",
        "steps": [
            {"id": "each", "component": "sleep", "for_each": {"items": "${inputs.delays}", "concurrency": 2}, "inputs": {"ms": "${item}"}},
            {"id": "square", "component": "echo", "for_each": "${inputs.delays}", "inputs": {"value": "${item * item}", "index": "${index}"}}
        ],
        "inputs": {"delays": {"type": "array"}}
    });
    let job_id = harness
        .submit(&workflow, json!({"delays": [30, 1, 10]}))
        .await;
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.error);
    let result = job.result.expect("result");
    assert_eq!(
        result["square"],
        json!([{"value": 900, "index": 0}, {"value": 1, "index": 1}, {"value": 100, "index": 2}])
    );
    assert_eq!(
        result["each"],
        json!([{"slept_ms": 30}, {"slept_ms": 1}, {"slept_ms": 10}])
    );
    let items = harness
        .steps(&job_id)
        .await
        .into_iter()
        .filter(|run| run.step_id == "each" && run.item.is_some())
        .count();
    assert_eq!(items, 3);
}

#[tokio::test]
async fn false_condition_skips_step_and_its_dependents() {
    let harness = Harness::start().await;
    let workflow = json!({
        "id": "conditions",
        "steps": [
            {"id": "check", "component": "echo", "inputs": {"ok": false}},
            {"id": "maybe", "component": "echo", "condition": "steps.check.outputs.ok", "inputs": {"x": 1}},
            {"id": "after", "component": "echo", "depends_on": ["maybe"]},
            {"id": "always", "component": "echo", "depends_on": ["check"]}
        ]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.error);
    assert_eq!(
        harness.step(&job_id, "maybe").await.state,
        StepState::Skipped
    );
    assert_eq!(
        harness.step(&job_id, "after").await.state,
        StepState::Skipped
    );
    assert_eq!(
        harness.step(&job_id, "always").await.state,
        StepState::Completed
    );
}

#[tokio::test]
async fn failed_step_fails_job_unless_it_continues() {
    let harness = Harness::start().await;
    let workflow = json!({
        "id": "failures",
        "steps": [
            {"id": "optional", "component": "fail", "inputs": {"message": "optional broke", "retryable": false}, "on_failure": "continue"},
            {"id": "needs_optional", "component": "echo", "depends_on": ["optional"]},
            {"id": "required", "component": "fail", "inputs": {"message": "required broke", "retryable": false}}
        ]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Failed);
    let error = job.error.expect("error");
    assert!(error.contains("required"), "{error}");
    assert_eq!(
        harness.step(&job_id, "optional").await.state,
        StepState::Failed
    );
    assert_eq!(
        harness.step(&job_id, "needs_optional").await.state,
        StepState::Skipped
    );
}

/// An agent that an embedding application registers: it upper-cases `text`.
struct Upper;

#[async_trait::async_trait]
impl oaj_engine::agent::Agent for Upper {
    async fn call(
        &self,
        call: oaj_engine::agent::AgentCall,
    ) -> Result<oaj_engine::agent::AgentOutput, oaj_engine::agent::AgentError> {
        let text = call.input["text"]
            .as_str()
            .ok_or_else(|| oaj_engine::agent::AgentError::permanent("missing text"))?;
        let output = json!({"text": text.to_uppercase(), "capability": call.capability});
        Ok(oaj_engine::agent::AgentOutput {
            output,
            ..Default::default()
        })
    }
}

#[tokio::test]
async fn registered_rust_agent_runs_steps() {
    let mut registry = oaj_engine::agent::AgentRegistry::with_builtins();
    registry.register("upper", std::sync::Arc::new(Upper));
    let harness = Harness::start_with_registry(crate::harness::test_config(), registry, true).await;
    let workflow = json!({
        "id": "registered",
        "steps": [{"id": "shout", "component": "upper.loudly", "inputs": {"text": "quiet"}}]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.error);
    assert_eq!(
        job.result.unwrap()["shout"],
        json!({"text": "QUIET", "capability": "loudly"})
    );
}

/// An agent with a bug: it panics on every call.
struct Panics;

#[async_trait::async_trait]
impl oaj_engine::agent::Agent for Panics {
    async fn call(
        &self,
        _call: oaj_engine::agent::AgentCall,
    ) -> Result<oaj_engine::agent::AgentOutput, oaj_engine::agent::AgentError> {
        panic!("bug in the agent")
    }
}

#[tokio::test]
async fn panicking_agent_fails_its_step_only() {
    let mut registry = oaj_engine::agent::AgentRegistry::with_builtins();
    registry.register("buggy", std::sync::Arc::new(Panics));
    let harness = Harness::start_with_registry(crate::harness::test_config(), registry, true).await;
    let workflow = json!({
        "id": "panics",
        "steps": [{"id": "crash", "component": "buggy", "retry": {"max_attempts": 3, "delay_seconds": 0.01}}]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Failed);
    assert!(job.error.unwrap().contains("bug in the agent"));
    assert_eq!(
        harness.step(&job_id, "crash").await.attempts,
        1,
        "a panic is not retried"
    );
}

/// Regression: a chain of steps that each wrapped the previous output stored JSON nested deeper
/// than the store could read back, and every job listing failed after that.
#[tokio::test]
async fn deeply_nested_outputs_fail_job_and_keep_store_readable() {
    let harness = Harness::start().await;
    let mut steps = vec![json!({"id": "s0", "component": "echo", "inputs": {"value": 1}})];
    for index in 1..80 {
        let previous = format!("${{steps.s{}.outputs}}", index - 1);
        steps.push(json!({"id": format!("s{index}"), "component": "echo", "inputs": {"previous": previous}}));
    }
    let workflow = json!({"id": "nesting", "steps": steps});
    let job_id = harness.submit(&workflow, json!({})).await;
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Failed);
    assert!(job.error.unwrap().contains("levels deep"));

    let filter = oaj_store::JobFilter {
        limit: 10,
        ..Default::default()
    };
    let listed = harness
        .store()
        .job_list(filter)
        .await
        .expect("jobs can still be listed");
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn instant_records_precede_slow_attempt() {
    let harness = Harness::start().await;
    let workflow = json!({
        "id": "mixed",
        "steps": [
            {"id": "first", "component": "echo", "inputs": {"n": 1}},
            {"id": "wait", "component": "sleep", "inputs": {"ms": 20, "after": "${steps.first.outputs.n}"}},
            {"id": "last", "component": "noop", "inputs": {"after": "${steps.wait.outputs}"}}
        ]
    });
    let job_id = harness.submit(&workflow, json!({})).await;
    let job = harness.wait_final(&job_id).await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.error);

    let filter = oaj_store::EventFilter {
        job_id: Some(job_id.clone()),
        ..oaj_store::EventFilter::default()
    };
    let events = harness.store().event_list(filter).await.unwrap();
    let attempts: Vec<(String, String)> = events
        .iter()
        .filter(|event| event.kind.starts_with("attempt."))
        .map(|event| {
            (
                event.kind.clone(),
                event.step_id.clone().unwrap_or_default(),
            )
        })
        .collect();
    let expected = [
        ("attempt.started", "first"),
        ("attempt.succeeded", "first"),
        ("attempt.started", "wait"),
        ("attempt.succeeded", "wait"),
        ("attempt.started", "last"),
        ("attempt.succeeded", "last"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(kind, step)| (kind.to_string(), step.to_string()))
        .collect();
    assert_eq!(attempts, expected);
    assert_eq!(
        events.last().map(|event| event.kind.as_str()),
        Some("job.completed")
    );
    for run in harness.steps(&job_id).await {
        assert_eq!(run.state, StepState::Completed, "{}", run.step_id);
        assert_eq!(run.attempts, 1, "{}", run.step_id);
    }
}
