//! Maintenance passes: rescue of expired leases, promotion of pending jobs whose time came, and
//! retention. Each pass touches at most `batch_size` jobs, so that it keeps the writer briefly.

use std::collections::BTreeSet;

use oaj_core::{JobState, Transition};
use rusqlite::params;
use serde_json::json;

use super::job_moves::{job_end, job_head, job_move, JobMove};
use super::job_reads::{batches_delete_empty, DELETE_JOB_EVENTS};
use super::rows::{query_all, query_value};
use super::worker_writes::step_event;
use super::writer::WriteTx;
use crate::error::StoreError;
use crate::model::{MaintenanceParams, MaintenanceReport};

const SELECT_EXPIRED: &str = "SELECT id FROM jobs WHERE state = 'running'
    AND lease_expires_at < ?1 ORDER BY lease_expires_at LIMIT ?2";
const UPDATE_ATTEMPTS_INTERRUPT: &str = "UPDATE attempts SET state = 'interrupted',
    finished_at = ?2 WHERE job_id = ?1 AND state = 'running' RETURNING step_id, item, number";
const UPDATE_STEPS_INTERRUPT: &str = "UPDATE step_runs SET state = 'pending',
    interruptions = interruptions + 1, updated_at = ?2 WHERE job_id = ?1 AND state = 'running'";
const UPDATE_JOB_INTERRUPT: &str =
    "UPDATE jobs SET interruptions = interruptions + 1 WHERE id = ?1 RETURNING interruptions";
const SELECT_DUE: &str = "SELECT id FROM jobs WHERE state = 'pending' AND run_at IS NOT NULL
    AND run_at <= ?1 AND NOT EXISTS (SELECT 1 FROM job_dependencies d
    WHERE d.job_id = jobs.id AND d.settled = 0) ORDER BY run_at LIMIT ?2";
// Only jobs in a final state have a `finished_at` (migration 0004). Naming the states here as
// well made the planner pick jobs_state_created and sort every finished job.
pub(crate) const DELETE_EXPIRED: &str = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs
    WHERE finished_at < ?1 ORDER BY finished_at LIMIT ?2) RETURNING id, state, batch_id";

/// The decision for a job whose lease expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RescueOutcome {
    /// A user asked to cancel it.
    Cancel,
    /// A user asked to pause it.
    Pause,
    /// It lost its worker too often.
    Fail(String),
    /// It runs again from its saved steps.
    Release,
}

pub(crate) fn rescue_decide(control: Option<&str>, interruptions: i64, max: u32) -> RescueOutcome {
    match control {
        Some("cancel") => RescueOutcome::Cancel,
        Some("pause") => RescueOutcome::Pause,
        _ if interruptions >= i64::from(max) => RescueOutcome::Fail(format!(
            "job was interrupted {interruptions} times (its worker died or lost its lease each \
             time); giving up"
        )),
        _ => RescueOutcome::Release,
    }
}

/// Rescues up to `batch_size` running jobs whose lease expired.
pub(crate) fn rescue(
    tx: &mut WriteTx<'_>,
    params: &MaintenanceParams,
    report: &mut MaintenanceReport,
) -> Result<(), StoreError> {
    let ids = query_all(
        tx.conn,
        SELECT_EXPIRED,
        params![params.now, params.batch_size],
        |row| Ok(row.get::<_, String>(0)?),
    )?;
    for id in ids {
        match rescue_one(tx, &id, params)? {
            RescueOutcome::Release => report.rescued += 1,
            RescueOutcome::Fail(_) => report.rescue_failed += 1,
            RescueOutcome::Cancel | RescueOutcome::Pause => {}
        }
    }
    Ok(())
}

