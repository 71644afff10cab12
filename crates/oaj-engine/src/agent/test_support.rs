//! Test helpers for agents: a call factory and a small HTTP/1.1 server on 127.0.0.1 that records
//! each request and replies with a canned response.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::AgentCall;

/// Returns the first attempt of a call with `input` and a fresh cancel token.
pub(crate) fn call_with(input: Value) -> AgentCall {
    AgentCall {
        input,
        capability: None,
        idempotency_key: "job-1/step-1/0/1".to_owned(),
        job_id: "job-1".to_owned(),
        step_id: "step-1".to_owned(),
        attempt: 1,
        cancel: CancellationToken::new(),
    }
}

/// A request as the test server read it. Header names are lowercase.
#[derive(Debug, Clone)]
pub(crate) struct RecordedRequest {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl RecordedRequest {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(key, _)| key == name);
        found.map(|(_, value)| value.as_str())
    }

    pub(crate) fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

/// The response the test server sends.
pub(crate) struct CannedResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl CannedResponse {
    pub(crate) fn json(status: u16, body: &str) -> CannedResponse {
        let headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        CannedResponse {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    pub(crate) fn text(status: u16, body: &str) -> CannedResponse {
        let headers = vec![("Content-Type".to_owned(), "text/plain".to_owned())];
        CannedResponse {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    pub(crate) fn with_header(mut self, name: &str, value: &str) -> CannedResponse {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn to_bytes(&self) -> Vec<u8> {
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|status| status.canonical_reason())
            .unwrap_or("Unknown");
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        [head.as_bytes(), self.body.as_bytes()].concat()
    }
}

type Handler = dyn Fn(&RecordedRequest) -> CannedResponse + Send + Sync;

/// A server on 127.0.0.1 that serves until dropped.
pub(crate) struct TestServer {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    connected: Arc<Notify>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server that replies to each request with the response `handler` builds.
    pub(crate) async fn start(
        handler: impl Fn(&RecordedRequest) -> CannedResponse + Send + Sync + 'static,
    ) -> TestServer {
        TestServer::spawn(Some(Arc::new(handler))).await
    }

    /// Starts a server that accepts connections and never replies.
    pub(crate) async fn start_silent() -> TestServer {
        TestServer::spawn(None).await
    }

    async fn spawn(handler: Option<Arc<Handler>>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connected = Arc::new(Notify::new());
        let (requests_in_task, connected_in_task) = (requests.clone(), connected.clone());
        let task = tokio::spawn(async move {
            // Silent connections stay open until the server is dropped.
            let mut open_connections = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                connected_in_task.notify_one();
                match &handler {
                    Some(handler) => {
                        connection_serve(stream, handler.as_ref(), &requests_in_task).await;
                    }
                    None => open_connections.push(stream),
                }
            }
        });
        TestServer {
            address,
            requests,
            connected,
            task,
        }
    }

    /// Returns the URL of `path` on an address where nothing listens.
    pub(crate) async fn closed_port_url() -> String {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        drop(listener);
        format!("http://{address}/")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Returns the `index`th request received.
    pub(crate) fn request(&self, index: usize) -> RecordedRequest {
        let requests = self
            .requests
            .lock()
            .expect("no test thread panicked holding it");
        requests
            .get(index)
            .cloned()
            .expect("the server received that many requests")
    }

    /// Waits until a client has connected.
    pub(crate) async fn wait_for_connection(&self) {
        self.connected.notified().await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connection_serve(
    mut stream: TcpStream,
    handler: &Handler,
    requests: &Mutex<Vec<RecordedRequest>>,
) {
    let Some(request) = request_read(&mut stream).await else {
        return;
    };
    let response = handler(&request);
    requests
        .lock()
        .expect("no test thread panicked holding it")
        .push(request);
    // The client may have gone; the test then fails on its own assertions.
    let _ = stream.write_all(&response.to_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn request_read(stream: &mut TcpStream) -> Option<RecordedRequest> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(position) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break position;
        }
        let mut chunk = [0; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, path) = (
        request_line.next()?.to_owned(),
        request_line.next()?.to_owned(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    Some(RecordedRequest {
        method,
        path,
        headers,
        body,
    })
}
