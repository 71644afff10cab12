//! The `llm` agent: one request to an OpenAI-compatible chat-completions endpoint per attempt.

use async_trait::async_trait;
use oaj_core::workflow::LlmSpec;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::Client;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::env_template::secrets_redact;
use super::http_response::{request_error, response_body};
use super::{
    run_cancellable, text_truncate, Agent, AgentCall, AgentError, AgentOutput, TokenUsage,
};

/// Bytes of an unreadable response body kept as the attempt's log.
const INVALID_BODY_LOG_BYTES: usize = 4096;

/// Sends `POST {base_url}/chat/completions` with `{model, messages, temperature, max_tokens}`.
///
/// `messages` is the input's `messages` array of `{role, content}` objects, passed on as they
/// are. Without it, the input's `prompt` becomes one user message (a non-string prompt is sent
/// as its JSON text), after the input's optional `system` string as a system message. The API
/// key, if any, is read from the environment variable `spec.api_key_env` at call time and sent
/// as a bearer token.
///
/// The output is `{"content", "model", "finish_reason"}` of the first choice, plus `"json"` when
/// the content is a JSON object (inside a Markdown code fence or not). Token usage goes to
/// [`AgentOutput::usage`]. Failures are sorted as for the `http` agent: 429, 5xx and connection
/// failures are retryable, with `Retry-After` honoured.
pub struct LlmAgent {
    spec: LlmSpec,
    client: Client,
    /// `POST url`, for messages.
    target: String,
}

