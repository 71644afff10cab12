use serde_json::{json, Value};

use super::*;

/// Builds a small valid workflow: fetch a ticket, classify it, and post the label.
fn document() -> Value {
    json!({
        "id": "triage",
        "version": "1.2.0",
        "inputs": {
            "ticket": {"type": "string", "pattern": "^T-[0-9]+$"},
            "urgency": {"type": "integer", "minimum": 1, "maximum": 5, "default": 3},
            "channel": {"type": "string", "enum": ["email", "chat"], "required": false},
            "items": {"type": "array", "default": []}
        },
        "agents": {
            "classifier": {"kind": "command", "command": ["python3", "classify.py"]},
            "notify": {"kind": "http", "url": "http://127.0.0.1:8081/notify",
                       "headers": {"Authorization": "Bearer ${env.NOTIFY_TOKEN}"}}
        },
        "steps": [
            {"id": "fetch", "component": "echo", "inputs": {"ticket": "${inputs.ticket}"}},
            {"id": "classify", "component": "classifier",
             "inputs": {"text": "${steps.fetch.outputs.ticket}"},
             "outputs": {"label": {"type": "string"}, "tags": {"type": "array"}}},
            {"id": "post", "component": "notify",
             "inputs": {"label": "${steps.classify.outputs.label}"}}
        ]
    })
}

/// Applies `change` to the document, validates it, and returns the problems.
fn problems_of(change: impl FnOnce(&mut Value)) -> Vec<Problem> {
    let mut value = document();
    change(&mut value);
    workflow_validate(&value, &|_| false).report.problems
}

/// Asserts that exactly one problem has `code`, and that it has `path` and `step`.
fn assert_problem(
    problems: &[Problem],
    code: ProblemCode,
    path: &str,
    step: Option<&str>,
) -> Problem {
    let matching: Vec<&Problem> = problems
        .iter()
        .filter(|problem| problem.code == code)
        .collect();
    assert_eq!(matching.len(), 1, "expected one {code} in {problems:#?}");
    assert_eq!(matching[0].path, path, "{:#?}", matching[0]);
    assert_eq!(matching[0].step.as_deref(), step, "{:#?}", matching[0]);
    matching[0].clone()
}

#[test]
fn base_document_is_valid() {
    let validation = workflow_validate(&document(), &|_| false);
    assert_eq!(validation.report.problems, vec![]);
    assert!(validation.workflow.is_some());
}

#[test]
fn code_names_match_serde() {
    let problems = problems_of(|doc| doc["steps"][0]["component"] = json!("nope"));
    let encoded = serde_json::to_value(&problems[0]).unwrap();
    assert_eq!(encoded["code"], json!(problems[0].code.as_str()));
    assert_eq!(encoded["severity"], json!("error"));
}

#[test]
fn not_json_gives_line_and_column() {
    let report = workflow_parse("{\n  \"id\": \"x\",\n  oops\n}").unwrap_err();
    let problem = assert_problem(&report.problems, ProblemCode::NotJson, "", None);
    assert!(
        problem.message.contains("line 3, column 3"),
        "{}",
        problem.message
    );
}

#[test]
fn too_large_document_is_rejected() {
    let text = format!("\"{}\"", "a".repeat(DOCUMENT_BYTES_MAX));
    let report = workflow_parse(&text).unwrap_err();
    assert_problem(&report.problems, ProblemCode::TooLarge, "", None);
}

#[test]
fn deep_nesting_is_not_json() {
    let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let report = workflow_parse(&text).unwrap_err();
    let problem = assert_problem(&report.problems, ProblemCode::NotJson, "", None);
    assert!(
        problem.message.contains("recursion limit"),
        "{}",
        problem.message
    );
}

#[test]
fn wrong_type_names_expected_type() {
    let problems = problems_of(|doc| doc["steps"][1]["timeout"] = json!("30s"));
    let problem = assert_problem(
        &problems,
        ProblemCode::WrongType,
        "/steps/1/timeout",
        Some("classify"),
    );
    assert!(
        problem
            .message
            .contains("expected a number, found a string"),
        "{}",
        problem.message
    );
}

