//! The schema phase: JSON types, required fields and unknown fields, checked against a table of
//! the workflow format.
//!
//! A hand-written table, rather than serde's errors, because serde stops at the first error and
//! names no nearest field. Broken optional fields are removed from the document as they are
//! reported, so that the typed model can still be built for the semantic phase.

use serde_json::{Map, Value};

use super::{nearest, pointer, Problem, ProblemCode};

/// The expected shape of a JSON value.
#[derive(Clone, Copy)]
enum Shape {
    Any,
    String,
    Number,
    /// A whole number from 0 to `u32::MAX`.
    Count,
    Bool,
    Enum(&'static [&'static str]),
    Object(&'static [Field]),
    MapOf(&'static Shape),
    ListOf(&'static Shape),
    /// A string, or an object with `items` and `concurrency`.
    ForEach,
    /// An object whose fields depend on its `kind`.
    Agent,
}

#[derive(Clone, Copy)]
struct Field {
    name: &'static str,
    shape: Shape,
    required: bool,
}

const fn required(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        shape,
        required: true,
    }
}

const fn optional(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        shape,
        required: false,
    }
}

static ANY: Shape = Shape::Any;
static STRING: Shape = Shape::String;
static PARAMETER: Shape = Shape::Object(PARAMETER_FIELDS);
static STEP: Shape = Shape::Object(STEP_FIELDS);
static CONNECTION: Shape = Shape::Object(CONNECTION_FIELDS);
static AGENT: Shape = Shape::Agent;

const PARAMETER_TYPES: &[&str] = &[
    "string", "number", "integer", "boolean", "object", "array", "any",
];
const AGENT_KINDS: &[&str] = &["command", "http", "llm"];

static WORKFLOW_FIELDS: &[Field] = &[
    required("id", Shape::String),
    optional("version", Shape::String),
    optional("name", Shape::String),
    optional("description", Shape::String),
    optional("inputs", Shape::MapOf(&PARAMETER)),
    optional("outputs", Shape::MapOf(&PARAMETER)),
    required("steps", Shape::ListOf(&STEP)),
    optional("connections", Shape::ListOf(&CONNECTION)),
    optional("metadata", Shape::Object(METADATA_FIELDS)),
    optional("agents", Shape::MapOf(&AGENT)),
    optional("defaults", Shape::Object(DEFAULTS_FIELDS)),
];

static PARAMETER_FIELDS: &[Field] = &[
    optional("type", Shape::Enum(PARAMETER_TYPES)),
    optional("description", Shape::String),
    optional("default", Shape::Any),
    optional("required", Shape::Bool),
    optional("enum", Shape::ListOf(&ANY)),
    optional("pattern", Shape::String),
    optional("minimum", Shape::Number),
    optional("maximum", Shape::Number),
    optional("format", Shape::String),
    optional("value", Shape::Any),
];

static STEP_FIELDS: &[Field] = &[
    required("id", Shape::String),
    required("component", Shape::String),
    optional("name", Shape::String),
    optional("description", Shape::String),
    optional("condition", Shape::String),
    optional("inputs", Shape::MapOf(&ANY)),
    optional("outputs", Shape::MapOf(&ANY)),
    optional("retry", Shape::Object(RETRY_FIELDS)),
    optional("timeout", Shape::Number),
    optional("depends_on", Shape::ListOf(&STRING)),
    optional("for_each", Shape::ForEach),
    optional("on_failure", Shape::Enum(&["fail", "continue"])),
    optional("concurrency", Shape::Object(CONCURRENCY_FIELDS)),
    optional("approval", Shape::Object(APPROVAL_FIELDS)),
    optional("metadata", Shape::Any),
];

static RETRY_FIELDS: &[Field] = &[
    optional("max_attempts", Shape::Count),
    optional("delay_seconds", Shape::Number),
    optional("backoff_multiplier", Shape::Number),
    optional("max_delay_seconds", Shape::Number),
    optional("jitter", Shape::Number),
];

static FOR_EACH_FIELDS: &[Field] = &[
    required("items", Shape::String),
    optional("concurrency", Shape::Count),
];

static CONCURRENCY_FIELDS: &[Field] = &[
    required("key", Shape::String),
    required("limit", Shape::Count),
];

static APPROVAL_FIELDS: &[Field] = &[
    optional("prompt", Shape::String),
    optional("timeout_seconds", Shape::Number),
];

static CONNECTION_FIELDS: &[Field] = &[
    required("source", Shape::String),
    required("target", Shape::String),
    optional("condition", Shape::String),
    optional("transform", Shape::String),
];

static METADATA_FIELDS: &[Field] = &[
    optional("author", Shape::String),
    optional("tags", Shape::ListOf(&STRING)),
    optional("category", Shape::String),
    optional("license", Shape::String),
    optional("custom", Shape::Any),
];

