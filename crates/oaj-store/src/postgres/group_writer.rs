//! The group writer: one task that runs the worker writes (claims, lease renewals, attempts,
//! step runs, job ends) that are waiting at the same moment in one transaction. A store runs two:
//! one for claims and one for the other writes, so that a claim and the finishes of other jobs
//! run at once.
//!
//! With a transaction per call, every call paid its own commit, and because the event advisory
//! lock (see `tx.rs`) is held from the event insert through the commit, those commits and their
//! fsyncs ran one at a time. A group pays one commit for all its calls, and writes their counters
//! and events with one statement each. Each call runs in its own savepoint, so a call that fails
//! (a lost lease, a finished attempt) rolls back only its own changes. Callers get their replies
//! only after the commit, so no caller sees a change that could still be lost.
//!
//! At most two groups are open at once, on two connections. A group runs its calls while the group
//! ahead of it commits, and commits after it (see [`GroupTurn`]).
//!
//! A call that PostgreSQL aborts because of a deadlock or a serialization failure runs again in
//! the next group. Such a cycle needs two groups, in different processes or in the two writers of
//! one store, that lock each other's rows, such as the dependents of jobs that both finish. A
//! transaction per call could not build it, because each locked one job and then its dependents.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use deadpool_postgres::{Client, Pool};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::db::Db;
use super::errors::{error_copy, is_retryable};
use super::tx::PgTx;
use super::workflows::WorkflowCache;
use super::{claims, finish_batch, job_insert, worker_writes, Names};
use crate::error::StoreError;
use crate::model::{
    AttemptFinish, AttemptRecord, AttemptStart, ClaimParams, ClaimedJob, Control, JobFinish,
    JobNew, LeaseExtend, LeaseStatus, StepUpdate,
};

/// Calls run in one transaction at most. Each successful call's savepoint becomes a
/// subtransaction with its own id, and PostgreSQL keeps at most 64 of those per backend in shared
/// memory (`PGPROC_MAX_CACHED_SUBXIDS` in PostgreSQL 15). Beyond that, every other session's
/// snapshot has to look them up in `pg_subtrans`, which slows the whole server while the group is
/// open.
const GROUP_MAX: usize = 64;

/// Calls that may wait for the writer before callers are held back.
const QUEUE_CAPACITY: usize = 8192;

/// Maximum number of groups open at once, so that one commits while the next runs its calls.
const GROUPS_OPEN_MAX: usize = 2;

/// Times a call aborted by a deadlock or serialization failure runs again before its error is
/// returned.
const RETRIES_MAX: u32 = 3;

/// A worker write, with its parameters.
pub(crate) enum WriteOp {
    /// Inserts jobs, then claims in the same transaction (see `Store::job_insert_claim`).
    InsertClaim(Vec<JobNew>, Option<String>, ClaimParams),
    Claim(ClaimParams),
    LeaseExtend(LeaseExtend),
    AttemptStart(AttemptStart),
    AttemptFinish(AttemptFinish),
    AttemptRecord(AttemptStart, AttemptFinish),
    AttemptsRecord(Vec<AttemptRecord>),
    StepUpdate(StepUpdate),
    JobFinish(JobFinish),
}

/// The result of a [`WriteOp`], one variant for each kind of result.
pub(crate) enum WriteValue {
    InsertedClaimed(Vec<String>, Vec<ClaimedJob>),
    Claimed(Vec<ClaimedJob>),
    Leases(Vec<LeaseStatus>),
    AttemptId(i64),
    Control(Option<Control>),
    Done,
}

/// The channel that carries the result of one call.
type Reply = oneshot::Sender<Result<WriteValue, StoreError>>;

struct Request {
    op: WriteOp,
    reply: Reply,
    retries: u32,
}

/// The parts of the store that the writer task uses.
pub(crate) struct WriterShared {
    pub(crate) pool: Pool,
    pub(crate) names: Arc<Names>,
    pub(crate) workflows: Arc<WorkflowCache>,
    pub(crate) notify: Arc<Notify>,
}

/// The sending side of the group writer, shared by every caller of one store.
pub(crate) struct GroupWriter {
    sender: mpsc::Sender<Request>,
    task: JoinHandle<()>,
}

