//! The writes a worker makes under its lease: attempts, step runs and the end of its lease.
//! Each is fenced, so it runs only while the worker's lease is the job's current one.

use oaj_core::Transition;
use rusqlite::params;
use serde_json::json;

use super::claims::{control_parse, lease_check};
use super::job_moves::{job_end, job_head_leased, job_move, JobMove};
use super::rows::{insert_rowid, item_to_column, query_first, query_value};
use super::writer::WriteTx;
use crate::error::StoreError;
use crate::model::{
    AttemptFinish, AttemptRecord, AttemptStart, Control, Event, JobFinish, JobOutcome, Lease,
    StepUpdate,
};

const INSERT_ATTEMPT: &str = "INSERT INTO attempts (job_id, step_id, item, number, worker_id,
    lease_token, state, started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7)";
const UPSERT_STEP_RUNNING: &str = "INSERT INTO step_runs (job_id, step_id, item, state, attempts,
    updated_at) VALUES (?1, ?2, ?3, 'running', ?4, ?5)
    ON CONFLICT (job_id, step_id, item) DO UPDATE SET state = 'running',
    attempts = excluded.attempts, next_attempt_at = NULL, updated_at = excluded.updated_at";
const INSERT_ATTEMPT_WHOLE: &str = "INSERT INTO attempts (job_id, step_id, item, number,
    worker_id, lease_token, state, error, log, prompt_tokens, completion_tokens, started_at,
    finished_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";
const UPSERT_STEP_RECORDED: &str = "INSERT INTO step_runs (job_id, step_id, item, state,
    attempts, output, error, next_attempt_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT (job_id, step_id, item) DO UPDATE SET state = excluded.state,
    attempts = excluded.attempts, output = excluded.output, error = excluded.error,
    next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at";
const UPDATE_ATTEMPT_END: &str = "UPDATE attempts SET state = ?3, error = ?4, log = ?5,
    prompt_tokens = ?6, completion_tokens = ?7, finished_at = ?8
    WHERE id = ?1 AND job_id = ?2 AND state = 'running' RETURNING number";
const UPDATE_STEP_AFTER_ATTEMPT: &str = "UPDATE step_runs SET state = ?4, output = ?5,
    error = ?6, next_attempt_at = ?7, updated_at = ?8
    WHERE job_id = ?1 AND step_id = ?2 AND item = ?3";
const UPDATE_JOB_TOKENS: &str = "UPDATE jobs SET prompt_tokens = prompt_tokens + ?2,
    completion_tokens = completion_tokens + ?3, updated_at = ?4 WHERE id = ?1";
const UPSERT_STEP: &str = "INSERT INTO step_runs (job_id, step_id, item, state, output, error,
    items_total, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
    ON CONFLICT (job_id, step_id, item) DO UPDATE SET state = excluded.state,
    output = COALESCE(excluded.output, output), error = excluded.error,
    items_total = COALESCE(excluded.items_total, items_total), updated_at = excluded.updated_at";
const SELECT_CONTROL: &str = "SELECT control FROM jobs WHERE id = ?1";
const SELECT_DECIDED_WAITING: &str = "SELECT EXISTS (SELECT 1 FROM step_runs
    WHERE job_id = ?1 AND state = 'waiting' AND decision_at IS NOT NULL)";

/// Records the start of an attempt and marks its step run running. Returns the attempt id.
pub(crate) fn attempt_start(tx: &mut WriteTx<'_>, start: &AttemptStart) -> Result<i64, StoreError> {
    lease_check(tx.conn, &start.lease)?;
    let job_id = &start.lease.job_id;
    let item = item_to_column(start.item);
    let id = insert_rowid(
        tx.conn,
        INSERT_ATTEMPT,
        params![
            job_id,
            start.step_id,
            item,
            start.number,
            start.worker_id,
            start.lease.token,
            start.now
        ],
    )?;
    tx.conn
        .prepare_cached(UPSERT_STEP_RUNNING)?
        .execute(params![
            job_id,
            start.step_id,
            item,
            start.number,
            start.now
        ])?;
    tx.event_add(started_event(start))?;
    Ok(id)
}

