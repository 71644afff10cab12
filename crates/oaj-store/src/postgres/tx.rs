//! The write transaction: statements run at once, while counter changes and events wait until
//! just before the commit, so that the locks they need are held as briefly as possible.
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
const INSERT_EVENT: &str = "INSERT INTO events (kind, job_id, step_id, item, attempt, data, at)
    VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq";
const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// An open write transaction with the counter changes, events and wake-ups it will commit.
pub(crate) struct PgTx<'c> {
    tx: deadpool_postgres::Transaction<'c>,
    counts: BTreeMap<&'static str, i64>,
    events: Vec<Event>,
    wakes_workers: bool,
}

/// What a committed transaction did that others should hear of.
pub(crate) struct Committed {
    /// Whether jobs became claimable.
    pub(crate) wakes_workers: bool,
}

impl<'c> PgTx<'c> {
    /// Begins a transaction on `client`.
    pub(crate) async fn begin(
        client: &'c mut deadpool_postgres::Client,
    ) -> Result<PgTx<'c>, StoreError> {
        Ok(PgTx {
            tx: client.transaction().await?,
            counts: BTreeMap::new(),
            events: Vec::new(),
            wakes_workers: false,
        })
    }

    /// Returns the connection inside the transaction.
    pub(crate) fn db(&self) -> Db<'_> {
        Db::Tx(&self.tx)
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

    /// Writes the counters and events, sends the notifications and commits.
    pub(crate) async fn commit(self, names: &Names) -> Result<Committed, StoreError> {
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
            let mut last_seq = 0;
            for event in &self.events {
                last_seq = self.event_insert(event).await?;
            }
            let payload = last_seq.to_string();
            self.execute(NOTIFY, &[&names.events_channel, &payload])
                .await?;
        }
        if self.wakes_workers {
            self.execute(NOTIFY, &[&names.work_channel, &""]).await?;
        }
        self.tx.commit().await?;
        Ok(Committed {
            wakes_workers: self.wakes_workers,
        })
    }

    async fn event_insert(&self, event: &Event) -> Result<i64, StoreError> {
        let data = event.data.to_string();
        let item = event.item.map(i64::from);
        let attempt = event.attempt.map(i64::from);
        self.db()
            .query_value(
                INSERT_EVENT,
                &[
                    &event.kind,
                    &event.job_id,
                    &event.step_id,
                    &item,
                    &attempt,
                    &data,
                    &event.at,
                ],
            )
            .await
    }
}