impl GroupWriter {
    /// Starts the writer task. It ends when the writer is dropped.
    pub(crate) fn start(shared: WriterShared) -> GroupWriter {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(run(shared, receiver));
        GroupWriter { sender, task }
    }

    /// Runs `op` in the next group and returns its result once the group has committed. When
    /// `op` fails, its changes are rolled back and the rest of the group stays.
    ///
    /// Panics when `op` panicked in the writer, because that is a broken invariant such as an
    /// illegal state move. The writer rolls that call back and keeps serving the others.
    pub(crate) async fn write(&self, op: WriteOp) -> Result<WriteValue, StoreError> {
        let (reply, receiver) = oneshot::channel();
        let request = Request {
            op,
            reply,
            retries: 0,
        };
        self.sender
            .send(request)
            .await
            .map_err(|_| StoreError::Closed)?;
        match receiver.await {
            Ok(outcome) => outcome,
            Err(_) => {
                panic!("the postgres group writer panicked on this call (see the panic above)")
            }
        }
    }
}

impl Drop for GroupWriter {
    fn drop(&mut self) {
        // Callers hold the store while they wait for a reply, so none is waiting now. Aborting
        // the task also aborts the groups it started, whose open transactions roll back.
        self.task.abort();
    }
}

async fn run(shared: WriterShared, mut receiver: mpsc::Receiver<Request>) {
    let shared = Arc::new(shared);
    let open = Arc::new(Semaphore::new(GROUPS_OPEN_MAX));
    let mut group = Vec::with_capacity(GROUP_MAX);
    let mut retry = Vec::new();
    // The group tasks end with this loop, so that dropping the writer leaves none running.
    let mut groups = JoinSet::new();
    let mut ahead: Option<oneshot::Receiver<()>> = None;
    loop {
        while groups.try_join_next().is_some() {}
        if retry.is_empty() {
            match receiver.recv().await {
                Some(request) => group.push(request),
                None => return,
            }
        } else {
            group.append(&mut retry);
        }
        while group.len() < GROUP_MAX {
            match receiver.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }

        // The group commits in a task of its own, so that the next group runs its calls on
        // another connection meanwhile. Each group holds a permit until it has committed, so
        // the next group starts only once this one's calls have run and the one ahead is done.
        let permit = Arc::clone(&open)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (calls_ran, ran) = oneshot::channel();
        let (done, next_ahead) = oneshot::channel::<()>();
        let turn = GroupTurn {
            ahead: ahead.replace(next_ahead),
            calls_ran,
        };
        let group_shared = Arc::clone(&shared);
        let calls = std::mem::take(&mut group);
        groups.spawn(async move {
            group_run_in_turn(&group_shared, calls, true, turn).await;
            // Dropped unsent, also when the group panics, so the next group's wait for this one
            // ends.
            drop(done);
            drop(permit);
        });
        // The sender is dropped unsent when the group failed or panicked before its calls had
        // run. Those calls got the group's error, or lost their replies, and run no more.
        retry = ran.await.unwrap_or_default();
    }
}

/// The place of a group in the writer's order. A group runs its calls while the group ahead
/// commits, and commits after it.
struct GroupTurn {
    /// Closes once the group ahead has committed, failed or panicked.
    ahead: Option<oneshot::Receiver<()>>,
    /// Receives the calls to run again in the next group, as soon as this group's calls have run.
    calls_ran: oneshot::Sender<Vec<Request>>,
}

/// The outcome of one call in the group.
enum CallOutcome {
    /// The call ran: its savepoint stays on success, and was rolled back on an error.
    Done(Result<WriteValue, StoreError>),
    /// The call was rolled back and should run again in the next group.
    Retry(StoreError),
    /// The call panicked and was rolled back.
    Panicked,
    /// A savepoint statement failed, so the whole transaction is lost.
    Broken(StoreError),
}

/// Runs one group like [`group_run_in_turn`], with no group ahead, and returns the calls to run
/// again. With `batches_finishes` false, every job finish runs alone, which the tests compare
/// with the batched path.
#[cfg(test)]
async fn group_run_with(
    shared: &WriterShared,
    group: Vec<Request>,
    batches_finishes: bool,
) -> Vec<Request> {
    let (calls_ran, ran) = oneshot::channel();
    let turn = GroupTurn {
        ahead: None,
        calls_ran,
    };
    group_run_in_turn(shared, group, batches_finishes, turn).await;
    ran.await.unwrap_or_default()
}

