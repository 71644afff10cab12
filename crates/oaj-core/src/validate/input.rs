//! Checks of parameter declarations, and of the values a job gives for them.

use regex::Regex;
use serde_json::{Map, Value};

use crate::expression::json_kind;
use crate::workflow::{Parameter, ParameterType, Workflow};

use super::{nearest, pointer, Problem, ProblemCode, Report};

/// Largest compiled size of a parameter `pattern`, in bytes, so that a hostile pattern cannot
/// take unbounded memory.
const PATTERN_SIZE_MAX: usize = 1 << 20;

/// Checks a job's input against the workflow's `inputs` parameters and returns it with defaults
/// applied. `null` counts as an empty object.
///
/// Errors with a [`Report`] listing every missing required input, unknown input, and value that
/// does not match its parameter's type, `enum`, `pattern`, `minimum` or `maximum`. Paths are like
/// `/inputs/ticket`.
pub fn input_check(workflow: &Workflow, input: &Value) -> Result<Value, Report> {
    let empty = Map::new();
    let provided = match input {
        Value::Null => &empty,
        Value::Object(object) => object,
        other => {
            let message = format!(
                "the job input must be a JSON object, found {}",
                json_kind(other)
            );
            let problem = Problem::error(ProblemCode::InputNotObject, "/inputs", message);
            let problem = problem.suggest("pass an object such as {\"name\": \"value\"}");
            return Err(Report {
                problems: vec![problem],
            });
        }
    };

    let mut problems = Vec::new();
    for name in provided
        .keys()
        .filter(|name| !workflow.inputs.contains_key(name.as_str()))
    {
        problems.push(input_unknown(workflow, name));
    }
    let mut resolved = Map::new();
    for (name, parameter) in &workflow.inputs {
        let path = pointer("/inputs", name);
        match provided.get(name).or(parameter.default.as_ref()) {
            Some(value) => {
                value_check(parameter, value, &path, &mut problems);
                resolved.insert(name.clone(), value.clone());
            }
            None if parameter_is_required(parameter) => {
                problems.push(input_missing(name, parameter))
            }
            None => {}
        }
    }

    let report = Report { problems };
    if report.is_valid() {
        Ok(Value::Object(resolved))
    } else {
        Err(report)
    }
}

/// Whether a job must give a value: `required: true`, or no default and `required` not false.
fn parameter_is_required(parameter: &Parameter) -> bool {
    parameter.required.unwrap_or(parameter.default.is_none())
}

fn input_unknown(workflow: &Workflow, name: &str) -> Problem {
    let message = format!("input `{name}` is not declared by the workflow");
    let problem = Problem::error(ProblemCode::InputUnknown, pointer("/inputs", name), message);
    match nearest(name, workflow.inputs.keys().map(String::as_str)) {
        Some(close) => problem.suggest(format!("did you mean `{close}`?")),
        None => problem.suggest("remove it, or declare it in the workflow's `inputs`"),
    }
}

fn input_missing(name: &str, parameter: &Parameter) -> Problem {
    let kind = parameter
        .kind
        .map_or("any".to_owned(), |kind| format!("{kind:?}").to_lowercase());
    let message = format!("required input `{name}` ({kind}) has no value");
    let problem = Problem::error(
        ProblemCode::InputRequired,
        pointer("/inputs", name),
        message,
    );
    problem.suggest(format!(
        "give `{name}` in the job input, or declare a `default`"
    ))
}

