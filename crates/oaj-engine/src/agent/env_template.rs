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
    let mut result = String::with_capacity(template.len());
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
            Some(name) => result.push_str(&env_value(name, field)?),
            None => result.push_str(&rest[start..start + 2 + close + 1]),
        }
        rest = &after_open[close + 1..];
    }
    result.push_str(rest);
    Ok(result)
}

/// Returns whether `template` contains a `${env.NAME}` reference, so that callers can treat the
/// resolved value as a secret.
pub(crate) fn has_env_reference(template: &str) -> bool {
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let after_open = &rest[start + 2..];
        let Some(close) = after_open.find('}') else {
            return false;
        };
        let inner = after_open[..close].trim();
        if inner.strip_prefix("env.").is_some_and(is_env_name) {
            return true;
        }
        rest = &after_open[close + 1..];
    }
    false
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
    fn has_env_reference_detects_only_env() {
        assert!(has_env_reference("Bearer ${env.TOKEN}"));
        assert!(!has_env_reference("${inputs.token}"));
        assert!(!has_env_reference("plain"));
    }
}
