//! Smoke tests of `oaj bench`: each workload runs at a tiny size and reports that every job
//! completed exactly once. They check correctness only, never speed.

use serde_json::Value;

use super::{oaj, stdout};

/// Runs `oaj bench ARGS --json`, asserts success, and returns the parsed report.
fn bench(args: &[&str]) -> Value {
    let mut full = vec!["bench"];
    full.extend_from_slice(args);
    full.push("--json");
    let output = oaj(&full);
    assert!(
        output.status.success(),
        "oaj {full:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout(&output)).expect("the report is JSON")
}

#[test]
fn drain_completes_every_job_once() {
    let report = bench(&["drain", "--jobs", "30"]);
    assert_eq!(report["workload"], "drain");
    assert_eq!(report["results"]["jobs_completed"], 30);
    assert_eq!(report["results"]["attempts_started"], 30);
    assert_eq!(report["results"]["jobs_checked_once"], 30);
}

#[test]
fn report_states_durability() {
    let report = bench(&["drain", "--jobs", "1"]);
    assert_eq!(report["settings"]["journal_mode"], "wal");
    assert_eq!(report["settings"]["synchronous"], "full");
    assert_eq!(report["settings"]["jobs"], 1);
}

#[test]
fn enqueue_queues_every_job() {
    let report = bench(&[
        "enqueue",
        "--jobs",
        "25",
        "--batch-size",
        "10",
        "--single-jobs",
        "5",
    ]);
    assert_eq!(report["results"]["jobs_queued"], 30);
}

#[test]
fn enqueue_concurrent_clients_queue_every_job() {
    let report = bench(&[
        "enqueue",
        "--jobs",
        "3",
        "--single-jobs",
        "17",
        "--single-clients",
        "4",
    ]);
    assert_eq!(report["settings"]["single_clients"], 4);
    assert_eq!(report["results"]["jobs_queued"], 20);
}

#[test]
fn latency_completes_every_job() {
    let report = bench(&["latency", "--jobs", "3"]);
    assert_eq!(report["results"]["jobs_completed"], 3);
    assert!(report["results"]["start_median_ms"].is_number());
}

#[test]
fn sequential_completes_every_step() {
    let report = bench(&["sequential", "--steps", "5", "--jobs", "2"]);
    assert_eq!(report["results"]["jobs_completed"], 2);
    assert!(report["results"]["step_median_ms"].is_number());
}

#[test]
fn scale_lists_and_counts_every_state() {
    let report = bench(&["scale", "--jobs", "1200", "--repeat", "2"]);
    let results = &report["results"];
    assert_eq!(report["settings"]["jobs"], 1200);
    // 5% stay queued; the rest end 90% completed, 7% failed and 3% cancelled.
    assert_eq!(results["jobs_queued"], 60);
    assert_eq!(results["jobs_completed"], 1030);
    assert_eq!(results["jobs_failed"], 77);
    assert_eq!(results["jobs_cancelled"], 33);
    // Five filters, two list methods, two repetitions, each page checked against the fill.
    assert_eq!(results["listings_checked"], 20);
    assert!(results["job_query_completed_median_ms"].is_number());
    assert!(results["job_counts_median_ms"].is_number());
}

#[test]
fn memory_reports_worker_peak() {
    let report = bench(&["memory", "--jobs", "40"]);
    let results = &report["results"];
    assert_eq!(results["jobs_completed"], 40);
    assert_eq!(results["jobs_checked_once"], 40);
    let peak = results["peak_rss_mib"]
        .as_f64()
        .expect("peak_rss_mib is a number");
    assert!(peak > 1.0, "{peak}");
}

#[test]
fn memory_without_sqlite_rejected() {
    let output = oaj(&[
        "bench",
        "memory",
        "--jobs",
        "1",
        "--database",
        "postgresql://127.0.0.1:1/none",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("drop --database"), "{stderr}");
}

#[test]
fn existing_database_is_rejected() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("taken.db");
    std::fs::write(&path, b"").expect("create the file");
    let output = oaj(&[
        "bench",
        "drain",
        "--jobs",
        "1",
        "--db",
        path.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
}

#[test]
fn drain_on_postgres_with_workers() {
    let Some(url) = crate::fleet::database_url() else {
        return;
    };
    let report = bench(&[
        "drain",
        "--jobs",
        "40",
        "--database",
        &url,
        "--workers",
        "3",
    ]);
    assert_eq!(report["settings"]["workers"], 3);
    assert_eq!(report["settings"]["fsync"], "on");
    assert_eq!(report["settings"]["synchronous_commit"], "on");
    assert_eq!(report["results"]["jobs_completed"], 40);
    assert_eq!(report["results"]["jobs_checked_once"], 40);
}

#[test]
fn latency_on_postgres_with_workers() {
    let Some(url) = crate::fleet::database_url() else {
        return;
    };
    let report = bench(&[
        "latency",
        "--jobs",
        "3",
        "--database",
        &url,
        "--workers",
        "2",
    ]);
    assert_eq!(report["results"]["jobs_completed"], 3);
    assert!(report["results"]["start_median_ms"].is_number());
}

#[test]
fn workers_without_postgres_rejected() {
    let output = oaj(&["bench", "drain", "--jobs", "1", "--workers", "2"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("needs --database"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn folder_as_database_is_rejected() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let missing = format!("{}/", folder.path().join("new").display());
    for path in [folder.path().to_str().unwrap(), missing.as_str()] {
        let output = oaj(&["bench", "drain", "--jobs", "1", "--db", path]);
        assert_eq!(output.status.code(), Some(1), "{path}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("names a folder"), "{path}: {stderr}");
        assert!(stderr.contains("bench.db"), "{path}: {stderr}");
    }
    assert!(!folder.path().join("new").exists());
}

/// Regression: an interrupted run left its temporary database, up to gigabytes, in the
/// temporary folder.
#[test]
fn interrupted_run_deletes_temporary_database() {
    let temporary = tempfile::tempdir().expect("temporary folder");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_oaj"))
        .args(["bench", "drain", "--jobs", "50000000"])
        .env("TMPDIR", temporary.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the oaj binary runs");
    let database = crate::wait_for("the benchmark database", || {
        let folder = std::fs::read_dir(temporary.path()).ok()?.next()?.ok()?;
        let database = folder.path().join("bench.db");
        database.exists().then_some(database)
    });

    crate::signal(i64::from(child.id()), "TERM");
    let output = crate::finish(child, "oaj bench drain after SIGTERM");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("benchmark interrupted"), "{stderr}");
    assert!(!database.exists(), "{} is left", database.display());
    let left: Vec<_> = std::fs::read_dir(temporary.path())
        .expect("the temporary folder is readable")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Regression: the schema of a benchmark replaced the `options` of the URL, so a run asked for
/// `synchronous_commit=off` ran and reported `on`.
#[test]
fn postgres_url_options_are_kept() {
    let Some(url) = crate::fleet::database_url() else {
        return;
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}options=-c%20synchronous_commit%3Doff");
    let report = bench(&[
        "enqueue",
        "--jobs",
        "2",
        "--single-jobs",
        "0",
        "--database",
        &url,
    ]);
    assert_eq!(report["settings"]["synchronous_commit"], "off");
    assert_eq!(report["results"]["jobs_queued"], 2);
}
