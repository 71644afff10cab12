//! The Server-Sent Events stream and its resume.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::TestServer;

/// Reads SSE frames until `count` events arrived; returns (id, data) pairs.
async fn read_events(response: reqwest::Response, count: usize) -> Vec<(i64, Value)> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within ten seconds")
            .expect("the stream stays open")
            .expect("a chunk");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(value) = line.strip_prefix("id: ") {
                    id = value.parse().ok();
                }
                if let Some(value) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(value).ok();
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id, data));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_resume_after_dropped_connection() {
    let server = TestServer::start().await;
    server.greet_register().await;
    let first = server
        .job_create(json!({"workflow_id": "greet", "input": {"name": "a"}}))
        .await;
    server.job_wait(&first, "completed").await;

    let response = server
        .client
        .get(server.url("/v1/events?after=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = read_events(response, 2).await;
    let last_id = received[1].0;
    // The connection drops here; more happens while the client is away.
    let second = server
        .job_create(json!({"workflow_id": "greet", "input": {"name": "b"}}))
        .await;
    server.job_wait(&second, "completed").await;

    let (_, all) = server.get("/v1/jobs").await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 2);
    let response = server
        .client
        .get(server.url("/v1/events"))
        .header("Last-Event-ID", last_id.to_string())
        .send()
        .await
        .unwrap();
    let (_, stored) = server.get(&format!("/v1/jobs/{first}/events")).await;
    let (_, stored_second) = server.get(&format!("/v1/jobs/{second}/events")).await;
    let expected =
        stored.as_array().unwrap().len() + stored_second.as_array().unwrap().len() - received.len();
    let resumed = read_events(response, expected).await;
    let ids: Vec<i64> = resumed.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids[0], last_id + 1, "resume starts right after the last id");
    assert!(
        ids.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "in order, no gap: {ids:?}"
    );
    assert_eq!(resumed.last().unwrap().1["kind"], "job.completed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_live_filtered_by_job_and_kind() {
    let server = TestServer::start().await;
    server.greet_register().await;
    let other = server
        .job_create(json!({"workflow_id": "greet", "input": {"name": "x"}}))
        .await;
    server.job_wait(&other, "completed").await;
    let response = server
        .client
        .get(server.url("/v1/events?kind=job.&workflow=greet"))
        .send()
        .await
        .unwrap();
    let id = server
        .job_create(json!({"workflow_id": "greet", "input": {"name": "y"}}))
        .await;
    let events = read_events(response, 3).await;
    for (_, event) in &events {
        assert_eq!(event["job_id"], id.as_str(), "only new events: {event}");
        assert!(event["kind"].as_str().unwrap().starts_with("job."));
    }
    let (status, _) = server.get("/v1/events?after=abc").await;
    assert_eq!(status, 400);
    server.stop().await;
}
