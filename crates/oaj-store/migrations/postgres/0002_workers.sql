-- Worker heartbeats, and an index to list the jobs that depend on a job in any state.

CREATE TABLE workers (
    id         TEXT    COLLATE "C" PRIMARY KEY,
    hostname   TEXT    NOT NULL,
    pid        BIGINT  NOT NULL,
    started_at BIGINT  NOT NULL,
    -- Time of the latest heartbeat; maintenance deletes workers silent for an hour.
    last_seen  BIGINT  NOT NULL,
    -- Jobs the worker held at its latest heartbeat.
    running    BIGINT  NOT NULL
);

CREATE INDEX workers_last_seen ON workers (last_seen);

CREATE INDEX job_dependencies_depends_on ON job_dependencies (depends_on_id, job_id);
