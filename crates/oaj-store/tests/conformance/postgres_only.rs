//! Behaviour specific to PostgreSQL: several stores, as in several processes, on one schema.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use oaj_core::JobState;
use oaj_store::{EventFilter, JobOutcome, MaintenanceParams, PostgresStore, Store};
use serde_json::json;

use crate::support::*;

fn maintenance_at(now: i64) -> MaintenanceParams {
    MaintenanceParams {
        now,
        interruptions_max: 5,
        retention_ms: None,
        batch_size: 100,
    }
}

/// Connects two stores to one new schema, or returns `None` when the tests run without a server.
async fn two_stores() -> Option<(String, PostgresStore, PostgresStore)> {
    let url = database_url()?;
    let schema = schema_new();
    let first = postgres_connect(&url, &schema).await;
    let second = postgres_connect(&url, &schema).await;
    Some((url, first, second))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_at_once_migrates_once() {
    let Some(url) = database_url() else { return };
    let schema = schema_new();
    let connects = (0..4).map(|_| {
        let (url, schema) = (url.clone(), schema.clone());
        async move { postgres_connect(&url, &schema).await }
    });
    let stores = futures_join_all(connects).await;
    let store: Arc<dyn Store> = Arc::new(stores.into_iter().next().unwrap());
    workflow_setup(&store).await;
    insert(&store, job_new(T0)).await;
    assert_eq!(store.job_counts().await.unwrap()[&JobState::Queued], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnected_store_keeps_everything() {
    let Some(url) = database_url() else { return };
    let schema = schema_new();
    let store: Arc<dyn Store> = Arc::new(postgres_connect(&url, &schema).await);
    workflow_setup(&store).await;
    let id = insert(&store, job_new(T0)).await;
    let claimed = claim_one(&store, T0).await;
    let result = json!({ "n": 1 });
    finish(
        &store,
        &claimed.lease,
        JobOutcome::Completed(result.clone()),
        T0 + 1,
    )
    .await;
    let events_before = store.event_list(EventFilter::default()).await.unwrap();
    drop(store);

    let store: Arc<dyn Store> = Arc::new(postgres_connect(&url, &schema).await);
    let completed = job(&store, &id).await;
    assert_eq!(completed.state, JobState::Completed);
    assert_eq!(completed.result, Some(result));
    assert_eq!(
        store.event_list(EventFilter::default()).await.unwrap(),
        events_before
    );
    assert_eq!(store.job_counts().await.unwrap()[&JobState::Completed], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_from_two_stores_never_overlap() {
    let Some((_, first, second)) = two_stores().await else {
        return;
    };
    let first: Arc<dyn Store> = Arc::new(first);
    let second: Arc<dyn Store> = Arc::new(second);
    workflow_setup(&first).await;
    let jobs = (0..60).map(|n| job_new(T0 + n)).collect();
    first.job_insert_many(jobs, None).await.unwrap();

    let mut tasks = Vec::new();
    for (index, store) in [first.clone(), second.clone(), first.clone(), second]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let worker = format!("worker-{index}");
            let mut ids = Vec::new();
            loop {
                let claimed = claim(&store, &worker, 3, T0 + 100).await;
                if claimed.is_empty() {
                    return ids;
                }
                ids.extend(claimed.into_iter().map(|c| c.job.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 60, "every job is claimed");
    assert_eq!(unique.len(), 60, "no job is claimed twice");
    assert_eq!(first.job_counts().await.unwrap()[&JobState::Running], 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_two_stores_arrive_in_seq_order() {
    let Some((_, first, second)) = two_stores().await else {
        return;
    };
    let first: Arc<dyn Store> = Arc::new(first);
    let second: Arc<dyn Store> = Arc::new(second);
    workflow_setup(&first).await;
    let mut subscriber = first.event_subscribe();

    let mut tasks = Vec::new();
    for store in [first.clone(), second.clone()] {
        tasks.push(tokio::spawn(async move {
            for n in 0..20 {
                insert(&store, job_new(T0 + n)).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 40 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), subscriber.recv())
            .await
            .expect("every committed event is published")
            .unwrap();
        seen.push(event.seq);
    }
    assert!(seen.windows(2).all(|pair| pair[0] < pair[1]), "{seen:?}");
    let stored: Vec<i64> = first
        .event_list(EventFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|event| event.seq)
        .collect();
    assert_eq!(seen, stored, "the subscriber saw exactly the stored events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_notify_wakes_other_store() {
    let Some((_, first, second)) = two_stores().await else {
        return;
    };
    let first: Arc<dyn Store> = Arc::new(first);
    workflow_setup(&first).await;
    let notify = second.work_notify();
    let woken = notify.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    insert(&first, job_new(T0)).await;
    tokio::time::timeout(std::time::Duration::from_secs(5), woken)
        .await
        .expect("a job queued by another process wakes this one's workers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_runs_on_one_leader() {
    let Some((_, first, second)) = two_stores().await else {
        return;
    };
    assert!(first.is_maintenance_leader().await.unwrap());
    assert!(!second.is_maintenance_leader().await.unwrap());

    let first: Arc<dyn Store> = Arc::new(first);
    workflow_setup(&first).await;
    let id = insert(&first, job_new(T0)).await;
    claim_one(&first, T0).await;
    let expired = T0 + LEASE_MS + 1;
    let skipped = second.maintenance(maintenance_at(expired)).await.unwrap();
    assert_eq!(
        skipped.rescued, 0,
        "a store that does not lead skips the pass"
    );
    assert_eq!(job(&first, &id).await.state, JobState::Running);
    let report = first.maintenance(maintenance_at(expired)).await.unwrap();
    assert_eq!(report.rescued, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_lead_passes_when_leader_drops() {
    let Some((_, first, second)) = two_stores().await else {
        return;
    };
    assert!(first.is_maintenance_leader().await.unwrap());
    assert!(!second.is_maintenance_leader().await.unwrap());
    drop(first);

    let mut is_leader = false;
    for _ in 0..50 {
        is_leader = second.is_maintenance_leader().await.unwrap();
        if is_leader {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        is_leader,
        "the second store takes the lead once the first is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_lead_passes_when_connection_killed() {
    let Some((url, first, second)) = two_stores().await else {
        return;
    };
    assert!(first.is_maintenance_leader().await.unwrap());
    assert!(!second.is_maintenance_leader().await.unwrap());

    // Kill the leader's session on the server, as a crash or network cut would end it.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let killed = client
        .query_one(
            "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
             AND l.objid::bigint = (hashtext($1)::bigint & 4294967295)
             AND l.classid::bigint = $2",
            &[&first.schema(), &0x6f61_6a03_i64],
        )
        .await
        .unwrap();
    assert_eq!(killed.get::<_, i64>(0), 1, "one session holds the lead");

    let mut is_leader = false;
    for _ in 0..50 {
        is_leader = second.is_maintenance_leader().await.unwrap();
        if is_leader {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        is_leader,
        "the second store takes the lead from the killed session"
    );
    assert!(
        !first.is_maintenance_leader().await.unwrap(),
        "the first store notices it lost the lead"
    );
}

/// Reads events from the last sequence number seen, as a client resuming with Last-Event-ID
/// does, until `is_done` is set and a read returns nothing.
async fn events_follow(store: Arc<dyn Store>, is_done: Arc<AtomicBool>) -> Vec<i64> {
    let mut seqs = Vec::new();
    let mut after_seq = 0;
    loop {
        let is_last_read = is_done.load(Ordering::SeqCst);
        let filter = EventFilter {
            job_id: None,
            after_seq,
            limit: 1000,
        };
        let events = store.event_list(filter).await.unwrap();
        if let Some(last) = events.last() {
            after_seq = last.seq;
        }
        seqs.extend(events.iter().map(|event| event.seq));
        if is_last_read && events.is_empty() {
            return seqs;
        }
        tokio::task::yield_now().await;
    }
}

/// Runs one job through an attempt and its completion.
async fn job_complete(store: Arc<dyn Store>, lease: oaj_store::Lease) {
    let start = attempt_start(&lease, "s1", T0 + 1);
    let attempt = attempt_success(&lease, 0, "s1", T0 + 2);
    store.attempt_record(start, attempt).await.unwrap();
    finish(
        &store,
        &lease,
        JobOutcome::Completed(json!({ "n": 1 })),
        T0 + 3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_follower_misses_none() {
    const JOBS_EACH: u32 = 30;
    let Some((_url, first, second)) = two_stores().await else {
        return;
    };
    let first: Arc<dyn Store> = Arc::new(first);
    let second: Arc<dyn Store> = Arc::new(second);
    workflow_setup(&first).await;
    for _ in 0..JOBS_EACH * 2 {
        insert(&first, job_new(T0)).await;
    }
    let is_done = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(events_follow(Arc::clone(&first), Arc::clone(&is_done)));

    let mut writes = Vec::new();
    for store in [&first, &second] {
        for job in claim(store, "worker-1", JOBS_EACH, T0).await {
            writes.push(job_complete(Arc::clone(store), job.lease));
        }
    }
    futures_join_all(writes.into_iter()).await;
    is_done.store(true, Ordering::SeqCst);
    let seqs_read = reader.await.expect("the reader does not panic");

    let all = EventFilter {
        job_id: None,
        after_seq: 0,
        limit: 10_000,
    };
    let seqs_stored: Vec<i64> = first
        .event_list(all)
        .await
        .unwrap()
        .iter()
        .map(|event| event.seq)
        .collect();
    // Each job has a job.queued, a job.running, two attempt events and a job.completed.
    assert_eq!(seqs_stored.len(), (JOBS_EACH * 2 * 5) as usize);
    assert_eq!(seqs_read, seqs_stored, "the reader missed no event");
}

/// Awaits every future, concurrently.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.expect("the task does not panic"));
    }
    outputs
}

/// Regression: with statistics that counted no queued job, PostgreSQL sorted the whole queue on
/// every claim instead of reading jobs_queued in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_reads_queue_index_in_order() {
    let Some(url) = database_url() else { return };
    let schema = schema_new();
    let store: Arc<dyn Store> = Arc::new(postgres_connect(&url, &schema).await);
    workflow_setup(&store).await;
    for i in 0..50 {
        insert(&store, job_new(T0 + i)).await;
    }

    let (client, mut notices) = client_with_notices(&url).await;
    // Statistics taken while every job looked finished, then the jobs queued again: the
    // planner now expects almost no queued job among many.
    let stale_statistics = format!(
        "SET search_path = {schema};
         UPDATE jobs SET state = 'completed';
         ANALYZE jobs;
         UPDATE jobs SET state = 'queued';"
    );
    client.batch_execute(&stale_statistics).await.unwrap();
    // auto_explain sends the plan of the statement inside the function to this client as a LOG
    // message. LOAD needs a superuser, as on the throwaway test cluster.
    client
        .batch_execute(
            "BEGIN;
             LOAD 'auto_explain';
             SET LOCAL auto_explain.log_min_duration = 0;
             SET LOCAL auto_explain.log_nested_statements = on;
             SET LOCAL client_min_messages = log;
             SELECT * FROM job_claim_queued(5);
             ROLLBACK;",
        )
        .await
        .expect(
            "LOAD 'auto_explain' failed: this test needs a superuser and the auto_explain library",
        );
    // A query after the ROLLBACK, so that every message sent before it has been read.
    client.batch_execute("SELECT 1").await.unwrap();

    let mut plans = Vec::new();
    while let Ok(notice) = notices.try_recv() {
        plans.push(notice);
    }
    let plan = plans
        .iter()
        .find(|plan| plan.contains("FROM jobs j"))
        .unwrap_or_else(|| panic!("no plan of the claim's SELECT among {plans:#?}"));
    assert!(plan.contains("Index Scan using jobs_queued"), "{plan}");
    assert!(!plan.contains("Sort"), "{plan}");
    assert!(!plan.contains("Bitmap"), "{plan}");
}

/// Connects a plain client and forwards the text of each notice or log message it receives.
async fn client_with_notices(
    url: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notice(notice)) => {
                    // Sending fails only once the test has dropped the receiver.
                    let _ = sender.send(notice.message().to_owned());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    (client, receiver)
}