/// Records the end of an attempt, the new state of its step run and the tokens it used, and
/// returns the request pending on the job.
pub(crate) fn attempt_finish(
    tx: &mut WriteTx<'_>,
    finish: &AttemptFinish,
) -> Result<Option<Control>, StoreError> {
    lease_check(tx.conn, &finish.lease)?;
    let attempt_id = finish.attempt_id;
    let job_id = &finish.lease.job_id;
    let number = query_first(
        tx.conn,
        UPDATE_ATTEMPT_END,
        params![
            attempt_id,
            job_id,
            finish.state.as_str(),
            finish.error,
            finish.log,
            finish.prompt_tokens,
            finish.completion_tokens,
            finish.now
        ],
        |row| Ok(row.get::<_, u32>(0)?),
    )?
    .ok_or_else(|| StoreError::AttemptNotRunning {
        job_id: job_id.clone(),
        attempt_id,
    })?;
    tx.conn
        .prepare_cached(UPDATE_STEP_AFTER_ATTEMPT)?
        .execute(params![
            job_id,
            finish.step_id,
            item_to_column(finish.item),
            finish.step_state.as_str(),
            finish.output.as_ref().map(|output| output.to_string()),
            finish.error,
            finish.next_attempt_at,
            finish.now
        ])?;
    tx.conn.prepare_cached(UPDATE_JOB_TOKENS)?.execute(params![
        job_id,
        finish.prompt_tokens,
        finish.completion_tokens,
        finish.now
    ])?;

    let kind = format!("attempt.{}", finish.state.as_str());
    let data = json!({ "step_state": finish.step_state.as_str(), "error": finish.error });
    let event = step_event(
        &kind,
        job_id,
        &finish.step_id,
        finish.item,
        data,
        finish.now,
    );
    tx.event_add(event.with_attempt(number))?;
    control_read(tx, job_id)
}

/// Builds the `attempt.started` event of an attempt.
fn started_event(start: &AttemptStart) -> Event {
    let data = json!({ "worker_id": start.worker_id });
    let event = step_event(
        "attempt.started",
        &start.lease.job_id,
        &start.step_id,
        start.item,
        data,
        start.now,
    );
    event.with_attempt(start.number)
}

/// Returns the request pending on a job whose lease the caller has checked.
fn control_read(tx: &WriteTx<'_>, job_id: &str) -> Result<Option<Control>, StoreError> {
    let control = query_value::<Option<String>>(tx.conn, SELECT_CONTROL, [job_id])?
        .expect("lease_check found the job");
    control_parse(control.as_deref())
}

/// Records the start and the end of one attempt in the same transaction.
pub(crate) fn attempt_record(
    tx: &mut WriteTx<'_>,
    start: &AttemptStart,
    mut finish: AttemptFinish,
) -> Result<i64, StoreError> {
    lease_check(tx.conn, &start.lease)?;
    finish.attempt_id = 0;
    attempt_record_leased(tx, start, &finish)
}

/// Records a whole attempt once the caller has checked its lease: one insert of the ended
/// attempt and one write of its step run, where a start and an end take four statements.
fn attempt_record_leased(
    tx: &mut WriteTx<'_>,
    start: &AttemptStart,
    finish: &AttemptFinish,
) -> Result<i64, StoreError> {
    let job_id = &start.lease.job_id;
    let item = item_to_column(start.item);
    let id = insert_rowid(
        tx.conn,
        INSERT_ATTEMPT_WHOLE,
        params![
            job_id,
            start.step_id,
            item,
            start.number,
            start.worker_id,
            start.lease.token,
            finish.state.as_str(),
            finish.error,
            finish.log,
            finish.prompt_tokens,
            finish.completion_tokens,
            start.now,
            finish.now
        ],
    )?;
    tx.conn
        .prepare_cached(UPSERT_STEP_RECORDED)?
        .execute(params![
            job_id,
            start.step_id,
            item,
            finish.step_state.as_str(),
            start.number,
            finish.output.as_ref().map(|output| output.to_string()),
            finish.error,
            finish.next_attempt_at,
            finish.now
        ])?;
    if finish.prompt_tokens != 0 || finish.completion_tokens != 0 {
        tx.conn.prepare_cached(UPDATE_JOB_TOKENS)?.execute(params![
            job_id,
            finish.prompt_tokens,
            finish.completion_tokens,
            finish.now
        ])?;
    }

    tx.event_add(started_event(start))?;
    let kind = format!("attempt.{}", finish.state.as_str());
    let data = json!({ "step_state": finish.step_state.as_str(), "error": finish.error });
    let ended = step_event(&kind, job_id, &start.step_id, start.item, data, finish.now);
    tx.event_add(ended.with_attempt(start.number))?;
    Ok(id)
}

