//! `oaj run`: run one workflow to its end in the embedded store, with live progress.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use oaj_core::{JobState, Priority};
use oaj_engine::{Engine, JobSubmit, SubmitError};
use oaj_store::{Job, StoreError};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use super::common::{self, DbArgs, WorkerArgs};
use super::exit;
use super::progress::Progress;
use super::terminal::{error_print, printable};

/// Arguments of `oaj run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Workflow document (JSON).
    pub workflow: PathBuf,
    /// Job input: JSON text, or @FILE to read it from a file.
    #[arg(long, value_name = "JSON|@FILE")]
    pub input: Option<String>,
    /// Job priority: low, medium, high or critical.
    #[arg(long)]
    pub priority: Option<Priority>,
    /// What Ctrl-C does when standard input is not a terminal, and what SIGTERM always does:
    /// cancel the job, or leave it queued for `oaj worker`. On a terminal, Ctrl-C prompts for the choice.
    #[arg(long, value_enum, default_value_t = OnInterrupt::Cancel)]
    pub on_interrupt: OnInterrupt,
    /// Print the whole job record as JSON on stdout instead of only its output.
    #[arg(long)]
    pub json: bool,
    /// Print no progress on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// The action Ctrl-C takes on the job of `oaj run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnInterrupt {
    /// Cancel the job: running attempts are stopped.
    Cancel,
    /// Stop this process and leave the job queued; `oaj worker` finishes it later.
    Leave,
}

/// Runs `oaj run`.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let text = match std::fs::read_to_string(&args.workflow) {
        Ok(text) => text,
        Err(error) => {
            error_print(format_args!(
                "cannot read workflow {}: {error}",
                args.workflow.display()
            ));
            return Ok(ExitCode::from(exit::USAGE));
        }
    };
    let input = match args.input.as_deref().map(common::input_text).transpose() {
        Ok(input) => input,
        Err(error) => {
            error_print(format_args!("{error:#}"));
            return Ok(ExitCode::from(exit::USAGE));
        }
    };
    let input = match input.as_ref().map(common::input_parse).transpose() {
        Ok(input) => input.unwrap_or_else(|| serde_json::Value::Object(Default::default())),
        Err(error) => {
            error_print(format_args!("{error:#}"));
            return Ok(ExitCode::from(exit::INVALID));
        }
    };
    let (store, _) = args.db.open().await?;
    let mut config = args.worker.config();
    let engine = common::engine(store.clone(), config.clone());
    let job_id = match submit(&engine, &text, input, args.priority).await? {
        Ok(job_id) => job_id,
        Err(code) => return Ok(code),
    };
    config.only_jobs = Some(vec![job_id.clone()]);
    let engine = common::engine(store, config);
    drive(&engine, &job_id, &args).await
}

/// Registers the workflow and submits the job; an invalid document or input is reported and
/// becomes the exit code.
async fn submit(
    engine: &Engine,
    text: &str,
    input: serde_json::Value,
    priority: Option<Priority>,
) -> anyhow::Result<Result<String, ExitCode>> {
    let (workflow, _) = match engine.workflow_register(text).await {
        Ok(registered) => registered,
        Err(SubmitError::WorkflowInvalid(report)) => {
            error_print(format_args!("invalid workflow\n{report}"));
            return Ok(Err(ExitCode::from(exit::INVALID)));
        }
        Err(SubmitError::Store(StoreError::WorkflowExistsWithDifferentDocument {
            id,
            version,
        })) => {
            errln!("{}", super::submit::version_conflict(&id, &version));
            return Ok(Err(ExitCode::from(exit::INVALID)));
        }
        Err(error) => return Err(error).context("cannot store the workflow"),
    };
    let submit = JobSubmit {
        workflow_id: workflow.id.clone(),
        workflow_version: Some(workflow.version.clone()),
        input,
        priority,
        ..JobSubmit::default()
    };
    match engine.job_submit(submit).await {
        Ok(job_id) => Ok(Ok(job_id)),
        Err(SubmitError::InputInvalid(report)) => {
            error_print(format_args!(
                "invalid input for workflow {}\n{report}",
                workflow.id
            ));
            Ok(Err(ExitCode::from(exit::INVALID)))
        }
        Err(error) => Err(error).context("cannot submit the job"),
    }
}

