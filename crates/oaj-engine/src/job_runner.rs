//! Runs one claimed job: starts its steps as the graph allows, gathers fan-outs, waits for
//! approvals, and ends the job when nothing is left to run.
//!
//! One task per job owns all of the job's state, so no lock guards it. Attempts run as child
//! tasks that report back through a `JoinSet`. Most write their own results. Instant attempts
//! (built-in agents with no effects outside the engine) hand their records to the runner, which
//! writes them with its next write, so a job made of instant steps ends in one write.

use std::sync::Arc;

use oaj_core::expression::{condition_eval, expression_eval, value_resolve};
use oaj_core::workflow::OnFailure;
use oaj_store::{
    ApprovalDecision, AttemptRecord, ClaimedJob, Job, JobFinish, JobOutcome, Lease, StepRun,
    StepState, StepUpdate, StoreError,
};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use crate::attempt::{attempt_run, AttemptOutcome, AttemptPlan};
use crate::engine::Shared;
use crate::loaded_workflow::{LoadedWorkflow, StepAction};

/// Fan-out items started between two yields to the runtime.
const FANOUT_YIELD_EVERY: usize = 64;

/// Records of instant attempts kept before they are written, so that a lost lease in a large
/// fan-out loses at most this many finished items, and the write stays small.
const RECORDS_KEPT_MAX: usize = 512;

/// A request from the engine to a running job, set by the heartbeat, by the end of an attempt and
/// by shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Run,
    Pause,
    Cancel,
    Shutdown,
    Lost,
}

impl From<oaj_store::Control> for Signal {
    fn from(control: oaj_store::Control) -> Signal {
        match control {
            oaj_store::Control::Cancel => Signal::Cancel,
            oaj_store::Control::Pause => Signal::Pause,
        }
    }
}

/// The reason the job runner stopped before it could write an outcome.
#[derive(Debug)]
enum Stop {
    LeaseLost,
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::LeaseLost { .. } => Stop::LeaseLost,
            other => Stop::Store(other),
        }
    }
}

/// The state of a step run as the runner tracks it.
#[derive(Debug, Clone, PartialEq)]
enum Slot {
    Pending,
    Running,
    Retrying(i64),
    Waiting(i64),
    Completed,
    Failed(String),
    Skipped,
    Cancelled,
}

impl Slot {
    fn is_final(&self) -> bool {
        matches!(
            self,
            Slot::Completed | Slot::Failed(_) | Slot::Skipped | Slot::Cancelled
        )
    }

    fn restore(run: &StepRun) -> Slot {
        match run.state {
            StepState::Completed => Slot::Completed,
            StepState::Failed => Slot::Failed(run.error.clone().unwrap_or_default()),
            StepState::Skipped => Slot::Skipped,
            StepState::Retrying => Slot::Retrying(run.next_attempt_at.unwrap_or(0)),
            StepState::Waiting => Slot::Waiting(run.updated_at),
            // A running attempt belonged to a worker that is gone, and a cancelled one to a job
            // that was since retried or released: both run again.
            StepState::Pending | StepState::Running | StepState::Cancelled => Slot::Pending,
        }
    }
}

struct ItemSlot {
    slot: Slot,
    attempts: u32,
    output: Value,
}

struct StepSlot {
    slot: Slot,
    attempts: u32,
    decision: Option<ApprovalDecision>,
    /// Fan-out items once the step has expanded, in item order.
    items: Option<Vec<ItemSlot>>,
    item_values: Vec<Value>,
}

/// The result of an attempt task, sent back to its job runner.
struct AttemptDone {
    step: usize,
    item: Option<u32>,
    outcome: AttemptOutcome,
    /// The record of an instant attempt, for the runner to write.
    record: Option<AttemptRecord>,
    instant: bool,
}