/// Runs one group in one transaction: its calls, then, once the group ahead has committed, its
/// counters, events and commit. Hands the calls to run again to `turn.calls_ran` as soon as the
/// calls have run, and replies to every other call once the outcome of the commit is known.
async fn group_run_in_turn(
    shared: &WriterShared,
    group: Vec<Request>,
    batches_finishes: bool,
    turn: GroupTurn,
) {
    // A group that fails before its calls have run drops `turn.calls_ran` unsent, and the calls
    // to run again get the group's error with the others.
    let GroupTurn { ahead, calls_ran } = turn;
    let connection = match shared.pool.get().await {
        Ok(client) => GroupConnection {
            client: Some(client),
        },
        Err(error) => return group_fail(group, Vec::new(), &error.into()),
    };
    // The first call's savepoint statement begins the transaction, in the call's round trip.
    let mut tx = PgTx::on(Db::Client(connection.client()));

    let mut replies = Vec::with_capacity(group.len());
    let mut retry = Vec::new();
    let mut stage = Stage::NotBegun;
    let mut requests = group.into_iter().peekable();
    while let Some(first) = requests.next() {
        let mut calls = vec![first];
        let (outcomes, next_stage) = if batches_finishes && finish_batchable(&calls[0]).is_some() {
            while let Some(next) = requests.next_if(|next| finish_joins(&calls, next)) {
                calls.push(next);
            }
            finishes_run(shared, &mut tx, &calls, stage).await
        } else {
            let outcome = call_run(shared, &mut tx, &calls[0].op, stage).await;
            let next_stage = Stage::after(&outcome);
            (vec![outcome], next_stage)
        };
        stage = next_stage;

        if let Err((error, mut rest)) = outcomes_file(calls, outcomes, &mut replies, &mut retry) {
            rest.extend(requests);
            rest.append(&mut retry);
            return group_fail(rest, replies, &error);
        }
    }
    // The calls to run again were rolled back to their savepoints (`outcomes_file` files only
    // those), so nothing of theirs waits for this group's commit. The send fails only when the
    // writer loop has stopped with the store.
    let _ = calls_ran.send(retry);

    // Counters and events wait for the group ahead, which holds the counter rows and the event
    // lock until its commit anyway. So each process commits its groups, and replies, in order.
    if let Some(ahead) = ahead {
        // The group ahead never sends, so the receive returns an error once that group is done.
        let _ = ahead.await;
    }
    let committed = match tx.finish_and_commit(&shared.names).await {
        Ok(committed) => committed,
        Err(error) => return group_fail(Vec::new(), replies, &error),
    };
    connection.release();
    for (reply, result) in replies {
        // The send fails only when the caller's task was cancelled. The change is committed
        // either way, so no receiver remains to report it to.
        let _ = reply.send(result);
    }
    if committed.wakes_workers {
        shared.notify.notify_waiters();
        shared.notify.notify_one();
    }
}

/// Files each call's outcome: its reply waits for the commit, or the call runs again in the next
/// group. When an outcome is [`CallOutcome::Broken`], returns its error with the calls that got
/// no outcome, that one included, because the transaction is lost.
fn outcomes_file(
    calls: Vec<Request>,
    outcomes: Vec<CallOutcome>,
    replies: &mut Vec<(Reply, Result<WriteValue, StoreError>)>,
    retry: &mut Vec<Request>,
) -> Result<(), (StoreError, Vec<Request>)> {
    let mut calls = calls.into_iter();
    for (request, outcome) in calls.by_ref().zip(outcomes) {
        match outcome {
            CallOutcome::Done(result) => replies.push((request.reply, result)),
            CallOutcome::Retry(error) if request.retries < RETRIES_MAX => {
                tracing::debug!(error = %error, "write rolled back; running it in the next group");
                retry.push(Request {
                    retries: request.retries + 1,
                    ..request
                });
            }
            CallOutcome::Retry(error) => replies.push((request.reply, Err(error))),
            // Dropping the reply makes the caller panic in turn.
            CallOutcome::Panicked => {}
            CallOutcome::Broken(error) => {
                let mut rest = vec![request];
                rest.extend(calls);
                return Err((error, rest));
            }
        }
    }
    assert!(
        calls.next().is_none(),
        "every call has an outcome unless one broke the transaction"
    );
    Ok(())
}

