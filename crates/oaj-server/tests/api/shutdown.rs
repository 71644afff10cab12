//! Graceful shutdown hands a running job back, and a restarted server finishes it.

use serde_json::json;

use crate::support::{nap_workflow, Options, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_running_job() {
    let server = TestServer::start().await;
    server.post("/v1/workflows", nap_workflow(1500)).await;
    let id = server.job_create(json!({"workflow_id": "nap"})).await;
    server.job_wait(&id, "running").await;
    let db = server.db_path().to_owned();
    let dir = server.stop().await;

    let restarted = TestServer::start_with(Options {
        db: Some(db),
        ..Default::default()
    })
    .await;
    let (_, job) = restarted.get(&format!("/v1/jobs/{id}")).await;
    assert_ne!(job["state"], "running", "the lease was handed back: {job}");
    restarted.job_wait(&id, "completed").await;
    restarted.stop().await;
    drop(dir);
}
