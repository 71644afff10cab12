//! Durability of acknowledgements: `oaj serve` is killed with SIGKILL the moment it acknowledges
//! an enqueue or publishes a completion, and the SQLite file must still contain what it
//! acknowledged. Requests go over plain TCP, so the kill follows the reply with no client library
//! in between.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;

use serde_json::{json, Value};

use crate::server::{Server, TOKEN};
use crate::{stderr, Sandbox, WAIT_MAX};

/// Builds a workflow whose one step appends its job id to `log` and outputs its input.
fn logging_workflow(log: &str) -> Value {
    let script = format!("echo \"$OAJ_JOB_ID\" >> '{log}'; cat");
    json!({
        "id": "durable",
        "inputs": {"n": {"type": "integer"}},
        "steps": [{"id": "work", "component": "work_sh", "inputs": {"n": "${inputs.n}"}}],
        "agents": {"work_sh": {"kind": "command", "command": ["sh", "-c", script]}}
    })
}

/// Sends one request with `Connection: close` and returns the whole response as the server sent
/// it, or `None` when the connection failed before the server closed it.
fn request(address: &str, method: &str, path: &str, body: &Value) -> Option<String> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(WAIT_MAX)).ok()?;
    let body = body.to_string();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Returns the body of a complete 2xx response, or `None` for any other status or a response cut
/// short. The server sends JSON bodies with a `Content-Length`, never chunked.
fn acknowledged(response: &str) -> Option<Value> {
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?;
    if !status.starts_with('2') {
        return None;
    }
    serde_json::from_str(body).ok()
}

/// Posts one job and returns its id, panicking unless the server acknowledges it.
fn job_post(server: &Server, workflow: &Value, n: i64) -> String {
    let body = json!({"workflow": workflow, "input": {"n": n}});
    let response = request(&server.address, "POST", "/v1/jobs", &body).expect("a response");
    let job = acknowledged(&response).unwrap_or_else(|| panic!("job not created: {response}"));
    job["id"].as_str().expect("job id").to_owned()
}

/// Posts a batch of jobs with inputs `first..first + count` and returns their ids in order.
fn batch_post(server: &Server, first: i64, count: i64) -> Vec<String> {
    let jobs: Vec<Value> = (first..first + count)
        .map(|n| json!({"workflow_id": "durable", "input": {"n": n}}))
        .collect();
    let body = json!({ "jobs": jobs });
    let response = request(&server.address, "POST", "/v1/batches", &body).expect("a response");
    let batch = acknowledged(&response).unwrap_or_else(|| panic!("batch not created: {response}"));
    let ids = batch["job_ids"].as_array().expect("job ids");
    ids.iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect()
}

/// Asserts that the file contains job `id`, in `state`, with input `{"n": n}`.
fn assert_stored(sandbox: &Sandbox, id: &str, n: i64, state: &str) {
    let shown = sandbox.show(id);
    assert_eq!(shown["job"]["state"], state, "job {id}");
    assert_eq!(shown["job"]["input"], json!({"n": n}), "job {id}");
}

#[test]
fn acknowledged_jobs_survive_kill() {
    let sandbox = Sandbox::new();
    let workflow = logging_workflow(sandbox.path("runs.log").to_str().unwrap());
    let mut acknowledged = Vec::new();

    // Each server lives for one request: it is killed as soon as its reply has arrived.
    for round in 0..3 {
        let server = Server::start_with(&sandbox, &["--workers", "0"]);
        let n = round * 1000;
        let id = job_post(&server, &workflow, n);
        server.kill();
        acknowledged.push((id, n));

        let server = Server::start_with(&sandbox, &["--workers", "0"]);
        let first = round * 1000 + 1;
        let ids = batch_post(&server, first, 25);
        server.kill();
        acknowledged.extend(ids.into_iter().zip(first..));
    }

    for (id, n) in &acknowledged {
        assert_stored(&sandbox, id, *n, "queued");
    }
    let listed = sandbox.json(&["jobs", "list", "--limit", "1000"]);
    let listed = listed.as_array().expect("job list is an array");
    assert_eq!(listed.len(), acknowledged.len());
}

