//! Job finishes written together: the group writer hands over consecutive `job_finish` calls
//! that complete or fail their jobs, and this module writes all of them with a few statements
//! instead of a few statements each.
//!
//! Each call gets the rows, counter changes and events that `worker_writes::job_finish` would
//! give it alone, in the same order. Only the statements are shared: one locks the jobs and
//! checks their leases, then one each inserts the attempt rows, upserts the step runs and ends
//! the jobs. Dependents are settled by the per-job code, and only for the jobs that have
//! unsettled dependents.

use std::collections::{HashMap, HashSet};

use oaj_core::{transition, JobState, Transition};
use tokio_postgres::types::ToSql;

use super::db::Params;
use super::job_moves::{dependents_settle, job_move_note, JobMove};
use super::rows::priority_from_rank;
use super::tx::PgTx;
use super::worker_writes::{attempt_ended_event, attempt_started_event};
use crate::error::StoreError;
use crate::model::{AttemptRecord, JobFinish, JobOutcome};
use crate::sqlite::rows::item_to_column;

// Locks the jobs whose lease is current, in id order, so that two batches never wait for each
// other in a cycle. A row whose token or state does not match is not locked and not returned,
// which is how a lost lease shows. The lease check of a single call locks the row first and
// compares after, but both leave a lost lease unwritten.
const SELECT_LEASED_MANY: &str = "SELECT j.id, j.priority FROM jobs j
    JOIN unnest($1::text[], $2::bigint[]) AS l (id, token)
        ON j.id = l.id AND j.lease_token = l.token
    WHERE j.state = 'running' ORDER BY j.id FOR NO KEY UPDATE OF j";
// Runs after SELECT_LEASED_MANY in the same transaction, so the jobs are locked, and an insert
// or a dependency change that would add an edge to one of them waits for the commit.
const SELECT_WITH_UNSETTLED_DEPENDENTS: &str = "SELECT DISTINCT depends_on_id
    FROM job_dependencies WHERE depends_on_id = ANY($1::text[]) AND NOT settled";
// `ORDER BY n` hands out the attempt ids in the order of the records, as one insert per record
// would.
const INSERT_ATTEMPTS_ENDED_MANY: &str = "INSERT INTO attempts (job_id, step_id, item, number,
    worker_id, lease_token, state, error, log, prompt_tokens, completion_tokens, started_at,
    finished_at)
    SELECT job_id, step_id, item, number, worker_id, lease_token, state, error, log,
        prompt_tokens, completion_tokens, started_at, finished_at
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[],
        $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[],
        $13::bigint[]) WITH ORDINALITY AS a (job_id, step_id, item, number, worker_id,
        lease_token, state, error, log, prompt_tokens, completion_tokens, started_at,
        finished_at, n)
    ORDER BY n";
// The same upsert as one record's, for the last record of each step run: an upsert sets every
// column it writes, so the earlier records of a step run leave nothing behind.
const UPSERT_STEP_RUNS_MANY: &str = "INSERT INTO step_runs (job_id, step_id, item, state,
    attempts, output, error, next_attempt_at, updated_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[],
        $6::text[], $7::text[], $8::bigint[], $9::bigint[])
    ON CONFLICT (job_id, step_id, item) DO UPDATE SET state = excluded.state,
    attempts = excluded.attempts, output = excluded.output, error = excluded.error,
    next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at";
// The move of `job_moves::UPDATE_MOVE` to a final state, plus the tokens of the job's records.
const UPDATE_JOBS_END_MANY: &str = "UPDATE jobs SET state = e.state, updated_at = e.now,
    lease_owner = NULL, lease_expires_at = NULL, control = NULL, finished_at = e.now,
    result = e.result, error = e.error,
    prompt_tokens = jobs.prompt_tokens + e.prompt_tokens,
    completion_tokens = jobs.completion_tokens + e.completion_tokens
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[],
        $7::bigint[]) AS e (id, state, now, result, error, prompt_tokens, completion_tokens)
    WHERE jobs.id = e.id";

