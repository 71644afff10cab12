//! The typed model of a workflow document.
//!
//! These types mirror the JSON shape of the OpenAgents framework plus oaj's additions. Parsing a
//! document into them does not check it: `validate` does that and reports every problem at once,
//! so code that runs jobs only ever sees documents that passed validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A workflow document: an id, a version and the steps that make it up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    /// Identifier made of letters, digits, `-` and `_`.
    pub id: String,
    /// Semantic version; `1.0.0` when the document gives none.
    #[serde(default = "default_version")]
    pub version: String,
    /// Human-readable title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Longer explanation of what the workflow does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Parameters a job must or may give, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, Parameter>,
    /// Values the job returns, by name. Each parameter's `value` gives its source.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, Parameter>,
    /// The steps, in document order.
    pub steps: Vec<Step>,
    /// Data edges from one step's output to another step's input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<Connection>,
    /// Descriptive metadata: author, tags, category, licence and free-form fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Agents defined inline, by the name that steps use as their `component`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, AgentSpec>,
    /// Retry, timeout and priority that apply where a step or job gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<Defaults>,
}

fn default_version() -> String {
    "1.0.0".to_owned()
}

/// A declared input or output of a workflow, or an output of a step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    /// Expected JSON type; `any` when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<ParameterType>,
    /// The meaning of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Value used when the job gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Whether a job must give a value. Parameters without a default are required unless this
    /// is `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// The only values allowed.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Value>>,
    /// Regular expression a string value must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Smallest allowed number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    /// Largest allowed number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    /// Informative format name such as `uri` or `date-time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// For workflow outputs: the value, usually a `${ ... }` reference to a step output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// The JSON types a parameter can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParameterType {
    /// A JSON string.
    String,
    /// Any JSON number.
    Number,
    /// A JSON number without a fractional part.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
    /// Any JSON value.
    Any,
}

/// One node of the workflow graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Identifier, unique inside the workflow.
    pub id: String,
    /// The agent this step calls: a built-in, an inline agent, a registered agent, or
    /// `agent.capability`.
    pub component: String,
    /// Human-readable title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Longer explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// CEL expression; when it is false the step and the steps that need it are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Values sent to the agent; any JSON, with `${ ... }` references resolved at run time.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub inputs: serde_json::Map<String, Value>,
    /// Declared outputs, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, Value>,
    /// The retry policy for failed attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Limit for one attempt, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Steps that must finish before this one starts, beyond those its data references imply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Fan-out: run one step run per item of this array, then gather the outputs in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEach>,
    /// The effect of this step's failure on the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// Limit on how many attempts sharing a key run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencySpec>,
    /// For `approval` steps: who is asked, and the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalSpec>,
    /// Free-form fields kept with the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// Retry policy of a step or of the workflow defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrySpec {
    /// Total attempts, the first included; 1 means no retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Delay before the first retry, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<f64>,
    /// Factor applied to the delay after each retry; 1 gives a fixed delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_multiplier: Option<f64>,
    /// Cap on any one delay, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_seconds: Option<f64>,
    /// Fraction (0 to 1) of each delay that is randomised, so that retries spread out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
}

/// The fan-out of a step: either an expression or an object with options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ForEach {
    /// A `${ ... }` reference or CEL expression that yields an array.
    Items(String),
    /// The same with a limit on items that run at once.
    Options {
        /// A `${ ... }` reference or CEL expression that yields an array.
        items: String,
        /// Maximum items that run at once. Unlimited when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        concurrency: Option<u32>,
    },
}

impl ForEach {
    /// Returns the expression that yields the items.
    pub fn items(&self) -> &str {
        match self {
            ForEach::Items(items) | ForEach::Options { items, .. } => items,
        }
    }

    /// Returns the limit on items that run at once, if any.
    pub fn concurrency(&self) -> Option<u32> {
        match self {
            ForEach::Items(_) => None,
            ForEach::Options { concurrency, .. } => *concurrency,
        }
    }
}

/// The effect of a step's final failure on its job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The job fails (the default).
    #[default]
    Fail,
    /// The job goes on; steps that need this step's output are skipped.
    Continue,
}

/// A concurrency limit shared by every attempt whose key evaluates to the same string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConcurrencySpec {
    /// Key, with `${ ... }` references interpolated.
    pub key: String,
    /// Most attempts with that key that run at once.
    pub limit: u32,
}

/// Options of an `approval` step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApprovalSpec {
    /// Text shown to the person who decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Seconds to wait for a decision; after that the step fails as rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
}

/// A data edge: the output `source` ("step.output") feeds the input `target` ("step.input").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    /// `step.output` of the producing step.
    pub source: String,
    /// `step.input` of the consuming step.
    pub target: String,
    /// CEL expression; the value flows only when it is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// CEL expression applied to the value (bound as `value`) before it reaches the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
}

/// Descriptive metadata of a workflow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The workflow's author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Labels used to find the workflow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// One category name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Licence of the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Free-form fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Value>,
}

/// Retry, timeout and priority defaults for the steps and jobs of a workflow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Defaults {
    /// Retry policy of steps that give none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Attempt timeout, in seconds, of steps that give none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Limit for the whole job, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_timeout: Option<f64>,
    /// Priority of jobs that give none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<crate::Priority>,
}

/// An agent defined inline in a workflow's `agents` map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AgentSpec {
    /// A local program.
    Command(CommandSpec),
    /// An HTTP service that takes the step input as a JSON body.
    Http(HttpSpec),
    /// An OpenAI-compatible chat-completions endpoint.
    Llm(LlmSpec),
}

/// A program run with argv (no shell unless `shell` is set), input JSON on stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandSpec {
    /// Program and arguments; with `shell`, one shell command line.
    pub command: Vec<String>,
    /// Run `command[0]` through `sh -c`.
    #[serde(default)]
    pub shell: bool,
    /// Extra environment variables; values may use `${env.NAME}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the workflow file's folder when relative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// An HTTP endpoint called with the step input as the JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpSpec {
    /// HTTP method; `POST` when absent.
    #[serde(default = "default_method")]
    pub method: String,
    /// Absolute `http` or `https` URL.
    pub url: String,
    /// Request headers; values may use `${env.NAME}` so that secrets stay out of the store.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

fn default_method() -> String {
    "POST".to_owned()
}

/// An OpenAI-compatible chat-completions endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmSpec {
    /// Base URL, such as `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// Model name sent with each request.
    pub model: String,
    /// Name of the environment variable that contains the API key, if the endpoint needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Cap on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

/// Names of the agents built into oaj.
pub const BUILTIN_AGENTS: &[&str] = &["noop", "echo", "sleep", "transform", "approval", "fail"];
