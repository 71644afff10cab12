//! `oaj bench sequential`: the overhead of each step in a long chain of noop steps.

use std::time::Instant;

use anyhow::{bail, Context};
use oaj_store::StepState;
use tokio_util::sync::CancellationToken;

use super::report::{quantile, Report};
use super::setup::{describe_worker, event_wait, noop_workflow};
use super::SequentialArgs;

/// Runs one job at a time through a chain of `args.steps` noop steps. The time from submit to
/// the `job.completed` event, divided by the steps, is the overhead of one step.
pub async fn run(args: SequentialArgs) -> anyhow::Result<Report> {
    let bench = args.db.open().await?;
    let engine = bench.engine(args.worker.config());
    let mut report = Report::new("sequential");
    bench.describe(&mut report, args.db.is_kept()).await?;
    describe_worker(&mut report, &args.worker);
    report.setting("steps", args.steps);
    report.setting("jobs", args.jobs);
    let submit = noop_workflow(&engine, args.steps).await?;

    let shutdown = CancellationToken::new();
    let worker = tokio::spawn({
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        async move { engine.run(shutdown).await }
    });
    let mut events = engine.store().event_subscribe();
    let mut job_ms = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..args.jobs {
        let begin = Instant::now();
        let id = engine.job_submit(submit.clone()).await?;
        event_wait(&mut events, &id, |kind| kind == "job.completed").await?;
        job_ms.push(begin.elapsed().as_secs_f64() * 1000.0);
        ids.push(id);
    }
    shutdown.cancel();
    worker.await.context("the worker task panicked")?;

    for id in &ids {
        let runs = engine.store().step_run_list(id).await?;
        let completed = runs
            .iter()
            .filter(|run| run.state == StepState::Completed && run.attempts == 1)
            .count();
        if completed != args.steps as usize {
            bail!(
                "job {id} completed {completed} of {} steps with one attempt each",
                args.steps
            );
        }
        let attempts = engine.store().attempt_list(id).await?.len();
        if attempts != args.steps as usize {
            bail!("job {id} has {attempts} attempts, expected {}", args.steps);
        }
    }

    job_ms.sort_by(f64::total_cmp);
    let steps = f64::from(args.steps);
    report.measure("job_median_ms", quantile(&job_ms, 0.5));
    report.measure("step_median_ms", quantile(&job_ms, 0.5) / steps);
    report.measure("step_min_ms", job_ms[0] / steps);
    report.measure("step_max_ms", job_ms[job_ms.len() - 1] / steps);
    report.result("jobs_completed", ids.len());
    Ok(report)
}
