//! Tests of the group writer on the PostgreSQL server that `OAJ_TEST_DATABASE_URL` names. They
//! build groups by hand, so that the calls of a test always share one group and its batches.

use std::sync::Arc;
use std::time::Duration;

use oaj_core::{JobState, Priority};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::{group_run_with, Request, WriteOp, WriteValue, WriterShared};
use crate::error::StoreError;
use crate::model::{
    AttemptFinish, AttemptRecord, AttemptStart, AttemptState, ClaimParams, DependencyFailure,
    EventFilter, JobFinish, JobNew, JobOutcome, JobRef, Lease, StepState, WorkflowRecord,
};
use crate::postgres::finish_batch::job_finish_many;
use crate::postgres::tx::PgTx;
use crate::postgres::{PostgresOptions, PostgresStore};
use crate::store::Store;

const T0: i64 = 1_700_000_000_000;

/// Connects a store in a new schema, or returns `None` when no server is set and the tests may
/// be skipped (as the conformance suite does, which fails instead under `CI=true`).
async fn store_new() -> Option<PostgresStore> {
    let url = match std::env::var("OAJ_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("OAJ_TEST_DATABASE_URL is not set, but CI=true requires the PostgreSQL tests")
        }
        _ => return None,
    };
    let options = PostgresOptions {
        schema: Some(format!("oaj_test_{}", uuid::Uuid::now_v7().simple())),
        pool_size: 4,
    };
    let store = PostgresStore::connect_with(&url, options)
        .await
        .expect("the test PostgreSQL server accepts a new store");
    let workflow = WorkflowRecord {
        id: "summarize".to_owned(),
        version: "1.0.0".to_owned(),
        document: json!({ "id": "summarize", "version": "1.0.0", "steps": [] }).to_string(),
        created_at: T0,
    };
    store.workflow_insert(workflow).await.unwrap();
    Some(store)
}

fn shared(store: &PostgresStore) -> WriterShared {
    WriterShared {
        pool: store.pool.clone(),
        names: Arc::clone(&store.names),
        workflows: Arc::clone(&store.workflows),
        notify: Arc::clone(&store.notify),
    }
}

/// Runs `ops` as one group and returns each call's result in order.
async fn group_write(
    store: &PostgresStore,
    ops: Vec<WriteOp>,
    batches_finishes: bool,
) -> Vec<Result<WriteValue, StoreError>> {
    let mut group = Vec::new();
    let mut receivers = Vec::new();
    for op in ops {
        let (reply, receiver) = oneshot::channel();
        group.push(Request {
            op,
            reply,
            retries: 0,
        });
        receivers.push(receiver);
    }
    let retry = group_run_with(&shared(store), group, batches_finishes).await;
    assert!(retry.is_empty(), "no call of a test group runs again");
    let mut results = Vec::new();
    for receiver in receivers {
        results.push(receiver.await.expect("every call gets a reply"));
    }
    results
}

fn job_new(depends_on: Vec<JobRef>) -> JobNew {
    JobNew {
        workflow_id: "summarize".to_owned(),
        workflow_version: "1.0.0".to_owned(),
        input: json!({ "text": "hello" }),
        priority: Priority::Medium,
        tags: Vec::new(),
        metadata: json!({}),
        depends_on,
        on_dependency_failure: DependencyFailure::Fail,
        run_at: None,
        timeout_ms: None,
        idempotency_key: None,
        created_at: T0,
    }
}

/// Builds a whole attempt of `step_id` that ends as `state` and leaves its step run in
/// `step_state`.
fn record(lease: &Lease, step_id: &str, number: u32, state: AttemptState) -> AttemptRecord {
    let (step_state, output, error) = match state {
        AttemptState::Succeeded => (StepState::Completed, Some(json!({ "n": number })), None),
        _ => (
            StepState::Retrying,
            None,
            Some(format!("try {number} failed")),
        ),
    };
    let now = T0 + 10 + i64::from(number);
    AttemptRecord {
        start: AttemptStart {
            lease: lease.clone(),
            worker_id: "worker-1".to_owned(),
            step_id: step_id.to_owned(),
            item: None,
            number,
            now,
        },
        finish: AttemptFinish {
            lease: lease.clone(),
            attempt_id: 0,
            step_id: step_id.to_owned(),
            item: None,
            state,
            step_state,
            output,
            error,
            next_attempt_at: None,
            log: format!("log of try {number}"),
            prompt_tokens: 3,
            completion_tokens: 2,
            now,
        },
    }
}

