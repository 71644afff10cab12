//! Command-line arguments and the dispatch to each subcommand.

mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Durable job manager for JSON-defined AI-agent workflows.
#[derive(Debug, Parser)]
#[command(name = "oaj", version, about)]
#[command(
    after_help = "Exit codes: 0 success, 1 failure found (such as an invalid document), \
                       2 usage error or unreadable input."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check workflow documents and report every problem.
    Validate(validate::Args),
}

/// Runs the command that `cli` names and returns the process exit code.
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => validate::run(&args),
    }
}
