//! Built-in agents for tests, benchmarks and simple waits: `noop`, `echo`, `sleep` and `fail`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{Agent, AgentCall, AgentError, AgentOutput};

/// Does nothing and outputs `{}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopAgent;

/// Outputs its input unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoAgent;

/// Waits for `{"seconds": n}` (fractions allowed) or `{"ms": n}`, then outputs
/// `{"slept_ms": n}`. A cancel ends the wait at once with a retryable error.
#[derive(Debug, Clone, Copy, Default)]
pub struct SleepAgent;

/// Fails on purpose, for tests of retries and failure handling.
///
/// Input fields, all optional: `message` (the error message), `retryable` (default `true`), and
/// `succeed_on_attempt`: from that attempt number on, the agent succeeds with
/// `{"attempt": <attempt number>}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FailAgent;

#[async_trait]
impl Agent for NoopAgent {
    fn is_instant(&self) -> bool {
        true
    }

    async fn call(&self, _call: AgentCall) -> Result<AgentOutput, AgentError> {
        Ok(AgentOutput {
            output: json!({}),
            ..AgentOutput::default()
        })
    }
}

#[async_trait]
impl Agent for EchoAgent {
    fn is_instant(&self) -> bool {
        true
    }

    async fn call(&self, call: AgentCall) -> Result<AgentOutput, AgentError> {
        Ok(AgentOutput {
            output: call.input,
            ..AgentOutput::default()
        })
    }
}

#[async_trait]
impl Agent for SleepAgent {
    async fn call(&self, call: AgentCall) -> Result<AgentOutput, AgentError> {
        let duration = sleep_duration(&call.input)?;
        tokio::select! {
            () = call.cancel.cancelled() => Err(AgentError::cancelled("sleep")),
            () = tokio::time::sleep(duration) => {
                let slept_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
                Ok(AgentOutput { output: json!({"slept_ms": slept_ms}), ..AgentOutput::default() })
            }
        }
    }
}

fn sleep_duration(input: &Value) -> Result<Duration, AgentError> {
    let (field, scale) = match (input.get("seconds"), input.get("ms")) {
        (Some(seconds), None) => (seconds, 1.0),
        (None, Some(ms)) => (ms, 0.001),
        (Some(_), Some(_)) => {
            return Err(AgentError::permanent(
                "sleep input has both seconds and ms; give only one",
            ))
        }
        (None, None) => {
            return Err(AgentError::permanent(
                "sleep input needs seconds or ms, such as {\"seconds\": 1.5} or {\"ms\": 200}",
            ))
        }
    };
    let invalid = || {
        AgentError::permanent(format!(
            "sleep duration {field} is invalid; give a non-negative number"
        ))
    };
    let amount = field.as_f64().ok_or_else(invalid)?;
    Duration::try_from_secs_f64(amount * scale).map_err(|_| invalid())
}

#[async_trait]
impl Agent for FailAgent {
    fn is_instant(&self) -> bool {
        true
    }

    async fn call(&self, call: AgentCall) -> Result<AgentOutput, AgentError> {
        let input = &call.input;
        if let Some(field) = input.get("succeed_on_attempt") {
            let Some(succeed_on) = field.as_u64() else {
                return Err(AgentError::permanent(format!(
                    "fail input succeed_on_attempt {field} is invalid; give an attempt number \
                     such as 3"
                )));
            };
            if u64::from(call.attempt) >= succeed_on {
                let output = json!({"attempt": call.attempt});
                return Ok(AgentOutput {
                    output,
                    ..AgentOutput::default()
                });
            }
        }
        let message = match input.get("message") {
            Some(Value::String(message)) => message.clone(),
            _ => format!(
                "attempt {} failed as the fail agent was asked to",
                call.attempt
            ),
        };
        let is_retryable = input
            .get("retryable")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        Err(AgentError {
            is_retryable,
            ..AgentError::retryable(message)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::test_support;

    fn call_with(input: Value, attempt: u32) -> AgentCall {
        AgentCall {
            attempt,
            ..test_support::call_with(input)
        }
    }

    #[tokio::test]
    async fn noop_outputs_empty_object() {
        let output = NoopAgent.call(call_with(json!({"a": 1}), 1)).await;
        assert_eq!(output.map(|o| o.output), Ok(json!({})));
    }

    #[tokio::test]
    async fn echo_outputs_input() {
        let input = json!({"a": [1, "two", null]});
        let output = EchoAgent.call(call_with(input.clone(), 1)).await;
        assert_eq!(output.map(|o| o.output), Ok(input));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_seconds_reports_slept_ms() {
        let output = SleepAgent.call(call_with(json!({"seconds": 1.5}), 1)).await;
        assert_eq!(output.map(|o| o.output), Ok(json!({"slept_ms": 1500})));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_ms_reports_slept_ms() {
        let output = SleepAgent.call(call_with(json!({"ms": 20}), 1)).await;
        assert_eq!(output.map(|o| o.output), Ok(json!({"slept_ms": 20})));
    }

    #[tokio::test]
    async fn sleep_stops_on_cancel() {
        let call = call_with(json!({"seconds": 3600}), 1);
        call.cancel.cancel();
        let error = SleepAgent
            .call(call)
            .await
            .expect_err("the call was cancelled");
        assert!(error.message.contains("cancelled"));
    }

    #[tokio::test]
    async fn sleep_rejects_bad_input() {
        for input in [
            json!({}),
            json!({"seconds": -1}),
            json!({"ms": "x"}),
            json!(3),
        ] {
            let error = SleepAgent.call(call_with(input.clone(), 1)).await;
            let error = error.expect_err("the input is invalid");
            assert!(!error.is_retryable, "input {input}");
        }
    }

    #[tokio::test]
    async fn fail_uses_message_and_retryable() {
        let input = json!({"message": "boom", "retryable": false});
        let error = FailAgent
            .call(call_with(input, 1))
            .await
            .expect_err("it always fails");
        assert_eq!(error.message, "boom");
        assert!(!error.is_retryable);
    }

    #[tokio::test]
    async fn fail_is_retryable_by_default() {
        let error = FailAgent
            .call(call_with(json!({}), 1))
            .await
            .expect_err("it fails");
        assert!(error.is_retryable);
    }

    #[tokio::test]
    async fn fail_succeeds_on_given_attempt() {
        let input = json!({"succeed_on_attempt": 3});
        let second = FailAgent.call(call_with(input.clone(), 2)).await;
        assert!(second.is_err());
        let third = FailAgent.call(call_with(input, 3)).await;
        assert_eq!(third.map(|o| o.output), Ok(json!({"attempt": 3})));
    }
}
