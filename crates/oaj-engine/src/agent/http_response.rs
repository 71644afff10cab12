//! Handling shared by the `http` and `llm` agents: reading a bounded response body and sorting
//! failures into retryable and permanent ones.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Response, StatusCode};

use super::{text_truncate, AgentError};

/// Most response body bytes read; a larger body fails the attempt.
pub(crate) const RESPONSE_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of an error response's body kept as the attempt's log.
const ERROR_BODY_LOG_BYTES: usize = 4096;

/// Reads the body of `response` and returns it when the status is 2xx.
///
/// `target` names the request in messages (method and URL as written in the workflow, so that
/// no secret from the environment appears).
///
/// # Errors
///
/// Retryable for 429, 5xx and a broken connection, with `Retry-After` in `retry_after`.
/// Permanent for other statuses and for a body above [`RESPONSE_MAX_BYTES`].
pub(crate) async fn response_body(response: Response, target: &str) -> Result<Vec<u8>, AgentError> {
    let status = response.status();
    let headers = response.headers().clone();
    let body = body_read_bounded(response, target).await?;
    tracing::debug!(
        status = status.as_u16(),
        body_bytes = body.len(),
        "response received"
    );
    if status.is_success() {
        return Ok(body);
    }
    Err(status_error(
        status,
        &headers,
        &body,
        target,
        SystemTime::now(),
    ))
}

async fn body_read_bounded(mut response: Response, target: &str) -> Result<Vec<u8>, AgentError> {
    let too_large = || {
        AgentError::permanent(format!(
            "response of {target} is larger than {RESPONSE_MAX_BYTES} bytes; \
             make the service return less"
        ))
    };
    let declared = response.content_length().unwrap_or(0);
    if declared > RESPONSE_MAX_BYTES as u64 {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| request_error(e, target))?
    {
        if body.len() + chunk.len() > RESPONSE_MAX_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Builds the error for a non-2xx response.
pub(crate) fn status_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    target: &str,
    now: SystemTime,
) -> AgentError {
    let is_retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| retry_after_parse(value, now))
        .filter(|_| is_retryable);
    let advice = if is_retryable {
        "the service may recover, so the attempt can be retried"
    } else {
        "fix the request or the service; a retry would fail the same way"
    };
    let body_text = String::from_utf8_lossy(body);
    AgentError {
        message: format!("{target} returned {status}; {advice}"),
        is_retryable,
        retry_after,
        log: text_truncate(&body_text, ERROR_BODY_LOG_BYTES),
        usage: None,
    }
}

/// Parses a `Retry-After` value: a number of seconds or an HTTP date. A date in the past gives
/// zero; anything else gives `None`.
pub(crate) fn retry_after_parse(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Sorts a failure to send a request or read its response.
///
/// An invalid request (a bad URL, say) is permanent; a connection that fails, times out or breaks
/// is retryable. The URL is stripped from reqwest's message because it may hold a secret.
pub(crate) fn request_error(error: reqwest::Error, target: &str) -> AgentError {
    let is_retryable = !error.is_builder() && !error.is_redirect();
    let error = error.without_url();
    let message = if error.is_builder() {
        format!("request {target} is invalid: {error}; fix the agent's method, URL or headers")
    } else {
        format!("request {target} failed: {}", error_chain(&error))
    };
    AgentError {
        is_retryable,
        ..AgentError::retryable(message)
    }
}

/// Joins an error and its sources, because reqwest's own message hides the cause (connection
/// refused, for example) in the source chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers_with_retry_after(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_str(value).expect("valid header"),
        );
        headers
    }

    #[test]
    fn retry_after_parses_seconds() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(
            retry_after_parse(" 120 ", now),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn retry_after_parses_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("valid date");
        let later = retry_after_parse("Sun, 06 Nov 1994 08:50:07 GMT", now);
        assert_eq!(later, Some(Duration::from_secs(30)));
    }

    #[test]
    fn retry_after_past_date_is_zero() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("valid date");
        let earlier = retry_after_parse("Sun, 06 Nov 1994 08:00:00 GMT", now);
        assert_eq!(earlier, Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_rejects_garbage() {
        assert_eq!(retry_after_parse("soon", SystemTime::UNIX_EPOCH), None);
        assert_eq!(retry_after_parse("-5", SystemTime::UNIX_EPOCH), None);
    }

    #[test]
    fn status_error_classifies_statuses() {
        let now = SystemTime::UNIX_EPOCH;
        let cases = [
            (429, true),
            (500, true),
            (503, true),
            (400, false),
            (404, false),
        ];
        for (code, is_retryable) in cases {
            let status = StatusCode::from_u16(code).expect("valid status");
            let error = status_error(status, &HeaderMap::new(), b"", "POST http://x", now);
            assert_eq!(error.is_retryable, is_retryable, "status {code}");
        }
    }

    #[test]
    fn status_error_keeps_retry_after_only_when_retryable() {
        let now = SystemTime::UNIX_EPOCH;
        let headers = headers_with_retry_after("7");
        let unavailable = status_error(StatusCode::SERVICE_UNAVAILABLE, &headers, b"", "t", now);
        assert_eq!(unavailable.retry_after, Some(Duration::from_secs(7)));
        let bad_request = status_error(StatusCode::BAD_REQUEST, &headers, b"", "t", now);
        assert_eq!(bad_request.retry_after, None);
    }

    #[test]
    fn status_error_keeps_body_as_log() {
        let now = SystemTime::UNIX_EPOCH;
        let error = status_error(StatusCode::BAD_REQUEST, &HeaderMap::new(), b"no", "t", now);
        assert_eq!(error.log, "no");
        assert!(error.message.contains("400"));
    }
}
