//! Decoding of stored rows into the store's records.

use std::str::FromStr;

use oaj_core::{JobState, Priority};
use rusqlite::types::FromSql;
use rusqlite::{Connection, Params, Row};
use serde_json::Value;

use super::errors::corrupt;
use crate::error::StoreError;
use crate::model::*;

/// The columns of `jobs` that [`job_from_row`] reads, in its order.
macro_rules! job_columns {
    () => {
        "id, workflow_id, workflow_version, state, priority, input, result, error, tags, \
         metadata, batch_id, depends_on, on_dependency_failure, run_at, timeout_ms, \
         control, lease_owner, lease_token, lease_expires_at, interruptions, \
         idempotency_key, prompt_tokens, completion_tokens, created_at, updated_at, \
         started_at, finished_at"
    };
}
pub(crate) use job_columns;

/// The number of columns in `job_columns!`: a query that reads more after them starts there.
pub(crate) const JOB_COLUMN_COUNT: usize = column_count(job_columns!());

/// Counts the names in a comma-separated column list.
const fn column_count(list: &str) -> usize {
    let bytes = list.as_bytes();
    let mut count = 1;
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b',' {
            count += 1;
        }
        index += 1;
    }
    count
}

/// The columns of `step_runs` that [`step_run_from_row`] reads, in its order.
macro_rules! step_run_columns {
    () => {
        "job_id, step_id, item, state, attempts, interruptions, output, error, \
         items_total, next_attempt_at, decision_approved, decision_by, decision_comment, \
         decision_at, updated_at"
    };
}
pub(crate) use step_run_columns;

/// The columns of `attempts` that [`attempt_from_row`] reads, in its order.
macro_rules! attempt_columns {
    () => {
        "id, job_id, step_id, item, number, worker_id, lease_token, state, error, log, \
         prompt_tokens, completion_tokens, started_at, finished_at"
    };
}
pub(crate) use attempt_columns;

/// The columns of `events` that [`event_from_row`] reads, in its order.
macro_rules! event_columns {
    () => {
        "seq, kind, job_id, step_id, item, attempt, data, at"
    };
}
pub(crate) use event_columns;

/// Runs a cached query and decodes every row with `decode`.
pub(crate) fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut decoded = Vec::new();
    while let Some(row) = rows.next()? {
        decoded.push(decode(row)?);
    }
    Ok(decoded)
}

/// Runs a cached query and decodes its first row, if any.
pub(crate) fn query_first<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    match rows.next()? {
        Some(row) => Ok(Some(decode(row)?)),
        None => Ok(None),
    }
}

/// Decodes a row of [`job_columns!`].
pub(crate) fn job_from_row(row: &Row<'_>) -> Result<Job, StoreError> {
    Ok(Job {
        id: row.get(0)?,
        workflow_id: row.get(1)?,
        workflow_version: row.get(2)?,
        state: parsed::<JobState>(row, 3, "jobs.state")?,
        priority: priority_from_rank(row.get(4)?)?,
        input: json(row, 5, "jobs.input")?,
        result: json_opt(row, 6, "jobs.result")?,
        error: row.get(7)?,
        tags: serde_json::from_value(json(row, 8, "jobs.tags")?)
            .map_err(|e| corrupt("jobs.tags", e))?,
        metadata: json(row, 9, "jobs.metadata")?,
        batch_id: row.get(10)?,
        depends_on: serde_json::from_value(json(row, 11, "jobs.depends_on")?)
            .map_err(|e| corrupt("jobs.depends_on", e))?,
        on_dependency_failure: dependency_failure_from_str(&row.get::<_, String>(12)?)?,
        run_at: row.get(13)?,
        timeout_ms: row.get(14)?,
        control: control_from_str(row.get::<_, Option<String>>(15)?.as_deref())?,
        lease_owner: row.get(16)?,
        lease_token: row.get(17)?,
        lease_expires_at: row.get(18)?,
        interruptions: row.get(19)?,
        idempotency_key: row.get(20)?,
        prompt_tokens: row.get(21)?,
        completion_tokens: row.get(22)?,
        created_at: row.get(23)?,
        updated_at: row.get(24)?,
        started_at: row.get(25)?,
        finished_at: row.get(26)?,
    })
}

