//! The PostgreSQL store, for many processes on many machines sharing one database.
//!
//! Each store method runs in one transaction on a pooled connection. Claims use
//! `FOR UPDATE SKIP LOCKED`, worker writes lock the job's row to check the lease token (fencing),
//! and counters and events are written last, just before the commit (see `tx.rs`, which also
//! explains how event sequence numbers stay in commit order). A dedicated connection LISTENs for
//! wake-ups and events, and another keeps the maintenance lead (see `leader.rs`).
//!
//! All of a store's tables live in one schema, the first on the connection's search path or the
//! one named in [`PostgresOptions::schema`], so that several stores can share one database.

mod actions;
mod claims;
mod db;
mod dependencies;
mod errors;
mod finish_batch;
mod group_writer;
mod job_insert;
mod job_moves;
mod job_query;
mod job_reads;
mod leader;
mod listener;
mod maintenance;
mod migrations;
mod rows;
mod session;
mod tx;
mod worker_writes;
mod workers;
mod workflows;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use oaj_core::JobState;
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::{Config, NoTls};

use crate::error::StoreError;
use crate::model::*;
use crate::store::Store;
use db::Db;
use group_writer::{GroupWriter, WriteOp, WriteValue, WriterShared};
use leader::Leader;
use listener::{listener_start, Feeds};
use session::session_open;
use tx::{Committed, PgTx};
use workflows::WorkflowCache;

/// Events kept for subscribers that fall behind before they start missing some.
const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// Advisory lock classes: the first key of each two-key advisory lock oaj takes. The second key
/// is the hash of the schema name, so stores in different schemas never share a lock.
const LOCK_CLASS_MIGRATE: i32 = 0x6f61_6a01;
const LOCK_CLASS_EVENTS: i32 = 0x6f61_6a02;
const LOCK_CLASS_MAINTENANCE: i32 = 0x6f61_6a03;

/// Maximum length of a schema name in bytes, because it goes into notification channel names,
/// which PostgreSQL limits to 63 bytes.
const SCHEMA_LEN_MAX: usize = 50;

/// Settings of [`PostgresStore::connect_with`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Schema that contains the store's tables, created if missing. `None` uses the first existing
    /// schema on the connection's search path (`public` by default). A name is lowercase ASCII
    /// letters, digits and underscores, at most 50 bytes.
    pub schema: Option<String>,
    /// Most pooled connections, each serving one store call at a time. The listener and the
    /// maintenance lead use one more connection each.
    pub pool_size: usize,
}

impl Default for PostgresOptions {
    fn default() -> PostgresOptions {
        PostgresOptions {
            schema: None,
            pool_size: 16,
        }
    }
}

/// The names and lock keys that belong to one store's schema.
pub(crate) struct Names {
    pub(crate) schema: String,
    /// Second key of every advisory lock: the hash of the schema name.
    pub(crate) lock_id: i32,
    pub(crate) lock_class_migrate: i32,
    pub(crate) lock_class_events: i32,
    pub(crate) lock_class_maintenance: i32,
    /// Channel that carries the sequence number of the last event of each commit.
    pub(crate) events_channel: String,
    /// Channel that notifies workers that jobs became claimable.
    pub(crate) work_channel: String,
}

/// The durability settings of the PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresDurability {
    /// `fsync`: `on` or `off`.
    pub fsync: String,
    /// `synchronous_commit`: `on`, `remote_apply`, `remote_write`, `local` or `off`.
    pub synchronous_commit: String,
}

/// The [`Store`] kept in a PostgreSQL database.
pub struct PostgresStore {
    pool: Pool,
    names: Arc<Names>,
    url_redacted: String,
    workflows: Arc<WorkflowCache>,
    notify: Arc<Notify>,
    /// Writes of workers about the jobs they hold: leases, attempts, step runs, job ends.
    writer: GroupWriter,
    /// Claims, and inserts that claim, in groups of their own (see "PostgreSQL: claims in a
    /// writer of their own" in ARCHITECTURE.md).
    claim_writer: GroupWriter,
    events: broadcast::Sender<Event>,
    leader: Leader,
    listener: JoinHandle<()>,
    /// Tells the listener that the store is gone (see [`Feeds::closed`]).
    closed: Arc<AtomicBool>,
}

