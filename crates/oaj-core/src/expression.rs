//! References and expressions: `${ ... }` in JSON values, evaluated as CEL against a job's scope.
//!
//! The scope is a JSON object such as
//! `{"inputs": {...}, "steps": {"<id>": {"outputs": ...}}, "item": ..., "index": 0}`.
//! A string that is exactly one `${ ... }` becomes the expression's JSON value, with its type
//! kept. References inside a longer string are interpolated. `{{ path }}` is the older spelling
//! of `${ path }` and `$${` writes a literal `${`.
//!
//! A plain dotted path such as `steps.a.outputs.o` is looked up in the JSON directly, without a
//! round trip through CEL values. That is faster, keeps the key order of objects, and names the
//! missing key. The result is the same as CEL's for such a path.

mod convert;
pub(crate) mod references;
pub(crate) mod template;

use std::sync::Arc;

use serde_json::Value;
use thiserror::Error;

use template::{path_segments, template_parse, Segment, TemplateError};

/// Failure to evaluate an expression, or to resolve the references in a string.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ExpressionError {
    /// The CEL source does not parse.
    #[error("expression `{expression}` is invalid: {message}")]
    SyntaxInvalid {
        /// The source as written.
        expression: String,
        /// The parser's explanation, with line and column.
        message: String,
    },
    /// A `${` has no matching `}`.
    #[error("`{text}` opens `${{` at byte {offset} without closing it; add `}}`, or write `$${{` for a literal `${{`")]
    TemplateUnclosed {
        /// The whole string.
        text: String,
        /// Byte offset of the `${`.
        offset: usize,
    },
    /// An empty `${}`.
    #[error("`{text}` holds an empty `${{}}` at byte {offset}; write a reference such as `${{inputs.name}}`")]
    TemplateEmpty {
        /// The whole string.
        text: String,
        /// Byte offset of the `${`.
        offset: usize,
    },
    /// A path names a key that the value it reads does not have.
    #[error("expression `{expression}` failed: no key `{key}` in {parent}")]
    KeyMissing {
        /// The source as written.
        expression: String,
        /// The missing key.
        key: String,
        /// The path of the object that lacks it, such as `steps.a.outputs`.
        parent: String,
    },
    /// Evaluation failed for another reason, such as a type error or a division by zero.
    #[error("expression `{expression}` failed: {message}")]
    EvaluationFailed {
        /// The source as written.
        expression: String,
        /// The cause.
        message: String,
    },
    /// A condition returned something other than a boolean.
    #[error("condition `{expression}` returned {found}, expected true or false")]
    ResultNotBoolean {
        /// The source as written.
        expression: String,
        /// The value it returned, as compact JSON.
        found: String,
    },
}

/// An expression parsed once, to be evaluated against many scopes.
pub struct CompiledExpression {
    source: String,
    body: Body,
}

enum Body {
    /// A dotted path, looked up in the JSON scope directly.
    Path(Vec<String>),
    /// Any other CEL expression, with the environment it was compiled for.
    Cel {
        program: cel::Program,
        env: Arc<cel::Env>,
    },
}

/// The variables an expression can read: the scope's keys, plus one extra binding.
#[derive(Clone, Copy)]
pub(crate) struct Bindings<'a> {
    pub(crate) scope: &'a Value,
    pub(crate) extra: Option<(&'a str, &'a Value)>,
}

impl<'a> Bindings<'a> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        match self.extra {
            Some((extra, value)) if extra == name => Some(value),
            _ => self.scope.get(name),
        }
    }

    fn names(&self) -> String {
        let mut names: Vec<&str> = self.extra.iter().map(|(name, _)| *name).collect();
        if let Some(object) = self.scope.as_object() {
            names.extend(object.keys().map(String::as_str));
        }
        names.join(", ")
    }
}

impl std::fmt::Debug for CompiledExpression {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_tuple("CompiledExpression")
            .field(&self.source)
            .finish()
    }
}

impl CompiledExpression {
    /// Parses a bare CEL expression, or one wrapped in `${ }`.
    ///
    /// Errors with [`ExpressionError::SyntaxInvalid`] when the source does not parse.
    pub fn compile(expression: &str) -> Result<CompiledExpression, ExpressionError> {
        let source = expression_unwrap(expression);
        if let Some(segments) = path_segments(source) {
            let path = segments.into_iter().map(str::to_owned).collect();
            return Ok(CompiledExpression {
                source: source.to_owned(),
                body: Body::Path(path),
            });
        }

        let env = Arc::new(cel::Env::stdlib());
        let program = cel_parse(&env, source)?;
        let body = Body::Cel { program, env };
        Ok(CompiledExpression {
            source: source.to_owned(),
            body,
        })
    }

