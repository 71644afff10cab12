//! The `command` agent: runs a local program in its own process group, with the step input as
//! JSON on stdin and the step output read from stdout.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use oaj_core::workflow::CommandSpec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio_util::sync::CancellationToken;

use super::env_template::env_interpolate;
use super::process_group::ProcessGroup;
use super::{output_from_bytes, text_truncate, Agent, AgentCall, AgentError, AgentOutput};

/// Time a cancelled command gets between SIGTERM and SIGKILL, unless `with_grace` sets another.
const GRACE_DEFAULT: Duration = Duration::from_secs(5);
/// Maximum stdout bytes read. A command that writes more fails.
const STDOUT_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of stderr kept as the attempt's log: the last ones, because errors come at the end.
const STDERR_TAIL_BYTES: usize = 64 * 1024;
/// Maximum bytes of the stderr line quoted in an error message.
const ERROR_LINE_MAX_BYTES: usize = 300;

/// Runs a program for each attempt.
///
/// The program gets argv from `spec.command` (through `sh -c` only when `spec.shell` is set),
/// the step input as JSON on stdin, `spec.env` on top of the worker's environment, and
/// `OAJ_JOB_ID`, `OAJ_STEP_ID`, `OAJ_ATTEMPT`, `OAJ_IDEMPOTENCY_KEY` and, for
/// `agent.capability` components, `OAJ_CAPABILITY`. Its stdout is the step output: JSON when it
/// parses, otherwise the trimmed text as a string. The tail of stderr is the attempt's log.
///
/// The program leads its own process group. When it exits, processes it left in the group are
/// killed. On cancel the group gets SIGTERM, and SIGKILL after the grace period if the program
/// is still running. Dropping the call future kills the group at once.
pub struct CommandAgent {
    spec: CommandSpec,
    base_dir: Option<PathBuf>,
    grace: Duration,
}

/// The program to start, its arguments, and the name used in messages.
struct Invocation {
    program: PathBuf,
    args: Vec<String>,
    display: String,
}

/// The outcome of supervising a child: its exit, its output, and the tail of its stderr.
struct ChildRun {
    status: std::io::Result<ExitStatus>,
    is_cancelled: bool,
    io: Option<IoResult>,
    log: String,
}

type IoResult = (std::io::Result<()>, Result<Vec<u8>, StdoutError>);

enum StdoutError {
    Read(std::io::Error),
    TooLarge,
}

impl CommandAgent {
    /// Creates an agent for `spec`. A relative `spec.cwd`, and a relative program path such as
    /// `./run.sh`, are taken from `base_dir` (the workflow file's folder), which is also the
    /// working directory when `spec.cwd` is absent.
    pub fn new(spec: CommandSpec, base_dir: Option<PathBuf>) -> CommandAgent {
        CommandAgent {
            spec,
            base_dir,
            grace: GRACE_DEFAULT,
        }
    }

    /// Sets the time between SIGTERM and SIGKILL when an attempt is cancelled (5 s by default).
    pub fn with_grace(mut self, grace: Duration) -> CommandAgent {
        self.grace = grace;
        self
    }

    fn working_dir(&self) -> Option<PathBuf> {
        match (&self.spec.cwd, &self.base_dir) {
            (Some(cwd), Some(base)) => Some(base.join(cwd)),
            (Some(cwd), None) => Some(PathBuf::from(cwd)),
            (None, base) => base.clone(),
        }
    }

    fn invocation(&self, working_dir: Option<&Path>) -> Result<Invocation, AgentError> {
        let Some((first, rest)) = self.spec.command.split_first() else {
            return Err(AgentError::permanent(
                "command is empty; give the program and its arguments, such as [\"python3\", \"run.py\"]",
            ));
        };
        if self.spec.shell {
            // Extra elements become the script's $1, $2, ... and "sh" is its $0.
            let mut args = vec!["-c".to_owned(), first.clone(), "sh".to_owned()];
            args.extend(rest.iter().cloned());
            let display = format!("sh -c {}", text_truncate(first, 60));
            return Ok(Invocation {
                program: "sh".into(),
                args,
                display,
            });
        }
        // A relative path with a slash is resolved here, because whether the OS resolves it
        // against the parent's or the child's working directory differs between platforms.
        let mut program = PathBuf::from(first);
        if first.contains('/') && program.is_relative() {
            if let Some(dir) = working_dir {
                program = dir.join(program);
            }
        }
        Ok(Invocation {
            program,
            args: rest.to_vec(),
            display: first.clone(),
        })
    }

