//! `oaj bench latency`: the time from submitting a job to its first attempt starting, on workers
//! with nothing else to do.

use std::time::Instant;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::report::{quantile, Report};
use super::setup::{describe_worker, event_wait, noop_workflow};
use super::LatencyArgs;

/// Submits one job at a time and times it with the in-process event stream.
///
/// Three spans are measured from the moment the submit call begins: until the insert is
/// committed (`submit`), until a worker claimed the job (`claim`), and until the first attempt
/// was recorded as started (`start`). The next job is submitted once the previous one completed.
pub async fn run(args: LatencyArgs) -> anyhow::Result<Report> {
    let bench = args.db.open().await?;
    let engines = bench.engines(args.worker.config(), args.workers).await?;
    let engine = engines[0].clone();
    let mut report = Report::new("latency");
    bench.describe(&mut report, args.db.is_kept()).await?;
    describe_worker(&mut report, &args.worker);
    report.setting("jobs", args.jobs);
    report.setting("workers", args.workers);
    let submit = noop_workflow(&engine, 1).await?;

    let shutdown = CancellationToken::new();
    let mut workers = JoinSet::new();
    for engine in engines {
        let shutdown = shutdown.clone();
        workers.spawn(async move { engine.run(shutdown).await });
    }
    let mut events = engine.store().event_subscribe();
    let (mut submitted, mut claimed, mut started) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.jobs {
        let begin = Instant::now();
        let id = engine.job_submit(submit.clone()).await?;
        submitted.push(begin.elapsed().as_secs_f64() * 1000.0);
        event_wait(&mut events, &id, |kind| kind == "job.running").await?;
        claimed.push(begin.elapsed().as_secs_f64() * 1000.0);
        event_wait(&mut events, &id, |kind| kind == "attempt.started").await?;
        started.push(begin.elapsed().as_secs_f64() * 1000.0);
        event_wait(&mut events, &id, |kind| kind == "job.completed").await?;
    }
    shutdown.cancel();
    while let Some(worker) = workers.join_next().await {
        worker.context("a worker task panicked")?;
    }

    spread(
        &mut report,
        ["submit_median_ms", "submit_p99_ms"],
        submitted,
    );
    spread(&mut report, ["claim_median_ms", "claim_p99_ms"], claimed);
    spread(&mut report, ["start_median_ms", "start_p99_ms"], started);
    report.result("jobs_completed", args.jobs);
    Ok(report)
}

/// Adds the median and the 99th percentile of `samples` under the two keys.
fn spread(report: &mut Report, keys: [&'static str; 2], mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    report.measure(keys[0], quantile(&samples, 0.5));
    report.measure(keys[1], quantile(&samples, 0.99));
}