    /// Returns the source, without any `${ }` wrapper.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression with the keys of `scope` as its variables.
    ///
    /// Errors when a key is missing, on a CEL type error, or when the result has no JSON form.
    pub fn eval(&self, scope: &Value) -> Result<Value, ExpressionError> {
        self.eval_in(Bindings { scope, extra: None })
    }

    pub(crate) fn eval_in(&self, bindings: Bindings<'_>) -> Result<Value, ExpressionError> {
        match &self.body {
            Body::Path(path) => self.path_lookup(path, bindings).cloned(),
            Body::Cel { program, env } => self.cel_eval(program, env, bindings),
        }
    }

    /// Returns every variable path the expression reads, such as `["inputs", "x"]`.
    pub(crate) fn paths(&self) -> Vec<Vec<String>> {
        match &self.body {
            Body::Path(path) => vec![path.clone()],
            Body::Cel { program, .. } => references::expression_paths(program.expression()),
        }
    }

    /// Returns the variable path when the expression is a plain dotted path.
    pub(crate) fn path(&self) -> Option<&[String]> {
        match &self.body {
            Body::Path(path) => Some(path),
            Body::Cel { .. } => None,
        }
    }

    /// Names the kind of value the expression yields when it is a literal other than a list,
    /// such as `a string` for `'abc'`.
    pub(crate) fn literal_kind(&self) -> Option<&'static str> {
        use cel::common::ast::{Expr, LiteralValue};
        let Body::Cel { program, .. } = &self.body else {
            return None;
        };
        match &program.expression().expr {
            Expr::Literal(LiteralValue::String(_)) => Some("a string"),
            Expr::Literal(LiteralValue::Bytes(_)) => Some("bytes"),
            Expr::Literal(LiteralValue::Boolean(_)) => Some("a boolean"),
            Expr::Literal(LiteralValue::Null) => Some("null"),
            Expr::Literal(_) => Some("a number"),
            Expr::Map(_) => Some("a map"),
            _ => None,
        }
    }

    fn path_lookup<'a>(
        &self,
        path: &[String],
        bindings: Bindings<'a>,
    ) -> Result<&'a Value, ExpressionError> {
        let (first, rest) = path
            .split_first()
            .expect("a parsed path has at least one part");
        let root = bindings
            .get(first)
            .ok_or_else(|| self.variable_unknown(first, bindings))?;
        path_walk(&self.source, root, path, rest)
    }

    fn cel_eval(
        &self,
        program: &cel::Program,
        env: &Arc<cel::Env>,
        bindings: Bindings<'_>,
    ) -> Result<Value, ExpressionError> {
        let mut context = cel::Context::with_env(Arc::clone(env));
        for name in program.references().variables() {
            if let Some(value) = bindings.get(name) {
                context.add_variable_from_value(name, convert::json_to_cel(value));
            }
        }
        let value = program.execute(&context).map_err(|error| match error {
            cel::ExecutionError::UndeclaredReference(name) => {
                self.variable_unknown(name.as_str(), bindings)
            }
            cel::ExecutionError::NoSuchKey(key) => self.failure(format!("no key `{key}`")),
            other => self.failure(other.to_string()),
        })?;
        convert::cel_to_json(&value).map_err(|message| self.failure(message))
    }

    fn variable_unknown(&self, name: &str, bindings: Bindings<'_>) -> ExpressionError {
        let names = bindings.names();
        self.failure(format!(
            "no variable `{name}`; the variables here are: {names}"
        ))
    }

    fn failure(&self, message: String) -> ExpressionError {
        ExpressionError::EvaluationFailed {
            expression: self.source.clone(),
            message,
        }
    }
}

/// Walks `rest` down from `root`, the value of `path[0]`; `source` names the expression in errors.
pub(crate) fn path_walk<'a>(
    source: &str,
    root: &'a Value,
    path: &[String],
    rest: &[String],
) -> Result<&'a Value, ExpressionError> {
    let mut current = root;
    for (depth, key) in rest.iter().enumerate() {
        let parent = path[..=depth].join(".");
        current = match current {
            Value::Object(object) => {
                object.get(key).ok_or_else(|| ExpressionError::KeyMissing {
                    expression: source.to_owned(),
                    key: key.clone(),
                    parent,
                })?
            }
            other => {
                return Err(ExpressionError::EvaluationFailed {
                    expression: source.to_owned(),
                    message: format!(
                        "`{parent}` is {}, not an object, so it has no key `{key}`",
                        json_kind(other)
                    ),
                })
            }
        };
    }
    Ok(current)
}

/// Evaluates a bare CEL expression, or one wrapped in `${ }`, against `scope`.
///
/// Errors when the expression does not parse or does not evaluate; see [`CompiledExpression`].
pub fn expression_eval(expression: &str, scope: &Value) -> Result<Value, ExpressionError> {
    CompiledExpression::compile(expression)?.eval(scope)
}