    fn command_build(
        &self,
        invocation: &Invocation,
        working_dir: Option<&Path>,
        call: &AgentCall,
    ) -> Result<Command, AgentError> {
        let mut command = Command::new(&invocation.program);
        command.args(&invocation.args);
        for (name, template) in &self.spec.env {
            command.env(name, env_interpolate(template, &format!("env {name}"))?);
        }
        // Set after `spec.env` so that a workflow cannot fake them.
        command
            .env("OAJ_JOB_ID", &call.job_id)
            .env("OAJ_STEP_ID", &call.step_id)
            .env("OAJ_ATTEMPT", call.attempt.to_string())
            .env("OAJ_IDEMPOTENCY_KEY", &call.idempotency_key);
        match &call.capability {
            Some(capability) => command.env("OAJ_CAPABILITY", capability),
            None => command.env_remove("OAJ_CAPABILITY"),
        };
        if let Some(dir) = working_dir {
            command.current_dir(dir);
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        Ok(command)
    }
}

#[async_trait]
impl Agent for CommandAgent {
    async fn call(&self, call: AgentCall) -> Result<AgentOutput, AgentError> {
        if call.cancel.is_cancelled() {
            return Err(AgentError::cancelled("command"));
        }
        let working_dir = self.working_dir();
        let invocation = self.invocation(working_dir.as_deref())?;
        if let Some(dir) = &working_dir {
            working_dir_check(dir)?;
        }
        let mut command = self.command_build(&invocation, working_dir.as_deref(), &call)?;
        let child = command
            .spawn()
            .map_err(|error| spawn_error(&invocation.display, &error))?;
        tracing::debug!(program = %invocation.display, pid = child.id(), "command started");

        let input = serde_json::to_vec(&call.input).expect("a JSON value always serializes");
        let run = supervise(child, input, &call.cancel, self.grace).await;
        outcome(run, &invocation.display)
    }
}

/// Checks the working directory first, because spawning in a missing one fails with the same
/// NotFound error as a missing program. One `stat` is cheap enough to run on the async thread.
fn working_dir_check(dir: &Path) -> Result<(), AgentError> {
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(AgentError::permanent(format!(
            "working directory {} is not a directory; fix the agent's cwd",
            dir.display()
        ))),
        Err(error) => Err(AgentError::permanent(format!(
            "working directory {} cannot be used: {error}; fix the agent's cwd",
            dir.display()
        ))),
    }
}

fn spawn_error(program: &str, error: &std::io::Error) -> AgentError {
    match error.kind() {
        std::io::ErrorKind::NotFound => AgentError::permanent(format!(
            "program {program} not found; check that it is installed and on the PATH of the oaj \
             worker, or give its full path"
        )),
        std::io::ErrorKind::PermissionDenied => AgentError::permanent(format!(
            "program {program} cannot be run: permission denied; make it executable (chmod +x)"
        )),
        _ if error.raw_os_error() == Some(libc::ENOEXEC) => AgentError::permanent(format!(
            "program {program} is not an executable the system can run; \
             give a script a shebang line such as #!/bin/sh"
        )),
        _ => AgentError::retryable(format!("starting program {program} failed: {error}")),
    }
}

