//! `oaj jobs`: inspect and act on the jobs of a database, or of a server with `--server`.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use oaj_core::JobState;
use oaj_store::{Event, Job, JobAction, JobFilter};
use serde_json::json;

use super::client::ServerArgs;
use super::common::DbArgs;
use super::exit;
use super::job_source::{DecisionRequest, JobDetail, JobSource};
use super::terminal::printable;

/// Arguments of `oaj jobs`.
#[derive(Debug, Args)]
pub struct JobsCommand {
    #[command(subcommand)]
    pub action: JobsAction,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print JSON for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The actions on jobs.
#[derive(Debug, Subcommand)]
pub enum JobsAction {
    /// List jobs, newest first.
    List {
        /// Only jobs in this state; repeat for several.
        #[arg(long)]
        state: Vec<JobState>,
        /// Only jobs of this workflow id.
        #[arg(long)]
        workflow: Option<String>,
        /// Most jobs listed.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Only jobs created before this job (the last id of the previous page).
        #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
        before: Option<String>,
    },
    /// Show a job with its step runs and attempts.
    Show {
        /// Job id.
        id: String,
    },
    /// Print a job's events in order.
    Events {
        /// Job id.
        id: String,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// Cancel a job; running attempts are stopped.
    Cancel {
        /// Job id.
        id: String,
    },
    /// Pause a job: running attempts finish, nothing new starts.
    Pause {
        /// Job id.
        id: String,
    },
    /// Resume a paused job from its saved step results.
    Resume {
        /// Job id.
        id: String,
    },
    /// Run a failed or cancelled job again from its failed steps.
    Retry {
        /// Job id.
        id: String,
    },
    /// Approve the approval step a job waits on.
    Approve(Decision),
    /// Reject the approval step a job waits on; the step fails.
    Reject(Decision),
    /// Delete a finished job with its history.
    Delete {
        /// Job id.
        id: String,
    },
}

/// An approval decision.
#[derive(Debug, Args)]
pub struct Decision {
    /// Job id.
    pub id: String,
    /// Approval step id; needed only when several steps wait.
    #[arg(long)]
    pub step: Option<String>,
    /// Who decides, recorded with the decision.
    #[arg(long)]
    pub by: Option<String>,
    /// Reason, recorded with the decision.
    #[arg(long)]
    pub comment: Option<String>,
}

/// Runs `oaj jobs ...` on the local database, or through the API of `--server`.
pub async fn run(args: JobsCommand) -> anyhow::Result<ExitCode> {
    let source = match args.server.client()? {
        Some(client) => JobSource::Remote(client),
        None => JobSource::Local(args.db.open().await?.0),
    };
    match args.action {
        JobsAction::List {
            state,
            workflow,
            limit,
            before,
        } => {
            let filter = JobFilter {
                states: state,
                workflow_id: workflow,
                before_id: before.clone(),
                limit,
                ..JobFilter::default()
            };
            let listed = source.list(filter).await;
            let jobs = match &before {
                Some(before) => listed.with_context(|| {
                    format!(
                        "invalid --before {before} (pass the id of a job that still exists, \
                         such as the last one of the previous page, or leave out --before)"
                    )
                })?,
                None => listed?,
            };
            print_jobs(&jobs, args.json)?;
        }
        JobsAction::Show { id } => print_detail(&source.show(&id).await?, args.json)?,
        JobsAction::Events { id, after } => {
            for event in source.events(&id, after).await? {
                print_event(&event, args.json)?;
            }
        }
        JobsAction::Cancel { id } => act(&source, &id, JobAction::Cancel, args.json).await?,
        JobsAction::Pause { id } => act(&source, &id, JobAction::Pause, args.json).await?,
        JobsAction::Resume { id } => act(&source, &id, JobAction::Resume, args.json).await?,
        JobsAction::Retry { id } => act(&source, &id, JobAction::Retry, args.json).await?,
        JobsAction::Approve(decision) => decide(&source, decision, true, args.json).await?,
        JobsAction::Reject(decision) => decide(&source, decision, false, args.json).await?,
        JobsAction::Delete { id } => {
            source.delete(&id).await?;
            if args.json {
                outln!("{}", json!({ "id": id, "deleted": true }));
            } else {
                outln!("deleted job {id}");
            }
        }
    }
    Ok(ExitCode::from(exit::COMPLETED))
}

fn print_event(event: &Event, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string(event)?);
        return Ok(());
    }
    let data = if event.data.as_object().is_some_and(|map| map.is_empty()) {
        String::new()
    } else {
        event.data.to_string()
    };
    let step = event
        .step_id
        .as_ref()
        .map_or(String::new(), |step| format!(" {step}"));
    let item = event.item.map_or(String::new(), |item| format!("[{item}]"));
    outln!(
        "{:>6} {} {}{step}{item} {data}",
        event.seq,
        event.at,
        event.kind
    );
    Ok(())
}

async fn act(source: &JobSource, id: &str, action: JobAction, json: bool) -> anyhow::Result<()> {
    let job = source.action(id, action).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&job)?);
    } else if job.control.is_some() {
        outln!(
            "job {id} is running: {:?} requested from its worker",
            action
        );
    } else {
        outln!("job {id} is now {}", job.state);
    }
    Ok(())
}

async fn decide(
    source: &JobSource,
    decision: Decision,
    approved: bool,
    json: bool,
) -> anyhow::Result<()> {
    let job_id = decision.id;
    let step_id = decision.step;
    source
        .decide(DecisionRequest {
            job_id: job_id.clone(),
            step_id: step_id.clone(),
            approved,
            by: decision.by,
            comment: decision.comment,
        })
        .await?;
    if json {
        outln!(
            "{}",
            json!({ "job_id": job_id, "step_id": step_id, "approved": approved })
        );
    } else {
        outln!(
            "job {job_id}: {}",
            if approved { "approved" } else { "rejected" }
        );
    }
    Ok(())
}

fn print_detail(detail: &JobDetail, json: bool) -> anyhow::Result<()> {
    let JobDetail {
        job,
        steps,
        attempts,
    } = detail;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "job": job, "steps": steps, "attempts": attempts })
            )?
        );
        return Ok(());
    }
    outln!("job       {}", job.id);
    outln!("workflow  {} {}", job.workflow_id, job.workflow_version);
    outln!("state     {}", job.state);
    outln!("priority  {}", job.priority);
    if let Some(error) = &job.error {
        outln!("error     {}", printable(error));
    }
    if job.prompt_tokens + job.completion_tokens > 0 {
        outln!(
            "tokens    {} prompt, {} completion",
            job.prompt_tokens,
            job.completion_tokens
        );
    }
    outln!("steps:");
    for step in steps {
        let item = step.item.map_or(String::new(), |item| format!("[{item}]"));
        let error = step
            .error
            .as_deref()
            .map_or(String::new(), |error| format!("  {}", printable(error)));
        outln!(
            "  {}{item:<6} {:<10} attempts {}{error}",
            step.step_id,
            step.state,
            step.attempts
        );
    }
    outln!("attempts: {}", attempts.len());
    Ok(())
}

fn print_jobs(jobs: &[Job], json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(jobs)?);
        return Ok(());
    }
    outln!("{:<36}  {:<10}  {:<8}  workflow", "id", "state", "priority");
    for job in jobs {
        outln!(
            "{:<36}  {:<10}  {:<8}  {} {}",
            job.id,
            job.state,
            job.priority,
            job.workflow_id,
            job.workflow_version
        );
    }
    Ok(())
}
