-- The first PostgreSQL schema of the oaj store: the same tables as the SQLite schema, with
-- native integer and boolean types. Times are milliseconds since the Unix epoch. JSON values are
-- stored as text, so that documents and results read back byte for byte as they were written.

CREATE TABLE workflows (
    id                 TEXT    NOT NULL,
    version            TEXT    NOT NULL,
    -- The parsed semantic version, so that the highest version sorts first without parsing.
    version_major      BIGINT  NOT NULL,
    version_minor      BIGINT  NOT NULL,
    version_patch      BIGINT  NOT NULL,
    -- False for a pre-release such as 1.0.0-rc.1, which sorts below its release.
    version_is_release BOOLEAN NOT NULL,
    document           TEXT    NOT NULL,
    created_at         BIGINT  NOT NULL,
    PRIMARY KEY (id, version)
);

CREATE TABLE batches (
    id         TEXT   PRIMARY KEY,
    created_at BIGINT NOT NULL
);

-- Job ids compare byte by byte (COLLATE "C"), as in SQLite, so that UUIDv7 ids sort by creation
-- time whatever the database's default collation.
CREATE TABLE jobs (
    id                    TEXT    COLLATE "C" PRIMARY KEY,
    workflow_id           TEXT    NOT NULL,
    workflow_version      TEXT    NOT NULL,
    state                 TEXT    NOT NULL,
    priority              BIGINT  NOT NULL,
    -- Priority::claim_key of the time the job was last queued: claims take the smallest first.
    claim_key             BIGINT  NOT NULL,
    input                 TEXT    NOT NULL,
    result                TEXT,
    error                 TEXT,
    tags                  TEXT    NOT NULL,
    metadata              TEXT    NOT NULL,
    batch_id              TEXT    REFERENCES batches (id),
    -- A copy of job_dependencies for reading, as a JSON array of ids in the order given.
    depends_on            TEXT    NOT NULL,
    on_dependency_failure TEXT    NOT NULL,
    run_at                BIGINT,
    timeout_ms            BIGINT,
    control               TEXT,
    lease_owner           TEXT,
    lease_token           BIGINT  NOT NULL DEFAULT 0,
    lease_expires_at      BIGINT,
    interruptions         BIGINT  NOT NULL DEFAULT 0,
    idempotency_key       TEXT    UNIQUE,
    -- Hash of the request that created the job, compared when its idempotency key comes again.
    request_hash          TEXT,
    prompt_tokens         BIGINT  NOT NULL DEFAULT 0,
    completion_tokens     BIGINT  NOT NULL DEFAULT 0,
    created_at            BIGINT  NOT NULL,
    updated_at            BIGINT  NOT NULL,
    started_at            BIGINT,
    finished_at           BIGINT,
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
    job_id        TEXT    COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position      BIGINT  NOT NULL,
    depends_on_id TEXT    NOT NULL,
    -- True once the dependency no longer holds the job back: it completed, or it failed or was
    -- cancelled and the job runs anyway.
    settled       BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (job_id, position)
);

CREATE INDEX job_dependencies_unsettled ON job_dependencies (depends_on_id) WHERE NOT settled;

CREATE TABLE step_runs (
    job_id            TEXT    COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step_id           TEXT    NOT NULL,
    -- Fan-out item index, or -1 for the step itself, because NULL is never equal in a key.
    item              BIGINT  NOT NULL,
    state             TEXT    NOT NULL,
    attempts          BIGINT  NOT NULL DEFAULT 0,
    interruptions     BIGINT  NOT NULL DEFAULT 0,
    output            TEXT,
    error             TEXT,
    items_total       BIGINT,
    next_attempt_at   BIGINT,
    decision_approved BOOLEAN,
    decision_by       TEXT,
    decision_comment  TEXT,
    decision_at       BIGINT,
    updated_at        BIGINT  NOT NULL,
    PRIMARY KEY (job_id, step_id, item)
);

CREATE TABLE attempts (
    id                BIGSERIAL PRIMARY KEY,
    job_id            TEXT    COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step_id           TEXT    NOT NULL,
    item              BIGINT  NOT NULL,
    number            BIGINT  NOT NULL,
    worker_id         TEXT    NOT NULL,
    lease_token       BIGINT  NOT NULL,
    state             TEXT    NOT NULL,
    error             TEXT,
    log               TEXT    NOT NULL DEFAULT '',
    prompt_tokens     BIGINT  NOT NULL DEFAULT 0,
    completion_tokens BIGINT  NOT NULL DEFAULT 0,
    started_at        BIGINT  NOT NULL,
    finished_at       BIGINT
);

CREATE INDEX attempts_job ON attempts (job_id, id);

-- Event rows are inserted only while holding the event advisory lock, right before commit, so
-- sequence numbers become visible in increasing order (see the postgres module's events.rs).
CREATE TABLE events (
    seq     BIGSERIAL PRIMARY KEY,
    kind    TEXT   NOT NULL,
    job_id  TEXT   COLLATE "C" REFERENCES jobs (id) ON DELETE CASCADE,
    step_id TEXT,
    item    BIGINT,
    attempt BIGINT,
    data    TEXT   NOT NULL,
    at      BIGINT NOT NULL
);

CREATE INDEX events_job ON events (job_id, seq);

-- Jobs by state, kept up to date in the transaction of every change so that counting never
-- scans the jobs table.
CREATE TABLE job_counts (
    state TEXT   PRIMARY KEY,
    count BIGINT NOT NULL
);

INSERT INTO job_counts (state, count) VALUES
    ('created', 0), ('pending', 0), ('queued', 0), ('running', 0),
    ('paused', 0), ('completed', 0), ('failed', 0), ('cancelled', 0);
