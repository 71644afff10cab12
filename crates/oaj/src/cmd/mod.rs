//! Command-line arguments and the dispatch to each subcommand.

/// Prints a line to stdout like `println!`, without its panic when stdout is closed or full
/// (see `terminal::stdout_write`).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cmd::terminal::stdout_write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod bench;
mod client;
mod common;
mod exit;
mod job_source;
mod jobs;
mod progress;
mod run;
mod serve;
mod submit;
mod terminal;
mod validate;
mod worker;

pub(crate) use exit::STDOUT_CLOSED;
pub(crate) use terminal::error_print;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Durable job manager for JSON-defined AI-agent workflows.
#[derive(Debug, Parser)]
#[command(name = "oaj", version, about)]
#[command(
    after_help = "Exit codes: 0 success; 1 oaj failed, or `validate` found an invalid document; \
                       2 usage error or unreadable file; `run` and `submit` also exit 3 for an invalid \
                       workflow or input, and `run` and `submit --wait` exit 4 when the job failed, 5 \
                       when it was cancelled, 6 when it was paused or left for a worker; 141 when the \
                       reader closed stdout early."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check workflow documents and report every problem.
    Validate(validate::Args),
    /// Run one workflow to its end in the embedded store, with live progress.
    Run(run::RunArgs),
    /// Run queued jobs, including jobs left by a crashed process, until stopped.
    Worker(worker::WorkerCommand),
    /// Queue a job of a workflow file or a stored workflow, locally or on a server.
    Submit(submit::SubmitArgs),
    /// List, inspect and act on jobs.
    Jobs(jobs::JobsCommand),
    /// Serve the HTTP API and run workers in one process, until SIGINT or SIGTERM.
    Serve(serve::ServeArgs),
    /// Measure the embedded engine on no-op workloads, checking that every job ran once.
    Bench(bench::BenchCommand),
}

impl Cli {
    /// Returns the log filter used when `OAJ_LOG` is not set: long-running processes report
    /// their starts, stops and recoveries; one-shot commands print only warnings and errors.
    pub(crate) fn log_level_default(&self) -> &'static str {
        match self.command {
            Command::Worker(_) | Command::Serve(_) => "info",
            _ => "warn",
        }
    }
}

/// Runs the command that `cli` names and returns the process exit code.
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Run(args) => or_error(runtime()?.block_on(run::run(args))),
        Command::Worker(args) => or_error(runtime()?.block_on(worker::run(args))),
        Command::Submit(args) => or_error(runtime()?.block_on(submit::run(args))),
        Command::Jobs(args) => or_error(runtime()?.block_on(jobs::run(args))),
        Command::Serve(args) => or_error(runtime()?.block_on(serve::run(args))),
        Command::Bench(args) => or_error(runtime()?.block_on(bench::run(args))),
    }
}

/// Prints the error of a command that works on a database and exits with [`exit::ERROR`]; those
/// commands report usage problems and bad input themselves.
fn or_error(result: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    Ok(result.unwrap_or_else(|error| {
        terminal::error_print(format_args!("{error:#}"));
        ExitCode::from(exit::ERROR)
    }))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(runtime)
}
