//! Agents: what does the work of a step. Built-ins, inline `command`, `http` and `llm` agents,
//! and agents that an embedding application registers through the [`Agent`] trait.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

mod builtin;
mod command;
mod env_template;
mod http;
mod http_response;
mod llm;
mod process_group;
mod registry;
#[cfg(test)]
mod test_support;

pub use builtin::{EchoAgent, FailAgent, NoopAgent, SleepAgent};
pub use command::CommandAgent;
pub use http::HttpAgent;
pub use llm::LlmAgent;
pub use registry::{agent_from_spec, AgentRegistry};

/// Something that does the work of a step: it takes the step's resolved input and returns its
/// output.
///
/// An agent must stop promptly when `call.cancel` fires (a cancel or a timeout): a process agent
/// kills its process group, a network agent drops its request. The engine waits a grace period
/// for that, then abandons the call.
#[async_trait]
pub trait Agent: Send + Sync + 'static {
    /// Runs one attempt of a step.
    async fn call(&self, call: AgentCall) -> Result<AgentOutput, AgentError>;

    /// Reports whether a call returns at once and changes nothing outside the engine. The engine
    /// then records the attempt in one write after the call instead of one before and one after,
    /// because a crash between the call and the write only makes the call run again.
    fn is_instant(&self) -> bool {
        false
    }
}

/// One attempt of a step, as an agent sees it.
#[derive(Debug, Clone)]
pub struct AgentCall {
    /// The step's resolved input object.
    pub input: Value,
    /// The part after the dot of an `agent.capability` component, if any.
    pub capability: Option<String>,
    /// Key that is the same for every delivery of this attempt: `job/step/item/attempt`. Agents
    /// pass it to outside services so that those can drop a repeated request.
    pub idempotency_key: String,
    /// Job id, for logs.
    pub job_id: String,
    /// Step id, for logs.
    pub step_id: String,
    /// Attempt number, 1 for the first.
    pub attempt: u32,
    /// Fires when the attempt must stop: job cancelled or attempt timed out.
    pub cancel: CancellationToken,
}

/// The result of a successful attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentOutput {
    /// The step's output.
    pub output: Value,
    /// Text kept as the attempt's log (a command's stderr, for example).
    pub log: String,
    /// Tokens used, for LLM agents.
    pub usage: Option<TokenUsage>,
}

/// Tokens counted by an LLM endpoint for one attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenUsage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
}

/// The failure of an attempt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    /// The message, naming the value at fault.
    pub message: String,
    /// Whether another attempt could succeed (a 503 could, a 400 could not).
    pub is_retryable: bool,
    /// Delay the outside service asked for before the next attempt.
    pub retry_after: Option<Duration>,
    /// Text kept as the attempt's log.
    pub log: String,
    /// Tokens used before the failure, for LLM agents.
    pub usage: Option<TokenUsage>,
}

impl AgentError {
    /// Creates a retryable error with no log.
    pub fn retryable(message: impl Into<String>) -> AgentError {
        AgentError {
            message: message.into(),
            is_retryable: true,
            retry_after: None,
            log: String::new(),
            usage: None,
        }
    }

    /// Creates an error that no retry can fix.
    pub fn permanent(message: impl Into<String>) -> AgentError {
        AgentError {
            is_retryable: false,
            ..AgentError::retryable(message)
        }
    }

    /// Creates the error of an attempt stopped by its cancel token. It is retryable because a
    /// timeout cancels too, and the engine, which tracks the cause, decides whether to retry.
    pub(crate) fn cancelled(what: &str) -> AgentError {
        AgentError::retryable(format!("{what} cancelled"))
    }
}

/// Runs `work` until it finishes or `cancel` fires. On cancel, `work` is dropped, which for a
/// network request closes its connection.
pub(crate) async fn run_cancellable<T>(
    cancel: &CancellationToken,
    what: &str,
    work: impl Future<Output = Result<T, AgentError>>,
) -> Result<T, AgentError> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(AgentError::cancelled(what)),
        result = work => result,
    }
}

/// Converts the bytes an agent produced (stdout, a response body) into a step output: the JSON
/// value when they parse as JSON, otherwise the trimmed text as a JSON string. Invalid UTF-8 is
/// replaced with U+FFFD. Nothing but whitespace gives `null`.
pub(crate) fn output_from_bytes(bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Value::Null;
    }
    match serde_json::from_str(trimmed) {
        Ok(value) => value,
        Err(_) => Value::String(trimmed.to_owned()),
    }
}

/// Returns at most `max_bytes` of `text`, cut at a character boundary, with `…` when cut.
pub(crate) fn text_truncate(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn output_from_bytes_parses_json() {
        assert_eq!(output_from_bytes(b" {\"a\": 1}\n"), json!({"a": 1}));
    }

    #[test]
    fn output_from_bytes_keeps_text_as_string() {
        assert_eq!(output_from_bytes(b"  hello world\n"), json!("hello world"));
    }

    #[test]
    fn output_from_bytes_empty_is_null() {
        assert_eq!(output_from_bytes(b" \n\t"), Value::Null);
    }

    #[test]
    fn text_truncate_cuts_at_char_boundary() {
        assert_eq!(text_truncate("héllo", 2), "h…");
        assert_eq!(text_truncate("hello", 5), "hello");
    }
}
