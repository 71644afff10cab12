//! The writer: one thread that owns the write connection and groups waiting requests into one
//! transaction.
//!
//! SQLite allows one writer at a time, and each commit costs a sync of the log. Running every
//! request that is waiting in one transaction pays that sync once for the group, which is what
//! keeps inserts and claims fast. Each request runs inside its own savepoint, so a request that
//! fails (a lost lease, a conflict) rolls back only its own changes. Replies and events go out
//! only after the commit, so a caller never sees a change that could still be lost.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;

use oaj_core::JobState;
use rusqlite::{params, Connection};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

use crate::error::StoreError;
use crate::model::Event;

/// Requests run in one transaction at most; a bound keeps each transaction, and the wait of the
/// first caller in it, short.
const BATCH_MAX: usize = 1024;

/// Requests that may wait for the writer before senders are held back.
const QUEUE_CAPACITY: usize = 8192;

const UPDATE_COUNT: &str = "UPDATE job_counts SET count = count + ?2 WHERE state = ?1";

/// The reply of a request, called once the outcome of the commit is known.
type Reply = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// A write request. It runs against the open transaction, or gets `None` when no transaction
/// could begin, and then only prepares its reply.
type Request = Box<dyn FnOnce(Option<&mut WriteTx<'_>>) -> (bool, Reply) + Send>;

/// The open transaction given to one request: the connection, plus the events and wake-ups to
/// publish if the transaction commits.
pub(crate) struct WriteTx<'c> {
    /// The write connection, inside the group's transaction and this request's savepoint.
    pub(crate) conn: &'c Connection,
    pub(crate) events: Vec<Event>,
    pub(crate) wakes_workers: bool,
    /// Changes to the job counters, written once for the whole group just before its commit.
    counts: CountChanges,
}

/// Changes to the number of jobs in each state.
type CountChanges = BTreeMap<JobState, i64>;

impl WriteTx<'_> {
    /// Adds `delta` to the counter of jobs in `state` when the transaction commits.
    pub(crate) fn count_add(&mut self, state: JobState, delta: i64) {
        *self.counts.entry(state).or_default() += delta;
    }

    /// Asks for workers to be woken after the commit, because jobs became claimable.
    pub(crate) fn wake_workers(&mut self) {
        self.wakes_workers = true;
    }
}

/// The sending side of the writer, shared by every caller.
pub(crate) struct Writer {
    sender: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

/// The channels that receive the events and wake-ups of each commit.
pub(crate) struct Publish {
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) notify: Arc<Notify>,
}

impl Writer {
    /// Starts the writer thread, which owns `conn` until the writer is dropped.
    pub(crate) fn start(conn: Connection, publish: Publish) -> Result<Writer, StoreError> {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("oaj-store-writer".into())
            .spawn(move || run(conn, receiver, publish))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Runs `op` in the next write transaction and returns its result once the transaction has
    /// committed. When `op` fails, its changes are rolled back and the others in the group stay.
    ///
    /// Panics when `op` panics, because that is a broken invariant such as an illegal state move.
    /// The writer rolls that request back and keeps serving the others.
    pub(crate) async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteTx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply_to, reply) = oneshot::channel();
        let request: Request = Box::new(move |tx: Option<&mut WriteTx<'_>>| {
            let result = tx.map(op);
            let is_ok = matches!(result, Some(Ok(_)));
            let send: Reply = Box::new(move |commit: Result<(), &StoreError>| {
                let outcome = match (commit, result) {
                    (Ok(()), Some(result)) => result,
                    (Ok(()), None) => unreachable!("a request that did not run is never committed"),
                    (Err(error), _) => Err(copy_error(error)),
                };
                // The send fails only when the caller's task was cancelled. The change is committed
                // either way, so no receiver remains to report it to.
                let _ = reply_to.send(outcome);
            });
            (is_ok, send)
        });

        let sender = self.sender.as_ref().ok_or(StoreError::Closed)?;
        sender.send(request).await.map_err(|_| StoreError::Closed)?;
        match reply.await {
            Ok(outcome) => outcome,
            Err(_) => panic!("the store writer panicked on this request (see the panic above)"),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop once the queued requests are done.
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the store writer thread panicked");
            }
        }
    }
}

