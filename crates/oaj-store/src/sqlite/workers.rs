//! Worker heartbeats: the `workers` table that lists live workers, idle ones included.

use rusqlite::{params, Connection, Row};

use super::rows::query_all;
use super::writer::WriteTx;
use crate::error::StoreError;
use crate::model::{
    MaintenanceParams, MaintenanceReport, WorkerBeat, WorkerRecord, WORKER_FORGET_MS,
};

const UPSERT_WORKER: &str = "INSERT INTO workers (id, hostname, pid, started_at, last_seen,
    running) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO UPDATE SET
    hostname = excluded.hostname, pid = excluded.pid, started_at = excluded.started_at,
    last_seen = MAX(last_seen, excluded.last_seen), running = excluded.running";
const SELECT_WORKERS: &str = "SELECT id, hostname, pid, started_at, last_seen, running
    FROM workers WHERE last_seen >= ?1 ORDER BY id";
const DELETE_SILENT: &str = "DELETE FROM workers WHERE id IN (SELECT id FROM workers
    WHERE last_seen < ?1 ORDER BY last_seen LIMIT ?2)";

/// Inserts or updates a worker from its heartbeat.
pub(crate) fn worker_heartbeat(tx: &mut WriteTx<'_>, beat: &WorkerBeat) -> Result<(), StoreError> {
    tx.conn.prepare_cached(UPSERT_WORKER)?.execute(params![
        beat.worker_id,
        beat.hostname,
        beat.pid,
        beat.started_at,
        beat.now,
        beat.running,
    ])?;
    Ok(())
}

/// Lists the workers seen in the last [`WORKER_FORGET_MS`], by id.
pub(crate) fn worker_list(conn: &Connection, now: i64) -> Result<Vec<WorkerRecord>, StoreError> {
    query_all(
        conn,
        SELECT_WORKERS,
        [now - WORKER_FORGET_MS],
        worker_from_row,
    )
}

/// Deletes up to `batch_size` workers not seen for [`WORKER_FORGET_MS`].
pub(crate) fn forget(
    tx: &mut WriteTx<'_>,
    params: &MaintenanceParams,
    report: &mut MaintenanceReport,
) -> Result<(), StoreError> {
    let deleted = tx
        .conn
        .prepare_cached(DELETE_SILENT)?
        .execute(params![params.now - WORKER_FORGET_MS, params.batch_size])?;
    report.workers_deleted += deleted as u64;
    Ok(())
}

fn worker_from_row(row: &Row<'_>) -> Result<WorkerRecord, StoreError> {
    Ok(WorkerRecord {
        worker_id: row.get(0)?,
        hostname: row.get(1)?,
        pid: row.get(2)?,
        started_at: row.get(3)?,
        last_seen: row.get(4)?,
        running: row.get(5)?,
    })
}
