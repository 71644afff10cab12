//! A fleet of `oaj worker` processes on one PostgreSQL database, killed with SIGKILL at random
//! while they drain a queue: every job still completes, and no step succeeds twice.
//!
//! This test needs a server at `OAJ_TEST_DATABASE_URL`. Without that variable it fails under CI
//! (`CI=true`) and is skipped, with a message, elsewhere. It works in a schema of its own.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oaj_core::{JobState, SystemClock};
use oaj_engine::agent::AgentRegistry;
use oaj_engine::{Engine, EngineConfig, JobSubmit};
use oaj_store::{
    EventFilter, Job, JobCursor, JobQuery, JobSort, PostgresOptions, PostgresStore, Store,
};
use serde_json::json;

use crate::{finish, stderr, REPOSITORY_ROOT};

const DATABASE_URL_VAR: &str = "OAJ_TEST_DATABASE_URL";

/// Jobs the fleet drains.
const JOB_COUNT: usize = 1000;
/// Worker processes alive at once while the chaos runs.
const WORKER_COUNT: usize = 3;
/// `--jobs-max` of each worker. A job fails once its workers have died under it three times
/// (`EngineConfig::interruptions_max`), and a worker with few claimed jobs takes few down with
/// it, so that the chaos rarely pushes a job to that limit.
const WORKER_JOBS_MAX: &str = "16";
/// Maximum chaos duration. The chaos stops earlier once every job is final.
const CHAOS_MAX: Duration = Duration::from_secs(15);
/// Steps of the fleet workflow, each of which succeeds exactly once per job.
pub(crate) const STEP_IDS: [&str; 4] = ["start", "copy", "flaky", "finish"];

/// Serialises the tests that run worker processes on PostgreSQL. Each one spawns several workers
/// with one-second leases, and on a small machine two such tests at once starve each other until
/// the final drain times out.
pub(crate) static WORKER_PROCESS_TESTS: Mutex<()> = Mutex::new(());

/// Four steps in a chain. `flaky` fails its first attempt and succeeds on its retry 50 ms later,
/// so that retries also cross worker deaths.
const WORKFLOW: &str = r#"{
  "id": "fleet",
  "version": "1.0.0",
  "inputs": {"n": {"type": "integer"}},
  "steps": [
    {"id": "start", "component": "noop"},
    {"id": "copy", "component": "echo", "inputs": {"n": "${inputs.n}"}, "depends_on": ["start"]},
    {
      "id": "flaky",
      "component": "fail",
      "inputs": {"message": "the first attempt fails", "succeed_on_attempt": 2},
      "retry": {"max_attempts": 5, "delay_seconds": 0.05},
      "depends_on": ["copy"]
    },
    {"id": "finish", "component": "noop", "depends_on": ["flaky"]}
  ]
}"#;

