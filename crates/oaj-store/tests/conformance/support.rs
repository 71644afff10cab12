//! Factories shared by the conformance tests. Each gives defaults, so a test sets only what it
//! checks.

use std::io::Write;
use std::sync::{Arc, Once};

use oaj_core::Priority;
use oaj_store::{
    AttemptFinish, AttemptStart, AttemptState, ClaimParams, ClaimedJob, DependencyFailure,
    JobFinish, JobNew, JobOutcome, JobRef, Lease, PostgresOptions, PostgresStore, SqliteStore,
    StepState, Store, WorkflowRecord,
};
use serde_json::json;
use tempfile::TempDir;

/// The workflow every job of the suite runs.
pub const WORKFLOW_ID: &str = "summarize";
/// Its version.
pub const WORKFLOW_VERSION: &str = "1.0.0";
/// A time far from zero, so that tests can go back and forth from it.
pub const T0: i64 = 1_700_000_000_000;
/// The lease length used by claims in the suite.
pub const LEASE_MS: i64 = 30_000;

/// Opens a fresh SQLite store in a temporary folder, returned so that it outlives the store.
pub fn sqlite_store() -> (Arc<dyn Store>, TempDir) {
    let dir = tempfile::tempdir().expect("a temporary folder can be created");
    let store = SqliteStore::open(&dir.path().join("oaj.db")).expect("a new store opens");
    (Arc::new(store), dir)
}

/// The variable that names the PostgreSQL server of the tests.
pub const DATABASE_URL_VAR: &str = "OAJ_TEST_DATABASE_URL";

/// Returns the URL of the PostgreSQL server of the tests, or `None` when none is set and the
/// tests may be skipped.
///
/// Panics when none is set under CI (`CI=true`), so that a missing server cannot pass unnoticed.
pub fn database_url() -> Option<String> {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => panic!(
            "{DATABASE_URL_VAR} is not set, but CI=true requires the PostgreSQL tests to run: \
             start a server with scripts/pg-test-cluster.sh start and export its URL"
        ),
        _ => {
            // Once per run, and straight to the terminal: the test harness hides eprintln!.
            static SKIP_NOTICE: Once = Once::new();
            SKIP_NOTICE.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** SKIPPED: every PostgreSQL conformance test, because \
                     {DATABASE_URL_VAR} is not set. Start a server with \
                     scripts/pg-test-cluster.sh start and export its URL. ***\n"
                );
            });
            None
        }
    }
}

/// Returns a fresh, unique schema name for one test.
pub fn schema_new() -> String {
    format!("oaj_test_{}", uuid::Uuid::now_v7().simple())
}

/// Connects a PostgreSQL store in a new schema of its own, or returns `None` when the tests run
/// without a server (see [`database_url`]). Schemas are left behind for the throwaway cluster.
pub async fn postgres_store() -> Option<Arc<dyn Store>> {
    let url = database_url()?;
    let store = postgres_connect(&url, &schema_new()).await;
    Some(Arc::new(store))
}

/// Connects a PostgreSQL store to `schema`, creating the schema if needed.
pub async fn postgres_connect(url: &str, schema: &str) -> PostgresStore {
    let options = PostgresOptions {
        schema: Some(schema.to_owned()),
        pool_size: 4,
    };
    PostgresStore::connect_with(url, options)
        .await
        .expect("the test PostgreSQL server accepts a new store")
}

/// Builds a workflow record with a small document.
pub fn workflow(id: &str, version: &str) -> WorkflowRecord {
    WorkflowRecord {
        id: id.to_owned(),
        version: version.to_owned(),
        document: json!({ "id": id, "version": version, "steps": [] }).to_string(),
        created_at: T0,
    }
}

/// Builds a job of the suite's workflow, created at `created_at`.
pub fn job_new(created_at: i64) -> JobNew {
    JobNew {
        workflow_id: WORKFLOW_ID.to_owned(),
        workflow_version: WORKFLOW_VERSION.to_owned(),
        input: json!({ "text": "hello" }),
        priority: Priority::Medium,
        tags: vec!["test".to_owned()],
        metadata: json!({}),
        depends_on: Vec::new(),
        on_dependency_failure: DependencyFailure::Fail,
        run_at: None,
        timeout_ms: None,
        idempotency_key: None,
        created_at,
    }
}

/// Builds a job that depends on the given jobs.
pub fn job_after(created_at: i64, depends_on: Vec<JobRef>) -> JobNew {
    JobNew {
        depends_on,
        ..job_new(created_at)
    }
}

/// Stores the suite's workflow.
pub async fn workflow_setup(store: &Arc<dyn Store>) {
    store
        .workflow_insert(workflow(WORKFLOW_ID, WORKFLOW_VERSION))
        .await
        .expect("the workflow is stored");
}

/// Stores the suite's workflow and inserts one job, returning its id.
pub async fn insert(store: &Arc<dyn Store>, job: JobNew) -> String {
    let ids = store
        .job_insert_many(vec![job], None)
        .await
        .expect("the job is inserted");
    ids.into_iter().next().expect("one id per job")
}

/// Claims up to `limit` jobs for `worker` at `now`.
pub async fn claim(store: &Arc<dyn Store>, worker: &str, limit: u32, now: i64) -> Vec<ClaimedJob> {
    store
        .job_claim(ClaimParams {
            worker_id: worker.to_owned(),
            limit,
            now,
            lease_ms: LEASE_MS,
            job_ids: Vec::new(),
        })
        .await
        .expect("the claim succeeds")
}

/// Claims exactly one job and returns it.
pub async fn claim_one(store: &Arc<dyn Store>, now: i64) -> ClaimedJob {
    let mut claimed = claim(store, "worker-1", 1, now).await;
    assert_eq!(claimed.len(), 1, "expected one claimable job");
    claimed.remove(0)
}

/// Ends the worker's hold on a job with `outcome`.
pub async fn finish(store: &Arc<dyn Store>, lease: &Lease, outcome: JobOutcome, now: i64) {
    store
        .job_finish(JobFinish {
            lease: lease.clone(),
            attempts: Vec::new(),
            outcome,
            now,
        })
        .await
        .expect("the job finish is accepted");
}

/// Builds the start of the first attempt of step `step_id`.
pub fn attempt_start(lease: &Lease, step_id: &str, now: i64) -> AttemptStart {
    AttemptStart {
        lease: lease.clone(),
        worker_id: "worker-1".to_owned(),
        step_id: step_id.to_owned(),
        item: None,
        number: 1,
        now,
    }
}

/// Builds a successful end of attempt `attempt_id` of step `step_id`.
pub fn attempt_success(lease: &Lease, attempt_id: i64, step_id: &str, now: i64) -> AttemptFinish {
    AttemptFinish {
        lease: lease.clone(),
        attempt_id,
        step_id: step_id.to_owned(),
        item: None,
        state: AttemptState::Succeeded,
        step_state: StepState::Completed,
        output: Some(json!({ "summary": "hi" })),
        error: None,
        next_attempt_at: None,
        log: "ok".to_owned(),
        prompt_tokens: 10,
        completion_tokens: 5,
        now,
    }
}

/// Reads a job that must exist.
pub async fn job(store: &Arc<dyn Store>, id: &str) -> oaj_store::Job {
    store
        .job_get(id)
        .await
        .expect("the read succeeds")
        .expect("the job exists")
}
