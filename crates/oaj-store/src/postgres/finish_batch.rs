//! Job finishes written together: the group writer hands over consecutive `job_finish` calls
//! that complete or fail their jobs, and this module writes all of them with two statements
//! instead of a few statements each.
//!
//! Each call gets the rows, counter changes and events that `worker_writes::job_finish` would
//! give it alone, in the same order. Only the statements are shared: one locks the jobs whose
//! lease is current and writes their attempt rows, step runs and ends, the other finds which of
//! them have unsettled dependents, both in one round trip. Dependents are settled by the per-job
//! code, and only for the jobs that have some.

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

// Ends the jobs whose lease is current, with their attempt rows and step runs, in one statement.
// `leased` locks those jobs in id order, so that two batches never wait for each other in a
// cycle. A row whose token or state does not match is not locked and not returned, which is how a
// lost lease shows. The writes take only the rows of locked jobs, by a join with `leased`, so one
// statement checks the leases once instead of once per write. The job UPDATE reaches the rows
// through the primary key: if a job's row changed between the statement's snapshot and its lock,
// the lock and the UPDATE both follow it to its newest version. `ORDER BY n` hands out the attempt
// ids in the order of the records, as one insert per record would. The upsert writes the last
// record of each step run: it sets every column it writes, so earlier records leave nothing
// behind. The last column reports whether the UPDATE ended the job.
const END_LEASED_MANY: &str = "WITH leased AS (
    SELECT j.id, j.priority FROM jobs j
    JOIN unnest($1::text[], $2::bigint[]) AS l (id, token)
        ON j.id = l.id AND j.lease_token = l.token
    WHERE j.state = 'running' ORDER BY j.id FOR NO KEY UPDATE OF j),
attempts_inserted AS (
    INSERT INTO attempts (job_id, step_id, item, number, worker_id, lease_token, state, error,
        log, prompt_tokens, completion_tokens, started_at, finished_at)
    SELECT job_id, step_id, item, number, worker_id, lease_token, state, error, log,
        prompt_tokens, completion_tokens, started_at, finished_at
    FROM unnest($9::text[], $10::text[], $11::bigint[], $12::bigint[], $13::text[],
        $14::bigint[], $15::text[], $16::text[], $17::text[], $18::bigint[], $19::bigint[],
        $20::bigint[], $21::bigint[]) WITH ORDINALITY AS a (job_id, step_id, item, number,
        worker_id, lease_token, state, error, log, prompt_tokens, completion_tokens, started_at,
        finished_at, n)
    WHERE a.job_id IN (SELECT id FROM leased)
    ORDER BY n),
step_runs_upserted AS (
    INSERT INTO step_runs (job_id, step_id, item, state, attempts, output, error,
        next_attempt_at, updated_at)
    SELECT job_id, step_id, item, state, attempts, output, error, next_attempt_at, updated_at
    FROM unnest($22::text[], $23::text[], $24::bigint[], $25::text[], $26::bigint[],
        $27::text[], $28::text[], $29::bigint[], $30::bigint[]) AS s (job_id, step_id, item,
        state, attempts, output, error, next_attempt_at, updated_at)
    WHERE s.job_id IN (SELECT id FROM leased)
    ON CONFLICT (job_id, step_id, item) DO UPDATE SET state = excluded.state,
    attempts = excluded.attempts, output = excluded.output, error = excluded.error,
    next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at),
ended AS (
    UPDATE jobs SET state = e.state, updated_at = e.now,
    lease_owner = NULL, lease_expires_at = NULL, control = NULL, finished_at = e.now,
    result = e.result, error = e.error,
    prompt_tokens = jobs.prompt_tokens + e.prompt_tokens,
    completion_tokens = jobs.completion_tokens + e.completion_tokens
    FROM unnest($1::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::bigint[],
        $8::bigint[]) AS e (id, state, now, result, error, prompt_tokens, completion_tokens)
    WHERE jobs.id = e.id AND e.id IN (SELECT id FROM leased)
    RETURNING jobs.id)
