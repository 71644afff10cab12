//! Bearer-token access control.

use crate::support::{Options, TestServer};

#[tokio::test]
async fn auth_token_required_except_health() {
    let server = TestServer::start_with(Options {
        token: Some("s3cret".to_owned()),
        ..Default::default()
    })
    .await;
    let (status, _) = server.get("/v1/health").await;
    assert_eq!(status, 200);
    for path in [
        "/v1/jobs",
        "/v1/workflows",
        "/metrics",
        "/v1/openapi.json",
        "/v1/events",
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(body["code"], "unauthorized");
        assert!(!body.to_string().contains("s3cret"));
        let response = server
            .client
            .get(server.url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path} with a wrong token");
    }
    let response = server
        .client
        .get(server.url("/v1/jobs"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn auth_off_without_token() {
    let server = TestServer::start().await;
    let (status, _) = server.get("/v1/jobs").await;
    assert_eq!(status, 200);
    server.stop().await;
}
