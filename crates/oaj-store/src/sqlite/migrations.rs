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

    #[test]
    fn claim_reads_queued_index_in_order() {
        let folder = tempfile::tempdir().expect("temporary folder");
        let path = folder.path().join("oaj.db");
        let mut conn = connection::open_writer(&path, Duration::from_secs(1)).expect("open");
        migrate(&mut conn, &path).expect("migrate");
        // The statement the claim runs, from sqlite/claims.rs.
        let sql = "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE state = 'queued' \
                   ORDER BY claim_key, id LIMIT ?1";
        let plan: Vec<String> = conn
            .prepare(sql)
            .expect("the claim prepares")
            .query_map([1000], |row| row.get(3))
            .expect("the plan runs")
            .map(|step| step.expect("a plan step"))
            .collect();
        assert_eq!(plan.len(), 1, "{plan:?}");
        assert!(plan[0].contains("INDEX jobs_queued"), "{plan:?}");
    }

    /// Opens a migrated file and returns the opcodes SQLite compiles `sql` to.
    fn opcodes(sql: &str) -> Vec<String> {
        let folder = tempfile::tempdir().expect("temporary folder");
        let path = folder.path().join("oaj.db");
        let mut conn = connection::open_writer(&path, Duration::from_secs(1)).expect("open");
        migrate(&mut conn, &path).expect("migrate");
        let mut statement = conn
            .prepare(&format!("EXPLAIN {sql}"))
            .expect("the statement prepares");
        // EXPLAIN does not run the program, so NULL for every parameter is enough.
        let nulls = vec![rusqlite::types::Null; statement.parameter_count()];
        let opcodes = statement
            .query_map(rusqlite::params_from_iter(nulls), |row| row.get(1))
            .expect("the program lists")
            .map(|opcode| opcode.expect("an opcode"))
            .collect();
        opcodes
    }

    #[test]
    fn job_updates_build_no_temporary_btree() {
        for sql in [
            crate::sqlite::job_moves::UPDATE_MOVE,
            crate::sqlite::claims::UPDATE_CLAIM,
        ] {
            let opcodes = opcodes(sql);
            assert!(opcodes.iter().any(|op| op == "IdxInsert"), "{opcodes:?}");
            assert!(
                !opcodes.iter().any(|op| op == "OpenEphemeral"),
                "{sql}: {opcodes:?}"
            );
        }
    }

    #[test]
    fn pruning_reads_finished_index() {
        let sql = format!(
            "EXPLAIN QUERY PLAN {}",
            crate::sqlite::maintenance::DELETE_EXPIRED
        );
        let folder = tempfile::tempdir().expect("temporary folder");
        let path = folder.path().join("oaj.db");
        let mut conn = connection::open_writer(&path, Duration::from_secs(1)).expect("open");
        migrate(&mut conn, &path).expect("migrate");
        let plan: Vec<String> = conn
            .prepare(&sql)
            .expect("the pruning prepares")
            .query_map([0, 100], |row| row.get(3))
            .expect("the plan runs")
            .map(|step| step.expect("a plan step"))
            .collect();
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
