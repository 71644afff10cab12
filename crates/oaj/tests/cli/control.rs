//! Stopping and steering jobs from other processes: timeouts and cancels kill the whole process
//! tree, pause and retry keep finished results, approvals and Ctrl-C end `oaj run` as promised.

use std::process::Child;

use serde_json::{json, Value};

use crate::{finish, is_gone, shell_quote, shell_workflow, signal, stderr, wait_for, Sandbox};

/// Builds a command that leaves a grandchild `sleep 300` and writes its pid to `pid_file`.
fn grandchild_script(sandbox: &Sandbox, pid_file: &str) -> String {
    let pid = shell_quote(sandbox.path(pid_file).to_str().unwrap());
    format!("sleep 300 & echo $! > {pid}; wait")
}

fn assert_process_gone(pid: i64) {
    // The kill is sent before the job ends, but the kernel may need a moment to end the process.
    wait_for(&format!("process {pid} to end"), || {
        is_gone(pid).then_some(())
    });
}

#[test]
fn timeout_kills_grandchild() {
    let sandbox = Sandbox::new();
    let script = grandchild_script(&sandbox, "pid");
    let workflow = sandbox.write(
        "workflow.json",
        &shell_workflow(&[("hang", &script, json!({"timeout": 1}))]),
    );

    let output = sandbox.oaj(&["run", &workflow]);

    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let grandchild = sandbox.wait_pid("pid");
    assert_process_gone(grandchild);
    let id = sandbox.only_job_id();
    assert_eq!(sandbox.attempt_states(&id, "hang"), ["timed_out"]);
}

#[test]
fn cancel_kills_grandchild() {
    let sandbox = Sandbox::new();
    let script = grandchild_script(&sandbox, "pid");
    let workflow = sandbox.write(
        "workflow.json",
        &shell_workflow(&[("hang", &script, json!({}))]),
    );
    let run = sandbox.spawn(&["run", &workflow]);
    let grandchild = sandbox.wait_pid("pid");
    let id = sandbox.only_job_id();

    let cancel = sandbox.oaj(&["jobs", "cancel", &id]);

    assert_eq!(cancel.status.code(), Some(0), "{}", stderr(&cancel));
    let output = finish(run, "oaj run to end after the cancel");
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert!(stderr(&output).contains("cancelled"), "{}", stderr(&output));
    assert_eq!(sandbox.job_state(&id), "cancelled");
    assert_process_gone(grandchild);
}

#[test]
fn pause_and_resume_keep_finished_steps() {
    let sandbox = Sandbox::new();
    let log = shell_quote(sandbox.path("log.txt").to_str().unwrap());
    let marker = shell_quote(sandbox.path("marker").to_str().unwrap());
    let middle = format!("echo middle >> {log}; while [ ! -e {marker} ]; do sleep 0.05; done");
    let workflow = sandbox.write(
        "workflow.json",
        &shell_workflow(&[
            ("first", &format!("echo first >> {log}"), json!({})),
            ("middle", &middle, json!({})),
            ("last", &format!("echo last >> {log}"), json!({})),
        ]),
    );
    let run = sandbox.spawn(&["run", &workflow]);
    wait_for("the middle step to start", || {
        (sandbox.count_lines("log.txt", "middle") == 1).then_some(())
    });
    let id = sandbox.only_job_id();

    let pause = sandbox.oaj(&["jobs", "pause", &id]);
    assert_eq!(pause.status.code(), Some(0), "{}", stderr(&pause));
    // Let the running attempt finish: pausing keeps its result and starts nothing new.
    std::fs::write(sandbox.path("marker"), "").expect("marker is writable");
    let output = finish(run, "oaj run to stop at the pause");
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    assert!(stderr(&output).contains("paused"), "{}", stderr(&output));
    assert_eq!(sandbox.job_state(&id), "paused");
    assert_eq!(sandbox.count_lines("log.txt", "last"), 0);

    let resume = sandbox.oaj(&["jobs", "resume", &id]);
    assert_eq!(resume.status.code(), Some(0), "{}", stderr(&resume));
    let worker = sandbox.oaj(&["worker", "--exit-when-idle"]);

    assert_eq!(worker.status.code(), Some(0), "{}", stderr(&worker));
    assert_eq!(sandbox.job_state(&id), "completed");
    assert_eq!(sandbox.count_lines("log.txt", "first"), 1);
    assert_eq!(sandbox.count_lines("log.txt", "middle"), 1);
    assert_eq!(sandbox.count_lines("log.txt", "last"), 1);
}

