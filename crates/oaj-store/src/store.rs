//! The `Store` trait: every read and write of oaj's durable state goes through it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use oaj_core::JobState;
use tokio::sync::{broadcast, Notify};

use crate::error::StoreError;
use crate::model::*;

/// Durable storage of workflows, jobs, step runs, attempts and events.
///
/// Contract shared by every implementation, checked by the conformance suite:
/// - A method returns only after its change is durable (committed with a synced log).
/// - Every state change writes its event in the same transaction.
/// - Worker writes (`attempt_*`, `step_update`, `job_finish`) carry a [`Lease`]. When the lease's
///   token is no longer the job's current token, or the job is no longer running, the write is
///   rejected with [`StoreError::LeaseLost`] and nothing is changed.
/// - Job state changes follow `oaj_core::transition`; a move it rejects is a bug and panics.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a workflow version. Storing the same document again is a no-op; a different document
    /// under a stored id and version is [`StoreError::WorkflowExistsWithDifferentDocument`].
    async fn workflow_insert(&self, record: WorkflowRecord)
        -> Result<WorkflowInserted, StoreError>;

    /// Fetches a workflow version, or the highest version (semver order) when `version` is `None`.
    async fn workflow_get(
        &self,
        id: &str,
        version: Option<&str>,
    ) -> Result<Option<WorkflowRecord>, StoreError>;

    /// Lists the highest version of every workflow, by id.
    async fn workflow_list(&self) -> Result<Vec<WorkflowRecord>, StoreError>;

    /// Lists every stored version of a workflow, highest first (same order as
    /// [`Store::workflow_get`] uses for the latest). Empty when the id is unknown.
    async fn workflow_versions(&self, id: &str) -> Result<Vec<WorkflowRecord>, StoreError>;

    /// Deletes one workflow version. Fails with [`StoreError::WorkflowNotFound`] when it is not
    /// stored, and with [`StoreError::WorkflowInUse`] while any stored job runs with it.
    async fn workflow_delete(&self, id: &str, version: &str) -> Result<(), StoreError>;

    /// Inserts jobs in one transaction and returns their ids in order. A job whose dependencies
    /// have not all completed, or whose `run_at` is in the future, is pending; others are queued.
    /// A dependency that already failed or was cancelled fails the new job at once (unless it asks
    /// to run anyway). With `batch_id`, the jobs form a batch of that id. A job whose idempotency
    /// key is stored returns the stored job's id when the request matches, and
    /// [`StoreError::IdempotencyKeyReused`] when it does not.
    async fn job_insert_many(
        &self,
        jobs: Vec<JobNew>,
        batch_id: Option<String>,
    ) -> Result<Vec<String>, StoreError>;

    /// Inserts jobs as [`Store::job_insert_many`] does, then claims as [`Store::job_claim`] does,
    /// and returns the ids of the inserted jobs and the claimed jobs. The claim may take any
    /// queued job in claim order, not only the new ones. A worker in the submitting process uses
    /// it to start new jobs without waiting for a second commit.
    ///
    /// The default runs the two calls one after the other, in two transactions. An implementation
    /// may run both in one.
    async fn job_insert_claim(
        &self,
        jobs: Vec<JobNew>,
        batch_id: Option<String>,
        claim: ClaimParams,
    ) -> Result<(Vec<String>, Vec<ClaimedJob>), StoreError> {
        let ids = self.job_insert_many(jobs, batch_id).await?;
        let claimed = self.job_claim(claim).await?;
        Ok((ids, claimed))
    }

    /// Fetches one job.
    async fn job_get(&self, id: &str) -> Result<Option<Job>, StoreError>;

    /// Lists jobs newest first (by creation time, then id), with filters and a cursor: the jobs
    /// created before the job `filter.before_id`, which must exist.
    ///
    /// It is [`Store::job_query`] in [`JobSort::CreatedDesc`] order, so that both lists read the
    /// same indexes and a job's state changes update no index kept for this list alone.
    async fn job_list(&self, filter: JobFilter) -> Result<Vec<Job>, StoreError> {
        let after = match &filter.before_id {
            Some(id) => {
                let job = self
                    .job_get(id)
                    .await?
                    .ok_or_else(|| StoreError::JobNotFound(id.clone()))?;
                Some(JobCursor::after(&job, JobSort::CreatedDesc))
            }
            None => None,
        };
        let query = JobQuery {
            states: filter.states,
            workflow_id: filter.workflow_id,
            batch_id: filter.batch_id,
            sort: JobSort::CreatedDesc,
            after,
            limit: filter.limit,
            ..JobQuery::default()
        };
        self.job_query(query).await
    }

    /// Lists jobs matching `query` in its order, starting after its cursor. Paging with
    /// [`JobCursor::after`] of each page's last job neither skips nor repeats a job, because every
    /// [`JobSort`] orders by keys that never change.
    async fn job_query(&self, query: JobQuery) -> Result<Vec<Job>, StoreError>;

    /// Counts queued jobs by priority; priorities with no queued job are absent.
    async fn queue_depth(&self) -> Result<BTreeMap<oaj_core::Priority, u64>, StoreError>;

    /// Counts jobs by state, from counters kept up to date on every change.
    async fn job_counts(&self) -> Result<BTreeMap<JobState, u64>, StoreError>;

    /// Checks that the store can serve requests now, for a readiness probe. The default reads the
    /// job counters; a store adds checks of its own.
    async fn ready_check(&self) -> Result<(), StoreError> {
        self.job_counts().await.map(drop)
    }

    /// Applies a user action and returns the job afterwards. On a running job, cancel and pause
    /// set [`Job::control`] for the worker to act on; elsewhere they take effect at once. Retry
    /// resets failed and cancelled step runs to pending and keeps completed ones.
    async fn job_action(&self, id: &str, action: JobAction, now: i64) -> Result<Job, StoreError>;

    /// Makes `job_id` depend on `depends_on_id` and returns the job afterwards. Adding a stored
    /// dependency again is a no-op.
    ///
    /// The dependency takes effect as at insert: a completed dependency is recorded settled; a
    /// failed or cancelled one fails the job unless it runs anyway; otherwise a queued job moves
    /// back to pending. Writes a `job.dependency_added` event.
    ///
    /// Fails with [`StoreError::JobNotFound`] for an unknown id, with
    /// [`StoreError::JobStateConflict`] when the job is running or has ended, and with
    /// [`StoreError::DependencyCycle`] when `depends_on_id` already depends on `job_id`, directly
    /// or through other jobs, or is `job_id` itself.
    async fn job_dependency_add(&self, change: DependencyChange) -> Result<Job, StoreError>;

    /// Removes the dependency of `job_id` on `depends_on_id` and returns the job afterwards. A
    /// pending job whose other dependencies are all settled and whose `run_at` has come is queued.
    /// Writes a `job.dependency_removed` event.
    ///
    /// Fails with [`StoreError::JobNotFound`] for an unknown job, with
    /// [`StoreError::JobStateConflict`] when the job is running or has ended, and with
    /// [`StoreError::DependencyNotFound`] when the job does not depend on `depends_on_id`.
    async fn job_dependency_remove(&self, change: DependencyChange) -> Result<Job, StoreError>;

    /// Lists the jobs that depend on `job_id`, by id. Fails with [`StoreError::JobNotFound`]
    /// when the job is not stored.
    async fn job_dependents(&self, job_id: &str) -> Result<Vec<Job>, StoreError>;

    /// Deletes a job that has ended, with its step runs, attempts and events.
    async fn job_delete(&self, id: &str) -> Result<(), StoreError>;

    /// Lists a job's step runs, by step id then item.
    async fn step_run_list(&self, job_id: &str) -> Result<Vec<StepRun>, StoreError>;

    /// Lists a job's attempts, oldest first.
    async fn attempt_list(&self, job_id: &str) -> Result<Vec<Attempt>, StoreError>;

    /// Lists events in sequence order.
    async fn event_list(&self, filter: EventFilter) -> Result<Vec<Event>, StoreError>;

    /// Records an approval decision for a step that is waiting, and queues the job again so that
    /// a worker acts on it.
    async fn approval_decide(&self, decide: ApprovalDecide) -> Result<(), StoreError>;

    /// Claims up to `limit` queued jobs, highest priority first with ageing, FIFO inside a
    /// priority, and gives each a new lease.
    async fn job_claim(&self, params: ClaimParams) -> Result<Vec<ClaimedJob>, StoreError>;

    /// Renews leases and reports, for each, whether it is still held and any user request.
    async fn lease_extend(&self, params: LeaseExtend) -> Result<Vec<LeaseStatus>, StoreError>;

    /// Records the start of an attempt and returns its id. Fenced by the lease.
    async fn attempt_start(&self, start: AttemptStart) -> Result<i64, StoreError>;

    /// Records the end of an attempt and the new state of its step run. Fenced by the lease.
    /// Returns the request (cancel or pause) pending on the job, so that the worker honours it
    /// before it starts another attempt instead of waiting for its next lease renewal.
    async fn attempt_finish(&self, finish: AttemptFinish) -> Result<Option<Control>, StoreError>;

    /// Records a whole attempt, its start and its end, and returns its id. Made for agents that
    /// finish inside the engine without effects elsewhere, whose attempt needs no record before
    /// the call. `finish.attempt_id` is ignored. Fenced by the lease.
    ///
    /// The default calls [`Store::attempt_start`] then [`Store::attempt_finish`], two writes. An
    /// implementation may do both in one transaction.
    async fn attempt_record(
        &self,
        start: AttemptStart,
        mut finish: AttemptFinish,
    ) -> Result<i64, StoreError> {
        let id = self.attempt_start(start).await?;
        finish.attempt_id = id;
        self.attempt_finish(finish).await?;
        Ok(id)
    }

    /// Records whole attempts of one job, in order, and returns the request (cancel or pause)
    /// pending on the job. Each record is fenced by its lease, and a lost lease rejects them all.
    ///
    /// The default calls [`Store::attempt_record`] for each record. An implementation may write
    /// them all in one transaction.
    async fn attempts_record(
        &self,
        records: Vec<AttemptRecord>,
    ) -> Result<Option<Control>, StoreError> {
        for record in records {
            self.attempt_record(record.start, record.finish).await?;
        }
        Ok(None)
    }

    /// Changes a step run without an attempt (skip, fan-out start, gather, approval wait).
    /// Fenced by the lease.
    async fn step_update(&self, update: StepUpdate) -> Result<(), StoreError>;

    /// Records `finish.attempts`, then ends the worker's hold on the job and releases the lease,
    /// all in one transaction. A completed, failed or cancelled job settles its dependents in
    /// the same transaction. Fenced by the lease.
    async fn job_finish(&self, finish: JobFinish) -> Result<(), StoreError>;

    /// Stores a worker's heartbeat, inserting the worker on its first one.
    async fn worker_heartbeat(&self, beat: WorkerBeat) -> Result<(), StoreError>;

    /// Lists the workers seen in the [`WORKER_FORGET_MS`] before `now`, by id.
    async fn worker_list(&self, now: i64) -> Result<Vec<WorkerRecord>, StoreError>;

    /// Runs one maintenance pass: rescues expired leases, promotes pending jobs whose time has
    /// come, deletes finished jobs past retention and workers not seen for
    /// [`WORKER_FORGET_MS`], each in bounded batches.
    async fn maintenance(&self, params: MaintenanceParams)
        -> Result<MaintenanceReport, StoreError>;

    /// Returns the notifier woken when jobs may have become claimable in this process (insert,
    /// promote, resume, retry, approval). Other processes' changes are found by polling.
    fn work_notify(&self) -> Arc<Notify>;

    /// Subscribes to events committed by this process, in sequence order. A subscriber that
    /// falls behind misses events and should read them back with [`Store::event_list`].
    fn event_subscribe(&self) -> broadcast::Receiver<Event>;
}
