//! What every workload needs: a fresh database, an engine over it, the benchmark workflows, and
//! waiting for a job's events.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use oaj_engine::{Engine, EngineConfig, JobSubmit};
use oaj_store::{Event, PostgresOptions, PostgresStore, SqliteStore, Store};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::broadcast;

use super::report::Report;
use crate::cmd::common::{self, WorkerArgs};

/// Where the benchmark database is created.
#[derive(Debug, Clone, Args)]
pub struct BenchDb {
    /// SQLite file to create for the run; it must not exist yet and is kept afterwards. Default:
    /// a file in a new temporary folder, deleted at the end.
    #[arg(long, value_name = "PATH", conflicts_with = "database")]
    pub db: Option<PathBuf>,
    /// PostgreSQL database to run on instead of SQLite. The run creates a new schema there,
    /// named in the report, and keeps it afterwards. Unlike other commands, `oaj bench` does not
    /// read OAJ_DATABASE_URL, so that it never writes to a database by accident.
    #[arg(long, value_name = "URL", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub database: Option<String>,
}

/// A store over a database that holds only this run's jobs.
pub struct BenchStore {
    /// The open store.
    pub store: Arc<dyn Store>,
    backend: Backend,
    // Deletes the temporary folder, and the database in it, when the run ends.
    _folder: Option<TempDir>,
}

/// The database behind a [`BenchStore`], for its settings and for more connections.
enum Backend {
    Sqlite {
        store: Arc<SqliteStore>,
        path: PathBuf,
    },
    Postgres {
        store: Arc<PostgresStore>,
        url: String,
        schema: String,
    },
}

impl BenchDb {
    /// Creates the database (a new SQLite file or PostgreSQL schema), so that counts after the
    /// run cover this run's jobs only.
    pub async fn open(&self) -> anyhow::Result<BenchStore> {
        if let Some(url) = &self.database {
            return postgres_open(url).await;
        }
        let (path, folder) = match &self.db {
            Some(path) if path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/') => {
                bail!(
                    "--db {} names a folder: pass the path of a new file, such as {}",
                    path.display(),
                    path.join("bench.db").display()
                )
            }
            Some(path) if path.exists() => bail!(
                "database {} already exists: a benchmark needs a new file, so pass a path that \
                 does not exist",
                path.display()
            ),
            Some(path) => (path.clone(), None),
            None => {
                let folder = tempfile::tempdir().context("cannot create a temporary folder")?;
                (folder.path().join("bench.db"), Some(folder))
            }
        };
        let store = Arc::new(SqliteStore::open(&path)?);
        Ok(BenchStore {
            store: store.clone(),
            backend: Backend::Sqlite { store, path },
            _folder: folder,
        })
    }

    /// Returns whether the database outlives the run.
    pub fn is_kept(&self) -> bool {
        self.db.is_some() || self.database.is_some()
    }
}

/// Opens a store in a new schema of the database at `url`.
async fn postgres_open(url: &str) -> anyhow::Result<BenchStore> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_nanos();
    let schema = format!("oaj_bench_{}_{nanos}", std::process::id());
    // Printed before the schema is created, so that a run that is interrupted still names the
    // schema it may leave behind.
    errln!(
        "benchmark schema: {schema} (kept after the run; drop it with \
         DROP SCHEMA {schema} CASCADE)"
    );
    let store = postgres_connect(url, &schema).await?;
    Ok(BenchStore {
        store: store.clone(),
        backend: Backend::Postgres {
            store,
            url: url.to_owned(),
            schema,
        },
        _folder: None,
    })
}

async fn postgres_connect(url: &str, schema: &str) -> anyhow::Result<Arc<PostgresStore>> {
    let options = PostgresOptions {
        schema: Some(schema.to_owned()),
        ..PostgresOptions::default()
    };
    let store = PostgresStore::connect_with(url, options)
        .await
        .context("cannot open the PostgreSQL store given by --database")?;
    Ok(Arc::new(store))
}