/// Evaluates a condition, which must return a boolean.
///
/// Errors as [`expression_eval`] does, and with [`ExpressionError::ResultNotBoolean`].
pub fn condition_eval(expression: &str, scope: &Value) -> Result<bool, ExpressionError> {
    let compiled = CompiledExpression::compile(expression)?;
    condition_result(&compiled, compiled.eval(scope)?)
}

pub(crate) fn condition_result(
    compiled: &CompiledExpression,
    value: Value,
) -> Result<bool, ExpressionError> {
    value
        .as_bool()
        .ok_or_else(|| ExpressionError::ResultNotBoolean {
            expression: compiled.source.clone(),
            found: value.to_string(),
        })
}

/// Resolves every reference in `value`, walking arrays and objects. Object keys are not resolved.
///
/// A string that is exactly one reference becomes that reference's value, so its JSON type is
/// kept. A reference inside a longer string is interpolated: strings as they are, other values
/// as compact JSON.
pub fn value_resolve(value: &Value, scope: &Value) -> Result<Value, ExpressionError> {
    value_resolve_in(value, Bindings { scope, extra: None })
}

pub(crate) fn value_resolve_in(
    value: &Value,
    bindings: Bindings<'_>,
) -> Result<Value, ExpressionError> {
    match value {
        Value::String(text) => string_resolve(text, bindings),
        Value::Array(items) => items
            .iter()
            .map(|item| value_resolve_in(item, bindings))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(object) => {
            let mut resolved = serde_json::Map::with_capacity(object.len());
            for (key, item) in object {
                resolved.insert(key.clone(), value_resolve_in(item, bindings)?);
            }
            Ok(Value::Object(resolved))
        }
        other => Ok(other.clone()),
    }
}

fn string_resolve(text: &str, bindings: Bindings<'_>) -> Result<Value, ExpressionError> {
    if !text.contains("${") && !text.contains("{{") {
        return Ok(Value::String(text.to_owned()));
    }
    let segments = template_parse(text).map_err(|error| template_error(text, error))?;
    if let [Segment::Reference { source, legacy }] = segments.as_slice() {
        return reference_eval(source, *legacy, bindings);
    }

    let mut output = String::new();
    for segment in &segments {
        match segment {
            Segment::Text(literal) => output.push_str(literal),
            Segment::Reference { source, legacy } => {
                match reference_eval(source, *legacy, bindings)? {
                    Value::String(resolved) => output.push_str(&resolved),
                    other => output.push_str(&other.to_string()),
                }
            }
        }
    }
    Ok(Value::String(output))
}

fn reference_eval(
    source: &str,
    legacy: bool,
    bindings: Bindings<'_>,
) -> Result<Value, ExpressionError> {
    let source = if legacy {
        legacy_path_rewrite(source, bindings.scope)
    } else {
        source.to_owned()
    };
    CompiledExpression::compile(&source)?.eval_in(bindings)
}

/// Reads the older `{{step.output}}` spelling as `steps.step.outputs.output` when `step` is not a
/// variable of the scope but is the id of a step in it. Other sources are returned unchanged.
pub(crate) fn legacy_path_rewrite(source: &str, scope: &Value) -> String {
    let Some(segments) = path_segments(source) else {
        return source.to_owned();
    };
    let first = segments[0];
    let is_step = scope
        .get("steps")
        .and_then(|steps| steps.get(first))
        .is_some();
    if scope.get(first).is_some() || !is_step {
        return source.to_owned();
    }
    legacy_step_path(&segments)
}

/// Spells a legacy `step.output.rest` path canonically, as `steps.step.outputs.output.rest`.
pub(crate) fn legacy_step_path(segments: &[&str]) -> String {
    let mut canonical = format!("steps.{}.outputs", segments[0]);
    for segment in &segments[1..] {
        canonical.push('.');
        canonical.push_str(segment);
    }
    canonical
}

/// Splits a plain dotted path into owned identifiers; see [`template::path_segments`].
pub(crate) fn path_segments_owned(source: &str) -> Option<Vec<String>> {
    path_segments(source).map(|segments| segments.into_iter().map(str::to_owned).collect())
}

/// Strips a `${ }` wrapper around the whole of `expression`, if there is one.
pub(crate) fn expression_unwrap(expression: &str) -> &str {
    let trimmed = expression.trim();
    if let Ok([Segment::Reference { legacy: false, .. }]) = template_parse(trimmed).as_deref() {
        return trimmed[2..trimmed.len() - 1].trim();
    }
    trimmed
}

pub(crate) fn template_error(text: &str, error: TemplateError) -> ExpressionError {
    let text = text.to_owned();
    match error {
        TemplateError::Unclosed { offset } => ExpressionError::TemplateUnclosed { text, offset },
        TemplateError::Empty { offset } => ExpressionError::TemplateEmpty { text, offset },
    }
}

