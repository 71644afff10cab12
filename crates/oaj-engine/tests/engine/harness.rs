//! A running engine over a fresh SQLite file, and helpers to submit jobs and wait for them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use oaj_core::{JobState, SystemClock};
use oaj_engine::agent::AgentRegistry;
use oaj_engine::{Engine, EngineConfig, JobSubmit};
use oaj_store::{Job, SqliteStore, StepRun, StepState, Store};
use serde_json::Value;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An engine running in the background on its own database file.
pub struct Harness {
    pub engine: Engine,
    pub dir: TempDir,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// Settings for quick tests: short heartbeats and polls.
pub fn test_config() -> EngineConfig {
    EngineConfig {
        heartbeat: Duration::from_millis(50),
        poll: Duration::from_millis(20),
        maintenance: Duration::from_millis(50),
        cancel_grace: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(2),
        ..EngineConfig::default()
    }
}

impl Harness {
    /// Starts an engine with the default test settings.
    pub async fn start() -> Harness {
        Harness::start_with(test_config(), true).await
    }

    /// Starts an engine with `config`; with `running` false the engine is built but not started.
    pub async fn start_with(config: EngineConfig, running: bool) -> Harness {
        Harness::start_with_registry(config, AgentRegistry::with_builtins(), running).await
    }

    /// Starts an engine with `config` and the agents of `registry`.
    pub async fn start_with_registry(
        config: EngineConfig,
        registry: AgentRegistry,
        running: bool,
    ) -> Harness {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = SqliteStore::open(&dir.path().join("oaj.db")).expect("open store");
        let engine = Engine::new(Arc::new(store), registry, Arc::new(SystemClock), config);
        let mut harness = Harness {
            engine,
            dir,
            shutdown: CancellationToken::new(),
            task: None,
        };
        if running {
            harness.run();
        }
        harness
    }

    /// Starts the engine loop.
    pub fn run(&mut self) {
        let engine = self.engine.clone();
        let shutdown = self.shutdown.clone();
        self.task = Some(tokio::spawn(async move { engine.run(shutdown).await }));
    }

    /// Stops the engine loop gracefully.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("engine task");
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.engine.store()
    }

    /// Path of a file in the test's folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Registers `workflow` and submits a job with `input`; returns the job id.
    pub async fn submit(&self, workflow: &Value, input: Value) -> String {
        self.submit_with(
            workflow,
            JobSubmit {
                input,
                ..JobSubmit::default()
            },
        )
        .await
    }

    /// Registers `workflow` and submits `submit` for it.
    pub async fn submit_with(&self, workflow: &Value, mut submit: JobSubmit) -> String {
        let (registered, _) = self
            .engine
            .workflow_register(&workflow.to_string())
            .await
            .expect("valid workflow");
        submit.workflow_id = registered.id;
        submit.workflow_version = Some(registered.version);
        self.engine.job_submit(submit).await.expect("job accepted")
    }

    /// Waits until the job is in a state that `done` accepts, and returns it.
    pub async fn wait_for(&self, job_id: &str, done: impl Fn(&Job) -> bool) -> Job {
        let wait = async {
            loop {
                let job = self
                    .store()
                    .job_get(job_id)
                    .await
                    .expect("read job")
                    .expect("job exists");
                if done(&job) {
                    return job;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        // A generous bound so that a broken engine fails the test instead of hanging CI.
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .expect("job reached the expected state")
    }

    /// Waits until the job has ended.
    pub async fn wait_final(&self, job_id: &str) -> Job {
        self.wait_for(job_id, |job| job.state.is_final()).await
    }

    /// Waits until the job is in `state`.
    pub async fn wait_state(&self, job_id: &str, state: JobState) -> Job {
        self.wait_for(job_id, |job| job.state == state).await
    }

    /// Waits until the step run of `step_id` (the step itself, not an item) is in `state`.
    pub async fn wait_step_state(&self, job_id: &str, step_id: &str, state: StepState) {
        let wait = async {
            loop {
                let runs = self.steps(job_id).await;
                if runs
                    .iter()
                    .any(|run| run.step_id == step_id && run.item.is_none() && run.state == state)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .expect("step reached the expected state")
    }

    /// Returns the job's step runs.
    pub async fn steps(&self, job_id: &str) -> Vec<StepRun> {
        self.store()
            .step_run_list(job_id)
            .await
            .expect("read step runs")
    }

    /// Returns the step run of `step_id` (the step itself, not an item).
    pub async fn step(&self, job_id: &str, step_id: &str) -> StepRun {
        self.steps(job_id)
            .await
            .into_iter()
            .find(|run| run.step_id == step_id && run.item.is_none())
            .unwrap_or_else(|| panic!("no step run for {step_id}"))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Returns the lines of a file that steps append to, or none when it does not exist yet.
pub fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}
