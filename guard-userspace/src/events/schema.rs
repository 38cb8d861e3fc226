//! docs/events.schema.json, generated from the event types (schemars), so
//! the written contract is what the daemon writes. A unit test fails when
//! the committed file differs; `agent-guard events schema` prints it.
use schemars::generate::SchemaSettings;
use serde_json::Value;

use super::Line;

/// Where the schema says it lives.
const ID: &str = "https://github.com/agent-guard/agent-guard/docs/events.schema.json";

/// The JSON Schema (2020-12) of a native line.
pub fn native() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    // What the daemon writes (not what it would accept).
    settings.contract = schemars::generate::Contract::Serialize;
    let mut schema = settings
        .into_generator()
        .into_root_schema_for::<Line<'static>>();
    schema.insert("$id".into(), ID.into());
    schema.insert(
        "description".into(),
        "One line of the agent-guard event stream (native format). See docs/events.md.".into(),
    );
    // The chain member is appended after serialization, always.
    if let Some(Value::Array(required)) = schema.get_mut("required") {
        required.push("chain".into());
    }
    // `schema` is one value.
    if let Some(s) = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut("schema"))
        .and_then(Value::as_object_mut)
    {
        s.clear();
        s.insert("const".into(), super::SCHEMA.into());
    }
    let mut value = schema.to_value();
    no_null(&mut value);
    close(&mut value);
    value
}

/// The schema as committed: pretty JSON and a final newline.
pub fn text() -> String {
    let mut text = serde_json::to_string_pretty(&native()).unwrap_or_default();
    text.push('\n');
    text
}

/// An absent value is left out of a line, never written as null: what
/// schemars derives as "T or null" for an `Option<T>` is T here.
fn no_null(node: &mut Value) {
    match node {
        Value::Array(items) => items.iter_mut().for_each(no_null),
        Value::Object(obj) => {
            if let Some(Value::Array(types)) = obj.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    obj.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(branches)) = obj.get_mut("anyOf") {
                branches.retain(|b| b.get("type") != Some(&Value::from("null")));
                if branches.len() == 1 {
                    let only = branches.remove(0);
                    obj.remove("anyOf");
                    if let Value::Object(only) = only {
                        for (k, v) in only {
                            obj.entry(k).or_insert(v);
                        }
                    }
                }
            }
            obj.values_mut().for_each(no_null);
        }
        _ => {}
    }
}

/// No undocumented member anywhere: an object admits only the members
/// its schema lists (`unevaluatedProperties: false`). A type flattened
/// into another (the event into the line, a kind into the event) is part
/// of the same object, so it is closed where it is used, not on its own:
/// `unevaluatedProperties` sees through `$ref`, `allOf`, `anyOf` and
/// `oneOf`.
fn close(schema: &mut Value) {
    let mut defs = match schema.get_mut("$defs").map(Value::take) {
        Some(Value::Object(defs)) => defs,
        _ => serde_json::Map::new(),
    };
    let mut seen = std::collections::BTreeSet::new();
    walk(schema, false, &mut defs, &mut seen);
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs);
    }
}

/// Whether `obj` describes an object (directly, by reference, or through a
/// composition of objects).
fn objectish(obj: &serde_json::Map<String, Value>, defs: &serde_json::Map<String, Value>) -> bool {
    if obj.contains_key("properties") || obj.get("type") == Some(&Value::from("object")) {
        return true;
    }
    if let Some(def) = obj
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
        .and_then(Value::as_object)
    {
        return objectish(def, defs);
    }
    ["allOf", "anyOf", "oneOf"].iter().any(|k| {
        obj.get(*k).and_then(Value::as_array).is_some_and(|items| {
            items
                .iter()
                .filter_map(Value::as_object)
                .any(|i| objectish(i, defs))
        })
    })
}

/// `open`: `node` is part of an object closed further up.
fn walk(
    node: &mut Value,
    open: bool,
    defs: &mut serde_json::Map<String, Value>,
    seen: &mut std::collections::BTreeSet<(String, bool)>,
) {
    let Some(obj) = node.as_object_mut() else {
        return;
    };
    if !open && !obj.contains_key("additionalProperties") && objectish(obj, defs) {
        obj.entry("unevaluatedProperties").or_insert(false.into());
    }
    if let Some(Value::String(r)) = obj.get("$ref") {
        if let Some(name) = r.strip_prefix("#/$defs/") {
            let name = name.to_owned();
            // A type used both closed and as part of another stays open:
            // where it is closed, its user closes it.
            if seen.insert((name.clone(), true)) {
                if let Some(mut def) = defs.remove(&name) {
                    walk(&mut def, true, defs, seen);
                    defs.insert(name, def);
                }
            }
        }
    }
    for k in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(items)) = obj.get_mut(k) {
            for item in items {
                walk(item, true, defs, seen);
            }
        }
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for p in props.values_mut() {
            walk(p, false, defs, seen);
        }
    }
    for k in ["items", "additionalProperties"] {
        if let Some(v) = obj.get_mut(k) {
            walk(v, false, defs, seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED: &str = include_str!("../../../docs/events.schema.json");

    #[test]
    fn docs_events_schema_json_is_generated_from_the_types() {
        assert!(
            COMMITTED == text(),
            "docs/events.schema.json differs from the event types; regenerate it with\n  \
             cargo run -q -p guard-userspace -- events schema > docs/events.schema.json"
        );
    }
}