/// Checks declared parameters: patterns compile, bounds are ordered, and defaults and `enum`
/// values match the parameter.
pub(super) fn parameters_check(workflow: &Workflow, problems: &mut Vec<Problem>) {
    for (section, parameters) in [
        ("/inputs", &workflow.inputs),
        ("/outputs", &workflow.outputs),
    ] {
        for (name, parameter) in parameters {
            let path = pointer(section, name);
            if let Some(pattern) = &parameter.pattern {
                if let Err(error) = pattern_compile(pattern) {
                    let message =
                        format!("pattern `{pattern}` is not a valid regular expression: {error}");
                    let problem = Problem::error(
                        ProblemCode::InvalidPattern,
                        pointer(&path, "pattern"),
                        message,
                    );
                    problems.push(problem.suggest("fix the regular expression syntax"));
                }
            }
            if let (Some(minimum), Some(maximum)) = (parameter.minimum, parameter.maximum) {
                if minimum > maximum {
                    let message = format!("minimum {minimum} is above maximum {maximum}");
                    let problem =
                        Problem::error(ProblemCode::OutOfRange, pointer(&path, "minimum"), message);
                    problems.push(problem.suggest("swap the two bounds"));
                }
            }
            if let Some(default) = &parameter.default {
                value_check(parameter, default, &pointer(&path, "default"), problems);
            }
        }
    }
}

/// Checks one value against its parameter's type, `enum`, `pattern` and range.
pub(super) fn value_check(
    parameter: &Parameter,
    value: &Value,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    let kind = parameter.kind.unwrap_or(ParameterType::Any);
    if !type_matches(kind, value) {
        let expected = format!("{kind:?}").to_lowercase();
        let message = format!(
            "expected {expected}, found {} ({})",
            json_kind(value),
            value_short(value)
        );
        let problem = Problem::error(ProblemCode::InputTypeMismatch, path, message);
        problems.push(problem.suggest(format!("give a value of type {expected}")));
        return;
    }
    if let Some(allowed) = &parameter.allowed {
        if !allowed.contains(value) {
            let choices: Vec<String> = allowed.iter().map(Value::to_string).collect();
            let message = format!("{} is not one of the allowed values", value_short(value));
            let problem = Problem::error(ProblemCode::InputNotAllowed, path, message);
            problems.push(problem.suggest(format!("use one of: {}", choices.join(", "))));
        }
    }
    if let (Some(pattern), Value::String(text)) = (&parameter.pattern, value) {
        if pattern_compile(pattern).is_ok_and(|regex| !regex.is_match(text)) {
            let message = format!(
                "{} does not match the pattern `{pattern}`",
                value_short(value)
            );
            let problem = Problem::error(ProblemCode::InputPatternMismatch, path, message);
            problems.push(problem.suggest("give a string that matches the pattern"));
        }
    }
    if let Some(number) = value.as_f64() {
        range_check(parameter, number, path, problems);
    }
}

fn range_check(parameter: &Parameter, number: f64, path: &str, problems: &mut Vec<Problem>) {
    let below = parameter.minimum.filter(|minimum| number < *minimum);
    let above = parameter.maximum.filter(|maximum| number > *maximum);
    let bound = match (below, above) {
        (Some(minimum), _) => format!("below the minimum of {minimum}"),
        (None, Some(maximum)) => format!("above the maximum of {maximum}"),
        (None, None) => return,
    };
    let message = format!("{number} is {bound}");
    let range = match (parameter.minimum, parameter.maximum) {
        (Some(minimum), Some(maximum)) => format!("give a number from {minimum} to {maximum}"),
        (Some(minimum), None) => format!("give a number of at least {minimum}"),
        (_, _) => format!(
            "give a number of at most {}",
            parameter.maximum.unwrap_or(number)
        ),
    };
    problems.push(Problem::error(ProblemCode::InputOutOfRange, path, message).suggest(range));
}

fn type_matches(kind: ParameterType, value: &Value) -> bool {
    match kind {
        ParameterType::Any => true,
        ParameterType::String => value.is_string(),
        ParameterType::Number => value.is_number(),
        ParameterType::Integer => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|n| n.fract() == 0.0)
        }
        ParameterType::Boolean => value.is_boolean(),
        ParameterType::Object => value.is_object(),
        ParameterType::Array => value.is_array(),
    }
}

fn pattern_compile(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_MAX)
        .build()
}

/// Returns compact JSON of a value, cut at 60 characters.
fn value_short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}
