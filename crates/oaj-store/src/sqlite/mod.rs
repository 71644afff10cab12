//! The embedded SQLite store: one file in WAL mode, one writer thread that groups requests into
//! transactions, and a small pool of read connections.

pub(crate) mod actions;
pub(crate) mod claims;
mod connection;
pub(crate) mod dependencies;
pub(crate) mod errors;
mod events;
pub(crate) mod job_insert;
pub(crate) mod job_moves;
mod job_query;
mod job_reads;
pub(crate) mod maintenance;
mod migrations;
mod readers;
pub(crate) mod rows;
pub(crate) mod worker_writes;
mod workers;
mod workflows;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use oaj_core::JobState;
use tokio::sync::{broadcast, Notify};

use crate::error::StoreError;
use crate::model::*;
use crate::store::Store;
use readers::Readers;
use workflows::WorkflowCache;
use writer::{Publish, Writer};

/// Events kept for subscribers that fall behind before they start missing some.
const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// Settings of [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a statement waits for a lock held by another program before failing with
    /// [`StoreError::Busy`].
    pub busy_timeout: Duration,
    /// Read connections, each serving one read at a time.
    pub readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        SqliteOptions {
            busy_timeout: Duration::from_secs(5),
            readers: 4,
        }
    }
}

/// The [`Store`] kept in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    writer: Writer,
    readers: Readers,
    workflows: Arc<WorkflowCache>,
    notify: Arc<Notify>,
    events: broadcast::Sender<Event>,
}

impl SqliteStore {
    /// Opens the store in the file at `path` with default options, creating the file and
    /// applying migrations as needed.
    ///
    /// Fails with [`StoreError::Open`] when the folder is missing, the file is not an oaj
    /// database, or it was written by a newer oaj, and with [`StoreError::Busy`] when another
    /// program holds a lock on it for longer than the busy timeout.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    /// Opens the store like [`SqliteStore::open`], with the given options.
    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        connection::check_path(path)?;
        let mut conn = connection::open_writer(path, options.busy_timeout)?;
        migrations::migrate(&mut conn, path)?;
        let readers = Readers::open(path, options.readers, options.busy_timeout)?;

        let notify = Arc::new(Notify::new());
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let publish = Publish {
            events: events.clone(),
            notify: Arc::clone(&notify),
        };
        Ok(SqliteStore {
            path: path.to_owned(),
            writer: Writer::start(conn, publish)?,
            readers,
            workflows: Arc::new(WorkflowCache::default()),
            notify,
            events,
        })
    }

    /// Returns the path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the journal mode and sync level of the connection that writes, as SQLite reports
    /// them, so that a benchmark states the durability it measured.
    pub async fn durability(&self) -> Result<SqliteDurability, StoreError> {
        self.writer
            .write(|tx| connection::durability(tx.conn))
            .await
    }
}

/// The durability settings of the write connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteDurability {
    /// `PRAGMA journal_mode`, such as `wal`.
    pub journal_mode: String,
    /// `PRAGMA synchronous` by name: `off`, `normal`, `full` or `extra`.
    pub synchronous: String,
}

#[async_trait]
impl Store for SqliteStore {
    async fn workflow_insert(
        &self,
        record: WorkflowRecord,
    ) -> Result<WorkflowInserted, StoreError> {
        self.writer
            .write(move |tx| workflows::workflow_insert(tx, &record))
            .await
    }

    async fn workflow_get(
        &self,
        id: &str,
        version: Option<&str>,
    ) -> Result<Option<WorkflowRecord>, StoreError> {
        let cache = Arc::clone(&self.workflows);
        let (id, version) = (id.to_owned(), version.map(str::to_owned));
        self.readers
            .read(move |conn| workflows::workflow_get(conn, &cache, &id, version.as_deref()))
            .await
    }

    async fn workflow_list(&self) -> Result<Vec<WorkflowRecord>, StoreError> {
        self.readers.read(workflows::workflow_list).await
    }

