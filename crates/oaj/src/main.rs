//! The `oaj` command line. Exit codes: 0 success, 1 the command ran and found a failure (such as
//! an invalid document), 2 a usage error or an input that could not be read.

mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
