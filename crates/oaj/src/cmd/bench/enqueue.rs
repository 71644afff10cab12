//! `oaj bench enqueue`: how fast jobs are inserted, in batches and one at a time.

use std::time::Instant;

use anyhow::{bail, Context};
use oaj_core::JobState;
use tokio::task::JoinSet;

use super::report::Report;
use super::setup::noop_workflow;
use super::EnqueueArgs;

/// Inserts jobs with no worker running and checks that all of them are queued.
pub async fn run(args: EnqueueArgs) -> anyhow::Result<Report> {
    let bench = args.db.open().await?;
    // No worker runs, so the default settings are enough to build the engine.
    let engine = bench.engine(oaj_engine::EngineConfig::default());
    let mut report = Report::new("enqueue");
    bench.describe(&mut report, args.db.is_kept()).await?;
    report.setting("jobs", args.jobs);
    report.setting("batch_size", args.batch_size);
    report.setting("single_jobs", args.single_jobs);
    report.setting("single_clients", args.single_clients);
    let submit = noop_workflow(&engine, 1).await?;

    let total = args.jobs as usize;
    let batch_size = args.batch_size as usize;
    let started = Instant::now();
    let mut inserted = 0;
    while inserted < total {
        let count = batch_size.min(total - inserted);
        inserted += engine
            .job_submit_many(vec![submit.clone(); count], None)
            .await?
            .len();
    }
    let seconds = started.elapsed().as_secs_f64();
    report.measure("batched_seconds", seconds);
    report.measure("batched_jobs_per_second", total as f64 / seconds);

    if args.single_jobs > 0 {
        let started = Instant::now();
        let mut clients = JoinSet::new();
        for client in 0..args.single_clients {
            let share = client_share(args.single_jobs, args.single_clients, client);
            let engine = engine.clone();
            let submit = submit.clone();
            clients.spawn(async move {
                for _ in 0..share {
                    engine.job_submit(submit.clone()).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(client) = clients.join_next().await {
            client.context("a client task panicked")??;
        }
        let seconds = started.elapsed().as_secs_f64();
        report.measure("single_seconds", seconds);
        report.measure(
            "single_jobs_per_second",
            f64::from(args.single_jobs) / seconds,
        );
    }

    let expected = u64::from(args.jobs) + u64::from(args.single_jobs);
    let counts = engine.store().job_counts().await?;
    let queued = counts.get(&JobState::Queued).copied().unwrap_or(0);
    if queued != expected {
        bail!("expected {expected} queued jobs after the run, found {counts:?}");
    }
    report.result("jobs_queued", queued);
    Ok(report)
}

/// Returns how many of `jobs` the client numbered `client` of `clients` inserts, so that the
/// shares differ by one at most and add up to `jobs`.
fn client_share(jobs: u32, clients: u32, client: u32) -> u32 {
    jobs / clients + u32::from(client < jobs % clients)
}

#[cfg(test)]
mod tests {
    use super::client_share;

    #[test]
    fn client_shares_add_up() {
        for (jobs, clients) in [(200, 1), (200, 64), (5, 8), (1_000, 7)] {
            let shares: Vec<u32> = (0..clients)
                .map(|client| client_share(jobs, clients, client))
                .collect();
            assert_eq!(
                shares.iter().sum::<u32>(),
                jobs,
                "{jobs} jobs, {clients} clients"
            );
            let spread = shares.iter().max().unwrap() - shares.iter().min().unwrap();
            assert!(spread <= 1, "{jobs} jobs, {clients} clients: {shares:?}");
        }
    }
}
