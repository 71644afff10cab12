use serde_json::{json, Value};

use super::*;

fn scope() -> Value {
    json!({
        "inputs": {"ticket": "T-1", "count": 3, "tags": ["a", "b"]},
        "steps": {"classify": {"outputs": {"label": "bug", "score": 0.9, "meta": {"z": 1, "a": 2}}}},
    })
}

#[test]
fn single_reference_keeps_type() {
    assert_eq!(
        value_resolve(&json!("${inputs.count}"), &scope()),
        Ok(json!(3))
    );
    assert_eq!(
        value_resolve(&json!("${inputs.tags}"), &scope()),
        Ok(json!(["a", "b"]))
    );
}

#[test]
fn path_reference_keeps_key_order() {
    let resolved = value_resolve(&json!("${steps.classify.outputs.meta}"), &scope()).unwrap();
    let keys: Vec<&String> = resolved.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["z", "a"]);
}

#[test]
fn reference_in_text_is_interpolated() {
    let value = json!("ticket ${inputs.ticket} has ${inputs.count} items: ${inputs.tags}");
    let resolved = value_resolve(&value, &scope());
    assert_eq!(resolved, Ok(json!("ticket T-1 has 3 items: [\"a\",\"b\"]")));
}

#[test]
fn nested_values_are_walked() {
    let value = json!({"a": ["${inputs.ticket}", {"b": "${inputs.count + 1}"}], "c": 5});
    let resolved = value_resolve(&value, &scope());
    assert_eq!(resolved, Ok(json!({"a": ["T-1", {"b": 4}], "c": 5})));
}

#[test]
fn legacy_braces_resolve() {
    assert_eq!(
        value_resolve(&json!("{{inputs.ticket}}"), &scope()),
        Ok(json!("T-1"))
    );
    let short = value_resolve(&json!("{{classify.label}}"), &scope());
    assert_eq!(short, Ok(json!("bug")));
}

#[test]
fn escaped_reference_stays_literal() {
    assert_eq!(
        value_resolve(&json!("$${inputs.ticket}"), &scope()),
        Ok(json!("${inputs.ticket}"))
    );
}

#[test]
fn missing_key_names_parent() {
    let error = expression_eval("steps.classify.outputs.x", &scope()).unwrap_err();
    let expected = ExpressionError::KeyMissing {
        expression: "steps.classify.outputs.x".into(),
        key: "x".into(),
        parent: "steps.classify.outputs".into(),
    };
    assert_eq!(error, expected);
    assert!(error
        .to_string()
        .contains("no key `x` in steps.classify.outputs"));
}

#[test]
fn unknown_variable_lists_variables() {
    let error = expression_eval("${nothing.here}", &scope()).unwrap_err();
    assert!(
        error.to_string().contains("no variable `nothing`"),
        "{error}"
    );
    assert!(error.to_string().contains("inputs, steps"), "{error}");
}

#[test]
fn cel_expression_evaluates() {
    let value = expression_eval("inputs.tags.map(t, t + '!')", &scope());
    assert_eq!(value, Ok(json!(["a!", "b!"])));
    let value = expression_eval("${ {'n': inputs.count * 2} }", &scope());
    assert_eq!(value, Ok(json!({"n": 6})));
}

#[test]
fn cel_missing_key_is_clear() {
    let error = expression_eval("inputs.count > 1 && steps.classify.outputs.none", &scope());
    let message = error.unwrap_err().to_string();
    assert!(message.contains("no key `none`"), "{message}");
}

#[test]
fn syntax_error_reports_position() {
    let error = expression_eval("inputs.count >", &scope()).unwrap_err();
    assert!(matches!(error, ExpressionError::SyntaxInvalid { .. }));
    assert!(error.to_string().contains("line 1"), "{error}");
}

#[test]
fn condition_requires_boolean() {
    assert_eq!(
        condition_eval("${steps.classify.outputs.label == 'bug'}", &scope()),
        Ok(true)
    );
    let error = condition_eval("inputs.count", &scope()).unwrap_err();
    let expected = ExpressionError::ResultNotBoolean {
        expression: "inputs.count".into(),
        found: "3".into(),
    };
    assert_eq!(error, expected);
}

#[test]
fn unclosed_template_is_an_error() {
    let error = value_resolve(&json!("a ${inputs.ticket"), &scope()).unwrap_err();
    assert_eq!(
        error,
        ExpressionError::TemplateUnclosed {
            text: "a ${inputs.ticket".into(),
            offset: 2
        }
    );
}

#[test]
fn compiled_expression_reuses_program() {
    let compiled = CompiledExpression::compile("${inputs.count * 10}").unwrap();
    assert_eq!(compiled.source(), "inputs.count * 10");
    assert_eq!(compiled.eval(&scope()), Ok(json!(30)));
    assert_eq!(
        compiled.eval(&json!({"inputs": {"count": 1}})),
        Ok(json!(10))
    );
}

#[test]
fn deeply_nested_expression_does_not_crash() {
    let source = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
    assert!(expression_eval(&source, &scope()).is_err());
}

#[test]
fn path_into_scalar_is_explained() {
    let error = expression_eval("inputs.ticket.id", &scope()).unwrap_err();
    assert!(
        error.to_string().contains("`inputs.ticket` is a string"),
        "{error}"
    );
}

/// Each source is within the limits, and evaluating it on a test thread's default stack must not
/// overflow: the limits exist for exactly that.
#[test]
fn expressions_at_limits_evaluate() {
    let sources = [
        vec!["1"; 31].join("+"),
        format!("{}1", "-".repeat(30)),
        format!("{}1{}", "(-".repeat(15), ")".repeat(15)),
        format!("{}1{}", "size([".repeat(10), "])".repeat(10)),
        format!("{}1{}", "[".repeat(24), "]".repeat(24)),
        "inputs.tags.map(t, inputs.tags.map(u, inputs.tags.filter(v, v == u + t)))".to_owned(),
    ];
    for source in sources {
        assert!(expression_eval(&source, &scope()).is_ok(), "{source}");
    }
}

#[test]
fn deep_syntax_tree_is_rejected() {
    let source = vec!["1"; 40].join("+");
    let error = expression_eval(&source, &scope()).unwrap_err();
    assert!(error.to_string().contains("40 levels deep"), "{error}");
}

#[test]
fn long_expression_is_rejected() {
    let source = format!("'{}'", "a".repeat(EXPRESSION_LENGTH_MAX));
    let error = expression_eval(&source, &scope()).unwrap_err();
    assert!(error.to_string().contains("bytes long"), "{error}");
}
