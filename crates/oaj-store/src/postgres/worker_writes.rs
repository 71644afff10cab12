//! The writes a worker makes under its lease: attempts, step runs and the end of its lease.
//! Each is fenced: it locks the job's row and runs only while the worker's lease is current.

use oaj_core::Transition;
use serde_json::json;

use super::claims::lease_check;
use super::db::Params;
use super::job_moves::{job_end, job_head, job_move, JobMove};
use super::tx::PgTx;
use crate::error::StoreError;
use crate::model::{
    AttemptFinish, AttemptRecord, AttemptStart, Control, Event, JobFinish, JobOutcome, Lease,
    StepUpdate,
};
use crate::sqlite::claims::control_parse;
use crate::sqlite::rows::item_to_column;

const INSERT_ATTEMPT: &str = "INSERT INTO attempts (job_id, step_id, item, number, worker_id,
    lease_token, state, started_at) VALUES ($1, $2, $3, $4, $5, $6, 'running', $7) RETURNING id";
const UPSERT_STEP_RUNNING: &str = "INSERT INTO step_runs (job_id, step_id, item, state, attempts,
    updated_at) VALUES ($1, $2, $3, 'running', $4, $5)
    ON CONFLICT (job_id, step_id, item) DO UPDATE SET state = 'running',
    attempts = excluded.attempts, next_attempt_at = NULL, updated_at = excluded.updated_at";
const UPDATE_ATTEMPT_END: &str = "UPDATE attempts SET state = $3, error = $4, log = $5,
    prompt_tokens = $6, completion_tokens = $7, finished_at = $8
    WHERE id = $1 AND job_id = $2 AND state = 'running' RETURNING number";
const UPDATE_STEP_AFTER_ATTEMPT: &str = "UPDATE step_runs SET state = $4, output = $5,
    error = $6, next_attempt_at = $7, updated_at = $8
    WHERE job_id = $1 AND step_id = $2 AND item = $3";
const UPDATE_JOB_TOKENS: &str = "UPDATE jobs SET prompt_tokens = prompt_tokens + $2,
    completion_tokens = completion_tokens + $3, updated_at = $4 WHERE id = $1";
const UPSERT_STEP: &str = "INSERT INTO step_runs (job_id, step_id, item, state, output, error,
    items_total, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (job_id, step_id, item) DO UPDATE SET state = excluded.state,
    output = COALESCE(excluded.output, step_runs.output), error = excluded.error,
    items_total = COALESCE(excluded.items_total, step_runs.items_total),
    updated_at = excluded.updated_at";
const INSERT_ATTEMPT_ENDED: &str = "INSERT INTO attempts (job_id, step_id, item, number,
    worker_id, lease_token, state, error, log, prompt_tokens, completion_tokens, started_at,
    finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id";
const UPSERT_STEP_AFTER_ATTEMPT: &str = "INSERT INTO step_runs (job_id, step_id, item, state,
    attempts, output, error, next_attempt_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (job_id, step_id, item) DO UPDATE SET state = excluded.state,
    attempts = excluded.attempts, output = excluded.output, error = excluded.error,
    next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at";
// The job's row is locked since the lease check, so no request can arrive between this read and
// the commit.
const SELECT_CONTROL: &str = "SELECT control FROM jobs WHERE id = $1";
const SELECT_DECIDED_WAITING: &str = "SELECT EXISTS (SELECT 1 FROM step_runs
    WHERE job_id = $1 AND state = 'waiting' AND decision_at IS NOT NULL)";

/// Records the start of an attempt and marks its step run running. Returns the attempt id.
pub(crate) async fn attempt_start(
    tx: &mut PgTx<'_>,
    start: &AttemptStart,
) -> Result<i64, StoreError> {
    lease_check(tx, &start.lease).await?;
    let job_id = &start.lease.job_id;
    let item = item_to_column(start.item);
    let number = i64::from(start.number);
    let id: i64 = tx
        .db()
        .query_value(
            INSERT_ATTEMPT,
            &[
                job_id,
                &start.step_id,
                &item,
                &number,
                &start.worker_id,
                &start.lease.token,
                &start.now,
            ],
        )
        .await?;
    tx.execute(
        UPSERT_STEP_RUNNING,
        &[job_id, &start.step_id, &item, &number, &start.now],
    )
    .await?;
    tx.event_add(attempt_started_event(start));
    Ok(id)
}