static DEFAULTS_FIELDS: &[Field] = &[
    optional("retry", Shape::Object(RETRY_FIELDS)),
    optional("timeout", Shape::Number),
    optional("job_timeout", Shape::Number),
    optional(
        "priority",
        Shape::Enum(&["low", "medium", "high", "critical"]),
    ),
];

static COMMAND_FIELDS: &[Field] = &[
    required("kind", Shape::String),
    required("command", Shape::ListOf(&STRING)),
    optional("shell", Shape::Bool),
    optional("env", Shape::MapOf(&STRING)),
    optional("cwd", Shape::String),
];

static HTTP_FIELDS: &[Field] = &[
    required("kind", Shape::String),
    optional("method", Shape::String),
    required("url", Shape::String),
    optional("headers", Shape::MapOf(&STRING)),
];

static LLM_FIELDS: &[Field] = &[
    required("kind", Shape::String),
    required("base_url", Shape::String),
    required("model", Shape::String),
    optional("api_key_env", Shape::String),
    optional("temperature", Shape::Number),
    optional("max_tokens", Shape::Count),
];

/// Checks `document` against the workflow shape, removing broken optional fields. Returns
/// whether every required part is usable, so that the typed model can be built.
pub(super) fn document_check(document: &mut Value, problems: &mut Vec<Problem>) -> bool {
    let mut walker = Walker {
        problems,
        step: None,
    };
    walker.check(document, Shape::Object(WORKFLOW_FIELDS), "")
}

struct Walker<'a> {
    problems: &'a mut Vec<Problem>,
    /// Id of the step being walked, for the problems found inside it.
    step: Option<String>,
}