    async fn workflow_versions(&self, id: &str) -> Result<Vec<WorkflowRecord>, StoreError> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| workflows::workflow_versions(conn, &id))
            .await
    }

    async fn workflow_delete(&self, id: &str, version: &str) -> Result<(), StoreError> {
        let cache = Arc::clone(&self.workflows);
        let (id, version) = (id.to_owned(), version.to_owned());
        self.writer
            .write(move |tx| workflows::workflow_delete(tx, &cache, &id, &version))
            .await
    }

    async fn job_insert_many(
        &self,
        jobs: Vec<JobNew>,
        batch_id: Option<String>,
    ) -> Result<Vec<String>, StoreError> {
        let cache = Arc::clone(&self.workflows);
        self.writer
            .write(move |tx| job_insert::job_insert_many(tx, &cache, &jobs, batch_id.as_deref()))
            .await
    }

    async fn job_insert_claim(
        &self,
        jobs: Vec<JobNew>,
        batch_id: Option<String>,
        claim: ClaimParams,
    ) -> Result<(Vec<String>, Vec<ClaimedJob>), StoreError> {
        let cache = Arc::clone(&self.workflows);
        self.writer
            .write(move |tx| {
                let ids = job_insert::job_insert_many(tx, &cache, &jobs, batch_id.as_deref())?;
                let claimed = claims::job_claim(tx, &cache, &claim)?;
                Ok((ids, claimed))
            })
            .await
    }

    async fn job_get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| job_reads::job_get(conn, &id))
            .await
    }

    async fn job_query(&self, query: JobQuery) -> Result<Vec<Job>, StoreError> {
        self.readers
            .read(move |conn| job_query::job_query(conn, &query))
            .await
    }

    async fn queue_depth(&self) -> Result<BTreeMap<oaj_core::Priority, u64>, StoreError> {
        self.readers.read(job_reads::queue_depth).await
    }

    async fn job_counts(&self) -> Result<BTreeMap<JobState, u64>, StoreError> {
        self.readers.read(job_reads::job_counts).await
    }

    async fn ready_check(&self) -> Result<(), StoreError> {
        if !self.writer.is_running() {
            return Err(StoreError::Database(
                "the store's writer thread has stopped, so every write fails: restart the \
                 process, and see its log for the cause"
                    .to_owned(),
            ));
        }
        self.job_counts().await.map(drop)
    }

    async fn job_action(&self, id: &str, action: JobAction, now: i64) -> Result<Job, StoreError> {
        let id = id.to_owned();
        self.writer
            .write(move |tx| actions::job_action(tx, &id, action, now))
            .await
    }

    async fn job_dependency_add(&self, change: DependencyChange) -> Result<Job, StoreError> {
        self.writer
            .write(move |tx| dependencies::job_dependency_add(tx, &change))
            .await
    }

    async fn job_dependency_remove(&self, change: DependencyChange) -> Result<Job, StoreError> {
        self.writer
            .write(move |tx| dependencies::job_dependency_remove(tx, &change))
            .await
    }

    async fn job_dependents(&self, job_id: &str) -> Result<Vec<Job>, StoreError> {
        let job_id = job_id.to_owned();
        self.readers
            .read(move |conn| dependencies::job_dependents(conn, &job_id))
            .await
    }

    async fn job_delete(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.writer
            .write(move |tx| job_reads::job_delete(tx, &id))
            .await
    }

    async fn step_run_list(&self, job_id: &str) -> Result<Vec<StepRun>, StoreError> {
        let job_id = job_id.to_owned();
        self.readers
            .read(move |conn| job_reads::step_run_list(conn, &job_id))
            .await
    }

    async fn attempt_list(&self, job_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let job_id = job_id.to_owned();
        self.readers
            .read(move |conn| job_reads::attempt_list(conn, &job_id))
            .await
    }

    async fn event_list(&self, filter: EventFilter) -> Result<Vec<Event>, StoreError> {
        self.readers
            .read(move |conn| events::event_list(conn, &filter))
            .await
    }

    async fn approval_decide(&self, decide: ApprovalDecide) -> Result<(), StoreError> {
        self.writer
            .write(move |tx| actions::approval_decide(tx, &decide))
            .await
    }

    async fn job_claim(&self, params: ClaimParams) -> Result<Vec<ClaimedJob>, StoreError> {
        let cache = Arc::clone(&self.workflows);
        self.writer
            .write(move |tx| claims::job_claim(tx, &cache, &params))
            .await
    }

    async fn lease_extend(&self, params: LeaseExtend) -> Result<Vec<LeaseStatus>, StoreError> {
        self.writer
            .write(move |tx| claims::lease_extend(tx, &params))
            .await
    }

    async fn attempt_start(&self, start: AttemptStart) -> Result<i64, StoreError> {
        self.writer
            .write(move |tx| worker_writes::attempt_start(tx, &start))
            .await
    }

    async fn attempt_finish(&self, finish: AttemptFinish) -> Result<Option<Control>, StoreError> {
        self.writer
            .write(move |tx| worker_writes::attempt_finish(tx, &finish))
            .await
    }

    async fn attempt_record(
        &self,
        start: AttemptStart,
        finish: AttemptFinish,
    ) -> Result<i64, StoreError> {
        self.writer
            .write(move |tx| worker_writes::attempt_record(tx, &start, finish.clone()))
            .await
    }

    async fn step_update(&self, update: StepUpdate) -> Result<(), StoreError> {
        self.writer
            .write(move |tx| worker_writes::step_update(tx, &update))
            .await
    }

    async fn attempts_record(
        &self,
        records: Vec<AttemptRecord>,
    ) -> Result<Option<Control>, StoreError> {
        self.writer
            .write(move |tx| worker_writes::attempts_record(tx, &records))
            .await
    }

    async fn job_finish(&self, finish: JobFinish) -> Result<(), StoreError> {
        self.writer
            .write(move |tx| worker_writes::job_finish(tx, &finish))
            .await
    }

    async fn worker_heartbeat(&self, beat: WorkerBeat) -> Result<(), StoreError> {
        self.writer
            .write(move |tx| workers::worker_heartbeat(tx, &beat))
            .await
    }

    async fn worker_list(&self, now: i64) -> Result<Vec<WorkerRecord>, StoreError> {
        self.readers
            .read(move |conn| workers::worker_list(conn, now))
            .await
    }

    async fn maintenance(
        &self,
        params: MaintenanceParams,
    ) -> Result<MaintenanceReport, StoreError> {
        // One transaction per pass instead of one for all, so that other writes run between them.
        let passes = [
            maintenance::rescue,
            maintenance::promote,
            maintenance::retain,
            workers::forget,
        ];
        let mut report = MaintenanceReport::default();
        for pass in passes {
            report = self
                .writer
                .write(move |tx| {
                    let mut report = report;
                    pass(tx, &params, &mut report)?;
                    Ok(report)
                })
                .await?;
        }
        Ok(report)
    }

    fn work_notify(&self) -> Arc<Notify> {
        Arc::clone(&self.notify)
    }

    fn event_subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}
