//! Workflow versions: immutable once stored, so every connection may share one cache.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_postgres::Row;

use super::db::Db;
use super::rows::decode_all;
use super::tx::PgTx;
use crate::error::StoreError;
use crate::model::{WorkflowInserted, WorkflowRecord};

// Versions sort highest first by their numbers, as in the SQLite store. A pre-release sorts below
// its release, and two pre-releases of one version sort by their text.
const SELECT_ONE: &str =
    "SELECT id, version, document, created_at FROM workflows WHERE id = $1 AND version = $2";
const SELECT_LATEST: &str = "SELECT id, version, document, created_at FROM workflows
    WHERE id = $1 ORDER BY version_major DESC, version_minor DESC, version_patch DESC,
    version_is_release DESC, version COLLATE \"C\" DESC LIMIT 1";
const SELECT_LATEST_EACH: &str = "SELECT DISTINCT ON (id COLLATE \"C\") id, version, document,
    created_at FROM workflows ORDER BY id COLLATE \"C\", version_major DESC, version_minor DESC,
    version_patch DESC, version_is_release DESC, version COLLATE \"C\" DESC";
const SELECT_VERSIONS: &str = "SELECT id, version, document, created_at FROM workflows
    WHERE id = $1 ORDER BY version_major DESC, version_minor DESC, version_patch DESC,
    version_is_release DESC, version COLLATE \"C\" DESC";
// FOR UPDATE conflicts with the FOR KEY SHARE lock that the foreign key check of a job insert
// takes on the version's row. The delete therefore waits for such an insert to commit, and the
// next statement reads its job. A job insert that comes after the lock waits for the delete, then
// fails on the foreign key.
const LOCK_ONE: &str = "SELECT 1 FROM workflows WHERE id = $1 AND version = $2 FOR UPDATE";
const SELECT_USER: &str =
    "SELECT id FROM jobs WHERE workflow_id = $1 AND workflow_version = $2 LIMIT 1";
const DELETE: &str = "DELETE FROM workflows WHERE id = $1 AND version = $2";
// A concurrent insert of the same version wins the race; the loser then compares documents.
const INSERT: &str = "INSERT INTO workflows (id, version, version_major, version_minor,
    version_patch, version_is_release, document, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id, version) DO NOTHING";

/// Workflow versions read so far, by id and version. Versions never change once stored, so an
/// entry goes stale only when the version is deleted.
#[derive(Debug, Default)]
pub(crate) struct WorkflowCache {
    records: Mutex<HashMap<(String, String), WorkflowRecord>>,
}

impl WorkflowCache {
    /// Returns the version from the cache, or reads it and caches it.
    pub(crate) async fn get(
        &self,
        db: Db<'_>,
        id: &str,
        version: &str,
    ) -> Result<Option<WorkflowRecord>, StoreError> {
        let key = (id.to_owned(), version.to_owned());
        if let Some(record) = self.lock().get(&key) {
            return Ok(Some(record.clone()));
        }
        let record = match db.query_opt(SELECT_ONE, &[&id, &version]).await? {
            Some(row) => Some(record_from_row(&row)?),
            None => None,
        };
        if let Some(record) = &record {
            self.lock().insert(key, record.clone());
        }
        Ok(record)
    }

    /// Removes a deleted version from the cache.
    ///
    /// NOTE: only this process's cache drops it. Another process may still find the version
    /// in its cache, and its job inserts then fail on the foreign key to `workflows` instead of
    /// with [`StoreError::WorkflowNotFound`].
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
pub(crate) async fn workflow_insert(
    tx: &mut PgTx<'_>,
    record: &WorkflowRecord,
) -> Result<WorkflowInserted, StoreError> {
    let version = semver::Version::parse(&record.version).map_err(|e| {
        StoreError::WorkflowVersionInvalid {
            id: record.id.clone(),
            version: record.version.clone(),
            message: e.to_string(),
        }
    })?;
    let number = |part: u64| {
        i64::try_from(part).map_err(|_| StoreError::WorkflowVersionInvalid {
            id: record.id.clone(),
            version: record.version.clone(),
            message: format!("version part {part} is larger than {}", i64::MAX),
        })
    };
    let inserted = tx
        .execute(
            INSERT,
            &[
                &record.id,
                &record.version,
                &number(version.major)?,
                &number(version.minor)?,
                &number(version.patch)?,
                &version.pre.is_empty(),
                &record.document,
                &record.created_at,
            ],
        )
        .await?;
    if inserted == 1 {
        return Ok(WorkflowInserted::Inserted);
    }
    let stored = tx
        .query_opt(SELECT_ONE, &[&record.id, &record.version])
        .await?
        .expect("the conflicting version is committed and visible");
    if record_from_row(&stored)?.document == record.document {
        Ok(WorkflowInserted::Unchanged)
    } else {
        Err(StoreError::WorkflowExistsWithDifferentDocument {
            id: record.id.clone(),
            version: record.version.clone(),
        })
    }
}

/// Reads one version, or the highest one when `version` is `None`.
pub(crate) async fn workflow_get(
    db: Db<'_>,
    cache: &WorkflowCache,
    id: &str,
    version: Option<&str>,
) -> Result<Option<WorkflowRecord>, StoreError> {
    match version {
        Some(version) => cache.get(db, id, version).await,
        None => match db.query_opt(SELECT_LATEST, &[&id]).await? {
            Some(row) => Ok(Some(record_from_row(&row)?)),
            None => Ok(None),
        },
    }
}

/// Lists the highest version of every workflow, by id.
pub(crate) async fn workflow_list(db: Db<'_>) -> Result<Vec<WorkflowRecord>, StoreError> {
    decode_all(db.query(SELECT_LATEST_EACH, &[]).await?, record_from_row)
}

/// Lists every version of a workflow, highest first.
pub(crate) async fn workflow_versions(
    db: Db<'_>,
    id: &str,
) -> Result<Vec<WorkflowRecord>, StoreError> {
    decode_all(db.query(SELECT_VERSIONS, &[&id]).await?, record_from_row)
}

/// Deletes a version that no job uses.
pub(crate) async fn workflow_delete(
    tx: &mut PgTx<'_>,
    cache: &WorkflowCache,
    id: &str,
    version: &str,
) -> Result<(), StoreError> {
    let not_found = || StoreError::WorkflowNotFound {
        id: id.to_owned(),
        version: version.to_owned(),
    };
    tx.query_opt(LOCK_ONE, &[&id, &version])
        .await?
        .ok_or_else(not_found)?;
    if let Some(row) = tx.query_opt(SELECT_USER, &[&id, &version]).await? {
        return Err(StoreError::WorkflowInUse {
            id: id.to_owned(),
            version: version.to_owned(),
            job_id: row.try_get(0)?,
        });
    }
    tx.execute(DELETE, &[&id, &version]).await?;
    cache.remove(id, version);
    Ok(())
}

fn record_from_row(row: &Row) -> Result<WorkflowRecord, StoreError> {
    Ok(WorkflowRecord {
        id: row.try_get(0)?,
        version: row.try_get(1)?,
        document: row.try_get(2)?,
        created_at: row.try_get(3)?,
    })
}
