//! The writer: one thread that owns the write connection and groups waiting requests into one
//! transaction.
//!
//! SQLite allows one writer at a time, and each commit costs a sync of the log. Running every
//! request that is waiting in one transaction pays that sync once for the group, which is what
//! keeps inserts and claims fast. A request that fails (a lost lease, a conflict) leaves no
//! change behind, and the others in its group stay. Most requests fail before they write. When
//! one fails after writing, the group runs again with a savepoint per request (see `run_group`).
//! Replies and events go out only after the commit, so a caller never sees a change that could
//! still be lost.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// Groups that run with a savepoint per request after a group had to run again, so that a burst
/// of requests that fail after writing does not make every group run twice.
const GUARDED_GROUPS: u32 = 16;

const UPDATE_COUNT: &str = "UPDATE job_counts SET count = count + ?2 WHERE state = ?1";

/// A write request. It runs against the open transaction, possibly more than once (see
/// [`run_group`]), and replies once the outcome of the commit is known.
trait Request: Send {
    /// Runs the request and keeps its result. Returns whether it succeeded.
    fn run(&mut self, tx: &mut WriteTx<'_>) -> bool;

    /// Sends the result of the last run once the transaction committed, or the error that ended
    /// the transaction.
    fn reply(self: Box<Self>, commit: Result<(), &StoreError>);

    /// Returns the error of the last run, when it failed.
    fn failure(&self) -> Option<String>;

    /// Reports whether the last run failed because the disk is full.
    fn failed_full(&self) -> bool;
}

/// A request made by [`Writer::write`]: the operation, the result of its last run, and the
/// channel to the caller.
struct Call<T, F> {
    op: F,
    result: Option<Result<T, StoreError>>,
    reply_to: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Request for Call<T, F>
where
    T: Send,
    F: FnMut(&mut WriteTx<'_>) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, tx: &mut WriteTx<'_>) -> bool {
        let result = (self.op)(tx).and_then(|value| {
            tx.events_write()?;
            Ok(value)
        });
        let is_ok = result.is_ok();
        self.result = Some(result);
        is_ok
    }

    fn reply(self: Box<Self>, commit: Result<(), &StoreError>) {
        let outcome = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => unreachable!("a request that did not run is never committed"),
            (Err(error), _) => Err(copy_error(error)),
        };
        // The send fails only when the caller's task was cancelled. The change is committed
        // either way, so no receiver remains to report it to.
        let _ = self.reply_to.send(outcome);
    }

    fn failure(&self) -> Option<String> {
        match &self.result {
            Some(Err(error)) => Some(error.to_string()),
            _ => None,
        }
    }

    fn failed_full(&self) -> bool {
        matches!(self.result, Some(Err(StoreError::Full(_))))
    }
}

/// The open transaction given to one request: the connection, plus the events and wake-ups to
/// publish if the transaction commits.
pub(crate) struct WriteTx<'c> {
    /// The write connection, inside the group's transaction and this request's savepoint.
    pub(crate) conn: &'c Connection,
    pub(crate) events: Vec<Event>,
    /// How many of `events`, from the start, are stored (see `WriteTx::events_write`).
    pub(crate) events_written: usize,
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
    sender: Option<mpsc::Sender<Box<dyn Request>>>,
    thread: Option<JoinHandle<()>>,
    publisher: Option<JoinHandle<()>>,
}

/// The channels that receive the events and wake-ups of each commit.
pub(crate) struct Publish {
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) notify: Arc<Notify>,
}

