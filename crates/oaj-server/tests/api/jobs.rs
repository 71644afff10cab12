//! Job routes: create, idempotency, reads, actions and errors.

use serde_json::json;

use crate::support::{nap_workflow, postgres_url, Options, TestServer};

#[tokio::test]
async fn job_runs_to_result_with_steps_and_events() {
    let server = TestServer::start().await;
    server.greet_register().await;
    let id = server
        .job_create(json!({"workflow_id": "greet", "input": {"name": "Ada"}, "tags": ["t"]}))
        .await;
    server.job_wait(&id, "completed").await;

    let (status, body) = server.get(&format!("/v1/jobs/{id}/result")).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["say"]["name"], "Ada");
    let (_, steps) = server.get(&format!("/v1/jobs/{id}/steps")).await;
    assert_eq!(steps[0]["state"], "completed");
    let (_, attempts) = server.get(&format!("/v1/jobs/{id}/attempts")).await;
    assert_eq!(attempts[0]["state"], "succeeded");
    let (_, events) = server.get(&format!("/v1/jobs/{id}/events")).await;
    assert_eq!(events[0]["kind"], "job.created");
    let (status, _) = server.delete(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 204);
    let (status, body) = server.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "job_not_found");
    server.stop().await;
}

#[tokio::test]
async fn job_idempotency_key_same_and_different() {
    let server = TestServer::start_with(Options {
        without_workers: true,
        ..Default::default()
    })
    .await;
    server.greet_register().await;
    let request = json!({"workflow_id": "greet", "input": {"name": "a"}, "idempotency_key": "k"});
    let first = server.job_create(request.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, again) = server.post("/v1/jobs", request).await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], first);
    let different = json!({"workflow_id": "greet", "input": {"name": "b"}, "idempotency_key": "k"});
    let (status, body) = server.post("/v1/jobs", different).await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "idempotency_key_reused");
    server.stop().await;
}

