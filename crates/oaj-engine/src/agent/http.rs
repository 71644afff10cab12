//! The `http` agent: sends the step input as a JSON body to an HTTP service and returns its
//! response as the step output.

use std::collections::BTreeMap;

use async_trait::async_trait;
use oaj_core::workflow::HttpSpec;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method};

use super::env_template::{env_interpolate_with_values, secrets_redact};
use super::http_response::{request_error, response_body};
use super::{output_from_bytes, run_cancellable, Agent, AgentCall, AgentError, AgentOutput};

/// Header that carries the attempt's idempotency key.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Calls an HTTP service for each attempt.
///
/// The request has `spec.method`, `spec.url` and `spec.headers`, where `${env.NAME}` in the URL
/// or a header is read from the environment at call time and kept out of logs and errors. The
/// body is the step input as JSON, except for GET and HEAD, which send none. The request carries
/// an `Idempotency-Key` header unless `spec.headers` sets one.
///
/// A 2xx response's body is the step output: JSON when it parses, otherwise the trimmed text as
/// a string (empty gives `null`). 429 and 5xx responses and connection failures are retryable,
/// with `Retry-After` honoured; other statuses are permanent failures. A cancel drops the request.
pub struct HttpAgent {
    spec: HttpSpec,
    client: Client,
    /// `METHOD url` as written in the workflow, for messages.
    target: String,
}

impl HttpAgent {
    /// Creates an agent that sends its requests with `client`, whose timeouts, proxies and
    /// redirect policy apply.
    pub fn new(spec: HttpSpec, client: Client) -> HttpAgent {
        let target = format!("{} {}", spec.method.to_uppercase(), spec.url);
        HttpAgent {
            spec,
            client,
            target,
        }
    }

    /// Builds the request, and returns with it the values taken from the environment.
    fn request_build(
        &self,
        call: &AgentCall,
    ) -> Result<(reqwest::RequestBuilder, Vec<String>), AgentError> {
        let method = method_parse(&self.spec.method)?;
        let (url, mut secrets) = env_interpolate_with_values(&self.spec.url, "the URL")?;
        let (mut headers, header_secrets) = headers_resolve(&self.spec.headers)?;
        secrets.extend(header_secrets);
        if !headers.contains_key(IDEMPOTENCY_KEY) {
            let key = HeaderValue::from_str(&call.idempotency_key).map_err(|_| {
                AgentError::permanent(format!(
                    "idempotency key {:?} is not a valid header value",
                    call.idempotency_key
                ))
            })?;
            headers.insert(IDEMPOTENCY_KEY, key);
        }
        let has_body = method != Method::GET && method != Method::HEAD;
        let request = self.client.request(method, url).headers(headers);
        let request = if has_body {
            request.json(&call.input)
        } else {
            request
        };
        Ok((request, secrets))
    }
}

#[async_trait]
impl Agent for HttpAgent {
    async fn call(&self, call: AgentCall) -> Result<AgentOutput, AgentError> {
        let (request, secrets) = self.request_build(&call)?;
        let target = self.target.as_str();
        tracing::debug!(target, "sending request");
        let body = run_cancellable(&call.cancel, &format!("request {target}"), async {
            let response = request.send().await.map_err(|e| request_error(e, target))?;
            response_body(response, target).await
        })
        .await
        .map_err(|mut error| {
            error.message = secrets_redact(&error.message, &secrets);
            error.log = secrets_redact(&error.log, &secrets);
            error
        })?;
        Ok(AgentOutput {
            output: output_from_bytes(&body),
            ..AgentOutput::default()
        })
    }
}

fn method_parse(method: &str) -> Result<Method, AgentError> {
    Method::from_bytes(method.to_uppercase().as_bytes()).map_err(|_| {
        AgentError::permanent(format!(
            "HTTP method {method:?} is invalid; use one such as GET, POST, PUT, PATCH or DELETE"
        ))
    })
}

