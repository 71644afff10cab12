//! The job state machine: the states of a job and the one function that decides each move.
//!
//! docs/state_machine.md draws the diagram. Every component that changes a job's state asks
//! [`transition`] first, so an illegal move is caught in one place instead of in each caller.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The stage of a job's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Stored but not yet placed in the queue. The submitter moves it to pending or queued in the
    /// same transaction, so other components see this state only for jobs of an unfinished batch.
    Created,
    /// Waiting for its dependencies, its `run_at` time, or an approval decision. The store moves
    /// it to queued when the last of those is met, or to failed when a dependency fails.
    Pending,
    /// Ready to run. A worker's claim moves it to running.
    Queued,
    /// Held by one worker under a lease. That worker moves it to completed, failed, cancelled,
    /// paused or back to pending; the lease rescuer moves it back to queued when the lease expires.
    Running,
    /// Stopped by a pause request; finished step results are kept. Resume moves it to queued.
    Paused,
    /// Every step finished or was skipped; the result is stored.
    Completed,
    /// A step failed for good, the job timed out, or a dependency failed. Retry moves it to queued.
    Failed,
    /// Cancelled by a user or with its batch. Retry moves it to queued.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 8] = [
        JobState::Created,
        JobState::Pending,
        JobState::Queued,
        JobState::Running,
        JobState::Paused,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// Returns the lowercase name used in the store, the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Created => "created",
            JobState::Pending => "pending",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Reports whether the job has ended: completed, failed or cancelled.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a state name that is not one of the job states.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job state {0:?}: expected one of created, pending, queued, running, paused, completed, failed, cancelled")]
pub struct JobStateInvalid(pub String);

impl FromStr for JobState {
    type Err = JobStateInvalid;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| JobStateInvalid(text.to_owned()))
    }
}

/// A request to move a job, named after what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The job must wait (dependencies, `run_at`): at submit, at resume, or when a queued job
    /// gains a dependency that has not completed.
    Defer,
    /// The job was submitted, or what it waited for arrived, and it can run.
    Enqueue,
    /// A worker took the job under a lease.
    Claim,
    /// The worker gave the job back to wait for something (an approval decision).
    Park,
    /// The lease expired or the worker shut down; the job runs again from its saved steps.
    Release,
    /// Every step ended well.
    Complete,
    /// A step failed for good, the job timed out, or a dependency failed.
    Fail,
    /// A user cancelled the job, or its batch.
    Cancel,
    /// A user paused the job; for a running job, the worker makes this move once its running
    /// attempts have ended.
    Pause,
    /// A user resumed a paused job.
    Resume,
    /// A user asked a failed or cancelled job to run again from its failed steps.
    Retry,
}

/// The error for a move that the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job in state {from} cannot {transition:?}")]
pub struct TransitionIllegal {
    /// State the job was in.
    pub from: JobState,
    /// The rejected move.
    pub transition: Transition,
}

/// Decides the state a job in `from` moves to on `transition`, or rejects the move.
pub fn transition(from: JobState, transition: Transition) -> Result<JobState, TransitionIllegal> {
    use JobState::*;
    use Transition as T;

    let to = match (from, transition) {
        (Created | Queued | Paused, T::Defer) | (Running, T::Park) => Pending,
        (Created | Pending | Paused | Running, T::Enqueue) => Queued,
        (Running, T::Release) => Queued,
        (Failed | Cancelled, T::Retry) => Queued,
        (Paused, T::Resume) => Queued,
        (Queued, T::Claim) => Running,
        (Running, T::Complete) => Completed,
        (Created | Pending | Queued | Running | Paused, T::Fail) => Failed,
        (Created | Pending | Queued | Running | Paused, T::Cancel) => Cancelled,
        (Pending | Queued | Running, T::Pause) => Paused,
        _ => return Err(TransitionIllegal { from, transition }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_states_accept_only_retry() {
        let all = [
            Transition::Defer,
            Transition::Enqueue,
            Transition::Claim,
            Transition::Park,
            Transition::Release,
            Transition::Complete,
            Transition::Fail,
            Transition::Cancel,
            Transition::Pause,
            Transition::Resume,
            Transition::Retry,
        ];
        for state in [JobState::Completed, JobState::Failed, JobState::Cancelled] {
            for move_ in all {
                let allowed = transition(state, move_).is_ok();
                let expected = move_ == Transition::Retry && state != JobState::Completed;
                assert_eq!(allowed, expected, "{state} on {move_:?}");
            }
        }
    }

    #[test]
    fn claim_only_from_queued() {
        for state in JobState::ALL {
            let allowed = transition(state, Transition::Claim).is_ok();
            assert_eq!(allowed, state == JobState::Queued, "{state}");
        }
    }

    #[test]
    fn running_job_pauses_and_resumes_through_queue() {
        let paused = transition(JobState::Running, Transition::Pause).unwrap();
        assert_eq!(paused, JobState::Paused);
        assert_eq!(transition(paused, Transition::Resume), Ok(JobState::Queued));
    }

    #[test]
    fn queued_job_defers_to_pending() {
        assert_eq!(
            transition(JobState::Queued, Transition::Defer),
            Ok(JobState::Pending)
        );
        assert!(transition(JobState::Running, Transition::Defer).is_err());
    }

    #[test]
    fn state_names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        assert!("done".parse::<JobState>().is_err());
    }
}
