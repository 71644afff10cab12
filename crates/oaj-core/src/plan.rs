//! The step graph of a workflow as the engine runs it: what each step waits for, the input each
//! step receives, and the result of a job.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::expression::template::{template_parse, Segment};
use crate::expression::{
    condition_result, path_segments_owned, path_walk, value_resolve, Bindings, CompiledExpression,
    ExpressionError,
};
use crate::validate::{cycles_find, id_is_valid, step_needs, Problem, ProblemCode, Report};
use crate::workflow::Workflow;

/// A workflow with its step graph, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The workflow, as validated.
    pub workflow: Workflow,
    /// One entry per step, in document order.
    pub steps: Vec<PlanStep>,
}

/// A step and the steps it waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanStep {
    /// The step's id.
    pub id: String,
    /// Indices of the steps this step waits for, sorted and without duplicates: the steps its
    /// inputs, condition, `for_each`, concurrency key and approval prompt reference, the sources
    /// of connections into it, and its `depends_on`.
    pub needs: Vec<usize>,
}

impl Plan {
    /// Builds the step graph of a workflow that passed [`crate::validate::workflow_check`].
    ///
    /// Errors with a [`Report`] when two steps share an id or when steps wait for each other
    /// in a cycle. Other problems are the job of validation and are not checked again.
    pub fn new(workflow: Workflow) -> Result<Plan, Report> {
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();
        for (index, step) in workflow.steps.iter().enumerate() {
            if !seen.insert(step.id.as_str()) {
                let message = format!("step id `{}` is used by more than one step", step.id);
                let path = format!("/steps/{index}/id");
                problems.push(
                    Problem::error(ProblemCode::DuplicateStepId, path, message).at_step(&step.id),
                );
            }
        }
        let needs = step_needs(&workflow);
        for cycle in cycles_find(&needs) {
            problems.push(crate::validate::cycle_problem(&workflow, &cycle));
        }
        if !problems.is_empty() {
            return Err(Report { problems });
        }

        let steps = workflow
            .steps
            .iter()
            .zip(needs)
            .map(|(step, needs)| PlanStep {
                id: step.id.clone(),
                needs,
            })
            .collect();
        Ok(Plan { workflow, steps })
    }

    /// Returns the step indices in an order where each step comes after every step it waits for;
    /// among steps that are ready together, document order.
    pub fn order(&self) -> Vec<usize> {
        let mut waiting: Vec<usize> = self.steps.iter().map(|step| step.needs.len()).collect();
        let mut needed_by: Vec<Vec<usize>> = vec![Vec::new(); self.steps.len()];
        for (index, step) in self.steps.iter().enumerate() {
            for &need in &step.needs {
                needed_by[need].push(index);
            }
        }

        let mut ready: BTreeSet<usize> =
            (0..self.steps.len()).filter(|i| waiting[*i] == 0).collect();
        let mut order = Vec::with_capacity(self.steps.len());
        while let Some(index) = ready.pop_first() {
            order.push(index);
            for &dependent in &needed_by[index] {
                waiting[dependent] -= 1;
                if waiting[dependent] == 0 {
                    ready.insert(dependent);
                }
            }
        }
        assert_eq!(order.len(), self.steps.len(), "Plan::new rejects cycles");
        order
    }

    /// Builds the input object of step `step`: its `inputs` resolved against `scope`, then each
    /// connection into it, whose value (after its `condition` and `transform`) replaces the
    /// input it names. A connection whose condition is false sets nothing.
    ///
    /// Errors when a reference, condition or transform fails. Panics if `step` is not an index
    /// of [`Plan::steps`].
    pub fn step_input(&self, step: usize, scope: &Value) -> Result<Value, ExpressionError> {
        let definition = &self.workflow.steps[step];
        let mut inputs = Map::with_capacity(definition.inputs.len());
        for (name, value) in &definition.inputs {
            inputs.insert(name.clone(), value_resolve(value, scope)?);
        }

        for connection in &self.workflow.connections {
            let Some((target, input)) = connection_target(&connection.target) else {
                continue;
            };
            if target != definition.id {
                continue;
            }
            if let Some(value) = connection_value(connection, scope)? {
                inputs.insert(input.to_owned(), value);
            }
        }
        Ok(Value::Object(inputs))
    }

