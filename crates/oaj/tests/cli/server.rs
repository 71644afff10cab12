//! `oaj submit` and `oaj jobs` with `--server`: against a real `oaj serve` on a loopback port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};

use serde_json::{json, Value};

use crate::{finish, shell_workflow, signal, stderr, stdout, Sandbox};

pub(crate) const TOKEN: &str = "test-token-5f1c";

const ECHO_WORKFLOW: &str = r#"{"id": "greet", "inputs": {"name": {"type": "string"}},
    "steps": [{"id": "hello", "component": "echo", "inputs": {"name": "${inputs.name}"}}]}"#;

/// An `oaj serve` child process with a token, stopped with SIGTERM when dropped.
pub(crate) struct Server {
    child: Child,
    /// `IP:port` the server listens on.
    pub(crate) address: String,
    pub(crate) url: String,
    is_reaped: bool,
}

impl Server {
    pub(crate) fn start(sandbox: &Sandbox) -> Server {
        Server::start_with(sandbox, &[])
    }

    /// Starts `oaj serve` on a free loopback port with `args` added.
    pub(crate) fn start_with(sandbox: &Sandbox, args: &[&str]) -> Server {
        Server::start_logging(sandbox, args, "info", true)
    }

    /// Starts `oaj serve` with `log` as its log filter. Unless `keeps_stderr`, the read end of
    /// its stderr is closed once the address is read, so that every later log line fails.
    fn start_logging(sandbox: &Sandbox, args: &[&str], log: &str, keeps_stderr: bool) -> Server {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut child = sandbox
            .command(&all)
            .env("OAJ_TOKEN", TOKEN)
            .env("OAJ_LOG", log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("oaj serve starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let address = loop {
            let line = lines
                .next()
                .expect("oaj serve prints `listening on` before it exits")
                .expect("stderr is readable");
            if let Some(address) = line.strip_prefix("listening on ") {
                break address.to_owned();
            }
        };
        if keeps_stderr {
            // Keep reading, so that the server never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
        }
        Server {
            child,
            url: format!("http://{address}"),
            address,
            is_reaped: false,
        }
    }

    /// Kills the server with SIGKILL, so that it gets no chance to finish anything, and reaps it.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("oaj serve is killable");
        self.child.wait().expect("oaj serve is reaped");
        self.is_reaped = true;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A reaped pid may already belong to another process, so it must not be signalled.
        if self.is_reaped {
            return;
        }
        signal(i64::from(self.child.id()), "TERM");
        let _ = self.child.wait();
    }
}

/// Runs `oaj ARGS --server URL` with `token` in OAJ_TOKEN.
fn client(sandbox: &Sandbox, url: &str, token: &str, args: &[&str]) -> Output {
    let mut with_server = args.to_vec();
    with_server.extend_from_slice(&["--server", url]);
    let child = sandbox
        .command(&with_server)
        .env("OAJ_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("oaj starts");
    finish(child, &format!("oaj {}", args.join(" ")))
}

/// Runs a client command with the right token and asserts exit code 0.
fn ok(sandbox: &Sandbox, server: &Server, args: &[&str]) -> String {
    let output = client(sandbox, &server.url, TOKEN, args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "oaj {}: {}",
        args.join(" "),
        stderr(&output)
    );
    stdout(&output)
}

/// Submits `workflow` with input `{"name": NAME}` and the `extra` flags through the server, and
/// returns the job record that `--json` prints.
fn submit_json(
    sandbox: &Sandbox,
    server: &Server,
    workflow: &str,
    name: &str,
    extra: &[&str],
) -> Value {
    let input = json!({ "name": name }).to_string();
    let mut args = vec!["submit", workflow, "--input", &input, "--json"];
    args.extend_from_slice(extra);
    parse(&ok(sandbox, server, &args))
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("stdout is JSON")
}

#[test]
fn submit_wait_completes_job() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox);
    let workflow = sandbox.write("greet.json", ECHO_WORKFLOW);

    let job = submit_json(&sandbox, &server, &workflow, "ada", &["--wait"]);
    assert_eq!(job["state"], "completed");
    assert_eq!(job["result"]["hello"]["name"], "ada");
    let id = job["id"].as_str().expect("job id");

    let listed = parse(&ok(&sandbox, &server, &["jobs", "list", "--json"]));
    assert_eq!(listed[0]["id"], json!(id));
    let shown = ok(&sandbox, &server, &["jobs", "show", id]);
    assert!(shown.contains("state     completed"), "{shown}");
    assert!(shown.contains("hello"), "{shown}");
    let events = ok(&sandbox, &server, &["jobs", "events", id]);
    assert!(events.contains("job.completed"), "{events}");
}

