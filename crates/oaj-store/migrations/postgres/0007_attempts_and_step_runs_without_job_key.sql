-- Attempts and step runs keep their job id without a foreign key, as events do since migration
-- 0005. Each key's check looked up and locked the job's row once per inserted row, which took
-- about 8% of the server's time in a one-worker drain. The store deletes these rows itself, in
-- the transaction that deletes their job. Every insert of an attempt or a step run follows the
-- lease check of its job, which locks the job's row while the job is running. A delete takes only
-- jobs that have ended, and waits for that lock, so no row can arrive after its job is deleted.
ALTER TABLE attempts DROP CONSTRAINT attempts_job_id_fkey;
ALTER TABLE step_runs DROP CONSTRAINT step_runs_job_id_fkey;