/// Runs one claimed job to an outcome.
pub(crate) struct JobRunner {
    shared: Arc<Shared>,
    lease: Lease,
    job: Job,
    loaded: Arc<LoadedWorkflow>,
    steps: Vec<StepSlot>,
    scope: Value,
    signal: watch::Receiver<Signal>,
    cancel: CancellationToken,
    tasks: JoinSet<AttemptDone>,
    /// Attempts running that are not instant, which may take long.
    slow_running: usize,
    /// Records of instant attempts not written yet, in the order they ended.
    records: Vec<AttemptRecord>,
    failure: Option<String>,
    deadline: Option<i64>,
}

impl JobRunner {
    pub(crate) fn new(
        shared: Arc<Shared>,
        claimed: ClaimedJob,
        loaded: Arc<LoadedWorkflow>,
        signal: watch::Receiver<Signal>,
    ) -> JobRunner {
        let mut scope = json!({ "inputs": claimed.job.input.clone(), "steps": {} });
        let steps = restore_steps(&loaded, &claimed.steps, &mut scope);
        let timeout_ms = claimed.job.timeout_ms.or_else(|| {
            loaded
                .job_timeout
                .map(|limit| i64::try_from(limit.as_millis()).unwrap_or(i64::MAX))
        });
        let started_at = claimed
            .job
            .started_at
            .unwrap_or_else(|| shared.clock.now_ms());
        let deadline = timeout_ms.map(|limit| started_at.saturating_add(limit));
        JobRunner {
            shared,
            lease: claimed.lease,
            job: claimed.job,
            loaded,
            steps,
            scope,
            signal,
            cancel: CancellationToken::new(),
            tasks: JoinSet::new(),
            slow_running: 0,
            records: Vec::new(),
            failure: None,
            deadline,
        }
    }

    /// Runs the job until it ends, pauses, parks or is released, and writes that outcome.
    #[instrument(skip_all, fields(job_id = %self.job.id, workflow_id = %self.job.workflow_id))]
    pub(crate) async fn run(mut self) {
        let outcome = match self.drive().await {
            Ok(outcome) => outcome,
            Err(Stop::LeaseLost) => {
                info!("lease lost; leaving the job to its new holder");
                self.abandon().await;
                return;
            }
            Err(Stop::Store(error)) => {
                warn!(error = %error, "store failed while running a job; its lease will expire and another attempt will follow");
                self.abandon().await;
                return;
            }
        };
        debug!(outcome = ?outcome, "job runner finished");
        let finish = JobFinish {
            lease: self.lease.clone(),
            attempts: std::mem::take(&mut self.records),
            outcome,
            now: self.shared.clock.now_ms(),
        };
        match self.shared.store.job_finish(finish).await {
            Ok(()) => {}
            Err(StoreError::LeaseLost { .. }) => info!("lease lost before the outcome was written"),
            Err(error) => {
                warn!(error = %error, "failed to write the job outcome; its lease will expire")
            }
        }
    }

