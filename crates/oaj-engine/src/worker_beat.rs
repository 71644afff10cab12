//! The worker heartbeat: a row in the store's `workers` table that lists this engine, idle or
//! busy, with the number of jobs it holds.

use std::sync::Arc;
use std::time::Duration;

use oaj_store::WorkerBeat;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::engine::Shared;

/// How often the engine writes its heartbeat. Far shorter than `oaj_store::WORKER_FORGET_MS`, so a
/// running worker would miss hundreds of beats before maintenance deletes it, and long enough
/// that idle engines add few writes.
const WORKER_BEAT_INTERVAL: Duration = Duration::from_secs(5);

/// Writes the engine's heartbeat at once, then every [`WORKER_BEAT_INTERVAL`] until `stop`.
pub(crate) async fn worker_beat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let started_at = shared.clock.now_ms();
    let hostname = hostname();
    let mut interval = tokio::time::interval(WORKER_BEAT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.cancelled() => return,
        }
        let beat = WorkerBeat {
            worker_id: shared.config.worker_id.clone(),
            hostname: hostname.clone(),
            pid: std::process::id(),
            started_at,
            now: shared.clock.now_ms(),
            running: u32::try_from(shared.held_count()).unwrap_or(u32::MAX),
        };
        if let Err(error) = shared.store.worker_heartbeat(beat).await {
            warn!(error = %error, "worker heartbeat failed; retrying at the next tick");
        }
    }
}

/// Reads the host name from the kernel on Linux, then from `HOSTNAME`, else returns `unknown`.
fn hostname() -> String {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let name = from_kernel.or_else(|| std::env::var("HOSTNAME").ok());
    match name.map(|name| name.trim().to_owned()) {
        Some(name) if !name.is_empty() => name,
        _ => "unknown".to_owned(),
    }
}