/// Decodes a row of [`step_run_columns!`].
pub(crate) fn step_run_from_row(row: &Row<'_>) -> Result<StepRun, StoreError> {
    let decision = match row.get::<_, Option<bool>>(10)? {
        Some(approved) => Some(ApprovalDecision {
            approved,
            by: row.get(11)?,
            comment: row.get(12)?,
            at: row.get::<_, Option<i64>>(13)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(StepRun {
        job_id: row.get(0)?,
        step_id: row.get(1)?,
        item: item_from_column(row.get(2)?)?,
        state: parsed::<StepState>(row, 3, "step_runs.state")?,
        attempts: unsigned(row, 4, "step_runs.attempts")?,
        interruptions: unsigned(row, 5, "step_runs.interruptions")?,
        output: json_opt(row, 6, "step_runs.output")?,
        error: row.get(7)?,
        items_total: row
            .get::<_, Option<i64>>(8)?
            .map(|total| u32::try_from(total).map_err(|_| corrupt("step_runs.items_total", total)))
            .transpose()?,
        next_attempt_at: row.get(9)?,
        decision,
        updated_at: row.get(14)?,
    })
}

/// Decodes a row of [`attempt_columns!`].
pub(crate) fn attempt_from_row(row: &Row<'_>) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        id: row.get(0)?,
        job_id: row.get(1)?,
        step_id: row.get(2)?,
        item: item_from_column(row.get(3)?)?,
        number: unsigned(row, 4, "attempts.number")?,
        worker_id: row.get(5)?,
        lease_token: row.get(6)?,
        state: parsed::<AttemptState>(row, 7, "attempts.state")?,
        error: row.get(8)?,
        log: row.get(9)?,
        prompt_tokens: row.get(10)?,
        completion_tokens: row.get(11)?,
        started_at: row.get(12)?,
        finished_at: row.get(13)?,
    })
}

/// Decodes a row of [`event_columns!`].
pub(crate) fn event_from_row(row: &Row<'_>) -> Result<Event, StoreError> {
    let optional_u32 = |index: usize, column: &str| -> Result<Option<u32>, StoreError> {
        row.get::<_, Option<i64>>(index)?
            .map(|value| u32::try_from(value).map_err(|_| corrupt(column, value)))
            .transpose()
    };
    Ok(Event {
        seq: row.get(0)?,
        kind: row.get(1)?,
        job_id: row.get(2)?,
        step_id: row.get(3)?,
        item: optional_u32(4, "events.item")?,
        attempt: optional_u32(5, "events.attempt")?,
        data: json(row, 6, "events.data")?,
        at: row.get(7)?,
    })
}

/// Stores a fan-out item as its index, and the step itself as -1.
pub(crate) fn item_to_column(item: Option<u32>) -> i64 {
    item.map_or(-1, i64::from)
}

fn item_from_column(value: i64) -> Result<Option<u32>, StoreError> {
    if value == -1 {
        return Ok(None);
    }
    u32::try_from(value)
        .map(Some)
        .map_err(|_| corrupt("item", value))
}

fn priority_from_rank(rank: i64) -> Result<Priority, StoreError> {
    Priority::from_rank(rank).ok_or_else(|| corrupt("jobs.priority", rank))
}

/// Returns the name stored for a dependency failure policy.
pub(crate) fn dependency_failure_as_str(policy: DependencyFailure) -> &'static str {
    match policy {
        DependencyFailure::Fail => "fail",
        DependencyFailure::Run => "run",
    }
}

pub(crate) fn dependency_failure_from_str(text: &str) -> Result<DependencyFailure, StoreError> {
    match text {
        "fail" => Ok(DependencyFailure::Fail),
        "run" => Ok(DependencyFailure::Run),
        other => Err(corrupt("jobs.on_dependency_failure", other)),
    }
}

/// Returns the name stored for a control request.
pub(crate) fn control_as_str(control: Control) -> &'static str {
    match control {
        Control::Cancel => "cancel",
        Control::Pause => "pause",
    }
}

fn control_from_str(text: Option<&str>) -> Result<Option<Control>, StoreError> {
    super::claims::control_parse(text)
}

fn parsed<T: FromStr>(row: &Row<'_>, index: usize, column: &str) -> Result<T, StoreError> {
    let text: String = row.get(index)?;
    text.parse().map_err(|_| corrupt(column, text))
}

fn unsigned(row: &Row<'_>, index: usize, column: &str) -> Result<u32, StoreError> {
    let value: i64 = row.get(index)?;
    u32::try_from(value).map_err(|_| corrupt(column, value))
}

fn json(row: &Row<'_>, index: usize, column: &str) -> Result<Value, StoreError> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|e| corrupt(column, e))
}

fn json_opt(row: &Row<'_>, index: usize, column: &str) -> Result<Option<Value>, StoreError> {
    let text: Option<String> = row.get(index)?;
    text.map(|text| serde_json::from_str(&text).map_err(|e| corrupt(column, e)))
        .transpose()
}

/// Reads one value from a single-row query, such as a count.
pub(crate) fn query_value<T: FromSql>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
) -> Result<Option<T>, StoreError> {
    query_first(conn, sql, params, |row| Ok(row.get(0)?))
}

/// Runs a cached `INSERT` and returns the rowid of the new row.
///
/// Cheaper than `INSERT ... RETURNING`, for which SQLite collects the returned rows in a
/// temporary table first. The rowid is read from the same connection right after the insert,
/// so no other insert can come between.
pub(crate) fn insert_rowid(
    conn: &Connection,
    sql: &str,
    params: impl Params,
) -> Result<i64, StoreError> {
    conn.prepare_cached(sql)?.execute(params)?;
    Ok(conn.last_insert_rowid())
}
