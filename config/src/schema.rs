//! The published JSON Schemas of the config file and the JobSpec message.

use schemars::generate::SchemaSettings;
use serde_json::Value;

use crate::config::Config;
use crate::jobspec::JobSpec;

/// The config file's JSON Schema, pretty-printed.
pub fn config_schema() -> String {
    let mut schema = generate::<Config>();
    // TOML has no null: an optional field is one that is left out.
    drop_null(&mut schema);
    print(&schema)
}

/// The JobSpec v1 JSON Schema, pretty-printed.
pub fn jobspec_schema() -> String {
    print(&generate::<JobSpec>())
}

fn generate<T: schemars::JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

fn print(schema: &Value) -> String {
    // A schema is a JSON value with string keys; printing it cannot fail.
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

fn drop_null(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".to_string(), only);
                }
            }
            if let Some(Value::Array(any)) = map.get("anyOf")
                && any.len() == 2
                && any
                    .iter()
                    .any(|s| s.get("type").is_some_and(|t| t == "null"))
            {
                let other = any
                    .iter()
                    .find(|s| s.get("type").is_none_or(|t| t != "null"))
                    .cloned();
                if let Some(Value::Object(other)) = other {
                    map.remove("anyOf");
                    for (k, v) in other {
                        map.entry(k).or_insert(v);
                    }
                }
            }
            map.values_mut().for_each(drop_null);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}
