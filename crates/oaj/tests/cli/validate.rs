//! `oaj validate`: output and exit codes.

use std::io::Write;

use serde_json::Value;

use crate::{oaj, stdout};

fn document_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".json")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes())
        .expect("temp file is writable");
    file
}

const BROKEN: &str = r#"{"id": "w", "steps": [
    {"id": "a", "component": "ech", "inputs": {"t": "${steps.ghost.outputs}"}}
]}"#;

#[test]
fn examples_are_valid() {
    let output = oaj(&[
        "validate",
        "examples/ticket-triage.json",
        "examples/research-digest.json",
        "examples/release-notes.json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert_eq!(stdout(&output).matches(": valid").count(), 3);
}

#[test]
fn invalid_document_exits_one() {
    let file = document_file(BROKEN);
    let output = oaj(&["validate", file.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("invalid, 2 errors"), "{text}");
    assert!(
        text.contains("/steps/0/component: [unknown_component]"),
        "{text}"
    );
    assert!(text.contains("(did you mean `echo`?)"), "{text}");
    assert!(
        text.contains("/steps/0/inputs/t: [unknown_step] step `ghost` does not exist"),
        "{text}"
    );
}

#[test]
fn json_output_lists_problems() {
    let file = document_file(BROKEN);
    let output = oaj(&[
        "validate",
        "--json",
        file.path().to_str().unwrap(),
        "examples/release-notes.json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    let files = report["files"].as_array().expect("files array");
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["valid"], Value::Bool(false));
    assert_eq!(files[0]["problems"][0]["code"], "unknown_component");
    assert_eq!(files[0]["problems"][0]["path"], "/steps/0/component");
    assert_eq!(files[0]["problems"][0]["step"], "a");
    assert_eq!(files[1]["valid"], Value::Bool(true));
}

#[test]
fn not_json_reports_position() {
    let file = document_file("{\"id\": \"w\",\n  \"steps\": [}\n");
    let output = oaj(&["validate", file.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("[not_json] not valid JSON at line 2"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn input_is_checked() {
    let args = ["validate", "examples/ticket-triage.json", "--input"];
    let output = oaj(&[
        &args[..],
        &[r#"{"ticket_id": "SUP-1", "subject": "s", "body": "b"}"#],
    ]
    .concat());
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));

    let output = oaj(&[
        &args[..],
        &[r#"{"ticket_id": "bad", "subject": "s", "body": "b", "tone": "rude"}"#],
    ]
    .concat());
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains("input /inputs/ticket_id: [input_pattern_mismatch]"),
        "{text}"
    );
    assert!(
        text.contains("input /inputs/tone: [input_not_allowed]"),
        "{text}"
    );
}

#[test]
fn input_from_file() {
    let input = document_file(r#"{"subject": "s", "body": "b"}"#);
    let argument = format!("@{}", input.path().display());
    let output = oaj(&[
        "validate",
        "examples/ticket-triage.json",
        "--input",
        &argument,
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("[input_required] required input `ticket_id`"));
}

#[test]
fn unreadable_file_exits_two() {
    let output = oaj(&["validate", "does/not/exist.json"]);
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("cannot open does/not/exist.json"), "{error}");
}

#[test]
fn usage_errors_exit_two() {
    assert_eq!(oaj(&["validate"]).status.code(), Some(2));
    assert_eq!(
        oaj(&[
            "validate",
            "--input",
            "{not json",
            "examples/ticket-triage.json"
        ])
        .status
        .code(),
        Some(2)
    );
}

#[test]
fn oversized_file_is_invalid() {
    let mut file = tempfile::Builder::new()
        .suffix(".json")
        .tempfile()
        .expect("temp file");
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..17 {
        file.write_all(&chunk).expect("temp file is writable");
    }
    let output = oaj(&["validate", file.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("[too_large]"),
        "{}",
        stdout(&output)
    );
}

/// Regression: an id with a NUL and an escape sequence went to the terminal raw, so a document
/// could recolor or rewrite the terminal it was checked on.
#[test]
fn control_characters_printed_escaped() {
    let document = r#"{"id": "a\u0000b\u001b[31m\u202e", "steps": [
        {"id": "s", "component": "echo", "inputs": {"t": "hi"}}
    ]}"#;
    let file = document_file(document);
    let output = oaj(&["validate", file.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains(r"a\0b\u{1b}[31m\u{202e}"), "{text}");
    assert!(!text.contains('\0'), "{text:?}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(!text.contains('\u{202e}'), "{text:?}");
}

/// Regression: with stdout closed, as when `head` stops reading, `oaj` panicked ("failed
/// printing to stdout: Broken pipe") instead of ending quietly as other Unix tools do, and
/// `--help` and `--version` exited 0.
#[test]
fn closed_stdout_exits_quietly() {
    let commands: [&[&str]; 3] = [
        &["validate", "examples/release-notes.json"],
        &["--help"],
        &["--version"],
    ];
    for args in commands {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_oaj"))
            .args(args)
            .current_dir(crate::REPOSITORY_ROOT)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("the oaj binary runs");
        let message = crate::stderr(&output);
        assert_eq!(output.status.code(), Some(141), "{args:?}: {message}");
        assert!(!message.contains("panicked"), "{args:?}: {message}");
    }
}

/// Regression: an error message that could not be written to stderr (a full disk) made `oaj`
/// panic with status 101 instead of exiting with the status of the error.
#[test]
fn failed_stderr_keeps_exit_status() {
    let full = std::fs::File::options()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full opens");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_oaj"))
        .args(["validate", "no-such-file.json"])
        .current_dir(crate::REPOSITORY_ROOT)
        .stdout(std::process::Stdio::piped())
        .stderr(full)
        .output()
        .expect("the oaj binary runs");
    assert_eq!(output.status.code(), Some(2));
}
