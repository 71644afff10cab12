//! Errors returned by store operations.

/// The reasons a store operation fails.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The worker's lease on the job was taken by another worker or expired, so the write was
    /// rejected (fencing). The worker must stop working on the job.
    #[error("lease on job {job_id} was lost (token {token} is no longer current)")]
    LeaseLost {
        /// The job whose lease was lost.
        job_id: String,
        /// The token the worker held.
        token: i64,
    },
    /// No job has this id.
    #[error("job {0} not found")]
    JobNotFound(String),
    /// No workflow has this id and version.
    #[error("workflow {id} version {version} not found")]
    WorkflowNotFound {
        /// Workflow id.
        id: String,
        /// Version asked for, or `latest`.
        version: String,
    },
    /// A workflow with this id and version is stored with a different document. Versions are
    /// immutable: register a new version instead.
    #[error("workflow {id} version {version} already exists with a different document: register it under a new version")]
    WorkflowExistsWithDifferentDocument {
        /// Workflow id.
        id: String,
        /// Version.
        version: String,
    },
    /// A workflow version cannot be deleted because a stored job runs with it.
    #[error("workflow {id} version {version} is used by job {job_id}: delete its jobs first")]
    WorkflowInUse {
        /// Workflow id.
        id: String,
        /// Version.
        version: String,
        /// One job that uses it.
        job_id: String,
    },
    /// A workflow version is not a semantic version (such as `1.2.0`), so versions cannot be
    /// ordered.
    #[error(
        "workflow {id} version {version:?} is not a semantic version such as 1.2.0: {message}"
    )]
    WorkflowVersionInvalid {
        /// Workflow id.
        id: String,
        /// The version given.
        version: String,
        /// Why it does not parse.
        message: String,
    },
    /// A job with this idempotency key exists and was created by a different request.
    #[error("idempotency key {key:?} was already used by job {job_id} with a different request")]
    IdempotencyKeyReused {
        /// The key.
        key: String,
        /// The job that has it.
        job_id: String,
    },
    /// The operation does not apply to a job in its current state.
    #[error("job {job_id} is {state}: {message}")]
    JobStateConflict {
        /// The job.
        job_id: String,
        /// Its current state.
        state: oaj_core::JobState,
        /// What the caller asked and why it cannot happen.
        message: String,
    },
    /// A job dependency names a job that does not exist, or would create a cycle.
    #[error("invalid dependency: {0}")]
    DependencyInvalid(String),
    /// Adding a dependency would close a cycle in the dependency graph, so no job of the cycle
    /// could ever start. A job that depends on itself is a cycle of one.
    #[error("adding the dependency would create the cycle {}: remove one of these dependencies first", cycle.join(" -> "))]
    DependencyCycle {
        /// The job ids of the cycle, starting and ending with the job that would gain the
        /// dependency.
        cycle: Vec<String>,
    },
    /// The job does not depend on the named job, so there is no dependency to remove.
    #[error("job {job_id} does not depend on job {depends_on_id}")]
    DependencyNotFound {
        /// The job.
        job_id: String,
        /// The job named as its dependency.
        depends_on_id: String,
    },
    /// No step run matches, or it is not waiting for a decision.
    #[error("{}", approval_not_waiting(job_id, step_id.as_deref()))]
    ApprovalNotWaiting {
        /// The job.
        job_id: String,
        /// The step the decision named, or `None` when it named none.
        step_id: Option<String>,
    },
    /// No running attempt of the job has this id, so it cannot be finished (it ended already, or
    /// the id belongs to another job).
    #[error("attempt {attempt_id} of job {job_id} is not running")]
    AttemptNotRunning {
        /// The job.
        job_id: String,
        /// The attempt id given.
        attempt_id: i64,
    },
    /// No step was named, and more than one step of the job waits for approval.
    #[error("job {job_id} has several steps waiting for approval ({}): name one", step_ids.join(", "))]
    ApprovalStepAmbiguous {
        /// The job.
        job_id: String,
        /// The steps that wait.
        step_ids: Vec<String>,
    },
    /// The database file could not be opened: missing folder, not a database, or no permission.
    #[error("cannot open database {path}: {message}")]
    Open {
        /// Path of the file.
        path: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// The database is locked by another program for longer than the busy timeout.
    #[error("database is busy: another process holds a lock on it ({0})")]
    Busy(String),
    /// A stored value could not be read back, which means the file was changed by something else
    /// or is corrupt.
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
    /// The database server cannot be reached, or it ended the connection (a restart, a
    /// shutdown). The same call may succeed once the server is back.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database's disk is full. The failed call changed nothing, what was stored before
    /// stays, and the same call may succeed once space is freed.
    #[error("the store's disk is full ({0}): free space on it, then retry")]
    Full(String),
    /// A text value cannot be stored: PostgreSQL rejects the NUL character (`\u0000`) in text.
    #[error("invalid text: {0}")]
    TextInvalid(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(String),
    /// The store was shut down.
    #[error("the store is closed")]
    Closed,
}

fn approval_not_waiting(job_id: &str, step_id: Option<&str>) -> String {
    match step_id {
        Some(step_id) => format!("step {step_id} of job {job_id} is not waiting for approval"),
        None => format!("job {job_id} has no step waiting for approval"),
    }
}
