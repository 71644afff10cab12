//! `oaj jobs`: every subcommand as text and as JSON, unknown ids, and deleting a live job.

use std::process::Child;

use serde_json::{json, Value};

use crate::{finish, shell_workflow, stderr, stdout, wait_for, Sandbox};

/// Runs `oaj jobs ARGS` and returns stdout, asserting exit code 0.
fn text(sandbox: &Sandbox, args: &[&str]) -> String {
    let mut with_jobs = vec!["jobs"];
    with_jobs.extend_from_slice(args);
    let output = sandbox.oaj(&with_jobs);
    assert_eq!(
        output.status.code(),
        Some(0),
        "oaj jobs {}: {}",
        args.join(" "),
        stderr(&output)
    );
    stdout(&output)
}

fn json(sandbox: &Sandbox, args: &[&str]) -> Value {
    let mut with_jobs = vec!["jobs"];
    with_jobs.extend_from_slice(args);
    sandbox.json(&with_jobs)
}

/// Runs a workflow whose only step exits with `code` and returns the job id.
fn finished_job(sandbox: &Sandbox, code: i32) -> String {
    let mut document: Value = serde_json::from_str(&shell_workflow(&[(
        "step",
        &format!("exit {code}"),
        json!({}),
    )]))
    .expect("shell_workflow builds JSON");
    // A stored workflow version keeps one document, so each exit code gets its own id.
    document["id"] = json!(format!("exit-{code}"));
    let workflow = sandbox.write(&format!("exit{code}.json"), &document.to_string());
    let output = sandbox.oaj(&["run", &workflow, "--json"]);
    let job: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    job["id"].as_str().expect("job id").to_owned()
}

/// Starts `oaj run` on a job that waits for approval, and returns it once the step waits.
fn waiting_job(sandbox: &Sandbox, name: &str) -> (Child, String) {
    let workflow = sandbox.write(
        name,
        r#"{"id": "gated", "steps": [{"id": "review", "component": "approval"}]}"#,
    );
    let jobs_before = sandbox.jobs().len();
    let run = sandbox.spawn(&["run", &workflow]);
    let id = wait_for("the new job to wait for approval", || {
        let jobs = sandbox.jobs();
        let job = jobs.first().filter(|_| jobs.len() > jobs_before)?;
        let id = job["id"].as_str().expect("id").to_owned();
        let shown = sandbox.show(&id);
        (shown["steps"][0]["state"] == "waiting").then_some(id)
    });
    (run, id)
}

#[test]
fn list_show_events_as_text_and_json() {
    let sandbox = Sandbox::new();
    let id = finished_job(&sandbox, 0);

    let listed = text(&sandbox, &["list"]);
    assert!(listed.contains(&id), "{listed}");
    assert!(listed.contains("completed"), "{listed}");
    let listed = json(&sandbox, &["list"]);
    assert_eq!(listed[0]["id"], Value::String(id.clone()));
    let filtered = json(&sandbox, &["list", "--state", "failed"]);
    assert_eq!(filtered, json!([]));

    let shown = text(&sandbox, &["show", &id]);
    assert!(shown.contains(&format!("job       {id}")), "{shown}");
    assert!(shown.contains("state     completed"), "{shown}");
    let shown = json(&sandbox, &["show", &id]);
    assert_eq!(shown["job"]["state"], "completed");
    assert_eq!(shown["steps"][0]["step_id"], "step");
    assert_eq!(shown["attempts"][0]["state"], "succeeded");

    let events = text(&sandbox, &["events", &id]);
    assert!(!events.trim().is_empty(), "no events printed");
    let events_json = text(&sandbox, &["events", &id, "--json"]);
    let parsed: Vec<Value> = events_json
        .lines()
        .map(|line| serde_json::from_str(line).expect("each event line is JSON"))
        .collect();
    assert_eq!(parsed.len(), events.lines().count());
    assert!(parsed.iter().all(|event| event["job_id"] == id.as_str()));
}