impl PostgresStore {
    /// Connects to the database at `url` (such as `postgres://user@host:5432/oaj`) with default
    /// options, and applies migrations as needed.
    ///
    /// Fails with [`StoreError::Open`] when the URL is invalid, the server cannot be reached, or
    /// the schema was written by a newer oaj.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects like [`PostgresStore::connect`], with the given options.
    pub async fn connect_with(
        url: &str,
        options: PostgresOptions,
    ) -> Result<PostgresStore, StoreError> {
        let mut config = Config::from_str(url).map_err(|error| StoreError::Open {
            path: "(postgres URL not shown, it may contain a password)".to_owned(),
            message: format!(
                "invalid postgres URL: {error}; expected postgres://USER@HOST:PORT/DATABASE"
            ),
        })?;
        let url_redacted = config_url_redacted(&config);
        if let Some(schema) = &options.schema {
            schema_check(schema, &url_redacted)?;
            // Every connection, pooled or dedicated, then finds the tables in this schema. Options
            // from the URL (`?options=-c ...`) are kept.
            let search_path = format!("-c search_path={schema}");
            let options = match config.get_options() {
                Some(options) if !options.is_empty() => format!("{options} {search_path}"),
                _ => search_path,
            };
            config.options(options);
        }
        let open_error = |error: StoreError| StoreError::Open {
            path: url_redacted.clone(),
            message: error.to_string(),
        };

        let (mut client, _notifications) = session_open(&config).await.map_err(open_error)?;
        let names = names_read(&client, options.schema.as_deref(), &url_redacted)
            .await
            .map_err(|e| match e {
                open @ StoreError::Open { .. } => open,
                other => open_error(other),
            })?;
        migrations::migrate(&mut client, &names, options.schema.is_some(), &url_redacted)
            .await
            .map_err(|e| match e {
                open @ StoreError::Open { .. } => open,
                other => open_error(other),
            })?;
        drop(client);

        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = Manager::from_config(config.clone(), NoTls, manager_config);
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .create_timeout(Some(session::connect_timeout(&config)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .expect("a pool with a runtime accepts timeouts");
        let names = Arc::new(names);
        let notify = Arc::new(Notify::new());
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let closed = Arc::new(AtomicBool::new(false));
        let feeds = Feeds {
            pool: pool.clone(),
            names: Arc::clone(&names),
            notify: Arc::clone(&notify),
            events: events.clone(),
            closed: Arc::clone(&closed),
        };
        let listener = listener_start(config.clone(), feeds)
            .await
            .map_err(open_error)?;
        let workflows = Arc::new(WorkflowCache::default());
        let writer_start = || {
            GroupWriter::start(WriterShared {
                pool: pool.clone(),
                names: Arc::clone(&names),
                workflows: Arc::clone(&workflows),
                notify: Arc::clone(&notify),
            })
        };
        let writer = writer_start();
        let claim_writer = writer_start();
        Ok(PostgresStore {
            pool,
            names,
            url_redacted,
            workflows,
            notify,
            writer,
            claim_writer,
            events,
            leader: Leader::new(config),
            listener,
            closed,
        })
    }

    /// Returns the server and database this store uses, without the password.
    pub fn url_redacted(&self) -> &str {
        &self.url_redacted
    }

    /// Returns the schema that contains this store's tables.
    pub fn schema(&self) -> &str {
        &self.names.schema
    }

    /// Reads `fsync` and `synchronous_commit` as the server reports them, so that a benchmark
    /// states the durability it measured.
    pub async fn durability(&self) -> Result<PostgresDurability, StoreError> {
        let client = self.client().await?;
        let fsync = client.query_one("SHOW fsync", &[]).await?.try_get(0)?;
        let synchronous_commit = client
            .query_one("SHOW synchronous_commit", &[])
            .await?
            .try_get(0)?;
        Ok(PostgresDurability {
            fsync,
            synchronous_commit,
        })
    }

    /// Reports whether this process leads maintenance on the schema, taking the lead when no
    /// other process holds it. Only the leader's [`Store::maintenance`] does any work.
    pub async fn is_maintenance_leader(&self) -> Result<bool, StoreError> {
        self.leader.is_leader(&self.names).await
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        Ok(self.pool.get().await?)
    }

    fn after_commit(&self, committed: &Committed) {
        // Local workers are woken at once; other processes hear it through NOTIFY.
        if committed.wakes_workers {
            self.notify.notify_waiters();
            self.notify.notify_one();
        }
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        self.listener.abort();
        self.pool.close();
    }
}

/// Runs `$body` (which uses the transaction `$tx`) in a new transaction and commits it.
macro_rules! in_transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut client = $store.client().await?;
        let transaction = client.transaction().await?;
        let mut $tx = PgTx::new(&transaction);
        let value = $body.await?;
        let committed = $tx.finish(&$store.names).await?;
        transaction.commit().await?;
        $store.after_commit(&committed);
        Ok::<_, StoreError>(value)
    }};
}

