//! The engine: claims jobs while it has room, runs each in its own task, renews their leases,
//! and runs store maintenance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oaj_core::{Clock, JobState, Workflow};
use oaj_store::{
    ClaimParams, ClaimedJob, JobFinish, JobOutcome, Lease, LeaseExtend, LeaseStatus,
    MaintenanceParams, Store, StoreError,
};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::agent::{AgentRegistry, EchoAgent};
use crate::config::EngineConfig;
use crate::job_runner::{JobRunner, Signal};
use crate::limits::Limits;
use crate::loaded_workflow::LoadedWorkflow;
use crate::worker_beat::worker_beat_loop;

/// Most parsed workflow versions kept for submits. The cache starts over when it is full.
const PARSED_WORKFLOWS_MAX: usize = 1024;

/// A workflow id and version.
type WorkflowKey = (String, String);

/// Most jobs taken by one claim, so that one claim transaction stays short.
const CLAIM_BATCH_MAX: usize = 512;

/// Runs jobs from a store. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Engine {
    pub(crate) shared: Arc<Shared>,
}

/// State shared by the engine's loops, its job runners and their attempts.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: AgentRegistry,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: EngineConfig,
    pub(crate) limits: Limits,
    pub(crate) http: reqwest::Client,
    workflows: Mutex<HashMap<(String, String), Arc<LoadedWorkflow>>>,
    /// Validated documents by workflow id and version, with the text each was parsed from, so
    /// that a submit parses a version once.
    parsed: Mutex<HashMap<WorkflowKey, (String, Arc<Workflow>)>>,
    held: Mutex<HashMap<String, Held>>,
    /// While the claim loop runs: where submits in this process hand the jobs they claimed.
    handoff: Mutex<Option<mpsc::UnboundedSender<ClaimedJob>>>,
    /// Job slots in use: one for each job this engine holds, from the claim that takes it until
    /// its runner ends, plus the slots of claims in flight. Never above `config.jobs_max`.
    slots_used: AtomicUsize,
}

/// A job held by this engine: its lease, and the channel that signals its runner.
struct Held {
    lease: Lease,
    signal: watch::Sender<Signal>,
}

impl Engine {
    /// Creates an engine over `store` that runs agents from `registry` and the workflows' own.
    pub fn new(
        store: Arc<dyn Store>,
        mut registry: AgentRegistry,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Engine {
        // `transform` computes its outputs in its inputs' `${ ... }` expressions, which the engine
        // resolves before the call, so the agent only hands them back.
        if registry.get("transform").is_none() {
            registry.register("transform", Arc::new(EchoAgent));
        }
        let limits = Limits::new(config.attempts_max, &config.agent_limits);
        let shared = Shared {
            store,
            registry,
            clock,
            config,
            limits,
            http: reqwest::Client::new(),
            workflows: Mutex::new(HashMap::new()),
            parsed: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            handoff: Mutex::new(None),
            slots_used: AtomicUsize::new(0),
        };
        Engine {
            shared: Arc::new(shared),
        }
    }

    /// Returns the store this engine works on.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// Returns the agents registered with this engine.
    pub fn registry(&self) -> &AgentRegistry {
        &self.shared.registry
    }

    /// Returns the engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Returns the engine's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    /// Claims and runs jobs until `shutdown` fires (or, with `exit_when_idle`, until no work is
    /// left). At shutdown it stops claiming, lets running attempts finish within the shutdown
    /// grace period, and hands unfinished jobs back to the queue.
    pub async fn run(&self, shutdown: CancellationToken) {
        let stop_loops = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat_loop(self.shared.clone(), stop_loops.clone()));
        let maintenance = tokio::spawn(maintenance_loop(self.shared.clone(), stop_loops.clone()));
        let worker_beat = tokio::spawn(worker_beat_loop(self.shared.clone(), stop_loops.clone()));
        let mut runners = JoinSet::new();
        let (handoff, mut handed) = mpsc::unbounded_channel();
        *self.shared.handoff.lock().expect("handoff lock") = Some(handoff);
        self.claim_loop(&shutdown, &mut runners, &mut handed).await;
        // Submits that claimed before the loop ended still hand their jobs over. The shutdown
        // signal below reaches those too, and they go back to the queue.
        self.shared.handoff.lock().expect("handoff lock").take();
        handed.close();
        while let Some(job) = handed.recv().await {
            self.start_job(job, &mut runners);
        }

        self.shared.signal_all(Signal::Shutdown);
        if !runners.is_empty() {
            info!(
                jobs = runners.len(),
                grace_seconds = self.shared.config.shutdown_grace.as_secs(),
                "shutting down: letting running attempts finish, then handing the jobs back"
            );
        }
        while runners.join_next().await.is_some() {}
        stop_loops.cancel();
        // The loops end at the next tick; a panic in one of them was already reported.
        let _ = heartbeat.await;
        let _ = maintenance.await;
        let _ = worker_beat.await;
        debug!("engine stopped");
    }