    async fn abandon(&mut self) {
        self.cancel.cancel();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    async fn drive(&mut self) -> Result<JobOutcome, Stop> {
        let mut drain_deadline: Option<i64> = None;
        loop {
            let signal = *self.signal.borrow_and_update();
            let now = self.shared.clock.now_ms();
            match signal {
                Signal::Lost => return Err(Stop::LeaseLost),
                Signal::Cancel => return self.stop_all(JobOutcome::Cancelled).await,
                Signal::Shutdown if drain_deadline.is_none() => {
                    let grace = i64::try_from(self.shared.config.shutdown_grace.as_millis())
                        .unwrap_or(i64::MAX);
                    drain_deadline = Some(now.saturating_add(grace));
                }
                _ => {}
            }
            if self.deadline.is_some_and(|deadline| now >= deadline) {
                let limit = self.job.timeout_ms.map_or(String::new(), |ms| {
                    format!(" after {} s", ms as f64 / 1000.0)
                });
                return self
                    .stop_all(JobOutcome::Failed(format!("job timed out{limit}")))
                    .await;
            }
            if drain_deadline.is_some_and(|deadline| now >= deadline) {
                return self.stop_all(JobOutcome::Released).await;
            }
            let holding = signal != Signal::Run;
            if !holding {
                self.start_ready().await?;
            }
            if let Some(error) = self.failure.take() {
                return self.stop_all(JobOutcome::Failed(error)).await;
            }
            if self.tasks.is_empty() {
                if let Some(outcome) = self.outcome_when_idle(signal)? {
                    return Ok(outcome);
                }
            }
            // Records wait for the next write only while nothing but instant attempts runs, and
            // only up to RECORDS_KEPT_MAX of them. Before a wait that may be long, they are
            // written now, so that a crash cannot lose them and a reader sees each step's
            // outcome soon after it ends.
            if self.tasks.is_empty()
                || self.slow_running > 0
                || self.records.len() >= RECORDS_KEPT_MAX
            {
                self.records_write().await?;
            }
            let wake = self.next_timer(drain_deadline);
            self.wait(wake).await?;
        }
    }

    /// Decides how the job ends when no attempt is running, or `None` when timers are pending.
    fn outcome_when_idle(&mut self, signal: Signal) -> Result<Option<JobOutcome>, Stop> {
        // A job whose last step ended while a pause or shutdown was pending is done: completing
        // it beats handing it back with nothing left to run.
        if self.steps.iter().all(|step| step.slot.is_final()) {
            return Ok(Some(self.completed_outcome()));
        }
        match signal {
            Signal::Pause => return Ok(Some(JobOutcome::Paused)),
            Signal::Shutdown => return Ok(Some(JobOutcome::Released)),
            _ => {}
        }
        let has_retry = self.steps.iter().any(|step| {
            matches!(step.slot, Slot::Retrying(_))
                || step
                    .items
                    .iter()
                    .flatten()
                    .any(|item| matches!(item.slot, Slot::Retrying(_)))
        });
        if has_retry {
            return Ok(None);
        }
        let deadlines: Vec<Option<i64>> = (0..self.steps.len())
            .filter(|&index| matches!(self.steps[index].slot, Slot::Waiting(_)))
            .map(|index| self.approval_deadline(index))
            .collect();
        if !deadlines.is_empty() {
            let deadline = deadlines.into_iter().flatten().min();
            return Ok(Some(JobOutcome::Parked { deadline }));
        }
        // Here every step that is not final waits on another that is not final. Validation rules
        // out such cycles, so this is a bug: fail the job instead of spinning.
        Ok(Some(JobOutcome::Failed(
            "no step can run: the remaining steps wait on each other".to_owned(),
        )))
    }

    fn completed_outcome(&self) -> JobOutcome {
        match self.loaded.plan.job_result(&self.scope) {
            Ok(result) => JobOutcome::Completed(result),
            Err(error) => JobOutcome::Failed(format!("job result could not be computed: {error}")),
        }
    }

    fn next_timer(&self, drain_deadline: Option<i64>) -> Option<i64> {
        let mut timers: Vec<i64> = Vec::new();
        for step in &self.steps {
            if let Slot::Retrying(at) = step.slot {
                timers.push(at);
            }
            for item in step.items.iter().flatten() {
                if let Slot::Retrying(at) = item.slot {
                    timers.push(at);
                }
            }
        }
        timers.extend(self.deadline);
        timers.extend(drain_deadline);
        timers.into_iter().min()
    }

    async fn wait(&mut self, wake_at: Option<i64>) -> Result<(), Stop> {
        let sleep_ms = wake_at.map(|at| at.saturating_sub(self.shared.clock.now_ms()).max(0));
        let sleep = async {
            match sleep_ms {
                Some(ms) => {
                    tokio::time::sleep(std::time::Duration::from_millis(ms.unsigned_abs())).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                let done = self.done_take(joined.expect("attempt tasks do not panic"));
                self.absorb(done.step, done.item, done.outcome).await?;
            }
            changed = self.signal.changed() => {
                if changed.is_err() {
                    // The engine dropped the sender: it is gone, so stop as if the lease was lost.
                    return Err(Stop::LeaseLost);
                }
            }
            _ = sleep => {}
        }
        Ok(())
    }

    /// Cancels running attempts, waits for them to record their end, and returns `outcome`.
    async fn stop_all(&mut self, outcome: JobOutcome) -> Result<JobOutcome, Stop> {
        self.cancel.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            let done = self.done_take(joined.expect("attempt tasks do not panic"));
            match done.outcome {
                AttemptOutcome::LeaseLost => return Err(Stop::LeaseLost),
                AttemptOutcome::StoreFailed(error) => return Err(Stop::Store(error)),
                other => self.record(done.step, done.item, other),
            }
        }
        Ok(outcome)
    }

    /// Keeps the record of an ended attempt, if it brought one, and counts it out.
    fn done_take(&mut self, mut done: AttemptDone) -> AttemptDone {
        if !done.instant {
            self.slow_running -= 1;
        }
        self.records.extend(done.record.take());
        done
    }

    /// Writes the records of instant attempts kept so far, and passes on the request (pause or
    /// cancel) that the store returns with them.
    async fn records_write(&mut self) -> Result<(), Stop> {
        if self.records.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.records);
        let control = self.shared.store.attempts_record(records).await?;
        if let Some(control) = control {
            self.shared
                .signal_job(&self.lease.job_id, Signal::from(control));
        }
        Ok(())
    }

