//! Workflow versions: immutable once stored, so readers may cache them.

use std::collections::HashMap;
use std::sync::Mutex;

use rusqlite::{params, Connection, Row};

use super::rows::{query_all, query_first};
use super::writer::WriteTx;
use crate::error::StoreError;
use crate::model::{WorkflowInserted, WorkflowRecord};

// Versions sort highest first by their numbers. A pre-release sorts below its release, and two
// pre-releases of one version sort by their text, which differs from semver for numeric parts
// such as rc.10 against rc.9.
const SELECT_ONE: &str =
    "SELECT id, version, document, created_at FROM workflows WHERE id = ?1 AND version = ?2";
const SELECT_LATEST: &str = "SELECT id, version, document, created_at FROM workflows
    WHERE id = ?1 ORDER BY version_major DESC, version_minor DESC, version_patch DESC,
    version_is_release DESC, version DESC LIMIT 1";
const SELECT_LATEST_EACH: &str = "SELECT id, version, document, created_at FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY version_major DESC,
        version_minor DESC, version_patch DESC, version_is_release DESC, version DESC) AS rank
    FROM workflows) WHERE rank = 1 ORDER BY id";
const SELECT_VERSIONS: &str = "SELECT id, version, document, created_at FROM workflows
    WHERE id = ?1 ORDER BY version_major DESC, version_minor DESC, version_patch DESC,
    version_is_release DESC, version DESC";
const SELECT_USER: &str =
    "SELECT id FROM jobs WHERE workflow_id = ?1 AND workflow_version = ?2 LIMIT 1";
const DELETE: &str = "DELETE FROM workflows WHERE id = ?1 AND version = ?2";
const INSERT: &str = "INSERT INTO workflows (id, version, version_major, version_minor,
    version_patch, version_is_release, document, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Workflow versions read so far, by id and version. Versions never change once stored, so an
/// entry never goes stale.
#[derive(Debug, Default)]
pub(crate) struct WorkflowCache {
    records: Mutex<HashMap<(String, String), WorkflowRecord>>,
}

impl WorkflowCache {
    /// Returns the version from the cache, or reads it and caches it.
    pub(crate) fn get(
        &self,
        conn: &Connection,
        id: &str,
        version: &str,
    ) -> Result<Option<WorkflowRecord>, StoreError> {
        let key = (id.to_owned(), version.to_owned());
        if let Some(record) = self.lock().get(&key) {
            return Ok(Some(record.clone()));
        }
        let record = query_first(conn, SELECT_ONE, params![id, version], record_from_row)?;
        if let Some(record) = &record {
            self.lock().insert(key, record.clone());
        }
        Ok(record)
    }

    /// Forgets a deleted version.
    ///
    /// NOTE: a read that started before the delete committed may put the version back. A job
    /// insert that then finds it in the cache still fails on the foreign key to `workflows`.
    pub(crate) fn remove(&self, id: &str, version: &str) {
        self.lock().remove(&(id.to_owned(), version.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), WorkflowRecord>> {
        // Only map lookups and inserts run under the lock, and they do not panic.
        self.records
            .lock()
            .expect("the workflow cache lock is never poisoned")
    }
}

/// Stores a workflow version, or reports that the same document is stored already.
pub(crate) fn workflow_insert(
    tx: &mut WriteTx<'_>,
    record: &WorkflowRecord,
) -> Result<WorkflowInserted, StoreError> {
    let version = semver::Version::parse(&record.version).map_err(|e| {
        StoreError::WorkflowVersionInvalid {
            id: record.id.clone(),
            version: record.version.clone(),
            message: e.to_string(),
        }
    })?;
    let stored = query_first(
        tx.conn,
        SELECT_ONE,
        params![record.id, record.version],
        record_from_row,
    )?;
    match stored {
        Some(stored) if stored.document == record.document => Ok(WorkflowInserted::Unchanged),
        Some(_) => Err(StoreError::WorkflowExistsWithDifferentDocument {
            id: record.id.clone(),
            version: record.version.clone(),
        }),
        None => {
            insert_new(tx.conn, record, &version)?;
            Ok(WorkflowInserted::Inserted)
        }
    }
}

fn insert_new(
    conn: &Connection,
    record: &WorkflowRecord,
    version: &semver::Version,
) -> Result<(), StoreError> {
    let number = |part: u64| {
        i64::try_from(part).map_err(|_| StoreError::WorkflowVersionInvalid {
            id: record.id.clone(),
            version: record.version.clone(),
            message: format!("version part {part} is larger than {}", i64::MAX),
        })
    };
    conn.prepare_cached(INSERT)?.execute(params![
        record.id,
        record.version,
        number(version.major)?,
        number(version.minor)?,
        number(version.patch)?,
        version.pre.is_empty(),
        record.document,
        record.created_at,
    ])?;
    Ok(())
}

/// Reads one version, or the highest one when `version` is `None`.
pub(crate) fn workflow_get(
    conn: &Connection,
    cache: &WorkflowCache,
    id: &str,
    version: Option<&str>,
) -> Result<Option<WorkflowRecord>, StoreError> {
    match version {
        Some(version) => cache.get(conn, id, version),
        None => query_first(conn, SELECT_LATEST, [id], record_from_row),
    }
}

/// Lists the highest version of every workflow, by id.
pub(crate) fn workflow_list(conn: &Connection) -> Result<Vec<WorkflowRecord>, StoreError> {
    query_all(conn, SELECT_LATEST_EACH, [], record_from_row)
}

/// Lists every version of a workflow, highest first.
pub(crate) fn workflow_versions(
    conn: &Connection,
    id: &str,
) -> Result<Vec<WorkflowRecord>, StoreError> {
    query_all(conn, SELECT_VERSIONS, [id], record_from_row)
}

/// Deletes a version that no job uses.
pub(crate) fn workflow_delete(
    tx: &mut WriteTx<'_>,
    cache: &WorkflowCache,
    id: &str,
    version: &str,
) -> Result<(), StoreError> {
    let user: Option<String> = query_first(tx.conn, SELECT_USER, params![id, version], |row| {
        Ok(row.get(0)?)
    })?;
    if let Some(job_id) = user {
        return Err(StoreError::WorkflowInUse {
            id: id.to_owned(),
            version: version.to_owned(),
            job_id,
        });
    }
    let deleted = tx
        .conn
        .prepare_cached(DELETE)?
        .execute(params![id, version])?;
    if deleted == 0 {
        return Err(StoreError::WorkflowNotFound {
            id: id.to_owned(),
            version: version.to_owned(),
        });
    }
    cache.remove(id, version);
    Ok(())
}

fn record_from_row(row: &Row<'_>) -> Result<WorkflowRecord, StoreError> {
    Ok(WorkflowRecord {
        id: row.get(0)?,
        version: row.get(1)?,
        document: row.get(2)?,
        created_at: row.get(3)?,
    })
}
