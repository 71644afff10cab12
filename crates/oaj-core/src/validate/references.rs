//! Checks of references and expressions: syntax, the names they read, and `for_each` items.

use std::collections::HashMap;

use serde_json::Value;

use crate::expression::template::{path_segments, template_parse, Segment};
use crate::expression::{expression_unwrap, legacy_step_path, template_error, CompiledExpression};
use crate::plan::{connection_source, connection_target};
use crate::workflow::{ParameterType, Step, Workflow};

use super::{nearest, pointer, Problem, ProblemCode};

/// The reading of the text at a site.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SiteKind {
    /// A JSON string whose `${ ... }` parts are references.
    Template,
    /// A CEL expression, bare or wrapped in `${ }`.
    Expression,
}

/// A string in a step that holds references or an expression.
pub(crate) struct Site<'a> {
    pub(crate) path: String,
    pub(crate) text: &'a str,
    pub(crate) kind: SiteKind,
    /// Whether `item` and `index` are defined where the site is evaluated.
    pub(crate) item_allowed: bool,
}

/// Lists the strings of a step that are evaluated: its inputs, condition, `for_each` items,
/// concurrency key and approval prompt.
pub(crate) fn step_sites(step: &Step, index: usize) -> Vec<Site<'_>> {
    let path = format!("/steps/{index}");
    let fans_out = step.for_each.is_some();
    let mut sites = Vec::new();
    for (name, value) in &step.inputs {
        json_strings(
            value,
            &pointer(&format!("{path}/inputs"), name),
            &mut |at, text| {
                sites.push(Site {
                    path: at,
                    text,
                    kind: SiteKind::Template,
                    item_allowed: fans_out,
                });
            },
        );
    }
    if let Some(condition) = &step.condition {
        let at = pointer(&path, "condition");
        sites.push(Site {
            path: at,
            text: condition,
            kind: SiteKind::Expression,
            item_allowed: fans_out,
        });
    }
    if let Some(for_each) = &step.for_each {
        let at = match for_each {
            crate::workflow::ForEach::Items(_) => pointer(&path, "for_each"),
            crate::workflow::ForEach::Options { .. } => format!("{path}/for_each/items"),
        };
        sites.push(Site {
            path: at,
            text: for_each.items(),
            kind: SiteKind::Expression,
            item_allowed: false,
        });
    }
    if let Some(concurrency) = &step.concurrency {
        let at = format!("{path}/concurrency/key");
        sites.push(Site {
            path: at,
            text: &concurrency.key,
            kind: SiteKind::Template,
            item_allowed: fans_out,
        });
    }
    if let Some(prompt) = step
        .approval
        .as_ref()
        .and_then(|approval| approval.prompt.as_deref())
    {
        let at = format!("{path}/approval/prompt");
        sites.push(Site {
            path: at,
            text: prompt,
            kind: SiteKind::Template,
            item_allowed: fans_out,
        });
    }
    sites
}

/// Calls `visit` with the pointer and text of every string inside `value`.
pub(crate) fn json_strings<'a>(
    value: &'a Value,
    path: &str,
    visit: &mut dyn FnMut(String, &'a str),
) {
    match value {
        Value::String(text) => visit(path.to_owned(), text),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                json_strings(item, &pointer(path, index), visit);
            }
        }
        Value::Object(object) => {
            for (key, item) in object {
                json_strings(item, &pointer(path, key), visit);
            }
        }
        _ => {}
    }
}

struct Checker<'a> {
    workflow: &'a Workflow,
    index_of: HashMap<&'a str, usize>,
    problems: &'a mut Vec<Problem>,
}

pub(super) fn references_check(workflow: &Workflow, problems: &mut Vec<Problem>) {
    let index_of = workflow
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| (step.id.as_str(), index))
        .collect();
    let mut checker = Checker {
        workflow,
        index_of,
        problems,
    };

    for (index, step) in workflow.steps.iter().enumerate() {
        for site in step_sites(step, index) {
            checker.site_check(&site, Some(&step.id), None);
        }
        checker.for_each_check(step, index);
        checker.depends_on_check(step, index);
    }
    for (name, output) in &workflow.outputs {
        let Some(value) = &output.value else { continue };
        let path = format!("{}/value", pointer("/outputs", name));
        json_strings(value, &path, &mut |at, text| {
            let site = Site {
                path: at,
                text,
                kind: SiteKind::Template,
                item_allowed: false,
            };
            checker.site_check(&site, None, None);
        });
    }
    for index in 0..workflow.connections.len() {
        checker.connection_check(index);
    }
}

