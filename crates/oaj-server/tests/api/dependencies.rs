//! Dependency routes: add, remove, list dependents, and their errors.

use serde_json::json;

use crate::support::{Options, TestServer};

/// Starts a server without workers, so that queued jobs stay queued.
async fn idle_server() -> TestServer {
    let server = TestServer::start_with(Options {
        without_workers: true,
        ..Default::default()
    })
    .await;
    server.greet_register().await;
    server
}

async fn greet_job(server: &TestServer) -> String {
    server
        .job_create(json!({"workflow_id": "greet", "input": {"name": "Ada"}}))
        .await
}

#[tokio::test]
async fn dependency_add_then_remove() {
    let server = idle_server().await;
    let first = greet_job(&server).await;
    let second = greet_job(&server).await;

    let path = format!("/v1/jobs/{second}/dependencies");
    let (status, job) = server.post(&path, json!({"depends_on": first})).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["state"], "pending");
    assert_eq!(job["depends_on"], json!([first]));

    let (status, dependents) = server.get(&format!("/v1/jobs/{first}/dependents")).await;
    assert_eq!(status, 200, "{dependents}");
    assert_eq!(dependents.as_array().unwrap().len(), 1);
    assert_eq!(dependents[0]["id"], second);

    let (status, job) = server.delete(&format!("{path}/{first}")).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["depends_on"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn dependency_cycle_is_conflict() {
    let server = idle_server().await;
    let first = greet_job(&server).await;
    let second = greet_job(&server).await;
    let (status, _) = server
        .post(
            &format!("/v1/jobs/{second}/dependencies"),
            json!({"depends_on": first}),
        )
        .await;
    assert_eq!(status, 200);

    let (status, body) = server
        .post(
            &format!("/v1/jobs/{first}/dependencies"),
            json!({"depends_on": second}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "dependency_cycle");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{first} -> {second} -> {first}")),
        "{message}"
    );

    let (status, body) = server
        .post(
            &format!("/v1/jobs/{first}/dependencies"),
            json!({"depends_on": first}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "dependency_cycle");
    server.stop().await;
}

#[tokio::test]
async fn dependency_add_on_ended_job_is_conflict() {
    let server = TestServer::start().await;
    server.greet_register().await;
    let done = greet_job(&server).await;
    server.job_wait(&done, "completed").await;
    let other = greet_job(&server).await;

    let (status, body) = server
        .post(
            &format!("/v1/jobs/{done}/dependencies"),
            json!({"depends_on": other}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "job_state_conflict");
    server.stop().await;
}

#[tokio::test]
async fn dependency_errors_name_missing_ids() {
    let server = idle_server().await;
    let job = greet_job(&server).await;
    let other = greet_job(&server).await;

    let path = format!("/v1/jobs/{job}/dependencies");
    let (status, body) = server.post(&path, json!({"depends_on": "nope"})).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "job_not_found");
    assert_eq!(body["path"], "/depends_on");

    let (status, body) = server
        .post("/v1/jobs/nope/dependencies", json!({"depends_on": job}))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "job_not_found");

    let (status, body) = server.post(&path, json!({"job": other})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "body_invalid");

    let (status, body) = server.delete(&format!("{path}/{other}")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "dependency_not_found");

    let (status, body) = server.get("/v1/jobs/nope/dependents").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "job_not_found");
    server.stop().await;
}