impl Walker<'_> {
    /// Checks one value; returns false when it cannot be used as it is.
    fn check(&mut self, value: &mut Value, shape: Shape, path: &str) -> bool {
        match (shape, &mut *value) {
            (Shape::Any, _) => true,
            (Shape::String, Value::String(_)) | (Shape::Bool, Value::Bool(_)) => true,
            (Shape::Number, Value::Number(_)) => true,
            (Shape::Count, Value::Number(number)) => self.count_check(number, path),
            (Shape::Enum(allowed), Value::String(text)) => self.enum_check(text, allowed, path),
            (Shape::Object(fields), Value::Object(object)) => {
                self.object_check(object, fields, path)
            }
            (Shape::MapOf(entry), Value::Object(object)) => self.map_check(object, *entry, path),
            (Shape::ListOf(item), Value::Array(items)) => {
                let mut usable = true;
                for (index, element) in items.iter_mut().enumerate() {
                    usable &= self.item_check(element, *item, &pointer(path, index));
                }
                usable
            }
            (Shape::ForEach, Value::String(_)) => true,
            (Shape::ForEach, Value::Object(object)) => {
                self.object_check(object, FOR_EACH_FIELDS, path)
            }
            (Shape::Agent, Value::Object(object)) => self.agent_check(object, path),
            (_, other) => {
                let found = other.clone();
                self.type_mismatch(shape, &found, path);
                false
            }
        }
    }

    /// Checks a list element; entering a step records its id for the problems inside it.
    fn item_check(&mut self, element: &mut Value, shape: Shape, path: &str) -> bool {
        let is_step = matches!(shape, Shape::Object(fields) if std::ptr::eq(fields, STEP_FIELDS));
        if !is_step {
            return self.check(element, shape, path);
        }
        self.step = element.get("id").and_then(Value::as_str).map(str::to_owned);
        let usable = self.check(element, shape, path);
        self.step = None;
        usable
    }

    fn object_check(
        &mut self,
        object: &mut Map<String, Value>,
        fields: &[Field],
        path: &str,
    ) -> bool {
        let mut usable = true;
        let unknown: Vec<String> = object
            .keys()
            .filter(|key| !fields.iter().any(|field| field.name == key.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            self.field_unknown(&key, fields, path);
            object.remove(&key);
        }

        for field in fields {
            let field_path = pointer(path, field.name);
            match object.get_mut(field.name) {
                None | Some(Value::Null) if field.required => {
                    self.field_missing(field.name, path);
                    usable = false;
                }
                None => {}
                Some(Value::Null) => {
                    object.remove(field.name);
                }
                Some(value) => {
                    let is_usable = self.check(value, field.shape, &field_path);
                    if !is_usable && field.required {
                        usable = false;
                    } else if !is_usable {
                        object.remove(field.name);
                    }
                }
            }
        }
        usable
    }

    /// Checks the entries of a map. A broken entry is replaced by a placeholder of its shape,
    /// so that references to its name are not reported a second time as unknown.
    fn map_check(&mut self, object: &mut Map<String, Value>, entry: Shape, path: &str) -> bool {
        for (key, value) in object.iter_mut() {
            if !self.check(value, entry, &pointer(path, key)) {
                *value = placeholder(entry);
            }
        }
        true
    }

    fn agent_check(&mut self, object: &mut Map<String, Value>, path: &str) -> bool {
        let fields = match object.get("kind") {
            Some(Value::String(kind)) if kind == "command" => COMMAND_FIELDS,
            Some(Value::String(kind)) if kind == "http" => HTTP_FIELDS,
            Some(Value::String(kind)) if kind == "llm" => LLM_FIELDS,
            Some(Value::String(kind)) => {
                let kind = kind.clone();
                return self.enum_check(&kind, AGENT_KINDS, &pointer(path, "kind"));
            }
            Some(other) => {
                let other = other.clone();
                self.type_mismatch(Shape::Enum(AGENT_KINDS), &other, &pointer(path, "kind"));
                return false;
            }
            None => {
                self.field_missing("kind", path);
                return false;
            }
        };
        self.object_check(object, fields, path)
    }

    fn count_check(&mut self, number: &serde_json::Number, path: &str) -> bool {
        let fits = number
            .as_u64()
            .is_some_and(|count| count <= u64::from(u32::MAX));
        if !fits {
            let problem = Problem::error(
                ProblemCode::WrongType,
                path,
                format!(
                    "expected a whole number from 0 to {}, found {number}",
                    u32::MAX
                ),
            );
            self.push(problem.suggest("write a whole number such as 3"));
        }
        fits
    }

    fn enum_check(&mut self, text: &str, allowed: &[&str], path: &str) -> bool {
        if allowed.contains(&text) {
            return true;
        }
        let mut problem = Problem::error(
            ProblemCode::InvalidValue,
            path,
            format!("`{text}` is not one of: {}", allowed.join(", ")),
        );
        if let Some(close) = nearest(text, allowed.iter().copied()) {
            problem = problem.suggest(format!("did you mean `{close}`?"));
        }
        self.push(problem);
        false
    }

    fn type_mismatch(&mut self, shape: Shape, found: &Value, path: &str) {
        let expected = shape_name(shape);
        let message = format!("expected {expected}, found {}", value_describe(found));
        let problem = Problem::error(ProblemCode::WrongType, path, message);
        self.push(problem.suggest(format!("write {expected} here")));
    }

    fn field_missing(&mut self, name: &str, path: &str) {
        let at = if path.is_empty() {
            "the document"
        } else {
            path
        };
        let message = format!("required field `{name}` is missing from {at}");
        let problem = Problem::error(ProblemCode::MissingField, pointer(path, name), message);
        self.push(problem.suggest(format!("add `{name}`")));
    }

    fn field_unknown(&mut self, key: &str, fields: &[Field], path: &str) {
        let names = fields.iter().map(|field| field.name);
        let message = format!("unknown field `{key}`");
        let mut problem = Problem::error(ProblemCode::UnknownField, pointer(path, key), message);
        problem = match nearest(key, names.clone()) {
            Some(close) => problem.suggest(format!("did you mean `{close}`?")),
            None => {
                let known: Vec<&str> = names.collect();
                problem.suggest(format!("remove it; known fields are: {}", known.join(", ")))
            }
        };
        self.push(problem);
    }

    fn push(&mut self, mut problem: Problem) {
        problem.step = self.step.clone();
        self.problems.push(problem);
    }
}

/// Builds a usable stand-in for a broken map entry: an untyped parameter, or a command agent.
fn placeholder(shape: Shape) -> Value {
    match shape {
        Shape::Agent => serde_json::json!({"kind": "command", "command": ["true"]}),
        Shape::String => Value::String(String::new()),
        _ => Value::Object(Map::new()),
    }
}

fn shape_name(shape: Shape) -> String {
    match shape {
        Shape::Any => "any value".to_owned(),
        Shape::String => "a string".to_owned(),
        Shape::Number => "a number".to_owned(),
        Shape::Count => "a whole number".to_owned(),
        Shape::Bool => "true or false".to_owned(),
        Shape::Enum(allowed) => format!("one of the strings {}", allowed.join(", ")),
        Shape::Object(_) | Shape::MapOf(_) | Shape::Agent => "an object".to_owned(),
        Shape::ListOf(_) => "an array".to_owned(),
        Shape::ForEach => "a string or an object with `items`".to_owned(),
    }
}

/// Describes a value for a message: its kind, and the value itself when it is short.
fn value_describe(value: &Value) -> String {
    let kind = crate::expression::json_kind(value);
    let text = value.to_string();
    if matches!(value, Value::Array(_) | Value::Object(_)) || text.len() > 40 {
        kind.to_owned()
    } else {
        format!("{kind} ({text})")
    }
}