/// Log lines that cannot be written are dropped, and the server goes on running jobs: a failed
/// log write used to panic whichever thread logged, the store's writer thread included.
#[test]
fn unwritable_log_keeps_server_working() {
    let sandbox = Sandbox::new();
    let server = Server::start_logging(&sandbox, &[], "debug", false);
    let workflow = sandbox.write("greet.json", ECHO_WORKFLOW);

    for name in ["ada", "grace"] {
        let input = json!({ "name": name }).to_string();
        let submitted = ok(
            &sandbox,
            &server,
            &["submit", &workflow, "--input", &input, "--wait", "--json"],
        );
        let job = parse(&submitted);
        assert_eq!(job["state"], "completed", "{job}");
        assert_eq!(job["result"]["hello"]["name"], name);
    }
}

/// With `--retention-days`, a job that ended is deleted once the retention has passed, and a
/// job that has not ended (here one delayed by an hour) stays.
#[test]
fn retention_deletes_ended_jobs() {
    let sandbox = Sandbox::new();
    // Two seconds.
    let server = Server::start_with(&sandbox, &["--retention-days", "0.0000232"]);
    let workflow = sandbox.write("greet.json", ECHO_WORKFLOW);

    let ended = submit_json(&sandbox, &server, &workflow, "ada", &["--wait"]);
    assert_eq!(ended["state"], "completed", "{ended}");
    let ended_id = ended["id"].as_str().expect("job id").to_owned();
    let delayed = submit_json(&sandbox, &server, &workflow, "bo", &["--delay", "3600"]);
    let delayed_id = delayed["id"].as_str().expect("job id").to_owned();

    crate::wait_for("the ended job to be deleted", || {
        let output = client(&sandbox, &server.url, TOKEN, &["jobs", "show", &ended_id]);
        (output.status.code() != Some(0)).then_some(())
    });
    let delayed_shown = client(&sandbox, &server.url, TOKEN, &["jobs", "show", &delayed_id]);
    assert_eq!(
        delayed_shown.status.code(),
        Some(0),
        "{}",
        stderr(&delayed_shown)
    );
    let ended_shown = client(&sandbox, &server.url, TOKEN, &["jobs", "show", &ended_id]);
    assert!(
        stderr(&ended_shown).contains("not found"),
        "{}",
        stderr(&ended_shown)
    );
}

#[test]
fn submit_stored_workflow_by_id() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox);
    let workflow = sandbox.write("greet.json", ECHO_WORKFLOW);
    let input = r#"{"name": "bo"}"#;
    ok(&sandbox, &server, &["submit", &workflow, "--input", input]);

    let output = ok(
        &sandbox,
        &server,
        &["submit", "greet", "--input", input, "--wait"],
    );
    assert_eq!(parse(&output)["hello"]["name"], "bo");
}

#[test]
fn submit_wait_failed_job_exits_4() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox);
    let workflow = sandbox.write("fail.json", &shell_workflow(&[("s", "exit 3", json!({}))]));

    let output = client(
        &sandbox,
        &server.url,
        TOKEN,
        &["submit", &workflow, "--wait"],
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(stderr(&output).contains("failed"), "{}", stderr(&output));
}