#[test]
fn retry_reruns_only_failed_steps() {
    let sandbox = Sandbox::new();
    let log = shell_quote(sandbox.path("log.txt").to_str().unwrap());
    let marker = shell_quote(sandbox.path("marker").to_str().unwrap());
    let flaky = format!("echo flaky >> {log}; [ -e {marker} ]");
    let workflow = sandbox.write(
        "workflow.json",
        &shell_workflow(&[
            ("first", &format!("echo first >> {log}"), json!({})),
            ("flaky", &flaky, json!({})),
        ]),
    );
    let failed = sandbox.oaj(&["run", &workflow]);
    assert_eq!(failed.status.code(), Some(4), "{}", stderr(&failed));
    let id = sandbox.only_job_id();
    std::fs::write(sandbox.path("marker"), "").expect("marker is writable");

    let retry = sandbox.oaj(&["jobs", "retry", &id]);
    assert_eq!(retry.status.code(), Some(0), "{}", stderr(&retry));
    let worker = sandbox.oaj(&["worker", "--exit-when-idle"]);

    assert_eq!(worker.status.code(), Some(0), "{}", stderr(&worker));
    assert_eq!(sandbox.job_state(&id), "completed");
    assert_eq!(sandbox.count_lines("log.txt", "first"), 1);
    assert_eq!(sandbox.count_lines("log.txt", "flaky"), 2);
}

fn approval_workflow(sandbox: &Sandbox, approval: Value) -> String {
    sandbox.write(
        "workflow.json",
        &json!({"id": "gated", "steps": [
            {"id": "review", "component": "approval", "approval": approval},
            {"id": "ship", "component": "transform", "depends_on": ["review"],
             "inputs": {"shipped": true}}
        ], "outputs": {"shipped": {"type": "boolean", "value": "${steps.ship.outputs.shipped}"}}})
        .to_string(),
    )
}

/// Starts `oaj run` on an approval workflow and waits until its review step is running.
fn run_until_review(sandbox: &Sandbox, approval: Value) -> (Child, String) {
    let workflow = approval_workflow(sandbox, approval);
    let run = sandbox.spawn(&["run", &workflow]);
    let id = sandbox.wait_job_id();
    wait_for("the review step to wait for a decision", || {
        let shown = sandbox.show(&id);
        let steps = shown["steps"].as_array().cloned().unwrap_or_default();
        steps
            .iter()
            .any(|step| step["step_id"] == "review" && step["state"] == "waiting")
            .then_some(())
    });
    (run, id)
}

#[test]
fn approve_lets_run_complete() {
    let sandbox = Sandbox::new();
    let (run, id) = run_until_review(&sandbox, json!({"prompt": "ship it?"}));

    let approve = sandbox.oaj(&["jobs", "approve", &id, "--by", "me"]);

    assert_eq!(approve.status.code(), Some(0), "{}", stderr(&approve));
    let output = finish(run, "oaj run to end after the approval");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(printed, json!({"shipped": true}));
}

#[test]
fn reject_fails_run() {
    let sandbox = Sandbox::new();
    let (run, id) = run_until_review(&sandbox, json!({"prompt": "ship it?"}));

    let reject = sandbox.oaj(&["jobs", "reject", &id, "--by", "me", "--comment", "not yet"]);

    assert_eq!(reject.status.code(), Some(0), "{}", stderr(&reject));
    let output = finish(run, "oaj run to end after the rejection");
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(stderr(&output).contains("reject"), "{}", stderr(&output));
}

#[test]
fn approval_deadline_fails_run() {
    let sandbox = Sandbox::new();
    let workflow = approval_workflow(&sandbox, json!({"timeout_seconds": 1}));

    let output = sandbox.oaj(&["run", &workflow]);

    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no approval decision"),
        "{}",
        stderr(&output)
    );
}

