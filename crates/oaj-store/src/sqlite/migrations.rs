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
}