async fn drive(engine: &Engine, job_id: &str, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn({
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        async move { engine.run(shutdown).await }
    });
    if !args.quiet {
        errln!("job {job_id} submitted");
    }
    let mut progress = Progress::new(job_id, !args.quiet, std::io::stderr().is_terminal());
    let mut events = engine.store().event_subscribe();
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    // Without a handler SIGTERM would end the process at once and leave the agents' processes
    // running while the job waits for its lease to expire.
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let job = loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => progress.event(&event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
            },
            _ = poll.tick() => {
                progress.tick();
                let job = engine.store().job_get(job_id).await?.context("the job disappeared from the store")?;
                if job.state.is_final() || job.state == JobState::Paused {
                    break job;
                }
            }
            _ = tokio::signal::ctrl_c() => {
                let choice = if std::io::stdin().is_terminal() {
                    ask_interrupt()?
                } else {
                    args.on_interrupt
                };
                if interrupt(engine, job_id, choice, &shutdown).await? {
                    break engine.store().job_get(job_id).await?.context("the job disappeared from the store")?;
                }
            }
            _ = terminate.recv() => {
                if interrupt(engine, job_id, args.on_interrupt, &shutdown).await? {
                    break engine.store().job_get(job_id).await?.context("the job disappeared from the store")?;
                }
            }
        }
    };
    shutdown.cancel();
    worker.await.context("the worker task failed")?;
    // Read the job again: a shutdown hands it back to the queue only once its attempts end.
    let job = match engine.store().job_get(job_id).await? {
        Some(latest) => latest,
        None => job,
    };
    progress.finish();
    report(job, args.json)
}

/// Acts on Ctrl-C or SIGTERM; returns whether `oaj run` should stop waiting.
async fn interrupt(
    engine: &Engine,
    job_id: &str,
    choice: OnInterrupt,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    match choice {
        OnInterrupt::Cancel => {
            errln!("cancelling job {job_id}");
            let now = engine.clock().now_ms();
            engine
                .store()
                .job_action(job_id, oaj_store::JobAction::Cancel, now)
                .await?;
            Ok(false)
        }
        OnInterrupt::Leave => {
            let grace = engine.config().shutdown_grace.as_secs();
            errln!(
                "leaving job {job_id} for a worker: running attempts get up to {grace} s to \
                 finish; any still running then are stopped and run again by the next worker"
            );
            shutdown.cancel();
            Ok(true)
        }
    }
}

fn ask_interrupt() -> anyhow::Result<OnInterrupt> {
    write!(
        std::io::stderr(),
        "\ninterrupted: [c]ancel the job, or [l]eave it for `oaj worker`? [c/l] "
    )?;
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(if answer.trim().eq_ignore_ascii_case("l") {
        OnInterrupt::Leave
    } else {
        OnInterrupt::Cancel
    })
}

/// Prints how `job` ended (its output when it completed) and returns the exit code for it.
pub(crate) fn report(job: Job, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        outln!("{}", serde_json::to_string_pretty(&job)?);
    }
    let code = match job.state {
        JobState::Completed => {
            if !json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&job.result.unwrap_or_default())?
                );
            }
            exit::COMPLETED
        }
        JobState::Failed => {
            let error = job.error.as_deref().unwrap_or("no reason recorded");
            errln!("job {} failed: {}", job.id, printable(error));
            exit::FAILED
        }
        JobState::Cancelled => {
            errln!("job {} was cancelled", job.id);
            exit::CANCELLED
        }
        JobState::Paused => {
            errln!(
                "job {} is paused: resume it with `oaj jobs resume {}`",
                job.id,
                job.id
            );
            exit::NOT_FINISHED
        }
        _ => {
            errln!(
                "job {} is {} and left for a worker: run `oaj worker` to finish it",
                job.id,
                job.state
            );
            exit::NOT_FINISHED
        }
    };
    Ok(ExitCode::from(code))
}
