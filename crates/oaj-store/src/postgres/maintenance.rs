//! Maintenance passes: rescue of expired leases, promotion of pending jobs whose time came, and
//! retention. Each pass touches at most `batch_size` jobs and skips the jobs that another
//! transaction has locked, so it does not wait for a worker writing to the job it would move.
//! Settling the dependents of a job that ends here still waits for their row locks.

use std::collections::BTreeSet;

use oaj_core::{JobState, Transition};
use serde_json::json;

use super::job_moves::{job_end, job_head, job_move, JobMove};
use super::job_reads::{DELETE_BATCHES_IF_EMPTY, DELETE_JOBS_ROWS};
use super::rows::item_from_column;
use super::tx::PgTx;
use super::worker_writes::step_event;
use crate::error::StoreError;
use crate::model::{MaintenanceParams, MaintenanceReport};
use crate::sqlite::errors::corrupt;
use crate::sqlite::maintenance::{rescue_decide, RescueOutcome};

const SELECT_EXPIRED: &str = "SELECT id FROM jobs WHERE state = 'running'
    AND lease_expires_at < $1 ORDER BY lease_expires_at LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED";
const UPDATE_ATTEMPTS_INTERRUPT: &str = "UPDATE attempts SET state = 'interrupted',
    finished_at = $2 WHERE job_id = $1 AND state = 'running' RETURNING step_id, item, number";
const UPDATE_STEPS_INTERRUPT: &str = "UPDATE step_runs SET state = 'pending',
    interruptions = interruptions + 1, updated_at = $2 WHERE job_id = $1 AND state = 'running'";
const UPDATE_JOB_INTERRUPT: &str =
    "UPDATE jobs SET interruptions = interruptions + 1 WHERE id = $1 RETURNING interruptions";
const SELECT_DUE: &str = "SELECT id FROM jobs WHERE state = 'pending' AND run_at IS NOT NULL
    AND run_at <= $1 AND NOT EXISTS (SELECT 1 FROM job_dependencies d
    WHERE d.job_id = jobs.id AND NOT d.settled) ORDER BY run_at LIMIT $2
    FOR NO KEY UPDATE SKIP LOCKED";
const DELETE_EXPIRED: &str = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs
    WHERE state IN ('completed', 'failed', 'cancelled') AND finished_at < $1
    ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id, state, batch_id";

/// Rescues up to `batch_size` running jobs whose lease expired.
pub(crate) async fn rescue(
    tx: &mut PgTx<'_>,
    params: &MaintenanceParams,
    report: &mut MaintenanceReport,
) -> Result<(), StoreError> {
    let batch_size = i64::from(params.batch_size);
    let rows = tx
        .query(SELECT_EXPIRED, &[&params.now, &batch_size])
        .await?;
    for row in rows {
        let id: String = row.try_get(0)?;
        match rescue_one(tx, &id, params).await? {
            RescueOutcome::Release => report.rescued += 1,
            RescueOutcome::Fail(_) => report.rescue_failed += 1,
            RescueOutcome::Cancel | RescueOutcome::Pause => {}
        }
    }
    Ok(())
}

async fn rescue_one(
    tx: &mut PgTx<'_>,
    id: &str,
    params: &MaintenanceParams,
) -> Result<RescueOutcome, StoreError> {
    let now = params.now;
    let interrupted = tx.query(UPDATE_ATTEMPTS_INTERRUPT, &[&id, &now]).await?;
    for row in &interrupted {
        let step_id: String = row.try_get(0)?;
        let item = item_from_column(row.try_get(1)?)?;
        let number: i64 = row.try_get(2)?;
        let mut event = step_event("attempt.interrupted", id, &step_id, item, json!({}), now);
        event.attempt =
            Some(u32::try_from(number).map_err(|_| corrupt("attempts.number", number))?);
        tx.event_add(event);
    }
    tx.execute(UPDATE_STEPS_INTERRUPT, &[&id, &now]).await?;
    let interruptions: i64 = tx.db().query_value(UPDATE_JOB_INTERRUPT, &[&id]).await?;
    let data = json!({ "interrupted_attempts": interrupted.len() });
    tx.job_event("job.rescued".to_owned(), id, data, now);

    let head = job_head(tx, id)
        .await?
        .expect("the expired job is locked by this transaction");
    let outcome = rescue_decide(
        head.control.as_deref(),
        interruptions,
        params.interruptions_max,
    );
    let step = JobMove::new(id, &head, Transition::Release, now);
    match &outcome {
        RescueOutcome::Cancel => {
            let transition = Transition::Cancel;
            job_end(tx, &JobMove { transition, ..step }).await?;
        }
        RescueOutcome::Pause => {
            let transition = Transition::Pause;
            job_move(tx, &JobMove { transition, ..step }).await?;
        }
        RescueOutcome::Fail(reason) => {
            let error = Some(reason.clone());
            let transition = Transition::Fail;
            job_end(
                tx,
                &JobMove {
                    transition,
                    error,
                    ..step
                },
            )
            .await?;
        }
        RescueOutcome::Release => {
            job_move(tx, &step).await?;
        }
    }
    Ok(outcome)
}

/// Queues up to `batch_size` pending jobs whose start time came and whose dependencies are met.
pub(crate) async fn promote(
    tx: &mut PgTx<'_>,
    params: &MaintenanceParams,
    report: &mut MaintenanceReport,
) -> Result<(), StoreError> {
    let batch_size = i64::from(params.batch_size);
    let rows = tx.query(SELECT_DUE, &[&params.now, &batch_size]).await?;
    for row in rows {
        let id: String = row.try_get(0)?;
        let head = job_head(tx, &id)
            .await?
            .expect("the due job is locked by this transaction");
        let step = JobMove::new(&id, &head, Transition::Enqueue, params.now);
        job_move(tx, &step).await?;
        report.promoted += 1;
    }
    Ok(())
}

/// Deletes up to `batch_size` ended jobs that finished before the retention period.
pub(crate) async fn retain(
    tx: &mut PgTx<'_>,
    params: &MaintenanceParams,
    report: &mut MaintenanceReport,
) -> Result<(), StoreError> {
    let Some(retention_ms) = params.retention_ms else {
        return Ok(());
    };
    let cutoff = params.now.saturating_sub(retention_ms);
    let batch_size = i64::from(params.batch_size);
    let rows = tx.query(DELETE_EXPIRED, &[&cutoff, &batch_size]).await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut batch_ids = BTreeSet::new();
    for row in &rows {
        ids.push(row.try_get::<_, String>(0)?);
        if let Some(batch_id) = row.try_get::<_, Option<String>>(2)? {
            batch_ids.insert(batch_id);
        }
        let state: String = row.try_get(1)?;
        let state = state
            .parse::<JobState>()
            .map_err(|_| corrupt("jobs.state", state))?;
        tx.counts_add(state, -1);
    }
    if !ids.is_empty() {
        tx.execute(DELETE_JOBS_ROWS, &[&ids]).await?;
    }
    if !batch_ids.is_empty() {
        let batch_ids: Vec<String> = batch_ids.into_iter().collect();
        tx.execute(DELETE_BATCHES_IF_EMPTY, &[&batch_ids]).await?;
    }
    report.deleted += rows.len() as u64;
    Ok(())
}