/// Longest CEL source accepted, in bytes. Expressions in workflows are short, and the bound keeps
/// the syntax tree shallow enough for the recursive evaluator.
pub const EXPRESSION_LENGTH_MAX: usize = 2048;

/// Deepest nesting of brackets accepted in CEL source.
pub const EXPRESSION_NESTING_MAX: usize = 24;

/// Deepest syntax tree accepted. The CEL evaluator recurses once per level on the caller's stack,
/// with frames large enough in debug builds that a chain of 100 `+` overflows a 2 MiB thread.
pub const EXPRESSION_DEPTH_MAX: usize = 32;

/// Stack size of the thread that parses CEL, in bytes. The parser generated by ANTLR recurses
/// through about ten rules per bracket level, with large frames in debug builds, so a parse on a
/// default 2 MiB thread overflows at about ten levels.
const PARSER_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Parses CEL source on a thread with a large stack, after bounding its length and nesting so
/// that no input can overflow even that stack.
fn cel_parse(env: &cel::Env, source: &str) -> Result<cel::Program, ExpressionError> {
    let invalid = |message: String| ExpressionError::SyntaxInvalid {
        expression: source.to_owned(),
        message,
    };
    if source.len() > EXPRESSION_LENGTH_MAX {
        let length = source.len();
        return Err(invalid(format!(
            "it is {length} bytes long, more than the limit of {EXPRESSION_LENGTH_MAX}; \
             compute the value in a `transform` step instead"
        )));
    }
    if template::nesting_depth(source) > EXPRESSION_NESTING_MAX {
        return Err(invalid(format!(
            "brackets nest more than {EXPRESSION_NESTING_MAX} levels deep; split the expression"
        )));
    }

    if ON_PARSER_STACK.get() {
        return program_parse(env, source).map_err(invalid);
    }
    let parsed = std::thread::scope(|scope| {
        let parser = std::thread::Builder::new()
            .name("cel-parse".to_owned())
            .stack_size(PARSER_STACK_BYTES)
            .spawn_scoped(scope, || program_parse(env, source));
        parser.map(|handle| handle.join())
    });
    match parsed {
        Ok(Ok(result)) => result.map_err(invalid),
        Ok(Err(_)) => Err(invalid("the CEL parser panicked".to_owned())),
        Err(error) => Err(invalid(format!("no thread to parse it on: {error}"))),
    }
}

thread_local! {
    /// Whether this thread was started by [`with_parser_stack`], so that CEL can be parsed on it
    /// directly.
    static ON_PARSER_STACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `work` on a thread whose stack is large enough for the CEL parser, so that every
/// expression compiled inside is parsed without starting a thread of its own. Starting a thread
/// with a large stack costs about 0.2 ms in a release build, which dominates when a document has
/// thousands of expressions.
///
/// Runs `work` on the current thread when no thread can be started. Each parse then tries to
/// start its own thread, and reports an error if that fails too. Propagates a panic of `work`.
pub fn with_parser_stack<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    if ON_PARSER_STACK.get() {
        return work();
    }
    let mut work = Some(work);
    let result = std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("cel-parse".to_owned())
            .stack_size(PARSER_STACK_BYTES)
            .spawn_scoped(scope, || {
                ON_PARSER_STACK.set(true);
                work.take().map(|work| work())
            });
        spawned.map(|handle| handle.join())
    });
    match result {
        Ok(Ok(Some(value))) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Ok(Ok(None)) | Err(_) => {
            let work = work
                .take()
                .expect("work runs only once, and only if the thread failed to start");
            work()
        }
    }
}

/// Parses `source` and bounds the depth of its syntax tree. A deep tree is dropped here, on the
/// parser's large stack, because dropping it is recursive too.
fn program_parse(env: &cel::Env, source: &str) -> Result<cel::Program, String> {
    let program = env
        .compile(source)
        .map_err(|error| syntax_message(&error))?;
    let depth = references::expression_depth(program.expression());
    if depth > EXPRESSION_DEPTH_MAX {
        return Err(format!(
            "its syntax tree is {depth} levels deep, more than the limit of \
             {EXPRESSION_DEPTH_MAX}; split it into steps or simpler expressions"
        ));
    }
    Ok(program)
}

/// Formats CEL parse errors on one line each, without the `ERROR: <input>:` prefix.
fn syntax_message(errors: &cel::ParseErrors) -> String {
    let messages: Vec<String> = errors
        .errors
        .iter()
        .map(|error| {
            format!(
                "{} at line {}, column {}",
                error.msg,
                error.pos.0,
                error.pos.1 + 1
            )
        })
        .collect();
    messages.join("; ")
}

/// Names the kind of a JSON value with its article, for messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