#[test]
fn missing_field_is_reported() {
    let problems = problems_of(|doc| {
        doc["steps"][2].as_object_mut().unwrap().remove("component");
    });
    assert_problem(
        &problems,
        ProblemCode::MissingField,
        "/steps/2/component",
        Some("post"),
    );
}

#[test]
fn unknown_field_suggests_nearest() {
    let problems = problems_of(|doc| doc["steps"][1]["dependsOn"] = json!(["fetch"]));
    let problem = assert_problem(
        &problems,
        ProblemCode::UnknownField,
        "/steps/1/dependsOn",
        Some("classify"),
    );
    assert_eq!(
        problem.suggestion.as_deref(),
        Some("did you mean `depends_on`?")
    );
}

#[test]
fn schema_errors_do_not_hide_semantic_ones() {
    let problems = problems_of(|doc| {
        doc["steps"][1]["timeout"] = json!("30s");
        doc["steps"][2]["component"] = json!("nowhere");
    });
    assert_problem(
        &problems,
        ProblemCode::WrongType,
        "/steps/1/timeout",
        Some("classify"),
    );
    assert_problem(
        &problems,
        ProblemCode::UnknownComponent,
        "/steps/2/component",
        Some("post"),
    );
}

#[test]
fn invalid_value_suggests_allowed() {
    let problems = problems_of(|doc| doc["steps"][0]["on_failure"] = json!("continu"));
    let problem = assert_problem(
        &problems,
        ProblemCode::InvalidValue,
        "/steps/0/on_failure",
        Some("fetch"),
    );
    assert_eq!(
        problem.suggestion.as_deref(),
        Some("did you mean `continue`?")
    );
}

#[test]
fn empty_steps_are_rejected() {
    let problems = problems_of(|doc| doc["steps"] = json!([]));
    assert_problem(&problems, ProblemCode::NoSteps, "/steps", None);
}

#[test]
fn step_id_pattern_is_enforced() {
    let problems = problems_of(|doc| doc["steps"][0]["id"] = json!("fetch it"));
    assert_problem(
        &problems,
        ProblemCode::InvalidId,
        "/steps/0/id",
        Some("fetch it"),
    );
}

#[test]
fn version_must_be_semver() {
    let problems = problems_of(|doc| doc["version"] = json!("1.2"));
    assert_problem(&problems, ProblemCode::InvalidVersion, "/version", None);
}

#[test]
fn duplicate_step_id_points_at_second() {
    let problems = problems_of(|doc| doc["steps"][2]["id"] = json!("fetch"));
    let problem = assert_problem(
        &problems,
        ProblemCode::DuplicateStepId,
        "/steps/2/id",
        Some("fetch"),
    );
    assert!(problem.message.contains("step 0"), "{}", problem.message);
}

#[test]
fn unknown_component_suggests_agent() {
    let problems = problems_of(|doc| doc["steps"][1]["component"] = json!("clasifier"));
    let problem = assert_problem(
        &problems,
        ProblemCode::UnknownComponent,
        "/steps/1/component",
        Some("classify"),
    );
    assert_eq!(
        problem.suggestion.as_deref(),
        Some("did you mean `classifier`?")
    );
}

#[test]
fn capability_of_known_agent_is_accepted() {
    let problems = problems_of(|doc| doc["steps"][1]["component"] = json!("classifier.summarise"));
    assert_eq!(problems, vec![]);
}

#[test]
fn registered_agent_is_accepted() {
    let mut value = document();
    value["steps"][1]["component"] = json!("search.web");
    assert!(workflow_check(&value).is_err());
    let workflow = workflow_check_with(&value, &|name| name == "search");
    assert!(workflow.is_ok());
}

