use serde_json::{json, Value};

use super::*;
use crate::validate::workflow_check;

fn plan(document: Value) -> Plan {
    Plan::new(workflow_check(&document).unwrap()).unwrap()
}

/// fetch -> (summarise, tag) -> report, wired by a reference, a connection and depends_on.
fn diamond() -> Value {
    json!({
        "id": "diamond",
        "inputs": {"url": {"type": "string"}},
        "steps": [
            {"id": "report", "component": "echo",
             "inputs": {"summary": "${steps.summarise.outputs.text}", "tags": "${steps.tag.outputs}"}},
            {"id": "summarise", "component": "echo", "inputs": {"page": "${steps.fetch.outputs.body}"}},
            {"id": "tag", "component": "echo", "depends_on": ["fetch", "fetch"]},
            {"id": "fetch", "component": "echo", "inputs": {"url": "${inputs.url}", "n": 2}}
        ],
        "connections": [
            {"source": "${steps.fetch.outputs.body}", "target": "tag.text",
             "condition": "size(value) > 0", "transform": "value + '!'"}
        ]
    })
}

#[test]
fn needs_are_sorted_and_deduplicated() {
    let plan = plan(diamond());
    let needs: Vec<&Vec<usize>> = plan.steps.iter().map(|step| &step.needs).collect();
    assert_eq!(needs, [&vec![1, 2], &vec![3], &vec![3], &vec![]]);
}

#[test]
fn order_puts_needs_first() {
    assert_eq!(plan(diamond()).order(), vec![3, 1, 2, 0]);
}

#[test]
fn step_input_applies_connection_transform() {
    let scope = json!({"inputs": {"url": "u"}, "steps": {"fetch": {"outputs": {"body": "hi"}}}});
    let plan = plan(diamond());
    assert_eq!(plan.step_input(3, &scope), Ok(json!({"url": "u", "n": 2})));
    assert_eq!(plan.step_input(2, &scope), Ok(json!({"text": "hi!"})));
}

#[test]
fn false_connection_condition_sets_nothing() {
    let scope = json!({"inputs": {"url": "u"}, "steps": {"fetch": {"outputs": {"body": ""}}}});
    assert_eq!(plan(diamond()).step_input(2, &scope), Ok(json!({})));
}

#[test]
fn missing_source_output_is_an_error() {
    let scope = json!({"inputs": {}, "steps": {"fetch": {"outputs": {}}}});
    let error = plan(diamond()).step_input(2, &scope).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no key `body` in steps.fetch.outputs"),
        "{error}"
    );
}

#[test]
fn legacy_source_reads_whole_outputs() {
    let mut document = diamond();
    document["connections"] = json!([{"source": "fetch", "target": "tag.page"}]);
    let scope = json!({"steps": {"fetch": {"outputs": {"body": "x"}}}});
    assert_eq!(
        plan(document).step_input(2, &scope),
        Ok(json!({"page": {"body": "x"}}))
    );
}

#[test]
fn job_result_maps_sink_steps() {
    let scope = json!({"steps": {"report": {"outputs": {"ok": true}}}});
    assert_eq!(
        plan(diamond()).job_result(&scope),
        Ok(json!({"report": {"ok": true}}))
    );
}

#[test]
fn job_result_resolves_declared_outputs() {
    let mut document = diamond();
    document["outputs"] = json!({
        "summary": {"type": "string", "value": "${steps.summarise.outputs.text}"},
        "count": {"value": "${size(steps.report.outputs.items)}"}
    });
    let scope = json!({"steps": {
        "summarise": {"outputs": {"text": "short"}},
        "report": {"outputs": {"items": [1, 2, 3]}}
    }});
    let result = plan(document).job_result(&scope);
    assert_eq!(result, Ok(json!({"count": 3, "summary": "short"})));
}

#[test]
fn new_rejects_cycle() {
    let mut document = diamond();
    document["steps"][3]["depends_on"] = json!(["report"]);
    let workflow: Workflow = serde_json::from_value(document).unwrap();
    let report = Plan::new(workflow).unwrap_err();
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].code, ProblemCode::Cycle);
}

#[test]
fn connection_source_spellings() {
    let canonical = connection_source("${steps.a.outputs.o}").unwrap();
    assert_eq!(canonical.path, ["steps", "a", "outputs", "o"]);
    assert!(!canonical.legacy);
    let bare = connection_source("a.o").unwrap();
    assert_eq!(bare.path, canonical.path);
    assert!(bare.legacy);
    assert_eq!(connection_source("${inputs.x}"), None);
    assert_eq!(connection_source("a..o"), None);
}
