//! Problems found by validation, and the report that lists them.

use std::fmt;

use serde::Serialize;

/// One thing wrong, or worth changing, in a document or a job input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// Stable identifier of the broken rule.
    pub code: ProblemCode,
    /// JSON Pointer to the offending value, such as `/steps/2/inputs/text`; empty for the root.
    pub path: String,
    /// Id of the step the problem belongs to, if any.
    pub step: Option<String>,
    /// Description of the fault, naming the value.
    pub message: String,
    /// How to fix it, when there is a likely fix.
    pub suggestion: Option<String>,
    /// Whether the problem makes the document invalid.
    pub severity: Severity,
}

/// Seriousness of a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The document or input is invalid.
    Error,
    /// The document is valid, but a spelling or habit should change.
    Warning,
}

/// Stable codes of the rules that validation checks, serialised in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    /// The text is not JSON.
    NotJson,
    /// The document is larger than the size limit.
    TooLarge,
    /// A field has the wrong JSON type.
    WrongType,
    /// A required field is absent.
    MissingField,
    /// A field that the format does not define.
    UnknownField,
    /// A value outside the set a field allows, such as an unknown `on_failure`.
    InvalidValue,
    /// The workflow has no steps.
    NoSteps,
    /// A workflow or step id uses characters other than letters, digits, `-` and `_`.
    InvalidId,
    /// The version is not a semantic version.
    InvalidVersion,
    /// Two steps share an id.
    DuplicateStepId,
    /// A step names a component that is neither built in, inline nor registered.
    UnknownComponent,
    /// A reference, connection or `depends_on` names a step that does not exist.
    UnknownStep,
    /// A reference names a workflow input that is not declared.
    UnknownInput,
    /// A reference names a step output that the step does not declare.
    UnknownOutput,
    /// An expression reads a variable that does not exist where it runs.
    UnknownVariable,
    /// `item` or `index` is used outside a `for_each` step.
    ItemOutsideForEach,
    /// A reference or connection endpoint is malformed.
    InvalidReference,
    /// An expression does not parse.
    ExpressionInvalid,
    /// Steps wait for each other in a cycle.
    Cycle,
    /// A `for_each` reads a value that cannot be an array.
    ForEachNotArray,
    /// A number is outside its allowed range, such as a timeout of 0.
    OutOfRange,
    /// An `approval` block on a step whose component is not `approval`.
    ApprovalMisplaced,
    /// A parameter's `pattern` is not a valid regular expression.
    InvalidPattern,
    /// An agent URL is not an absolute `http` or `https` URL.
    InvalidUrl,
    /// An older reference spelling that still works; the suggestion gives the canonical one.
    LegacyReference,
    /// A required workflow input has no value.
    InputRequired,
    /// An input value has the wrong JSON type for its parameter.
    InputTypeMismatch,
    /// An input value is not one of its parameter's `enum` values.
    InputNotAllowed,
    /// An input string does not match its parameter's `pattern`.
    InputPatternMismatch,
    /// An input number is below `minimum` or above `maximum`.
    InputOutOfRange,
    /// An input that the workflow does not declare.
    InputUnknown,
    /// The job input is not a JSON object.
    InputNotObject,
}

impl ProblemCode {
    /// Returns the stable snake_case name of the code.
    pub fn as_str(self) -> &'static str {
        // The names repeat the serde renaming; the test `code_names_match_serde` keeps them equal.
        match self {
            ProblemCode::NotJson => "not_json",
            ProblemCode::TooLarge => "too_large",
            ProblemCode::WrongType => "wrong_type",
            ProblemCode::MissingField => "missing_field",
            ProblemCode::UnknownField => "unknown_field",
            ProblemCode::InvalidValue => "invalid_value",
            ProblemCode::NoSteps => "no_steps",
            ProblemCode::InvalidId => "invalid_id",
            ProblemCode::InvalidVersion => "invalid_version",
            ProblemCode::DuplicateStepId => "duplicate_step_id",
            ProblemCode::UnknownComponent => "unknown_component",
            ProblemCode::UnknownStep => "unknown_step",
            ProblemCode::UnknownInput => "unknown_input",
            ProblemCode::UnknownOutput => "unknown_output",
            ProblemCode::UnknownVariable => "unknown_variable",
            ProblemCode::ItemOutsideForEach => "item_outside_for_each",
            ProblemCode::InvalidReference => "invalid_reference",
            ProblemCode::ExpressionInvalid => "expression_invalid",
            ProblemCode::Cycle => "cycle",
            ProblemCode::ForEachNotArray => "for_each_not_array",
            ProblemCode::OutOfRange => "out_of_range",
            ProblemCode::ApprovalMisplaced => "approval_misplaced",
            ProblemCode::InvalidPattern => "invalid_pattern",
            ProblemCode::InvalidUrl => "invalid_url",
            ProblemCode::LegacyReference => "legacy_reference",
            ProblemCode::InputRequired => "input_required",
            ProblemCode::InputTypeMismatch => "input_type_mismatch",
            ProblemCode::InputNotAllowed => "input_not_allowed",
            ProblemCode::InputPatternMismatch => "input_pattern_mismatch",
            ProblemCode::InputOutOfRange => "input_out_of_range",
            ProblemCode::InputUnknown => "input_unknown",
            ProblemCode::InputNotObject => "input_not_object",
        }
    }
}

impl fmt::Display for ProblemCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl Problem {
    /// Creates an error-severity problem with no step and no suggestion.
    pub fn error(code: ProblemCode, path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            code,
            path: path.into(),
            step: None,
            message: message.into(),
            suggestion: None,
            severity: Severity::Error,
        }
    }

    /// Creates a warning-severity problem with no step and no suggestion.
    pub fn warning(code: ProblemCode, path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Warning,
            ..Problem::error(code, path, message)
        }
    }

    /// Sets the step id.
    pub fn at_step(mut self, step: &str) -> Self {
        self.step = Some(step.to_owned());
        self
    }

    /// Sets the suggestion.
    pub fn suggest(mut self, suggestion: impl Into<String>) -> Self {
        self.suggestion = Some(suggestion.into());
        self
    }
}

impl fmt::Display for Problem {
    /// Writes `path: [code] message (suggestion)`, with `warning:` before the message of a
    /// warning and `/` for the root path.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(formatter, "{path}: [{}] ", self.code)?;
        if self.severity == Severity::Warning {
            formatter.write_str("warning: ")?;
        }
        formatter.write_str(&self.message)?;
        if let Some(suggestion) = &self.suggestion {
            write!(formatter, " ({suggestion})")?;
        }
        Ok(())
    }
}

/// Every problem found in one document or input, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// The problems, errors and warnings.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Returns whether no problem has error severity.
    pub fn is_valid(&self) -> bool {
        self.problems
            .iter()
            .all(|problem| problem.severity != Severity::Error)
    }

    /// Returns the problems of error severity.
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|problem| problem.severity == Severity::Error)
    }
}

impl fmt::Display for Report {
    /// Writes one problem per line.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                writeln!(formatter)?;
            }
            write!(formatter, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Report {}
