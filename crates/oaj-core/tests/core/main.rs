//! Integration tests of oaj-core, built as one binary with a module per area.

mod examples;
mod openagents;
mod robustness;