#[tokio::test]
async fn job_create_errors() {
    let server = TestServer::start().await;
    server.greet_register().await;
    let cases = [
        (json!({"workflow_id": "missing"}), 404, "workflow_not_found"),
        (
            json!({"workflow_id": "greet", "input": {}}),
            422,
            "input_invalid",
        ),
        (json!({"input": {}}), 422, "workflow_missing"),
        (
            json!({"workflow_id": "greet", "bogus": 1}),
            400,
            "body_invalid",
        ),
        (
            json!({"workflow_id": "greet", "priority": "urgent"}),
            400,
            "body_invalid",
        ),
        (
            json!({"workflow_id": "greet", "input": {"name": "a"}, "delay_seconds": -1}),
            422,
            "seconds_out_of_range",
        ),
        (
            json!({"workflow_id": "greet", "input": {"name": "a"}, "run_at": -1}),
            422,
            "run_at_out_of_range",
        ),
        (
            json!({"workflow_id": "greet", "input": {"name": "a"}, "run_at": i64::MAX}),
            422,
            "run_at_out_of_range",
        ),
        (
            json!({"workflow_id": "greet", "input": {"name": "a"}, "depends_on": ["nope"]}),
            422,
            "dependency_invalid",
        ),
    ];
    for (request, status, code) in cases {
        let (got, body) = server.post("/v1/jobs", request.clone()).await;
        assert_eq!(got, status, "{request} gave {body}");
        assert_eq!(body["code"], code, "{request}");
    }
    let response = server
        .client
        .post(server.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let big = vec![b' '; oaj_server::BODY_BYTES_MAX + 1];
    let response = server
        .client
        .post(server.url("/v1/workflows"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "body_too_large");
    let (status, body) = server.get("/v1/jobs?limit=5000").await;
    assert_eq!(status, 422);
    assert_eq!(body["code"], "limit_invalid");
    let (status, _) = server.get("/v1/jobs?state=bogus").await;
    assert_eq!(status, 400);
    let (status, body) = server.get("/v1/nowhere").await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "route_not_found");
    server.stop().await;
}

#[tokio::test]
async fn job_cancel_pause_resume_retry() {
    let server = TestServer::start_with(Options {
        without_workers: true,
        ..Default::default()
    })
    .await;
    server.post("/v1/workflows", nap_workflow(10)).await;
    let id = server.job_create(json!({"workflow_id": "nap"})).await;
    let (status, job) = server
        .post(&format!("/v1/jobs/{id}/pause"), json!({}))
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["state"], "paused");
    let (_, job) = server
        .post(&format!("/v1/jobs/{id}/resume"), json!({}))
        .await;
    assert_eq!(job["state"], "queued");
    let (_, job) = server
        .post(&format!("/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(job["state"], "cancelled");
    let (status, body) = server
        .post(&format!("/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = server.get(&format!("/v1/jobs/{id}/result")).await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "job_not_completed");
    let (_, job) = server
        .post(&format!("/v1/jobs/{id}/retry"), json!({}))
        .await;
    assert_eq!(job["state"], "queued");
    let (status, body) = server
        .post(&format!("/v1/jobs/{id}/approve"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "approval_not_waiting");
    let (status, _) = server.post("/v1/jobs/none/cancel", json!({})).await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn batch_create_count_and_cancel() {
    let server = TestServer::start_with(Options {
        without_workers: true,
        ..Default::default()
    })
    .await;
    server.greet_register().await;
    let entry = json!({"workflow_id": "greet", "input": {"name": "a"}});
    let mut second = entry.clone();
    second["depends_on"] = json!([0]);
    let (status, body) = server
        .post("/v1/batches", json!({"jobs": [entry, second]}))
        .await;
    assert_eq!(status, 201, "{body}");
    let batch = body["batch_id"].as_str().unwrap().to_owned();
    let (_, out) = server.get(&format!("/v1/batches/{batch}")).await;
    assert_eq!(out["total"], 2);
    assert_eq!(out["counts"]["queued"], 1);
    assert_eq!(out["counts"]["pending"], 1);
    let (_, out) = server
        .post(&format!("/v1/batches/{batch}/cancel"), json!({}))
        .await;
    // The first job is cancelled, and its dependent fails because of it.
    assert_eq!(out["counts"]["cancelled"], 1, "{out}");
    assert_eq!(out["counts"]["failed"], 1, "{out}");
    assert_eq!(out["is_finished"], true);
    let (status, _) = server.get("/v1/batches/none").await;
    assert_eq!(status, 404);
    let (status, body) = server.post("/v1/batches", json!({"jobs": []})).await;
    assert_eq!(status, 422, "{body}");
    server.stop().await;
}

/// PostgreSQL rejects the NUL character in text: the API returns 400 `text_invalid` for it, and
/// the store keeps working.
#[tokio::test]
async fn nul_text_rejected_on_postgres() {
    let Some(url) = postgres_url() else {
        return;
    };
    let server = TestServer::start_with(Options {
        postgres_url: Some(url),
        ..Options::default()
    })
    .await;
    server.greet_register().await;
    let input = json!({"name": "Ada"});
    let bodies = [
        json!({"workflow_id": "greet", "input": input, "idempotency_key": "a\u{0}b"}),
        json!({"workflow_id": "gr\u{0}eet", "input": input}),
    ];
    for body in bodies {
        let (status, error) = server.post("/v1/jobs", body.clone()).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["code"], "text_invalid", "{body}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains("NUL"),
            "{error}"
        );
    }
    for path in ["/v1/jobs/a%00b", "/v1/events?job=a%00b&after=0"] {
        let (status, error) = server.get(path).await;
        assert_eq!(status, 400, "{path}: {error}");
        assert_eq!(error["code"], "text_invalid", "{path}: {error}");
    }

    let id = server
        .job_create(json!({"workflow_id": "greet", "input": input}))
        .await;
    server.job_wait(&id, "completed").await;
    server.stop().await;
}

#[tokio::test]
async fn health_ready_metrics_workers_openapi() {
    let server = TestServer::start().await;
    let (status, _) = server.get("/v1/health").await;
    assert_eq!(status, 200);
    let (status, _) = server.get("/v1/ready").await;
    assert_eq!(status, 200);
    let (status, workers) = server.get("/v1/workers").await;
    assert_eq!(status, 200);
    assert!(workers.is_array());
    let (_, metrics) = server.get("/metrics").await;
    let text = metrics.as_str().unwrap();
    assert!(text.contains("oaj_jobs{state=\"queued\"} 0"), "{text}");
    assert!(text.contains("oaj_queue_depth{priority=\"high\"} 0"));
    let (_, document) = server.get("/v1/openapi.json").await;
    assert!(document["paths"]["/v1/jobs/{id}/cancel"]["post"].is_object());
    let dependencies = &document["paths"]["/v1/jobs/{id}/dependencies"]["post"];
    assert!(dependencies["responses"]["409"].is_object());
    assert!(document["paths"]["/v1/jobs/{id}/dependencies/{dep}"]["delete"].is_object());
    assert!(document["paths"]["/v1/jobs/{id}/dependents"]["get"].is_object());
    assert!(document["components"]["schemas"]["Job"].is_object());
    server.stop().await;
}