/// Returns the job finish of `request` when it can run in a batch of finishes.
fn finish_batchable(request: &Request) -> Option<&JobFinish> {
    match &request.op {
        WriteOp::JobFinish(finish) if finish_batch::is_batchable(finish) => Some(finish),
        _ => None,
    }
}

/// Reports whether `next` can join the batch of finishes `calls`: it is a batchable finish of
/// a job that no finish of the batch ends. A second finish of one job runs after the batch, so
/// that it reads the first one's changes, as it would in call order.
fn finish_joins(calls: &[Request], next: &Request) -> bool {
    let Some(finish) = finish_batchable(next) else {
        return false;
    };
    calls.iter().all(|call| {
        finish_batchable(call).is_some_and(|other| other.lease.job_id != finish.lease.job_id)
    })
}

/// Replies with `error` to every call of a group whose transaction failed: to the calls that had
/// run, whose changes are lost, and to those that had not.
fn group_fail(
    pending: Vec<Request>,
    replies: Vec<(Reply, Result<WriteValue, StoreError>)>,
    error: &StoreError,
) {
    tracing::error!(error = %error, calls = pending.len() + replies.len(), "write group failed");
    let senders = replies.into_iter().map(|(reply, _)| reply);
    for reply in senders.chain(pending.into_iter().map(|request| request.reply)) {
        // The send fails only when the caller's task was cancelled.
        let _ = reply.send(Err(error_copy(error)));
    }
}

/// Runs one call in a savepoint of its own, opened by the statements of `stage`. The savepoint
/// statement and the call's first statement are sent together, which saves a round trip per call.
async fn call_run(
    shared: &WriterShared,
    tx: &mut PgTx<'_>,
    op: &WriteOp,
    stage: Stage,
) -> CallOutcome {
    let db = tx.db();
    let mark = tx.mark();

    // `join!` polls the savepoint first, and each future sends its statement on its first poll,
    // so the savepoint reaches the server before the call's statements.
    let (savepoint, ran) = tokio::join!(
        db.batch_execute(stage.savepoint_statement()),
        CatchUnwind::new(op_run(shared, tx, op))
    );
    if let Err(error) = savepoint {
        return CallOutcome::Broken(error);
    }

    let error = match ran {
        Ok(Ok(value)) => return CallOutcome::Done(Ok(value)),
        Ok(Err(error)) => Some(error),
        Err(()) => None,
    };
    if let Err(error) = db.batch_execute("ROLLBACK TO call; RELEASE call").await {
        return CallOutcome::Broken(error);
    }
    tx.rollback_to(mark);

    match error {
        Some(error) if is_retryable(&error) => CallOutcome::Retry(error),
        Some(error) => CallOutcome::Done(Err(error)),
        None => CallOutcome::Panicked,
    }
}

/// Runs consecutive job finishes together (see `finish_batch.rs`) in one savepoint and returns
/// their outcomes, with the stage of the transaction after them. When the batch fails, it is
/// rolled back and each call runs alone. So every call gets the outcome it would get in a group
/// without batches, and a database error or a panic stays with the call that caused it.
async fn finishes_run(
    shared: &WriterShared,
    tx: &mut PgTx<'_>,
    calls: &[Request],
    stage: Stage,
) -> (Vec<CallOutcome>, Stage) {
    let finishes: Vec<&JobFinish> = calls
        .iter()
        .map(|call| finish_batchable(call).expect("the batch contains only batchable finishes"))
        .collect();
    let db = tx.db();
    let mark = tx.mark();

    let (savepoint, ran) = tokio::join!(
        db.batch_execute(stage.savepoint_statement()),
        CatchUnwind::new(finish_batch::job_finish_many(tx, &finishes))
    );
    if let Err(error) = savepoint {
        return (vec![CallOutcome::Broken(error)], stage);
    }
    match ran {
        Ok(Ok(results)) => {
            let outcomes = results
                .into_iter()
                .map(|result| CallOutcome::Done(result.map(|()| WriteValue::Done)))
                .collect();
            return (outcomes, Stage::SavepointOpen);
        }
        Ok(Err(error)) => {
            tracing::debug!(
                error = %error,
                calls = calls.len(),
                "batched job finishes failed; running each alone"
            );
        }
        Err(()) => {
            tracing::warn!(
                calls = calls.len(),
                "batched job finishes panicked; running each alone"
            );
        }
    }
    if let Err(error) = db.batch_execute("ROLLBACK TO call; RELEASE call").await {
        return (vec![CallOutcome::Broken(error)], stage);
    }
    tx.rollback_to(mark);

    let mut outcomes = Vec::with_capacity(calls.len());
    let mut stage = Stage::Begun;
    for call in calls {
        let outcome = call_run(shared, tx, &call.op, stage).await;
        stage = Stage::after(&outcome);
        let is_broken = matches!(outcome, CallOutcome::Broken(_));
        outcomes.push(outcome);
        if is_broken {
            break;
        }
    }
    (outcomes, stage)
}

