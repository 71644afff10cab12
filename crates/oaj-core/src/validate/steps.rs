//! Semantic checks of ids, versions, components, numbers and inline agents.

use std::collections::HashMap;

use crate::expression::template::{template_parse, Segment};
use crate::workflow::{AgentSpec, RetrySpec, Step, Workflow, BUILTIN_AGENTS};

use super::{id_is_valid, nearest, pointer, Problem, ProblemCode};

const ID_RULE: &str = "use only letters, digits, `-` and `_`";

pub(super) fn workflow_fields_check(workflow: &Workflow, problems: &mut Vec<Problem>) {
    if !id_is_valid(&workflow.id) {
        let message = format!("workflow id `{}` is invalid", workflow.id);
        problems.push(Problem::error(ProblemCode::InvalidId, "/id", message).suggest(ID_RULE));
    }
    if let Err(error) = semver::Version::parse(&workflow.version) {
        let message = format!(
            "version `{}` is not a semantic version: {error}",
            workflow.version
        );
        let problem = Problem::error(ProblemCode::InvalidVersion, "/version", message);
        problems.push(problem.suggest("write three numbers such as `1.0.0`"));
    }
    if workflow.steps.is_empty() {
        let problem = Problem::error(ProblemCode::NoSteps, "/steps", "the workflow has no steps");
        problems.push(problem.suggest("add at least one step"));
    }
    if let Some(defaults) = &workflow.defaults {
        if let Some(retry) = &defaults.retry {
            retry_check(retry, "/defaults/retry", None, problems);
        }
        positive_check(defaults.timeout, "/defaults/timeout", None, problems);
        positive_check(
            defaults.job_timeout,
            "/defaults/job_timeout",
            None,
            problems,
        );
    }
}

pub(super) fn steps_check(
    workflow: &Workflow,
    is_known: &dyn Fn(&str) -> bool,
    problems: &mut Vec<Problem>,
) {
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (index, step) in workflow.steps.iter().enumerate() {
        let path = format!("/steps/{index}");
        if !id_is_valid(&step.id) {
            let message = format!("step id `{}` is invalid", step.id);
            let problem = Problem::error(ProblemCode::InvalidId, pointer(&path, "id"), message);
            problems.push(problem.at_step(&step.id).suggest(ID_RULE));
        }
        if let Some(first) = first_index.insert(&step.id, index) {
            first_index.insert(&step.id, first);
            let message = format!("step id `{}` is already used by step {first}", step.id);
            let problem =
                Problem::error(ProblemCode::DuplicateStepId, pointer(&path, "id"), message);
            problems.push(
                problem
                    .at_step(&step.id)
                    .suggest("give each step its own id"),
            );
        }
        if !is_known(&step.component) {
            problems.push(component_unknown(workflow, step, &path));
        }
        step_numbers_check(step, &path, problems);
        if step.approval.is_some() && step.component != "approval" {
            let message = format!(
                "`approval` has no effect on component `{}`; only `approval` steps wait for a decision",
                step.component
            );
            let problem = Problem::error(
                ProblemCode::ApprovalMisplaced,
                pointer(&path, "approval"),
                message,
            );
            problems.push(
                problem
                    .at_step(&step.id)
                    .suggest("set `component` to `approval`"),
            );
        }
    }
}

fn component_unknown(workflow: &Workflow, step: &Step, path: &str) -> Problem {
    let message = format!(
        "component `{}` is not a built-in, inline or registered agent",
        step.component
    );
    let problem = Problem::error(
        ProblemCode::UnknownComponent,
        pointer(path, "component"),
        message,
    )
    .at_step(&step.id);
    let agent = step.component.split('.').next().unwrap_or_default();
    let candidates = BUILTIN_AGENTS
        .iter()
        .copied()
        .chain(workflow.agents.keys().map(String::as_str));
    match nearest(agent, candidates) {
        Some(close) => problem.suggest(format!("did you mean `{close}`?")),
        None => problem.suggest("define it in the workflow's `agents` map, or register it"),
    }
}

fn step_numbers_check(step: &Step, path: &str, problems: &mut Vec<Problem>) {
    let id = Some(step.id.as_str());
    positive_check(step.timeout, &pointer(path, "timeout"), id, problems);
    if let Some(retry) = &step.retry {
        retry_check(retry, &pointer(path, "retry"), id, problems);
    }
    if let Some(limit) = step
        .for_each
        .as_ref()
        .and_then(|for_each| for_each.concurrency())
    {
        let at = format!("{path}/for_each/concurrency");
        at_least_check(f64::from(limit), 1.0, &at, id, problems);
    }
    if let Some(concurrency) = &step.concurrency {
        let at = format!("{path}/concurrency/limit");
        at_least_check(f64::from(concurrency.limit), 1.0, &at, id, problems);
    }
    if let Some(approval) = &step.approval {
        let at = format!("{path}/approval/timeout_seconds");
        positive_check(approval.timeout_seconds, &at, id, problems);
    }
}

