//! Opening SQLite connections with the settings every oaj connection needs.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::error::StoreError;

/// Statements kept prepared per connection; more than the store has, so none is evicted.
const STATEMENT_CACHE_CAPACITY: usize = 128;

/// Opens the connection that writes: creates the file if needed and turns on WAL, so that
/// readers run beside the writer.
pub(crate) fn open_writer(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| open_error(path, e))?;
    let mode = journal_mode_wal(&conn, busy_timeout).map_err(|e| open_error(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Open {
            path: path.display().to_string(),
            message: format!("cannot switch the journal to WAL (it stays {mode})"),
        });
    }
    configure(&conn).map_err(|e| open_error(path, e))?;
    // A savepoint, and a statement that writes many rows under a foreign key, get a sub-journal
    // that keeps the first copy of every page they change. With the default temp_store, SQLite
    // moves a sub-journal to a temporary file once it passes 64 KiB (SQLITE_STMTJRNL_SPILL), and
    // a claim of many jobs in a request's savepoint passes that. The writer then spent its time
    // in file writes, and a 20,000-job drain ran about 40% slower. In memory a sub-journal
    // contains at most the pages of one request, because it is emptied when the savepoint or
    // statement ends.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(|e| open_error(path, e))?;
    Ok(conn)
}

/// Switches the file to WAL and returns the journal mode it ends in.
///
/// The switch needs an exclusive lock. SQLite reports a lock held by another connection as busy
/// at once, without calling the busy handler, so two processes that open a new file at the same
/// moment would get a spurious busy error. The switch is therefore retried until `busy_timeout`
/// runs out. A file already in WAL (the mode is stored in the file) needs no lock.
fn journal_mode_wal(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<String> {
    let current: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
    if current.eq_ignore_ascii_case("wal") {
        return Ok(current);
    }
    let deadline = std::time::Instant::now() + busy_timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)) {
            Err(error) if is_busy(&error) && std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Opens a connection that only reads.
pub(crate) fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| open_error(path, e))?;
    configure(&conn).map_err(|e| open_error(path, e))?;
    conn.pragma_update(None, "query_only", true)
        .map_err(|e| open_error(path, e))?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // FULL syncs the WAL on every commit, so an acknowledged write survives a power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // SQLite re-prepares a cached statement whenever a new value is bound to a parameter that
    // the planner looked at, which our ORDER BY and join queries trigger on every call. The
    // query planner stability guarantee fixes each plan when it is prepared. Our plans do not
    // depend on bound values: partial indexes test literals, and no ANALYZE statistics exist.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(())
}

/// Reads the journal mode and sync level of `conn`.
pub(crate) fn durability(conn: &Connection) -> Result<super::SqliteDurability, StoreError> {
    let journal_mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
    let level: i64 = conn.query_row("PRAGMA synchronous", [], |row| row.get(0))?;
    let synchronous = match level {
        0 => "off".to_owned(),
        1 => "normal".to_owned(),
        2 => "full".to_owned(),
        3 => "extra".to_owned(),
        other => format!("unknown ({other})"),
    };
    Ok(super::SqliteDurability {
        journal_mode: journal_mode.to_lowercase(),
        synchronous,
    })
}

/// Checks, before SQLite does, the mistakes whose SQLite message would be vague.
pub(crate) fn check_path(path: &Path) -> Result<(), StoreError> {
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => return Ok(()),
    };
    if !folder.is_dir() {
        return Err(StoreError::Open {
            path: path.display().to_string(),
            message: format!(
                "folder {} does not exist: create it first or choose another path",
                folder.display()
            ),
        });
    }
    Ok(())
}

/// Turns an error met while opening into one that names the file and the fix.
pub(crate) fn open_error(path: &Path, error: rusqlite::Error) -> StoreError {
    let shown = path.display();
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy(format!(
            "file {shown} is locked by another program ({error}): stop that program, or raise \
             the busy timeout"
        )),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Open {
            path: shown.to_string(),
            message: format!(
                "file {shown} is not an oaj database or is corrupt: {error}; choose another \
                 path or restore the file from a backup"
            ),
        },
        _ => StoreError::Open {
            path: shown.to_string(),
            message: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;

    #[test]
    fn cached_statement_survives_new_bindings() {
        let folder = tempfile::tempdir().expect("temporary folder");
        let path = folder.path().join("oaj.db");
        let mut conn = open_writer(&path, Duration::from_secs(1)).expect("open the writer");
        super::super::migrations::migrate(&mut conn, &path).expect("migrate");
        let sql = "SELECT step_id FROM step_runs WHERE job_id = ?1 ORDER BY step_id, item";
        for job_id in ["a", "b", "c"] {
            let mut statement = conn.prepare_cached(sql).expect("prepare");
            let mut rows = statement.query([job_id]).expect("query");
            while rows.next().expect("step").is_some() {}
            drop(rows);
            assert_eq!(statement.get_status(StatementStatus::RePrepare), 0);
        }
    }

    #[test]
    fn writer_keeps_temporary_data_in_memory() {
        let folder = tempfile::tempdir().expect("temporary folder");
        let path = folder.path().join("oaj.db");
        let writer = open_writer(&path, Duration::from_secs(1)).expect("open the writer");
        let temp_store: i64 = writer
            .query_row("PRAGMA temp_store", [], |row| row.get(0))
            .expect("read temp_store");
        // 2 is MEMORY in SQLite's numbering (0 default, 1 file, 2 memory).
        assert_eq!(temp_store, 2);
    }
}
