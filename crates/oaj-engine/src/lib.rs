//! The oaj engine: claims jobs from a store, runs their steps through agents under leases, and
//! writes every result back.
#![warn(missing_docs)]

pub mod agent;