/// The part of a chat-completions response that oaj reads.
#[derive(Deserialize)]
struct ChatCompletion {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChatChoice>,
    #[serde(default)]
    usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
struct ChatChoice {
    message: ChatMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChatMessage {
    /// Absent or null when the model replied with tool calls only.
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct ChatUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl LlmAgent {
    /// Creates an agent that sends its requests with `client`.
    pub fn new(spec: LlmSpec, client: Client) -> LlmAgent {
        let url = format!("{}/chat/completions", spec.base_url.trim_end_matches('/'));
        LlmAgent {
            target: format!("POST {url}"),
            spec,
            client,
        }
    }

    fn url(&self) -> &str {
        self.target.trim_start_matches("POST ")
    }

    fn request_body(&self, input: &Value) -> Result<Value, AgentError> {
        let mut body = Map::new();
        body.insert("model".to_owned(), json!(self.spec.model));
        body.insert(
            "messages".to_owned(),
            Value::Array(messages_from_input(input)?),
        );
        if let Some(temperature) = self.spec.temperature {
            body.insert("temperature".to_owned(), json!(temperature));
        }
        if let Some(max_tokens) = self.spec.max_tokens {
            body.insert("max_tokens".to_owned(), json!(max_tokens));
        }
        Ok(Value::Object(body))
    }

    /// Reads the API key from the environment variable that `api_key_env` names, if any.
    fn api_key(&self) -> Result<Option<String>, AgentError> {
        let Some(name) = &self.spec.api_key_env else {
            return Ok(None);
        };
        match std::env::var(name) {
            Ok(key) if !key.is_empty() => Ok(Some(key)),
            _ => Err(AgentError::permanent(format!(
                "environment variable {name} named by api_key_env is missing, empty or not \
                 UTF-8; set it to the API key in the environment of the oaj worker"
            ))),
        }
    }
}

fn bearer_header(key: &str, env_name: &str) -> Result<HeaderValue, AgentError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
        AgentError::permanent(format!(
            "API key in environment variable {env_name} is not a valid header value; \
             remove line breaks and control characters from it"
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

#[async_trait]
impl Agent for LlmAgent {
    async fn call(&self, call: AgentCall) -> Result<AgentOutput, AgentError> {
        let body = self.request_body(&call.input)?;
        let api_key = self.api_key()?;
        let mut request = self.client.post(self.url()).json(&body);
        if let (Some(key), Some(env_name)) = (&api_key, &self.spec.api_key_env) {
            request = request.header(AUTHORIZATION, bearer_header(key, env_name)?);
        }
        let target = self.target.as_str();
        tracing::debug!(target, model = %self.spec.model, "sending chat completion");
        let response = run_cancellable(&call.cancel, &format!("request {target}"), async {
            let response = request.send().await.map_err(|e| request_error(e, target))?;
            response_body(response, target).await
        })
        .await
        .map_err(|mut error| {
            // Some endpoints quote the rejected key in their error body.
            let secrets = Vec::from_iter(api_key.clone());
            error.log = secrets_redact(&error.log, &secrets);
            error
        })?;
        completion_output(&response, &self.spec.model, target)
    }
}

/// Builds the chat messages from the step input.
fn messages_from_input(input: &Value) -> Result<Vec<Value>, AgentError> {
    let Some(input) = input.as_object() else {
        return Err(AgentError::permanent(format!(
            "llm input must be an object with messages or prompt, got {}",
            text_truncate(&input.to_string(), 80)
        )));
    };
    if let Some(messages) = input.get("messages") {
        return messages_check(messages);
    }
    let Some(prompt) = input.get("prompt") else {
        return Err(AgentError::permanent(
            "llm input has neither messages nor prompt; give messages (an array of \
             {\"role\", \"content\"}) or prompt (a string)",
        ));
    };
    let prompt = match prompt {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let mut messages = Vec::with_capacity(2);
    match input.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(system)) => messages.push(json!({"role": "system", "content": system})),
        Some(other) => {
            return Err(AgentError::permanent(format!(
                "llm input system must be a string, got {}",
                text_truncate(&other.to_string(), 80)
            )))
        }
    }
    messages.push(json!({"role": "user", "content": prompt}));
    Ok(messages)
}

fn messages_check(messages: &Value) -> Result<Vec<Value>, AgentError> {
    let Some(items) = messages.as_array().filter(|items| !items.is_empty()) else {
        return Err(AgentError::permanent(
            "llm input messages must be a non-empty array of {\"role\", \"content\"} objects",
        ));
    };
    for (index, message) in items.iter().enumerate() {
        let has_role = message.get("role").is_some_and(Value::is_string);
        let has_content = message.get("content").is_some();
        if !has_role || !has_content {
            return Err(AgentError::permanent(format!(
                "llm input messages[{index}] needs a string role and a content, such as \
                 {{\"role\": \"user\", \"content\": \"Hello\"}}"
            )));
        }
    }
    Ok(items.clone())
}

fn completion_output(body: &[u8], model: &str, target: &str) -> Result<AgentOutput, AgentError> {
    let invalid = |reason: String| AgentError {
        log: text_truncate(&String::from_utf8_lossy(body), INVALID_BODY_LOG_BYTES),
        ..AgentError::permanent(format!(
            "response of {target} is not a chat completion: {reason}; check base_url"
        ))
    };
    let completion: ChatCompletion =
        serde_json::from_slice(body).map_err(|error| invalid(error.to_string()))?;
    let Some(choice) = completion.choices.into_iter().next() else {
        return Err(invalid("it has no choices".to_owned()));
    };
    let content = choice.message.content.unwrap_or_default();

    let parsed = json_object_in(&content);
    let mut output = Map::new();
    output.insert("content".to_owned(), Value::String(content));
    output.insert(
        "model".to_owned(),
        json!(completion.model.as_deref().unwrap_or(model)),
    );
    output.insert("finish_reason".to_owned(), json!(choice.finish_reason));
    if let Some(parsed) = parsed {
        output.insert("json".to_owned(), parsed);
    }

    let usage = completion.usage.map(|usage| TokenUsage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
    });
    tracing::debug!(?usage, "chat completion received");
    Ok(AgentOutput {
        output: Value::Object(output),
        log: String::new(),
        usage,
    })
}

/// Returns the JSON object in `content`, which models often wrap in a Markdown code fence such
/// as ```` ```json ... ``` ````.
fn json_object_in(content: &str) -> Option<Value> {
    let trimmed = content.trim();
    let unfenced = trimmed
        .strip_prefix("```")
        .and_then(|rest| rest.strip_suffix("```"))
        .map(|inner| {
            inner
                .split_once('\n')
                .map_or(inner, |(_language, code)| code)
        });
    let candidate = unfenced.unwrap_or(trimmed);
    serde_json::from_str::<Value>(candidate.trim())
        .ok()
        .filter(Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::test_support::{call_with, CannedResponse, TestServer};

    const COMPLETION: &str = r#"{
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000,
        "model": "stand-in-1",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Paris"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    }"#;

    fn spec(base_url: String) -> LlmSpec {
        LlmSpec {
            base_url,
            model: "stand-in-1".to_owned(),
            api_key_env: None,
            temperature: Some(0.2),
            max_tokens: Some(64),
        }
    }

    fn completion_with_content(content: &str) -> String {
        let body = json!({
            "model": "stand-in-1",
            "choices": [{"finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
        });
        body.to_string()
    }

    #[tokio::test]
    async fn llm_sends_prompt_and_system_as_messages() {
        let server = TestServer::start(|_| CannedResponse::json(200, COMPLETION)).await;
        let agent = LlmAgent::new(spec(server.url("/v1/")), Client::new());

        let input = json!({"prompt": "Capital of France?", "system": "Be brief."});
        agent
            .call(call_with(input))
            .await
            .expect("the endpoint returns 200");

        let request = server.request(0);
        assert_eq!(request.path, "/v1/chat/completions");
        let expected = json!({
            "model": "stand-in-1",
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Capital of France?"}],
            "temperature": 0.2,
            "max_tokens": 64,
        });
        assert_eq!(request.body_json(), expected);
    }

    #[tokio::test]
    async fn llm_parses_content_and_usage() {
        let server = TestServer::start(|_| CannedResponse::json(200, COMPLETION)).await;
        let agent = LlmAgent::new(spec(server.url("/v1")), Client::new());

        let output = agent.call(call_with(json!({"prompt": "Capital?"}))).await;
        let output = output.expect("the endpoint returns 200");

        let expected = json!({"content": "Paris", "model": "stand-in-1", "finish_reason": "stop"});
        assert_eq!(output.output, expected);
        let usage = TokenUsage {
            prompt_tokens: 12,
            completion_tokens: 3,
        };
        assert_eq!(output.usage, Some(usage));
    }

    #[tokio::test]
    async fn llm_passes_messages_through() {
        let server = TestServer::start(|_| CannedResponse::json(200, COMPLETION)).await;
        let agent = LlmAgent::new(spec(server.url("/v1")), Client::new());
        let messages = json!([
            {"role": "system", "content": "You sort tickets."},
            {"role": "user", "content": "Printer on fire", "name": "alice"},
        ]);

        let input = json!({"messages": messages, "prompt": "ignored"});
        agent
            .call(call_with(input))
            .await
            .expect("the endpoint returns 200");

        assert_eq!(server.request(0).body_json()["messages"], messages);
    }

    #[tokio::test]
    async fn llm_sends_api_key_as_bearer() {
        std::env::set_var("OAJ_TEST_LLM_KEY", "sk-test-1");
        let server = TestServer::start(|_| CannedResponse::json(200, COMPLETION)).await;
        let mut spec = spec(server.url("/v1"));
        spec.api_key_env = Some("OAJ_TEST_LLM_KEY".to_owned());
        let agent = LlmAgent::new(spec, Client::new());

        agent
            .call(call_with(json!({"prompt": "hi"})))
            .await
            .expect("the endpoint returns 200");

        let request = server.request(0);
        assert_eq!(request.header("authorization"), Some("Bearer sk-test-1"));
    }

    #[tokio::test]
    async fn llm_missing_api_key_names_variable() {
        let mut spec = spec("http://127.0.0.1:9/v1".to_owned());
        spec.api_key_env = Some("OAJ_TEST_LLM_KEY_MISSING".to_owned());
        let agent = LlmAgent::new(spec, Client::new());

        let error = agent
            .call(call_with(json!({"prompt": "hi"})))
            .await
            .expect_err("no key");

        assert!(!error.is_retryable);
        assert!(error.message.contains("OAJ_TEST_LLM_KEY_MISSING"));
    }

    #[tokio::test]
    async fn llm_redacts_api_key_from_error_log() {
        std::env::set_var("OAJ_TEST_LLM_KEY_ECHOED", "sk-echoed-2");
        let server = TestServer::start(|request| {
            let echoed = request
                .header("authorization")
                .unwrap_or_default()
                .to_owned();
            CannedResponse::json(
                401,
                &json!({"error": format!("bad key {echoed}")}).to_string(),
            )
        })
        .await;
        let mut spec = spec(server.url("/v1"));
        spec.api_key_env = Some("OAJ_TEST_LLM_KEY_ECHOED".to_owned());
        let agent = LlmAgent::new(spec, Client::new());

        let error = agent
            .call(call_with(json!({"prompt": "hi"})))
            .await
            .expect_err("401");

        assert!(!error.is_retryable);
        assert_eq!(error.log, r#"{"error":"bad key Bearer [redacted]"}"#);
    }

    #[tokio::test]
    async fn llm_adds_json_for_object_content() {
        let body = completion_with_content("```json\n{\"label\": \"bug\"}\n```");
        let server = TestServer::start(move |_| CannedResponse::json(200, &body)).await;
        let agent = LlmAgent::new(spec(server.url("/v1")), Client::new());

        let output = agent.call(call_with(json!({"prompt": "label?"}))).await;

        let output = output.expect("the endpoint returns 200").output;
        assert_eq!(output["json"], json!({"label": "bug"}));
        assert_eq!(output.get("json").map(Value::is_object), Some(true));
    }

    #[tokio::test]
    async fn llm_429_is_retryable_with_retry_after() {
        let server = TestServer::start(|_| {
            CannedResponse::json(429, r#"{"error": {"message": "slow down"}}"#)
                .with_header("Retry-After", "3")
        })
        .await;
        let agent = LlmAgent::new(spec(server.url("/v1")), Client::new());

        let error = agent
            .call(call_with(json!({"prompt": "hi"})))
            .await
            .expect_err("429");

        assert!(error.is_retryable);
        assert_eq!(error.retry_after, Some(std::time::Duration::from_secs(3)));
    }

    #[tokio::test]
    async fn llm_non_completion_body_is_permanent() {
        let server = TestServer::start(|_| CannedResponse::text(200, "<html>hi</html>")).await;
        let agent = LlmAgent::new(spec(server.url("/v1")), Client::new());

        let error = agent
            .call(call_with(json!({"prompt": "hi"})))
            .await
            .expect_err("not JSON");

        assert!(!error.is_retryable);
        assert_eq!(error.log, "<html>hi</html>");
    }

    #[test]
    fn messages_reject_bad_input() {
        let cases = [
            json!("just text"),
            json!({}),
            json!({"messages": []}),
            json!({"messages": [{"content": "no role"}]}),
            json!({"prompt": "hi", "system": 3}),
        ];
        for input in cases {
            let error = messages_from_input(&input).expect_err("the input is invalid");
            assert!(!error.is_retryable, "input {input}");
        }
    }

    #[test]
    fn json_object_in_ignores_non_objects() {
        assert_eq!(json_object_in("[1, 2]"), None);
        assert_eq!(json_object_in("Paris"), None);
        assert_eq!(json_object_in(" {\"a\": 1} "), Some(json!({"a": 1})));
    }
}
