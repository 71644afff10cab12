//! The HTTP client of the commands that act on a running `oaj serve` through `--server`.

use anyhow::Context;
use clap::Args;
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// Where a running server is, and how to authenticate to it.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// URL of a running `oaj serve`, such as http://127.0.0.1:7070. With it the command uses the
    /// HTTP API, and --db is ignored.
    #[arg(long, env = "OAJ_SERVER", value_name = "URL", global = true)]
    pub server: Option<String>,
    /// Bearer token for --server. Prefer the environment variable: other users can read command
    /// lines.
    #[arg(
        long,
        env = "OAJ_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        global = true
    )]
    pub token: Option<String>,
}

impl ServerArgs {
    /// Returns a client of `--server`, or `None` when the command should use the local database.
    pub fn client(&self) -> anyhow::Result<Option<ApiClient>> {
        self.server
            .as_deref()
            .map(|url| ApiClient::new(url, self.token.clone()))
            .transpose()
    }
}

/// An error response of the API: its status, stable code, message and validation report.
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: u16,
    /// Stable error code, such as `job_not_found`.
    pub code: String,
    /// The server's message.
    pub message: String,
    /// Every validation problem, for `workflow_invalid` and `input_invalid`.
    pub report: Option<Value>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "the server rejected the request ({} {}): {}",
            self.status, self.code, self.message
        )
    }
}

impl std::error::Error for ApiFailure {}

/// The body of an API error.
#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
    report: Option<Value>,
}

/// A client of one server's `/v1` API.
pub struct ApiClient {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// Builds a client of the server at `url`; fails when `url` is not an http URL.
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<ApiClient> {
        let base = Url::parse(url)
            .ok()
            .filter(|base| base.scheme() == "http" && base.has_host())
            .with_context(|| {
                format!("invalid --server {url:?}: expected a URL such as http://127.0.0.1:7070")
            })?;
        Ok(ApiClient {
            base,
            token,
            http: reqwest::Client::new(),
        })
    }

    /// Builds the URL of `segments` under the base URL, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http URL has path segments")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// Starts a request to `segments`, with the bearer token when one is set.
    pub fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let request = self.http.request(method, self.url(segments));
        match &self.token {
            // reqwest marks the header as sensitive, so it stays out of debug output.
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request`. A connection failure names the server and suggests `oaj serve`, and an
    /// error status becomes an [`ApiFailure`].
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request.send().await.map_err(|error| {
            let hint = if error.is_connect() {
                ": is the server running? Start one with `oaj serve`"
            } else {
                ""
            };
            anyhow::anyhow!(
                "cannot reach the oaj server at {}: {}{hint}",
                self.base,
                error_chain(&error)
            )
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let failure = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => ApiFailure {
                status: status.as_u16(),
                code: body.code,
                message: body.message,
                report: body.report,
            },
            Err(_) => ApiFailure {
                status: status.as_u16(),
                code: "unknown".to_owned(),
                message: format!("unexpected response from {}: {text:.200}", self.base),
                report: None,
            },
        };
        Err(failure.into())
    }

    /// Sends `request` and parses the JSON body of the response as `T`.
    pub async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> anyhow::Result<T> {
        let response = self.send(request).await?;
        let url = response.url().clone();
        response
            .json()
            .await
            .with_context(|| format!("invalid response from {url}"))
    }

    /// Fetches `segments` as JSON.
    pub async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> anyhow::Result<T> {
        self.json(self.request(Method::GET, segments)).await
    }
}

/// Joins an error and its sources, because reqwest puts the useful part (such as "Connection
/// refused") in a source.
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

/// Reads the events of a Server-Sent Events response, one `data` payload at a time.
pub struct EventReader {
    response: Response,
    buffer: Vec<u8>,
}

impl EventReader {
    /// Reads the events of `response`.
    pub fn new(response: Response) -> EventReader {
        EventReader {
            response,
            buffer: Vec::new(),
        }
    }

    /// Returns the data of the next event, or `None` when the server closed the stream.
    /// Comments (such as keep-alives) and events without data are skipped.
    pub async fn next(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            if let Some(block) = self.block_take() {
                let data = event_data(&block);
                if !data.is_empty() {
                    return Ok(Some(data));
                }
                continue;
            }
            let chunk = self
                .response
                .chunk()
                .await
                .context("reading the event stream failed")?;
            match chunk {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }

    /// Removes and returns the first complete event block (text up to a blank line).
    fn block_take(&mut self) -> Option<String> {
        // The SSE format allows CRLF, CR or LF line ends; normalising to LF keeps the search
        // for a blank line simple.
        if self.buffer.contains(&b'\r') {
            let text = String::from_utf8_lossy(&self.buffer).replace("\r\n", "\n");
            self.buffer = text.replace('\r', "\n").into_bytes();
        }
        let end = self.buffer.windows(2).position(|pair| pair == b"\n\n")?;
        let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
        Some(String::from_utf8_lossy(&block).into_owned())
    }
}

/// Joins the `data` lines of one event block with newlines, as the SSE format defines.
fn event_data(block: &str) -> String {
    let lines = block.lines().filter_map(|line| {
        let data = line.strip_prefix("data")?;
        match data.strip_prefix(':') {
            Some(value) => Some(value.strip_prefix(' ').unwrap_or(value)),
            None if data.is_empty() => Some(""),
            None => None,
        }
    });
    lines.collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_data_joins_data_lines() {
        let block = "id: 7\nevent: job.completed\ndata: {\"a\":\ndata:1}\n\n";
        assert_eq!(event_data(block), "{\"a\":\n1}");
    }

    #[test]
    fn event_data_skips_comments() {
        assert_eq!(event_data(":\n\n"), "");
    }

    #[test]
    fn url_encodes_segments() {
        let client = ApiClient::new("http://127.0.0.1:7070/", None).expect("valid URL");
        let url = client.url(&["v1", "jobs", "a/b c"]);
        assert_eq!(url.as_str(), "http://127.0.0.1:7070/v1/jobs/a%2Fb%20c");
    }

    #[test]
    fn new_rejects_non_http_url() {
        assert!(ApiClient::new("127.0.0.1:7070", None).is_err());
        assert!(ApiClient::new("https://example.test", None).is_err());
    }
}
