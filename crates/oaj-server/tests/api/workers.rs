//! The worker list: heartbeats of idle engines and the jobs of busy ones.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{nap_workflow, TestServer};

/// Polls the worker list until one worker matches `is_ready`, for at most ten seconds.
async fn worker_wait(server: &TestServer, is_ready: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let (status, workers) = server.get("/v1/workers").await;
        assert_eq!(status, 200, "{workers}");
        if let Some(worker) = workers.as_array().unwrap().iter().find(|w| is_ready(w)) {
            return worker.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no worker in the list matched");
}

#[tokio::test]
async fn idle_worker_is_listed() {
    let server = TestServer::start().await;
    let worker = worker_wait(&server, |_| true).await;
    assert_eq!(worker["pid"], std::process::id());
    assert_eq!(worker["running"], 0);
    assert!(worker["hostname"].is_string());
    assert!(worker["last_seen"].as_i64().unwrap() >= worker["started_at"].as_i64().unwrap());
    assert_eq!(worker["job_ids"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn busy_worker_lists_its_jobs() {
    let server = TestServer::start().await;
    let (status, _) = server.post("/v1/workflows", nap_workflow(3_000)).await;
    assert!(status == 200 || status == 201);
    let id = server.job_create(json!({"workflow_id": "nap"})).await;
    server.job_wait(&id, "running").await;

    let worker = worker_wait(&server, |w| w["job_ids"] == json!([id])).await;
    assert!(worker["lease_expires_at"].is_i64());
    assert!(worker["last_seen"].is_i64());
    server.stop().await;
}
