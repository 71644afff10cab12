-- The first schema of the oaj store. Times are milliseconds since the Unix epoch.

CREATE TABLE workflows (
    id            TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    -- The parsed semantic version, so that the highest version sorts first without parsing.
    version_major INTEGER NOT NULL,
    version_minor INTEGER NOT NULL,
    version_patch INTEGER NOT NULL,
    -- 1 for a release, 0 for a pre-release such as 1.0.0-rc.1, which sorts below its release.
    version_is_release INTEGER NOT NULL,
    document      TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (id, version)
) WITHOUT ROWID;

CREATE TABLE batches (
    id         TEXT    PRIMARY KEY NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE jobs (
    id                    TEXT    PRIMARY KEY NOT NULL,
    workflow_id           TEXT    NOT NULL,
    workflow_version      TEXT    NOT NULL,
    state                 TEXT    NOT NULL,
    priority              INTEGER NOT NULL,
    -- Priority::claim_key of the time the job was last queued: claims take the smallest first.
    claim_key             INTEGER NOT NULL,
    input                 TEXT    NOT NULL,
    result                TEXT,
    error                 TEXT,
    tags                  TEXT    NOT NULL,
    metadata              TEXT    NOT NULL,
    batch_id              TEXT    REFERENCES batches (id),
    -- A copy of job_dependencies for reading, as a JSON array of ids in the order given.
    depends_on            TEXT    NOT NULL,
    on_dependency_failure TEXT    NOT NULL,
    run_at                INTEGER,
    timeout_ms            INTEGER,
    control               TEXT,
    lease_owner           TEXT,
    lease_token           INTEGER NOT NULL DEFAULT 0,
    lease_expires_at      INTEGER,
    interruptions         INTEGER NOT NULL DEFAULT 0,
    idempotency_key       TEXT    UNIQUE,
    -- Hash of the request that created the job, compared when its idempotency key comes again.
    request_hash          TEXT,
    prompt_tokens         INTEGER NOT NULL DEFAULT 0,
    completion_tokens     INTEGER NOT NULL DEFAULT 0,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    started_at            INTEGER,
    finished_at           INTEGER,
    FOREIGN KEY (workflow_id, workflow_version) REFERENCES workflows (id, version)
);

-- Partial indexes keep finished jobs out of the paths that claim, promote and rescue, so those
-- stay fast however much history piles up.
CREATE INDEX jobs_queued ON jobs (claim_key, id) WHERE state = 'queued';
CREATE INDEX jobs_pending ON jobs (run_at) WHERE state = 'pending';
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (finished_at)
    WHERE state IN ('completed', 'failed', 'cancelled');
-- Listing filters, newest first.
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_workflow ON jobs (workflow_id, id);
CREATE INDEX jobs_batch ON jobs (batch_id, id) WHERE batch_id IS NOT NULL;

CREATE TABLE job_dependencies (
    job_id        TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    depends_on_id TEXT    NOT NULL,
    -- 1 once the dependency no longer holds the job back: it completed, or it failed or was
    -- cancelled and the job runs anyway.
    settled       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, position)
) WITHOUT ROWID;

CREATE INDEX job_dependencies_unsettled ON job_dependencies (depends_on_id) WHERE settled = 0;

CREATE TABLE step_runs (
    job_id            TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step_id           TEXT    NOT NULL,
    -- Fan-out item index, or -1 for the step itself, because NULL is never equal in a key.
    item              INTEGER NOT NULL,
    state             TEXT    NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    interruptions     INTEGER NOT NULL DEFAULT 0,
    output            TEXT,
    error             TEXT,
    items_total       INTEGER,
    next_attempt_at   INTEGER,
    decision_approved INTEGER,
    decision_by       TEXT,
    decision_comment  TEXT,
    decision_at       INTEGER,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (job_id, step_id, item)
);

CREATE TABLE attempts (
    id                INTEGER PRIMARY KEY,
    job_id            TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step_id           TEXT    NOT NULL,
    item              INTEGER NOT NULL,
    number            INTEGER NOT NULL,
    worker_id         TEXT    NOT NULL,
    lease_token       INTEGER NOT NULL,
    state             TEXT    NOT NULL,
    error             TEXT,
    log               TEXT    NOT NULL DEFAULT '',
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    started_at        INTEGER NOT NULL,
    finished_at       INTEGER
);

CREATE INDEX attempts_job ON attempts (job_id, id);

CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT    NOT NULL,
    job_id  TEXT    REFERENCES jobs (id) ON DELETE CASCADE,
    step_id TEXT,
    item    INTEGER,
    attempt INTEGER,
    data    TEXT    NOT NULL,
    at      INTEGER NOT NULL
);

CREATE INDEX events_job ON events (job_id, seq);

-- Jobs by state, kept up to date in the transaction of every change so that counting never
-- scans the jobs table.
CREATE TABLE job_counts (
    state TEXT    PRIMARY KEY NOT NULL,
    count INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO job_counts (state, count) VALUES
    ('created', 0), ('pending', 0), ('queued', 0), ('running', 0),
    ('paused', 0), ('completed', 0), ('failed', 0), ('cancelled', 0);
