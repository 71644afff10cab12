-- Indexes for the job list in creation order (`job_query` with the default sort, newest first),
-- so that the newest page of one state, or of all jobs, is read from an index instead of sorting
-- every matching row. The same indexes as SQLite's migration 0003.
-- The list by id (`job_list`) keeps using jobs_state.
CREATE INDEX jobs_state_created ON jobs (state, created_at, id);
CREATE INDEX jobs_created ON jobs (created_at, id);
