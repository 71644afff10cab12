//! Tests of the `oaj` binary, built as one test binary with a module per command or promise.
//!
//! Every test that touches a database works in its own [`Sandbox`]: a temporary folder with its
//! own database file, where workflows and the files their steps write also live.

mod bench;
mod control;
mod database;
mod durability;
mod examples;
mod fleet;
mod jobs;
mod pg_restart;
mod recovery;
mod run;
mod server;
mod validate;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root, where the examples' relative paths resolve.
pub(crate) const REPOSITORY_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Maximum time a test waits for a process or a state before it fails. Generous, because the
/// tests share the machine with builds; a healthy run takes a small fraction of it.
pub(crate) const WAIT_MAX: Duration = Duration::from_secs(60);

/// Runs the real `oaj` binary with `args` from the repository root.
pub(crate) fn oaj(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oaj"))
        .args(args)
        .current_dir(REPOSITORY_ROOT)
        .output()
        .expect("the oaj binary runs")
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Polls `check` every 50 ms until it returns a value, and panics naming `what` after
/// [`WAIT_MAX`].
pub(crate) fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT_MAX:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `child` to exit and returns its output, killing it and panicking after [`WAIT_MAX`].
///
/// Its pipes are read while it runs: a child that filled a pipe (64 KiB on Linux) would otherwise
/// wait for a reader until the deadline.
pub(crate) fn finish(mut child: Child, what: &str) -> Output {
    let stdout = child.stdout.take().map(pipe_read);
    let stderr = child.stderr.take().map(pipe_read);
    let deadline = Instant::now() + WAIT_MAX;
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status") {
            break status;
        }
        if Instant::now() >= deadline {
            // Kill the process first, so that a failing test leaves nothing running.
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out after {WAIT_MAX:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let joined = |reader: Option<std::thread::JoinHandle<Vec<u8>>>| {
        reader.map_or_else(Vec::new, |reader| reader.join().expect("pipe reader ends"))
    };
    Output {
        status,
        stdout: joined(stdout),
        stderr: joined(stderr),
    }
}

/// Reads a child's pipe to its end on a thread of its own.
fn pipe_read(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes).expect("the pipe is readable");
        bytes
    })
}

/// Regression: a child that filled a pipe waited for a reader until
/// [`finish`] timed out.
#[test]
fn finish_reads_large_output() {
    let child = Command::new("sh")
        .args([
            "-c",
            "head -c 1000000 /dev/zero; head -c 300000 /dev/zero >&2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh starts");
    let output = finish(child, "sh printing 1.3 MB");
    assert!(output.status.success());
    assert_eq!(output.stdout.len(), 1_000_000);
    assert_eq!(output.stderr.len(), 300_000);
}

/// Sends `signal` (such as "KILL" or "INT") to a process, or to a process group when `pid` is
/// negative.
pub(crate) fn signal(pid: i64, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), "--".to_owned(), pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .expect("kill runs");
    // A process that already exited is fine: the point is that it no longer runs.
    let _ = status;
}