#[test]
fn reference_to_missing_step() {
    let problems = problems_of(|doc| {
        doc["steps"][2]["inputs"]["label"] = json!("${steps.clasify.outputs.label}")
    });
    let problem = assert_problem(
        &problems,
        ProblemCode::UnknownStep,
        "/steps/2/inputs/label",
        Some("post"),
    );
    assert_eq!(
        problem.suggestion.as_deref(),
        Some("did you mean `steps.classify`?")
    );
}

#[test]
fn depends_on_missing_step() {
    let problems = problems_of(|doc| doc["steps"][0]["depends_on"] = json!(["ghost"]));
    assert_problem(
        &problems,
        ProblemCode::UnknownStep,
        "/steps/0/depends_on/0",
        Some("fetch"),
    );
}

#[test]
fn reference_to_missing_input() {
    let problems =
        problems_of(|doc| doc["steps"][0]["inputs"]["ticket"] = json!("id: ${inputs.tiket}"));
    let problem = assert_problem(
        &problems,
        ProblemCode::UnknownInput,
        "/steps/0/inputs/ticket",
        Some("fetch"),
    );
    assert_eq!(
        problem.suggestion.as_deref(),
        Some("did you mean `inputs.ticket`?")
    );
}

#[test]
fn reference_to_missing_output() {
    let problems = problems_of(|doc| {
        doc["steps"][2]["inputs"]["label"] = json!("${steps.classify.outputs.labels}")
    });
    assert_problem(
        &problems,
        ProblemCode::UnknownOutput,
        "/steps/2/inputs/label",
        Some("post"),
    );
}

#[test]
fn unknown_variable_in_condition() {
    let problems = problems_of(|doc| doc["steps"][2]["condition"] = json!("input.urgency > 2"));
    let problem = assert_problem(
        &problems,
        ProblemCode::UnknownVariable,
        "/steps/2/condition",
        Some("post"),
    );
    assert_eq!(
        problem.suggestion.as_deref(),
        Some("did you mean `inputs`?")
    );
}

#[test]
fn item_outside_for_each() {
    let problems = problems_of(|doc| doc["steps"][0]["inputs"]["one"] = json!("${item}"));
    assert_problem(
        &problems,
        ProblemCode::ItemOutsideForEach,
        "/steps/0/inputs/one",
        Some("fetch"),
    );
}

#[test]
fn item_inside_for_each_is_accepted() {
    let problems = problems_of(|doc| {
        doc["steps"][1]["for_each"] = json!("${inputs.items}");
        doc["steps"][1]["inputs"]["text"] = json!("${item} (${index})");
    });
    assert_eq!(problems, vec![]);
}

#[test]
fn step_field_other_than_outputs() {
    let problems =
        problems_of(|doc| doc["steps"][2]["inputs"]["label"] = json!("${steps.classify.label}"));
    let problem = assert_problem(
        &problems,
        ProblemCode::InvalidReference,
        "/steps/2/inputs/label",
        Some("post"),
    );
    assert_eq!(
        problem.suggestion.as_deref(),
        Some("write `steps.classify.outputs.label`")
    );
}

#[test]
fn unclosed_reference_is_invalid() {
    let problems =
        problems_of(|doc| doc["steps"][0]["inputs"]["ticket"] = json!("${inputs.ticket"));
    assert_problem(
        &problems,
        ProblemCode::InvalidReference,
        "/steps/0/inputs/ticket",
        Some("fetch"),
    );
}

#[test]
fn expression_that_does_not_parse() {
    let problems = problems_of(|doc| doc["steps"][2]["condition"] = json!("${inputs.urgency >}"));
    assert_problem(
        &problems,
        ProblemCode::ExpressionInvalid,
        "/steps/2/condition",
        Some("post"),
    );
}

#[test]
fn cycle_is_spelled_out() {
    let problems = problems_of(|doc| doc["steps"][0]["depends_on"] = json!(["post"]));
    let problem = assert_problem(&problems, ProblemCode::Cycle, "/steps/0", Some("fetch"));
    assert!(
        problem
            .message
            .ends_with("fetch -> post -> classify -> fetch"),
        "{}",
        problem.message
    );
}