/// Reports whether the group writer may run `finish` with [`job_finish_many`]: it completes or
/// fails the job, and each of its attempt records carries the finish's own lease.
pub(crate) fn is_batchable(finish: &JobFinish) -> bool {
    let is_end = matches!(
        finish.outcome,
        JobOutcome::Completed(_) | JobOutcome::Failed(_)
    );
    is_end
        && finish
            .attempts
            .iter()
            .all(|record| record.start.lease == finish.lease && record.finish.lease == finish.lease)
}

/// A finish whose lease is current, with the move it makes.
struct Ended<'a> {
    finish: &'a JobFinish,
    step: JobMove<'a>,
    to: JobState,
}

/// Runs job finishes of distinct jobs, each [`is_batchable`], and returns one result per finish
/// in the order given: `Ok` for a finish that was written, [`StoreError::LeaseLost`] for one
/// whose lease was lost, which writes nothing.
///
/// A database error leaves the transaction partly written, so the caller must roll it back to
/// a savepoint taken before the call.
pub(crate) async fn job_finish_many(
    tx: &mut PgTx<'_>,
    finishes: &[&JobFinish],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let (leased, with_dependents) = leases_lock(tx, finishes).await?;
    let mut ended = Vec::with_capacity(leased.len());
    for finish in finishes {
        if let Some(&priority) = leased.get(finish.lease.job_id.as_str()) {
            ended.push(ended_new(finish, priority)?);
        }
    }
    if !ended.is_empty() {
        rows_write(tx, &ended).await?;
    }

    // Events and settlements follow the order of the calls, as if each had run alone.
    let mut ended = ended.into_iter().peekable();
    let mut results = Vec::with_capacity(finishes.len());
    for finish in finishes {
        let Some(end) = ended.next_if(|end| std::ptr::eq(end.finish, *finish)) else {
            results.push(Err(StoreError::LeaseLost {
                job_id: finish.lease.job_id.clone(),
                token: finish.lease.token,
            }));
            continue;
        };
        for record in &finish.attempts {
            tx.event_add(attempt_started_event(&record.start));
            tx.event_add(attempt_ended_event(&record.finish, record.start.number));
        }
        job_move_note(tx, &end.step, end.to);
        if with_dependents.contains(end.step.job_id) {
            dependents_settle(tx, end.step.job_id, end.to, finish.now).await?;
        }
        results.push(Ok(()));
    }
    Ok(results)
}

/// Locks the jobs whose lease is current and returns their priority ranks by job id, with the
/// ids of the jobs that have unsettled dependents. Both statements go out in one round trip, and
/// the server runs them in the order sent.
async fn leases_lock(
    tx: &PgTx<'_>,
    finishes: &[&JobFinish],
) -> Result<(HashMap<String, i64>, HashSet<String>), StoreError> {
    let job_ids: Vec<&str> = finishes.iter().map(|f| f.lease.job_id.as_str()).collect();
    let tokens: Vec<i64> = finishes.iter().map(|finish| finish.lease.token).collect();
    let leased_params: Params<'_> = &[&job_ids, &tokens];
    let dependents_params: Params<'_> = &[&job_ids];
    let db = tx.db();
    // The dependents must be read after the lock, so both statements are prepared first: one
    // that still had to be prepared would be sent only after its preparation came back.
    for sql in [SELECT_LEASED_MANY, SELECT_WITH_UNSETTLED_DEPENDENTS] {
        db.prepare(sql).await?;
    }
    let (leased_rows, with_dependents) = tokio::try_join!(
        db.query(SELECT_LEASED_MANY, leased_params),
        db.query(SELECT_WITH_UNSETTLED_DEPENDENTS, dependents_params),
    )?;

    let mut leased = HashMap::with_capacity(leased_rows.len());
    for row in leased_rows {
        leased.insert(row.try_get(0)?, row.try_get(1)?);
    }
    let with_dependents = with_dependents
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    Ok((leased, with_dependents))
}

