//! `oaj run`: output, exit codes, and what is stored when the document or the input is invalid.

use serde_json::{json, Value};

use crate::{shell_quote, shell_workflow, stderr, stdout, Sandbox};

#[test]
fn completed_job_prints_output() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "workflow.json",
        r#"{"id": "greet", "inputs": {"name": {"type": "string", "required": true}},
            "steps": [{"id": "hello", "component": "transform",
                       "inputs": {"greeting": "${'hello ' + inputs.name}"}}],
            "outputs": {"greeting": {"type": "string",
                                     "value": "${steps.hello.outputs.greeting}"}}}"#,
    );

    let output = sandbox.oaj(&["run", &workflow, "--input", r#"{"name": "ada"}"#]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(printed, json!({"greeting": "hello ada"}));
}

#[test]
fn failed_job_exits_four() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "workflow.json",
        &shell_workflow(&[("break", "echo disk on fire >&2; exit 7", json!({}))]),
    );

    let output = sandbox.oaj(&["run", &workflow]);

    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("failed"), "{text}");
    assert!(text.contains("disk on fire"), "{text}");
}

/// A program that prints the NUL character to its stderr. PostgreSQL rejects NUL in text, so the
/// engine replaces it, and the step fails once, as on SQLite, instead of running again.
#[test]
fn nul_in_stderr_replaced_on_both_stores() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "workflow.json",
        &shell_workflow(&[
            ("a", "printf 'bad\\000byte\\n' >&2; echo '{}'", json!({})),
            ("b", "printf 'bad\\000byte\\n' >&2; exit 3", json!({})),
        ]),
    );
    let mut stores = vec![vec!["--db".to_owned(), sandbox.db().display().to_string()]];
    if let Some(url) = crate::fleet::database_url() {
        let schema = crate::fleet::schema_new();
        tokio::runtime::Runtime::new()
            .expect("a tokio runtime starts")
            .block_on(crate::fleet::schema_create(&url, &schema));
        let url = crate::fleet::url_with_schema(&url, &schema);
        stores.push(vec!["--database".to_owned(), url]);
    }

    for store in stores {
        let mut args = vec!["run", workflow.as_str()];
        args.extend(store.iter().map(String::as_str));
        let output = crate::oaj(&args);

        assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
        let text = stderr(&output);
        assert!(text.contains("step b failed"), "{store:?}: {text}");
        assert!(text.contains("bad\u{FFFD}byte"), "{store:?}: {text}");
        assert!(!text.contains("interrupted"), "{store:?}: {text}");
    }
}

/// Regression: an agent's error went to the terminal raw, escape sequences included.
#[test]
fn agent_error_printed_escaped() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "workflow.json",
        &shell_workflow(&[(
            "a",
            "printf 'red\\033[31m\\rgone\\n' >&2; exit 3",
            json!({}),
        )]),
    );

    let output = sandbox.oaj(&["run", &workflow]);

    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains(r"red\u{1b}[31m\rgone"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(!text.contains('\r'), "{text:?}");
}

#[test]
fn invalid_workflow_exits_three_and_stores_nothing() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "workflow.json",
        r#"{"id": "w", "steps": [{"id": "a", "component": "no-such-agent"}]}"#,
    );

    let output = sandbox.oaj(&["run", &workflow]);

    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("unknown_component"),
        "{}",
        stderr(&output)
    );
    assert_eq!(sandbox.jobs(), Vec::<Value>::new());
}

/// Regression: running an edited document under the same version exited 1, as if oaj itself had
/// failed, with no word on how to go on.
#[test]
fn edited_workflow_same_version_exits_three() {
    let sandbox = Sandbox::new();
    let first =
        r#"{"id": "hello", "steps": [{"id": "a", "component": "echo", "inputs": {"t": "hi"}}]}"#;
    let workflow = sandbox.write("workflow.json", first);
    let output = sandbox.oaj(&["run", &workflow]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    let edited = first.replace("\"hi\"", "\"hi there\"");
    let workflow = sandbox.write("workflow.json", &edited);
    let output = sandbox.oaj(&["run", &workflow]);

    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("raise \"version\""),
        "{}",
        stderr(&output)
    );
}

#[test]
fn invalid_input_exits_three_before_running() {
    let sandbox = Sandbox::new();
    let marker = sandbox.path("ran.txt");
    let script = format!("echo ran >> {}", shell_quote(marker.to_str().unwrap()));
    let mut document: Value =
        serde_json::from_str(&shell_workflow(&[("touch", &script, json!({}))])).unwrap();
    document["inputs"] = json!({"count": {"type": "integer", "required": true}});
    let workflow = sandbox.write("workflow.json", &document.to_string());

    for input in [r#"{"count": "three"}"#, "{}"] {
        let output = sandbox.oaj(&["run", &workflow, "--input", input]);

        assert_eq!(
            output.status.code(),
            Some(3),
            "{input}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("invalid input"),
            "{input}: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty(), "{input}: {}", stdout(&output));
    }
    assert!(
        !marker.exists(),
        "a step ran although the input was invalid"
    );
    assert_eq!(sandbox.jobs(), Vec::<Value>::new());
}

#[test]
fn unreadable_workflow_exits_two() {
    let sandbox = Sandbox::new();
    let missing = sandbox.path("missing.json");

    let output = sandbox.oaj(&["run", missing.to_str().unwrap()]);

    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot read workflow"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn malformed_input_json_exits_three() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "workflow.json",
        r#"{"id": "w", "steps": [{"id": "a", "component": "noop"}]}"#,
    );

    let output = sandbox.oaj(&["run", &workflow, "--input", "{not json"]);

    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("invalid JSON in --input"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn json_flag_prints_job_record() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "workflow.json",
        r#"{"id": "w", "steps": [{"id": "a", "component": "noop"}]}"#,
    );

    let output = sandbox.oaj(&["run", &workflow, "--json"]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let job: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(job["state"], "completed");
    assert_eq!(job["id"], Value::String(sandbox.only_job_id()));
}

#[test]
fn unreadable_input_file_exits_two() {
    // Regression: a missing --input @FILE exited 3 (invalid input) instead of 2 (unreadable).
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "workflow.json",
        r#"{"id": "w", "steps": [{"id": "a", "component": "noop"}]}"#,
    );
    let missing = format!("@{}", sandbox.path("missing.json").display());

    let output = sandbox.oaj(&["run", &workflow, "--input", &missing]);

    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot read input file"),
        "{}",
        stderr(&output)
    );
    assert_eq!(sandbox.jobs(), Vec::<Value>::new());
}

#[test]
fn input_file_is_read() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "workflow.json",
        r#"{"id": "echo-name", "inputs": {"name": {"type": "string"}},
            "steps": [{"id": "a", "component": "transform", "inputs": {"name": "${inputs.name}"}}],
            "outputs": {"name": {"type": "string", "value": "${steps.a.outputs.name}"}}}"#,
    );
    let input = sandbox.write("input.json", r#"{"name": "from a file"}"#);
    let bad = sandbox.write("bad.json", "{oops");

    let output = sandbox.oaj(&["run", &workflow, "--input", &format!("@{input}")]);
    let invalid = sandbox.oaj(&["run", &workflow, "--input", &format!("@{bad}")]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(printed, json!({"name": "from a file"}));
    assert_eq!(invalid.status.code(), Some(3), "{}", stderr(&invalid));
    assert!(
        stderr(&invalid).contains(&format!("invalid JSON in {bad}")),
        "{}",
        stderr(&invalid)
    );
}