/// Records the end of an attempt, the new state of its step run and the tokens it used, and
/// returns the request pending on the job.
pub(crate) async fn attempt_finish(
    tx: &mut PgTx<'_>,
    finish: &AttemptFinish,
) -> Result<Option<Control>, StoreError> {
    lease_check(tx, &finish.lease).await?;
    let job_id = &finish.lease.job_id;
    let row = tx
        .query_opt(
            UPDATE_ATTEMPT_END,
            &[
                &finish.attempt_id,
                job_id,
                &finish.state.as_str(),
                &finish.error,
                &finish.log,
                &finish.prompt_tokens,
                &finish.completion_tokens,
                &finish.now,
            ],
        )
        .await?
        .ok_or_else(|| StoreError::AttemptNotRunning {
            job_id: job_id.clone(),
            attempt_id: finish.attempt_id,
        })?;
    let number: i64 = row.try_get(0)?;
    let output = finish.output.as_ref().map(|output| output.to_string());
    tx.execute(
        UPDATE_STEP_AFTER_ATTEMPT,
        &[
            job_id,
            &finish.step_id,
            &item_to_column(finish.item),
            &finish.step_state.as_str(),
            &output,
            &finish.error,
            &finish.next_attempt_at,
            &finish.now,
        ],
    )
    .await?;
    tx.execute(
        UPDATE_JOB_TOKENS,
        &[
            job_id,
            &finish.prompt_tokens,
            &finish.completion_tokens,
            &finish.now,
        ],
    )
    .await?;

    let number = u32::try_from(number)
        .map_err(|_| crate::sqlite::errors::corrupt("attempts.number", number))?;
    tx.event_add(attempt_ended_event(finish, number));

    control_read(tx, job_id).await
}

/// Returns the request pending on a job whose lease the caller has checked.
async fn control_read(tx: &mut PgTx<'_>, job_id: &str) -> Result<Option<Control>, StoreError> {
    let control: Option<String> = tx.db().query_value(SELECT_CONTROL, &[&job_id]).await?;
    control_parse(control.as_deref())
}

/// Records a whole attempt, its start and its end, and returns its id. Writes the same rows and
/// events as [`attempt_start`] followed by [`attempt_finish`], with one lease check, and sends the
/// three statements after the check together (tokio-postgres pipelines them on the connection).
/// The call waits for two round trips, where the two calls ran eight statements in a row.
pub(crate) async fn attempt_record(
    tx: &mut PgTx<'_>,
    start: &AttemptStart,
    finish: &AttemptFinish,
) -> Result<i64, StoreError> {
    lease_check(tx, &start.lease).await?;
    attempt_record_leased(tx, start, finish).await
}

/// Records a whole attempt once the caller has checked its lease.
async fn attempt_record_leased(
    tx: &mut PgTx<'_>,
    start: &AttemptStart,
    finish: &AttemptFinish,
) -> Result<i64, StoreError> {
    let job_id = &start.lease.job_id;
    let item = item_to_column(start.item);
    let number = i64::from(start.number);
    let output = finish.output.as_ref().map(|output| output.to_string());

    let attempt_params: Params<'_> = &[
        job_id,
        &start.step_id,
        &item,
        &number,
        &start.worker_id,
        &start.lease.token,
        &finish.state.as_str(),
        &finish.error,
        &finish.log,
        &finish.prompt_tokens,
        &finish.completion_tokens,
        &start.now,
        &finish.now,
    ];
    let step_params: Params<'_> = &[
        job_id,
        &start.step_id,
        &item,
        &finish.step_state.as_str(),
        &number,
        &output,
        &finish.error,
        &finish.next_attempt_at,
        &finish.now,
    ];
    let tokens_params: Params<'_> = &[
        job_id,
        &finish.prompt_tokens,
        &finish.completion_tokens,
        &finish.now,
    ];

    let db = tx.db();
    // Errors in statement order, as in `claims::job_claim`.
    let (id, step, tokens) = tokio::join!(
        db.query_value::<i64>(INSERT_ATTEMPT_ENDED, attempt_params),
        db.execute(UPSERT_STEP_AFTER_ATTEMPT, step_params),
        db.execute(UPDATE_JOB_TOKENS, tokens_params),
    );
    let id = id?;
    step?;
    tokens?;

    tx.event_add(attempt_started_event(start));
    tx.event_add(attempt_ended_event(finish, start.number));
    Ok(id)
}