#[async_trait]
impl Store for PostgresStore {
    async fn workflow_insert(
        &self,
        record: WorkflowRecord,
    ) -> Result<WorkflowInserted, StoreError> {
        in_transaction!(self, |tx| workflows::workflow_insert(&mut tx, &record))
    }

    async fn workflow_get(
        &self,
        id: &str,
        version: Option<&str>,
    ) -> Result<Option<WorkflowRecord>, StoreError> {
        let client = self.client().await?;
        workflows::workflow_get(Db::Client(&client), &self.workflows, id, version).await
    }

    async fn workflow_list(&self) -> Result<Vec<WorkflowRecord>, StoreError> {
        let client = self.client().await?;
        workflows::workflow_list(Db::Client(&client)).await
    }

    async fn workflow_versions(&self, id: &str) -> Result<Vec<WorkflowRecord>, StoreError> {
        let client = self.client().await?;
        workflows::workflow_versions(Db::Client(&client), id).await
    }

    async fn workflow_delete(&self, id: &str, version: &str) -> Result<(), StoreError> {
        in_transaction!(self, |tx| workflows::workflow_delete(
            &mut tx,
            &self.workflows,
            id,
            version
        ))
    }

    async fn job_insert_many(
        &self,
        jobs: Vec<JobNew>,
        batch_id: Option<String>,
    ) -> Result<Vec<String>, StoreError> {
        in_transaction!(self, |tx| job_insert::job_insert_many(
            &mut tx,
            &self.workflows,
            &jobs,
            batch_id.as_deref()
        ))
    }

    async fn job_insert_claim(
        &self,
        jobs: Vec<JobNew>,
        batch_id: Option<String>,
        claim: ClaimParams,
    ) -> Result<(Vec<String>, Vec<ClaimedJob>), StoreError> {
        let op = WriteOp::InsertClaim(jobs, batch_id, claim);
        match self.claim_writer.write(op).await? {
            WriteValue::InsertedClaimed(ids, claimed) => Ok((ids, claimed)),
            _ => unreachable!("an insert with a claim returns ids and claimed jobs"),
        }
    }

