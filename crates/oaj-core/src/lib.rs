//! The I/O-free core of oaj: workflow documents and their validation, expressions, the job state
//! machine, priorities and retry policy.
#![warn(missing_docs)]

pub mod clock;
pub mod expression;
pub mod job_state;
pub mod priority;
pub mod retry_policy;
pub mod workflow;

pub use clock::{Clock, ManualClock, SystemClock};
pub use job_state::{transition, JobState, Transition, TransitionIllegal};
pub use priority::Priority;
pub use retry_policy::{RetryDecision, RetryPolicy};
pub use workflow::Workflow;