    async fn claim_loop(
        &self,
        shutdown: &CancellationToken,
        runners: &mut JoinSet<()>,
        handed: &mut mpsc::UnboundedReceiver<ClaimedJob>,
    ) {
        let notify = self.shared.store.work_notify();
        let mut error_backoff = Duration::from_millis(50);
        // Whether the last claim found fewer queued jobs than it had room for. A runner that ends
        // then frees a slot but brings no new work, which comes with a wake-up or the poll, so
        // the loop does not claim for it. An empty claim would also hold every free slot while
        // it runs, and a submit in this process could not claim in its insert meanwhile.
        let mut queue_empty = false;
        let mut claim_now = true;
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            while runners.try_join_next().is_some() {}
            while let Ok(job) = handed.try_recv() {
                self.start_job(job, runners);
            }
            if shutdown.is_cancelled() {
                return;
            }
            let free = if claim_now {
                self.shared.slots_take(CLAIM_BATCH_MAX)
            } else {
                0
            };
            let claimed = if free > 0 {
                match self.claim(free).await {
                    Ok(claimed) => {
                        error_backoff = Duration::from_millis(50);
                        self.shared.slots_give_back(free - claimed.len());
                        claimed
                    }
                    Err(error) => {
                        self.shared.slots_give_back(free);
                        warn!(error = %error, "claim failed; retrying");
                        tokio::time::sleep(error_backoff).await;
                        error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            } else {
                Vec::new()
            };
            let claimed_count = claimed.len();
            if free > 0 {
                queue_empty = claimed_count < free;
            }
            for job in claimed {
                self.start_job(job, runners);
            }
            if claimed_count > 0 && claimed_count == free {
                continue;
            }
            if self.shared.config.exit_when_idle && runners.is_empty() && self.is_store_idle().await
            {
                return;
            }
            claim_now = true;
            tokio::select! {
                _ = &mut notified => {}
                Some(job) = handed.recv() => {
                    self.start_job(job, runners);
                    claim_now = !queue_empty;
                }
                Some(_) = runners.join_next(), if !runners.is_empty() => claim_now = !queue_empty,
                _ = tokio::time::sleep(self.shared.config.poll) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn claim(&self, limit: usize) -> Result<Vec<ClaimedJob>, StoreError> {
        let params = self.shared.claim_params(limit);
        self.shared.store.job_claim(params).await
    }

    /// Reports whether the store has nothing queued and nothing running (a running job of a dead
    /// worker counts until maintenance rescues it).
    async fn is_store_idle(&self) -> bool {
        match self.shared.store.job_counts().await {
            Ok(counts) => {
                let count = |state| counts.get(&state).copied().unwrap_or(0);
                count(JobState::Queued) == 0 && count(JobState::Running) == 0
            }
            Err(error) => {
                warn!(error = %error, "reading job counts failed");
                false
            }
        }
    }

    /// Runs a claimed job, which brings the job slot its claim took.
    fn start_job(&self, claimed: ClaimedJob, runners: &mut JoinSet<()>) {
        let shared = self.shared.clone();
        let loaded = match shared.workflow_load(&claimed) {
            Ok(loaded) => loaded,
            Err(message) => {
                let slot = SlotGuard {
                    shared: shared.clone(),
                };
                runners.spawn(async move {
                    let _slot = slot;
                    fail_unloadable(shared, claimed.lease, message).await;
                });
                return;
            }
        };
        let (sender, receiver) = watch::channel(Signal::Run);
        let job_id = claimed.job.id.clone();
        shared.held_insert(
            job_id.clone(),
            Held {
                lease: claimed.lease.clone(),
                signal: sender,
            },
        );
        let runner = JobRunner::new(shared.clone(), claimed, loaded, receiver);
        runners.spawn(async move {
            // Dropped even if the runner panics, so the heartbeat stops renewing the lease and
            // maintenance rescues the job instead of it staying running forever.
            let _held = HeldGuard {
                job_id,
                _slot: SlotGuard {
                    shared: shared.clone(),
                },
                shared,
            };
            runner.run().await;
        });
    }
}

async fn fail_unloadable(shared: Arc<Shared>, lease: Lease, message: String) {
    warn!(job_id = %lease.job_id, error = %message, "job's workflow could not be loaded");
    let finish = JobFinish {
        lease,
        attempts: Vec::new(),
        outcome: JobOutcome::Failed(message),
        now: shared.clock.now_ms(),
    };
    if let Err(error) = shared.store.job_finish(finish).await {
        warn!(error = %error, "failed to record the failure of a job whose workflow could not be loaded");
    }
}

impl Shared {
    /// Returns the parsed workflow of `key` when it was parsed from `document`. A version deleted
    /// and stored again with another document is parsed again.
    pub(crate) fn parsed_get(
        &self,
        key: &(String, String),
        document: &str,
    ) -> Option<Arc<Workflow>> {
        let parsed = self.parsed.lock().expect("parsed workflows lock");
        match parsed.get(key) {
            Some((text, workflow)) if text == document => Some(workflow.clone()),
            _ => None,
        }
    }

    /// Keeps a parsed workflow for later submits.
    pub(crate) fn parsed_insert(
        &self,
        key: (String, String),
        document: String,
        workflow: Arc<Workflow>,
    ) {
        let mut parsed = self.parsed.lock().expect("parsed workflows lock");
        if parsed.len() >= PARSED_WORKFLOWS_MAX {
            parsed.clear();
        }
        parsed.insert(key, (document, workflow));
    }

    /// Builds the parameters of a claim of up to `limit` jobs for this engine.
    pub(crate) fn claim_params(&self, limit: usize) -> ClaimParams {
        ClaimParams {
            worker_id: self.config.worker_id.clone(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            now: self.clock.now_ms(),
            lease_ms: duration_ms(self.config.lease),
            job_ids: self.config.only_jobs.clone().unwrap_or_default(),
        }
    }

    /// Takes up to `requested` free job slots at once and returns how many it took. Checking and
    /// taking in one atomic step keeps concurrent claims from passing `jobs_max` together.
    fn slots_take(&self, requested: usize) -> usize {
        let jobs_max = self.config.jobs_max;
        let mut granted = 0;
        let _ = self
            .slots_used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                granted = jobs_max.saturating_sub(current).min(requested);
                Some(current + granted)
            });
        granted
    }

    /// Returns job slots that a claim took and did not fill.
    fn slots_give_back(&self, count: usize) {
        self.slots_used.fetch_sub(count, Ordering::AcqRel);
    }

    /// Takes up to `requested` job slots for a submit that claims in its insert, or returns
    /// `None` when the claim loop is not running or no slot is free.
    pub(crate) fn submit_slots_take(self: &Arc<Self>, requested: usize) -> Option<TakenSlots> {
        if self.handoff.lock().expect("handoff lock").is_none() {
            return None;
        }
        let count = self.slots_take(requested.min(CLAIM_BATCH_MAX));
        (count > 0).then(|| TakenSlots {
            shared: self.clone(),
            count,
        })
    }

    /// Hands jobs that a submit claimed to the claim loop, which runs them, each with one of the
    /// submit's slots. When the loop has stopped meanwhile, gives the jobs back to the queue and
    /// their slots too.
    async fn claimed_hand_over(&self, claimed: Vec<ClaimedJob>) {
        let mut returned = Vec::new();
        {
            let handoff = self.handoff.lock().expect("handoff lock");
            for job in claimed {
                match handoff.as_ref() {
                    Some(sender) => {
                        if let Err(unsent) = sender.send(job) {
                            returned.push(unsent.0);
                        }
                    }
                    None => returned.push(job),
                }
            }
        }
        for job in returned {
            let finish = JobFinish {
                lease: job.lease,
                attempts: Vec::new(),
                outcome: JobOutcome::Released,
                now: self.clock.now_ms(),
            };
            if let Err(error) = self.store.job_finish(finish).await {
                warn!(job_id = %job.job.id, error = %error, "failed to hand back a job claimed while the engine stopped; its lease will expire");
            }
            self.slots_give_back(1);
        }
    }

    fn workflow_load(&self, claimed: &ClaimedJob) -> Result<Arc<LoadedWorkflow>, String> {
        let key = (
            claimed.workflow.id.clone(),
            claimed.workflow.version.clone(),
        );
        if let Some(loaded) = self
            .workflows
            .lock()
            .expect("workflow cache lock")
            .get(&key)
        {
            return Ok(loaded.clone());
        }
        let loaded = Arc::new(LoadedWorkflow::load(
            &claimed.workflow.document,
            &self.registry,
            &self.http,
        )?);
        self.workflows
            .lock()
            .expect("workflow cache lock")
            .insert(key, loaded.clone());
        Ok(loaded)
    }

    fn held_insert(&self, job_id: String, held: Held) {
        self.held
            .lock()
            .expect("held jobs lock")
            .insert(job_id, held);
    }

    fn held_remove(&self, job_id: &str) {
        // Called from a drop guard during unwinding too, where a second panic would abort.
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.remove(job_id);
    }

    fn held_leases(&self) -> Vec<Lease> {
        self.held
            .lock()
            .expect("held jobs lock")
            .values()
            .map(|held| held.lease.clone())
            .collect()
    }

    /// Counts the jobs this engine holds.
    pub(crate) fn held_count(&self) -> usize {
        self.held.lock().expect("held jobs lock").len()
    }

    fn signal_all(&self, signal: Signal) {
        for held in self.held.lock().expect("held jobs lock").values() {
            raise(&held.signal, signal);
        }
    }

    /// Signals a held job's runner, and returns whether the job is still held.
    pub(crate) fn signal_job(&self, job_id: &str, signal: Signal) -> bool {
        match self.held.lock().expect("held jobs lock").get(job_id) {
            Some(held) => {
                raise(&held.signal, signal);
                true
            }
            None => false,
        }
    }
}

/// Job slots taken by a submit that claims in its insert. Those its claim does not fill are
/// given back when it is dropped, also when the submit is cancelled while it waits.
pub(crate) struct TakenSlots {
    shared: Arc<Shared>,
    pub(crate) count: usize,
}

impl TakenSlots {
    /// Hands the claimed jobs over with one slot each, and gives back the rest.
    pub(crate) async fn hand_over(mut self, claimed: Vec<ClaimedJob>) {
        self.count -= claimed.len().min(self.count);
        let shared = self.shared.clone();
        drop(self);
        shared.claimed_hand_over(claimed).await;
    }
}

impl Drop for TakenSlots {
    fn drop(&mut self) {
        self.shared.slots_give_back(self.count);
    }
}

/// The job slot of one claimed job, given back when the guard is dropped.
struct SlotGuard {
    shared: Arc<Shared>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.shared.slots_give_back(1);
    }
}

/// Removes a job from the held jobs, and gives back its slot, when its runner ends.
struct HeldGuard {
    shared: Arc<Shared>,
    job_id: String,
    _slot: SlotGuard,
}

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.shared.held_remove(&self.job_id);
    }
}

