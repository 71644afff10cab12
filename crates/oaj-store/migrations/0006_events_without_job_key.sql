-- Events keep their job id without a foreign key, as on PostgreSQL (its migration 0005). The key's
-- check looked the job up by its 36-character id for every event row, four rows per single-step
-- job in a drain, and made each multi-row insert keep a statement journal. The store deletes a
-- job's events itself, in the transaction that deletes the job. One writer runs every write, and
-- each request that adds an event of a job has read the job in its transaction, so no event can
-- arrive after its job is deleted.
--
-- SQLite cannot drop a constraint, so the table is copied. The copy keeps every sequence number,
-- and the table's entry in sqlite_sequence is copied too, so that numbers of deleted events are
-- never given out again.
CREATE TABLE events_copy (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT    NOT NULL,
    job_id  TEXT,
    step_id TEXT,
    item    INTEGER,
    attempt INTEGER,
    data    TEXT    NOT NULL,
    at      INTEGER NOT NULL
);
INSERT INTO events_copy (seq, kind, job_id, step_id, item, attempt, data, at)
    SELECT seq, kind, job_id, step_id, item, attempt, data, at FROM events ORDER BY seq;
DELETE FROM sqlite_sequence WHERE name = 'events_copy';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'events_copy', seq FROM sqlite_sequence WHERE name = 'events';
DROP TABLE events;
ALTER TABLE events_copy RENAME TO events;
CREATE INDEX events_job ON events (job_id, seq);