#[test]
fn fleet_survives_sigkill_chaos() {
    let Some(url) = database_url() else {
        return;
    };
    // A failed test poisons the lock, and the other test may still run after it.
    let _serial = WORKER_PROCESS_TESTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let schema = schema_new();
    let (store, ids) = runtime.block_on(jobs_submit(&url, &schema, JOB_COUNT));
    let worker_url = url_with_schema(&url, &schema);
    let logs = tempfile::tempdir().expect("temp dir");

    let mut fleet = Fleet::new(&worker_url, logs.path());
    for _ in 0..WORKER_COUNT {
        fleet.spawn();
    }
    let seed = seed_new();
    // The harness shows this on failure. It fixes which workers die, not when jobs run.
    println!("chaos seed {seed}");
    let mut random = XorShift(seed);
    let chaos_end = Instant::now() + CHAOS_MAX;
    while Instant::now() < chaos_end && !runtime.block_on(is_all_final(&store)) {
        std::thread::sleep(Duration::from_millis(700 + random.below(600)));
        fleet.kill_one(random.below(WORKER_COUNT as u64) as usize);
        fleet.spawn();
    }
    let kills = fleet.kills;
    let chaos_seconds = started.elapsed().as_secs_f64();
    fleet.kill_all();

    // The chaos is over, so this worker may claim more jobs at once.
    let drain = fleet
        .command(&[
            "--exit-when-idle",
            "--jobs-max",
            "64",
            "--concurrency",
            "64",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the oaj binary starts");
    let drained = finish(drain, "the last worker to drain the queue");
    assert_eq!(drained.status.code(), Some(0), "{}", stderr(&drained));

    let jobs = runtime.block_on(jobs_all(&store));
    let stored: HashSet<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
    let missing = ids
        .iter()
        .filter(|id| !stored.contains(id.as_str()))
        .count();
    assert_eq!(missing, 0, "inserted jobs missing from the store");
    assert_eq!(jobs.len(), ids.len(), "the store has jobs nobody inserted");
    let unfinished: Vec<_> = jobs
        .iter()
        .filter(|job| job.state != JobState::Completed)
        .map(|job| (&job.id, job.state, &job.error))
        .collect();
    assert!(
        unfinished.is_empty(),
        "{} jobs not completed, such as {:?}",
        unfinished.len(),
        &unfinished[..unfinished.len().min(3)]
    );

    let successes = runtime.block_on(successes_count(&store));
    let repeated: Vec<_> = successes.iter().filter(|(_, count)| **count > 1).collect();
    assert!(
        repeated.is_empty(),
        "{} step runs succeeded more than once, such as {:?}",
        repeated.len(),
        &repeated[..repeated.len().min(3)]
    );
    for id in &ids {
        for step in STEP_IDS {
            let key = (id.clone(), step.to_owned(), None);
            assert_eq!(successes.get(&key), Some(&1), "job {id} step {step}");
        }
    }

    let rescued = jobs.iter().filter(|job| job.interruptions > 0).count();
    println!(
        "{} jobs, {kills} workers killed, {rescued} jobs rescued, chaos until {chaos_seconds:.1} s, \
         {:.1} s in all",
        jobs.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(kills > 0, "the queue drained before the first kill");
    assert!(rescued > 0, "no killed worker held a job");
}

/// Returns the test server's URL, or `None` (after a notice) when none is set outside CI.
pub(crate) fn database_url() -> Option<String> {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => panic!(
            "{DATABASE_URL_VAR} is not set, but CI=true requires the PostgreSQL tests to run: \
             start a server with scripts/pg-test-cluster.sh start and export its URL"
        ),
        _ => {
            // Straight to the terminal, once per run, because the harness captures println!.
            static SKIP_NOTICE: Once = Once::new();
            SKIP_NOTICE.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** SKIPPED: the worker fleet tests, because {DATABASE_URL_VAR} is not \
                     set. Start a server with scripts/pg-test-cluster.sh start and export its \
                     URL. ***\n"
                );
            });
            None
        }
    }
}

/// Returns a schema name that no other test uses.
pub(crate) fn schema_new() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    format!("oaj_fleet_{}_{nanos}", std::process::id())
}

/// Adds session settings to `url`: `search_path`, so that `oaj --database` finds the tables in
/// `schema` (the store uses the first schema on the search path), and `synchronous_commit=off`.
/// The latter only lets a server crash lose the last commits, and this test kills workers, not
/// the server, so it keeps every assertion meaningful while commits skip the wait for fsync.
pub(crate) fn url_with_schema(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}%20-c%20synchronous_commit%3Doff")
}

/// Creates `schema` with the store's tables.
pub(crate) async fn schema_create(url: &str, schema: &str) {
    let options = PostgresOptions {
        schema: Some(schema.to_owned()),
        pool_size: 1,
    };
    PostgresStore::connect_with(url, options)
        .await
        .expect("the test PostgreSQL server accepts a new store");
}

/// Creates `schema` with the store's tables, registers the workflow and submits `count` jobs.
/// Returns the store and the ids of the jobs.
pub(crate) async fn jobs_submit(
    url: &str,
    schema: &str,
    count: usize,
) -> (Arc<dyn Store>, Vec<String>) {
    let options = PostgresOptions {
        schema: Some(schema.to_owned()),
        pool_size: 2,
    };
    let store = PostgresStore::connect_with(url, options)
        .await
        .expect("the test PostgreSQL server accepts a new store");
    let store: Arc<dyn Store> = Arc::new(store);
    let engine = Engine::new(
        Arc::clone(&store),
        AgentRegistry::with_builtins(),
        Arc::new(SystemClock),
        EngineConfig::default(),
    );
    engine
        .workflow_register(WORKFLOW)
        .await
        .expect("the fleet workflow is valid");

    let mut ids = Vec::with_capacity(count);
    let submits: Vec<JobSubmit> = (0..count)
        .map(|n| JobSubmit {
            workflow_id: "fleet".to_owned(),
            input: json!({ "n": n }),
            metadata: json!({}),
            ..JobSubmit::default()
        })
        .collect();
    for chunk in submits.chunks(500) {
        let inserted = engine
            .job_submit_many(chunk.to_vec(), None)
            .await
            .expect("the jobs are accepted");
        ids.extend(inserted);
    }
    (store, ids)
}

async fn is_all_final(store: &Arc<dyn Store>) -> bool {
    let counts = store.job_counts().await.expect("job counts are readable");
    counts
        .iter()
        .all(|(state, count)| state.is_final() || *count == 0)
}

