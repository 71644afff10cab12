//! Validation of workflow documents and of job inputs, reporting every problem in one pass.
//!
//! A document is checked in two phases. The schema phase walks the JSON against the shape of a
//! workflow (types, required and unknown fields). When every required field is usable, the typed
//! [`Workflow`] is built and the semantic phase checks ids, agents, numbers, references,
//! expressions and the step graph. A broken optional field is dropped before the second phase,
//! so that its problem is reported once and the rest of the document is still checked.

mod graph;
mod input;
mod problem;
mod references;
mod schema;
mod steps;
#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::workflow::{Workflow, BUILTIN_AGENTS};

pub(crate) use graph::{cycle_problem, cycles_find, step_needs};
pub use input::input_check;
pub use problem::{Problem, ProblemCode, Report, Severity};

/// Largest workflow document accepted, in bytes.
pub const DOCUMENT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The outcome of validating a document: the workflow when it could be built, and every problem,
/// warnings included.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The typed workflow, present when the document had no error.
    pub workflow: Option<Workflow>,
    /// Every problem found, errors and warnings.
    pub report: Report,
}

/// Parses and checks a workflow from JSON text; registered agents are not known.
///
/// Errors with a [`Report`] that lists every problem; not-JSON text gives line and column.
pub fn workflow_parse(text: &str) -> Result<Workflow, Report> {
    into_result(workflow_parse_validate(text, &|_| false))
}

/// Checks a parsed document; only built-in and inline agents are known.
///
/// Errors with a [`Report`] that lists every problem. Warnings are dropped; use
/// [`workflow_validate`] to see them.
pub fn workflow_check(document: &Value) -> Result<Workflow, Report> {
    into_result(workflow_validate(document, &|_| false))
}

/// Checks a parsed document, also accepting components for which `is_registered` returns true,
/// such as agents that the embedding application registered.
///
/// Errors with a [`Report`] that lists every problem.
pub fn workflow_check_with(
    document: &Value,
    is_registered: &dyn Fn(&str) -> bool,
) -> Result<Workflow, Report> {
    into_result(workflow_validate(document, is_registered))
}

/// Parses JSON text and validates it, keeping warnings. Text longer than
/// [`DOCUMENT_BYTES_MAX`] or nested deeper than serde_json's limit of 128 is rejected.
pub fn workflow_parse_validate(text: &str, is_registered: &dyn Fn(&str) -> bool) -> Validation {
    match document_parse(text) {
        Ok(document) => workflow_validate(&document, is_registered),
        Err(problem) => Validation {
            workflow: None,
            report: Report {
                problems: vec![problem],
            },
        },
    }
}

/// Validates a parsed document and keeps warnings, such as older reference spellings.
pub fn workflow_validate(document: &Value, is_registered: &dyn Fn(&str) -> bool) -> Validation {
    // `is_registered` need not be `Sync`, so it is asked here, before the work moves to the
    // parser thread, about every component the document names.
    let registered = components_named(document)
        .filter(|component| is_registered(component))
        .map(str::to_owned)
        .collect::<std::collections::HashSet<String>>();
    crate::expression::with_parser_stack(|| {
        document_validate(document, &|component| registered.contains(component))
    })
}

/// Lists every step component in the document, and the agent part of `agent.capability`.
fn components_named(document: &Value) -> impl Iterator<Item = &str> {
    let steps = document
        .get("steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    steps
        .filter_map(|step| step.get("component").and_then(Value::as_str))
        .flat_map(|component| [component, component.split('.').next().unwrap_or(component)])
}

fn document_validate(document: &Value, is_registered: &dyn Fn(&str) -> bool) -> Validation {
    let mut problems = Vec::new();
    let mut repaired = document.clone();
    let usable = schema::document_check(&mut repaired, &mut problems);

    let mut workflow = None;
    if usable {
        match serde_json::from_value::<Workflow>(repaired) {
            Ok(typed) => {
                semantic_check(&typed, is_registered, &mut problems);
                workflow = Some(typed);
            }
            Err(error) => problems.push(Problem::error(
                ProblemCode::WrongType,
                "",
                format!("the document does not fit the workflow model: {error}"),
            )),
        }
    }

    let report = Report { problems };
    let workflow = workflow.filter(|_| report.is_valid());
    Validation { workflow, report }
}

fn semantic_check(
    workflow: &Workflow,
    is_registered: &dyn Fn(&str) -> bool,
    problems: &mut Vec<Problem>,
) {
    let is_known = |component: &str| component_is_known(workflow, component, is_registered);
    steps::workflow_fields_check(workflow, problems);
    steps::steps_check(workflow, &is_known, problems);
    steps::agents_check(workflow, problems);
    input::parameters_check(workflow, problems);
    references::references_check(workflow, problems);
    graph::graph_check(workflow, problems);
}

/// Returns whether a step may name `component`: a built-in, an inline agent, a registered agent, or
/// `agent.capability` whose agent is one of those.
fn component_is_known(
    workflow: &Workflow,
    component: &str,
    is_registered: &dyn Fn(&str) -> bool,
) -> bool {
    let is_agent = |name: &str| {
        BUILTIN_AGENTS.contains(&name) || workflow.agents.contains_key(name) || is_registered(name)
    };
    if is_agent(component) {
        return true;
    }
    match component.split_once('.') {
        Some((agent, capability)) => !capability.is_empty() && is_agent(agent),
        None => false,
    }
}

fn document_parse(text: &str) -> Result<Value, Problem> {
    if text.len() > DOCUMENT_BYTES_MAX {
        return Err(Problem::error(
            ProblemCode::TooLarge,
            "",
            format!(
                "the document is {} bytes, more than the limit of {DOCUMENT_BYTES_MAX}",
                text.len()
            ),
        )
        .suggest(
            "split the workflow, or pass large data as job input instead of in the document",
        ));
    }
    serde_json::from_str(text).map_err(|error| {
        let (line, column) = (error.line(), error.column());
        Problem::error(
            ProblemCode::NotJson,
            "",
            format!("not valid JSON at line {line}, column {column}: {error}"),
        )
        .suggest("fix the JSON syntax at that position")
    })
}

fn into_result(validation: Validation) -> Result<Workflow, Report> {
    match validation.workflow {
        Some(workflow) => Ok(workflow),
        None => Err(validation.report),
    }
}

/// Returns the candidate closest to `name`, when one is close enough to be a likely typo.
pub(crate) fn nearest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let folded = fold(name);
    let length = name.chars().count();
    // One edit per three characters, and never a whole name, so that `b` does not suggest `a`.
    let threshold = (length / 3).max(1).min(length.saturating_sub(1));
    candidates
        .into_iter()
        .map(|candidate| {
            let distance = if fold(candidate) == folded {
                0
            } else {
                strsim::damerau_levenshtein(name, candidate)
            };
            (distance, candidate)
        })
        .filter(|(distance, _)| *distance <= threshold)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Lowercases and drops `_` and `-`, so that `dependsOn` matches `depends_on`.
fn fold(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Appends one reference token to a JSON Pointer, escaping `~` and `/`.
pub(crate) fn pointer(path: &str, token: impl std::fmt::Display) -> String {
    let token = token.to_string().replace('~', "~0").replace('/', "~1");
    format!("{path}/{token}")
}

/// Returns whether `id` is a valid workflow or step id, made of letters, digits, `-` and `_`.
pub(crate) fn id_is_valid(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