#[test]
fn for_each_over_string_input() {
    let problems = problems_of(|doc| doc["steps"][1]["for_each"] = json!("${inputs.ticket}"));
    assert_problem(
        &problems,
        ProblemCode::ForEachNotArray,
        "/steps/1/for_each",
        Some("classify"),
    );
}

#[test]
fn for_each_over_literal_or_text() {
    let problems = problems_of(|doc| doc["steps"][1]["for_each"] = json!({"items": "'abc'"}));
    assert_problem(
        &problems,
        ProblemCode::ForEachNotArray,
        "/steps/1/for_each/items",
        Some("classify"),
    );
    let problems = problems_of(|doc| doc["steps"][1]["for_each"] = json!("list ${inputs.items}"));
    assert_problem(
        &problems,
        ProblemCode::ForEachNotArray,
        "/steps/1/for_each",
        Some("classify"),
    );
}

#[test]
fn timeout_must_be_positive() {
    let problems = problems_of(|doc| doc["steps"][1]["timeout"] = json!(0));
    assert_problem(
        &problems,
        ProblemCode::OutOfRange,
        "/steps/1/timeout",
        Some("classify"),
    );
}

#[test]
fn retry_numbers_are_checked() {
    let problems = problems_of(|doc| {
        doc["steps"][1]["retry"] =
            json!({"max_attempts": 0, "delay_seconds": -1, "backoff_multiplier": 0.5, "jitter": 2});
    });
    let paths: Vec<&str> = problems
        .iter()
        .map(|problem| problem.path.as_str())
        .collect();
    let expected = [
        "/steps/1/retry/max_attempts",
        "/steps/1/retry/delay_seconds",
        "/steps/1/retry/backoff_multiplier",
        "/steps/1/retry/jitter",
    ];
    assert_eq!(paths, expected);
    assert!(problems
        .iter()
        .all(|problem| problem.code == ProblemCode::OutOfRange));
}

/// Regression: a delay of 1e308 seconds passed validation, and the step then never retried.
#[test]
fn durations_above_a_year_rejected() {
    let problems = problems_of(|doc| {
        doc["steps"][1]["timeout"] = json!(1e308);
        doc["steps"][1]["retry"] = json!({"delay_seconds": 1e308, "max_delay_seconds": 4e7});
    });
    let paths: Vec<&str> = problems
        .iter()
        .map(|problem| problem.path.as_str())
        .collect();
    let expected = [
        "/steps/1/timeout",
        "/steps/1/retry/delay_seconds",
        "/steps/1/retry/max_delay_seconds",
    ];
    assert_eq!(paths, expected);
    assert!(problems
        .iter()
        .all(|problem| problem.message.contains("365 days")));
}

#[test]
fn concurrency_limit_at_least_one() {
    let problems =
        problems_of(|doc| doc["steps"][1]["concurrency"] = json!({"key": "llm", "limit": 0}));
    assert_problem(
        &problems,
        ProblemCode::OutOfRange,
        "/steps/1/concurrency/limit",
        Some("classify"),
    );
}

#[test]
fn approval_on_other_component() {
    let problems = problems_of(|doc| doc["steps"][2]["approval"] = json!({"prompt": "ok?"}));
    assert_problem(
        &problems,
        ProblemCode::ApprovalMisplaced,
        "/steps/2/approval",
        Some("post"),
    );
}

#[test]
fn invalid_pattern_is_reported() {
    let problems = problems_of(|doc| doc["inputs"]["ticket"]["pattern"] = json!("T-(["));
    assert_problem(
        &problems,
        ProblemCode::InvalidPattern,
        "/inputs/ticket/pattern",
        None,
    );
}

#[test]
fn agent_url_must_be_http() {
    let problems = problems_of(|doc| doc["agents"]["notify"]["url"] = json!("ftp://host/x"));
    assert_problem(
        &problems,
        ProblemCode::InvalidUrl,
        "/agents/notify/url",
        None,
    );
}

