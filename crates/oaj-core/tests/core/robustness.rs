//! Arbitrary input must never panic the parser, the validator or the resolver.

use oaj_core::{
    input_check, value_resolve, workflow_check, workflow_parse, workflow_parse_validate,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|number| json!(number)),
        "[ -~]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "${inputs.x}",
            "${steps.a.outputs}",
            "${item}",
            "{{a.b}}",
            "${",
            "$${x}",
            "${1 +}",
            "a.b",
            "echo",
            "approval",
            "steps",
            "${size(inputs.x) > 1}",
        ])
        .prop_map(|text| Value::String(text.to_owned())),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Names of workflow fields mixed with arbitrary ones, so that generated objects reach deep into
/// the validator instead of stopping at unknown fields.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "id",
            "steps",
            "component",
            "inputs",
            "outputs",
            "connections",
            "source",
            "target",
            "for_each",
            "items",
            "depends_on",
            "agents",
            "kind",
            "command",
            "url",
            "retry",
            "condition",
            "transform",
            "type",
            "default",
            "value",
            "a",
            "b",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = workflow_parse(&text);
    }

    #[test]
    fn arbitrary_json_never_panics(document in json_value()) {
        let _ = workflow_parse_validate(&document.to_string(), &|_| false);
        let _ = value_resolve(&document, &json!({"inputs": {"x": [1]}, "steps": {}}));
    }

    #[test]
    fn workflow_shaped_json_never_panics(
        steps in prop::collection::vec(json_value(), 1..4),
        inputs in json_value(),
        connections in json_value(),
        input in json_value(),
    ) {
        let document = json!({"id": "w", "inputs": inputs, "steps": steps, "connections": connections});
        if let Ok(workflow) = workflow_check(&document) {
            let _ = input_check(&workflow, &input);
            if let Ok(plan) = oaj_core::Plan::new(workflow) {
                let _ = plan.order();
                let _ = plan.job_result(&input);
            }
        }
    }
}
