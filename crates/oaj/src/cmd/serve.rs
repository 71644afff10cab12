//! `oaj serve`: the HTTP API and the workers in one process.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use oaj_server::ServerConfig;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::common::{self, DbArgs, WorkerArgs};
use super::exit;

/// Arguments of `oaj serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on. The default accepts connections from this machine only.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Bearer token that every route except /v1/health requires. Prefer the environment
    /// variable: other users can read command lines.
    #[arg(long, env = "OAJ_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Attempts run at once by this process's workers; 0 serves the API without running jobs.
    #[arg(long, value_name = "N", conflicts_with = "concurrency",
        value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub workers: Option<u32>,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// Serves until SIGINT or SIGTERM, then stops accepting requests, lets the engine hand
/// unfinished jobs back through their leases, and exits.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (store, location) = args.db.open().await?;
    let mut config = args.worker.config();
    let run_workers = args.workers != Some(0);
    if let Some(workers) = args.workers.filter(|workers| *workers > 0) {
        config.attempts_max = workers as usize;
    }
    let engine = common::engine(store, config);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    // Printed whatever the log level, so that scripts and tests that pass port 0 can read the
    // bound port. A server whose stderr cannot be written still serves.
    let _ = writeln!(std::io::stderr(), "listening on {address}");
    let shutdown = CancellationToken::new();
    let watcher = tokio::spawn(signal_watch(shutdown.clone()));

    let server_config = ServerConfig { token: args.token };
    let has_token = server_config.token.is_some();
    info!(address = %address, db = %location, has_token, run_workers, "server started");
    let engine_task = run_workers.then(|| {
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { engine.run(shutdown).await })
    });
    let served = oaj_server::serve(listener, engine, server_config, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(task) = engine_task {
        task.await.context("the engine task panicked")?;
    }
    // The watcher ends as soon as the token is cancelled.
    let _ = watcher.await;
    served.context("serving the API failed")?;
    info!("server stopped");
    Ok(ExitCode::from(exit::COMPLETED))
}

async fn signal_watch(shutdown: CancellationToken) {
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(error) => {
            tracing::warn!(error = %error, "cannot watch SIGTERM; only SIGINT stops the server");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => info!("interrupted; shutting down"),
                _ = shutdown.cancelled() => {}
            }
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted; shutting down"),
        _ = terminate.recv() => info!("terminated; shutting down"),
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}