/// Resolves `${env.NAME}` in header values, and returns the values read from the environment.
/// Headers that use one are marked sensitive, so that reqwest and hyper leave them out of their
/// debug output.
fn headers_resolve(
    templates: &BTreeMap<String, String>,
) -> Result<(HeaderMap, Vec<String>), AgentError> {
    let mut headers = HeaderMap::new();
    let mut secrets = Vec::new();
    for (name, template) in templates {
        let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            AgentError::permanent(format!(
                "header name {name:?} is invalid; fix the agent's headers"
            ))
        })?;
        let (value, env_values) = env_interpolate_with_values(template, &format!("header {name}"))?;
        // The message leaves the value out because it may hold a secret.
        let mut header_value = HeaderValue::from_str(&value).map_err(|_| {
            AgentError::permanent(format!(
                "value of header {name} is not a valid header value (a control character or a \
                 line break?); fix it or the environment variable it uses"
            ))
        })?;
        header_value.set_sensitive(!env_values.is_empty());
        headers.insert(header_name, header_value);
        secrets.extend(env_values);
    }
    Ok((headers, secrets))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::agent::test_support::{call_with, CannedResponse, TestServer};

    fn spec(method: &str, url: String) -> HttpSpec {
        HttpSpec {
            method: method.to_owned(),
            url,
            headers: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn http_post_sends_input_and_parses_json() {
        let server = TestServer::start(|_| CannedResponse::json(200, r#"{"ok": true}"#)).await;
        let agent = HttpAgent::new(spec("POST", server.url("/hook")), Client::new());

        let output = agent.call(call_with(json!({"ticket": 7}))).await;

        assert_eq!(output.map(|o| o.output), Ok(json!({"ok": true})));
        let request = server.request(0);
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hook");
        assert_eq!(request.body_json(), json!({"ticket": 7}));
        assert_eq!(request.header("content-type"), Some("application/json"));
    }

    #[tokio::test]
    async fn http_sends_idempotency_key() {
        let server = TestServer::start(|_| CannedResponse::json(200, "{}")).await;
        let agent = HttpAgent::new(spec("POST", server.url("/")), Client::new());

        let call = call_with(json!({}));
        let key = call.idempotency_key.clone();
        agent.call(call).await.expect("the server returns 200");

        assert_eq!(
            server.request(0).header("idempotency-key"),
            Some(key.as_str())
        );
    }

    #[tokio::test]
    async fn http_get_sends_no_body() {
        let server = TestServer::start(|_| CannedResponse::text(200, "plain words\n")).await;
        let agent = HttpAgent::new(spec("get", server.url("/status")), Client::new());

        let output = agent.call(call_with(json!({"ignored": true}))).await;

        assert_eq!(output.map(|o| o.output), Ok(json!("plain words")));
        let request = server.request(0);
        assert_eq!(request.method, "GET");
        assert!(request.body.is_empty());
    }

    #[tokio::test]
    async fn http_503_with_retry_after_is_retryable() {
        let server = TestServer::start(|_| {
            CannedResponse::text(503, "busy").with_header("Retry-After", "17")
        })
        .await;
        let agent = HttpAgent::new(spec("POST", server.url("/")), Client::new());

        let error = agent
            .call(call_with(json!({})))
            .await
            .expect_err("503 fails");

        assert!(error.is_retryable);
        assert_eq!(error.retry_after, Some(std::time::Duration::from_secs(17)));
        assert!(error.message.contains("503"), "message: {}", error.message);
        assert_eq!(error.log, "busy");
    }

    #[tokio::test]
    async fn http_400_is_permanent() {
        let server = TestServer::start(|_| CannedResponse::json(400, r#"{"error":"bad"}"#)).await;
        let agent = HttpAgent::new(spec("POST", server.url("/")), Client::new());

        let error = agent
            .call(call_with(json!({})))
            .await
            .expect_err("400 fails");

        assert!(!error.is_retryable);
        assert_eq!(error.retry_after, None);
    }

    #[tokio::test]
    async fn http_env_secret_kept_out_of_errors() {
        std::env::set_var("OAJ_TEST_HTTP_TOKEN", "tok-123");
        let server = TestServer::start(|request| {
            let echoed = request
                .header("authorization")
                .unwrap_or_default()
                .to_owned();
            CannedResponse::text(500, &format!("down, you sent {echoed}"))
        })
        .await;
        let mut spec = spec("POST", server.url("/"));
        let bearer = "Bearer ${env.OAJ_TEST_HTTP_TOKEN}".to_owned();
        spec.headers.insert("Authorization".to_owned(), bearer);
        let agent = HttpAgent::new(spec, Client::new());

        let error = agent
            .call(call_with(json!({})))
            .await
            .expect_err("500 fails");

        assert_eq!(
            server.request(0).header("authorization"),
            Some("Bearer tok-123")
        );
        assert!(!error.message.contains("tok-123"));
        assert!(!error.log.contains("tok-123"));
        assert_eq!(error.log, "down, you sent Bearer [redacted]");
    }

    #[tokio::test]
    async fn http_missing_env_variable_is_permanent() {
        let mut spec = spec("POST", "http://127.0.0.1:9/".to_owned());
        let template = "${env.OAJ_TEST_HTTP_MISSING}".to_owned();
        spec.headers.insert("X-Key".to_owned(), template);
        let agent = HttpAgent::new(spec, Client::new());

        let error = agent
            .call(call_with(json!({})))
            .await
            .expect_err("the variable is missing");

        assert!(!error.is_retryable);
        assert!(error.message.contains("OAJ_TEST_HTTP_MISSING"));
    }

    #[tokio::test]
    async fn http_connection_refused_is_retryable() {
        let url = TestServer::closed_port_url().await;
        let agent = HttpAgent::new(spec("POST", url), Client::new());

        let error = agent
            .call(call_with(json!({})))
            .await
            .expect_err("nothing listens");

        assert!(error.is_retryable, "message: {}", error.message);
    }

    #[tokio::test]
    async fn http_invalid_method_is_permanent() {
        let agent = HttpAgent::new(
            spec("PO ST", "http://127.0.0.1:9/".to_owned()),
            Client::new(),
        );
        let error = agent
            .call(call_with(json!({})))
            .await
            .expect_err("the method is invalid");
        assert!(!error.is_retryable);
        assert!(error.message.contains("PO ST"));
    }

    #[tokio::test]
    async fn http_cancel_drops_request() {
        let server = TestServer::start_silent().await;
        let agent = HttpAgent::new(spec("POST", server.url("/")), Client::new());
        let call = call_with(json!({}));
        let cancel = call.cancel.clone();

        let pending = tokio::spawn(async move { agent.call(call).await });
        server.wait_for_connection().await;
        cancel.cancel();

        let error = pending
            .await
            .expect("the task does not panic")
            .expect_err("it was cancelled");
        assert!(error.message.contains("cancelled"));
    }
}