    async fn job_get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let client = self.client().await?;
        job_reads::job_get(Db::Client(&client), id).await
    }

    async fn job_query(&self, query: JobQuery) -> Result<Vec<Job>, StoreError> {
        let client = self.client().await?;
        job_query::job_query(Db::Client(&client), &query).await
    }

    async fn queue_depth(&self) -> Result<BTreeMap<oaj_core::Priority, u64>, StoreError> {
        let client = self.client().await?;
        job_reads::queue_depth(Db::Client(&client)).await
    }

    async fn job_counts(&self) -> Result<BTreeMap<JobState, u64>, StoreError> {
        let client = self.client().await?;
        job_reads::job_counts(Db::Client(&client)).await
    }

    async fn job_action(&self, id: &str, action: JobAction, now: i64) -> Result<Job, StoreError> {
        in_transaction!(self, |tx| actions::job_action(&mut tx, id, action, now))
    }

    async fn job_dependency_add(&self, change: DependencyChange) -> Result<Job, StoreError> {
        in_transaction!(self, |tx| dependencies::job_dependency_add(
            &mut tx, &change
        ))
    }

    async fn job_dependency_remove(&self, change: DependencyChange) -> Result<Job, StoreError> {
        in_transaction!(self, |tx| dependencies::job_dependency_remove(
            &mut tx, &change
        ))
    }

    async fn job_dependents(&self, job_id: &str) -> Result<Vec<Job>, StoreError> {
        let client = self.client().await?;
        dependencies::job_dependents(Db::Client(&client), job_id).await
    }

    async fn job_delete(&self, id: &str) -> Result<(), StoreError> {
        in_transaction!(self, |tx| job_reads::job_delete(&mut tx, id))
    }

    async fn step_run_list(&self, job_id: &str) -> Result<Vec<StepRun>, StoreError> {
        let client = self.client().await?;
        job_reads::step_run_list(Db::Client(&client), job_id).await
    }

    async fn attempt_list(&self, job_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let client = self.client().await?;
        job_reads::attempt_list(Db::Client(&client), job_id).await
    }

    async fn event_list(&self, filter: EventFilter) -> Result<Vec<Event>, StoreError> {
        let client = self.client().await?;
        job_reads::event_list(Db::Client(&client), &filter).await
    }

    async fn approval_decide(&self, decide: ApprovalDecide) -> Result<(), StoreError> {
        in_transaction!(self, |tx| actions::approval_decide(&mut tx, &decide))
    }

    async fn job_claim(&self, params: ClaimParams) -> Result<Vec<ClaimedJob>, StoreError> {
        match self.claim_writer.write(WriteOp::Claim(params)).await? {
            WriteValue::Claimed(claimed) => Ok(claimed),
            _ => unreachable!("a claim returns the claimed jobs"),
        }
    }

    async fn lease_extend(&self, params: LeaseExtend) -> Result<Vec<LeaseStatus>, StoreError> {
        match self.writer.write(WriteOp::LeaseExtend(params)).await? {
            WriteValue::Leases(statuses) => Ok(statuses),
            _ => unreachable!("a lease renewal returns the lease statuses"),
        }
    }

    async fn attempt_start(&self, start: AttemptStart) -> Result<i64, StoreError> {
        match self.writer.write(WriteOp::AttemptStart(start)).await? {
            WriteValue::AttemptId(id) => Ok(id),
            _ => unreachable!("an attempt start returns the attempt id"),
        }
    }

    async fn attempt_finish(&self, finish: AttemptFinish) -> Result<Option<Control>, StoreError> {
        match self.writer.write(WriteOp::AttemptFinish(finish)).await? {
            WriteValue::Control(control) => Ok(control),
            _ => unreachable!("an attempt finish returns the pending request"),
        }
    }

    /// Writes the whole attempt in one call of the group writer.
    async fn attempt_record(
        &self,
        start: AttemptStart,
        finish: AttemptFinish,
    ) -> Result<i64, StoreError> {
        match self
            .writer
            .write(WriteOp::AttemptRecord(start, finish))
            .await?
        {
            WriteValue::AttemptId(id) => Ok(id),
            _ => unreachable!("an attempt record returns the attempt id"),
        }
    }

    async fn step_update(&self, update: StepUpdate) -> Result<(), StoreError> {
        match self.writer.write(WriteOp::StepUpdate(update)).await? {
            WriteValue::Done => Ok(()),
            _ => unreachable!("a step update returns nothing"),
        }
    }

    async fn attempts_record(
        &self,
        records: Vec<AttemptRecord>,
    ) -> Result<Option<Control>, StoreError> {
        match self.writer.write(WriteOp::AttemptsRecord(records)).await? {
            WriteValue::Control(control) => Ok(control),
            _ => unreachable!("an attempts record returns the pending request"),
        }
    }

    async fn job_finish(&self, finish: JobFinish) -> Result<(), StoreError> {
        match self.writer.write(WriteOp::JobFinish(finish)).await? {
            WriteValue::Done => Ok(()),
            _ => unreachable!("a job finish returns nothing"),
        }
    }

    async fn worker_heartbeat(&self, beat: WorkerBeat) -> Result<(), StoreError> {
        in_transaction!(self, |tx| workers::worker_heartbeat(&mut tx, &beat))
    }

    async fn worker_list(&self, now: i64) -> Result<Vec<WorkerRecord>, StoreError> {
        let client = self.client().await?;
        workers::worker_list(Db::Client(&client), now).await
    }

    /// Runs the pass only in the process that leads maintenance; in the others it does nothing
    /// and returns an empty report.
    async fn maintenance(
        &self,
        params: MaintenanceParams,
    ) -> Result<MaintenanceReport, StoreError> {
        let mut report = MaintenanceReport::default();
        if !self.leader.is_leader(&self.names).await? {
            tracing::debug!("another process leads maintenance; skipping the pass");
            return Ok(report);
        }
        // One transaction per pass instead of one for all, so that each holds its locks briefly.
        in_transaction!(self, |tx| maintenance::rescue(
            &mut tx,
            &params,
            &mut report
        ))?;
        in_transaction!(self, |tx| maintenance::promote(
            &mut tx,
            &params,
            &mut report
        ))?;
        in_transaction!(self, |tx| maintenance::retain(
            &mut tx,
            &params,
            &mut report
        ))?;
        in_transaction!(self, |tx| workers::forget(&mut tx, &params, &mut report))?;
        Ok(report)
    }

    fn work_notify(&self) -> Arc<Notify> {
        Arc::clone(&self.notify)
    }

    /// Subscribes to events committed by every process that shares the schema, read back in
    /// sequence order after each NOTIFY (or each poll while the listener is down).
    fn event_subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// Reads the schema (the given one, or the first existing one on the search path) and derives
