//! One attempt of one step run: wait for a slot, call the agent under its timeout and the job's
//! cancel, decide on a retry, and record the outcome.

use std::sync::Arc;
use std::time::Duration;

use oaj_core::{RetryDecision, RetryPolicy};
use oaj_store::{
    AttemptFinish, AttemptRecord, AttemptStart, AttemptState, Lease, StepState, StoreError,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument, warn};

use crate::agent::{Agent, AgentCall, AgentError, AgentOutput};
use crate::engine::Shared;
use crate::job_runner::Signal;

/// Deepest nesting of arrays and objects allowed in a step's output.
///
/// Stored JSON is read back with serde_json's limit of 128 levels, and a fan-out's gathered
/// output and a job's result wrap step outputs in a few more levels. Outputs stop well below that,
/// so that nothing the engine writes becomes unreadable.
pub(crate) const OUTPUT_DEPTH_MAX: usize = 64;

/// Returns how deeply arrays and objects nest in `value`; scalars are depth 0.
fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 1)];
    while let Some((value, depth)) = pending.pop() {
        match value {
            Value::Array(items) => {
                deepest = deepest.max(depth);
                pending.extend(items.iter().map(|item| (item, depth + 1)));
            }
            Value::Object(fields) => {
                deepest = deepest.max(depth);
                pending.extend(fields.values().map(|field| (field, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Everything an attempt needs, gathered by the job runner.
pub(crate) struct AttemptPlan {
    pub(crate) lease: Lease,
    pub(crate) step_id: String,
    pub(crate) item: Option<u32>,
    pub(crate) number: u32,
    pub(crate) input: Value,
    pub(crate) agent_name: String,
    pub(crate) capability: Option<String>,
    pub(crate) agent: Arc<dyn Agent>,
    pub(crate) policy: RetryPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) concurrency: Option<(String, u32)>,
    /// Fires when the job is cancelled, times out, or its lease is lost.
    pub(crate) job_cancel: CancellationToken,
}

/// The state an attempt leaves its step run in.
#[derive(Debug)]
pub(crate) enum AttemptOutcome {
    Completed(Value),
    Retrying {
        at: i64,
    },
    Failed(String),
    Cancelled,
    /// The lease was lost: nothing more may be written for this job.
    LeaseLost,
    /// The store failed; the job runner stops and lets the lease expire.
    StoreFailed(StoreError),
}

/// The result of an agent call, before the retry decision.
enum CallResult {
    Output(AgentOutput),
    Error(AgentError),
    TimedOut(Duration),
    Cancelled,
}

#[instrument(skip_all, fields(job_id = %plan.lease.job_id, step_id = %plan.step_id, item = ?plan.item, attempt = plan.number))]
/// Runs one attempt and returns the state it leaves its step run in. An instant attempt also
/// returns its record, which the caller must write (see [`instant_attempt_run`]); other attempts
/// are written here.
pub(crate) async fn attempt_run(
    shared: Arc<Shared>,
    plan: AttemptPlan,
) -> (AttemptOutcome, Option<AttemptRecord>) {
    let key = plan
        .concurrency
        .as_ref()
        .map(|(key, limit)| (key.as_str(), *limit));
    let permits = tokio::select! {
        permits = shared.limits.acquire(&plan.agent_name, key) => permits,
        _ = plan.job_cancel.cancelled() => return (AttemptOutcome::Cancelled, None),
    };
    let start = AttemptStart {
        lease: plan.lease.clone(),
        worker_id: shared.config.worker_id.clone(),
        step_id: plan.step_id.clone(),
        item: plan.item,
        number: plan.number,
        now: shared.clock.now_ms(),
    };
    if plan.agent.is_instant() {
        let (outcome, record) = instant_attempt_run(&shared, &plan, start, permits).await;
        return (outcome, Some(record));
    }
    let attempt_id = match shared.store.attempt_start(start).await {
        Ok(id) => id,
        Err(error) => return (store_error(error), None),
    };
    debug!("attempt started");
    let result = call_agent(&shared, &plan).await;
    // The end time is read before the slot is freed, so that recorded attempts under one limit
    // never appear to overlap.
    let finish = attempt_finish(
        &plan,
        attempt_id,
        result,
        shared.clock.now_ms(),
        rand::random(),
    );
    drop(permits);
    let outcome = outcome_of(&finish);
    let outcome = match shared.store.attempt_finish(finish).await {
        Ok(None) => outcome,
        Ok(Some(control)) => {
            // The runner reads this signal before it starts anything else, so a pause or cancel
            // requested while this attempt ran stops the next one without waiting for the
            // heartbeat that would also deliver it.
            shared.signal_job(&plan.lease.job_id, Signal::from(control));
            outcome
        }
        Err(error) => store_error(error),
    };
    (outcome, None)
}

/// Runs an attempt of an agent that returns at once and changes nothing outside the engine, and
/// returns its record without writing it. The job runner writes such records together with its
/// next write, often the end of the job. If the worker dies before that write, the step runs
/// again, which such an agent makes harmless.
async fn instant_attempt_run<P>(
    shared: &Shared,
    plan: &AttemptPlan,
    start: AttemptStart,
    permits: P,
) -> (AttemptOutcome, AttemptRecord) {
    let result = call_agent(shared, plan).await;
    drop(permits);
    let finish = attempt_finish(plan, 0, result, shared.clock.now_ms(), rand::random());
    (outcome_of(&finish), AttemptRecord { start, finish })
}

fn store_error(error: StoreError) -> AttemptOutcome {
    match error {
        StoreError::LeaseLost { .. } => AttemptOutcome::LeaseLost,
        other => AttemptOutcome::StoreFailed(other),
    }
}

async fn call_agent(shared: &Shared, plan: &AttemptPlan) -> CallResult {
    let cancel = plan.job_cancel.child_token();
    let call = AgentCall {
        input: plan.input.clone(),
        capability: plan.capability.clone(),
        idempotency_key: idempotency_key(plan),
        job_id: plan.lease.job_id.clone(),
        step_id: plan.step_id.clone(),
        attempt: plan.number,
        cancel: cancel.clone(),
    };
    let agent = plan.agent.clone();
    // The call runs in a task of its own, so that an agent that panics fails its attempt and not
    // the job runner. The guard aborts the task if the attempt is abandoned.
    let task = AbortOnDrop(tokio::spawn(async move { agent.call(call).await }));
    let call_future = join_call(task, plan.agent_name.clone());
    tokio::pin!(call_future);
    let timeout = plan.timeout.unwrap_or(Duration::MAX);
    // Biased so that a cancel wins over the agent's own "cancelled" error when both are ready:
    // the attempt then counts as cancelled, not as a failure to retry.
    let stopped_by_timeout = tokio::select! {
        biased;
        _ = plan.job_cancel.cancelled() => false,
        result = &mut call_future => return call_result(result),
        _ = sleep_for(timeout) => true,
    };
    // Ask the agent to stop, then give it the grace period to kill its processes and return.
    cancel.cancel();
    if tokio::time::timeout(shared.config.cancel_grace, &mut call_future)
        .await
        .is_err()
    {
        debug!("agent did not stop within the grace period; abandoning the call");
    }
    if stopped_by_timeout {
        CallResult::TimedOut(timeout)
    } else {
        CallResult::Cancelled
    }
}

/// Aborts a spawned agent call when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<Result<AgentOutput, AgentError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn join_call(mut task: AbortOnDrop, agent_name: String) -> Result<AgentOutput, AgentError> {
    match (&mut task.0).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => {
            warn!(agent = %agent_name, "agent panicked");
            Err(AgentError::permanent(format!(
                "agent {agent_name:?} panicked: {}",
                panic_message(error)
            )))
        }
        Err(_) => Err(AgentError::retryable(format!(
            "agent {agent_name:?} call was aborted"
        ))),
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    let payload = error.into_panic();
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "no message".to_owned()
    }
}

async fn sleep_for(duration: Duration) {
    match tokio::time::Instant::now().checked_add(duration) {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn call_result(result: Result<AgentOutput, AgentError>) -> CallResult {
    match result {
        Ok(output) => CallResult::Output(output),
        Err(error) => CallResult::Error(error),
    }
}

fn idempotency_key(plan: &AttemptPlan) -> String {
    let item = plan
        .item
        .map_or_else(|| "-".to_owned(), |item| item.to_string());
    format!(
        "{}/{}/{}/{}",
        plan.lease.job_id, plan.step_id, item, plan.number
    )
}

/// Builds the record of an attempt's end at `now`. `random`, in `[0, 1)`, draws the retry jitter.
///
/// An agent's log and error can carry any bytes a program printed. Each NUL character in them
/// becomes U+FFFD, because PostgreSQL rejects NUL in text, and a record that cannot be stored
/// would leave the job to be rescued and run again.
fn attempt_finish(
    plan: &AttemptPlan,
    attempt_id: i64,
    result: CallResult,
    now: i64,
    random: f64,
) -> AttemptFinish {
    let mut finish = finish_of_call(plan, attempt_id, result, now, random);
    nul_replace(&mut finish.log);
    if let Some(error) = &mut finish.error {
        nul_replace(error);
    }
    finish
}

/// Replaces each NUL character of `text` with U+FFFD.
fn nul_replace(text: &mut String) {
    if text.contains('\0') {
        *text = text.replace('\0', "\u{FFFD}");
    }
}

/// Builds the record of an attempt's end, as [`attempt_finish`] does, with the agent's text as
/// it came.
fn finish_of_call(
    plan: &AttemptPlan,
    attempt_id: i64,
    result: CallResult,
    now: i64,
    random: f64,
) -> AttemptFinish {
    let mut finish = AttemptFinish {
        lease: plan.lease.clone(),
        attempt_id,
        step_id: plan.step_id.clone(),
        item: plan.item,
        state: AttemptState::Succeeded,
        step_state: StepState::Completed,
        output: None,
        error: None,
        next_attempt_at: None,
        log: String::new(),
        prompt_tokens: 0,
        completion_tokens: 0,
        now,
    };
    let (error, retryable, retry_after) = match result {
        CallResult::Output(output) if json_depth(&output.output) > OUTPUT_DEPTH_MAX => {
            finish.state = AttemptState::Failed;
            finish.log = output.log;
            let depth = json_depth(&output.output);
            let message = format!(
                "output nests {depth} levels deep, more than the limit of {OUTPUT_DEPTH_MAX}: \
                 return flatter JSON"
            );
            (message, false, None)
        }
        CallResult::Output(output) => {
            finish.log = output.log;
            if let Some(usage) = output.usage {
                finish.prompt_tokens = i64::try_from(usage.prompt_tokens).unwrap_or(i64::MAX);
                finish.completion_tokens =
                    i64::try_from(usage.completion_tokens).unwrap_or(i64::MAX);
            }
            finish.output = Some(output.output);
            return finish;
        }
        CallResult::Cancelled => {
            finish.state = AttemptState::Cancelled;
            finish.step_state = StepState::Cancelled;
            finish.error = Some("attempt cancelled".to_owned());
            return finish;
        }
        CallResult::TimedOut(limit) => {
            finish.state = AttemptState::TimedOut;
            (
                format!("attempt timed out after {:.3} s", limit.as_secs_f64()),
                true,
                None,
            )
        }
        CallResult::Error(error) => {
            finish.state = AttemptState::Failed;
            finish.log = error.log;
            if let Some(usage) = error.usage {
                finish.prompt_tokens = i64::try_from(usage.prompt_tokens).unwrap_or(i64::MAX);
                finish.completion_tokens =
                    i64::try_from(usage.completion_tokens).unwrap_or(i64::MAX);
            }
            (error.message, error.is_retryable, error.retry_after)
        }
    };
    match plan
        .policy
        .decide(plan.number, retryable, retry_after, random)
    {
        RetryDecision::RetryAfter(delay) => {
            finish.step_state = StepState::Retrying;
            finish.next_attempt_at =
                Some(now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)));
        }
        RetryDecision::GiveUp => finish.step_state = StepState::Failed,
    }
    finish.error = Some(error);
    finish
}

fn outcome_of(finish: &AttemptFinish) -> AttemptOutcome {
    match finish.step_state {
        StepState::Completed => {
            AttemptOutcome::Completed(finish.output.clone().unwrap_or(Value::Null))
        }
        StepState::Retrying => AttemptOutcome::Retrying {
            at: finish.next_attempt_at.unwrap_or(finish.now),
        },
        StepState::Cancelled => AttemptOutcome::Cancelled,
        _ => AttemptOutcome::Failed(finish.error.clone().unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::agent::NoopAgent;

    fn plan(number: u32) -> AttemptPlan {
        AttemptPlan {
            lease: Lease {
                job_id: "job".into(),
                token: 1,
            },
            step_id: "step".into(),
            item: None,
            number,
            input: Value::Null,
            agent_name: "noop".into(),
            capability: None,
            agent: Arc::new(NoopAgent),
            policy: RetryPolicy {
                attempts_max: 3,
                delay: Duration::from_millis(500),
                backoff_multiplier: 3.0,
                delay_max: Duration::from_secs(60),
                jitter: 0.5,
            },
            timeout: None,
            concurrency: None,
            job_cancel: CancellationToken::new(),
        }
    }

    fn failed() -> CallResult {
        CallResult::Error(AgentError::retryable("boom"))
    }

    #[test]
    fn nul_in_agent_text_replaced() {
        let mut error = AgentError::permanent("exit \0 code 3");
        error.log = "bad\0byte\n".to_owned();

        let finish = attempt_finish(&plan(1), 1, CallResult::Error(error), 0, 0.0);

        assert_eq!(finish.error.as_deref(), Some("exit \u{FFFD} code 3"));
        assert_eq!(finish.log, "bad\u{FFFD}byte\n");
        assert_eq!(finish.step_state, StepState::Failed);
    }

    #[test]
    fn failed_attempts_schedule_backoff_delays() {
        let now = 1_000_000;
        let first = attempt_finish(&plan(1), 1, failed(), now, 0.0);
        assert_eq!(first.step_state, StepState::Retrying);
        assert_eq!(first.next_attempt_at, Some(now + 500));
        let second = attempt_finish(&plan(2), 2, failed(), now, 0.0);
        assert_eq!(second.next_attempt_at, Some(now + 1500));
    }

    #[test]
    fn jitter_draw_shortens_scheduled_delay() {
        let finish = attempt_finish(&plan(2), 2, failed(), 0, 0.5);
        assert_eq!(finish.next_attempt_at, Some(1125));
    }

    #[test]
    fn last_attempt_fails_step() {
        let finish = attempt_finish(&plan(3), 3, failed(), 0, 0.0);
        assert_eq!(finish.step_state, StepState::Failed);
        assert_eq!(finish.next_attempt_at, None);
        assert_eq!(finish.error.as_deref(), Some("boom"));
    }

    #[test]
    fn timeout_counts_as_retryable_failure() {
        let finish = attempt_finish(
            &plan(1),
            1,
            CallResult::TimedOut(Duration::from_secs(2)),
            0,
            0.0,
        );
        assert_eq!(finish.state, AttemptState::TimedOut);
        assert_eq!(finish.step_state, StepState::Retrying);
    }

    #[test]
    fn deeply_nested_output_fails_without_retry() {
        let mut output = json!(1);
        for _ in 0..OUTPUT_DEPTH_MAX {
            output = json!([output]);
        }
        let allowed = CallResult::Output(AgentOutput {
            output: output.clone(),
            ..AgentOutput::default()
        });
        assert_eq!(
            attempt_finish(&plan(1), 1, allowed, 0, 0.0).state,
            AttemptState::Succeeded
        );

        let too_deep = CallResult::Output(AgentOutput {
            output: json!([output]),
            ..AgentOutput::default()
        });
        let finish = attempt_finish(&plan(1), 1, too_deep, 0, 0.0);
        assert_eq!(finish.state, AttemptState::Failed);
        assert_eq!(finish.step_state, StepState::Failed);
        assert!(finish.error.unwrap().contains("nests 65 levels"));
    }

    #[test]
    fn cancel_never_retries() {
        let finish = attempt_finish(&plan(1), 1, CallResult::Cancelled, 0, 0.0);
        assert_eq!(finish.state, AttemptState::Cancelled);
        assert_eq!(finish.step_state, StepState::Cancelled);
    }
}
