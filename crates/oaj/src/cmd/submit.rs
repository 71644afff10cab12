//! `oaj submit`: queue a job on the local database or on a server, and optionally wait for it.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use oaj_core::{Clock, JobState, Priority, SystemClock};
use oaj_engine::{JobSubmit, SubmitError};
use oaj_store::{Event, Job, JobRef, Store, StoreError};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::client::{ApiClient, ApiFailure, EventReader, ServerArgs};
use super::common::{self, DbArgs, WorkerArgs};
use super::exit;
use super::run::report;
use super::terminal::{error_print, printable};

/// Largest `--delay`: ten years, as the API allows.
const DELAY_SECONDS_MAX: f64 = 315_360_000.0;

/// Arguments of `oaj submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Workflow document (a JSON file, registered first), or the id of a stored workflow.
    pub workflow: String,
    /// Job input: JSON text, or @FILE to read it from a file.
    #[arg(long, value_name = "JSON|@FILE")]
    pub input: Option<String>,
    /// Job priority: low, medium, high or critical.
    #[arg(long)]
    pub priority: Option<Priority>,
    /// Label for filtering; repeat for several.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Id of a job that must complete first; repeat for several.
    #[arg(long = "depends-on", value_name = "JOB_ID")]
    pub depends_on: Vec<String>,
    /// Earliest start, as an RFC 3339 time such as 2030-01-31T09:00:00Z.
    #[arg(long, value_name = "RFC3339", conflicts_with = "delay", value_parser = rfc3339_ms)]
    pub run_at: Option<i64>,
    /// Earliest start, in seconds from now.
    #[arg(long, value_name = "SECONDS", value_parser = delay_seconds)]
    pub delay: Option<f64>,
    /// Key that makes a repeated submission return the first job instead of a new one.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Wait until the job ends and exit with the codes of `oaj run`. Without --server, a worker
    /// on the same database (`oaj worker` or `oaj serve`) must run the job.
    #[arg(long)]
    pub wait: bool,
    /// Print the job record as JSON instead of its id; with --wait, the final record.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn rfc3339_ms(text: &str) -> Result<i64, String> {
    let timestamp: jiff::Timestamp = text.parse().map_err(|error| {
        format!("invalid time {text:?}: {error}: expected RFC 3339, such as 2030-01-31T09:00:00Z")
    })?;
    Ok(timestamp.as_millisecond())
}

fn delay_seconds(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("invalid number of seconds {text:?}"))?;
    if (0.0..=DELAY_SECONDS_MAX).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{text} is out of range: expected seconds from 0 to {DELAY_SECONDS_MAX}"
        ))
    }
}

/// What to submit, read from the arguments.
struct Submission {
    /// The workflow document's text, or `None` when the argument names a stored workflow.
    document: Option<String>,
    input: Value,
}

/// Runs `oaj submit`.
pub async fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let submission = match submission_read(&args) {
        Ok(submission) => submission,
        Err(code) => return Ok(code),
    };
    match args.server.client()? {
        Some(client) => remote(&client, &args, submission).await,
        None => local(&args, submission).await,
    }
}

/// Reads the workflow file (when the argument is one) and parses the input; a problem is printed
/// and becomes the exit code.
fn submission_read(args: &SubmitArgs) -> Result<Submission, ExitCode> {
    let document = if Path::new(&args.workflow).is_file() {
        match std::fs::read_to_string(&args.workflow) {
            Ok(text) => Some(text),
            Err(error) => {
                error_print(format_args!(
                    "cannot read workflow {}: {error}",
                    args.workflow
                ));
                return Err(ExitCode::from(exit::USAGE));
            }
        }
    } else if is_workflow_id(&args.workflow) {
        None
    } else {
        error_print(format_args!(
            "{} is neither a file nor a workflow id (letters, digits, - and _)",
            args.workflow
        ));
        return Err(ExitCode::from(exit::USAGE));
    };
    let input = match args.input.as_deref().map(common::input_text).transpose() {
        Ok(input) => input,
        Err(error) => {
            error_print(format_args!("{error:#}"));
            return Err(ExitCode::from(exit::USAGE));
        }
    };
    let input = match input.as_ref().map(common::input_parse).transpose() {
        Ok(input) => input.unwrap_or_else(|| json!({})),
        Err(error) => {
            error_print(format_args!("{error:#}"));
            return Err(ExitCode::from(exit::INVALID));
        }
    };
    Ok(Submission { document, input })
}