/// Feeds the child its input, collects its output, and stops its process group on cancel.
async fn supervise(
    mut child: Child,
    input: Vec<u8>,
    cancel: &CancellationToken,
    grace: Duration,
) -> ChildRun {
    let group = ProcessGroup::new(child.id().expect("a child that was just spawned has a pid"));
    let stderr_tail = Mutex::new(StderrTail::default());
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let io = async {
        let (written, read, ()) = tokio::join!(
            stdin_write(stdin, input),
            stdout_read(stdout, &group),
            stderr_read(stderr, &stderr_tail),
        );
        (written, read)
    };
    tokio::pin!(io);
    let exit = child.wait();
    tokio::pin!(exit);
    // Armed only after a cancel; until then it sleeps for as long as a step could ever run.
    let grace_timer = tokio::time::sleep(Duration::from_secs(10 * 365 * 24 * 3600));
    tokio::pin!(grace_timer);

    let (mut status, mut io_result) = (None, None);
    let (mut is_cancelled, mut is_killed) = (false, false);
    // After a cancel, stdout no longer matters, so the loop ends as soon as the program exits.
    while status.is_none() || (io_result.is_none() && !is_cancelled) {
        tokio::select! {
            result = &mut exit, if status.is_none() => {
                status = Some(result);
                group.kill_and_disarm();
            }
            result = &mut io, if io_result.is_none() => io_result = Some(result),
            () = cancel.cancelled(), if !is_cancelled => {
                is_cancelled = true;
                group.signal(libc::SIGTERM);
                grace_timer.as_mut().reset(tokio::time::Instant::now() + grace);
            }
            () = &mut grace_timer, if is_cancelled && !is_killed => {
                is_killed = true;
                tracing::debug!(grace_ms = grace.as_millis(), "command outlived its grace period");
                group.signal(libc::SIGKILL);
            }
        }
    }

    let log = stderr_tail
        .lock()
        .expect("no thread panics holding it")
        .to_log();
    ChildRun {
        status: status.expect("the loop ends only once the program exited"),
        is_cancelled,
        io: io_result,
        log,
    }
}

async fn stdin_write(stdin: Option<ChildStdin>, input: Vec<u8>) -> std::io::Result<()> {
    let Some(mut stdin) = stdin else {
        return Ok(());
    };
    match stdin.write_all(&input).await {
        // A program may exit without reading its input, which it is free to do.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result,
    }
    // Dropping `stdin` here closes the pipe, so the program reads end of file after its input.
}

async fn stdout_read(
    stdout: Option<impl AsyncRead + Unpin>,
    group: &ProcessGroup,
) -> Result<Vec<u8>, StdoutError> {
    let Some(stdout) = stdout else {
        return Ok(Vec::new());
    };
    let mut bytes = Vec::new();
    let limit = u64::try_from(STDOUT_MAX_BYTES).expect("the limit fits in u64") + 1;
    stdout
        .take(limit)
        .read_to_end(&mut bytes)
        .await
        .map_err(StdoutError::Read)?;
    if bytes.len() > STDOUT_MAX_BYTES {
        // Stop the writer now rather than drain output that would be discarded.
        group.signal(libc::SIGKILL);
        return Err(StdoutError::TooLarge);
    }
    Ok(bytes)
}

async fn stderr_read(stderr: Option<impl AsyncRead + Unpin>, tail: &Mutex<StderrTail>) {
    let Some(mut stderr) = stderr else {
        return;
    };
    let mut chunk = vec![0; 8192];
    loop {
        match stderr.read(&mut chunk).await {
            Ok(0) => return,
            Ok(read) => tail
                .lock()
                .expect("no thread panics holding it")
                .push(&chunk[..read]),
            Err(error) => {
                // The log is a help for people, so a read error ends it but not the attempt.
                tracing::debug!(error = %error, "reading stderr failed");
                return;
            }
        }
    }
}

/// The last `STDERR_TAIL_BYTES` of stderr, and how many bytes before them were dropped.
#[derive(Default)]
struct StderrTail {
    bytes: VecDeque<u8>,
    dropped: u64,
}

impl StderrTail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend(chunk);
        let excess = self.bytes.len().saturating_sub(STDERR_TAIL_BYTES);
        if excess > 0 {
            self.bytes.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    fn to_log(&self) -> String {
        let (front, back) = self.bytes.as_slices();
        let text = String::from_utf8_lossy(&[front, back].concat()).into_owned();
        if self.dropped == 0 {
            return text;
        }
        format!(
            "[stderr cut: the first {} bytes were dropped]\n{text}",
            self.dropped
        )
    }
}