/// its lock keys and channel names.
async fn names_read(
    client: &tokio_postgres::Client,
    schema: Option<&str>,
    url_redacted: &str,
) -> Result<Names, StoreError> {
    let schema = match schema {
        Some(schema) => schema.to_owned(),
        None => {
            let row = client.query_one("SELECT current_schema()", &[]).await?;
            let current: Option<String> = row.try_get(0)?;
            current.ok_or_else(|| StoreError::Open {
                path: url_redacted.to_owned(),
                message: "no schema on the search path exists: create one or set \
                          PostgresOptions::schema"
                    .to_owned(),
            })?
        }
    };
    schema_check(&schema, url_redacted)?;
    let row = client.query_one("SELECT hashtext($1)", &[&schema]).await?;
    Ok(Names {
        lock_id: row.try_get(0)?,
        lock_class_migrate: LOCK_CLASS_MIGRATE,
        lock_class_events: LOCK_CLASS_EVENTS,
        lock_class_maintenance: LOCK_CLASS_MAINTENANCE,
        events_channel: format!("oaj_events_{schema}"),
        work_channel: format!("oaj_work_{schema}"),
        schema,
    })
}

/// Checks that a schema name needs no quoting and fits in a channel name.
fn schema_check(schema: &str, url_redacted: &str) -> Result<(), StoreError> {
    let is_plain = schema
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && schema.bytes().next().is_some_and(|b| !b.is_ascii_digit());
    if is_plain && schema.len() <= SCHEMA_LEN_MAX {
        return Ok(());
    }
    Err(StoreError::Open {
        path: url_redacted.to_owned(),
        message: format!(
            "invalid schema name {schema:?}: expected at most {SCHEMA_LEN_MAX} lowercase ASCII \
             letters, digits and underscores, not starting with a digit"
        ),
    })
}

/// Describes the server and database of `config` for messages, leaving out the password.
fn config_url_redacted(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("(default user)");
    let database = config.get_dbname().unwrap_or("(default database)");
    format!("postgres://{user}@{host}:{port}/{database}")
}