fn is_workflow_id(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Registers and submits through the engine on the local database, without running a worker.
async fn local(args: &SubmitArgs, submission: Submission) -> anyhow::Result<ExitCode> {
    let (store, _) = args.db.open().await?;
    let engine = common::engine(store.clone(), worker_config());
    let (workflow_id, workflow_version) = match &submission.document {
        Some(text) => match engine.workflow_register(text).await {
            Ok((workflow, _)) => (workflow.id, Some(workflow.version)),
            Err(error) => return submit_failed(error),
        },
        None => (args.workflow.clone(), None),
    };
    let run_at = match args.delay {
        Some(delay) => {
            let now = SystemClock.now_ms();
            Some(now.saturating_add((delay * 1000.0).round() as i64))
        }
        None => args.run_at,
    };
    let submit = JobSubmit {
        workflow_id,
        workflow_version,
        input: submission.input,
        priority: args.priority,
        tags: args.tags.clone(),
        depends_on: args.depends_on.iter().cloned().map(JobRef::Id).collect(),
        run_at,
        idempotency_key: args.idempotency_key.clone(),
        ..JobSubmit::default()
    };
    let job_id = match engine.job_submit(submit).await {
        Ok(job_id) => job_id,
        Err(error) => return submit_failed(error),
    };
    let job = store
        .job_get(&job_id)
        .await?
        .context("the submitted job is not stored")?;
    if !args.wait {
        return submitted(&job, args.json);
    }
    errln!("job {job_id} submitted; waiting for a worker to run it");
    let job = local_wait(store.as_ref(), &job_id).await?;
    report(job, args.json)
}

/// The engine settings of a submission; no worker runs, so only the store matters.
fn worker_config() -> oaj_engine::EngineConfig {
    WorkerArgs {
        concurrency: 1,
        jobs_max: 1,
        lease_seconds: 30.0,
        agent_limits: Vec::new(),
        retention_days: None,
    }
    .config()
}

/// Prints an invalid workflow or input and returns [`exit::INVALID`]; other errors are returned.
fn submit_failed(error: SubmitError) -> anyhow::Result<ExitCode> {
    match error {
        SubmitError::WorkflowInvalid(report) => {
            error_print(format_args!("invalid workflow\n{report}"));
            Ok(ExitCode::from(exit::INVALID))
        }
        SubmitError::InputInvalid(report) => {
            error_print(format_args!("invalid input\n{report}"));
            Ok(ExitCode::from(exit::INVALID))
        }
        SubmitError::Store(StoreError::WorkflowExistsWithDifferentDocument { id, version }) => {
            errln!("{}", version_conflict(&id, &version));
            Ok(ExitCode::from(exit::INVALID))
        }
        error => Err(error).context("cannot submit the job"),
    }
}

/// Explains that a changed document needs a new version, and how to give it one.
pub(crate) fn version_conflict(id: &str, version: &str) -> String {
    format!(
        "error: workflow {id} version {version} is already stored with a different document; \
         versions never change once stored: raise \"version\" in the file (for example above \
         {version}) and run again"
    )
}

/// Polls the store until the job ends or pauses.
async fn local_wait(store: &dyn Store, job_id: &str) -> anyhow::Result<Job> {
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    loop {
        poll.tick().await;
        let job = store
            .job_get(job_id)
            .await?
            .context("the job disappeared from the store")?;
        if job.state.is_final() || job.state == JobState::Paused {
            return Ok(job);
        }
    }
}

/// A stored workflow version, as the API returns it.
#[derive(Deserialize)]
struct WorkflowOut {
    id: String,
    version: String,
}

/// Registers and submits through the server's API.
async fn remote(
    client: &ApiClient,
    args: &SubmitArgs,
    submission: Submission,
) -> anyhow::Result<ExitCode> {
    match remote_submit(client, args, submission).await {
        Ok(job) if !args.wait => submitted(&job, args.json),
        Ok(job) => {
            errln!("job {} submitted", job.id);
            let job = remote_wait(client, &job.id).await?;
            report(job, args.json)
        }
        Err(error) => match error.downcast_ref::<ApiFailure>() {
            Some(failure) if is_invalid(failure) => {
                error_print(format_args!("{failure}"));
                for problem in problems(failure) {
                    errln!("  {}", printable(&problem));
                }
                Ok(ExitCode::from(exit::INVALID))
            }
            _ => Err(error),
        },
    }
}

async fn remote_submit(
    client: &ApiClient,
    args: &SubmitArgs,
    submission: Submission,
) -> anyhow::Result<Job> {
    let (workflow_id, workflow_version) = match submission.document {
        Some(text) => {
            let request = client
                .request(Method::POST, &["v1", "workflows"])
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(text);
            let workflow: WorkflowOut = client.json(request).await?;
            (workflow.id, Some(workflow.version))
        }
        None => (args.workflow.clone(), None),
    };
    let body = json!({
        "workflow_id": workflow_id,
        "workflow_version": workflow_version,
        "input": submission.input,
        "priority": args.priority,
        "tags": args.tags,
        "depends_on": args.depends_on,
        "run_at": args.run_at,
        "delay_seconds": args.delay,
        "idempotency_key": args.idempotency_key,
    });
    let request = client.request(Method::POST, &["v1", "jobs"]).json(&body);
    client.json(request).await
}

fn is_invalid(failure: &ApiFailure) -> bool {
    failure.code == "workflow_invalid" || failure.code == "input_invalid"
}

/// Formats the problems of an error's validation report, one line each.
fn problems(failure: &ApiFailure) -> Vec<String> {
    let Some(problems) = failure
        .report
        .as_ref()
        .and_then(|report| report["problems"].as_array())
    else {
        return Vec::new();
    };
    problems
        .iter()
        .map(|problem| {
            let text = |key: &str| problem[key].as_str().unwrap_or("").to_owned();
            let mut line = format!("{} {}: {}", text("path"), text("code"), text("message"));
            if let Some(suggestion) = problem["suggestion"].as_str() {
                line.push_str(&format!(" ({suggestion})"));
            }
            line
        })
        .collect()
}

/// Follows the server's event stream of the job until it ends or pauses, then fetches it.
async fn remote_wait(client: &ApiClient, job_id: &str) -> anyhow::Result<Job> {
    // Replaying from 0 covers a job that ended before the stream opened.
    let query = [("job", job_id), ("kind", "job."), ("after", "0")];
    let request = client.request(Method::GET, &["v1", "events"]).query(&query);
    let mut events = EventReader::new(client.send(request).await?);
    while let Some(data) = events.next().await? {
        let event: Event = serde_json::from_str(&data)
            .with_context(|| format!("invalid event from the server: {data:.200}"))?;
        let Some(state) = event.kind.strip_prefix("job.") else {
            continue;
        };
        if !matches!(state, "completed" | "failed" | "cancelled" | "paused") {
            continue;
        }
        // A replayed event may be history: a failed job can have been retried since.
        let job: Job = client.get(&["v1", "jobs", job_id]).await?;
        if job.state.is_final() || job.state == JobState::Paused {
            return Ok(job);
        }
    }
    anyhow::bail!(
        "the server closed the event stream before job {job_id} ended: \
         follow it with `oaj jobs show {job_id}`"
    )
}

/// Prints a submitted job's id, or its record with `--json`.
fn submitted(job: &Job, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        outln!("{}", serde_json::to_string_pretty(job)?);
    } else {
        outln!("{}", job.id);
    }
    Ok(ExitCode::from(exit::COMPLETED))
}
