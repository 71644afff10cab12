//! Documents written in the OpenAgents shape (string inputs, `step.output` connections, metadata)
//! are read as they are, with warnings only for the older reference spellings.

use oaj_core::{input_check, workflow_parse, workflow_parse_validate, Plan, ProblemCode, Severity};
use serde_json::json;

const SUMMARISE: &str = r#"{
  "id": "summarise_article",
  "version": "1.0.0",
  "name": "Summarise an article",
  "description": "Extract the text of an article and summarise it",
  "inputs": {
    "url": {"type": "string", "description": "Article address", "required": true, "format": "uri"},
    "length": {"type": "string", "enum": ["short", "long"], "default": "short"}
  },
  "outputs": {
    "summary": {"type": "string", "description": "The summary", "value": "${steps.summarise.outputs.summary}"}
  },
  "steps": [
    {
      "id": "extract",
      "name": "Extract text",
      "component": "echo",
      "inputs": {"url": "${inputs.url}"},
      "outputs": {"text": {"type": "string"}},
      "retry": {"max_attempts": 3, "delay_seconds": 1, "backoff_multiplier": 2},
      "timeout": 30,
      "metadata": {"owner": "content"}
    },
    {
      "id": "summarise",
      "name": "Summarise",
      "component": "transform.summarise",
      "condition": "steps.extract.outputs.text != ''",
      "inputs": {"length": "${inputs.length}"},
      "outputs": {"summary": {"type": "string"}}
    }
  ],
  "connections": [
    {"source": "extract.text", "target": "summarise.text"}
  ],
  "metadata": {"author": "oaj", "tags": ["nlp"], "category": "content", "license": "Apache-2.0", "custom": {"tier": 1}}
}"#;

#[test]
fn canonical_shape_is_valid() {
    let validation = workflow_parse_validate(SUMMARISE, &|_| false);
    assert!(validation.report.is_valid(), "{}", validation.report);
    let workflow = validation.workflow.expect("valid");
    assert_eq!(workflow.steps.len(), 2);
    assert_eq!(workflow.connections[0].target, "summarise.text");
}

#[test]
fn bare_connection_source_is_a_warning() {
    let report = workflow_parse_validate(SUMMARISE, &|_| false).report;
    assert_eq!(report.problems.len(), 1, "{report}");
    let problem = &report.problems[0];
    assert_eq!(problem.code, ProblemCode::LegacyReference);
    assert_eq!(problem.severity, Severity::Warning);
    assert_eq!(problem.path, "/connections/0/source");
    assert_eq!(
        problem.suggestion.as_deref(),
        Some("write `${steps.extract.outputs.text}`")
    );
}

#[test]
fn connection_orders_and_feeds_steps() {
    let plan = Plan::new(workflow_parse(SUMMARISE).expect("valid")).expect("acyclic");
    assert_eq!(plan.steps[1].needs, vec![0]);
    let scope = json!({
        "inputs": {"url": "http://x", "length": "short"},
        "steps": {"extract": {"outputs": {"text": "body"}}}
    });
    assert_eq!(
        plan.step_input(1, &scope),
        Ok(json!({"length": "short", "text": "body"}))
    );
}

#[test]
fn double_brace_inputs_are_read() {
    let text = SUMMARISE.replace("${inputs.url}", "{{inputs.url}}");
    let workflow = workflow_parse(&text).expect("a warning does not invalidate");
    let plan = Plan::new(workflow).expect("acyclic");
    let scope = json!({"inputs": {"url": "http://x"}});
    assert_eq!(plan.step_input(0, &scope), Ok(json!({"url": "http://x"})));
}

#[test]
fn run_input_gets_defaults() {
    let workflow = workflow_parse(SUMMARISE).expect("valid");
    let input = input_check(&workflow, &json!({"url": "http://example.com/a"}));
    assert_eq!(
        input,
        Ok(json!({"length": "short", "url": "http://example.com/a"}))
    );
}