fn rescue_one(
    tx: &mut WriteTx<'_>,
    id: &str,
    params: &MaintenanceParams,
) -> Result<RescueOutcome, StoreError> {
    let now = params.now;
    let interrupted = query_all(
        tx.conn,
        UPDATE_ATTEMPTS_INTERRUPT,
        params![id, now],
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, u32>(2)?,
            ))
        },
    )?;
    for (step_id, item, number) in &interrupted {
        let item = u32::try_from(*item).ok();
        let mut event = step_event("attempt.interrupted", id, step_id, item, json!({}), now);
        event.attempt = Some(*number);
        tx.event_add(event)?;
    }
    tx.conn
        .prepare_cached(UPDATE_STEPS_INTERRUPT)?
        .execute(params![id, now])?;
    let interruptions = query_value::<i64>(tx.conn, UPDATE_JOB_INTERRUPT, [id])?
        .expect("the expired job was read in this transaction");
    let data = json!({ "interrupted_attempts": interrupted.len() });
    tx.job_event("job.rescued".to_owned(), id, data, now)?;

    let head = job_head(tx.conn, id)?.expect("the expired job was read in this transaction");
    let outcome = rescue_decide(
        head.control.as_deref(),
        interruptions,
        params.interruptions_max,
    );
    let step = JobMove::new(id, &head, Transition::Release, now);
    match &outcome {
        RescueOutcome::Cancel => {
            job_end(
                tx,
                &JobMove {
                    transition: Transition::Cancel,
                    ..step
                },
            )?;
        }
        RescueOutcome::Pause => {
            job_move(
                tx,
                &JobMove {
                    transition: Transition::Pause,
                    ..step
                },
            )?;
        }
        RescueOutcome::Fail(reason) => {
            let error = Some(reason.clone());
            job_end(
                tx,
                &JobMove {
                    transition: Transition::Fail,
                    error,
                    ..step
                },
            )?;
        }
        RescueOutcome::Release => {
            job_move(tx, &step)?;
        }
    }
    Ok(outcome)
}

/// Queues up to `batch_size` pending jobs whose start time came and whose dependencies are met.
pub(crate) fn promote(
    tx: &mut WriteTx<'_>,
    params: &MaintenanceParams,
    report: &mut MaintenanceReport,
) -> Result<(), StoreError> {
    let ids = query_all(
        tx.conn,
        SELECT_DUE,
        params![params.now, params.batch_size],
        |row| Ok(row.get::<_, String>(0)?),
    )?;
    for id in ids {
        let head = job_head(tx.conn, &id)?.expect("the due job was read in this transaction");
        job_move(
            tx,
            &JobMove::new(&id, &head, Transition::Enqueue, params.now),
        )?;
        report.promoted += 1;
    }
    Ok(())
}

/// Deletes up to `batch_size` ended jobs that finished before the retention period.
pub(crate) fn retain(
    tx: &mut WriteTx<'_>,
    params: &MaintenanceParams,
    report: &mut MaintenanceReport,
) -> Result<(), StoreError> {
    let Some(retention_ms) = params.retention_ms else {
        return Ok(());
    };
    let cutoff = params.now.saturating_sub(retention_ms);
    let deleted = query_all(
        tx.conn,
        DELETE_EXPIRED,
        params![cutoff, params.batch_size],
        |row| {
            let id: String = row.get(0)?;
            let state: String = row.get(1)?;
            let state = state
                .parse::<JobState>()
                .map_err(|_| super::errors::corrupt("jobs.state", state))?;
            let batch_id: Option<String> = row.get(2)?;
            Ok((id, state, batch_id))
        },
    )?;
    let mut delete_events = tx.conn.prepare_cached(DELETE_JOB_EVENTS)?;
    for (id, _, _) in &deleted {
        delete_events.execute(params![id])?;
    }
    drop(delete_events);
    for (_, state, _) in &deleted {
        tx.count_add(*state, -1);
    }
    let batch_ids: BTreeSet<String> = deleted
        .iter()
        .filter_map(|(_, _, batch_id)| batch_id.clone())
        .collect();
    batches_delete_empty(tx, batch_ids)?;
    report.deleted += deleted.len() as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescue_fails_at_max_interruptions() {
        let outcome = rescue_decide(None, 3, 3);
        assert!(matches!(outcome, RescueOutcome::Fail(_)));
    }

    #[test]
    fn rescue_releases_below_max() {
        assert_eq!(rescue_decide(None, 2, 3), RescueOutcome::Release);
    }

    #[test]
    fn rescue_honours_cancel_before_max() {
        assert_eq!(rescue_decide(Some("cancel"), 5, 3), RescueOutcome::Cancel);
    }
}