/// Returns whether process `pid` has ended: no /proc entry, or a zombie not yet reaped.
pub(crate) fn is_gone(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name, which may itself contain spaces.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// A temporary folder with its own database, workflows and step files.
pub(crate) struct Sandbox {
    dir: tempfile::TempDir,
    db: PathBuf,
}

impl Sandbox {
    pub(crate) fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("oaj.db");
        Sandbox { dir, db }
    }

    /// Creates a sandbox whose database is `db`, in a folder of the caller's, instead of a file
    /// in the sandbox.
    pub(crate) fn with_db(db: PathBuf) -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        Sandbox { dir, db }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn db(&self) -> &Path {
        &self.db
    }

    /// Writes `text` to `name` in the sandbox and returns the path as a string.
    pub(crate) fn write(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).expect("sandbox file is writable");
        path.to_str().expect("UTF-8 temp path").to_owned()
    }

    /// Reads a sandbox file, or returns "" when it does not exist yet.
    pub(crate) fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Returns the lines of a sandbox file equal to `line`.
    pub(crate) fn count_lines(&self, name: &str, line: &str) -> usize {
        self.read(name).lines().filter(|l| *l == line).count()
    }

    /// Reads a pid a step wrote to `name`, once the file contains a whole number.
    pub(crate) fn wait_pid(&self, name: &str) -> i64 {
        wait_for(&format!("a pid in {name}"), || {
            self.read(name).trim().parse().ok()
        })
    }

    /// Builds an `oaj` command with `args` followed by `--db` of this sandbox.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_oaj"));
        command
            .args(args)
            .arg("--db")
            .arg(&self.db)
            .current_dir(REPOSITORY_ROOT)
            .stdin(Stdio::null());
        command
    }

    /// Runs `oaj ARGS --db DB` to its end, killing it after [`WAIT_MAX`].
    pub(crate) fn oaj(&self, args: &[&str]) -> Output {
        let child = self.spawn(args);
        finish(child, &format!("oaj {}", args.join(" ")))
    }

    /// Starts `oaj ARGS --db DB` in the background with its output captured.
    pub(crate) fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the oaj binary starts")
    }

    /// Runs `oaj ARGS --db DB --json` and parses stdout, asserting exit code 0.
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let output = self.oaj(&with_json);
        assert_eq!(
            output.status.code(),
            Some(0),
            "oaj {}: {}",
            args.join(" "),
            stderr(&output)
        );
        serde_json::from_slice(&output.stdout).expect("stdout is JSON")
    }

    /// Returns the jobs of the sandbox database, newest first.
    pub(crate) fn jobs(&self) -> Vec<Value> {
        let list = self.json(&["jobs", "list"]);
        list.as_array().expect("job list is an array").clone()
    }

    /// Returns the id of the only job, or panics when there is not exactly one.
    pub(crate) fn only_job_id(&self) -> String {
        let jobs = self.jobs();
        assert_eq!(jobs.len(), 1, "expected one job: {jobs:?}");
        jobs[0]["id"].as_str().expect("job id").to_owned()
    }

    /// Waits until a job exists, and returns the id of the only one.
    pub(crate) fn wait_job_id(&self) -> String {
        wait_for("a job in the database", || {
            let jobs = self.jobs();
            jobs.first()
                .map(|job| job["id"].as_str().expect("id").to_owned())
        })
    }

    /// Returns `oaj jobs show ID --json`: the job, its step runs and its attempts.
    pub(crate) fn show(&self, id: &str) -> Value {
        self.json(&["jobs", "show", id])
    }

    pub(crate) fn job_state(&self, id: &str) -> String {
        self.show(id)["job"]["state"]
            .as_str()
            .expect("job state")
            .to_owned()
    }

    /// Returns the states of the attempts of `step`, in order.
    pub(crate) fn attempt_states(&self, id: &str, step: &str) -> Vec<String> {
        let shown = self.show(id);
        let attempts = shown["attempts"].as_array().expect("attempts").clone();
        attempts
            .iter()
            .filter(|attempt| attempt["step_id"] == step)
            .map(|attempt| attempt["state"].as_str().expect("state").to_owned())
            .collect()
    }
}

/// Quotes `text` as one POSIX shell word.
pub(crate) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Builds a workflow document whose steps run `sh -c SCRIPT` one after another, each given as
/// `(step id, script, extra step fields as a JSON object)`.
pub(crate) fn shell_workflow(steps: &[(&str, &str, Value)]) -> String {
    let mut agents = serde_json::Map::new();
    let mut documents = Vec::new();
    let mut previous: Option<&str> = None;
    for (id, script, extra) in steps {
        let agent = format!("{id}_sh");
        agents.insert(
            agent.clone(),
            serde_json::json!({"kind": "command", "command": ["sh", "-c", script]}),
        );
        let mut step = serde_json::json!({"id": id, "component": agent});
        if let Some(previous) = previous {
            step["depends_on"] = serde_json::json!([previous]);
        }
        for (key, value) in extra.as_object().into_iter().flatten() {
            step[key] = value.clone();
        }
        documents.push(step);
        previous = Some(id);
    }
    serde_json::json!({"id": "shell", "steps": documents, "agents": agents}).to_string()
}
