//! Schema migrations: numbered SQL files embedded in the binary and applied at open.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::connection::open_error;
use crate::error::StoreError;

/// Every migration, in order; the number of each is its position plus one.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_initial.sql"),
    include_str!("../../migrations/0002_workers.sql"),
    include_str!("../../migrations/0003_job_list_created.sql"),
    include_str!("../../migrations/0004_jobs_finished_not_null.sql"),
    include_str!("../../migrations/0005_list_indexes_by_creation.sql"),
    include_str!("../../migrations/0006_events_without_job_key.sql"),
];

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY NOT NULL,
    applied_at INTEGER NOT NULL
)";
const SELECT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";
const INSERT_VERSION: &str = "INSERT INTO schema_migrations (version, applied_at)
    VALUES (?1, CAST(unixepoch('subsec') * 1000 AS INTEGER))";

/// Applies the migrations the file lacks, all in one transaction, so that a failed upgrade leaves
/// the file as it was.
///
/// Fails with [`StoreError::Open`] when the file was written by a newer oaj, whose schema this
/// build does not know.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| open_error(path, e))?;
    tx.execute(CREATE_TABLE, [])
        .map_err(|e| open_error(path, e))?;
    let stored: i64 = tx
        .query_row(SELECT_VERSION, [], |row| row.get(0))
        .map_err(|e| open_error(path, e))?;
    let known = i64::try_from(MIGRATIONS.len()).expect("the migration list is short");
    if stored > known {
        return Err(StoreError::Open {
            path: path.display().to_string(),
            message: format!(
                "the file has schema version {stored}, but this build of oaj knows versions up \
                 to {known}: upgrade oaj to open it"
            ),
        });
    }

    let applied = usize::try_from(stored).map_err(|_| StoreError::Open {
        path: path.display().to_string(),
        message: format!(
            "schema_migrations contains the invalid version {stored}: the file is corrupt"
        ),
    })?;
    for (version, sql) in (1..).zip(MIGRATIONS).skip(applied) {
        tx.execute_batch(sql).map_err(|e| open_error(path, e))?;
        tx.execute(INSERT_VERSION, [version])
            .map_err(|e| open_error(path, e))?;
        tracing::info!(version, "applied schema migration");
    }
    tx.commit().map_err(|e| open_error(path, e))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sqlite::connection;

    /// Opens a new migrated file, runs `explain` (an `EXPLAIN` or `EXPLAIN QUERY PLAN` statement)
    /// and returns the text of `column` in each row: the opcode of `EXPLAIN` (1), or the step of
    /// a query plan (3).
    fn explained(explain: &str, column: usize) -> Vec<String> {
        let folder = tempfile::tempdir().expect("temporary folder");
        let path = folder.path().join("oaj.db");
        let mut conn = connection::open_writer(&path, Duration::from_secs(1)).expect("open");
        migrate(&mut conn, &path).expect("migrate");
        let mut statement = conn.prepare(explain).expect("the statement prepares");
        // EXPLAIN does not run the statement, and our plans do not depend on bound values, so
        // NULL for every parameter is enough.
        let nulls = vec![rusqlite::types::Null; statement.parameter_count()];
        let rows = statement
            .query_map(rusqlite::params_from_iter(nulls), |row| row.get(column))
            .expect("the explanation runs")
            .map(|row| row.expect("a row of the explanation"))
            .collect();
        rows
    }

    #[test]
    fn claim_reads_queued_index_in_order() {
        let claim = crate::sqlite::claims::SELECT_QUEUED;
        let plan = explained(&format!("EXPLAIN QUERY PLAN {claim}"), 3);
        assert_eq!(plan.len(), 1, "{plan:?}");
        assert!(plan[0].contains("INDEX jobs_queued"), "{plan:?}");
    }

    #[test]
    fn job_updates_build_no_temporary_btree() {
        for sql in [
            crate::sqlite::job_moves::UPDATE_MOVE,
            crate::sqlite::claims::UPDATE_CLAIM,
        ] {
            let opcodes = explained(&format!("EXPLAIN {sql}"), 1);
            assert!(opcodes.iter().any(|op| op == "IdxInsert"), "{opcodes:?}");
            assert!(
                !opcodes.iter().any(|op| op == "OpenEphemeral"),
                "{sql}: {opcodes:?}"
            );
        }
    }

    #[test]
    fn pruning_reads_finished_index() {
        let plan = explained(
            &format!(
                "EXPLAIN QUERY PLAN {}",
                crate::sqlite::maintenance::DELETE_EXPIRED
            ),
            3,
        );
        assert!(
            plan.iter().any(|step| step.contains("INDEX jobs_finished")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
    }

    #[test]
    fn events_copy_keeps_sequence_numbers() {
        let folder = tempfile::tempdir().expect("temporary folder");
        let path = folder.path().join("oaj.db");
        let mut conn = connection::open_writer(&path, Duration::from_secs(1)).expect("open");
        // A file at version 5, with events whose newest one was deleted: the next event must
        // not take its number.
        conn.execute(CREATE_TABLE, [])
            .expect("create schema_migrations");
        for (version, sql) in (1..).zip(&MIGRATIONS[..5]) {
            conn.execute_batch(sql).expect("an old migration");
            conn.execute(INSERT_VERSION, [version]).expect("record it");
        }
        conn.execute_batch(
            "INSERT INTO workflows VALUES ('w', '1.0.0', 1, 0, 0, 1, '{}', 0);
             INSERT INTO jobs (id, workflow_id, workflow_version, state, priority, claim_key,
                 input, tags, metadata, depends_on, on_dependency_failure, created_at, updated_at)
                 VALUES ('j', 'w', '1.0.0', 'queued', 2, 0, '{}', '[]', '{}', '[]', 'fail', 0, 0);
             INSERT INTO events (kind, job_id, data, at) VALUES ('job.created', 'j', '{}', 0);
             INSERT INTO events (kind, job_id, data, at) VALUES ('job.running', 'j', '{}', 1);
             INSERT INTO events (kind, job_id, data, at) VALUES ('job.completed', 'j', '{}', 2);
             DELETE FROM events WHERE seq = 3;",
        )
        .expect("fill");

        migrate(&mut conn, &path).expect("migrate");
        let remaining: Vec<(i64, String)> = conn
            .prepare("SELECT seq, kind FROM events ORDER BY seq")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect()
            })
            .expect("read events");
        assert_eq!(
            remaining,
            [(1, "job.created".to_owned()), (2, "job.running".to_owned())]
        );
        let seq: i64 = conn
            .query_row(
                "INSERT INTO events (kind, job_id, data, at) VALUES ('job.deleted', 'gone', '{}', 3)
                 RETURNING seq",
                [],
                |row| row.get(0),
            )
            .expect("an event of a job that does not exist is stored");
        assert_eq!(seq, 4);
        let keys: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_foreign_key_list('events')",
                [],
                |row| row.get(0),
            )
            .expect("read the foreign keys");
        assert_eq!(keys, 0);
    }
}