#[test]
fn state_changes_as_text_and_json() {
    let sandbox = Sandbox::new();
    let id = finished_job(&sandbox, 1);
    assert_eq!(sandbox.job_state(&id), "failed");

    let retried = text(&sandbox, &["retry", &id]);
    assert!(
        retried.contains(&format!("job {id} is now queued")),
        "{retried}"
    );
    let paused = json(&sandbox, &["pause", &id]);
    assert_eq!(paused["state"], "paused");
    let resumed = text(&sandbox, &["resume", &id]);
    assert!(resumed.contains("is now queued"), "{resumed}");
    let cancelled = json(&sandbox, &["cancel", &id]);
    assert_eq!(cancelled["state"], "cancelled");
    let retried = json(&sandbox, &["retry", &id]);
    assert_eq!(retried["state"], "queued");
    let cancelled = text(&sandbox, &["cancel", &id]);
    assert!(cancelled.contains("is now cancelled"), "{cancelled}");

    let deleted = text(&sandbox, &["delete", &id]);
    assert!(deleted.contains(&format!("deleted job {id}")), "{deleted}");
    let other = finished_job(&sandbox, 0);
    let deleted = json(&sandbox, &["delete", &other]);
    assert_eq!(deleted["id"], Value::String(other.clone()));
    assert_eq!(deleted["deleted"], true);
    assert_eq!(sandbox.jobs(), Vec::<Value>::new());
}

#[test]
fn approve_and_reject_as_text_and_json() {
    let sandbox = Sandbox::new();
    let (run, id) = waiting_job(&sandbox, "approve.json");
    let approved = json(&sandbox, &["approve", &id, "--by", "me"]);
    assert_eq!(approved["approved"], true);
    assert_eq!(approved["job_id"], Value::String(id.clone()));
    let output = finish(run, "oaj run to end after the approval");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    let (run, id) = waiting_job(&sandbox, "reject.json");
    let rejected = text(&sandbox, &["reject", &id, "--by", "me"]);
    assert!(rejected.contains("rejected"), "{rejected}");
    let output = finish(run, "oaj run to end after the rejection");
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
}

#[test]
fn deleting_live_job_is_rejected() {
    let sandbox = Sandbox::new();
    let (run, id) = waiting_job(&sandbox, "gated.json");

    let output = sandbox.oaj(&["jobs", "delete", &id]);

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("cancel it first"), "{text}");
    assert_eq!(sandbox.job_state(&id), "pending");
    let cancel = sandbox.oaj(&["jobs", "cancel", &id]);
    assert_eq!(cancel.status.code(), Some(0), "{}", stderr(&cancel));
    let output = finish(run, "oaj run to end after the cancel");
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
}

#[test]
fn unknown_id_is_not_found() {
    let sandbox = Sandbox::new();
    let commands: [&[&str]; 9] = [
        &["show"],
        &["events"],
        &["cancel"],
        &["pause"],
        &["resume"],
        &["retry"],
        &["approve"],
        &["reject"],
        &["delete"],
    ];
    for command in commands {
        for json_flag in [false, true] {
            let mut args = vec!["jobs"];
            args.extend_from_slice(command);
            args.push("no-such-job");
            if json_flag {
                args.push("--json");
            }

            let output = sandbox.oaj(&args);

            let shown = args.join(" ");
            assert_eq!(
                output.status.code(),
                Some(1),
                "{shown}: {}",
                stderr(&output)
            );
            assert!(
                stderr(&output).contains("job no-such-job not found"),
                "{shown}: {}",
                stderr(&output)
            );
            assert!(stdout(&output).is_empty(), "{shown}: {}", stdout(&output));
        }
    }
}

#[test]
fn list_before_missing_job_fails() {
    let sandbox = Sandbox::new();
    finished_job(&sandbox, 0);

    let output = sandbox.oaj(&["jobs", "list", "--before", "no-such-job"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("invalid --before no-such-job"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("job no-such-job not found"),
        "{}",
        stderr(&output)
    );
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));

    let empty = sandbox.oaj(&["jobs", "list", "--before", ""]);
    assert_eq!(empty.status.code(), Some(2), "{}", stderr(&empty));
    assert!(stderr(&empty).contains("--before"), "{}", stderr(&empty));
}

#[test]
fn approve_without_waiting_step_names_job() {
    // Regression: the message read "step (any) of job ... is not waiting for approval".
    let sandbox = Sandbox::new();
    let id = finished_job(&sandbox, 0);

    let output = sandbox.oaj(&["jobs", "approve", &id]);

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains(&format!("job {id} has no step waiting for approval")),
        "{text}"
    );
    let output = sandbox.oaj(&["jobs", "reject", &id, "--step", "step"]);
    let text = stderr(&output);
    assert!(
        text.contains(&format!("step step of job {id} is not waiting")),
        "{text}"
    );
}