#[test]
fn submit_invalid_input_exits_3() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox);
    let workflow = sandbox.write("greet.json", ECHO_WORKFLOW);

    let output = client(
        &sandbox,
        &server.url,
        TOKEN,
        &["submit", &workflow, "--input", r#"{"nam": "x"}"#],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("input_invalid"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("/inputs/nam"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn cancel_delayed_job() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox);
    let workflow = sandbox.write("greet.json", ECHO_WORKFLOW);
    let submitted = ok(
        &sandbox,
        &server,
        &[
            "submit",
            &workflow,
            "--input",
            r#"{"name": "x"}"#,
            "--delay",
            "3600",
        ],
    );
    let id = submitted.trim();

    let cancelled = ok(&sandbox, &server, &["jobs", "cancel", id]);
    assert_eq!(cancelled.trim(), format!("job {id} is now cancelled"));
    let shown = parse(&ok(&sandbox, &server, &["jobs", "show", id, "--json"]));
    assert_eq!(shown["job"]["state"], "cancelled");
    let again = client(&sandbox, &server.url, TOKEN, &["jobs", "cancel", id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("409 job_state_conflict"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn unknown_job_exits_1_with_code() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox);

    let output = client(
        &sandbox,
        &server.url,
        TOKEN,
        &["jobs", "show", "no-such-job"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("404 job_not_found"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn wrong_token_exits_1() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox);

    let output = client(&sandbox, &server.url, "wrong-token-9a", &["jobs", "list"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("401 unauthorized"), "{message}");
    assert!(message.contains("bearer token"), "{message}");
    assert!(!message.contains("wrong-token-9a"), "{message}");
    assert!(!stdout(&output).contains("wrong-token-9a"));
}

#[test]
fn unreachable_server_names_url() {
    let sandbox = Sandbox::new();
    // A port that was free a moment ago, so that nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("bound address")
        .port();
    let url = format!("http://127.0.0.1:{port}");

    let output = client(&sandbox, &url, TOKEN, &["jobs", "list"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("oaj serve"), "{message}");
    assert!(!message.contains(TOKEN), "{message}");
}

/// A tmpfs of a fixed size mounted on a new temporary folder, and unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (such as "4m"), or returns `None` when not running as root, which
    /// mounting needs.
    fn mount(size: &str) -> Option<Tmpfs> {
        let uid = std::process::Command::new("id")
            .arg("-u")
            .output()
            .expect("id runs");
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mount of a tmpfs failed as root: {status}"
        );
        Some(Tmpfs { dir })
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Writes zeros to `name` until the tmpfs has no space left.
    fn fill(&self, name: &str) {
        use std::io::Write;

        let mut file = std::fs::File::create(self.path(name)).expect("filler file");
        let chunk = vec![0u8; 16 * 1024];
        while file.write_all(&chunk).is_ok() {}
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// A full disk gets 503 `store_full` from the API, keeps every job stored before it, and the
/// server takes jobs again once space is freed.
#[test]
fn full_disk_gets_store_full() {
    let Some(tmpfs) = Tmpfs::mount("4m") else {
        eprintln!(
            "SKIPPED full_disk_gets_store_full: mounting a tmpfs needs root; CI runs as root"
        );
        return;
    };
    let sandbox = Sandbox::with_db(tmpfs.path("oaj.db"));
    let server = Server::start(&sandbox);
    let workflow = sandbox.write("greet.json", ECHO_WORKFLOW);
    let big_input = json!({ "name": "x".repeat(200_000) }).to_string();
    let big_input = format!("@{}", sandbox.write("big.json", &big_input));

    let before = submit_json(&sandbox, &server, &workflow, "ada", &["--wait"]);
    assert_eq!(before["state"], "completed", "{before}");
    let before_id = before["id"].as_str().expect("job id");

    tmpfs.fill("filler");
    let submit_big = || {
        client(
            &sandbox,
            &server.url,
            TOKEN,
            &["submit", &workflow, "--input", &big_input],
        )
    };
    let rejected = (0..20)
        .map(|_| submit_big())
        .find(|output| output.status.code() != Some(0))
        .expect("a submit fails once the disk is full");
    let message = stderr(&rejected);
    assert_eq!(rejected.status.code(), Some(1), "{message}");
    assert!(message.contains("503 store_full"), "{message}");
    assert!(message.contains("free space"), "{message}");

    // An input larger than SQLite's default page cache (about 2 MB) fails in the middle of its
    // insert, not at the commit, and SQLite then ends the transaction itself.
    let huge_input = json!({ "name": "y".repeat(3_000_000) }).to_string();
    let huge_input = format!("@{}", sandbox.write("huge.json", &huge_input));
    let huge = client(
        &sandbox,
        &server.url,
        TOKEN,
        &["submit", &workflow, "--input", &huge_input],
    );
    let message = stderr(&huge);
    assert_eq!(huge.status.code(), Some(1), "{message}");
    assert!(message.contains("503 store_full"), "{message}");

    let before_shown = ok(&sandbox, &server, &["jobs", "show", before_id]);
    assert!(before_shown.contains("completed"), "{before_shown}");

    std::fs::remove_file(tmpfs.path("filler")).expect("filler is removable");
    let after = submit_big();
    assert_eq!(after.status.code(), Some(0), "{}", stderr(&after));
    let after_id = stdout(&after).trim().to_owned();
    crate::wait_for(
        "the job submitted after the disk was freed to complete",
        || {
            let shown = ok(&sandbox, &server, &["jobs", "show", &after_id]);
            shown.contains("completed").then_some(())
        },
    );
    drop(server);
}

/// Regression: the server's message about an invalid document went to the terminal raw, with the
/// escape sequence of the document's id in it.
#[test]
fn server_message_printed_escaped() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox);
    let workflow = sandbox.write(
        "bad.json",
        r#"{"id": "bad\u001b]0;TITLE\u0007id", "steps": [{"id": "a", "component": "echo"}]}"#,
    );

    let output = client(&sandbox, &server.url, TOKEN, &["submit", &workflow]);

    let message = stderr(&output);
    assert_ne!(output.status.code(), Some(0), "{message}");
    assert!(message.contains("workflow_invalid"), "{message}");
    assert!(message.contains(r"bad\u{1b}]0;TITLE\u{7}id"), "{message}");
    assert!(!message.contains('\u{1b}'), "{message:?}");
    assert!(!message.contains('\u{7}'), "{message:?}");
}