impl Writer {
    /// Starts the writer thread, which owns `conn` until the writer is dropped, and the thread
    /// that publishes the events of its commits.
    ///
    /// Publishing a group's events (a copy of each for the subscribers, then freeing them all)
    /// took about a twentieth of the writer thread's time in a drain. The writer is the one
    /// thread that limits throughput, so a thread of its own does that work.
    pub(crate) fn start(conn: Connection, publish: Publish) -> Result<Writer, StoreError> {
        let (events_out, events_in) = std::sync::mpsc::channel();
        let publisher = std::thread::Builder::new()
            .name("oaj-store-publish".into())
            .spawn(move || publish_run(&events_in, &publish.events))
            .map_err(|e| StoreError::Database(format!("cannot start the publish thread: {e}")))?;
        let wake = Wake {
            events: events_out,
            notify: publish.notify,
        };
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("oaj-store-writer".into())
            .spawn(move || run(conn, receiver, wake))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            sender: Some(sender),
            thread: Some(thread),
            publisher: Some(publisher),
        })
    }

    /// Runs `op` in the next write transaction and returns its result once the transaction has
    /// committed. When `op` fails, its changes are rolled back and the others in the group stay.
    ///
    /// `op` may run more than once, each time in a transaction that was rolled back before the
    /// next, so it must not change anything outside the transaction that a second run would not
    /// set again.
    ///
    /// Panics when `op` panics, because that is a broken invariant such as an illegal state move.
    /// The writer rolls that request back and keeps serving the others.
    pub(crate) async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut WriteTx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply_to, reply) = oneshot::channel();
        let request = Box::new(Call {
            op,
            result: None,
            reply_to,
        });
        let sender = self.sender.as_ref().ok_or(StoreError::Closed)?;
        sender.send(request).await.map_err(|_| StoreError::Closed)?;
        match reply.await {
            Ok(outcome) => outcome,
            Err(_) => panic!("the store writer panicked on this request (see the panic above)"),
        }
    }
}

impl Writer {
    /// Returns whether the writer and publish threads still run. A thread ends early only on a
    /// panic outside a request, after which every write fails.
    pub(crate) fn is_running(&self) -> bool {
        let running = |thread: &Option<JoinHandle<()>>| {
            thread.as_ref().is_some_and(|thread| !thread.is_finished())
        };
        running(&self.thread) && running(&self.publisher)
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
        // The writer thread dropped its end of the event channel, which ends the publisher.
        if let Some(publisher) = self.publisher.take() {
            if publisher.join().is_err() {
                tracing::error!("the store publish thread panicked");
            }
        }
    }
}

fn run(conn: Connection, mut receiver: mpsc::Receiver<Box<dyn Request>>, wake: Wake) {
    let mut guarded_left = 0;
    let mut errors = ErrorLog::default();
    while let Some(first) = receiver.blocking_recv() {
        let mut group = Vec::with_capacity(BATCH_MAX);
        group.push(first);
        while group.len() < BATCH_MAX {
            match receiver.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        if guarded_left == 0 {
            match run_group(&conn, group, &wake, Guard::None, &mut errors) {
                None => continue,
                Some(again) => {
                    group = again;
                    guarded_left = GUARDED_GROUPS;
                }
            }
        }
        guarded_left -= 1;
        let again = run_group(&conn, group, &wake, Guard::Savepoint, &mut errors);
        assert!(again.is_none(), "a guarded group never asks to run again");
    }
}

/// The protection that each request of a group gets from the failures of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// Requests run without savepoints. A request that fails after it changed a row makes the
    /// whole group roll back and run again with [`Guard::Savepoint`].
    None,
    /// Each request runs in its own savepoint, and one that fails rolls back alone.
    Savepoint,
}

/// The result of running one request of a group.
enum Ran {
    /// It ran and its reply waits for the commit. A request that failed without changing
    /// anything has nothing to publish.
    Done(Outcome),
    /// It panicked, and its changes were rolled back. It gets no reply, so its caller panics.
    Panicked,
    /// It failed after changing rows, which only a rollback of the whole group undoes.
    Undo,
}

