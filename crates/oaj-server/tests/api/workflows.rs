//! Workflow routes.

use serde_json::json;

use crate::support::{greet_workflow, TestServer};

#[tokio::test]
async fn workflow_register_versions_and_conflict() {
    let server = TestServer::start().await;
    let (status, body) = server.post("/v1/workflows", greet_workflow("1.0.0")).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = server.post("/v1/workflows", greet_workflow("1.0.0")).await;
    assert_eq!(status, 200, "the same document again is not new");
    let (status, _) = server.post("/v1/workflows", greet_workflow("1.1.0")).await;
    assert_eq!(status, 201);

    let mut changed = greet_workflow("1.1.0");
    changed["name"] = json!("renamed");
    let (status, body) = server.post("/v1/workflows", changed).await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "workflow_version_exists");

    let (status, body) = server.get("/v1/workflows/greet").await;
    assert_eq!(status, 200);
    assert_eq!(body["version"], "1.1.0");
    let (_, body) = server.get("/v1/workflows/greet?version=1.0.0").await;
    assert_eq!(body["version"], "1.0.0");
    let (_, body) = server.get("/v1/workflows/greet/versions").await;
    let versions: Vec<_> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["version"].clone())
        .collect();
    assert_eq!(versions, vec![json!("1.1.0"), json!("1.0.0")]);
    server.stop().await;
}

#[tokio::test]
async fn workflow_list_filters_by_tag_and_category() {
    let server = TestServer::start().await;
    server.greet_register().await;
    let (_, all) = server.get("/v1/workflows").await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let (_, tagged) = server.get("/v1/workflows?tag=demo&category=examples").await;
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    let (_, other) = server.get("/v1/workflows?tag=other").await;
    assert!(other.as_array().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn workflow_invalid_and_validate() {
    let server = TestServer::start().await;
    let broken = json!({"id": "bad id!", "steps": []});
    let (status, body) = server.post("/v1/workflows", broken.clone()).await;
    assert_eq!(status, 422);
    assert_eq!(body["code"], "workflow_invalid");
    assert!(body["path"].is_string(), "{body}");

    let (status, body) = server.post("/v1/workflows/validate", broken).await;
    assert_eq!(status, 200);
    assert_eq!(body["valid"], false);
    let (_, body) = server
        .post("/v1/workflows/validate", greet_workflow("1.0.0"))
        .await;
    assert_eq!(body["valid"], true);
    let (status, _) = server.get("/v1/workflows/greet").await;
    assert_eq!(status, 404, "validate stores nothing");
    server.stop().await;
}

#[tokio::test]
async fn workflow_delete_unused_only() {
    let server = TestServer::start_with(crate::support::Options {
        without_workers: true,
        ..Default::default()
    })
    .await;
    server.greet_register().await;
    server.post("/v1/workflows", greet_workflow("2.0.0")).await;
    server
        .job_create(
            json!({"workflow_id": "greet", "workflow_version": "1.0.0", "input": {"name": "a"}}),
        )
        .await;
    let (status, body) = server.delete("/v1/workflows/greet/versions/1.0.0").await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "workflow_in_use");
    let (status, _) = server.delete("/v1/workflows/greet/versions/2.0.0").await;
    assert_eq!(status, 204);
    let (status, _) = server.get("/v1/workflows/greet/versions/2.0.0").await;
    assert_eq!(status, 404);
    let (status, _) = server.delete("/v1/workflows/greet/versions/2.0.0").await;
    assert_eq!(status, 404);
    server.stop().await;
}