impl Checker<'_> {
    fn site_check(&mut self, site: &Site<'_>, step: Option<&str>, extra: Option<&str>) {
        let references = match site.kind {
            SiteKind::Expression => vec![(expression_unwrap(site.text).to_owned(), false)],
            SiteKind::Template => match template_parse(site.text) {
                Ok(segments) => references_of(segments),
                Err(error) => {
                    let message = template_error(site.text, error).to_string();
                    let problem =
                        Problem::error(ProblemCode::InvalidReference, &site.path, message);
                    self.push(problem, step);
                    return;
                }
            },
        };
        for (source, legacy) in references {
            self.reference_check(&source, legacy, site, step, extra);
        }
    }

    fn reference_check(
        &mut self,
        source: &str,
        legacy: bool,
        site: &Site<'_>,
        step: Option<&str>,
        extra: Option<&str>,
    ) {
        let mut source = source.to_owned();
        if legacy {
            source = self.legacy_canonical(&source);
            let message = "`{{ ... }}` is an older reference spelling";
            let problem = Problem::warning(ProblemCode::LegacyReference, &site.path, message);
            self.push(problem.suggest(format!("write `${{{source}}}`")), step);
        }
        match CompiledExpression::compile(&source) {
            Ok(compiled) => {
                for path in compiled.paths() {
                    self.path_check(&path, site, step, extra);
                }
            }
            Err(error) => {
                let problem = Problem::error(
                    ProblemCode::ExpressionInvalid,
                    &site.path,
                    error.to_string(),
                );
                self.push(problem.suggest("fix the CEL syntax"), step);
            }
        }
    }

    /// Spells `{{step.output}}` as `steps.step.outputs.output` when `step` names a step.
    fn legacy_canonical(&self, source: &str) -> String {
        match path_segments(source) {
            Some(segments)
                if self.index_of.contains_key(segments[0]) && !is_scope_root(segments[0]) =>
            {
                legacy_step_path(&segments)
            }
            _ => source.to_owned(),
        }
    }

    fn path_check(
        &mut self,
        path: &[String],
        site: &Site<'_>,
        step: Option<&str>,
        extra: Option<&str>,
    ) {
        let problem = match path[0].as_str() {
            "inputs" => path.get(1).and_then(|name| self.input_problem(name, site)),
            "steps" => path
                .get(1)
                .and_then(|id| self.step_problem(id, &path[2..], site)),
            "item" | "index" if !site.item_allowed => Some(
                Problem::error(
                    ProblemCode::ItemOutsideForEach,
                    &site.path,
                    format!("`{}` is only defined in a step with `for_each`", path[0]),
                )
                .suggest("add `for_each` to the step, or reference the array itself"),
            ),
            "item" | "index" => None,
            name if Some(name) == extra => None,
            name => Some(self.variable_problem(name, path, site, extra)),
        };
        if let Some(problem) = problem {
            self.push(problem, step);
        }
    }

    fn input_problem(&self, name: &str, site: &Site<'_>) -> Option<Problem> {
        if self.workflow.inputs.contains_key(name) {
            return None;
        }
        let message = format!("input `{name}` is not declared in the workflow's `inputs`");
        let problem = Problem::error(ProblemCode::UnknownInput, &site.path, message);
        Some(
            match nearest(name, self.workflow.inputs.keys().map(String::as_str)) {
                Some(close) => problem.suggest(format!("did you mean `inputs.{close}`?")),
                None => problem.suggest(format!("declare `{name}` in the workflow's `inputs`")),
            },
        )
    }

    fn step_problem(&self, id: &str, rest: &[String], site: &Site<'_>) -> Option<Problem> {
        let Some(&index) = self.index_of.get(id) else {
            let message = format!("step `{id}` does not exist");
            let problem = Problem::error(ProblemCode::UnknownStep, &site.path, message);
            let close = nearest(id, self.index_of.keys().copied());
            return Some(problem.suggest(match close {
                Some(close) => format!("did you mean `steps.{close}`?"),
                None => "reference the id of a step in this workflow".to_owned(),
            }));
        };
        match rest {
            [field, ..] if field != "outputs" => {
                let message =
                    format!("`steps.{id}.{field}` does not exist; a step exposes only `outputs`");
                let problem = Problem::error(ProblemCode::InvalidReference, &site.path, message);
                Some(problem.suggest(format!("write `steps.{id}.outputs.{field}`")))
            }
            [_, output, ..] => self.output_problem(index, output, site),
            _ => None,
        }
    }

    /// Reports an output that the step does not declare. Steps that declare no outputs may
    /// return anything, so references to them are not checked.
    fn output_problem(&self, index: usize, output: &str, site: &Site<'_>) -> Option<Problem> {
        let step = &self.workflow.steps[index];
        if step.outputs.is_empty() || step.outputs.contains_key(output) {
            return None;
        }
        let message = format!("step `{}` declares no output `{output}`", step.id);
        let problem = Problem::error(ProblemCode::UnknownOutput, &site.path, message);
        let names: Vec<&str> = step.outputs.keys().map(String::as_str).collect();
        Some(match nearest(output, names.iter().copied()) {
            Some(close) => problem.suggest(format!("did you mean `{close}`?")),
            None => problem.suggest(format!("declared outputs are: {}", names.join(", "))),
        })
    }

    fn variable_problem(
        &self,
        name: &str,
        path: &[String],
        site: &Site<'_>,
        extra: Option<&str>,
    ) -> Problem {
        let message = format!("variable `{name}` does not exist here");
        let problem = Problem::error(ProblemCode::UnknownVariable, &site.path, message);
        if self.index_of.contains_key(name) {
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            return problem.suggest(format!("write `${{{}}}`", legacy_step_path(&segments)));
        }
        if name == "env" {
            return problem.suggest(
                "`env` is read only in agent headers and env; pass the value as a job input",
            );
        }
        let mut variables = vec!["inputs", "steps"];
        if site.item_allowed {
            variables.extend(["item", "index"]);
        }
        variables.extend(extra);
        match nearest(name, variables.iter().copied()) {
            Some(close) => problem.suggest(format!("did you mean `{close}`?")),
            None => problem.suggest(format!("the variables here are: {}", variables.join(", "))),
        }
    }

    fn for_each_check(&mut self, step: &Step, index: usize) {
        let Some(for_each) = &step.for_each else {
            return;
        };
        let text = for_each.items().trim();
        let path = match for_each {
            crate::workflow::ForEach::Items(_) => format!("/steps/{index}/for_each"),
            crate::workflow::ForEach::Options { .. } => format!("/steps/{index}/for_each/items"),
        };
        let interpolated = text.contains("${") && expression_unwrap(text) == text;
        let found = if interpolated {
            Some("text around a reference, which makes a string".to_owned())
        } else {
            CompiledExpression::compile(text)
                .ok()
                .and_then(|compiled| self.items_kind(&compiled))
        };
        if let Some(found) = found {
            let message = format!("`for_each` must yield an array, but `{text}` is {found}");
            let problem = Problem::error(ProblemCode::ForEachNotArray, path, message);
            self.push(
                problem.suggest("reference an array, such as `${inputs.items}`"),
                Some(&step.id),
            );
        }
    }

    /// Returns what the items expression yields when that is known not to be an array.
    fn items_kind(&self, compiled: &CompiledExpression) -> Option<String> {
        if let Some(kind) = compiled.literal_kind() {
            return Some(kind.to_owned());
        }
        let path = compiled.path()?;
        let declared = match path {
            [root, name] if root == "inputs" => self.workflow.inputs.get(name)?.kind?,
            [root, id, outputs, name] if root == "steps" && outputs == "outputs" => {
                let output = self
                    .workflow
                    .steps
                    .get(*self.index_of.get(id.as_str())?)?
                    .outputs
                    .get(name)?;
                serde_json::from_value::<ParameterType>(output.get("type")?.clone()).ok()?
            }
            _ => return None,
        };
        let is_array = matches!(declared, ParameterType::Array | ParameterType::Any);
        (!is_array).then(|| format!("declared as {}", format!("{declared:?}").to_lowercase()))
    }

    fn depends_on_check(&mut self, step: &Step, index: usize) {
        for (position, dependency) in step.depends_on.iter().enumerate() {
            if self.index_of.contains_key(dependency.as_str()) {
                continue;
            }
            let path = format!("/steps/{index}/depends_on/{position}");
            let message = format!("step `{dependency}` does not exist");
            let problem = Problem::error(ProblemCode::UnknownStep, path, message);
            let problem = match nearest(dependency, self.index_of.keys().copied()) {
                Some(close) => problem.suggest(format!("did you mean `{close}`?")),
                None => problem.suggest("name a step of this workflow"),
            };
            self.push(problem, Some(&step.id));
        }
    }

    fn connection_check(&mut self, index: usize) {
        let connection = &self.workflow.connections[index];
        let path = format!("/connections/{index}");
        self.connection_source_check(&connection.source, &pointer(&path, "source"));
        let target_step =
            self.connection_target_check(&connection.target, &pointer(&path, "target"));

        let item_allowed =
            target_step.is_some_and(|step| self.workflow.steps[step].for_each.is_some());
        let step_id = target_step.map(|step| self.workflow.steps[step].id.clone());
        for (name, text) in [
            ("condition", &connection.condition),
            ("transform", &connection.transform),
        ] {
            let Some(text) = text else { continue };
            let site = Site {
                path: pointer(&path, name),
                text,
                kind: SiteKind::Expression,
                item_allowed,
            };
            self.site_check(&site, step_id.as_deref(), Some("value"));
        }
    }

    fn connection_source_check(&mut self, source: &str, path: &str) {
        let Some(parsed) = connection_source(source) else {
            let message = format!("connection source `{source}` is not `step.output` or `${{steps.step.outputs.output}}`");
            let problem = Problem::error(ProblemCode::InvalidReference, path, message);
            self.push(
                problem.suggest("write the producing step's id, a dot and its output name"),
                None,
            );
            return;
        };
        if parsed.legacy {
            let canonical = parsed.path.join(".");
            let message = format!("`{source}` is the older spelling of a connection source");
            let problem = Problem::warning(ProblemCode::LegacyReference, path, message);
            self.push(problem.suggest(format!("write `${{{canonical}}}`")), None);
        }
        let site = Site {
            path: path.to_owned(),
            text: source,
            kind: SiteKind::Expression,
            item_allowed: false,
        };
        if let Some(problem) = self.step_problem(&parsed.step, &parsed.path[2..], &site) {
            self.push(problem, None);
        }
    }

    /// Checks `step.input` and returns the index of the target step when it exists.
    fn connection_target_check(&mut self, target: &str, path: &str) -> Option<usize> {
        let Some((id, _input)) = connection_target(target) else {
            let message = format!("connection target `{target}` is not `step.input`");
            let problem = Problem::error(ProblemCode::InvalidReference, path, message);
            self.push(
                problem.suggest("write the consuming step's id, a dot and its input name"),
                None,
            );
            return None;
        };
        let index = self.index_of.get(id).copied();
        if index.is_none() {
            let message = format!("step `{id}` does not exist");
            let problem = Problem::error(ProblemCode::UnknownStep, path, message);
            let problem = match nearest(id, self.index_of.keys().copied()) {
                Some(close) => problem.suggest(format!("did you mean `{close}`?")),
                None => problem.suggest("name a step of this workflow"),
            };
            self.push(problem, None);
        }
        index
    }

    fn push(&mut self, mut problem: Problem, step: Option<&str>) {
        problem.step = step.map(str::to_owned);
        self.problems.push(problem);
    }
}

fn references_of(segments: Vec<Segment>) -> Vec<(String, bool)> {
    segments
        .into_iter()
        .filter_map(|segment| match segment {
            Segment::Reference { source, legacy } => Some((source, legacy)),
            Segment::Text(_) => None,
        })
        .collect()
}

/// Returns whether `name` is a variable of every scope, so that `{{name.x}}` is not a step reference.
fn is_scope_root(name: &str) -> bool {
    matches!(name, "inputs" | "steps" | "item" | "index")
}