fn finish(lease: &Lease, attempts: Vec<AttemptRecord>, outcome: JobOutcome) -> WriteOp {
    WriteOp::JobFinish(JobFinish {
        lease: lease.clone(),
        attempts,
        outcome,
        now: T0 + 100,
    })
}

/// The stored jobs of a scenario, in insert order: `workers` are claimed, `waiting` depend on
/// some of them.
struct Scenario {
    workers: Vec<Lease>,
    waiting: Vec<String>,
}

/// Inserts `workers` jobs and claims them, then inserts four jobs that wait for some of them:
/// one for job 4, one for job 5, one for jobs 4 and 5, and one for the second waiting job.
async fn scenario_new(store: &PostgresStore, workers: usize) -> Scenario {
    let jobs = (0..workers).map(|_| job_new(Vec::new())).collect();
    let ids = store.job_insert_many(jobs, None).await.unwrap();
    let claim = ClaimParams {
        worker_id: "worker-1".to_owned(),
        limit: 100,
        now: T0 + 1,
        lease_ms: 30_000,
        job_ids: Vec::new(),
    };
    let claimed = store.job_claim(claim).await.unwrap();
    assert_eq!(claimed.len(), workers, "every job is claimed");
    let mut leases: Vec<Lease> = claimed.into_iter().map(|job| job.lease).collect();
    leases.sort_by_key(|lease| ids.iter().position(|id| *id == lease.job_id));

    let mut waiting = Vec::new();
    if workers >= 6 {
        let on = |index: usize| JobRef::Id(ids[index].clone());
        let jobs = vec![
            job_new(vec![on(4)]),
            job_new(vec![on(5)]),
            job_new(vec![on(4), on(5)]),
            job_new(vec![JobRef::Index(1)]),
        ];
        waiting = store.job_insert_many(jobs, None).await.unwrap();
    }
    Scenario {
        workers: leases,
        waiting,
    }
}

/// Builds a group with every case a batch meets. It has attempt records (a retried step among
/// them), both outcomes, a lost lease with an attempt record, and dependents that are queued, fail or wait. It also has
/// a finish that cannot join a batch, a second finish of one job, and a claim at the end.
fn mixed_group(scenario: &Scenario) -> Vec<WriteOp> {
    let lease = |index: usize| &scenario.workers[index];
    let stale = Lease {
        token: lease(3).token + 1,
        ..lease(3).clone()
    };
    let retried = vec![
        record(lease(0), "a", 1, AttemptState::Failed),
        record(lease(0), "a", 2, AttemptState::Succeeded),
        record(lease(0), "b", 1, AttemptState::Succeeded),
    ];
    let failed = vec![record(lease(2), "a", 1, AttemptState::Failed)];
    vec![
        finish(lease(0), retried, JobOutcome::Completed(json!({ "r": 0 }))),
        finish(
            lease(1),
            Vec::new(),
            JobOutcome::Completed(json!({ "r": 1 })),
        ),
        finish(
            lease(2),
            failed,
            JobOutcome::Failed("step a failed".to_owned()),
        ),
        finish(
            &stale,
            vec![record(&stale, "a", 1, AttemptState::Succeeded)],
            JobOutcome::Completed(json!({ "r": 3 })),
        ),
        finish(
            lease(4),
            Vec::new(),
            JobOutcome::Completed(json!({ "r": 4 })),
        ),
        finish(
            lease(5),
            Vec::new(),
            JobOutcome::Failed("bad input".to_owned()),
        ),
        finish(lease(6), Vec::new(), JobOutcome::Cancelled),
        finish(
            lease(7),
            Vec::new(),
            JobOutcome::Completed(json!({ "r": 7 })),
        ),
        finish(
            lease(7),
            Vec::new(),
            JobOutcome::Completed(json!({ "r": 7 })),
        ),
        WriteOp::Claim(ClaimParams {
            worker_id: "worker-2".to_owned(),
            limit: 10,
            now: T0 + 200,
            lease_ms: 30_000,
            job_ids: Vec::new(),
        }),
    ]
}