/// Runs one group of requests in one transaction, then replies and publishes.
///
/// Savepoints cost a copy of every page a request changes, for each request, which was about a
/// tenth of the writer's time in a drain. Requests rarely fail, and most that do (a lost lease, a
/// finished attempt) fail in their checks before they write. So groups run with
/// [`Guard::None`], and a failure is checked with SQLite's count of changed rows: a request that
/// failed without changing any row needs no undo. Returns the group, to run again with
/// [`Guard::Savepoint`], when a request failed after it changed rows.
fn run_group(
    conn: &Connection,
    mut group: Vec<Box<dyn Request>>,
    wake: &Wake,
    guard: Guard,
    errors: &mut ErrorLog,
) -> Option<Vec<Box<dyn Request>>> {
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        let error = StoreError::from(error);
        errors.report("cannot begin a write transaction", &error);
        for request in group {
            request.reply(Err(&error));
        }
        return None;
    }

    let mut ran = Vec::with_capacity(group.len());
    let mut broken = None;
    for request in &mut group {
        let result = match guard {
            Guard::None => run_unguarded(conn, request.as_mut()),
            Guard::Savepoint => run_in_savepoint(conn, request.as_mut()),
        };
        match result {
            Ok(Ran::Undo) => {
                // Info, not a warning: rejected input gets here too, such as a batch whose last
                // job fails a check after the ones before it were inserted.
                tracing::info!(
                    error = request.failure().as_deref().unwrap_or("none reported"),
                    "a write request failed after changing rows, or SQLite ended its \
                     transaction; running the group again with a savepoint per request"
                );
                // SQLite may have rolled the transaction back already, making this ROLLBACK fail
                // too. The group runs again either way.
                let _ = conn.execute_batch("ROLLBACK");
                return Some(group);
            }
            Ok(outcome) => ran.push(outcome),
            Err(error) => {
                broken = Some(error);
                break;
            }
        }
    }
    let mut events = Vec::new();
    let mut counts = CountChanges::new();
    let mut wakes_workers = false;
    for outcome in &mut ran {
        if let Ran::Done(outcome) = outcome {
            events.append(&mut outcome.events);
            for (state, delta) in &outcome.counts {
                *counts.entry(*state).or_default() += delta;
            }
            wakes_workers |= outcome.wakes_workers;
        }
    }
    if broken.is_none() {
        broken = counts_write(conn, &counts).err();
    }
    let commit = match broken {
        Some(error) => {
            errors.report(
                "write transaction broke; rolling the whole group back",
                &error,
            );
            // SQLite may have rolled the transaction back already, making this ROLLBACK fail too.
            let _ = conn.execute_batch("ROLLBACK");
            Err(error)
        }
        None => commit(conn, errors),
    };
    reply_all(group, &ran, commit.as_ref().map(|_| ()));
    if commit.is_ok() {
        wake.send(events, wakes_workers);
    }
    None
}

/// Commits the open transaction.
fn commit(conn: &Connection, errors: &mut ErrorLog) -> Result<(), StoreError> {
    let Err(error) = conn.execute_batch("COMMIT") else {
        return Ok(());
    };
    let error = StoreError::from(error);
    errors.report("cannot commit a write transaction", &error);
    // A failed COMMIT can leave the transaction open; end it so that the next one can begin.
    // Its own error adds nothing to the one already reported.
    let _ = conn.execute_batch("ROLLBACK");
    Err(error)
}

/// Shortest time between two logged failures of the writer.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// The writer's failure log. A lasting failure, such as a full disk, fails every group, and the
/// writer runs hundreds of groups a second, so it logs one line a second at most. Each line counts
/// the failures left out since the line before.
#[derive(Debug, Default)]
struct ErrorLog {
    logged_at: Option<Instant>,
    skipped: u64,
}

impl ErrorLog {
    /// Logs `failure` with `error`, unless a failure was logged less than
    /// [`ERROR_LOG_INTERVAL`] ago. Returns whether it logged.
    fn report(&mut self, failure: &str, error: &StoreError) -> bool {
        let now = Instant::now();
        if self
            .logged_at
            .is_some_and(|at| now.duration_since(at) < ERROR_LOG_INTERVAL)
        {
            self.skipped += 1;
            return false;
        }
        tracing::error!(error = %error, failures_not_logged = self.skipped, "{failure}");
        self.logged_at = Some(now);
        self.skipped = 0;
        true
    }
}

/// Replies to each request of a group with the outcome of its transaction. A request that
/// panicked gets no reply; one that never ran (the transaction broke first) gets the error.
fn reply_all(group: Vec<Box<dyn Request>>, ran: &[Ran], commit: Result<(), &StoreError>) {
    for (index, request) in group.into_iter().enumerate() {
        match ran.get(index) {
            Some(Ran::Panicked) => drop(request),
            Some(Ran::Done(_)) | None => request.reply(commit),
            Some(Ran::Undo) => unreachable!("a group with an undo is run again"),
        }
    }
}

/// The events and wake-ups of a successful request, published after the commit, and its
/// changes to the job counters.
struct Outcome {
    events: Vec<Event>,
    wakes_workers: bool,
    counts: CountChanges,
}