fn retry_check(retry: &RetrySpec, path: &str, step: Option<&str>, problems: &mut Vec<Problem>) {
    if let Some(attempts) = retry.max_attempts {
        at_least_check(
            f64::from(attempts),
            1.0,
            &pointer(path, "max_attempts"),
            step,
            problems,
        );
    }
    let delays = [
        ("delay_seconds", retry.delay_seconds),
        ("max_delay_seconds", retry.max_delay_seconds),
    ];
    for (name, delay) in delays {
        if let Some(delay) = delay {
            at_least_check(delay, 0.0, &pointer(path, name), step, problems);
            duration_max_check(delay, &pointer(path, name), step, problems);
        }
    }
    if let Some(multiplier) = retry.backoff_multiplier {
        at_least_check(
            multiplier,
            1.0,
            &pointer(path, "backoff_multiplier"),
            step,
            problems,
        );
    }
    if let Some(jitter) = retry.jitter {
        if !(0.0..=1.0).contains(&jitter) {
            let message = format!("jitter {jitter} is outside 0 to 1");
            let problem = Problem::error(ProblemCode::OutOfRange, pointer(path, "jitter"), message);
            problems.push(with_step(problem, step).suggest("write a fraction such as 0.2"));
        }
    }
}

/// Longest timeout, delay or deadline a document may give, in seconds (365 days). Longer values
/// would overflow the millisecond timestamps that the engine schedules with, and are mistakes.
pub const DURATION_SECONDS_MAX: f64 = 31_536_000.0;

fn positive_check(value: Option<f64>, path: &str, step: Option<&str>, problems: &mut Vec<Problem>) {
    let Some(value) = value else { return };
    if value <= 0.0 || !value.is_finite() {
        let message = format!("{value} seconds is not a positive duration");
        let problem = Problem::error(ProblemCode::OutOfRange, path, message);
        problems.push(with_step(problem, step).suggest("write a number of seconds above 0"));
    }
    duration_max_check(value, path, step, problems);
}

fn duration_max_check(value: f64, path: &str, step: Option<&str>, problems: &mut Vec<Problem>) {
    if value.is_finite() && value > DURATION_SECONDS_MAX {
        let message =
            format!("{value} seconds is more than the limit of {DURATION_SECONDS_MAX} (365 days)");
        let problem = Problem::error(ProblemCode::OutOfRange, path, message);
        problems.push(with_step(problem, step).suggest("write a shorter duration"));
    }
}

fn at_least_check(
    value: f64,
    minimum: f64,
    path: &str,
    step: Option<&str>,
    problems: &mut Vec<Problem>,
) {
    if value < minimum || !value.is_finite() {
        let message = format!("{value} is below the minimum of {minimum}");
        let problem = Problem::error(ProblemCode::OutOfRange, path, message);
        problems.push(with_step(problem, step).suggest(format!("write {minimum} or more")));
    }
}

fn with_step(problem: Problem, step: Option<&str>) -> Problem {
    match step {
        Some(id) => problem.at_step(id),
        None => problem,
    }
}

pub(super) fn agents_check(workflow: &Workflow, problems: &mut Vec<Problem>) {
    for (name, agent) in &workflow.agents {
        let path = pointer("/agents", name);
        match agent {
            AgentSpec::Command(command) => {
                if command
                    .command
                    .first()
                    .is_none_or(|program| program.is_empty())
                {
                    let message = format!("agent `{name}` has no program to run");
                    let problem = Problem::error(
                        ProblemCode::InvalidValue,
                        pointer(&path, "command"),
                        message,
                    );
                    problems.push(problem.suggest(
                        "write the program and its arguments, such as [\"python3\", \"run.py\"]",
                    ));
                }
                env_references_check(&command.env, &pointer(&path, "env"), problems);
            }
            AgentSpec::Http(http) => {
                url_check(&http.url, &pointer(&path, "url"), problems);
                env_references_check(&http.headers, &pointer(&path, "headers"), problems);
            }
            AgentSpec::Llm(llm) => {
                url_check(&llm.base_url, &pointer(&path, "base_url"), problems);
                if let Some(temperature) = llm.temperature {
                    if !(0.0..=2.0).contains(&temperature) {
                        let message = format!("temperature {temperature} is outside 0 to 2");
                        let problem = Problem::error(
                            ProblemCode::OutOfRange,
                            pointer(&path, "temperature"),
                            message,
                        );
                        problems.push(problem.suggest("write a number from 0 to 2"));
                    }
                }
                if llm.max_tokens == Some(0) {
                    at_least_check(0.0, 1.0, &pointer(&path, "max_tokens"), None, problems);
                }
            }
        }
    }
}

fn url_check(url: &str, path: &str, problems: &mut Vec<Problem>) {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if rest.is_none_or(|host| host.is_empty() || host.starts_with('/')) {
        let message = format!("`{url}` is not an absolute http or https URL");
        let problem = Problem::error(ProblemCode::InvalidUrl, path, message);
        problems.push(problem.suggest("write a URL such as `http://127.0.0.1:8080/path`"));
    }
}

/// Checks that agent headers and environment values reference only `${env.NAME}`, which agents
/// resolve when they call out, so that secrets never enter the document or the store.
fn env_references_check(
    values: &std::collections::BTreeMap<String, String>,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    for (key, text) in values {
        let at = pointer(path, key);
        let segments = match template_parse(text) {
            Ok(segments) => segments,
            Err(_) => {
                let message = format!("`{text}` has an unclosed or empty `${{`");
                let problem = Problem::error(ProblemCode::InvalidReference, at, message);
                problems.push(problem.suggest("write `${env.NAME}`"));
                continue;
            }
        };
        for segment in segments {
            let Segment::Reference { source, .. } = segment else {
                continue;
            };
            let is_env = source.strip_prefix("env.").is_some_and(|name| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
            if !is_env {
                let message = format!("`${{{source}}}` is not an environment variable reference; agent settings can only read `env`");
                let problem = Problem::error(ProblemCode::InvalidReference, at.clone(), message);
                problems.push(
                    problem.suggest("write `${env.NAME}`, or move the value into the step inputs"),
                );
            }
        }
    }
}
