//! The write transaction: statements run at once, while counter changes and events wait until
//! just before the commit, so that the locks they need are held as briefly as possible.
//!
//! A transaction may carry the changes of many store calls: the group writer (`group_writer.rs`)
//! runs each call in a savepoint and uses [`PgTx::mark`] and [`PgTx::rollback_to`] to drop the
//! counter changes and events of a call that failed.
//!
//! Event order across processes: a `BIGSERIAL` hands out numbers when rows are inserted, but
//! transactions commit in any order, so a reader that resumes after sequence number N could
//! miss a row numbered below N that commits later. Every transaction therefore takes one
//! transaction-level advisory lock (per schema) before it inserts its events, and holds it until
//! its commit. Numbers are then handed out in commit order, and a reader of `seq > N` never
//! misses a row. The cost is that the event insert and the commit of writing transactions run
//! one at a time; everything before them still runs in parallel.

use std::collections::BTreeMap;

use oaj_core::JobState;
use serde_json::Value;

use super::db::{Db, Params};
use super::Names;
use crate::error::StoreError;
use crate::model::Event;

const UPDATE_COUNT: &str = "UPDATE job_counts SET count = count + $2 WHERE state = $1";
const LOCK_EVENTS: &str = "SELECT pg_advisory_xact_lock($1, $2)";
// One statement for all the events of a commit. `ORDER BY` keeps the sequence numbers in the
// order the events were added, because `nextval` runs as each sorted row is inserted.
// Returns the last sequence number handed out.
const INSERT_EVENTS: &str = "WITH inserted AS (
    INSERT INTO events (kind, job_id, step_id, item, attempt, data, at)
    SELECT kind, job_id, step_id, item, attempt, data, at
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[],
        $7::bigint[]) WITH ORDINALITY AS e (kind, job_id, step_id, item, attempt, data, at, n)
    ORDER BY n RETURNING seq)
    SELECT max(seq) FROM inserted";
const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// An open write transaction with the counter changes, events and wake-ups it will commit.
/// The caller owns the transaction itself and commits it after [`PgTx::finish`].
pub(crate) struct PgTx<'c> {
    tx: &'c deadpool_postgres::Transaction<'c>,
    counts: BTreeMap<&'static str, i64>,
    events: Vec<Event>,
    wakes_workers: bool,
}

/// The pending changes of a [`PgTx`] at one moment, to go back to with [`PgTx::rollback_to`].
pub(crate) struct Mark {
    counts: BTreeMap<&'static str, i64>,
    events_len: usize,
    wakes_workers: bool,
}

/// What a committed transaction did that others should hear of.
pub(crate) struct Committed {
    /// Whether jobs became claimable.
    pub(crate) wakes_workers: bool,
}

impl<'c> PgTx<'c> {
    /// Wraps an open transaction, with no pending changes.
    pub(crate) fn new(tx: &'c deadpool_postgres::Transaction<'c>) -> PgTx<'c> {
        PgTx {
            tx,
            counts: BTreeMap::new(),
            events: Vec::new(),
            wakes_workers: false,
        }
    }

    /// Returns the transaction itself, for savepoints.
    pub(crate) fn transaction(&self) -> &'c deadpool_postgres::Transaction<'c> {
        self.tx
    }

    /// Returns the connection inside the transaction.
    pub(crate) fn db(&self) -> Db<'_> {
        Db::Tx(self.tx)
    }

    /// Runs a statement and returns every row.
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.db().query(sql, params).await
    }

    /// Runs a statement and returns its first row, if any.
    pub(crate) async fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<tokio_postgres::Row>, StoreError> {
        self.db().query_opt(sql, params).await
    }

    /// Runs a statement and returns the number of rows it changed.
    pub(crate) async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
        self.db().execute(sql, params).await
    }

    /// Asks for workers to be woken after the commit, because jobs became claimable.
    pub(crate) fn wake_workers(&mut self) {
        self.wakes_workers = true;
    }

    /// Adds `delta` to the counter of `state` at commit.
    pub(crate) fn counts_add(&mut self, state: JobState, delta: i64) {
        *self.counts.entry(state.as_str()).or_default() += delta;
    }

    /// Adds `count` to the counter of `to` and takes it from the counter of `from`, at commit.
    pub(crate) fn counts_move(&mut self, from: JobState, to: JobState, count: i64) {
        self.counts_add(from, -count);
        self.counts_add(to, count);
    }

    /// Keeps an event to store at commit, when it gets its sequence number.
    pub(crate) fn event_add(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Keeps an event about a whole job to store at commit.
    pub(crate) fn job_event(&mut self, kind: String, job_id: &str, data: Value, at: i64) {
        self.event_add(Event {
            seq: 0,
            kind,
            job_id: Some(job_id.to_owned()),
            step_id: None,
            item: None,
            attempt: None,
            data,
            at,
        });
    }

    /// Returns the pending changes as they are now.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            counts: self.counts.clone(),
            events_len: self.events.len(),
            wakes_workers: self.wakes_workers,
        }
    }

    /// Drops the counter changes, events and wake-ups added since `mark`, for a call whose
    /// statements were rolled back to a savepoint.
    pub(crate) fn rollback_to(&mut self, mark: Mark) {
        self.counts = mark.counts;
        self.events.truncate(mark.events_len);
        self.wakes_workers = mark.wakes_workers;
    }

    /// Writes the counters and events and sends the notifications, which PostgreSQL delivers at
    /// the commit. The caller commits next.
    pub(crate) async fn finish(self, names: &Names) -> Result<Committed, StoreError> {
        // Counter rows are updated in one fixed order (by state name), so that two transactions
        // never wait for each other's counter rows in a cycle.
        for (state, delta) in &self.counts {
            if *delta != 0 {
                self.execute(UPDATE_COUNT, &[state, delta]).await?;
            }
        }
        if !self.events.is_empty() {
            self.execute(LOCK_EVENTS, &[&names.lock_class_events, &names.lock_id])
                .await?;
            let last_seq = self.events_insert().await?;
            let payload = last_seq.to_string();
            self.execute(NOTIFY, &[&names.events_channel, &payload])
                .await?;
        }
        if self.wakes_workers {
            self.execute(NOTIFY, &[&names.work_channel, &""]).await?;
        }
        Ok(Committed {
            wakes_workers: self.wakes_workers,
        })
    }

    /// Inserts every pending event in one statement and returns the last sequence number.
    async fn events_insert(&self) -> Result<i64, StoreError> {
        let count = self.events.len();
        let mut kinds = Vec::with_capacity(count);
        let mut job_ids = Vec::with_capacity(count);
        let mut step_ids = Vec::with_capacity(count);
        let mut items = Vec::with_capacity(count);
        let mut attempts = Vec::with_capacity(count);
        let mut data = Vec::with_capacity(count);
        let mut ats = Vec::with_capacity(count);
        for event in &self.events {
            kinds.push(event.kind.as_str());
            job_ids.push(event.job_id.as_deref());
            step_ids.push(event.step_id.as_deref());
            items.push(event.item.map(i64::from));
            attempts.push(event.attempt.map(i64::from));
            data.push(event.data.to_string());
            ats.push(event.at);
        }
        self.db()
            .query_value(
                INSERT_EVENTS,
                &[&kinds, &job_ids, &step_ids, &items, &attempts, &data, &ats],
            )
            .await
    }
}
