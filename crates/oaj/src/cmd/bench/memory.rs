//! `oaj bench memory`: the peak resident memory of an `oaj worker` process that drains a store
//! of many queued jobs.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use oaj_engine::EngineConfig;
use tokio::process::Command;
use tokio::sync::oneshot;

use super::drain::verify;
use super::report::Report;
use super::setup::{describe_worker, jobs_enqueue, noop_workflow};
use super::MemoryArgs;

/// Jobs per insert call while the queue is filled; the filling is not measured.
const FILL_BATCH: usize = 5_000;

/// How often the worker's peak resident memory is read from /proc while it runs.
///
/// `VmHWM` is the peak of the process since its exec, so a read catches all growth before it,
/// and only growth in the worker's last interval before exit can be missed. A small drain ends
/// within a few milliseconds of the worker's start, so the interval is short. The reaped child's
/// `ru_maxrss` is no substitute, because Linux adds to it the peak of the address space the
/// child had before exec. After a spawn that shares memory until exec (`posix_spawn`, vfork),
/// that is the memory of `oaj bench` itself, with the ids of every job it filled the queue with.
const SAMPLE_EVERY: Duration = Duration::from_millis(2);

/// Fills a SQLite store with queued jobs, runs `oaj worker --exit-when-idle` on it as a child
/// process, and reports the child's peak resident memory. Then checks that every job completed
/// with exactly one attempt.
pub async fn run(args: MemoryArgs) -> anyhow::Result<Report> {
    let bench = args.db.open().await?;
    let path = bench
        .sqlite_path()
        .expect("a store opened without --database is SQLite")
        .to_owned();
    // This process only fills the queue; the child process runs the jobs.
    let engine = bench.engine(EngineConfig::default());
    let mut report = Report::new("memory");
    bench.describe(&mut report, args.db.is_kept()).await?;
    describe_worker(&mut report, &args.worker);
    report.setting("jobs", args.jobs);

    let submit = noop_workflow(&engine, 1).await?;
    let total = args.jobs as usize;
    let ids = jobs_enqueue(&engine, &submit, total, FILL_BATCH).await?;
    if let Some(bytes) = bench.sqlite_bytes() {
        report.result("database_mib", bytes / (1024 * 1024));
    }

    let started = Instant::now();
    let peak_kib = worker_run(&path, &args).await?;
    let seconds = started.elapsed().as_secs_f64();
    report.measure("seconds", seconds);
    report.measure("jobs_per_second", total as f64 / seconds);
    report.measure("peak_rss_mib", peak_kib as f64 / 1024.0);

    verify(engine.store().as_ref(), &ids, &mut report).await?;
    Ok(report)
}

/// Runs `oaj worker --exit-when-idle` on the file at `path` until it exits, and returns its peak
/// resident memory in KiB.
async fn worker_run(path: &Path, args: &MemoryArgs) -> anyhow::Result<u64> {
    let program = std::env::current_exe().context("cannot find the oaj binary to run")?;
    let worker = &args.worker;
    let mut command = Command::new(program);
    command
        .arg("worker")
        .arg("--exit-when-idle")
        .arg("--db")
        .arg(path)
        .args(["--concurrency", &worker.concurrency.to_string()])
        .args(["--jobs-max", &worker.jobs_max.to_string()])
        .args(["--lease-seconds", &worker.lease_seconds.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // An interrupted benchmark drops this run, and the worker must not outlive it.
        .kill_on_drop(true);
    for (agent, limit) in &worker.agent_limits {
        command.arg("--agent-limit").arg(format!("{agent}={limit}"));
    }
    let child = command.spawn().context("cannot start oaj worker")?;
    let pid = child.id().expect("a child that was just spawned has a pid");

    let (stop, stopped) = oneshot::channel();
    let sampler = tokio::spawn(sample(pid, stopped));
    let output = child
        .wait_with_output()
        .await
        .context("cannot wait for oaj worker")?;
    // The sampler stops on this message or on a closed channel, so a failed send changes nothing.
    let _ = stop.send(());
    let peak_kib = sampler.await.context("the memory sampler panicked")?;
    if !output.status.success() {
        bail!(
            "oaj worker exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if peak_kib == 0 {
        bail!("cannot read VmHWM of oaj worker (pid {pid}) from /proc");
    }
    Ok(peak_kib)
}

/// Reads `VmHWM` of process `pid` every [`SAMPLE_EVERY`] until `stopped` fires, and returns the
/// largest value read, in KiB.
///
/// Readings before the child's exec are skipped: until then the child runs `oaj bench`'s own
/// command line, and its `VmHWM` is that of the spawn (about 140 KiB), not the worker's. A drain
/// of 40 jobs once ended before the second reading, and the bench reported that figure.
async fn sample(pid: u32, mut stopped: oneshot::Receiver<()>) -> u64 {
    let mut largest = 0;
    loop {
        if is_worker(pid) {
            if let Some(kib) = status_kib(pid, "VmHWM:") {
                largest = largest.max(kib);
            }
        }
        tokio::select! {
            _ = &mut stopped => return largest,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}

/// Reports whether process `pid` runs `oaj worker`, which it does once it has exec'd.
fn is_worker(pid: u32) -> bool {
    let Ok(command_line) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    command_line.split(|byte| *byte == 0).nth(1) == Some(b"worker".as_slice())
}

/// Reads one `kB` field of /proc/PID/status, or `None` once the process is gone.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
