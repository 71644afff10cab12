//! The I/O-free core of oaj: workflow documents and their validation, expressions, the job state
//! machine, priorities and retry policy.
#![warn(missing_docs)]

pub mod clock;
pub mod expression;
pub mod job_state;
pub mod plan;
pub mod priority;
pub mod retry_policy;
pub mod validate;
pub mod workflow;

pub use clock::{Clock, ManualClock, SystemClock};
pub use expression::{
    condition_eval, expression_eval, value_resolve, with_parser_stack, CompiledExpression,
    ExpressionError,
};
pub use job_state::{transition, JobState, Transition, TransitionIllegal};
pub use plan::{Plan, PlanStep};
pub use priority::Priority;
pub use retry_policy::{RetryDecision, RetryPolicy};
pub use validate::{
    input_check, workflow_check, workflow_check_with, workflow_parse, workflow_parse_validate,
    workflow_validate, Problem, ProblemCode, Report, Severity, Validation,
};
pub use workflow::Workflow;
