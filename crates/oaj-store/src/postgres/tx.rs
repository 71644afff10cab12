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
use tokio_postgres::types::ToSql;

use super::db::{Db, Params};
use super::Names;
use crate::error::StoreError;
use crate::model::Event;

// One statement per counter, sent in the order of the state names, so that every transaction
// locks the counter rows in one fixed order and no two wait for each other's in a cycle. A single
// statement for all counters, which sorted the rows before it locked them, cost more to plan than
// to run. PostgreSQL 15 planned it again on every call, 0.22 ms a group in a 20,000-job drain
// (pg_stat_statements with track_planning).
const UPDATE_COUNT: &str = "UPDATE job_counts SET count = count + $2 WHERE state = $1";
const LOCK_EVENTS: &str = "SELECT pg_advisory_xact_lock($1, $2)";
// One statement for all the events of a commit. `ORDER BY` keeps the sequence numbers in the
// order the events were added, because `nextval` runs as each sorted row is inserted. The
// notification carries the last sequence number handed out.
const INSERT_EVENTS: &str = "WITH inserted AS (
    INSERT INTO events (kind, job_id, step_id, item, attempt, data, at)
    SELECT kind, job_id, step_id, item, attempt, data, at
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[],
        $7::bigint[]) WITH ORDINALITY AS e (kind, job_id, step_id, item, attempt, data, at, n)
    ORDER BY n RETURNING seq)
    SELECT pg_notify($8, max(seq)::text) FROM inserted";
const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// An open write transaction with the counter changes, events and wake-ups it will commit.
/// The caller owns the transaction itself and commits it after [`PgTx::finish`], or with
/// [`PgTx::finish_and_commit`].
pub(crate) struct PgTx<'c> {
    db: Db<'c>,
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
        PgTx::on(Db::Tx(tx))
    }

    /// Wraps a connection that is in a transaction, or whose next statements begin one, with no
    /// pending changes.
    pub(crate) fn on(db: Db<'c>) -> PgTx<'c> {
        PgTx {
            db,
            counts: BTreeMap::new(),
            events: Vec::new(),
            wakes_workers: false,
        }
    }

    /// Returns the connection inside the transaction.
    pub(crate) fn db(&self) -> Db<'c> {
        self.db
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
        self.statements_end(names, false).await
    }

    /// Writes the counters and events like [`PgTx::finish`], and sends `COMMIT` in the same
    /// round trip, so that the event lock is not held while the client reads the replies.
    ///
    /// When a statement before it fails, PostgreSQL ends the transaction with a rollback at the
    /// `COMMIT`, and this returns that statement's error.
    pub(crate) async fn finish_and_commit(self, names: &Names) -> Result<Committed, StoreError> {
        self.statements_end(names, true).await
    }

    /// Runs the statements of [`PgTx::finish`], then `COMMIT` when `commits`.
    ///
    /// The statements go out together, in one round trip, and the server runs them in the order
    /// sent: the counters in the order of their state names, then the event lock, then the event
    /// insert. Each is prepared first, because a statement that still had to be prepared would be
    /// sent only after its preparation came back.
    async fn statements_end(self, names: &Names, commits: bool) -> Result<Committed, StoreError> {
        let db = self.db();
        for sql in [UPDATE_COUNT, LOCK_EVENTS, INSERT_EVENTS, NOTIFY] {
            db.prepare(sql).await?;
        }
        // `counts` is a BTreeMap, so this is the order of the state names.
        let changes: Vec<(&str, i64)> = self
            .counts
            .iter()
            .filter(|(_, delta)| **delta != 0)
            .map(|(state, delta)| (*state, *delta))
            .collect();
        assert!(
            changes.len() <= JobState::ALL.len(),
            "one counter change per job state"
        );
        let count_params: Vec<[&(dyn ToSql + Sync); 2]> = changes
            .iter()
            .map(|(state, delta)| [state as &(dyn ToSql + Sync), delta as &(dyn ToSql + Sync)])
            .collect();
        let events = EventColumns::new(&self.events);
        let has_events = !self.events.is_empty();
        let lock_params: Params<'_> = &[&names.lock_class_events, &names.lock_id];
        let events_params = events.params(&names.events_channel);
        let work_params: Params<'_> = &[&names.work_channel, &""];

        let run_if = |is_needed: bool, sql, params| async move {
            if !is_needed {
                return Ok(0);
            }
            db.execute(sql, params).await
        };
        let count = |index: usize| {
            let params: Params<'_> = count_params.get(index).map_or(&[], |params| &params[..]);
            run_if(index < count_params.len(), UPDATE_COUNT, params)
        };
        // Errors in statement order, as in `claims::job_claim`.
        let results = tokio::join!(
            count(0),
            count(1),
            count(2),
            count(3),
            count(4),
            count(5),
            count(6),
            count(7),
            run_if(has_events, LOCK_EVENTS, lock_params),
            run_if(has_events, INSERT_EVENTS, &events_params),
            run_if(self.wakes_workers, NOTIFY, work_params),
            async {
                if commits {
                    db.batch_execute("COMMIT").await?;
                }
                Ok(0)
            },
        );
        let (c0, c1, c2, c3, c4, c5, c6, c7, lock, insert, notify, commit) = results;
        for result in [c0, c1, c2, c3, c4, c5, c6, c7, lock, insert, notify, commit] {
            result?;
        }
        Ok(Committed {
            wakes_workers: self.wakes_workers,
        })
    }
}

/// The pending events as the arrays of [`INSERT_EVENTS`], one per column.
struct EventColumns<'e> {
    kinds: Vec<&'e str>,
    job_ids: Vec<Option<&'e str>>,
    step_ids: Vec<Option<&'e str>>,
    items: Vec<Option<i64>>,
    attempts: Vec<Option<i64>>,
    data: Vec<String>,
    ats: Vec<i64>,
}

impl<'e> EventColumns<'e> {
    fn new(events: &'e [Event]) -> EventColumns<'e> {
        EventColumns {
            kinds: events.iter().map(|event| event.kind.as_str()).collect(),
            job_ids: events.iter().map(|event| event.job_id.as_deref()).collect(),
            step_ids: events
                .iter()
                .map(|event| event.step_id.as_deref())
                .collect(),
            items: events.iter().map(|e| e.item.map(i64::from)).collect(),
            attempts: events.iter().map(|e| e.attempt.map(i64::from)).collect(),
            data: events.iter().map(|event| event.data.to_string()).collect(),
            ats: events.iter().map(|event| event.at).collect(),
        }
    }

    fn params<'p>(&'p self, channel: &'p String) -> Vec<&'p (dyn ToSql + Sync)> {
        vec![
            &self.kinds,
            &self.job_ids,
            &self.step_ids,
            &self.items,
            &self.attempts,
            &self.data,
            &self.ats,
            channel,
        ]
    }
}