#[test]
fn agent_header_reads_only_env() {
    let problems =
        problems_of(|doc| doc["agents"]["notify"]["headers"]["X"] = json!("${inputs.ticket}"));
    assert_problem(
        &problems,
        ProblemCode::InvalidReference,
        "/agents/notify/headers/X",
        None,
    );
}

#[test]
fn legacy_braces_are_a_warning() {
    let mut value = document();
    value["steps"][0]["inputs"]["ticket"] = json!("{{inputs.ticket}}");
    value["steps"][2]["inputs"]["label"] = json!("{{classify.label}}");
    let validation = workflow_validate(&value, &|_| false);
    assert!(validation.report.is_valid());
    let problems = &validation.report.problems;
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert_eq!(problems[0].path, "/steps/0/inputs/ticket");
    assert_eq!(
        problems[0].suggestion.as_deref(),
        Some("write `${inputs.ticket}`")
    );
    assert_eq!(
        problems[1].suggestion.as_deref(),
        Some("write `${steps.classify.outputs.label}`")
    );
    assert!(problems
        .iter()
        .all(|problem| problem.code == ProblemCode::LegacyReference));
    assert!(problems
        .iter()
        .all(|problem| problem.severity == Severity::Warning));
}

#[test]
fn default_must_match_type() {
    let problems = problems_of(|doc| doc["inputs"]["urgency"]["default"] = json!("high"));
    assert_problem(
        &problems,
        ProblemCode::InputTypeMismatch,
        "/inputs/urgency/default",
        None,
    );
}

#[test]
fn connection_endpoints_are_checked() {
    let problems = problems_of(|doc| {
        doc["connections"] = json!([
            {"source": "${steps.classify.outputs.label}", "target": "post.label"},
            {"source": "classify.nothing", "target": "ghost.label"},
            {"source": "not a source", "target": "post"}
        ]);
    });
    assert_problem(
        &problems,
        ProblemCode::UnknownOutput,
        "/connections/1/source",
        None,
    );
    assert_problem(
        &problems,
        ProblemCode::UnknownStep,
        "/connections/1/target",
        None,
    );
    let invalid: Vec<&str> = problems
        .iter()
        .filter(|problem| problem.code == ProblemCode::InvalidReference)
        .map(|problem| problem.path.as_str())
        .collect();
    assert_eq!(invalid, ["/connections/2/source", "/connections/2/target"]);
}

#[test]
fn connection_creates_graph_edge() {
    let problems = problems_of(|doc| {
        doc["connections"] = json!([{"source": "post", "target": "fetch.ticket"}]);
    });
    assert_problem(&problems, ProblemCode::Cycle, "/steps/0", Some("fetch"));
}

#[test]
fn connection_expressions_bind_value() {
    let problems = problems_of(|doc| {
        doc["connections"] = json!([{
            "source": "classify.label", "target": "post.label",
            "condition": "value != ''", "transform": "value + '!' + valeu"
        }]);
    });
    let problem = assert_problem(
        &problems,
        ProblemCode::UnknownVariable,
        "/connections/0/transform",
        Some("post"),
    );
    assert_eq!(problem.suggestion.as_deref(), Some("did you mean `value`?"));
}

#[test]
fn report_display_is_one_line_each() {
    let report =
        workflow_parse("{\"id\": \"x\", \"steps\": [{\"id\": \"a\"}], \"extra\": 1}").unwrap_err();
    let text = report.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], "/extra: [unknown_field] unknown field `extra` (remove it; known fields are: id, version, name, description, inputs, outputs, steps, connections, metadata, agents, defaults)");
    assert_eq!(lines[1], "/steps/0/component: [missing_field] required field `component` is missing from /steps/0 (add `component`)");
}