#[test]
fn concurrent_acknowledged_jobs_survive_kill() {
    let sandbox = Sandbox::new();
    let workflow = logging_workflow(sandbox.path("runs.log").to_str().unwrap());
    let server = Server::start_with(&sandbox, &["--workers", "0"]);
    // Register the workflow first, so that every request below takes the same path.
    let first = job_post(&server, &workflow, 0);

    // Many clients post at once, so that the writer commits several of them together, and the
    // server dies as soon as any of them is acknowledged.
    let (replies, acknowledgements) = mpsc::channel();
    let clients: Vec<_> = (1..=16)
        .map(|n| {
            let address = server.address.clone();
            let replies = replies.clone();
            std::thread::spawn(move || {
                for attempt in 0..20 {
                    let n = n * 100 + attempt;
                    let body = json!({"workflow_id": "durable", "input": {"n": n}});
                    let Some(response) = request(&address, "POST", "/v1/jobs", &body) else {
                        return;
                    };
                    let Some(job) = acknowledged(&response) else {
                        return;
                    };
                    let id = job["id"].as_str().expect("job id").to_owned();
                    if replies.send((id, n)).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(replies);
    let mut acknowledged = vec![acknowledgements
        .recv_timeout(WAIT_MAX)
        .expect("one job is acknowledged")];
    server.kill();
    for client in clients {
        client.join().expect("client thread");
    }
    acknowledged.extend(acknowledgements.try_iter());

    assert_stored(&sandbox, &first, 0, "queued");
    for (id, n) in &acknowledged {
        assert_stored(&sandbox, id, *n, "queued");
    }
}

/// Opens the event stream of job completions from the first event, and returns its lines.
fn completions_open(server: &Server) -> impl Iterator<Item = String> {
    let mut stream = TcpStream::connect(&server.address).expect("connect to oaj serve");
    stream
        .set_read_timeout(Some(WAIT_MAX))
        .expect("set a read timeout");
    let head = format!(
        "GET /v1/events?kind=job.completed&after=0 HTTP/1.1\r\nHost: {}\r\n\
         Authorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n",
        server.address
    );
    stream.write_all(head.as_bytes()).expect("send the request");
    BufReader::new(stream)
        .lines()
        .map(|line| line.expect("the event stream is readable"))
}

/// Reads lines until the next `job.completed` event and returns its job id.
fn completion_next(lines: &mut impl Iterator<Item = String>) -> String {
    for line in lines.by_ref() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let event: Value = serde_json::from_str(data.trim()).expect("event data is JSON");
        assert_eq!(event["kind"], "job.completed", "{event}");
        return event["job_id"].as_str().expect("job id").to_owned();
    }
    panic!("the event stream ended before a job completed");
}

#[test]
fn completed_job_survives_kill() {
    let sandbox = Sandbox::new();
    let workflow = logging_workflow(sandbox.path("runs.log").to_str().unwrap());
    let server = Server::start_with(&sandbox, &["--lease-seconds", "1"]);
    let mut completions = completions_open(&server);
    let mut ids = vec![job_post(&server, &workflow, 0)];
    ids.extend(batch_post(&server, 1, 9));

    let completed = completion_next(&mut completions);
    server.kill();

    // The file is read with no process running that could change it.
    let n = ids
        .iter()
        .position(|id| *id == completed)
        .expect("one of ours") as i64;
    assert_stored(&sandbox, &completed, n, "completed");
    let shown = sandbox.show(&completed);
    assert_eq!(shown["job"]["result"], json!({"work": {"n": n}}));
    assert_eq!(sandbox.attempt_states(&completed, "work"), ["succeeded"]);
    assert_eq!(sandbox.count_lines("runs.log", &completed), 1);

    // A worker on the same file finishes the other jobs, and must leave the completed one alone.
    let worker = sandbox.oaj(&["worker", "--exit-when-idle", "--lease-seconds", "1"]);
    assert_eq!(worker.status.code(), Some(0), "{}", stderr(&worker));
    assert_eq!(sandbox.attempt_states(&completed, "work"), ["succeeded"]);
    assert_eq!(sandbox.count_lines("runs.log", &completed), 1);
    for (n, id) in ids.iter().enumerate() {
        assert_stored(&sandbox, id, n as i64, "completed");
    }
}
