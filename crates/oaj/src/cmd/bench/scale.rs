//! `oaj bench scale`: the job list and the job counts on a store that contains many jobs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use oaj_core::JobState;
use oaj_engine::{Engine, EngineConfig};
use oaj_store::{ClaimParams, Job, JobFilter, JobFinish, JobOutcome, JobQuery, Store};
use serde_json::json;
use tokio::task::JoinSet;

use super::report::{quantile, Report};
use super::setup::noop_workflow;
use super::ScaleArgs;

/// Jobs per insert call while the store is filled.
const FILL_BATCH: usize = 5_000;

/// Jobs claimed per call, then finished, while the store is filled.
const CLAIM_BATCH: usize = 1_000;

/// Jobs per listing, the page a dashboard shows.
const PAGE: usize = 50;

/// The state filters timed, each with the name its results carry. An empty list means all jobs.
const FILTERS: [(&str, &[JobState]); 5] = [
    ("all", &[]),
    ("queued", &[JobState::Queued]),
    ("completed", &[JobState::Completed]),
    ("failed", &[JobState::Failed]),
    ("cancelled", &[JobState::Cancelled]),
];

/// Fills the store, checks the counters and listings against what the fill did, and times them.
pub async fn run(args: ScaleArgs) -> anyhow::Result<Report> {
    let bench = args.db.open().await?;
    // No worker runs: the fill claims and finishes jobs through the store itself.
    let engine = bench.engine(EngineConfig::default());
    let mut report = Report::new("scale");
    bench.describe(&mut report, args.db.is_kept()).await?;
    report.setting("jobs", args.jobs);
    report.setting("page", PAGE);
    report.setting("repeat", args.repeat);

    let started = Instant::now();
    let truth = fill(&engine, args.jobs as usize).await?;
    let seconds = started.elapsed().as_secs_f64();
    report.measure("fill_seconds", seconds);
    report.measure("fill_jobs_per_second", f64::from(args.jobs) / seconds);
    if let Some(bytes) = bench.sqlite_bytes() {
        report.result("database_mib", bytes / (1024 * 1024));
    }
    for (state, count) in &truth.counts {
        report.result(format!("jobs_{state}"), *count);
    }

    let store = engine.store().as_ref();
    time_counts(store, &truth, args.repeat, &mut report).await?;
    for (name, states) in FILTERS {
        let expected = truth.newest(states);
        time_listings(store, name, states, &expected, args.repeat, &mut report).await?;
    }
    report.result("listings_checked", FILTERS.len() * 2 * args.repeat as usize);
    Ok(report)
}

/// The outcome of the fill: the number of jobs in each state, and the newest jobs of each state.
#[derive(Debug, Default)]
struct Truth {
    counts: BTreeMap<JobState, u64>,
    /// Up to [`PAGE`] ids per state, oldest first.
    newest: BTreeMap<JobState, VecDeque<String>>,
    /// The last [`PAGE`] ids inserted, oldest first.
    newest_inserted: VecDeque<String>,
}

impl Truth {
    fn record(&mut self, state: JobState, id: &str) {
        *self.counts.entry(state).or_default() += 1;
        window_push(self.newest.entry(state).or_default(), id);
    }