#[test]
fn many_steps_validate_quickly() {
    let steps: Vec<Value> = (0..5000)
        .map(|index| {
            let previous = if index == 0 { "${inputs.ticket}".to_owned() } else { format!("${{steps.s{}.outputs.text}}", index - 1) };
            json!({"id": format!("s{index}"), "component": "echo", "inputs": {"text": previous, "n": index}})
        })
        .collect();
    let mut value = document();
    value["steps"] = Value::Array(steps);
    let text = value.to_string();
    let started = std::time::Instant::now();
    let workflow = workflow_parse(&text).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(workflow.steps.len(), 5000);
    // Generous for debug builds on a shared machine; a release build takes a few milliseconds.
    assert!(elapsed.as_secs_f64() < 5.0, "took {elapsed:?}");
}

mod inputs {
    use super::*;

    fn workflow() -> Workflow {
        workflow_check(&document()).unwrap()
    }

    #[test]
    fn defaults_are_applied() {
        let input = input_check(&workflow(), &json!({"ticket": "T-7"}));
        assert_eq!(
            input,
            Ok(json!({"items": [], "ticket": "T-7", "urgency": 3}))
        );
    }

    #[test]
    fn required_input_missing() {
        let report = input_check(&workflow(), &Value::Null).unwrap_err();
        assert_problem(
            &report.problems,
            ProblemCode::InputRequired,
            "/inputs/ticket",
            None,
        );
    }

    #[test]
    fn input_type_mismatch() {
        let report =
            input_check(&workflow(), &json!({"ticket": "T-1", "urgency": "high"})).unwrap_err();
        assert_problem(
            &report.problems,
            ProblemCode::InputTypeMismatch,
            "/inputs/urgency",
            None,
        );
    }

    #[test]
    fn input_not_in_enum() {
        let report =
            input_check(&workflow(), &json!({"ticket": "T-1", "channel": "fax"})).unwrap_err();
        let problem = assert_problem(
            &report.problems,
            ProblemCode::InputNotAllowed,
            "/inputs/channel",
            None,
        );
        assert_eq!(
            problem.suggestion.as_deref(),
            Some("use one of: \"email\", \"chat\"")
        );
    }

    #[test]
    fn input_pattern_mismatch() {
        let report = input_check(&workflow(), &json!({"ticket": "X-1"})).unwrap_err();
        assert_problem(
            &report.problems,
            ProblemCode::InputPatternMismatch,
            "/inputs/ticket",
            None,
        );
    }

    #[test]
    fn input_out_of_range() {
        let report = input_check(&workflow(), &json!({"ticket": "T-1", "urgency": 9})).unwrap_err();
        let problem = assert_problem(
            &report.problems,
            ProblemCode::InputOutOfRange,
            "/inputs/urgency",
            None,
        );
        assert_eq!(problem.message, "9 is above the maximum of 5");
    }

    #[test]
    fn input_unknown_suggests_nearest() {
        let report = input_check(&workflow(), &json!({"ticket": "T-1", "urgence": 2})).unwrap_err();
        let problem = assert_problem(
            &report.problems,
            ProblemCode::InputUnknown,
            "/inputs/urgence",
            None,
        );
        assert_eq!(
            problem.suggestion.as_deref(),
            Some("did you mean `urgency`?")
        );
    }

    #[test]
    fn input_not_object() {
        let report = input_check(&workflow(), &json!([1])).unwrap_err();
        assert_problem(
            &report.problems,
            ProblemCode::InputNotObject,
            "/inputs",
            None,
        );
    }

    #[test]
    fn every_problem_in_one_pass() {
        let report =
            input_check(&workflow(), &json!({"urgency": 0, "channel": 1, "x": 1})).unwrap_err();
        let codes: Vec<ProblemCode> = report.problems.iter().map(|problem| problem.code).collect();
        let expected = [
            ProblemCode::InputUnknown,
            ProblemCode::InputTypeMismatch,
            ProblemCode::InputRequired,
            ProblemCode::InputOutOfRange,
        ];
        assert_eq!(codes, expected);
    }
}