/// Records whole attempts in order and returns the request pending on their job. The lease is
/// checked once for each run of records that share it.
pub(crate) fn attempts_record(
    tx: &mut WriteTx<'_>,
    records: &[AttemptRecord],
) -> Result<Option<Control>, StoreError> {
    attempts_record_leased(tx, records, None)?;
    match records.last() {
        Some(record) => control_read(tx, &record.start.lease.job_id),
        None => Ok(None),
    }
}

/// Records whole attempts, skipping the lease check of those whose lease is `checked`.
fn attempts_record_leased<'r>(
    tx: &mut WriteTx<'_>,
    records: &'r [AttemptRecord],
    mut checked: Option<&'r Lease>,
) -> Result<(), StoreError> {
    for record in records {
        let lease = &record.start.lease;
        if checked != Some(lease) || record.finish.lease != *lease {
            lease_check(tx.conn, lease)?;
            lease_check(tx.conn, &record.finish.lease)?;
            checked = Some(lease);
        }
        attempt_record_leased(tx, &record.start, &record.finish)?;
    }
    Ok(())
}

/// Changes a step run without an attempt and writes its `step.<state>` event.
pub(crate) fn step_update(tx: &mut WriteTx<'_>, update: &StepUpdate) -> Result<(), StoreError> {
    lease_check(tx.conn, &update.lease)?;
    let job_id = &update.lease.job_id;
    tx.conn.prepare_cached(UPSERT_STEP)?.execute(params![
        job_id,
        update.step_id,
        item_to_column(update.item),
        update.state.as_str(),
        update.output.as_ref().map(|output| output.to_string()),
        update.error,
        update.items_total,
        update.now
    ])?;
    let kind = format!("step.{}", update.state);
    let data = json!({ "error": update.error, "items_total": update.items_total });
    tx.event_add(step_event(
        &kind,
        job_id,
        &update.step_id,
        update.item,
        data,
        update.now,
    ))
}

/// Ends the worker's lease on a job and moves the job as `finish.outcome` requests.
pub(crate) fn job_finish(tx: &mut WriteTx<'_>, finish: &JobFinish) -> Result<(), StoreError> {
    let head = job_head_leased(tx.conn, &finish.lease)?;
    attempts_record_leased(tx, &finish.attempts, Some(&finish.lease))?;
    let job_id = finish.lease.job_id.as_str();
    let mut step = JobMove::new(job_id, &head, Transition::Release, finish.now);
    match &finish.outcome {
        JobOutcome::Completed(result) => {
            step.transition = Transition::Complete;
            step.result = Some(result);
            return job_end(tx, &step).map(drop);
        }
        JobOutcome::Failed(error) => {
            step.transition = Transition::Fail;
            step.error = Some(error.clone());
            return job_end(tx, &step).map(drop);
        }
        JobOutcome::Cancelled => {
            step.transition = Transition::Cancel;
            return job_end(tx, &step).map(drop);
        }
        JobOutcome::Paused => step.transition = Transition::Pause,
        JobOutcome::Parked { deadline } => {
            // A decision that arrived while the worker still held the job must not be missed,
            // so such a job goes back to the queue instead of waiting.
            if !has_decided_waiting_step(tx, job_id)? {
                step.transition = Transition::Park;
                step.run_at = Some(*deadline);
            }
        }
        JobOutcome::Released => {}
    }
    job_move(tx, &step).map(drop)
}

fn has_decided_waiting_step(tx: &WriteTx<'_>, job_id: &str) -> Result<bool, StoreError> {
    let exists = query_value::<bool>(tx.conn, SELECT_DECIDED_WAITING, [job_id])?;
    Ok(exists.unwrap_or(false))
}

/// Builds an event about one step run of a job.
pub(crate) fn step_event(
    kind: &str,
    job_id: &str,
    step_id: &str,
    item: Option<u32>,
    data: serde_json::Value,
    at: i64,
) -> Event {
    Event {
        seq: 0,
        kind: kind.to_owned(),
        job_id: Some(job_id.to_owned()),
        step_id: Some(step_id.to_owned()),
        item,
        attempt: None,
        data,
        at,
    }
}

/// Adds the attempt number to an event.
trait WithAttempt {
    fn with_attempt(self, number: u32) -> Self;
}

impl WithAttempt for Event {
    fn with_attempt(mut self, number: u32) -> Event {
        self.attempt = Some(number);
        self
    }
}
