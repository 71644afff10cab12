//! `oaj validate`: check workflow documents, and optionally a job input, and report problems.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use oaj_core::validate::DOCUMENT_BYTES_MAX;
use oaj_core::{input_check, workflow_parse_validate, Problem, ProblemCode, Report, Severity};
use serde::Serialize;
use serde_json::Value;

use super::terminal::printable;

/// Arguments of `oaj validate`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 every document is valid, 1 a document or the input is \
                       invalid, 2 usage error or unreadable file."
)]
pub(crate) struct Args {
    /// Workflow documents (JSON) to check.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Print one JSON object with every file's problems, for scripts.
    #[arg(long)]
    json: bool,

    /// Job input to check against each workflow's `inputs`: JSON text, or @FILE to read it.
    #[arg(long, value_name = "JSON|@FILE")]
    input: Option<String>,
}

/// The outcome for one file.
#[derive(Debug, Serialize)]
struct FileReport {
    file: String,
    valid: bool,
    problems: Vec<Problem>,
    /// Problems of the job input; absent without `--input`.
    #[serde(skip_serializing_if = "Option::is_none")]
    input_problems: Option<Vec<Problem>>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let input = args.input.as_deref().map(input_read).transpose()?;
    let mut reports = Vec::with_capacity(args.files.len());
    for file in &args.files {
        reports.push(file_validate(file, input.as_ref())?);
    }

    if args.json {
        let output = serde_json::json!({ "files": reports });
        outln!(
            "{}",
            serde_json::to_string_pretty(&output).context("cannot encode the report")?
        );
    } else {
        reports.iter().for_each(report_print);
    }
    let all_valid = reports.iter().all(|report| report.valid);
    Ok(if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn file_validate(path: &Path, input: Option<&Value>) -> anyhow::Result<FileReport> {
    let validation = match document_read(path)? {
        Ok(text) => workflow_parse_validate(&text, &|_| false),
        Err(problem) => oaj_core::Validation {
            workflow: None,
            report: Report {
                problems: vec![problem],
            },
        },
    };

    let input_problems = match (&validation.workflow, input) {
        (Some(workflow), Some(input)) => Some(match input_check(workflow, input) {
            Ok(_) => Vec::new(),
            Err(report) => report.problems,
        }),
        _ => None,
    };
    let input_valid = input_problems
        .iter()
        .flatten()
        .all(|problem| problem.severity != Severity::Error);
    Ok(FileReport {
        file: path.display().to_string(),
        valid: validation.workflow.is_some() && input_valid,
        problems: validation.report.problems,
        input_problems,
    })
}

/// Reads a document of at most [`DOCUMENT_BYTES_MAX`] bytes, plus one so that validation can
/// report a larger file as too large. Text that is not UTF-8 is a problem of the document; a
/// file that cannot be read is an error.
fn document_read(path: &Path) -> anyhow::Result<Result<String, Problem>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(DOCUMENT_BYTES_MAX + 1).unwrap_or(u64::MAX);
    file.take(limit)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(String::from_utf8(bytes).map_err(|error| {
        let offset = error.utf8_error().valid_up_to();
        let message = format!("the file is not UTF-8 text: invalid byte at offset {offset}");
        Problem::error(ProblemCode::NotJson, "", message).suggest("save the document as UTF-8 JSON")
    }))
}

/// Parses the `--input` value: JSON text, or `@FILE` naming a file of JSON.
fn input_read(argument: &str) -> anyhow::Result<Value> {
    let (text, origin) = match argument.strip_prefix('@') {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --input file {path}"))?;
            (text, path.to_owned())
        }
        None => (argument.to_owned(), "--input".to_owned()),
    };
    serde_json::from_str(&text)
        .with_context(|| format!("{origin} is not valid JSON; pass JSON text or @FILE"))
}

fn report_print(report: &FileReport) {
    let errors = report
        .problems
        .iter()
        .chain(report.input_problems.iter().flatten());
    let (error_count, warning_count) =
        errors.fold((0, 0), |(e, w), problem| match problem.severity {
            Severity::Error => (e + 1, w),
            Severity::Warning => (e, w + 1),
        });
    let status = if report.valid { "valid" } else { "invalid" };
    let mut summary = format!("{}: {status}", report.file);
    if error_count > 0 {
        summary.push_str(&format!(", {error_count} {}", plural(error_count, "error")));
    }
    if warning_count > 0 {
        summary.push_str(&format!(
            ", {warning_count} {}",
            plural(warning_count, "warning")
        ));
    }
    outln!("{}", printable(&summary));

    for problem in &report.problems {
        let line = format!("{problem}{}", step_suffix(problem));
        outln!("  {}", printable(&line));
    }
    for problem in report.input_problems.iter().flatten() {
        outln!("  input {}", printable(&problem.to_string()));
    }
}

fn step_suffix(problem: &Problem) -> String {
    match &problem.step {
        // Paths under /steps/ already name the step; elsewhere, such as in connections, name it.
        Some(step) if !problem.path.starts_with("/steps/") => format!(" [step {step}]"),
        _ => String::new(),
    }
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        noun.to_owned()
    } else {
        format!("{noun}s")
    }
}
