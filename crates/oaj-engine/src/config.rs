//! Settings of one engine: how many jobs and attempts it runs at once, and its timing.

use std::collections::HashMap;
use std::time::Duration;

/// Settings of an [`crate::Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Id written as the lease owner of every job this engine claims.
    pub worker_id: String,
    /// Most jobs held at once.
    pub jobs_max: usize,
    /// Most attempts running at once, across all jobs (the global concurrency limit).
    pub attempts_max: usize,
    /// Most attempts running at once per agent name.
    pub agent_limits: HashMap<String, usize>,
    /// Lease length; a job whose worker stops renewing is rescued after this.
    pub lease: Duration,
    /// How often leases are renewed and user requests (cancel, pause) are read.
    pub heartbeat: Duration,
    /// How often the store is polled for work when no in-process wake-up arrives.
    pub poll: Duration,
    /// How often maintenance runs (lease rescue, delayed jobs, retention).
    pub maintenance: Duration,
    /// A job interrupted this many times fails instead of running again.
    pub interruptions_max: u32,
    /// Finished jobs older than this are deleted; `None` keeps them.
    pub retention: Option<Duration>,
    /// How long a cancelled or timed-out agent gets to stop before it is abandoned.
    pub cancel_grace: Duration,
    /// How long running attempts get to finish at shutdown before they are stopped.
    pub shutdown_grace: Duration,
    /// When set, the engine claims only these jobs (used by `oaj run`).
    pub only_jobs: Option<Vec<String>>,
    /// Return from `run` once no work is queued or running anywhere in the store.
    pub exit_when_idle: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            worker_id: format!("worker-{}", uuid::Uuid::now_v7()),
            jobs_max: 256,
            attempts_max: 64,
            agent_limits: HashMap::new(),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_millis(500),
            poll: Duration::from_millis(200),
            maintenance: Duration::from_secs(1),
            interruptions_max: 3,
            retention: None,
            cancel_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            only_jobs: None,
            exit_when_idle: false,
        }
    }
}