SELECT l.id, l.priority, EXISTS (SELECT 1 FROM ended WHERE ended.id = l.id) FROM leased l";
// Runs after END_LEASED_MANY in the same transaction, as a statement of its own, so its snapshot
// is taken after the jobs were locked. An insert that adds an edge to one of them either committed
// before the lock, and this read sees the edge, or waits for the commit.
const SELECT_WITH_UNSETTLED_DEPENDENTS: &str = "SELECT DISTINCT depends_on_id
    FROM job_dependencies WHERE depends_on_id = ANY($1::text[]) AND NOT settled";

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
    let moves: Vec<(Transition, JobState)> = finishes.iter().map(|f| end_move(f)).collect();
    let (leased, with_dependents) = statements_run(tx, finishes, &moves).await?;
    let mut ended = Vec::with_capacity(leased.len());
    for (finish, &(transition_kind, to)) in finishes.iter().zip(&moves) {
        if let Some(&priority) = leased.get(finish.lease.job_id.as_str()) {
            ended.push(ended_new(finish, transition_kind, to, priority)?);
        }
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

/// Runs both statements of the batch in one round trip, and returns the priority ranks of the
/// jobs whose lease is current, by job id, with the ids of the jobs that have unsettled
/// dependents.
async fn statements_run(
    tx: &PgTx<'_>,
    finishes: &[&JobFinish],
    moves: &[(Transition, JobState)],
) -> Result<(HashMap<String, i64>, HashSet<String>), StoreError> {
    let records: Vec<&AttemptRecord> = finishes.iter().flat_map(|f| &f.attempts).collect();
    let attempts = AttemptColumns::new(&records);
    let step_runs = StepRunColumns::new(&records);
    let jobs = JobColumns::new(finishes, moves);
    let mut end_params = jobs.params();
    end_params.extend(attempts.params());
    end_params.extend(step_runs.params());
    let dependents_params: Params<'_> = &[&jobs.ids];

    let db = tx.db();
    // A statement that still had to be prepared would be sent only after its preparation came
    // back, out of order, so both are prepared first.
    for sql in [END_LEASED_MANY, SELECT_WITH_UNSETTLED_DEPENDENTS] {
        db.prepare(sql).await?;
    }
    // Errors in statement order, as in `claims::job_claim`.
    let (leased_rows, with_dependents) = tokio::join!(
        db.query(END_LEASED_MANY, &end_params),
        db.query(SELECT_WITH_UNSETTLED_DEPENDENTS, dependents_params),
    );
    let (leased_rows, with_dependents) = (leased_rows?, with_dependents?);

    let mut leased = HashMap::with_capacity(leased_rows.len());
    for row in leased_rows {
        let is_ended: bool = row.try_get(2)?;
        assert!(is_ended, "the batch ends every job it locked");
        leased.insert(row.try_get(0)?, row.try_get(1)?);
    }
    let with_dependents = with_dependents
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    Ok((leased, with_dependents))
}

/// Returns the transition of a finish and the state it ends its job in.
///
/// Panics when `oaj_core::transition` rejects the move, which [`is_batchable`] rules out.
fn end_move(finish: &JobFinish) -> (Transition, JobState) {
    let transition_kind = match &finish.outcome {
        JobOutcome::Completed(_) => Transition::Complete,
        JobOutcome::Failed(_) => Transition::Fail,
        other => unreachable!("job_finish_many got a finish that is not batchable: {other:?}"),
    };
    let to = transition(JobState::Running, transition_kind).unwrap_or_else(|illegal| {
        panic!(
            "store asked for an illegal move of job {}: {illegal}",
            finish.lease.job_id
        )
    });
    assert!(to.is_final(), "a batched finish ends its job, not {to}");
    (transition_kind, to)
}

/// Builds the move of a finish whose job was running with its lease current.
fn ended_new(
    finish: &JobFinish,
    transition_kind: Transition,
    to: JobState,
    priority_rank: i64,
) -> Result<Ended<'_>, StoreError> {
    let (result, error) = match &finish.outcome {
        JobOutcome::Completed(result) => (Some(result), None),
        JobOutcome::Failed(error) => (None, Some(error.clone())),
        other => unreachable!("job_finish_many got a finish that is not batchable: {other:?}"),
    };
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

/// The attempt rows of [`END_LEASED_MANY`], one array per column.
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

/// The step runs of [`END_LEASED_MANY`]: for each step run, the values of its last record.
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

/// The job rows of [`END_LEASED_MANY`] with their leases, and the tokens of each job's records
/// added up.
struct JobColumns<'a> {
    ids: Vec<&'a str>,
    states: Vec<&'static str>,
    nows: Vec<i64>,
    results: Vec<Option<String>>,
    errors: Vec<Option<&'a str>>,
    prompt_tokens: Vec<i64>,
    completion_tokens: Vec<i64>,
    lease_tokens: Vec<i64>,
}

impl<'a> JobColumns<'a> {
    fn new(finishes: &[&'a JobFinish], moves: &[(Transition, JobState)]) -> JobColumns<'a> {
        let tokens_sum = |finish: &JobFinish, tokens: fn(&AttemptRecord) -> i64| -> i64 {
            finish.attempts.iter().map(tokens).sum()
        };
        let (results, errors) = finishes
            .iter()
            .map(|finish| match &finish.outcome {
                JobOutcome::Completed(result) => (Some(result.to_string()), None),
                JobOutcome::Failed(error) => (None, Some(error.as_str())),
                _ => (None, None),
            })
            .unzip();
        JobColumns {
            ids: finishes.iter().map(|f| f.lease.job_id.as_str()).collect(),
            states: moves.iter().map(|(_, to)| to.as_str()).collect(),
            nows: finishes.iter().map(|finish| finish.now).collect(),
            results,
            errors,
            prompt_tokens: finishes
                .iter()
                .map(|finish| tokens_sum(finish, |r| r.finish.prompt_tokens))
                .collect(),
            completion_tokens: finishes
                .iter()
                .map(|finish| tokens_sum(finish, |r| r.finish.completion_tokens))
                .collect(),
            lease_tokens: finishes.iter().map(|finish| finish.lease.token).collect(),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.ids,
            &self.lease_tokens,
            &self.states,
            &self.nows,
            &self.results,
            &self.errors,
            &self.prompt_tokens,
            &self.completion_tokens,
        ]
    }
}
