//! Worker heartbeats: the `workers` table that lists live workers, idle ones included.

use tokio_postgres::Row;

use super::db::Db;
use super::rows::decode_all;
use super::tx::PgTx;
use crate::error::StoreError;
use crate::model::{
    MaintenanceParams, MaintenanceReport, WorkerBeat, WorkerRecord, WORKER_FORGET_MS,
};
use crate::sqlite::errors::corrupt;

const UPSERT_WORKER: &str = "INSERT INTO workers (id, hostname, pid, started_at, last_seen,
    running) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET
    hostname = excluded.hostname, pid = excluded.pid, started_at = excluded.started_at,
    last_seen = GREATEST(workers.last_seen, excluded.last_seen), running = excluded.running";
const SELECT_WORKERS: &str = "SELECT id, hostname, pid, started_at, last_seen, running
    FROM workers WHERE last_seen >= $1 ORDER BY id";
const DELETE_SILENT: &str = "DELETE FROM workers WHERE id IN (SELECT id FROM workers
    WHERE last_seen < $1 ORDER BY last_seen LIMIT $2 FOR UPDATE SKIP LOCKED)";

/// Inserts or updates a worker from its heartbeat.
pub(crate) async fn worker_heartbeat(
    tx: &mut PgTx<'_>,
    beat: &WorkerBeat,
) -> Result<(), StoreError> {
    let pid = i64::from(beat.pid);
    let running = i64::from(beat.running);
    tx.execute(
        UPSERT_WORKER,
        &[
            &beat.worker_id,
            &beat.hostname,
            &pid,
            &beat.started_at,
            &beat.now,
            &running,
        ],
    )
    .await?;
    Ok(())
}

/// Lists the workers seen in the last [`WORKER_FORGET_MS`], by id.
pub(crate) async fn worker_list(db: Db<'_>, now: i64) -> Result<Vec<WorkerRecord>, StoreError> {
    let since = now - WORKER_FORGET_MS;
    decode_all(db.query(SELECT_WORKERS, &[&since]).await?, worker_from_row)
}

/// Deletes up to `batch_size` workers not seen for [`WORKER_FORGET_MS`].
pub(crate) async fn forget(
    tx: &mut PgTx<'_>,
    params: &MaintenanceParams,
    report: &mut MaintenanceReport,
) -> Result<(), StoreError> {
    let before = params.now - WORKER_FORGET_MS;
    let batch_size = i64::from(params.batch_size);
    report.workers_deleted += tx.execute(DELETE_SILENT, &[&before, &batch_size]).await?;
    Ok(())
}

fn worker_from_row(row: &Row) -> Result<WorkerRecord, StoreError> {
    let pid: i64 = row.try_get(2)?;
    let running: i64 = row.try_get(5)?;
    Ok(WorkerRecord {
        worker_id: row.try_get(0)?,
        hostname: row.try_get(1)?,
        pid: u32::try_from(pid).map_err(|_| corrupt("workers.pid", pid))?,
        started_at: row.try_get(3)?,
        last_seen: row.try_get(4)?,
        running: u32::try_from(running).map_err(|_| corrupt("workers.running", running))?,
    })
}
