-- The partial index of finished jobs named its states with `state IN (...)`. SQLite evaluates an
-- IN list of three or more values against a temporary b-tree, and it evaluated that condition
-- for the old and the new row on every insert and update of a job: two temporary b-trees, each
-- with its own page cache, for every claim and every finish. `finished_at` is set exactly when a
-- job is in a final state (`job_move` and `job_insert` set it only then), so the condition below
-- selects the same rows and costs one comparison. The pruning query's `finished_at < ?` implies
-- it, so that query keeps using the index.
DROP INDEX jobs_finished;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
