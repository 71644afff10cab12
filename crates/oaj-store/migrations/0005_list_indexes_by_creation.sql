-- The job list by id (`job_list`) now reads in creation order, as `job_query` does, so no query
-- reads the (state, id) index any more. Every claim and every end of a job still updated it, twice
-- each, with a comparison of 36-character ids at each step down the b-tree: about 6% of the
-- writer's instructions in a drain. The workflow and batch indexes take the creation time after
-- their first column, so that a list filtered by one of them reads the index in order instead of
-- sorting every matching job.
DROP INDEX jobs_state;
DROP INDEX jobs_workflow;
CREATE INDEX jobs_workflow_created ON jobs (workflow_id, created_at, id);
DROP INDEX jobs_batch;
CREATE INDEX jobs_batch_created ON jobs (batch_id, created_at, id) WHERE batch_id IS NOT NULL;