impl BenchStore {
    /// Adds the settings every workload states: database, durability and build.
    pub async fn describe(&self, report: &mut Report, kept: bool) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Sqlite { store, path } => {
                let durability = store
                    .durability()
                    .await
                    .context("cannot read the durability settings")?;
                let place = if kept { "" } else { " (temporary)" };
                report.setting("database", format!("{}{place}", path.display()));
                report.setting("journal_mode", durability.journal_mode);
                report.setting("synchronous", durability.synchronous);
            }
            Backend::Postgres { store, schema, .. } => {
                let durability = store
                    .durability()
                    .await
                    .context("cannot read the durability settings")?;
                report.setting("database", "postgresql");
                report.setting("schema", schema.clone());
                report.setting("fsync", durability.fsync);
                report.setting("synchronous_commit", durability.synchronous_commit);
            }
        }
        let build = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        report.setting("build", build);
        Ok(())
    }

    /// Returns the path of the SQLite file, or `None` on PostgreSQL.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite { path, .. } => Some(path),
            Backend::Postgres { .. } => None,
        }
    }

    /// Returns the size of the SQLite file and its write-ahead log in bytes, or `None` on
    /// PostgreSQL.
    pub fn sqlite_bytes(&self) -> Option<u64> {
        let path = self.sqlite_path()?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let size = |file: &Path| std::fs::metadata(file).map_or(0, |meta| meta.len());
        Some(size(path) + size(Path::new(&wal)))
    }

    /// Builds an engine over the store with the built-in agents.
    pub fn engine(&self, config: EngineConfig) -> Engine {
        common::engine(self.store.clone(), config)
    }

    /// Builds `count` engines, the first over this store and each other one over a store with
    /// connections of its own, as `count` workers would have. Only PostgreSQL takes more than
    /// one, because a SQLite file serves one process.
    pub async fn engines(&self, config: EngineConfig, count: u32) -> anyhow::Result<Vec<Engine>> {
        let mut engines = vec![self.engine(config.clone())];
        if count <= 1 {
            return Ok(engines);
        }
        let Backend::Postgres { url, schema, .. } = &self.backend else {
            bail!(super::WORKERS_NEED_POSTGRES);
        };
        for _ in 1..count {
            let store: Arc<dyn Store> = postgres_connect(url, schema).await?;
            engines.push(common::engine(store, config.clone()));
        }
        Ok(engines)
    }
}

/// Adds the worker settings to the report.
pub fn describe_worker(report: &mut Report, worker: &WorkerArgs) {
    report.setting("concurrency", worker.concurrency);
    report.setting("jobs_max", worker.jobs_max);
    report.setting("lease_seconds", worker.lease_seconds);
    if let Some(days) = worker.retention_days {
        report.setting("retention_days", days);
    }
    for (agent, limit) in &worker.agent_limits {
        report.setting(format!("agent_limit_{agent}"), *limit);
    }
}

/// Registers a workflow of `steps` noop steps, each depending on the one before, and returns a
/// submit request for it.
pub async fn noop_workflow(engine: &Engine, steps: u32) -> anyhow::Result<JobSubmit> {
    let steps: Vec<Value> = (1..=steps)
        .map(|number| {
            let mut step = json!({ "id": format!("s{number}"), "component": "noop" });
            if number > 1 {
                step["depends_on"] = json!([format!("s{}", number - 1)]);
            }
            step
        })
        .collect();
    let document = json!({ "id": format!("bench-noop-{}", steps.len()), "steps": steps });
    let (workflow, _) = engine
        .workflow_register(&document.to_string())
        .await
        .context("cannot register the benchmark workflow")?;
    Ok(JobSubmit {
        workflow_id: workflow.id,
        workflow_version: Some(workflow.version),
        input: json!({}),
        ..JobSubmit::default()
    })
}

/// Submits `total` copies of `submit` in calls of `batch` jobs and returns their ids in order.
pub async fn jobs_enqueue(
    engine: &Engine,
    submit: &JobSubmit,
    total: usize,
    batch: usize,
) -> anyhow::Result<Vec<String>> {
    // Not sized for `total` up front: a huge count would abort on the allocation before anything
    // ran.
    let mut ids = Vec::with_capacity(total.min(batch).min(1 << 20));
    while ids.len() < total {
        let count = batch.min(total - ids.len());
        ids.extend(
            engine
                .job_submit_many(vec![submit.clone(); count], None)
                .await?,
        );
    }
    Ok(ids)
}

/// Waits for the next event of `job_id` whose kind `is_wanted` accepts, and returns it. Fails
/// when the job ends some other way or the subscription fell behind.
pub async fn event_wait(
    events: &mut broadcast::Receiver<Event>,
    job_id: &str,
    is_wanted: impl Fn(&str) -> bool,
) -> anyhow::Result<Event> {
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                bail!("the benchmark missed {missed} events because it read them too slowly")
            }
            Err(broadcast::error::RecvError::Closed) => bail!("the store closed its events"),
        };
        if event.job_id.as_deref() != Some(job_id) {
            continue;
        }
        if is_wanted(&event.kind) {
            return Ok(event);
        }
        if matches!(
            event.kind.as_str(),
            "job.failed" | "job.cancelled" | "job.paused"
        ) {
            bail!("job {job_id} ended with {}: {}", event.kind, event.data);
        }
    }
}
