//! Integration tests of the engine on real SQLite files, built as one test binary.

mod harness;

mod approval;
mod control;
mod graph;
mod limits;
mod retry;
mod scheduling;
mod workers;