impl Outcome {
    fn nothing() -> Outcome {
        Outcome {
            events: Vec::new(),
            wakes_workers: false,
            counts: CountChanges::new(),
        }
    }
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

/// Runs one request with a new [`WriteTx`]. Returns whether it succeeded, or `None` when it
/// panicked, with what it left to publish.
fn run_once(conn: &Connection, request: &mut dyn Request) -> (Option<bool>, Outcome) {
    let mut tx = WriteTx {
        conn,
        events: Vec::new(),
        events_written: 0,
        wakes_workers: false,
        counts: CountChanges::new(),
    };
    let ran = catch_unwind(AssertUnwindSafe(|| request.run(&mut tx))).ok();
    let outcome = Outcome {
        events: tx.events,
        wakes_workers: tx.wakes_workers,
        counts: tx.counts,
    };
    (ran, outcome)
}

/// Runs one request without a savepoint (see [`run_group`]).
fn run_unguarded(conn: &Connection, request: &mut dyn Request) -> Result<Ran, StoreError> {
    let changes_before = conn.total_changes();
    let (ran, outcome) = run_once(conn, request);
    // SQLite ends the whole transaction on an error it cannot undo statement by statement (a
    // full disk, an I/O error), even when the request went on and reported success.
    if conn.is_autocommit() {
        return Ok(Ran::Undo);
    }
    if ran == Some(true) {
        return Ok(Ran::Done(outcome));
    }
    // A failed statement undoes its own partial changes before it returns.
    if conn.total_changes() != changes_before {
        return Ok(Ran::Undo);
    }
    Ok(match ran {
        Some(_) => Ran::Done(Outcome::nothing()),
        None => Ran::Panicked,
    })
}

/// Runs one request in its own savepoint and keeps its changes only when it succeeds.
///
/// Returns an error when a savepoint fails, which means SQLite ended the whole transaction (for
/// example on a full disk), so no request of the group may report success.
fn run_in_savepoint(conn: &Connection, request: &mut dyn Request) -> Result<Ran, StoreError> {
    run_cached(conn, "SAVEPOINT request")?;
    let (ran, outcome) = run_once(conn, request);
    // Without a transaction there is no savepoint to release or roll back to, and the error of
    // that statement would hide the request's own, which gives the reason SQLite ended it.
    if conn.is_autocommit() {
        // A full disk keeps its kind, so that the callers learn what to do.
        if request.failed_full() {
            return Err(StoreError::Full(
                "SQLite ended the write transaction during a request".to_owned(),
            ));
        }
        let cause = request.failure();
        return Err(StoreError::Database(format!(
            "SQLite ended the write transaction during a request: {}",
            cause.as_deref().unwrap_or("the request reported no error")
        )));
    }
    match ran {
        Some(true) => {
            run_cached(conn, "RELEASE request")?;
            Ok(Ran::Done(outcome))
        }
        Some(false) => {
            rollback_request(conn)?;
            Ok(Ran::Done(Outcome::nothing()))
        }
        None => {
            rollback_request(conn)?;
            Ok(Ran::Panicked)
        }
    }
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
        StoreError::Full(message) => StoreError::Full(message.clone()),
        other => StoreError::Database(format!("write transaction failed: {other}")),
    }
}

/// The channels the writer thread signals after a commit: the publish thread, with the events,
/// and the workers, when jobs became claimable.
struct Wake {
    events: std::sync::mpsc::Sender<Vec<Event>>,
    notify: Arc<Notify>,
}

impl Wake {
    fn send(&self, events: Vec<Event>, wakes_workers: bool) {
        if !events.is_empty() {
            // The send fails only when the publish thread is gone, which happens only if it
            // panicked, and that panic is reported when the writer is dropped.
            let _ = self.events.send(events);
        }
        if wakes_workers {
            self.notify.notify_waiters();
            self.notify.notify_one();
        }
    }
}