    async fn absorb(
        &mut self,
        step: usize,
        item: Option<u32>,
        outcome: AttemptOutcome,
    ) -> Result<(), Stop> {
        match outcome {
            AttemptOutcome::LeaseLost => Err(Stop::LeaseLost),
            AttemptOutcome::StoreFailed(error) => Err(Stop::Store(error)),
            AttemptOutcome::Failed(error) if item.is_none() => {
                self.steps[step].slot = Slot::Failed(error.clone());
                self.note_failure(step, &error);
                Ok(())
            }
            other => {
                self.record(step, item, other);
                Ok(())
            }
        }
    }

    fn record(&mut self, step: usize, item: Option<u32>, outcome: AttemptOutcome) {
        let slot = match &outcome {
            AttemptOutcome::Completed(_) => Slot::Completed,
            AttemptOutcome::Retrying { at } => Slot::Retrying(*at),
            AttemptOutcome::Failed(error) => Slot::Failed(error.clone()),
            AttemptOutcome::Cancelled => Slot::Cancelled,
            AttemptOutcome::LeaseLost | AttemptOutcome::StoreFailed(_) => return,
        };
        match item {
            Some(index) => {
                let items = self.steps[step]
                    .items
                    .as_mut()
                    .expect("items exist once a fan-out starts");
                let item = &mut items[index as usize];
                item.slot = slot;
                if let AttemptOutcome::Completed(output) = outcome {
                    item.output = output;
                }
            }
            None => {
                self.steps[step].slot = slot;
                if let AttemptOutcome::Completed(output) = outcome {
                    self.set_output(step, output);
                }
            }
        }
    }

    fn set_output(&mut self, step: usize, output: Value) {
        let id = self.loaded.plan.steps[step].id.clone();
        self.scope["steps"][id] = json!({ "outputs": output });
    }

    fn note_failure(&mut self, step: usize, error: &str) {
        let definition = self.loaded.step(step);
        if definition.on_failure.unwrap_or_default() == OnFailure::Fail && self.failure.is_none() {
            self.failure = Some(format!("step {} failed: {error}", definition.id));
        }
    }