/// Builds the `attempt.started` event of `start`.
pub(crate) fn attempt_started_event(start: &AttemptStart) -> Event {
    let data = json!({ "worker_id": start.worker_id });
    let mut event = step_event(
        "attempt.started",
        &start.lease.job_id,
        &start.step_id,
        start.item,
        data,
        start.now,
    );
    event.attempt = Some(start.number);
    event
}

/// Builds the `attempt.<state>` event of `finish`, the end of attempt `number`.
pub(crate) fn attempt_ended_event(finish: &AttemptFinish, number: u32) -> Event {
    let kind = format!("attempt.{}", finish.state.as_str());
    let data = json!({ "step_state": finish.step_state.as_str(), "error": finish.error });
    let mut event = step_event(
        &kind,
        &finish.lease.job_id,
        &finish.step_id,
        finish.item,
        data,
        finish.now,
    );
    event.attempt = Some(number);
    event
}

/// Changes a step run without an attempt and writes its `step.<state>` event.
pub(crate) async fn step_update(tx: &mut PgTx<'_>, update: &StepUpdate) -> Result<(), StoreError> {
    lease_check(tx, &update.lease).await?;
    let job_id = &update.lease.job_id;
    let output = update.output.as_ref().map(|output| output.to_string());
    let items_total = update.items_total.map(i64::from);
    tx.execute(
        UPSERT_STEP,
        &[
            job_id,
            &update.step_id,
            &item_to_column(update.item),
            &update.state.as_str(),
            &output,
            &update.error,
            &items_total,
            &update.now,
        ],
    )
    .await?;
    let kind = format!("step.{}", update.state);
    let data = json!({ "error": update.error, "items_total": update.items_total });
    tx.event_add(step_event(
        &kind,
        job_id,
        &update.step_id,
        update.item,
        data,
        update.now,
    ));
    Ok(())
}

/// Records whole attempts in order and returns the request pending on the job, if any.
pub(crate) async fn attempts_record(
    tx: &mut PgTx<'_>,
    records: &[AttemptRecord],
) -> Result<Option<Control>, StoreError> {
    attempts_record_leased(tx, records, None).await?;
    match records.last() {
        Some(record) => control_read(tx, &record.start.lease.job_id).await,
        None => Ok(None),
    }
}

/// Records whole attempts, skipping the lease check of those whose lease is `checked`.
async fn attempts_record_leased<'r>(
    tx: &mut PgTx<'_>,
    records: &'r [AttemptRecord],
    mut checked: Option<&'r Lease>,
) -> Result<(), StoreError> {
    for record in records {
        let lease = &record.start.lease;
        if checked != Some(lease) || record.finish.lease != *lease {
            lease_check(tx, lease).await?;
            lease_check(tx, &record.finish.lease).await?;
            checked = Some(lease);
        }
        attempt_record_leased(tx, &record.start, &record.finish).await?;
    }
    Ok(())
}

/// Ends the worker's lease on a job and moves the job as `finish.outcome` requests.
pub(crate) async fn job_finish(tx: &mut PgTx<'_>, finish: &JobFinish) -> Result<(), StoreError> {
    lease_check(tx, &finish.lease).await?;
    attempts_record_leased(tx, &finish.attempts, Some(&finish.lease)).await?;
    let job_id = finish.lease.job_id.as_str();
    let head = job_head(tx, job_id)
        .await?
        .expect("lease_check found the job");
    let mut step = JobMove::new(job_id, &head, Transition::Release, finish.now);
    match &finish.outcome {
        JobOutcome::Completed(result) => {
            step.transition = Transition::Complete;
            step.result = Some(result);
            return job_end(tx, &step).await.map(drop);
        }
        JobOutcome::Failed(error) => {
            step.transition = Transition::Fail;
            step.error = Some(error.clone());
            return job_end(tx, &step).await.map(drop);
        }
        JobOutcome::Cancelled => {
            step.transition = Transition::Cancel;
            return job_end(tx, &step).await.map(drop);
        }
        JobOutcome::Paused => step.transition = Transition::Pause,
        JobOutcome::Parked { deadline } => {
            // A decision that arrived while the worker still held the job must not be missed,
            // so such a job goes back to the queue instead of waiting.
            let is_decided: bool = tx
                .db()
                .query_value(SELECT_DECIDED_WAITING, &[&job_id])
                .await?;
            if !is_decided {
                step.transition = Transition::Park;
                step.run_at = Some(*deadline);
            }
        }
        JobOutcome::Released => {}
    }
    job_move(tx, &step).await.map(drop)
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
    crate::sqlite::worker_writes::step_event(kind, job_id, step_id, item, data, at)
}