/// Reads every job, oldest first, a page at a time.
pub(crate) async fn jobs_all(store: &Arc<dyn Store>) -> Vec<Job> {
    let mut jobs: Vec<Job> = Vec::new();
    loop {
        let query = JobQuery {
            sort: JobSort::CreatedAsc,
            after: jobs
                .last()
                .map(|last| JobCursor::after(last, JobSort::CreatedAsc)),
            limit: 1000,
            ..JobQuery::default()
        };
        let page = store.job_query(query).await.expect("jobs are readable");
        if page.is_empty() {
            return jobs;
        }
        jobs.extend(page);
    }
}

/// Counts the `attempt.succeeded` events of each (job, step, item).
pub(crate) async fn successes_count(
    store: &Arc<dyn Store>,
) -> HashMap<(String, String, Option<u32>), usize> {
    let mut counts = HashMap::new();
    let mut after_seq = 0;
    loop {
        let filter = EventFilter {
            job_id: None,
            after_seq,
            limit: 1000,
        };
        let events = store.event_list(filter).await.expect("events are readable");
        let Some(last) = events.last() else {
            return counts;
        };
        after_seq = last.seq;
        for event in events.iter().filter(|e| e.kind == "attempt.succeeded") {
            let job_id = event
                .job_id
                .clone()
                .expect("an attempt event names its job");
            let step_id = event
                .step_id
                .clone()
                .expect("an attempt event names its step");
            *counts.entry((job_id, step_id, event.item)).or_default() += 1;
        }
    }
}

/// The worker processes this test started. Dropping it kills those still running, so that a
/// failed assertion leaves none behind.
pub(crate) struct Fleet<'a> {
    url: String,
    logs: &'a Path,
    workers: Vec<Child>,
    /// Workers started so far, which numbers their log files.
    started: usize,
    kills: usize,
}

impl<'a> Fleet<'a> {
    pub(crate) fn new(url: &str, logs: &'a Path) -> Fleet<'a> {
        Fleet {
            url: url.to_owned(),
            logs,
            workers: Vec::new(),
            started: 0,
            kills: 0,
        }
    }

    /// Builds `oaj worker --database URL --lease-seconds 1 EXTRA`.
    pub(crate) fn command(&self, extra: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_oaj"));
        command
            .args(["worker", "--database", &self.url, "--lease-seconds", "1"])
            .args(extra)
            .current_dir(REPOSITORY_ROOT)
            .stdin(Stdio::null());
        command
    }

    /// Starts a worker that logs to a file of its own, because an unread pipe could fill and
    /// stall it.
    pub(crate) fn spawn(&mut self) {
        self.started += 1;
        let log = File::create(self.logs.join(format!("worker-{}.log", self.started)))
            .expect("the log file is writable");
        let child = self
            .command(&[
                "--jobs-max",
                WORKER_JOBS_MAX,
                "--concurrency",
                WORKER_JOBS_MAX,
            ])
            .stdout(log.try_clone().expect("the log file handle is cloneable"))
            .stderr(log)
            .spawn()
            .expect("the oaj binary starts");
        self.workers.push(child);
    }

    /// Kills worker `index` with SIGKILL, by its pid, and reaps it.
    fn kill_one(&mut self, index: usize) {
        let mut child = self.workers.swap_remove(index % self.workers.len());
        // A worker that already exited has nothing left to kill.
        let _ = child.kill();
        child.wait().expect("the killed worker is reaped");
        self.kills += 1;
    }

    /// Returns the exit status of each worker that has exited, with its position in the fleet
    /// counted from 1. The position is the log number of [`Fleet::log`] until a worker is killed.
    pub(crate) fn exits(&mut self) -> Vec<(usize, ExitStatus)> {
        let mut exits = Vec::new();
        for (index, child) in self.workers.iter_mut().enumerate() {
            let status = child.try_wait().expect("the worker's status is readable");
            if let Some(status) = status {
                exits.push((index + 1, status));
            }
        }
        exits
    }

    /// Returns the log of the worker that started `number`th, counting from 1.
    pub(crate) fn log(&self, number: usize) -> String {
        let path = self.logs.join(format!("worker-{number}.log"));
        std::fs::read_to_string(&path).unwrap_or_else(|err| format!("{}: {err}", path.display()))
    }

    pub(crate) fn kill_all(&mut self) {
        while !self.workers.is_empty() {
            self.kill_one(0);
        }
    }
}

impl Drop for Fleet<'_> {
    fn drop(&mut self) {
        for child in &mut self.workers {
            // Best effort while a test fails: the process may have exited already.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A small xorshift generator, so that the test needs no random crate.
struct XorShift(u64);

impl XorShift {
    /// Returns a number below `bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

fn seed_new() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    // Xorshift never leaves zero, so the seed must not be zero.
    (nanos as u64) | 1
}
