//! The oaj engine: claims jobs from a store, runs their steps through agents under leases, and
//! writes every result back.
#![warn(missing_docs)]

pub mod agent;
mod attempt;
mod config;
mod engine;
mod job_runner;
mod limits;
mod loaded_workflow;
mod submit;
mod worker_beat;

pub use config::EngineConfig;
pub use engine::Engine;
pub use submit::{JobSubmit, SubmitError};