    /// Starts every step run whose turn has come.
    async fn start_ready(&mut self) -> Result<(), Stop> {
        let now = self.shared.clock.now_ms();
        for index in self.loaded.plan.order() {
            if self.failure.is_some() {
                return Ok(());
            }
            match self.steps[index].slot.clone() {
                Slot::Pending if self.needs_final(index) => self.start_step(index).await?,
                Slot::Retrying(at) if at <= now => self.spawn_attempt(index, None).await?,
                Slot::Running if self.steps[index].items.is_some() => {
                    if self.steps[index].item_values.is_empty() {
                        // Restored from a saved fan-out: evaluate the items again from the saved
                        // outputs, which gives the same array.
                        self.expand(index).await?;
                    } else {
                        self.advance_fanout(index).await?;
                    }
                }
                Slot::Waiting(_) => self.approval(index).await?,
                _ => {}
            }
        }
        Ok(())
    }

    fn needs_final(&self, index: usize) -> bool {
        self.loaded.plan.steps[index]
            .needs
            .iter()
            .all(|&need| self.steps[need].slot.is_final())
    }

    async fn start_step(&mut self, index: usize) -> Result<(), Stop> {
        match self.skip_reason(index) {
            Ok(Some(reason)) => return self.skip(index, reason).await,
            Ok(None) => {}
            Err(message) => return self.fail_step(index, message).await,
        }
        match self.loaded.actions[index].clone() {
            StepAction::Missing(message) => self.fail_step(index, message).await,
            StepAction::Approval => self.approval(index).await,
            StepAction::Call { .. } if self.loaded.step(index).for_each.is_some() => {
                self.expand(index).await
            }
            StepAction::Call { .. } => self.spawn_attempt(index, None).await,
        }
    }

    /// Returns why the step is skipped, `None` to run it, or an error that fails it.
    fn skip_reason(&self, index: usize) -> Result<Option<String>, String> {
        let needs = &self.loaded.plan.steps[index].needs;
        if let Some(&failed) = needs
            .iter()
            .find(|&&need| matches!(self.steps[need].slot, Slot::Failed(_)))
        {
            return Ok(Some(format!(
                "step {} that it needs failed",
                self.loaded.plan.steps[failed].id
            )));
        }
        if !needs.is_empty()
            && needs
                .iter()
                .all(|&need| self.steps[need].slot == Slot::Skipped)
        {
            return Ok(Some("every step it needs was skipped".to_owned()));
        }
        let Some(condition) = self.loaded.step(index).condition.as_deref() else {
            return Ok(None);
        };
        match condition_eval(condition, &self.scope) {
            Ok(true) => Ok(None),
            Ok(false) => Ok(Some(format!("condition {condition:?} is false"))),
            Err(error) => Err(format!(
                "condition {condition:?} could not be evaluated: {error}"
            )),
        }
    }

    async fn skip(&mut self, index: usize, reason: String) -> Result<(), Stop> {
        self.update_step(index, StepState::Skipped, None, Some(reason), None)
            .await?;
        self.steps[index].slot = Slot::Skipped;
        self.set_output(index, Value::Null);
        Ok(())
    }

    async fn fail_step(&mut self, index: usize, message: String) -> Result<(), Stop> {
        self.update_step(index, StepState::Failed, None, Some(message.clone()), None)
            .await?;
        self.steps[index].slot = Slot::Failed(message.clone());
        self.note_failure(index, &message);
        Ok(())
    }

    async fn complete_step(&mut self, index: usize, output: Value) -> Result<(), Stop> {
        self.update_step(
            index,
            StepState::Completed,
            Some(output.clone()),
            None,
            None,
        )
        .await?;
        self.steps[index].slot = Slot::Completed;
        self.set_output(index, output);
        Ok(())
    }