fn outcome(run: ChildRun, program: &str) -> Result<AgentOutput, AgentError> {
    let with_log = |mut error: AgentError| {
        error.log = run.log.clone();
        error
    };
    if run.is_cancelled {
        return Err(with_log(AgentError::cancelled(&format!(
            "command {program}"
        ))));
    }
    let status = run.status.map_err(|error| {
        with_log(AgentError::retryable(format!(
            "waiting for command {program} failed: {error}"
        )))
    })?;
    let (written, read) = run
        .io
        .expect("output is collected unless the attempt was cancelled");
    if let Err(StdoutError::TooLarge) = read {
        return Err(with_log(AgentError::permanent(format!(
            "command {program} wrote more than {STDOUT_MAX_BYTES} bytes to stdout; write large \
             results to a file and output its path"
        ))));
    }
    if !status.success() {
        return Err(with_log(AgentError::retryable(exit_message(
            program, status, &run.log,
        ))));
    }
    let stdout = read.map_err(|error| {
        let message = match error {
            StdoutError::Read(error) => format!("reading stdout of {program} failed: {error}"),
            StdoutError::TooLarge => unreachable!("handled above"),
        };
        with_log(AgentError::retryable(message))
    })?;
    written.map_err(|error| {
        with_log(AgentError::retryable(format!(
            "writing the input to stdin of {program} failed: {error}"
        )))
    })?;
    tracing::debug!(program, stdout_bytes = stdout.len(), "command succeeded");
    Ok(AgentOutput {
        output: output_from_bytes(&stdout),
        log: run.log,
        usage: None,
    })
}

