//! The `oaj` command line. Exit codes are listed in `cmd/exit.rs` and in README.md.

/// Prints a line to stderr like `eprintln!`, but drops it when stderr cannot be written (closed,
/// or on a full disk), where `eprintln!` panics, which would end a process that runs a job.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cmd;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Variables that name a database or a server. An empty one counts as unset, where clap would
/// take the empty value: `--db` next to an empty `OAJ_DATABASE_URL` failed as a conflict.
const LOCATION_VARIABLES: [&str; 3] = ["OAJ_DB", "OAJ_DATABASE_URL", "OAJ_SERVER"];

fn main() -> ExitCode {
    for name in LOCATION_VARIABLES {
        if std::env::var_os(name).is_some_and(|value| value.is_empty()) {
            // No other thread runs yet, so changing the environment here races nothing.
            std::env::remove_var(name);
        }
    }
    let cli = match cmd::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return parse_failed(&error),
    };
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
            cmd::error_print(format_args!("{error:#}"));
            ExitCode::from(2)
        }
    }
}

/// Prints clap's help, version or usage error and returns its exit status. A closed stdout ends
/// with status 141, as `cmd::terminal::stdout_write` does, where clap's own exit ignores it.
fn parse_failed(error: &clap::Error) -> ExitCode {
    let status = match error.print() {
        Ok(()) => error.exit_code(),
        Err(write) if write.kind() == std::io::ErrorKind::BrokenPipe => {
            i32::from(cmd::STDOUT_CLOSED)
        }
        Err(_) => 1,
    };
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}