/// Describes a call's result as text, with job ids replaced by their names.
fn result_text(result: &Result<WriteValue, StoreError>, names: &[(String, String)]) -> String {
    let text = match result {
        Ok(WriteValue::Done) => "done".to_owned(),
        Ok(WriteValue::Claimed(jobs)) => {
            let ids: Vec<&str> = jobs.iter().map(|job| job.job.id.as_str()).collect();
            format!("claimed {ids:?}")
        }
        Ok(_) => "another value".to_owned(),
        Err(error) => format!("error: {error}"),
    };
    names_replace(text, names)
}

fn names_replace(mut text: String, names: &[(String, String)]) -> String {
    for (id, name) in names {
        text = text.replace(id.as_str(), name);
    }
    text
}

/// Reads everything a group can change, as text with job ids replaced by their names: every
/// job with its step runs and attempts, the counters and every event.
async fn store_text(store: &PostgresStore, names: &[(String, String)]) -> Vec<String> {
    let mut lines = Vec::new();
    for (id, name) in names {
        let job = store.job_get(id).await.unwrap().expect("the job exists");
        let steps = store.step_run_list(id).await.unwrap();
        let attempts = store.attempt_list(id).await.unwrap();
        lines.push(format!("{name} job {}", json!(job)));
        lines.push(format!("{name} steps {}", json!(steps)));
        lines.push(format!("{name} attempts {}", json!(attempts)));
    }
    lines.push(format!("counts {:?}", store.job_counts().await.unwrap()));
    for event in store.event_list(EventFilter::default()).await.unwrap() {
        lines.push(format!("event {}", json!(event)));
    }
    lines
        .into_iter()
        .map(|line| names_replace(line, names))
        .collect()
}

