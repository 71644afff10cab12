-- Worker heartbeats, and an index to list the jobs that depend on a job in any state.

CREATE TABLE workers (
    id         TEXT    PRIMARY KEY NOT NULL,
    hostname   TEXT    NOT NULL,
    pid        INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    -- Time of the latest heartbeat; maintenance deletes workers silent for an hour.
    last_seen  INTEGER NOT NULL,
    -- Jobs the worker held at its latest heartbeat.
    running    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX workers_last_seen ON workers (last_seen);

CREATE INDEX job_dependencies_depends_on ON job_dependencies (depends_on_id, job_id);