/// Builds the move of a finish whose job is running with its lease current.
///
/// Panics when `oaj_core::transition` rejects the move, which [`is_batchable`] rules out.
fn ended_new(finish: &JobFinish, priority_rank: i64) -> Result<Ended<'_>, StoreError> {
    let (transition_kind, result, error) = match &finish.outcome {
        JobOutcome::Completed(result) => (Transition::Complete, Some(result), None),
        JobOutcome::Failed(error) => (Transition::Fail, None, Some(error.clone())),
        other => unreachable!("job_finish_many got a finish that is not batchable: {other:?}"),
    };
    let to = transition(JobState::Running, transition_kind).unwrap_or_else(|illegal| {
        panic!(
            "store asked for an illegal move of job {}: {illegal}",
            finish.lease.job_id
        )
    });
    assert!(to.is_final(), "a batched finish ends its job, not {to}");
    let priority = priority_from_rank(priority_rank)?;
    let step = JobMove {
        job_id: &finish.lease.job_id,
        from: JobState::Running,
        priority,
        transition: transition_kind,
        now: finish.now,
        result,
        error,
        run_at: None,
    };
    Ok(Ended { finish, step, to })
}

/// Writes the attempt rows, the step runs and the job rows of every ended finish, with the three
/// statements sent together.
async fn rows_write(tx: &PgTx<'_>, ended: &[Ended<'_>]) -> Result<(), StoreError> {
    let records: Vec<&AttemptRecord> = ended.iter().flat_map(|end| &end.finish.attempts).collect();
    let attempts = AttemptColumns::new(&records);
    let step_runs = StepRunColumns::new(&records);
    let jobs = JobColumns::new(ended);

    let (jobs_params, attempts_params, step_runs_params) =
        (jobs.params(), attempts.params(), step_runs.params());
    let db = tx.db();
    let has_records = !records.is_empty();
    let records_write = |sql, params| async move {
        if !has_records {
            return Ok(0);
        }
        db.execute(sql, params).await
    };
    let (updated, _, _) = tokio::try_join!(
        db.execute(UPDATE_JOBS_END_MANY, &jobs_params),
        records_write(INSERT_ATTEMPTS_ENDED_MANY, &attempts_params),
        records_write(UPSERT_STEP_RUNS_MANY, &step_runs_params),
    )?;
    assert_eq!(
        updated,
        ended.len() as u64,
        "the ended jobs are locked by this transaction"
    );
    Ok(())
}

/// The attempt rows of [`INSERT_ATTEMPTS_ENDED_MANY`], one array per column.
struct AttemptColumns<'a> {
    job_ids: Vec<&'a str>,
    step_ids: Vec<&'a str>,
    items: Vec<i64>,
    numbers: Vec<i64>,
    worker_ids: Vec<&'a str>,
    tokens: Vec<i64>,
    states: Vec<&'static str>,
    errors: Vec<Option<&'a str>>,
    logs: Vec<&'a str>,
    prompt_tokens: Vec<i64>,
    completion_tokens: Vec<i64>,
    started_ats: Vec<i64>,
    finished_ats: Vec<i64>,
}

