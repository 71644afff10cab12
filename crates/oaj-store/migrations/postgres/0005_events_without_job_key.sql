-- Events keep their job id without a foreign key. The key's check looked up and locked the job's
-- row for each event row, five per single-step job, and took about half the time of the event
-- insert in a drain. The store deletes a job's events itself, in the transaction that deletes the
-- job. Every event of a job is written by a transaction that has inserted, updated or locked the
-- job's row, and a delete waits for that lock, so no event can arrive after its job is deleted.
ALTER TABLE events DROP CONSTRAINT events_job_id_fkey;
