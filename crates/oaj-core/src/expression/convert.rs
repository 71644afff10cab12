//! Conversion between JSON values and CEL values.
//!
//! JSON integers become CEL `int` (or `uint` above `i64::MAX`) so that they come back as
//! integers; other numbers become `double`. CEL values with no JSON form (bytes, functions,
//! opaque values) are errors, and map keys that are not strings are written as strings.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map};
use serde_json::{Number, Value};

/// Converts a JSON value into the CEL value with the same content.
pub(crate) fn json_to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(flag) => cel::Value::Bool(*flag),
        Value::Number(number) => number_to_cel(number),
        Value::String(text) => cel::Value::String(Arc::new(text.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(json_to_cel).collect())),
        Value::Object(object) => {
            let map: HashMap<Key, cel::Value> = object
                .iter()
                .map(|(key, value)| (Key::from(key.as_str()), json_to_cel(value)))
                .collect();
            cel::Value::Map(Map { map: Arc::new(map) })
        }
    }
}

fn number_to_cel(number: &Number) -> cel::Value {
    if let Some(int) = number.as_i64() {
        cel::Value::Int(int)
    } else if let Some(uint) = number.as_u64() {
        cel::Value::UInt(uint)
    } else {
        // Without serde_json's arbitrary_precision feature every number fits one of the three.
        cel::Value::Float(number.as_f64().unwrap_or(f64::NAN))
    }
}

/// Converts a CEL value into JSON, or returns a message naming the part with no JSON form.
pub(crate) fn cel_to_json(value: &cel::Value) -> Result<Value, String> {
    match value {
        cel::Value::Null => Ok(Value::Null),
        cel::Value::Bool(flag) => Ok(Value::Bool(*flag)),
        cel::Value::Int(int) => Ok(Value::from(*int)),
        cel::Value::UInt(uint) => Ok(Value::from(*uint)),
        cel::Value::Float(float) => Number::from_f64(*float)
            .map(Value::Number)
            .ok_or_else(|| format!("the number {float} has no JSON form")),
        cel::Value::String(text) => Ok(Value::String(text.as_str().to_owned())),
        cel::Value::List(items) => items.iter().map(cel_to_json).collect::<Result<_, _>>(),
        cel::Value::Map(map) => map_to_json(map),
        other => Err(format!("a CEL {} has no JSON form", other.type_of())),
    }
}

/// Converts a CEL map into a JSON object with its keys sorted, because CEL maps keep no order.
fn map_to_json(map: &Map) -> Result<Value, String> {
    let mut entries: Vec<(String, &cel::Value)> = map
        .map
        .iter()
        .map(|(key, value)| (key_to_string(key), value))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let mut object = serde_json::Map::with_capacity(entries.len());
    for (key, value) in entries {
        object.insert(key, cel_to_json(value)?);
    }
    Ok(Value::Object(object))
}

fn key_to_string(key: &Key) -> String {
    match key {
        Key::String(text) => text.as_str().to_owned(),
        Key::Int(int) => int.to_string(),
        Key::Uint(uint) => uint.to_string(),
        Key::Bool(flag) => flag.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_keeps_integers() {
        let value = json!({"a": 1, "b": [1.5, "x", null, true], "c": u64::MAX});
        assert_eq!(cel_to_json(&json_to_cel(&value)), Ok(value));
    }

    #[test]
    fn integer_map_keys_become_strings() {
        let map: HashMap<Key, cel::Value> = [(Key::Int(7), cel::Value::Bool(true))].into();
        let value = cel::Value::Map(Map { map: Arc::new(map) });
        assert_eq!(cel_to_json(&value), Ok(json!({"7": true})));
    }

    #[test]
    fn bytes_have_no_json_form() {
        let value = cel::Value::Bytes(Arc::new(vec![1, 2]));
        assert!(cel_to_json(&value).is_err());
    }
}