/// Publishes the events of each commit, in commit order, until the writer thread ends.
fn publish_run(
    events_in: &std::sync::mpsc::Receiver<Vec<Event>>,
    events: &broadcast::Sender<Event>,
) {
    for group in events_in {
        for event in group {
            // The send fails only when there is no subscriber right now, which is normal.
            let _ = events.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::task::JoinHandle;

    use super::*;

    /// Starts a writer on a new file with one table of numbers, and returns it with the path.
    fn writer_on_table() -> (Arc<Writer>, tempfile::TempDir, std::path::PathBuf) {
        let folder = tempfile::tempdir().expect("temporary folder");
        let path = folder.path().join("oaj.db");
        let conn = super::super::connection::open_writer(&path, Duration::from_secs(1))
            .expect("open the writer");
        conn.execute_batch("CREATE TABLE numbers (n INTEGER NOT NULL)")
            .expect("create the table");
        let (events, _) = broadcast::channel(16);
        let publish = Publish {
            events,
            notify: Arc::new(Notify::new()),
        };
        let writer = Writer::start(conn, publish).expect("start the writer");
        (Arc::new(writer), folder, path)
    }

    #[test]
    fn error_log_skips_repeats_within_interval() {
        let mut errors = ErrorLog::default();
        let error = StoreError::Full("database or disk is full".into());

        assert!(errors.report("cannot commit a write transaction", &error));
        assert!(!errors.report("cannot commit a write transaction", &error));
        assert!(!errors.report("cannot commit a write transaction", &error));
        assert_eq!(errors.skipped, 2);

        errors.logged_at = Some(Instant::now() - ERROR_LOG_INTERVAL);
        assert!(errors.report("cannot commit a write transaction", &error));
        assert_eq!(errors.skipped, 0);
    }

    #[test]
    fn stopped_writer_thread_is_reported() {
        let (live, _folder, _path) = writer_on_table();
        assert!(live.is_running());

        let ended = std::thread::spawn(|| {});
        while !ended.is_finished() {
            std::thread::yield_now();
        }
        let (stop_publisher, publisher_stops) = std::sync::mpsc::channel::<()>();
        let publisher = std::thread::spawn(move || {
            let _ = publisher_stops.recv();
        });
        let (sender, _receiver) = mpsc::channel(1);
        let stopped = Writer {
            sender: Some(sender),
            thread: Some(ended),
            publisher: Some(publisher),
        };
        assert!(!stopped.is_running());
        drop(stop_publisher);
    }

    fn numbers(path: &std::path::Path) -> Vec<i64> {
        let conn = Connection::open(path).expect("open to read");
        let mut statement = conn
            .prepare("SELECT n FROM numbers ORDER BY n")
            .expect("prepare");
        let numbers = statement
            .query_map([], |row| row.get(0))
            .expect("query")
            .map(|n| n.expect("a number"))
            .collect();
        numbers
    }

    fn insert(tx: &WriteTx<'_>, n: i64) -> Result<(), StoreError> {
        tx.conn
            .execute("INSERT INTO numbers (n) VALUES (?1)", [n])?;
        Ok(())
    }

    /// Sends `op` to the writer from a new task and waits until it is queued, so that requests
    /// sent one after another queue in that order.
    async fn send<F>(writer: &Arc<Writer>, op: F) -> JoinHandle<Result<(), StoreError>>
    where
        F: FnMut(&mut WriteTx<'_>) -> Result<(), StoreError> + Send + 'static,
    {
        let sender = writer.sender.clone().expect("the writer is open");
        let queued = sender.max_capacity() - sender.capacity();
        let task = {
            let writer = Arc::clone(writer);
            tokio::spawn(async move { writer.write(op).await })
        };
        while sender.max_capacity() - sender.capacity() == queued {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        task
    }

    /// Holds the writer in a request until the returned sender is used, so that the requests
    /// sent meanwhile form the next group.
    async fn hold(
        writer: &Arc<Writer>,
    ) -> (
        JoinHandle<Result<(), StoreError>>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = oneshot::channel();
        let mut started_tx = Some(started_tx);
        let task = {
            let writer = Arc::clone(writer);
            tokio::spawn(async move {
                writer
                    .write(move |tx| {
                        if let Some(started) = started_tx.take() {
                            let _ = started.send(());
                        }
                        let _ = held.recv();
                        insert(tx, 1)
                    })
                    .await
            })
        };
        started.await.expect("the held request starts");
        (task, release)
    }

    /// One group contains a request that fails after it wrote, one that panics after it wrote, one
    /// that fails before it writes, and two that succeed. Only the changes of the two stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_requests_leave_no_change() {
        let (writer, _folder, path) = writer_on_table();
        let runs = Arc::new(AtomicUsize::new(0));
        let (held, release) = hold(&writer).await;

        let counted = Arc::clone(&runs);
        let first = send(&writer, move |tx| {
            counted.fetch_add(1, Ordering::SeqCst);
            insert(tx, 2)
        })
        .await;
        let fails_after_write = send(&writer, |tx| {
            insert(tx, 3)?;
            Err(StoreError::JobNotFound("after a write".to_owned()))
        })
        .await;
        let panics_after_write = send(&writer, |tx| {
            insert(tx, 4)?;
            panic!("a broken invariant after a write")
        })
        .await;
        let fails_before_write = send(&writer, |_tx| {
            Err(StoreError::JobNotFound("before a write".to_owned()))
        })
        .await;
        let counted = Arc::clone(&runs);
        let last = send(&writer, move |tx| {
            counted.fetch_add(1, Ordering::SeqCst);
            insert(tx, 5)
        })
        .await;
        release.send(()).expect("the held request waits");

        held.await
            .expect("no panic")
            .expect("the held request commits");
        first.await.expect("no panic").expect("the first commits");
        last.await.expect("no panic").expect("the last commits");
        let error = fails_after_write.await.expect("no panic").unwrap_err();
        assert!(matches!(error, StoreError::JobNotFound(_)), "{error:?}");
        let error = fails_before_write.await.expect("no panic").unwrap_err();
        assert!(matches!(error, StoreError::JobNotFound(_)), "{error:?}");
        assert!(panics_after_write.await.unwrap_err().is_panic());

        assert_eq!(numbers(&path), vec![1, 2, 5]);
        // The request before the failure ran without savepoints, then again with them; the one
        // after it ran only with them.
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    /// A request during which the transaction ends (as SQLite ends it on a full disk) stops the
    /// group: the requests after it must not run outside a transaction, where each statement
    /// would commit on its own while its caller gets an error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ended_transaction_stops_group() {
        let (writer, _folder, path) = writer_on_table();
        let (held, release) = hold(&writer).await;
        let before = send(&writer, |tx| insert(tx, 2)).await;
        let ends = send(&writer, |tx| {
            tx.conn.execute_batch("ROLLBACK")?;
            Ok(())
        })
        .await;
        let after = send(&writer, |tx| insert(tx, 3)).await;
        release.send(()).expect("the held request waits");

        held.await
            .expect("no panic")
            .expect("the held request commits");
        assert!(before.await.expect("no panic").is_err());
        assert!(ends.await.expect("no panic").is_err());
        assert!(after.await.expect("no panic").is_err());
        assert_eq!(numbers(&path), vec![1]);
    }

    /// The callers of a group whose transaction SQLite ended get the error of the request during
    /// which it ended, not the error of the savepoint statement that could no longer run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ended_transaction_reports_request_error() {
        let (writer, _folder, _path) = writer_on_table();
        let (held, release) = hold(&writer).await;
        let ends = send(&writer, |tx| {
            tx.conn.execute_batch("ROLLBACK")?;
            Err::<(), _>(StoreError::Database("database or disk is full".to_owned()))
        })
        .await;
        let other = send(&writer, |tx| insert(tx, 2)).await;
        release.send(()).expect("the held request waits");

        held.await
            .expect("no panic")
            .expect("the held request commits");
        let error = ends.await.expect("no panic").unwrap_err().to_string();
        assert!(error.contains("database or disk is full"), "{error}");
        let error = other.await.expect("no panic").unwrap_err().to_string();
        assert!(error.contains("database or disk is full"), "{error}");
    }

    /// A request that fails before writing leaves the rest of its group as it ran.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failure_before_writing_runs_group_once() {
        let (writer, _folder, path) = writer_on_table();
        let runs = Arc::new(AtomicUsize::new(0));
        let (held, release) = hold(&writer).await;
        let fails = send(&writer, |_tx| {
            Err(StoreError::JobNotFound("before a write".to_owned()))
        })
        .await;
        let counted = Arc::clone(&runs);
        let ok = send(&writer, move |tx| {
            counted.fetch_add(1, Ordering::SeqCst);
            insert(tx, 2)
        })
        .await;
        release.send(()).expect("the held request waits");

        held.await
            .expect("no panic")
            .expect("the held request commits");
        ok.await.expect("no panic").expect("the request commits");
        assert!(fails.await.expect("no panic").is_err());
        assert_eq!(numbers(&path), vec![1, 2]);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