    async fn update_step(
        &mut self,
        index: usize,
        state: StepState,
        output: Option<Value>,
        error: Option<String>,
        items_total: Option<u32>,
    ) -> Result<(), Stop> {
        let update = StepUpdate {
            lease: self.lease.clone(),
            step_id: self.loaded.plan.steps[index].id.clone(),
            item: None,
            state,
            output,
            error,
            items_total,
            now: self.shared.clock.now_ms(),
        };
        self.records_write().await?;
        self.shared
            .store
            .step_update(update)
            .await
            .map_err(Stop::from)
    }

    /// Evaluates a fan-out's items and starts the step run of each.
    async fn expand(&mut self, index: usize) -> Result<(), Stop> {
        let expression = self
            .loaded
            .step(index)
            .for_each
            .as_ref()
            .expect("expand is called for fan-outs")
            .items();
        let values = match expression_eval(expression, &self.scope) {
            Ok(Value::Array(values)) => values,
            Ok(other) => {
                let message = format!(
                    "for_each {expression:?} gave {}, expected an array",
                    type_name(&other)
                );
                return self.fail_step(index, message).await;
            }
            Err(error) => {
                return self
                    .fail_step(index, format!("for_each {expression:?} failed: {error}"))
                    .await
            }
        };
        let total = u32::try_from(values.len()).unwrap_or(u32::MAX);
        if self.steps[index].items.is_none() {
            self.update_step(index, StepState::Running, None, None, Some(total))
                .await?;
            let pending = || ItemSlot {
                slot: Slot::Pending,
                attempts: 0,
                output: Value::Null,
            };
            self.steps[index].items = Some((0..values.len()).map(|_| pending()).collect());
        }
        self.steps[index].item_values = values;
        self.steps[index].slot = Slot::Running;
        self.advance_fanout(index).await
    }

    /// Starts the items whose turn has come and gathers the outputs once every item has ended.
    async fn advance_fanout(&mut self, index: usize) -> Result<(), Stop> {
        let now = self.shared.clock.now_ms();
        let limit = self
            .loaded
            .step(index)
            .for_each
            .as_ref()
            .and_then(|each| each.concurrency())
            .map_or(usize::MAX, |n| n as usize);
        let items = self.steps[index].items.as_ref().expect("fan-out has items");
        let mut running = items
            .iter()
            .filter(|item| item.slot == Slot::Running)
            .count();
        let mut ready = Vec::new();
        for (item, slot) in items.iter().enumerate() {
            let due = matches!(slot.slot, Slot::Pending)
                || matches!(slot.slot, Slot::Retrying(at) if at <= now);
            if due && running < limit {
                ready.push(item);
                running += 1;
            }
        }
        for (started, item) in ready.into_iter().enumerate() {
            self.spawn_attempt(
                index,
                Some(u32::try_from(item).expect("item count fits in u32")),
            )
            .await?;
            // Starting thousands of items takes long without an await point, and would keep the
            // heartbeat that renews this worker's leases from running.
            if started % FANOUT_YIELD_EVERY == FANOUT_YIELD_EVERY - 1 {
                tokio::task::yield_now().await;
            }
        }
        self.gather_if_done(index).await
    }

    async fn gather_if_done(&mut self, index: usize) -> Result<(), Stop> {
        let items = self.steps[index].items.as_ref().expect("fan-out has items");
        let failed = items
            .iter()
            .enumerate()
            .find_map(|(item, slot)| match &slot.slot {
                Slot::Failed(error) => Some(format!("item {item} failed: {error}")),
                _ => None,
            });
        let fails_job = self.loaded.step(index).on_failure.unwrap_or_default() == OnFailure::Fail;
        let all_final = items.iter().all(|item| item.slot.is_final());
        match failed {
            Some(message) if fails_job || all_final => self.fail_step(index, message).await,
            None if all_final => {
                let outputs: Vec<Value> = items.iter().map(|item| item.output.clone()).collect();
                self.complete_step(index, Value::Array(outputs)).await
            }
            _ => Ok(()),
        }
    }