    /// Returns the ids a listing of `states` must return, newest first. It assumes that jobs
    /// are created and claimed in the order they were inserted, because the engine stamps each
    /// insert call with its clock and UUIDv7 ids rise within a process.
    fn newest(&self, states: &[JobState]) -> Vec<String> {
        let window = match states {
            [] => Some(&self.newest_inserted),
            [state] => self.newest.get(state),
            _ => unreachable!("each timed filter has at most one state"),
        };
        window
            .map(|ids| ids.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

fn window_push(window: &mut VecDeque<String>, id: &str) {
    if window.len() == PAGE {
        window.pop_front();
    }
    window.push_back(id.to_owned());
}

/// Returns the state the fill gives to the `index`-th job it claims: 90% completed, 7% failed
/// and 3% cancelled, spread over time like a steady stream of work.
fn finished_state(index: usize) -> JobState {
    match index % 100 {
        0..90 => JobState::Completed,
        90..97 => JobState::Failed,
        _ => JobState::Cancelled,
    }
}

/// Inserts `total` single-step noop jobs, then claims and finishes all but the newest 5%, which
/// stay queued.
///
/// Every change goes through the store's own writes (`job_insert_many`, `job_claim`,
/// `job_finish`), so indexes, counters and events are what a real run leaves. It is faster than
/// running the jobs because no attempt is recorded: the noop step never runs, and a job goes
/// from queued to running to its end in two writes. The finishes of one claim run at once, so
/// the writer groups them into few transactions.
async fn fill(engine: &Engine, total: usize) -> anyhow::Result<Truth> {
    let mut truth = Truth::default();
    let submit = noop_workflow(engine, 1).await?;
    let mut inserted = 0;
    while inserted < total {
        let count = FILL_BATCH.min(total - inserted);
        let ids = engine
            .job_submit_many(vec![submit.clone(); count], None)
            .await?;
        for id in &ids {
            window_push(&mut truth.newest_inserted, id);
        }
        inserted += ids.len();
    }

    let queued = total / 20;
    let to_finish = total - queued;
    let store = engine.store();
    let mut finished = 0;
    while finished < to_finish {
        let now = engine.clock().now_ms();
        let limit = CLAIM_BATCH.min(to_finish - finished);
        let claims = store
            .job_claim(ClaimParams {
                worker_id: "bench-scale".to_owned(),
                limit: u32::try_from(limit).expect("a claim batch fits in u32"),
                now,
                lease_ms: 3_600_000,
                job_ids: Vec::new(),
            })
            .await?;
        if claims.is_empty() {
            bail!("the claim returned no job, but {finished} of {to_finish} jobs are finished");
        }
        let mut finishes = JoinSet::new();
        for claim in claims {
            let state = finished_state(finished);
            finished += 1;
            truth.record(state, &claim.job.id);
            let outcome = match state {
                JobState::Completed => JobOutcome::Completed(json!({ "s1": {} })),
                JobState::Failed => JobOutcome::Failed("step s1 failed".to_owned()),
                _ => JobOutcome::Cancelled,
            };
            let finish = JobFinish {
                lease: claim.lease,
                attempts: Vec::new(),
                outcome,
                now,
            };
            let store = Arc::clone(store);
            finishes.spawn(async move { store.job_finish(finish).await });
        }
        while let Some(done) = finishes.join_next().await {
            done.context("a job_finish task panicked")??;
        }
    }

    let queued_ids: Vec<String> = truth
        .newest_inserted
        .iter()
        .rev()
        .take(queued)
        .cloned()
        .collect();
    for id in queued_ids.iter().rev() {
        window_push(truth.newest.entry(JobState::Queued).or_default(), id);
    }
    if queued > 0 {
        truth.counts.insert(JobState::Queued, queued as u64);
    }
    Ok(truth)
}

/// Times `job_counts` and checks it against the fill: every state it did not use counts 0.
async fn time_counts(
    store: &dyn Store,
    truth: &Truth,
    repeat: u32,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut samples = Vec::new();
    for _ in 0..repeat {
        let begin = Instant::now();
        let counts = store.job_counts().await?;
        samples.push(begin.elapsed().as_secs_f64() * 1000.0);
        let mismatched: Vec<_> = JobState::ALL
            .iter()
            .filter(|state| {
                counts.get(state).copied().unwrap_or(0)
                    != truth.counts.get(state).copied().unwrap_or(0)
            })
            .collect();
        if !mismatched.is_empty() {
            bail!(
                "job_counts returned {counts:?}, but the fill left {:?}",
                truth.counts
            );
        }
    }
    spread(report, "job_counts", samples);
    Ok(())
}

/// Times the newest [`PAGE`] jobs of `states` through `job_query` (the API's and dashboard's
/// list) and `job_list` (the CLI's), and checks each page against `expected`.
async fn time_listings(
    store: &dyn Store,
    name: &str,
    states: &[JobState],
    expected: &[String],
    repeat: u32,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (mut query_ms, mut list_ms) = (Vec::new(), Vec::new());
    for _ in 0..repeat {
        let query = JobQuery {
            states: states.to_vec(),
            limit: PAGE as u32,
            ..JobQuery::default()
        };
        let begin = Instant::now();
        let jobs = store.job_query(query).await?;
        query_ms.push(begin.elapsed().as_secs_f64() * 1000.0);
        page_check("job_query", name, states, &jobs, expected)?;

        let filter = JobFilter {
            states: states.to_vec(),
            limit: PAGE as u32,
            ..JobFilter::default()
        };
        let begin = Instant::now();
        let jobs = store.job_list(filter).await?;
        list_ms.push(begin.elapsed().as_secs_f64() * 1000.0);
        page_check("job_list", name, states, &jobs, expected)?;
    }
    spread(report, &format!("job_query_{name}"), query_ms);
    spread(report, &format!("job_list_{name}"), list_ms);
    Ok(())
}

/// Checks that a page contains exactly the expected jobs, newest first, each in a listed state.
fn page_check(
    method: &str,
    name: &str,
    states: &[JobState],
    jobs: &[Job],
    expected: &[String],
) -> anyhow::Result<()> {
    if let Some(job) = jobs
        .iter()
        .find(|job| !states.is_empty() && !states.contains(&job.state))
    {
        bail!(
            "{method} with filter {name} returned job {} in state {}",
            job.id,
            job.state
        );
    }
    let ids: Vec<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
    if ids != expected {
        bail!("{method} with filter {name} returned {ids:?}, expected the newest {expected:?}");
    }
    Ok(())
}

/// Adds the median and the maximum of `samples`, in milliseconds, under `name`.
fn spread(report: &mut Report, name: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    report.measure(format!("{name}_median_ms"), quantile(&samples, 0.5));
    report.measure(format!("{name}_max_ms"), quantile(&samples, 1.0));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_state_mix_per_hundred() {
        let mut counts: BTreeMap<JobState, u32> = BTreeMap::new();
        for index in 0..200 {
            *counts.entry(finished_state(index)).or_default() += 1;
        }
        assert_eq!(counts[&JobState::Completed], 180);
        assert_eq!(counts[&JobState::Failed], 14);
        assert_eq!(counts[&JobState::Cancelled], 6);
    }

    #[test]
    fn window_keeps_newest_page() {
        let mut window = VecDeque::new();
        for number in 0..PAGE + 3 {
            window_push(&mut window, &number.to_string());
        }
        assert_eq!(window.len(), PAGE);
        assert_eq!(window.front().map(String::as_str), Some("3"));
    }
}
