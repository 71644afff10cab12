//! `oaj bench`: measures the embedded engine on no-op workloads and checks that every job ran
//! exactly once. The figures and the machine behind them are recorded in docs/benchmarks.md.

mod drain;
mod enqueue;
mod latency;
mod memory;
mod report;
mod scale;
mod sequential;
mod setup;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::common::WorkerArgs;
use super::exit;
use report::Report;
use setup::BenchDb;

/// Largest `--jobs` of a bulk workload. The run keeps every job id in memory to check the jobs
/// afterwards, about 60 bytes each.
const JOBS_MAX: i64 = 50_000_000;

/// Largest `--jobs` of a workload that runs one job at a time.
const JOBS_ONE_AT_A_TIME_MAX: i64 = 1_000_000;

/// The error of `--workers` above 1 on SQLite.
pub(crate) const WORKERS_NEED_POSTGRES: &str = "--workers above 1 needs --database URL, \
    because a SQLite benchmark runs one worker: pass --database or --workers 1";

/// The error of `bench memory` on PostgreSQL.
const MEMORY_NEEDS_SQLITE: &str =
    "`oaj bench memory` measures an `oaj worker` process on a SQLite file: drop --database";

/// Arguments of `oaj bench`.
#[derive(Debug, Args)]
pub struct BenchCommand {
    /// Print the settings and results as one JSON object instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub workload: Workload,
}

/// The workloads `oaj bench` can run.
#[derive(Debug, Subcommand)]
pub enum Workload {
    /// Enqueue single-step noop jobs, then time the workers draining them all (jobs per second).
    Drain(DrainArgs),
    /// Time inserting jobs in batches and one at a time, with no worker running.
    Enqueue(EnqueueArgs),
    /// Time from submitting a job to its first attempt starting, one job at a time, on an idle
    /// worker.
    Latency(LatencyArgs),
    /// Run a workflow of sequential noop steps, one job at a time, and report the time per step.
    Sequential(SequentialArgs),
    /// Fill a store with many jobs in a mix of states, then time listing the newest jobs of each
    /// state and counting jobs by state.
    Scale(ScaleArgs),
    /// Fill a store with queued noop jobs, then report the peak resident memory of an
    /// `oaj worker` process that drains them.
    Memory(MemoryArgs),
}

/// Arguments of `oaj bench drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Jobs to enqueue before the worker starts.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..=JOBS_MAX))]
    pub jobs: u32,
    /// Engines to run at once, each with its own store connections like a separate `oaj worker`
    /// process, but all in this process. More than 1 needs `--database`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    #[command(flatten)]
    pub db: BenchDb,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// Arguments of `oaj bench enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Jobs to insert in batches.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=JOBS_MAX))]
    pub jobs: u32,
    /// Jobs per `job_submit_many` call.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// Jobs to insert one at a time, each in its own call; 0 skips that part.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=JOBS_ONE_AT_A_TIME_MAX))]
    pub single_jobs: u32,
    /// Callers that insert the single jobs at once, each waiting for its insert to commit before
    /// it sends the next, as concurrent API clients do.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub single_clients: u32,
    #[command(flatten)]
    pub db: BenchDb,
}

/// Arguments of `oaj bench latency`.
#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// Jobs to submit, each after the previous one has completed.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=JOBS_ONE_AT_A_TIME_MAX))]
    pub jobs: u32,
    /// Engines to run at once, each with its own store connections like a separate `oaj worker`
    /// process, but all in this process. More than 1 needs `--database`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    #[command(flatten)]
    pub db: BenchDb,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// Arguments of `oaj bench sequential`.
#[derive(Debug, Args)]
pub struct SequentialArgs {
    /// Steps in the workflow, each depending on the one before.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub steps: u32,
    /// Jobs to run, each after the previous one has completed.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=JOBS_ONE_AT_A_TIME_MAX))]
    pub jobs: u32,
    #[command(flatten)]
    pub db: BenchDb,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// Arguments of `oaj bench scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Jobs to store: 90% of the oldest 95% end completed, 7% failed and 3% cancelled, and the
    /// newest 5% stay queued.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=JOBS_MAX))]
    pub jobs: u32,
    /// Times each query is run; the report gives the median and the maximum.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    #[command(flatten)]
    pub db: BenchDb,
}

/// Arguments of `oaj bench memory`.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Jobs to enqueue before the worker process starts.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=JOBS_MAX))]
    pub jobs: u32,
    #[command(flatten)]
    pub db: BenchDb,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// Runs the workload, prints its report, and fails when a job did not complete exactly once.
///
/// SIGINT or SIGTERM stops the run: the workload is dropped, which deletes a temporary database
/// and kills the worker process of `memory`, and the exit status is the one a shell reports for
/// that signal.
pub async fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    if let Some(problem) = command.workload.flags_problem() {
        errln!("error: {problem}");
        return Ok(ExitCode::from(exit::USAGE));
    }
    // Listening starts before the workload, whose first step (opening the database) does not
    // yield, so that a signal that comes during it is not lost.
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let report = tokio::select! {
        report = workload_run(command.workload) => report?,
        status = interrupted(&mut interrupt, &mut terminate) => {
            errln!(
                "benchmark interrupted: a temporary database is deleted; one given by --db or \
                 --database is kept"
            );
            return Ok(ExitCode::from(status));
        }
    };
    if command.json {
        outln!("{}", report.to_json());
    } else {
        let table = report.to_table();
        super::terminal::stdout_write(format_args!("{}", super::terminal::printable(&table)));
    }
    Ok(ExitCode::from(exit::COMPLETED))
}

impl Workload {
    /// Returns what is wrong with a combination of flags that clap cannot check alone.
    fn flags_problem(&self) -> Option<&'static str> {
        let (workers, db) = match self {
            Workload::Drain(args) => (args.workers, &args.db),
            Workload::Latency(args) => (args.workers, &args.db),
            Workload::Memory(args) if args.db.database.is_some() => {
                return Some(MEMORY_NEEDS_SQLITE)
            }
            _ => return None,
        };
        (workers > 1 && db.database.is_none()).then_some(WORKERS_NEED_POSTGRES)
    }
}

async fn workload_run(workload: Workload) -> anyhow::Result<Report> {
    match workload {
        Workload::Drain(args) => drain::run(args).await,
        Workload::Enqueue(args) => enqueue::run(args).await,
        Workload::Latency(args) => latency::run(args).await,
        Workload::Sequential(args) => sequential::run(args).await,
        Workload::Scale(args) => scale::run(args).await,
        Workload::Memory(args) => memory::run(args).await,
    }
}

/// Waits for SIGINT or SIGTERM and returns the exit status a shell reports for it (128 plus the
/// signal's number).
async fn interrupted(interrupt: &mut Signal, terminate: &mut Signal) -> u8 {
    tokio::select! {
        _ = interrupt.recv() => 130,
        _ = terminate.recv() => 143,
    }
}
