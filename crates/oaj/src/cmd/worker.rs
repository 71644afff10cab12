//! `oaj worker`: run whatever is queued in a database, including jobs left by a crashed process.

use std::process::ExitCode;

use clap::Args;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::common::{self, DbArgs, WorkerArgs};
use super::exit;

/// Arguments of `oaj worker`.
#[derive(Debug, Args)]
pub struct WorkerCommand {
    /// Exit once nothing is queued or running in the database (pending jobs that wait for a time
    /// or an approval are left).
    #[arg(long)]
    pub exit_when_idle: bool,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// Runs `oaj worker` until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(args: WorkerCommand) -> anyhow::Result<ExitCode> {
    let (store, location) = args.db.open().await?;
    let mut config = args.worker.config();
    config.exit_when_idle = args.exit_when_idle;
    let engine = common::engine(store, config);
    let shutdown = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate())?;
    let watcher = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => info!("interrupted; shutting down"),
                _ = terminate.recv() => info!("terminated; shutting down"),
                _ = shutdown.cancelled() => {}
            }
            shutdown.cancel();
        }
    });
    info!(db = %location, "worker started");
    engine.run(shutdown.clone()).await;
    shutdown.cancel();
    // The watcher ends as soon as the token is cancelled.
    let _ = watcher.await;
    Ok(ExitCode::from(exit::COMPLETED))
}