impl<'a> AttemptColumns<'a> {
    fn new(records: &[&'a AttemptRecord]) -> AttemptColumns<'a> {
        AttemptColumns {
            job_ids: records
                .iter()
                .map(|r| r.start.lease.job_id.as_str())
                .collect(),
            step_ids: records.iter().map(|r| r.start.step_id.as_str()).collect(),
            items: records
                .iter()
                .map(|r| item_to_column(r.start.item))
                .collect(),
            numbers: records.iter().map(|r| i64::from(r.start.number)).collect(),
            worker_ids: records.iter().map(|r| r.start.worker_id.as_str()).collect(),
            tokens: records.iter().map(|r| r.start.lease.token).collect(),
            states: records.iter().map(|r| r.finish.state.as_str()).collect(),
            errors: records.iter().map(|r| r.finish.error.as_deref()).collect(),
            logs: records.iter().map(|r| r.finish.log.as_str()).collect(),
            prompt_tokens: records.iter().map(|r| r.finish.prompt_tokens).collect(),
            completion_tokens: records.iter().map(|r| r.finish.completion_tokens).collect(),
            started_ats: records.iter().map(|r| r.start.now).collect(),
            finished_ats: records.iter().map(|r| r.finish.now).collect(),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.job_ids,
            &self.step_ids,
            &self.items,
            &self.numbers,
            &self.worker_ids,
            &self.tokens,
            &self.states,
            &self.errors,
            &self.logs,
            &self.prompt_tokens,
            &self.completion_tokens,
            &self.started_ats,
            &self.finished_ats,
        ]
    }
}

/// The step runs of [`UPSERT_STEP_RUNS_MANY`]: for each step run, the values of its last record.
struct StepRunColumns<'a> {
    job_ids: Vec<&'a str>,
    step_ids: Vec<&'a str>,
    items: Vec<i64>,
    states: Vec<&'static str>,
    attempts: Vec<i64>,
    outputs: Vec<Option<String>>,
    errors: Vec<Option<&'a str>>,
    next_attempt_ats: Vec<Option<i64>>,
    updated_ats: Vec<i64>,
}

impl<'a> StepRunColumns<'a> {
    fn new(records: &[&'a AttemptRecord]) -> StepRunColumns<'a> {
        // One row per step run, because one upsert statement may not change a row twice.
        let mut last: HashMap<(&str, &str, i64), usize> = HashMap::new();
        let mut order = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let start = &record.start;
            let key = (
                start.lease.job_id.as_str(),
                start.step_id.as_str(),
                item_to_column(start.item),
            );
            if last.insert(key, index).is_none() {
                order.push(key);
            }
        }
        let chosen: Vec<&AttemptRecord> = order.iter().map(|key| records[last[key]]).collect();
        StepRunColumns {
            job_ids: chosen
                .iter()
                .map(|r| r.start.lease.job_id.as_str())
                .collect(),
            step_ids: chosen.iter().map(|r| r.start.step_id.as_str()).collect(),
            items: chosen
                .iter()
                .map(|r| item_to_column(r.start.item))
                .collect(),
            states: chosen
                .iter()
                .map(|r| r.finish.step_state.as_str())
                .collect(),
            attempts: chosen.iter().map(|r| i64::from(r.start.number)).collect(),
            outputs: chosen
                .iter()
                .map(|r| r.finish.output.as_ref().map(|output| output.to_string()))
                .collect(),
            errors: chosen.iter().map(|r| r.finish.error.as_deref()).collect(),
            next_attempt_ats: chosen.iter().map(|r| r.finish.next_attempt_at).collect(),
            updated_ats: chosen.iter().map(|r| r.finish.now).collect(),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.job_ids,
            &self.step_ids,
            &self.items,
            &self.states,
            &self.attempts,
            &self.outputs,
            &self.errors,
            &self.next_attempt_ats,
            &self.updated_ats,
        ]
    }
}

/// The job rows of [`UPDATE_JOBS_END_MANY`], with the tokens of each job's records added up.
struct JobColumns<'a> {
    ids: Vec<&'a str>,
    states: Vec<&'static str>,
    nows: Vec<i64>,
    results: Vec<Option<String>>,
    errors: Vec<Option<&'a str>>,
    prompt_tokens: Vec<i64>,
    completion_tokens: Vec<i64>,
}

impl<'a> JobColumns<'a> {
    fn new(ended: &'a [Ended<'a>]) -> JobColumns<'a> {
        let tokens_sum = |end: &Ended<'_>, tokens: fn(&AttemptRecord) -> i64| -> i64 {
            end.finish.attempts.iter().map(tokens).sum()
        };
        JobColumns {
            ids: ended.iter().map(|end| end.step.job_id).collect(),
            states: ended.iter().map(|end| end.to.as_str()).collect(),
            nows: ended.iter().map(|end| end.step.now).collect(),
            results: ended
                .iter()
                .map(|end| end.step.result.map(|result| result.to_string()))
                .collect(),
            errors: ended.iter().map(|end| end.step.error.as_deref()).collect(),
            prompt_tokens: ended
                .iter()
                .map(|end| tokens_sum(end, |r| r.finish.prompt_tokens))
                .collect(),
            completion_tokens: ended
                .iter()
                .map(|end| tokens_sum(end, |r| r.finish.completion_tokens))
                .collect(),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.ids,
            &self.states,
            &self.nows,
            &self.results,
            &self.errors,
            &self.prompt_tokens,
            &self.completion_tokens,
        ]
    }
}
