//! Two `oaj worker` processes on a PostgreSQL server that restarts in the middle of their run:
//! the workers keep running, every job completes, and no step succeeds twice.
//!
//! The test restarts a private cluster that it starts with `scripts/pg-test-cluster.sh`, never
//! the shared server at `OAJ_TEST_DATABASE_URL`, because other tests use that one at the same
//! time. It still runs only when that variable is set (and fails under CI without it), like the
//! other PostgreSQL tests, since both need the same PostgreSQL install.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oaj_core::JobState;
use oaj_store::Store;

use crate::fleet::{
    database_url, jobs_all, jobs_submit, schema_new, successes_count, url_with_schema, Fleet,
    STEP_IDS, WORKER_PROCESS_TESTS,
};
use crate::{finish, stderr, wait_for, REPOSITORY_ROOT};

/// Jobs the two workers drain.
const JOB_COUNT: usize = 300;
/// Workers that run across the restart.
const WORKER_COUNT: usize = 2;
/// Completed jobs before the test restarts the server, so that the restart hits a queue that is
/// already moving.
const COMPLETED_BEFORE_RESTART: u64 = 30;
/// Maximum time for the queue to drain after the restart.
const DRAIN_MAX: Duration = Duration::from_secs(120);

#[test]
fn workers_survive_postgres_restart() {
    if database_url().is_none() {
        return;
    }
    // A failed test poisons the lock, and the other test may still run after it.
    let _serial = WORKER_PROCESS_TESTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let started = Instant::now();
    let cluster = Cluster::start();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let schema = schema_new();
    let (store, ids) = runtime.block_on(jobs_submit(&cluster.url, &schema, JOB_COUNT));
    let logs = tempfile::tempdir().expect("temp dir");
    // The URL turns synchronous_commit off. A fast shutdown still writes out all WAL before the
    // server stops, so the restart loses no commit that a worker saw succeed.
    let mut fleet = Fleet::new(&url_with_schema(&cluster.url, &schema), logs.path());
    for _ in 0..WORKER_COUNT {
        fleet.spawn();
    }

    let completed_before = wait_for("the first completed jobs", || {
        let completed = runtime.block_on(completed_count(&store))?;
        (completed >= COMPLETED_BEFORE_RESTART).then_some(completed)
    });
    let restart_started = Instant::now();
    cluster.restart();
    let restart_seconds = restart_started.elapsed().as_secs_f64();

    // The workers drain the rest alone, and each one must live through it.
    let deadline = Instant::now() + DRAIN_MAX;
    while !runtime.block_on(is_all_final(&store)) {
        assert_workers_running(&mut fleet);
        assert!(
            Instant::now() < deadline,
            "the queue did not drain within {DRAIN_MAX:?} of the restart, counts {:?}",
            runtime.block_on(store.job_counts()).ok()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_workers_running(&mut fleet);
    fleet.kill_all();

    // A last worker finds no work left and exits cleanly.
    let drain = fleet
        .command(&["--exit-when-idle"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the oaj binary starts");
    let drained = finish(drain, "the last worker to drain the queue");
    assert_eq!(drained.status.code(), Some(0), "{}", stderr(&drained));

    let jobs = runtime.block_on(jobs_all(&store));
    let stored: BTreeMap<&str, &oaj_store::Job> =
        jobs.iter().map(|job| (job.id.as_str(), job)).collect();
    for id in &ids {
        let Some(job) = stored.get(id.as_str()) else {
            panic!("inserted job {id} missing from the store");
        };
        assert_eq!(job.state, JobState::Completed, "job {id}: {:?}", job.error);
    }
    assert_eq!(jobs.len(), ids.len(), "the store has jobs nobody inserted");

    let successes = runtime.block_on(successes_count(&store));
    for id in &ids {
        for step in STEP_IDS {
            let key = (id.clone(), step.to_owned(), None);
            assert_eq!(
                successes.get(&key),
                Some(&1),
                "successes of job {id} step {step}"
            );
        }
    }
    assert_eq!(
        successes.len(),
        ids.len() * STEP_IDS.len(),
        "successes of steps outside the workflow"
    );

    println!(
        "{} jobs, {completed_before} completed before the restart, restart took \
         {restart_seconds:.1} s, {:.1} s in all",
        jobs.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Fails, with the worker's log, if any worker of `fleet` has exited.
fn assert_workers_running(fleet: &mut Fleet) {
    if let Some((number, status)) = fleet.exits().into_iter().next() {
        panic!(
            "worker {number} exited with {status} while the queue drained, its log:\n{}",
            fleet.log(number)
        );
    }
}

/// Returns the number of completed jobs, or `None` while the server is unreachable.
async fn completed_count(store: &Arc<dyn Store>) -> Option<u64> {
    let counts = store.job_counts().await.ok()?;
    Some(counts.get(&JobState::Completed).copied().unwrap_or(0))
}

/// Returns whether every job is final. A failed read, such as one on a connection that the
/// restart closed, counts as not yet.
async fn is_all_final(store: &Arc<dyn Store>) -> bool {
    match store.job_counts().await {
        Ok(counts) => counts
            .iter()
            .all(|(state, count)| state.is_final() || *count == 0),
        Err(_) => false,
    }
}

/// A PostgreSQL cluster of this test's own. Dropping it stops the server and deletes its folder.
struct Cluster {
    dir: PathBuf,
    url: String,
}

impl Cluster {
    fn start() -> Cluster {
        let output = script(&["start"]);
        let stdout = String::from_utf8(output.stdout).expect("the script prints UTF-8");
        let mut lines = stdout.lines();
        let dir = lines.next().expect("the script prints the cluster folder");
        let url = lines.next().expect("the script prints the cluster URL");
        Cluster {
            dir: PathBuf::from(dir),
            url: url.to_owned(),
        }
    }

    fn restart(&self) {
        script(&["restart", self.dir.to_str().expect("the folder is UTF-8")]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Best effort while a test fails: a panic here would hide the first failure.
        let _ = Command::new("scripts/pg-test-cluster.sh")
            .arg("stop")
            .arg(&self.dir)
            .current_dir(REPOSITORY_ROOT)
            .status();
    }
}

/// Runs `scripts/pg-test-cluster.sh ARGS` and fails unless it succeeds.
fn script(args: &[&str]) -> std::process::Output {
    let output = Command::new("scripts/pg-test-cluster.sh")
        .args(args)
        .current_dir(REPOSITORY_ROOT)
        .output()
        .expect("scripts/pg-test-cluster.sh runs");
    assert!(
        output.status.success(),
        "scripts/pg-test-cluster.sh {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