    /// Starts an attempt as a child task. Before an attempt that is not instant, the records kept
    /// so far are written, so that its events follow theirs.
    async fn spawn_attempt(&mut self, index: usize, item: Option<u32>) -> Result<(), Stop> {
        // The scope contains every output so far, so it is lent to the plan instead of copied for
        // each attempt: a copy per item made a large fan-out quadratic.
        let mut scope = std::mem::take(&mut self.scope);
        if let Some(position) = item {
            self.item_enter(&mut scope, index, position);
        }
        let plan = self.attempt_plan(index, item, &scope);
        if item.is_some() {
            item_leave(&mut scope);
        }
        self.scope = scope;
        let plan = match plan {
            Ok(plan) => plan,
            Err(message) => {
                self.set_slot(index, item, Slot::Failed(message.clone()));
                if item.is_none() {
                    self.note_failure(index, &message);
                }
                return Ok(());
            }
        };
        let instant = plan.agent.is_instant();
        if !instant {
            self.records_write().await?;
            self.slow_running += 1;
        }
        self.set_slot(index, item, Slot::Running);
        let shared = self.shared.clone();
        self.tasks.spawn(async move {
            let (outcome, record) = attempt_run(shared, plan).await;
            AttemptDone {
                step: index,
                item,
                outcome,
                record,
                instant,
            }
        });
        Ok(())
    }

    fn set_slot(&mut self, index: usize, item: Option<u32>, slot: Slot) {
        match item {
            Some(position) => {
                let items = self.steps[index]
                    .items
                    .as_mut()
                    .expect("items exist once a fan-out starts");
                items[position as usize].slot = slot;
            }
            None => self.steps[index].slot = slot,
        }
    }

    /// Adds the `item` and `index` of a fan-out item to `scope`.
    fn item_enter(&self, scope: &mut Value, index: usize, position: u32) {
        let value = self.steps[index]
            .item_values
            .get(position as usize)
            .cloned()
            .unwrap_or(Value::Null);
        scope["item"] = value;
        scope["index"] = json!(position);
    }

    fn attempt_plan(
        &mut self,
        index: usize,
        item: Option<u32>,
        scope: &Value,
    ) -> Result<AttemptPlan, String> {
        let StepAction::Call {
            name,
            capability,
            agent,
        } = self.loaded.actions[index].clone()
        else {
            unreachable!("only agent calls have attempts");
        };
        let input = self
            .loaded
            .plan
            .step_input(index, scope)
            .map_err(|error| format!("step input could not be resolved: {error}"))?;
        let step = self.loaded.step(index);
        let concurrency = match &step.concurrency {
            Some(spec) => Some((concurrency_key(&spec.key, scope)?, spec.limit)),
            None => None,
        };
        let attempts = match item {
            Some(position) => {
                &mut self.steps[index].items.as_mut().expect("fan-out has items")[position as usize]
                    .attempts
            }
            None => &mut self.steps[index].attempts,
        };
        *attempts += 1;
        Ok(AttemptPlan {
            lease: self.lease.clone(),
            step_id: step.id.clone(),
            item,
            number: *attempts,
            input,
            agent_name: name,
            capability,
            agent,
            policy: self.loaded.policies[index],
            timeout: self.loaded.timeouts[index],
            concurrency,
            job_cancel: self.cancel.clone(),
        })
    }

