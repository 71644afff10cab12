//! Decoding of PostgreSQL rows into the store's records. The column lists match the SQLite
//! store's, so both decode the same fields in the same order.

use std::str::FromStr;

use oaj_core::{JobState, Priority};
use serde_json::Value;
use tokio_postgres::Row;

use crate::error::StoreError;
use crate::model::*;
use crate::sqlite::claims::control_parse;
use crate::sqlite::errors::corrupt;
use crate::sqlite::rows::dependency_failure_from_str;

pub(crate) use crate::sqlite::rows::{
    attempt_columns, event_columns, job_columns, step_run_columns,
};

/// Decodes a row of [`job_columns!`].
pub(crate) fn job_from_row(row: &Row) -> Result<Job, StoreError> {
    Ok(Job {
        id: row.try_get(0)?,
        workflow_id: row.try_get(1)?,
        workflow_version: row.try_get(2)?,
        state: parsed::<JobState>(row, 3, "jobs.state")?,
        priority: priority_from_rank(row.try_get(4)?)?,
        input: json(row, 5, "jobs.input")?,
        result: json_opt(row, 6, "jobs.result")?,
        error: row.try_get(7)?,
        tags: serde_json::from_value(json(row, 8, "jobs.tags")?)
            .map_err(|e| corrupt("jobs.tags", e))?,
        metadata: json(row, 9, "jobs.metadata")?,
        batch_id: row.try_get(10)?,
        depends_on: serde_json::from_value(json(row, 11, "jobs.depends_on")?)
            .map_err(|e| corrupt("jobs.depends_on", e))?,
        on_dependency_failure: dependency_failure_from_str(&row.try_get::<_, String>(12)?)?,
        run_at: row.try_get(13)?,
        timeout_ms: row.try_get(14)?,
        control: control_parse(row.try_get::<_, Option<String>>(15)?.as_deref())?,
        lease_owner: row.try_get(16)?,
        lease_token: row.try_get(17)?,
        lease_expires_at: row.try_get(18)?,
        interruptions: row.try_get(19)?,
        idempotency_key: row.try_get(20)?,
        prompt_tokens: row.try_get(21)?,
        completion_tokens: row.try_get(22)?,
        created_at: row.try_get(23)?,
        updated_at: row.try_get(24)?,
        started_at: row.try_get(25)?,
        finished_at: row.try_get(26)?,
    })
}

/// Decodes a row of [`step_run_columns!`].
pub(crate) fn step_run_from_row(row: &Row) -> Result<StepRun, StoreError> {
    let decision = match row.try_get::<_, Option<bool>>(10)? {
        Some(approved) => Some(ApprovalDecision {
            approved,
            by: row.try_get(11)?,
            comment: row.try_get(12)?,
            at: row.try_get::<_, Option<i64>>(13)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(StepRun {
        job_id: row.try_get(0)?,
        step_id: row.try_get(1)?,
        item: item_from_column(row.try_get(2)?)?,
        state: parsed::<StepState>(row, 3, "step_runs.state")?,
        attempts: unsigned(row, 4, "step_runs.attempts")?,
        interruptions: unsigned(row, 5, "step_runs.interruptions")?,
        output: json_opt(row, 6, "step_runs.output")?,
        error: row.try_get(7)?,
        items_total: unsigned_opt(row, 8, "step_runs.items_total")?,
        next_attempt_at: row.try_get(9)?,
        decision,
        updated_at: row.try_get(14)?,
    })
}

/// Decodes a row of [`attempt_columns!`].
pub(crate) fn attempt_from_row(row: &Row) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        id: row.try_get(0)?,
        job_id: row.try_get(1)?,
        step_id: row.try_get(2)?,
        item: item_from_column(row.try_get(3)?)?,
        number: unsigned(row, 4, "attempts.number")?,
        worker_id: row.try_get(5)?,
        lease_token: row.try_get(6)?,
        state: parsed::<AttemptState>(row, 7, "attempts.state")?,
        error: row.try_get(8)?,
        log: row.try_get(9)?,
        prompt_tokens: row.try_get(10)?,
        completion_tokens: row.try_get(11)?,
        started_at: row.try_get(12)?,
        finished_at: row.try_get(13)?,
    })
}

/// Decodes a row of [`event_columns!`].
pub(crate) fn event_from_row(row: &Row) -> Result<Event, StoreError> {
    Ok(Event {
        seq: row.try_get(0)?,
        kind: row.try_get(1)?,
        job_id: row.try_get(2)?,
        step_id: row.try_get(3)?,
        item: unsigned_opt(row, 4, "events.item")?,
        attempt: unsigned_opt(row, 5, "events.attempt")?,
        data: json(row, 6, "events.data")?,
        at: row.try_get(7)?,
    })
}

/// Decodes every row with `decode`.
pub(crate) fn decode_all<T>(
    rows: Vec<Row>,
    decode: impl Fn(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(decode).collect()
}

/// Decodes a stored fan-out item: its index, or -1 for the step itself.
pub(crate) fn item_from_column(value: i64) -> Result<Option<u32>, StoreError> {
    if value == -1 {
        return Ok(None);
    }
    u32::try_from(value)
        .map(Some)
        .map_err(|_| corrupt("item", value))
}

/// Decodes a job state from a text column.
pub(crate) fn state_at(row: &Row, index: usize) -> Result<JobState, StoreError> {
    parsed::<JobState>(row, index, "jobs.state")
}

/// Decodes a priority rank.
pub(crate) fn priority_from_rank(rank: i64) -> Result<Priority, StoreError> {
    Priority::from_rank(rank).ok_or_else(|| corrupt("jobs.priority", rank))
}

fn parsed<T: FromStr>(row: &Row, index: usize, column: &str) -> Result<T, StoreError> {
    let text: String = row.try_get(index)?;
    text.parse().map_err(|_| corrupt(column, text))
}

fn unsigned(row: &Row, index: usize, column: &str) -> Result<u32, StoreError> {
    let value: i64 = row.try_get(index)?;
    u32::try_from(value).map_err(|_| corrupt(column, value))
}

fn unsigned_opt(row: &Row, index: usize, column: &str) -> Result<Option<u32>, StoreError> {
    row.try_get::<_, Option<i64>>(index)?
        .map(|value| u32::try_from(value).map_err(|_| corrupt(column, value)))
        .transpose()
}

fn json(row: &Row, index: usize, column: &str) -> Result<Value, StoreError> {
    let text: String = row.try_get(index)?;
    serde_json::from_str(&text).map_err(|e| corrupt(column, e))
}

fn json_opt(row: &Row, index: usize, column: &str) -> Result<Option<Value>, StoreError> {
    let text: Option<String> = row.try_get(index)?;
    text.map(|text| serde_json::from_str(&text).map_err(|e| corrupt(column, e)))
        .transpose()
}
