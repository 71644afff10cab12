//! Tests of the `oaj` binary, built as one test binary with a module per command.

mod bench;
mod validate;

use std::process::{Command, Output};

/// Runs the real `oaj` binary with `args` from the repository root.
pub(crate) fn oaj(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oaj"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("the oaj binary runs")
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}
