//! `oaj bench drain`: how fast one or more workers empty a queue of single-step noop jobs.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Context};
use oaj_core::JobState;
use oaj_store::{AttemptState, EventFilter, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::report::Report;
use super::setup::{describe_worker, jobs_enqueue, noop_workflow};
use super::DrainArgs;

/// Jobs per insert while the queue is filled; the filling is not timed.
const FILL_BATCH: usize = 1_000;

/// Jobs whose attempt rows are read back one by one after the run, spread evenly over all jobs.
const ATTEMPT_SAMPLE: usize = 1_000;

/// Events read per page when the run is checked.
const EVENT_PAGE: u32 = 1_000;

/// Fills the queue, times the drain, and checks every job completed with exactly one attempt.
pub async fn run(args: DrainArgs) -> anyhow::Result<Report> {
    let bench = args.db.open().await?;
    let mut config = args.worker.config();
    config.exit_when_idle = true;
    let engines = bench.engines(config, args.workers).await?;
    let engine = engines[0].clone();
    let mut report = Report::new("drain");
    bench.describe(&mut report, args.db.is_kept()).await?;
    describe_worker(&mut report, &args.worker);
    report.setting("jobs", args.jobs);
    report.setting("workers", args.workers);

    let submit = noop_workflow(&engine, 1).await?;
    let total = args.jobs as usize;
    let ids = jobs_enqueue(&engine, &submit, total, FILL_BATCH).await?;

    let started = Instant::now();
    let mut runs = JoinSet::new();
    for engine in engines {
        runs.spawn(async move { engine.run(CancellationToken::new()).await });
    }
    while let Some(run) = runs.join_next().await {
        run.context("a worker task panicked")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    report.measure("seconds", seconds);
    report.measure("jobs_per_second", total as f64 / seconds);

    verify(engine.store().as_ref(), &ids, &mut report).await?;
    Ok(report)
}

/// Checks from the store that each job completed once and ran exactly one attempt.
pub(super) async fn verify(
    store: &dyn Store,
    ids: &[String],
    report: &mut Report,
) -> anyhow::Result<()> {
    let counts = store.job_counts().await?;
    let completed = counts.get(&JobState::Completed).copied().unwrap_or(0);
    let unfinished: u64 = counts
        .iter()
        .filter(|(state, _)| **state != JobState::Completed)
        .map(|(_, count)| count)
        .sum();
    if completed != ids.len() as u64 || unfinished != 0 {
        bail!(
            "expected {} completed jobs and no others, found {counts:?}",
            ids.len()
        );
    }
    report.result("jobs_completed", completed);

    let tallies = event_tallies(store).await?;
    for id in ids {
        let tally = tallies.get(id).copied().unwrap_or_default();
        if tally
            != (Tally {
                started: 1,
                succeeded: 1,
                completed: 1,
            })
        {
            bail!("job {id} did not run exactly once: {tally:?}");
        }
    }
    report.result("attempts_started", ids.len());
    report.result("jobs_checked_once", ids.len());

    let step = (ids.len() / ATTEMPT_SAMPLE).max(1);
    for id in ids.iter().step_by(step) {
        let attempts = store.attempt_list(id).await?;
        let succeeded = attempts
            .iter()
            .filter(|attempt| attempt.state == AttemptState::Succeeded)
            .count();
        if attempts.len() != 1 || succeeded != 1 {
            bail!(
                "job {id} has {} attempts, expected one that succeeded",
                attempts.len()
            );
        }
    }
    Ok(())
}

/// Events that mark one run of a single-step job.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    started: u32,
    succeeded: u32,
    completed: u32,
}

/// Counts, per job, the events that record an attempt start, an attempt success and the job end.
async fn event_tallies(store: &dyn Store) -> anyhow::Result<HashMap<String, Tally>> {
    let mut tallies: HashMap<String, Tally> = HashMap::new();
    let mut after_seq = 0;
    loop {
        let filter = EventFilter {
            job_id: None,
            after_seq,
            limit: EVENT_PAGE,
        };
        let page = store
            .event_list(filter)
            .await
            .context("cannot read the events back")?;
        let Some(last) = page.last() else {
            return Ok(tallies);
        };
        after_seq = last.seq;
        for event in page {
            let Some(job_id) = event.job_id else {
                continue;
            };
            let tally = tallies.entry(job_id).or_default();
            match event.kind.as_str() {
                "attempt.started" => tally.started += 1,
                "attempt.succeeded" => tally.succeeded += 1,
                "job.completed" => tally.completed += 1,
                _ => {}
            }
        }
    }
}