    /// Moves an approval step on: records a decision, fails it past its deadline, or starts
    /// waiting.
    async fn approval(&mut self, index: usize) -> Result<(), Stop> {
        let now = self.shared.clock.now_ms();
        if let Some(decision) = self.steps[index].decision.clone() {
            if decision.approved {
                let output =
                    json!({ "approved": true, "by": decision.by, "comment": decision.comment });
                return self.complete_step(index, output).await;
            }
            let by = decision.by.as_deref().unwrap_or("a reviewer");
            let comment = decision
                .comment
                .as_deref()
                .map_or(String::new(), |text| format!(": {text}"));
            return self
                .fail_step(index, format!("rejected by {by}{comment}"))
                .await;
        }
        match self.steps[index].slot {
            Slot::Waiting(_) => {
                if self
                    .approval_deadline(index)
                    .is_some_and(|deadline| now >= deadline)
                {
                    let seconds = self
                        .loaded
                        .step(index)
                        .approval
                        .as_ref()
                        .and_then(|spec| spec.timeout_seconds);
                    let message = format!(
                        "no approval decision within {} s",
                        seconds.unwrap_or_default()
                    );
                    return self.fail_step(index, message).await;
                }
                Ok(())
            }
            _ => {
                self.update_step(index, StepState::Waiting, None, None, None)
                    .await?;
                self.steps[index].slot = Slot::Waiting(now);
                Ok(())
            }
        }
    }

    fn approval_deadline(&self, index: usize) -> Option<i64> {
        let Slot::Waiting(since) = self.steps[index].slot else {
            return None;
        };
        let seconds = self.loaded.step(index).approval.as_ref()?.timeout_seconds?;
        let limit = oaj_core::retry_policy::seconds(seconds);
        Some(since.saturating_add(i64::try_from(limit.as_millis()).unwrap_or(i64::MAX)))
    }
}

/// Removes what [`JobRunner::item_enter`] added to a scope.
fn item_leave(scope: &mut Value) {
    if let Some(fields) = scope.as_object_mut() {
        fields.remove("item");
        fields.remove("index");
    }
}

fn concurrency_key(template: &str, scope: &Value) -> Result<String, String> {
    match value_resolve(&Value::String(template.to_owned()), scope) {
        Ok(Value::String(key)) => Ok(key),
        Ok(other) => Ok(other.to_string()),
        Err(error) => Err(format!(
            "concurrency key {template:?} could not be resolved: {error}"
        )),
    }
}

fn restore_steps(loaded: &LoadedWorkflow, saved: &[StepRun], scope: &mut Value) -> Vec<StepSlot> {
    let mut steps: Vec<StepSlot> = loaded
        .plan
        .steps
        .iter()
        .map(|_| StepSlot {
            slot: Slot::Pending,
            attempts: 0,
            decision: None,
            items: None,
            item_values: Vec::new(),
        })
        .collect();
    let mut outputs = Map::new();
    for run in saved {
        let Some(index) = loaded
            .plan
            .steps
            .iter()
            .position(|step| step.id == run.step_id)
        else {
            continue;
        };
        let slot = &mut steps[index];
        match run.item {
            None => {
                slot.slot = Slot::restore(run);
                slot.attempts = run.attempts;
                slot.decision = run.decision.clone();
                if let Some(total) = run.items_total.filter(|_| !slot.slot.is_final()) {
                    slot.slot = Slot::Running;
                    let pending = || ItemSlot {
                        slot: Slot::Pending,
                        attempts: 0,
                        output: Value::Null,
                    };
                    slot.items
                        .get_or_insert_with(|| (0..total).map(|_| pending()).collect());
                }
                match run.state {
                    StepState::Completed => {
                        outputs.insert(
                            run.step_id.clone(),
                            json!({ "outputs": run.output.clone().unwrap_or(Value::Null) }),
                        );
                    }
                    StepState::Skipped => {
                        outputs.insert(run.step_id.clone(), json!({ "outputs": Value::Null }));
                    }
                    _ => {}
                }
            }
            Some(position) => restore_item(slot, position, run),
        }
    }
    scope["steps"] = Value::Object(outputs);
    steps
}

fn restore_item(slot: &mut StepSlot, position: u32, run: &StepRun) {
    let Some(items) = slot.items.as_mut() else {
        return;
    };
    let Some(item) = items.get_mut(position as usize) else {
        return;
    };
    item.slot = Slot::restore(run);
    item.attempts = run.attempts;
    if run.state == StepState::Completed {
        item.output = run.output.clone().unwrap_or(Value::Null);
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