fn exit_message(program: &str, status: ExitStatus, log: &str) -> String {
    let termination = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("failed with {status}"),
    };
    let last_line = log
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty());
    match last_line {
        Some(line) => format!(
            "command {program} {termination}: {}",
            text_truncate(line, ERROR_LINE_MAX_BYTES)
        ),
        None => format!("command {program} {termination} and wrote nothing to stderr"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    use serde_json::{json, Value};

    use super::*;
    use crate::agent::test_support::call_with;

    /// Generous bound for tests whose failure mode is a hang; no test expects to come near it.
    const HANG_GUARD: Duration = Duration::from_secs(60);

    fn spec(command: &[&str]) -> CommandSpec {
        CommandSpec {
            command: command.iter().map(|part| part.to_string()).collect(),
            shell: false,
            env: BTreeMap::new(),
            cwd: None,
        }
    }

    fn shell_spec(script: &str) -> CommandSpec {
        CommandSpec {
            shell: true,
            ..spec(&[script])
        }
    }

    /// Writes a shell script. Tests run it as `/bin/sh SCRIPT`, not directly: executing a file
    /// just written fails now and then with "text file busy" while another test thread forks.
    fn script_write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("make the script executable");
        path
    }

    async fn call_output(agent: &CommandAgent, input: Value) -> Result<AgentOutput, AgentError> {
        tokio::time::timeout(HANG_GUARD, agent.call(call_with(input)))
            .await
            .expect("the command finishes")
    }

    /// Waits until a script has written its pid file (atomically, through a rename).
    async fn pid_file_read(path: &Path) -> libc::pid_t {
        let read = async {
            loop {
                if let Ok(text) = std::fs::read_to_string(path) {
                    return text.trim().parse().expect("the pid file contains a pid");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(HANG_GUARD, read)
            .await
            .expect("the script writes its pid")
    }

    /// Returns whether `pid` is gone. A zombie counts as gone: it runs nothing, and whether it
    /// is reaped depends on the init process of the machine, not on oaj.
    fn is_process_gone(pid: libc::pid_t) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } == -1 {
            return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses and may contain spaces.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        state.is_none_or(|state| state == "Z")
    }

    /// Waits until `pid` is gone, since a killed process needs a moment to exit.
    async fn wait_until_gone(pid: libc::pid_t) -> bool {
        let wait = async {
            while !is_process_gone(pid) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(HANG_GUARD, wait).await.is_ok()
    }

    #[tokio::test]
    async fn command_json_in_json_out() {
        let agent = CommandAgent::new(spec(&["cat"]), None);
        let input = json!({"ticket": {"id": 7, "tags": ["a", "b"]}});

        let output = call_output(&agent, input.clone()).await;

        assert_eq!(output.map(|o| o.output), Ok(input));
    }

    #[tokio::test]
    async fn command_text_output_is_trimmed_string() {
        let agent = CommandAgent::new(spec(&["echo", "  not json  "]), None);
        let output = call_output(&agent, json!({})).await;
        assert_eq!(output.map(|o| o.output), Ok(json!("not json")));
    }

    #[tokio::test]
    async fn command_shell_runs_through_sh() {
        let agent = CommandAgent::new(shell_spec("echo $((1 + 2)) \"$1\""), None);
        let mut with_arg = shell_spec("printf '\"%s\"' \"$1\"");
        with_arg.command.push("first arg".to_owned());
        let agent_with_arg = CommandAgent::new(with_arg, None);

        assert_eq!(
            call_output(&agent, json!({})).await.map(|o| o.output),
            Ok(json!(3))
        );
        let output = call_output(&agent_with_arg, json!({})).await;
        assert_eq!(output.map(|o| o.output), Ok(json!("first arg")));
    }

    #[tokio::test]
    async fn command_nonzero_exit_is_retryable() {
        let script = "echo starting >&2; echo 'disk full' >&2; exit 3";
        let agent = CommandAgent::new(shell_spec(script), None);

        let error = call_output(&agent, json!({}))
            .await
            .expect_err("exit 3 fails");

        assert!(error.is_retryable);
        assert!(
            error.message.contains("exited with code 3"),
            "message: {}",
            error.message
        );
        assert!(
            error.message.ends_with("disk full"),
            "message: {}",
            error.message
        );
        assert_eq!(error.log, "starting\ndisk full\n");
    }

    #[tokio::test]
    async fn command_stderr_kept_as_log() {
        let agent = CommandAgent::new(shell_spec("echo progress >&2; echo '{}'"), None);
        let output = call_output(&agent, json!({}))
            .await
            .expect("the command succeeds");
        assert_eq!(output.log, "progress\n");
        assert_eq!(output.output, json!({}));
    }

    #[tokio::test]
    async fn command_stderr_tail_says_it_was_cut() {
        let script = "head -c 100000 /dev/zero | tr '\\0' x >&2; printf end >&2";
        let agent = CommandAgent::new(shell_spec(script), None);

        let output = call_output(&agent, json!({}))
            .await
            .expect("the command succeeds");

        let dropped = 100_000 + 3 - STDERR_TAIL_BYTES;
        let notice = format!("[stderr cut: the first {dropped} bytes were dropped]\n");
        assert!(
            output.log.starts_with(&notice),
            "log starts {:?}",
            &output.log[..80]
        );
        assert!(output.log.ends_with("xend"));
        assert_eq!(output.log.len(), notice.len() + STDERR_TAIL_BYTES);
    }

    #[tokio::test]
    async fn command_stdout_too_large_is_permanent() {
        let script = "head -c 17000000 /dev/zero";
        let agent = CommandAgent::new(shell_spec(script), None);

        let error = call_output(&agent, json!({}))
            .await
            .expect_err("stdout is too large");

        assert!(!error.is_retryable);
        assert!(
            error.message.contains("stdout"),
            "message: {}",
            error.message
        );
    }

    #[tokio::test]
    async fn command_unread_large_input_is_fine() {
        let agent = CommandAgent::new(spec(&["true"]), None);
        let input = json!({"blob": "x".repeat(1 << 20)});
        let output = call_output(&agent, input).await;
        assert_eq!(output.map(|o| o.output), Ok(Value::Null));
    }

    #[tokio::test]
    async fn command_program_not_found_names_it() {
        let agent = CommandAgent::new(spec(&["oaj-test-no-such-program", "arg"]), None);

        let error = call_output(&agent, json!({}))
            .await
            .expect_err("the program is missing");

        assert!(!error.is_retryable);
        assert!(error.message.contains("oaj-test-no-such-program"));
        assert!(error.message.contains("PATH"));
    }

    #[tokio::test]
    async fn command_empty_is_permanent() {
        let agent = CommandAgent::new(spec(&[]), None);
        let error = call_output(&agent, json!({}))
            .await
            .expect_err("nothing to run");
        assert!(!error.is_retryable);
    }

    #[tokio::test]
    async fn command_passes_attempt_env() {
        let script = r#"printf '["%s","%s","%s","%s","%s"]' "$OAJ_JOB_ID" "$OAJ_STEP_ID" \
            "$OAJ_ATTEMPT" "$OAJ_IDEMPOTENCY_KEY" "${OAJ_CAPABILITY-unset}""#;
        let agent = CommandAgent::new(shell_spec(script), None);
        let mut call = call_with(json!({}));
        call.attempt = 2;
        call.capability = Some("summarize".to_owned());

        let output = agent.call(call).await.map(|o| o.output);

        let expected = json!(["job-1", "step-1", "2", "job-1/step-1/0/1", "summarize"]);
        assert_eq!(output, Ok(expected));
    }

    #[tokio::test]
    async fn command_env_interpolates_environment() {
        std::env::set_var("OAJ_TEST_COMMAND_SECRET", "xyz");
        let mut spec = shell_spec("printf '%s' \"$GREETING\"");
        let template = "hello ${env.OAJ_TEST_COMMAND_SECRET}".to_owned();
        spec.env.insert("GREETING".to_owned(), template);
        let agent = CommandAgent::new(spec, None);

        let output = call_output(&agent, json!({})).await;

        assert_eq!(output.map(|o| o.output), Ok(json!("hello xyz")));
    }

    #[tokio::test]
    async fn command_env_missing_variable_is_permanent() {
        let mut spec = spec(&["true"]);
        let template = "${env.OAJ_TEST_COMMAND_MISSING}".to_owned();
        spec.env.insert("TOKEN".to_owned(), template);
        let agent = CommandAgent::new(spec, None);

        let error = call_output(&agent, json!({}))
            .await
            .expect_err("the variable is missing");

        assert!(!error.is_retryable);
        assert!(error.message.contains("OAJ_TEST_COMMAND_MISSING"));
        assert!(error.message.contains("env TOKEN"));
    }

    #[tokio::test]
    async fn command_paths_resolve_against_base_dir() {
        let base = tempfile::tempdir().expect("create a temporary directory");
        std::fs::create_dir(base.path().join("work")).expect("create a subdirectory");
        script_write(base.path(), "where.sh", "pwd -P");
        let mut spec = spec(&["../where.sh"]);
        spec.cwd = Some("work".to_owned());
        let agent = CommandAgent::new(spec, Some(base.path().to_path_buf()));

        let output = call_output(&agent, json!({})).await;

        let expected = base
            .path()
            .join("work")
            .canonicalize()
            .expect("the directory exists");
        assert_eq!(
            output.map(|o| o.output),
            Ok(json!(expected.to_string_lossy()))
        );
    }

    #[tokio::test]
    async fn command_missing_cwd_is_permanent() {
        let mut spec = spec(&["true"]);
        spec.cwd = Some("/nonexistent/oaj-test-dir".to_owned());
        let agent = CommandAgent::new(spec, None);

        let error = call_output(&agent, json!({}))
            .await
            .expect_err("the directory is missing");

        assert!(!error.is_retryable);
        assert!(error.message.contains("/nonexistent/oaj-test-dir"));
    }

    #[tokio::test]
    async fn command_exit_kills_leftover_background_process() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let body = "sleep 300 &\necho $! > \"$1\"\necho done";
        let script = script_write(dir.path(), "leave.sh", body);
        let pid_path = dir.path().join("pid");
        let script_arg = [
            "/bin/sh",
            script.to_str().expect("UTF-8 path"),
            pid_path.to_str().expect("UTF-8"),
        ];
        let agent = CommandAgent::new(spec(&script_arg), None);

        // Unless leftovers are killed, the background sleep keeps stdout open and the call hangs.
        let output = call_output(&agent, json!({})).await;

        assert_eq!(output.map(|o| o.output), Ok(json!("done")));
        assert!(wait_until_gone(pid_file_read(&pid_path).await).await);
    }

    #[tokio::test]
    async fn command_cancel_kills_grandchild() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let body = "sleep 300 &\necho $! > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"\nwait";
        let script = script_write(dir.path(), "wait.sh", body);
        let pid_path = dir.path().join("grandchild.pid");
        let script_arg = [
            "/bin/sh",
            script.to_str().expect("UTF-8 path"),
            pid_path.to_str().expect("UTF-8"),
        ];
        let agent = CommandAgent::new(spec(&script_arg), None);
        let call = call_with(json!({}));
        let cancel = call.cancel.clone();

        let running = tokio::spawn(async move { agent.call(call).await });
        let grandchild = pid_file_read(&pid_path).await;
        cancel.cancel();
        let result = tokio::time::timeout(HANG_GUARD, running)
            .await
            .expect("the call ends");

        let error = result
            .expect("the task does not panic")
            .expect_err("it was cancelled");
        assert!(
            error.message.contains("cancelled"),
            "message: {}",
            error.message
        );
        assert!(
            wait_until_gone(grandchild).await,
            "grandchild {grandchild} still runs"
        );
    }

    #[tokio::test]
    async fn command_cancel_sends_sigterm_first() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let body = "trap 'echo term > \"$1.term\"; exit 0' TERM\n\
                    echo $$ > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"\n\
                    sleep 300 &\nwait";
        let script = script_write(dir.path(), "polite.sh", body);
        let pid_path = dir.path().join("child.pid");
        let script_arg = [
            "/bin/sh",
            script.to_str().expect("UTF-8 path"),
            pid_path.to_str().expect("UTF-8"),
        ];
        let agent = CommandAgent::new(spec(&script_arg), None).with_grace(HANG_GUARD);
        let call = call_with(json!({}));
        let cancel = call.cancel.clone();

        let running = tokio::spawn(async move { agent.call(call).await });
        pid_file_read(&pid_path).await;
        cancel.cancel();
        let result = tokio::time::timeout(HANG_GUARD, running)
            .await
            .expect("the call ends");

        assert!(result.expect("the task does not panic").is_err());
        let marker = std::fs::read_to_string(dir.path().join("child.pid.term"));
        assert_eq!(marker.ok().as_deref(), Some("term\n"));
    }

    #[tokio::test]
    async fn command_ignoring_sigterm_gets_sigkill() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let body = "trap '' TERM\n\
                    echo $$ > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"\n\
                    while :; do sleep 1; done";
        let script = script_write(dir.path(), "stubborn.sh", body);
        let pid_path = dir.path().join("child.pid");
        let script_arg = [
            "/bin/sh",
            script.to_str().expect("UTF-8 path"),
            pid_path.to_str().expect("UTF-8"),
        ];
        let agent =
            CommandAgent::new(spec(&script_arg), None).with_grace(Duration::from_millis(50));
        let call = call_with(json!({}));
        let cancel = call.cancel.clone();

        let running = tokio::spawn(async move { agent.call(call).await });
        let child = pid_file_read(&pid_path).await;
        cancel.cancel();
        let result = tokio::time::timeout(HANG_GUARD, running)
            .await
            .expect("the call ends");

        let error = result
            .expect("the task does not panic")
            .expect_err("it was cancelled");
        assert!(error.message.contains("cancelled"));
        assert!(wait_until_gone(child).await, "child {child} still runs");
    }

    #[tokio::test]
    async fn command_dropped_call_kills_group() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let body = "trap '' TERM\nsleep 300 &\necho $! > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"\nwait";
        let script = script_write(dir.path(), "dropped.sh", body);
        let pid_path = dir.path().join("grandchild.pid");
        let script_arg = [
            "/bin/sh",
            script.to_str().expect("UTF-8 path"),
            pid_path.to_str().expect("UTF-8"),
        ];
        let agent = CommandAgent::new(spec(&script_arg), None);

        let running = tokio::spawn(async move { agent.call(call_with(json!({}))).await });
        let grandchild = pid_file_read(&pid_path).await;
        running.abort();
        let _ = running.await; // The task was aborted on purpose; its JoinError reports only that.

        assert!(
            wait_until_gone(grandchild).await,
            "grandchild {grandchild} still runs"
        );
    }
}