/// Starts `oaj run` with `extra` flags on a job whose only step waits for a marker file, and
/// waits until the step runs.
fn run_until_started(sandbox: &Sandbox, extra: &[&str]) -> (Child, String) {
    let log = shell_quote(sandbox.path("log.txt").to_str().unwrap());
    let marker = shell_quote(sandbox.path("marker").to_str().unwrap());
    let step = format!("echo start >> {log}; while [ ! -e {marker} ]; do sleep 0.05; done");
    let workflow = sandbox.write(
        "workflow.json",
        &shell_workflow(&[("wait", &step, json!({})), ("after", "true", json!({}))]),
    );
    let mut args = vec!["run", workflow.as_str()];
    args.extend_from_slice(extra);
    let run = sandbox.spawn(&args);
    wait_for("the step to start", || {
        (sandbox.count_lines("log.txt", "start") == 1).then_some(())
    });
    (run, sandbox.only_job_id())
}

#[test]
fn interrupt_with_leave_exits_six_and_requeues() {
    let sandbox = Sandbox::new();
    let (run, id) = run_until_started(&sandbox, &["--on-interrupt", "leave"]);

    signal(i64::from(run.id()), "INT");
    // The running attempt finishes before `oaj run` hands the job back.
    std::fs::write(sandbox.path("marker"), "").expect("marker is writable");
    let output = finish(run, "oaj run to stop after SIGINT");

    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    assert_eq!(sandbox.job_state(&id), "queued");
    assert_eq!(sandbox.attempt_states(&id, "wait"), ["succeeded"]);
}

#[test]
fn interrupt_by_default_cancels() {
    let sandbox = Sandbox::new();
    let (run, id) = run_until_started(&sandbox, &[]);

    signal(i64::from(run.id()), "INT");
    let output = finish(run, "oaj run to stop after SIGINT");

    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert_eq!(sandbox.job_state(&id), "cancelled");
}

#[test]
fn sigterm_cancels_and_kills_grandchild() {
    // Regression: SIGTERM ended `oaj run` at once, so the command's processes kept running and
    // the job stayed `running` until its lease expired.
    let sandbox = Sandbox::new();
    let script = grandchild_script(&sandbox, "pid");
    let workflow = sandbox.write(
        "workflow.json",
        &shell_workflow(&[("hang", &script, json!({}))]),
    );
    let run = sandbox.spawn(&["run", &workflow]);
    let grandchild = sandbox.wait_pid("pid");
    let id = sandbox.only_job_id();

    signal(i64::from(run.id()), "TERM");
    let output = finish(run, "oaj run to stop after SIGTERM");

    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert_eq!(sandbox.job_state(&id), "cancelled");
    assert_process_gone(grandchild);
}

#[test]
fn sigterm_with_leave_requeues() {
    let sandbox = Sandbox::new();
    let (run, id) = run_until_started(&sandbox, &["--on-interrupt", "leave"]);

    signal(i64::from(run.id()), "TERM");
    std::fs::write(sandbox.path("marker"), "").expect("marker is writable");
    let output = finish(run, "oaj run to stop after SIGTERM");

    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    assert_eq!(sandbox.job_state(&id), "queued");
}

#[test]
fn cancel_kills_grandchild_ignoring_sigterm() {
    // The cancel grace period ends with SIGKILL to the whole process group.
    let sandbox = Sandbox::new();
    let script = format!("trap '' TERM; {}", grandchild_script(&sandbox, "pid"));
    let workflow = sandbox.write(
        "workflow.json",
        &shell_workflow(&[("stubborn", &script, json!({}))]),
    );
    let run = sandbox.spawn(&["run", &workflow]);
    let grandchild = sandbox.wait_pid("pid");
    let id = sandbox.only_job_id();

    let cancel = sandbox.oaj(&["jobs", "cancel", &id]);

    assert_eq!(cancel.status.code(), Some(0), "{}", stderr(&cancel));
    let output = finish(run, "oaj run to end after the cancel");
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert_process_gone(grandchild);
}