/// The state of a group's transaction between two calls.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    /// No statement has run yet, so the next one begins the transaction.
    NotBegun,
    /// The transaction is open, with no savepoint.
    Begun,
    /// The previous call succeeded, and its savepoint is still open.
    SavepointOpen,
}

impl Stage {
    /// Returns the stage after a call with `outcome`: a call that succeeded leaves its savepoint
    /// open, and any other was rolled back to it and released it, or broke the transaction.
    fn after(outcome: &CallOutcome) -> Stage {
        match outcome {
            CallOutcome::Done(Ok(_)) => Stage::SavepointOpen,
            _ => Stage::Begun,
        }
    }

    /// Returns the statements that open a call's savepoint from this stage.
    fn savepoint_statement(self) -> &'static str {
        match self {
            Stage::NotBegun => "BEGIN; SAVEPOINT call",
            Stage::Begun => "SAVEPOINT call",
            Stage::SavepointOpen => "RELEASE call; SAVEPOINT call",
        }
    }
}

/// The pooled connection of one group. Dropped before the group has committed, it closes the
/// connection instead of returning it to the pool, so that the server rolls back whatever the
/// group left open and no later user of the pool finds a transaction in progress.
struct GroupConnection {
    client: Option<Client>,
}

impl GroupConnection {
    fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("the client stays until release or drop")
    }

    /// Returns the connection to the pool, once the group's transaction has ended.
    fn release(mut self) {
        drop(self.client.take());
    }
}

impl Drop for GroupConnection {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Client::take(client));
        }
    }
}

async fn op_run(
    shared: &WriterShared,
    tx: &mut PgTx<'_>,
    op: &WriteOp,
) -> Result<WriteValue, StoreError> {
    match op {
        WriteOp::InsertClaim(jobs, batch_id, params) => {
            let ids = job_insert::job_insert_many(tx, &shared.workflows, jobs, batch_id.as_deref())
                .await?;
            let claimed = claims::job_claim(tx, &shared.workflows, params).await?;
            Ok(WriteValue::InsertedClaimed(ids, claimed))
        }
        WriteOp::Claim(params) => claims::job_claim(tx, &shared.workflows, params)
            .await
            .map(WriteValue::Claimed),
        WriteOp::LeaseExtend(params) => claims::lease_extend(tx, params)
            .await
            .map(WriteValue::Leases),
        WriteOp::AttemptStart(start) => worker_writes::attempt_start(tx, start)
            .await
            .map(WriteValue::AttemptId),
        WriteOp::AttemptFinish(finish) => worker_writes::attempt_finish(tx, finish)
            .await
            .map(WriteValue::Control),
        WriteOp::AttemptRecord(start, finish) => worker_writes::attempt_record(tx, start, finish)
            .await
            .map(WriteValue::AttemptId),
        WriteOp::AttemptsRecord(records) => worker_writes::attempts_record(tx, records)
            .await
            .map(WriteValue::Control),
        WriteOp::StepUpdate(update) => worker_writes::step_update(tx, update)
            .await
            .map(|()| WriteValue::Done),
        WriteOp::JobFinish(finish) => worker_writes::job_finish(tx, finish)
            .await
            .map(|()| WriteValue::Done),
    }
}

/// A future that turns a panic while it is polled into `Err(())`, so that one call's panic does
/// not end the writer task and with it every later write.
struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> CatchUnwind<F> {
    fn new(inner: F) -> CatchUnwind<F> {
        CatchUnwind {
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

#[cfg(test)]
#[path = "group_writer_tests.rs"]
mod tests;
