//! `${env.NAME}` interpolation in agent settings (command env values, HTTP URLs and headers).
//!
//! Values are read from the worker's environment at call time, so secrets live only in the
//! environment and never in a stored workflow. Other `${ ... }` text is left as it is, because
//! references to inputs and steps belong to the engine, not to agents.

use super::AgentError;

/// Replaces each `${env.NAME}` (spaces inside the braces allowed) in `template` with the value of
/// the environment variable `NAME`.
///
/// `field` names the setting in error messages, such as `header Authorization`. Error messages
/// name the variable but never contain a value.
///
/// # Errors
///
/// A permanent error when a variable is not set or its value is not valid UTF-8.
pub(crate) fn env_interpolate(template: &str, field: &str) -> Result<String, AgentError> {
    env_interpolate_with_values(template, field).map(|(text, _values)| text)
}

/// Interpolates like [`env_interpolate`], and also returns the values read from the environment, so that
/// callers can treat them as secrets.
pub(crate) fn env_interpolate_with_values(
    template: &str,
    field: &str,
) -> Result<(String, Vec<String>), AgentError> {
    let mut result = String::with_capacity(template.len());
    let mut values = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        result.push_str(&rest[..start]);
        let after_open = &rest[start + 2..];
        let Some(close) = after_open.find('}') else {
            rest = &rest[start..];
            break;
        };
        let inner = after_open[..close].trim();
        match inner.strip_prefix("env.").filter(|name| is_env_name(name)) {
            Some(name) => {
                let value = env_value(name, field)?;
                result.push_str(&value);
                values.push(value);
            }
            None => result.push_str(&rest[start..start + 2 + close + 1]),
        }
        rest = &after_open[close + 1..];
    }
    result.push_str(rest);
    Ok((result, values))
}

/// Replaces each non-empty secret in `text` with `[redacted]`. Used on text that an outside
/// service sent back, such as an error body, because some services echo request headers.
pub(crate) fn secrets_redact(text: &str, secrets: &[String]) -> String {
    let mut redacted = text.to_owned();
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        redacted = redacted.replace(secret.as_str(), "[redacted]");
    }
    redacted
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_is_valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_is_valid && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn env_value(name: &str, field: &str) -> Result<String, AgentError> {
    match std::env::var(name) {
        Ok(value) => Ok(value),
        Err(std::env::VarError::NotPresent) => Err(AgentError::permanent(format!(
            "environment variable {name} used by {field} is not set; \
             set it in the environment of the oaj worker"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(AgentError::permanent(format!(
            "environment variable {name} used by {field} is not valid UTF-8; \
             give it a UTF-8 value"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolate_replaces_set_variable() {
        std::env::set_var("OAJ_TEST_ENV_TEMPLATE_SET", "s3cret");
        let resolved = env_interpolate("Bearer ${env.OAJ_TEST_ENV_TEMPLATE_SET}!", "header");
        assert_eq!(resolved, Ok("Bearer s3cret!".to_owned()));
    }

    #[test]
    fn interpolate_allows_spaces_in_braces() {
        std::env::set_var("OAJ_TEST_ENV_TEMPLATE_SPACES", "v");
        let resolved = env_interpolate("${ env.OAJ_TEST_ENV_TEMPLATE_SPACES }", "env X");
        assert_eq!(resolved, Ok("v".to_owned()));
    }

    #[test]
    fn interpolate_keeps_other_references() {
        let template = "${inputs.ticket} and ${env.} and ${unclosed";
        assert_eq!(env_interpolate(template, "env X"), Ok(template.to_owned()));
    }

    #[test]
    fn interpolate_missing_variable_names_it() {
        let error = env_interpolate("${env.OAJ_TEST_ENV_TEMPLATE_MISSING}", "header X-Key")
            .expect_err("the variable is not set");
        assert!(!error.is_retryable);
        assert!(error.message.contains("OAJ_TEST_ENV_TEMPLATE_MISSING"));
        assert!(error.message.contains("header X-Key"));
    }

    #[test]
    fn interpolate_with_values_returns_env_values() {
        std::env::set_var("OAJ_TEST_ENV_TEMPLATE_VALUES", "k-9");
        let template = "${inputs.x} ${env.OAJ_TEST_ENV_TEMPLATE_VALUES}";
        let (text, values) = env_interpolate_with_values(template, "header").expect("it is set");
        assert_eq!(text, "${inputs.x} k-9");
        assert_eq!(values, ["k-9"]);
    }

    #[test]
    fn redact_replaces_each_secret() {
        let secrets = ["tok-1".to_owned(), String::new()];
        let redacted = secrets_redact("got Bearer tok-1 and tok-1", &secrets);
        assert_eq!(redacted, "got Bearer [redacted] and [redacted]");
    }
}
