//! The `oaj` command line. Exit codes are listed in `cmd/exit.rs` and in README.md.

mod cmd;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OAJ_LOG")
                .unwrap_or_else(|_| cli.log_level_default().into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (a full disk, a closed stderr) is dropped. Reporting
        // it goes through `eprintln!`, which panics when stderr fails too, and such a panic on
        // the store's writer thread ended every later write of the process.
        .log_internal_errors(false)
        .init();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
