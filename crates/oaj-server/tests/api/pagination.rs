//! Cursor pagination stays exact while jobs are created and finish.

use std::collections::HashSet;

use serde_json::json;

use crate::support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_stable_while_jobs_change() {
    let server = TestServer::start().await;
    server.greet_register().await;
    let mut before = Vec::new();
    for index in 0..30 {
        let id = server
            .job_create(json!({"workflow_id": "greet", "input": {"name": format!("n{index}")}}))
            .await;
        before.push(id);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/jobs?sort=created_asc&limit=7".to_owned();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        for job in page["jobs"].as_array().unwrap() {
            seen.push(job["id"].as_str().unwrap().to_owned());
        }
        // New jobs arrive, and the engine finishes others, between pages.
        server
            .job_create(json!({"workflow_id": "greet", "input": {"name": "late"}}))
            .await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a job was listed twice");
    for id in &before {
        assert!(unique.contains(id), "job {id} was skipped");
    }
    server.stop().await;
}

#[tokio::test]
async fn job_list_filters() {
    let server = TestServer::start_with(crate::support::Options {
        without_workers: true,
        ..Default::default()
    })
    .await;
    server.greet_register().await;
    let low = json!({"workflow_id": "greet", "input": {"name": "a"}, "priority": "low", "tags": ["x", "y"]});
    let high =
        json!({"workflow_id": "greet", "input": {"name": "b"}, "priority": "high", "tags": ["x"]});
    let low_id = server.job_create(low).await;
    let high_id = server.job_create(high).await;
    let (_, page) = server.get("/v1/jobs?tags=x,y").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(page["jobs"][0]["id"], low_id.as_str());
    let (_, page) = server.get("/v1/jobs?priority=high").await;
    assert_eq!(page["jobs"][0]["id"], high_id.as_str());
    let (_, page) = server.get("/v1/jobs?sort=priority_desc").await;
    assert_eq!(page["jobs"][0]["id"], high_id.as_str());
    let (_, page) = server.get("/v1/jobs?state=completed").await;
    assert!(page["jobs"].as_array().unwrap().is_empty());
    let (status, _) = server.get("/v1/jobs?cursor=garbage").await;
    assert_eq!(status, 400);
    server.stop().await;
}
