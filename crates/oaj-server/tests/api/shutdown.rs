//! Graceful shutdown hands a running job back, and a restarted server finishes it.

use oaj_store::Store;
use serde_json::json;

use crate::support::{Options, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_running_job() {
    let server = TestServer::start().await;
    // The first step is running at shutdown and finishes within the grace period; the second
    // is left for the restarted server.
    let workflow = json!({
        "id": "two-naps",
        "steps": [
            {"id": "first", "component": "sleep", "inputs": {"ms": 500}},
            {"id": "second", "component": "sleep", "inputs": {"ms": 10}, "depends_on": ["first"]}
        ]
    });
    server.post("/v1/workflows", workflow).await;
    let id = server.job_create(json!({"workflow_id": "two-naps"})).await;
    server.job_wait(&id, "running").await;
    let db = server.db_path().to_owned();
    let dir = server.stop().await;

    // Read the file between the two servers: the restarted one may claim the job at once.
    let store = oaj_store::SqliteStore::open(&db).expect("open the database");
    let job = store
        .job_get(&id)
        .await
        .expect("read the job")
        .expect("job exists");
    assert_eq!(
        job.state,
        oaj_core::JobState::Queued,
        "the lease was handed back"
    );
    drop(store);

    let restarted = TestServer::start_with(Options {
        db: Some(db),
        ..Default::default()
    })
    .await;
    restarted.job_wait(&id, "completed").await;
    restarted.stop().await;
    drop(dir);
}
