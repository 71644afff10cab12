//! The workflows under examples/ run to their documented results.

use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::{finish, stderr, Sandbox, REPOSITORY_ROOT};

#[test]
fn flaky_example_retries_and_times_out() {
    let sandbox = Sandbox::new();

    let output = sandbox.oaj(&["run", "examples/flaky/workflow.json"]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(printed, json!({"fetched": "fetched on attempt 3"}));
    let id = sandbox.only_job_id();
    assert_eq!(
        sandbox.attempt_states(&id, "slow"),
        ["timed_out", "timed_out"]
    );
    assert_eq!(
        sandbox.attempt_states(&id, "fetch"),
        ["failed", "failed", "succeeded"]
    );
}

#[test]
fn licenses_example_counts_limit() {
    let sandbox = Sandbox::new();

    let output = sandbox.oaj(&[
        "run",
        "examples/licenses/workflow.json",
        "--input",
        r#"{"limit": 20}"#,
    ]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(printed["report"]["files"], 20, "{printed}");
    assert_eq!(printed["report"]["classified"], 20, "{printed}");
}

#[test]
fn http_service_example_finds_negatives() {
    let sandbox = Sandbox::new();

    let child = Command::new("bash")
        .args(["examples/http-service/run.sh", "--db"])
        .arg(sandbox.db())
        .env("OAJ", env!("CARGO_BIN_EXE_oaj"))
        .current_dir(REPOSITORY_ROOT)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    let output = finish(child, "examples/http-service/run.sh");

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(printed["negative"], 2, "{printed}");
}
