//! Crash recovery: a job whose process is killed is finished by `oaj worker` without re-running
//! finished steps, and a step that keeps killing its worker ends the job as failed.

use serde_json::json;

use crate::{shell_quote, shell_workflow, signal, stderr, wait_for, Sandbox};

/// Kills the process group of the `sh` whose pid a step wrote to `pid_file`, because a SIGKILLed
/// oaj leaves its command children running.
fn kill_orphans(sandbox: &Sandbox, pid_file: &str) {
    let pid = sandbox.wait_pid(pid_file);
    // The command agent starts every command in its own process group, led by `sh`.
    signal(-pid, "KILL");
    std::fs::remove_file(sandbox.path(pid_file)).expect("pid file exists");
}

#[test]
fn killed_run_is_finished_by_worker() {
    let sandbox = Sandbox::new();
    let log = shell_quote(sandbox.path("log.txt").to_str().unwrap());
    let pid = shell_quote(sandbox.path("pid").to_str().unwrap());
    let marker = shell_quote(sandbox.path("marker").to_str().unwrap());
    let middle = format!("echo $$ > {pid}; echo start >> {log}; [ -e {marker} ] || sleep 30");
    let workflow = sandbox.write(
        "workflow.json",
        &shell_workflow(&[
            ("first", &format!("echo first >> {log}"), json!({})),
            ("middle", &middle, json!({})),
            ("last", &format!("echo last >> {log}"), json!({})),
        ]),
    );

    let mut run = sandbox.spawn(&["run", &workflow, "--lease-seconds", "1"]);
    wait_for("the middle step to start", || {
        (sandbox.count_lines("log.txt", "start") == 1).then_some(())
    });
    run.kill().expect("oaj run is killable");
    run.wait().expect("oaj run is reaped");
    kill_orphans(&sandbox, "pid");
    std::fs::write(sandbox.path("marker"), "").expect("marker is writable");

    let worker = sandbox.oaj(&["worker", "--exit-when-idle", "--lease-seconds", "1"]);

    assert_eq!(worker.status.code(), Some(0), "{}", stderr(&worker));
    let id = sandbox.only_job_id();
    assert_eq!(sandbox.job_state(&id), "completed");
    assert_eq!(sandbox.count_lines("log.txt", "first"), 1);
    assert_eq!(sandbox.count_lines("log.txt", "start"), 2);
    assert_eq!(sandbox.count_lines("log.txt", "last"), 1);
    let middle_attempts = sandbox.attempt_states(&id, "middle");
    assert_eq!(middle_attempts, ["interrupted", "succeeded"]);
    assert_eq!(sandbox.attempt_states(&id, "first"), ["succeeded"]);
}

#[test]
fn step_that_keeps_killing_workers_fails_job() {
    let sandbox = Sandbox::new();
    let log = shell_quote(sandbox.path("log.txt").to_str().unwrap());
    let pid = shell_quote(sandbox.path("pid").to_str().unwrap());
    let deadly = format!("echo $$ > {pid}; echo start >> {log}; sleep 30");
    let workflow = sandbox.write(
        "workflow.json",
        &shell_workflow(&[("deadly", &deadly, json!({}))]),
    );

    // Each process runs the step and is killed as soon as it starts: first `oaj run`, then two
    // workers that rescue the expired lease and try again.
    let mut process = sandbox.spawn(&["run", &workflow, "--lease-seconds", "1"]);
    for kills in 1..=3 {
        wait_for(&format!("start number {kills}"), || {
            (sandbox.count_lines("log.txt", "start") == kills).then_some(())
        });
        process.kill().expect("oaj is killable");
        process.wait().expect("oaj is reaped");
        kill_orphans(&sandbox, "pid");
        if kills < 3 {
            process = sandbox.spawn(&["worker", "--lease-seconds", "1"]);
        }
    }

    let worker = sandbox.oaj(&["worker", "--exit-when-idle", "--lease-seconds", "1"]);

    assert_eq!(worker.status.code(), Some(0), "{}", stderr(&worker));
    let id = sandbox.only_job_id();
    let shown = sandbox.show(&id);
    assert_eq!(shown["job"]["state"], "failed");
    let error = shown["job"]["error"]
        .as_str()
        .expect("failed job has an error");
    assert!(error.contains("interrupted 3 times"), "{error}");
    assert_eq!(sandbox.count_lines("log.txt", "start"), 3);
    assert_eq!(
        sandbox.attempt_states(&id, "deadly"),
        ["interrupted", "interrupted", "interrupted"]
    );
}