    /// Builds the result of a job from its final scope. With declared `outputs`, an object of
    /// each output's `value` resolved (null when it has none). Without, an object mapping each
    /// step that no other step waits for to its outputs (null when it has none).
    ///
    /// Errors when an output's reference fails.
    pub fn job_result(&self, scope: &Value) -> Result<Value, ExpressionError> {
        let mut result = Map::new();
        if !self.workflow.outputs.is_empty() {
            for (name, output) in &self.workflow.outputs {
                let value = match &output.value {
                    Some(value) => value_resolve(value, scope)?,
                    None => Value::Null,
                };
                result.insert(name.clone(), value);
            }
            return Ok(Value::Object(result));
        }

        let needed: BTreeSet<usize> = self
            .steps
            .iter()
            .flat_map(|step| step.needs.iter().copied())
            .collect();
        for (index, step) in self.steps.iter().enumerate() {
            if needed.contains(&index) {
                continue;
            }
            let outputs = scope.pointer(&format!("/steps/{}/outputs", pointer_token(&step.id)));
            result.insert(step.id.clone(), outputs.cloned().unwrap_or(Value::Null));
        }
        Ok(Value::Object(result))
    }
}

/// Reads the value a connection carries, or `None` when its condition is false.
fn connection_value(
    connection: &crate::workflow::Connection,
    scope: &Value,
) -> Result<Option<Value>, ExpressionError> {
    let source =
        connection_source(&connection.source).ok_or_else(|| ExpressionError::EvaluationFailed {
            expression: connection.source.clone(),
            message: "a connection source must be `step.output` or `${steps.step.outputs.output}`"
                .to_owned(),
        })?;
    let root = scope.get("steps").unwrap_or(&Value::Null);
    let value = path_walk(&connection.source, root, &source.path, &source.path[1..])?.clone();

    let bindings = Bindings {
        scope,
        extra: Some(("value", &value)),
    };
    if let Some(condition) = &connection.condition {
        let compiled = CompiledExpression::compile(condition)?;
        if !condition_result(&compiled, compiled.eval_in(bindings)?)? {
            return Ok(None);
        }
    }
    match &connection.transform {
        Some(transform) => CompiledExpression::compile(transform)?
            .eval_in(bindings)
            .map(Some),
        None => Ok(Some(value)),
    }
}

/// A parsed connection source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConnectionSource {
    /// Id of the producing step.
    pub(crate) step: String,
    /// Path in the scope: `steps`, the step id, `outputs`, then any output names.
    pub(crate) path: Vec<String>,
    /// Whether it was written in an older spelling: bare `step.output`, or `{{step.output}}`.
    pub(crate) legacy: bool,
}

/// Parses `${steps.a.outputs.o}`, or the older `a.o`, `a` and `{{a.o}}`. Returns `None` for
/// any other source.
pub(crate) fn connection_source(source: &str) -> Option<ConnectionSource> {
    let text = source.trim();
    let bare = match template_parse(text).ok()?.as_slice() {
        [Segment::Reference {
            source,
            legacy: false,
        }] => {
            let path = path_segments_owned(source)?;
            let is_step_output = path.len() >= 3 && path[0] == "steps" && path[2] == "outputs";
            let step = path.get(1).cloned().filter(|_| is_step_output)?;
            return Some(ConnectionSource {
                step,
                path,
                legacy: false,
            });
        }
        [Segment::Reference {
            source,
            legacy: true,
        }] => source.clone(),
        [Segment::Text(text)] => text.clone(),
        _ => return None,
    };

    let mut parts = bare.split('.');
    let step = parts.next().filter(|step| id_is_valid(step))?.to_owned();
    let mut path = vec!["steps".to_owned(), step.clone(), "outputs".to_owned()];
    for part in parts {
        if part.is_empty() {
            return None;
        }
        path.push(part.to_owned());
    }
    Some(ConnectionSource {
        step,
        path,
        legacy: true,
    })
}

/// Splits a `step.input` target into the step id and the input name.
pub(crate) fn connection_target(target: &str) -> Option<(&str, &str)> {
    let (step, input) = target.trim().split_once('.')?;
    (id_is_valid(step) && !input.is_empty()).then_some((step, input))
}

fn pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests;