fn scenario_names(scenario: &Scenario) -> Vec<(String, String)> {
    let workers = scenario.workers.iter().enumerate();
    let waiting = scenario.waiting.iter().enumerate();
    workers
        .map(|(index, lease)| (lease.job_id.clone(), format!("job-{index}")))
        .chain(waiting.map(|(index, id)| (id.clone(), format!("waiting-{index}"))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_batch_matches_calls_alone() {
    let (Some(batched), Some(alone)) = (store_new().await, store_new().await) else {
        return;
    };
    let mut texts = Vec::new();
    for (store, batches_finishes) in [(&batched, true), (&alone, false)] {
        let scenario = scenario_new(store, 8).await;
        let names = scenario_names(&scenario);
        let results = group_write(store, mixed_group(&scenario), batches_finishes).await;
        let results: Vec<String> = results.iter().map(|r| result_text(r, &names)).collect();
        texts.push((results, store_text(store, &names).await));
    }

    let (batched_results, batched_rows) = &texts[0];
    let (alone_results, alone_rows) = &texts[1];
    assert_eq!(batched_results, alone_results);
    for (batched_row, alone_row) in batched_rows.iter().zip(alone_rows) {
        assert_eq!(batched_row, alone_row);
    }
    assert_eq!(batched_rows.len(), alone_rows.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_batch_mixed_group_outcomes() {
    let Some(store) = store_new().await else {
        return;
    };
    let scenario = scenario_new(&store, 8).await;
    let names = scenario_names(&scenario);
    let results = group_write(&store, mixed_group(&scenario), true).await;
    let results: Vec<String> = results.iter().map(|r| result_text(r, &names)).collect();

    for index in [0, 1, 2, 4, 5, 6, 7] {
        assert_eq!(results[index], "done", "call {index}");
    }
    assert!(results[3].contains("lease"), "{}", results[3]);
    assert!(results[8].contains("lease"), "{}", results[8]);
    assert_eq!(results[9], r#"claimed ["waiting-0"]"#);

    let state = |id: String| {
        let store = &store;
        async move { store.job_get(&id).await.unwrap().unwrap().state }
    };
    let workers = &scenario.workers;
    let waiting = &scenario.waiting;
    assert_eq!(state(workers[0].job_id.clone()).await, JobState::Completed);
    assert_eq!(state(workers[2].job_id.clone()).await, JobState::Failed);
    assert_eq!(state(workers[3].job_id.clone()).await, JobState::Running);
    assert_eq!(state(workers[6].job_id.clone()).await, JobState::Cancelled);
    assert_eq!(state(waiting[0].clone()).await, JobState::Running);
    assert_eq!(state(waiting[1].clone()).await, JobState::Failed);
    assert_eq!(state(waiting[2].clone()).await, JobState::Failed);
    assert_eq!(state(waiting[3].clone()).await, JobState::Failed);

    let job = store.job_get(&workers[0].job_id).await.unwrap().unwrap();
    assert_eq!(job.prompt_tokens, 9);
    assert_eq!(job.completion_tokens, 6);
    let attempts = store.attempt_list(&workers[0].job_id).await.unwrap();
    let numbers: Vec<(&str, u32)> = attempts
        .iter()
        .map(|attempt| (attempt.step_id.as_str(), attempt.number))
        .collect();
    assert_eq!(numbers, [("a", 1), ("a", 2), ("b", 1)]);
    let steps = store.step_run_list(&workers[0].job_id).await.unwrap();
    assert_eq!(steps[0].state, StepState::Completed);
    assert_eq!(steps[0].attempts, 2);
    assert_eq!(
        store.attempt_list(&workers[3].job_id).await.unwrap().len(),
        0
    );
    assert_eq!(
        store.step_run_list(&workers[3].job_id).await.unwrap().len(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_batch_runs_without_falling_back() {
    let Some(store) = store_new().await else {
        return;
    };
    let scenario = scenario_new(&store, 8).await;
    let finishes: Vec<JobFinish> = mixed_group(&scenario)
        .into_iter()
        .take(6)
        .map(|op| match op {
            WriteOp::JobFinish(finish) => finish,
            _ => unreachable!("the group starts with six finishes"),
        })
        .collect();
    let finishes: Vec<&JobFinish> = finishes.iter().collect();

    let mut client = store.pool.get().await.unwrap();
    let transaction = client.transaction().await.unwrap();
    let mut tx = PgTx::new(&transaction);
    let results = job_finish_many(&mut tx, &finishes)
        .await
        .expect("the batch runs without a database error");
    let is_ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(is_ok, [true, true, true, false, true, true]);
    assert!(matches!(results[3], Err(StoreError::LeaseLost { .. })));
    tx.finish(&store.names).await.unwrap();
    transaction.commit().await.unwrap();

    let job = store.job_get(&scenario.waiting[0]).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_batch_error_stays_with_its_call() {
    let Some(store) = store_new().await else {
        return;
    };
    let scenario = scenario_new(&store, 3).await;
    let lease = |index: usize| &scenario.workers[index];
    // PostgreSQL rejects a NUL character in text, so this call fails in the batch and alone.
    let mut bad = record(lease(1), "a", 1, AttemptState::Succeeded);
    bad.finish.log = "nul \u{0} here".to_owned();
    let good = |index: usize| vec![record(lease(index), "a", 1, AttemptState::Succeeded)];
    let ops = vec![
        finish(lease(0), good(0), JobOutcome::Completed(json!(0))),
        finish(lease(1), vec![bad], JobOutcome::Completed(json!(1))),
        finish(lease(2), good(2), JobOutcome::Completed(json!(2))),
    ];
    let results = group_write(&store, ops, true).await;

    assert!(results[0].is_ok());
    assert!(
        matches!(results[1], Err(StoreError::TextInvalid(_))),
        "{:?}",
        results[1].as_ref().err()
    );
    assert!(results[2].is_ok());
    let job = |index: usize| {
        let store = &store;
        let id = lease(index).job_id.clone();
        async move { store.job_get(&id).await.unwrap().unwrap() }
    };
    assert_eq!(job(0).await.state, JobState::Completed);
    assert_eq!(job(1).await.state, JobState::Running);
    assert_eq!(job(2).await.state, JobState::Completed);
    assert_eq!(store.attempt_list(&lease(1).job_id).await.unwrap().len(), 0);
    let counts = store.job_counts().await.unwrap();
    assert_eq!(counts[&JobState::Completed], 2);
    assert_eq!(counts[&JobState::Running], 1);
    let events: Vec<Value> = store
        .event_list(EventFilter::default())
        .await
        .unwrap()
        .iter()
        .filter(|event| event.job_id.as_deref() == Some(lease(1).job_id.as_str()))
        .map(|event| json!(event.kind))
        .collect();
    assert_eq!(events, [json!("job.created"), json!("job.running")]);
}

/// Waits until the session with process id `pid` holds back another session with a lock.
async fn lock_wait_seen(store: &PostgresStore, pid: i32) {
    let client = store.pool.get().await.unwrap();
    loop {
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                &[&pid],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A claim runs in a writer of its own, so it does not wait for a finish that waits for a row
/// lock. In the shared writer, the claim would wait until that finish's group had run its calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_passes_blocked_finish() {
    let Some(store) = store_new().await else {
        return;
    };
    let store = Arc::new(store);
    let scenario = scenario_new(&store, 1).await;
    let lease = scenario.workers[0].clone();
    let queued = store
        .job_insert_many(vec![job_new(Vec::new())], None)
        .await
        .unwrap();

    // Another session locks the running job's row until it rolls back.
    let mut blocker = store.pool.get().await.unwrap();
    let blocker = blocker.transaction().await.unwrap();
    let pid: i32 = blocker
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    blocker
        .execute(
            "SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE",
            &[&lease.job_id],
        )
        .await
        .unwrap();
    let finishing = tokio::spawn({
        let store = Arc::clone(&store);
        let done = JobFinish {
            lease: lease.clone(),
            attempts: Vec::new(),
            outcome: JobOutcome::Completed(json!(null)),
            now: T0 + 100,
        };
        async move { store.job_finish(done).await }
    });
    lock_wait_seen(&store, pid).await;

    let claim = ClaimParams {
        worker_id: "worker-2".to_owned(),
        limit: 10,
        now: T0 + 200,
        lease_ms: 30_000,
        job_ids: Vec::new(),
    };
    // A bound on the wait, so that the test fails instead of hanging when the claim waits.
    let claimed = tokio::time::timeout(Duration::from_secs(30), store.job_claim(claim))
        .await
        .expect("the claim does not wait for the finish's group")
        .unwrap();
    let ids: Vec<&str> = claimed.iter().map(|job| job.job.id.as_str()).collect();
    assert_eq!(ids, [queued[0].as_str()]);
    assert!(
        !finishing.is_finished(),
        "the finish still waits for the lock"
    );

    blocker.rollback().await.unwrap();
    finishing.await.unwrap().unwrap();
    let job = store.job_get(&lease.job_id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Completed);
}

/// The commit goes out with the counters and events of a group. When one of those statements
/// fails, PostgreSQL rolls the whole group back at the commit, and every call gets the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_event_insert_rolls_back_group() {
    let Some(store) = store_new().await else {
        return;
    };
    let scenario = scenario_new(&store, 2).await;
    let lease = |index: usize| &scenario.workers[index];
    let refused = &lease(1).job_id;
    let client = store.pool.get().await.unwrap();
    let refuse = format!(
        "CREATE FUNCTION events_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.kind = 'job.completed' AND NEW.job_id = '{refused}' THEN
                RAISE EXCEPTION 'event refused by the test';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER events_refuse BEFORE INSERT ON events
            FOR EACH ROW EXECUTE FUNCTION events_refuse()"
    );
    client.batch_execute(&refuse).await.unwrap();
    let counts_before = store.job_counts().await.unwrap();

    let ops = vec![
        finish(lease(0), Vec::new(), JobOutcome::Completed(json!(0))),
        finish(lease(1), Vec::new(), JobOutcome::Completed(json!(1))),
    ];
    let results = group_write(&store, ops, true).await;
    for result in &results {
        let Err(StoreError::Database(message)) = result else {
            panic!("every call of the group gets the database error");
        };
        assert!(message.contains("event refused by the test"), "{message}");
    }
    for index in 0..2 {
        let job = store.job_get(&lease(index).job_id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Running, "job {index} is still running");
    }
    assert_eq!(store.job_counts().await.unwrap(), counts_before);

    client
        .batch_execute("DROP TRIGGER events_refuse ON events")
        .await
        .unwrap();
    let ops = vec![finish(
        lease(1),
        Vec::new(),
        JobOutcome::Completed(json!(1)),
    )];
    let results = group_write(&store, ops, true).await;
    assert!(results[0].is_ok(), "the next group commits");
    let job = store.job_get(refused).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Completed);
}