/// Sets a job's signal unless it already carries a stronger one (lost beats cancel, which beats
/// shutdown and pause).
fn raise(sender: &watch::Sender<Signal>, signal: Signal) {
    let rank = |signal: Signal| match signal {
        Signal::Run => 0,
        Signal::Pause => 1,
        Signal::Shutdown => 2,
        Signal::Cancel => 3,
        Signal::Lost => 4,
    };
    sender.send_if_modified(|current| {
        if rank(signal) > rank(*current) {
            *current = signal;
            true
        } else {
            false
        }
    });
}

async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(shared.config.heartbeat);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.cancelled() => return,
        }
        let leases = shared.held_leases();
        if leases.is_empty() {
            continue;
        }
        let params = LeaseExtend {
            worker_id: shared.config.worker_id.clone(),
            leases,
            now: shared.clock.now_ms(),
            lease_ms: duration_ms(shared.config.lease),
        };
        match shared.store.lease_extend(params).await {
            Ok(statuses) => apply_lease_statuses(&shared, statuses),
            Err(error) => {
                warn!(error = %error, "lease renewal failed; retrying at the next heartbeat")
            }
        }
    }
}

fn apply_lease_statuses(shared: &Shared, statuses: Vec<LeaseStatus>) {
    for status in statuses {
        match status {
            LeaseStatus::Held {
                job_id,
                control: Some(control),
            } => {
                shared.signal_job(&job_id, Signal::from(control));
            }
            LeaseStatus::Held { .. } => {}
            // A job whose runner ended after this renewal began has released its lease itself,
            // so only a job still held has lost it.
            LeaseStatus::Lost { job_id } => {
                if shared.signal_job(&job_id, Signal::Lost) {
                    info!(job_id = %job_id, "lease lost");
                }
            }
        }
    }
}

async fn maintenance_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let notify: Arc<Notify> = shared.store.work_notify();
    let mut interval = tokio::time::interval(shared.config.maintenance);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.cancelled() => return,
        }
        let params = MaintenanceParams {
            now: shared.clock.now_ms(),
            interruptions_max: shared.config.interruptions_max,
            retention_ms: shared.config.retention.map(duration_ms),
            batch_size: 1000,
        };
        match shared.store.maintenance(params).await {
            Ok(report) => {
                if report.rescued > 0 || report.rescue_failed > 0 {
                    info!(
                        rescued = report.rescued,
                        failed = report.rescue_failed,
                        "rescued jobs with expired leases"
                    );
                }
                if report.deleted > 0 {
                    info!(
                        deleted = report.deleted,
                        "deleted finished jobs past retention"
                    );
                }
                if report.rescued > 0 || report.promoted > 0 {
                    notify.notify_waiters();
                }
            }
            Err(error) => {
                warn!(error = %error, "maintenance pass failed; retrying at the next tick")
            }
        }
    }
}

/// Converts a duration to whole milliseconds, saturating.
pub(crate) fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