fn run(conn: Connection, mut receiver: mpsc::Receiver<Request>, publish: Publish) {
    let mut group = Vec::with_capacity(BATCH_MAX);
    while let Some(first) = receiver.blocking_recv() {
        group.push(first);
        while group.len() < BATCH_MAX {
            match receiver.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        run_group(&conn, group.drain(..), &publish);
    }
}

/// Runs one group of requests in one transaction, then replies and publishes.
fn run_group(conn: &Connection, group: impl Iterator<Item = Request>, publish: &Publish) {
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        let error = StoreError::from(error);
        tracing::error!(error = %error, "cannot begin a write transaction");
        for request in group {
            let (_, reply) = request(None);
            reply(Err(&error));
        }
        return;
    }

    let mut replies = Vec::new();
    let mut events = Vec::new();
    let mut counts = CountChanges::new();
    let mut wakes_workers = false;
    let mut broken = None;
    for request in group {
        if broken.is_some() {
            let (_, reply) = request(None);
            replies.push(reply);
            continue;
        }
        match run_request(conn, request) {
            Ok(Some((reply, outcome))) => {
                events.extend(outcome.events);
                for (state, delta) in outcome.counts {
                    *counts.entry(state).or_default() += delta;
                }
                wakes_workers |= outcome.wakes_workers;
                replies.push(reply);
            }
            Ok(None) => {}
            Err(error) => broken = Some(error),
        }
    }
    if broken.is_none() {
        broken = counts_write(conn, &counts).err();
    }
    if let Some(error) = broken {
        tracing::error!(error = %error, "write transaction broke; rolling the whole group back");
        // SQLite may have rolled the transaction back already, making this ROLLBACK fail too.
        let _ = conn.execute_batch("ROLLBACK");
        for reply in replies {
            reply(Err(&error));
        }
        return;
    }

    if let Err(error) = conn.execute_batch("COMMIT") {
        let error = StoreError::from(error);
        tracing::error!(error = %error, "cannot commit a write transaction");
        // A failed COMMIT can leave the transaction open; end it so that the next one can begin.
        // Its own error adds nothing to the one already reported.
        let _ = conn.execute_batch("ROLLBACK");
        for reply in replies {
            reply(Err(&error));
        }
        return;
    }
    for reply in replies {
        reply(Ok(()));
    }
    publish_events(publish, events, wakes_workers);
}

/// The events and wake-ups of a successful request, published after the commit, and its
/// changes to the job counters.
struct Outcome {
    events: Vec<Event>,
    wakes_workers: bool,
    counts: CountChanges,
}

/// Writes the group's changes to the job counters, one statement per state that changed, so
/// that a group of many requests updates each counter row once.
fn counts_write(conn: &Connection, counts: &CountChanges) -> Result<(), StoreError> {
    for (state, delta) in counts {
        if *delta != 0 {
            conn.prepare_cached(UPDATE_COUNT)?
                .execute(params![state.as_str(), delta])?;
        }
    }
    Ok(())
}

/// Runs one request in its own savepoint and keeps its changes only when it succeeds.
///
/// Returns `Ok(None)` when the request panicked: its reply is dropped, which makes its caller
/// panic in turn. Returns an error when a savepoint fails, which means SQLite ended the whole
/// transaction (for example on a full disk), so no request of the group may report success.
fn run_request(
    conn: &Connection,
    request: Request,
) -> Result<Option<(Reply, Outcome)>, StoreError> {
    run_cached(conn, "SAVEPOINT request")?;
    let mut tx = WriteTx {
        conn,
        events: Vec::new(),
        wakes_workers: false,
        counts: CountChanges::new(),
    };
    let ran = catch_unwind(AssertUnwindSafe(|| request(Some(&mut tx))));
    let (is_ok, reply) = match ran {
        Ok(ran) => ran,
        Err(_) => {
            rollback_request(conn)?;
            return Ok(None);
        }
    };
    if !is_ok {
        rollback_request(conn)?;
        let nothing = Outcome {
            events: Vec::new(),
            wakes_workers: false,
            counts: CountChanges::new(),
        };
        return Ok(Some((reply, nothing)));
    }
    run_cached(conn, "RELEASE request")?;
    let outcome = Outcome {
        events: tx.events,
        wakes_workers: tx.wakes_workers,
        counts: tx.counts,
    };
    Ok(Some((reply, outcome)))
}

/// Undoes the changes of the request in the open savepoint and ends the savepoint.
fn rollback_request(conn: &Connection) -> Result<(), StoreError> {
    run_cached(conn, "ROLLBACK TO request")?;
    run_cached(conn, "RELEASE request")
}

/// Runs a statement without parameters from the statement cache. Every request runs its
/// savepoint statements, and preparing them anew each time cost as much as a small insert.
fn run_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Copies an error for each caller of a failed transaction, keeping its kind.
fn copy_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Busy(message) => StoreError::Busy(message.clone()),
        StoreError::Corrupt(message) => StoreError::Corrupt(message.clone()),
        other => StoreError::Database(format!("write transaction failed: {other}")),
    }
}

fn publish_events(publish: &Publish, events: Vec<Event>, wakes_workers: bool) {
    for event in events {
        // The send fails only when there is no subscriber right now, which is normal.
        let _ = publish.events.send(event);
    }
    if wakes_workers {
        publish.notify.notify_waiters();
        publish.notify.notify_one();
    }
}
