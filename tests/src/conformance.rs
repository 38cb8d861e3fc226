//! Every event checked against the published definitions of the formats
//! it claims, with checkers this project did not write where one exists:
//!
//! - the `ocsf` member against the JSON Schema that `ocsf-json-schema`
//!   (PyPI) generates from schema.ocsf.io's export of the OCSF version the
//!   event declares, with the profiles it declares (required attributes,
//!   types, enums, no undefined attribute), validated by the `jsonschema`
//!   crate; then the consistency the schema cannot express, checked here
//!   against the published captions: `type_uid` is `class_uid * 100 +
//!   activity_id`, and every enumerated id's sibling (class_name,
//!   activity_name, type_name, severity, status, action, disposition,
//!   file type, ...) is its published caption (or free text for 99, Other);
//! - ECS lines against Elastic's published field definitions
//!   (`@elastic/ecs`, npm): no null anywhere, every field outside the
//!   `agent_guard` custom namespace is an ECS field of the version declared,
//!   with its ECS type; categorization values are allowed ones, and each
//!   event type is one its categories expect.
//!
//! `cargo xtask test` prepares the definitions and names their folder in
//! AGENT_GUARD_CONFORMANCE.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, LazyLock, Mutex},
};

use serde_json::Value;

/// The folder `cargo xtask test` prepared.
fn definitions() -> PathBuf {
    match std::env::var_os("AGENT_GUARD_CONFORMANCE") {
        Some(dir) => PathBuf::from(dir),
        None => panic!(
            "AGENT_GUARD_CONFORMANCE is not set: run the privileged tests with `cargo xtask \
             test`, which installs the published OCSF and ECS definitions and names them"
        ),
    }
}

/// A class's published schema, compiled, and the published captions.
struct OcsfVersion {
    classes: Mutex<HashMap<u64, Arc<jsonschema::Validator>>>,
    siblings: Value,
    dir: PathBuf,
}

static OCSF: LazyLock<Mutex<HashMap<String, Arc<OcsfVersion>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
static ECS: LazyLock<Mutex<HashMap<String, Arc<Value>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (`cargo xtask test` writes the published definitions the daemon's \
             declared versions need)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ocsf_version(version: &str, profiles: &str) -> Arc<OcsfVersion> {
    let key = format!("{version}/{profiles}");
    let mut all = OCSF.lock().expect("lock");
    all.entry(key)
        .or_insert_with(|| {
            let dir = definitions().join("ocsf").join(version).join(profiles);
            Arc::new(OcsfVersion {
                siblings: read_json(&dir.join("siblings.json")),
                classes: Mutex::new(HashMap::new()),
                dir,
            })
        })
        .clone()
}

impl OcsfVersion {
    fn class(&self, uid: u64) -> Arc<jsonschema::Validator> {
        let mut classes = self.classes.lock().expect("lock");
        classes
            .entry(uid)
            .or_insert_with(|| {
                let schema = read_json(&self.dir.join(format!("{uid}.json")));
                Arc::new(
                    jsonschema::draft202012::new(&schema)
                        .unwrap_or_else(|e| panic!("OCSF class {uid}'s schema: {e}")),
                )
            })
            .clone()
    }
}

/// Asserts every event conforms to the formats it claims.
pub fn assert_conformance(events: &[Value]) {
    for e in events {
        if e.get("ecs").is_some() {
            assert_ecs(e);
        } else {
            assert_ocsf(e);
        }
    }
}

/// The `ocsf` member of a native line, against OCSF.
#[track_caller]
pub fn assert_ocsf(event: &Value) {
    let o = &event["ocsf"];
    let version = o["metadata"]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no ocsf.metadata.version in {event}"));
    let profiles: Vec<&str> = o["metadata"]["profiles"]
        .as_array()
        .map(|p| p.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let defs = ocsf_version(version, &profiles.join(","));
    let class = o["class_uid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no ocsf.class_uid in {event}"));
    let validator = defs.class(class);
    let errors: Vec<String> = validator
        .iter_errors(o)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the ocsf member is not a valid OCSF {version} event of class {class}:\n{event}\n{errors:#?}"
    );
    let activity = o["activity_id"].as_u64().unwrap_or_default();
    assert_eq!(
        o["type_uid"].as_u64(),
        Some(class * 100 + activity),
        "type_uid is not class_uid * 100 + activity_id: {event}"
    );
    let mut wrong = Vec::new();
    siblings(
        o,
        &defs.siblings["classes"][class.to_string()],
        &defs.siblings,
        "ocsf",
        &mut wrong,
    );
    assert!(
        wrong.is_empty(),
        "OCSF captions disagree with their ids:\n{event}\n{wrong:#?}"
    );
}

/// Checks each enumerated id's sibling at this level, then descends into
/// objects (their kind from the published schema's own `$defs`).
fn siblings(node: &Value, table: &Value, all: &Value, at: &str, wrong: &mut Vec<String>) {
    let Some(obj) = node.as_object() else { return };
    if let Some(attrs) = table.as_object() {
        for (attr, def) in attrs {
            let Some(id) = obj.get(attr).and_then(Value::as_u64) else {
                continue;
            };
            let sibling = def["sibling"].as_str().unwrap_or_default();
            let caption = &def["captions"][id.to_string()];
            if caption.is_null() {
                continue; // an id outside the enum: the schema reports it
            }
            match obj.get(sibling) {
                // 99 (Other): the sibling carries the source's own word.
                _ if id == 99 => {}
                Some(v) if v == caption => {}
                None => {}
                Some(v) => wrong.push(format!(
                    "{at}.{sibling} is {v}, but {at}.{attr} {id} is {caption}"
                )),
            }
        }
    }
    // Nested objects: find their OCSF object by name (the attribute names
    // of this project's output are those of their object types).
    for (k, v) in obj {
        let object = match k.as_str() {
            "actor" => "actor",
            "device" => "device",
            "metadata" => "metadata",
            "product" | "app" => "product",
            "process" | "parent_process" => "process",
            "file" => "file",
            "user" => "user",
            "session" => "session",
            "dst_endpoint" | "src_endpoint" => "network_endpoint",
            "connection_info" => "network_connection_info",
            "policy" => "policy",
            "api" => "api",
            _ => continue,
        };
        siblings(v, &all["objects"][object], all, &format!("{at}.{k}"), wrong);
    }
}

fn ecs_fields(version: &str) -> Arc<Value> {
    let mut all = ECS.lock().expect("lock");
    all.entry(version.to_owned())
        .or_insert_with(|| {
            Arc::new(read_json(
                &definitions().join("ecs").join(format!("{version}.json")),
            ))
        })
        .clone()
}

/// An ECS line, against ECS.
#[track_caller]
pub fn assert_ecs(doc: &Value) {
    let version = doc["ecs"]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no ecs.version in {doc}"));
    let defs = ecs_fields(version);
    let fields = &defs["fields"];
    let mut wrong = Vec::new();
    walk_ecs(doc, "", fields, &mut wrong);
    let categories: Vec<&str> = doc["event"]["category"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for t in doc["event"]["type"].as_array().into_iter().flatten() {
        let expected = categories.iter().any(|c| {
            fields["event.category"]["expected_event_types"][c]
                .as_array()
                .is_some_and(|types| types.contains(t))
        });
        if !expected {
            wrong.push(format!(
                "event.type {t} is expected by none of the categories {categories:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "not a valid ECS {version} document:\n{doc}\n{wrong:#?}"
    );
}

fn walk_ecs(node: &Value, at: &str, fields: &Value, wrong: &mut Vec<String>) {
    if node.is_null() {
        wrong.push(format!("{at} is null"));
        return;
    }
    // The custom namespace: anything goes, but no nulls.
    if at == "agent_guard" {
        no_nulls(node, at, wrong);
        return;
    }
    let field = &fields[at];
    match node {
        Value::Object(obj) if field.is_null() || field["type"] == "object" => {
            if field["type"] == "object" {
                // An object field (labels): its values have object_type.
                let inner = field["object_type"].as_str().unwrap_or("keyword");
                for (k, v) in obj {
                    if !has_type(v, inner) {
                        wrong.push(format!("{at}.{k} is not {inner}: {v}"));
                    }
                }
                return;
            }
            for (k, v) in obj {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                walk_ecs(v, &path, fields, wrong);
            }
        }
        _ if field.is_null() => wrong.push(format!("{at} is not an ECS field")),
        value => {
            let ty = field["type"].as_str().unwrap_or_default();
            let values: Vec<&Value> = match value {
                Value::Array(items) => items.iter().collect(),
                one if field["array"] == true => {
                    wrong.push(format!("{at} must be an array: {one}"));
                    vec![one]
                }
                one => vec![one],
            };
            for v in values {
                if !has_type(v, ty) {
                    wrong.push(format!("{at} is not of ECS type {ty}: {v}"));
                }
                if let Some(allowed) = field["allowed"].as_array() {
                    if !allowed.contains(v) {
                        wrong.push(format!("{at} {v} is not one of ECS's {allowed:?}"));
                    }
                }
            }
        }
    }
}

fn has_type(v: &Value, ty: &str) -> bool {
    match ty {
        "keyword" | "constant_keyword" | "wildcard" | "match_only_text" | "text" => v.is_string(),
        "long" | "integer" | "short" | "byte" | "unsigned_long" => v.is_u64() || v.is_i64(),
        "float" | "double" | "scaled_float" | "half_float" => v.is_number(),
        "boolean" => v.is_boolean(),
        "ip" => v
            .as_str()
            .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()),
        "date" => v.as_str().is_some_and(|s| {
            // RFC 3339: date, 'T', time, and a zone.
            s.len() >= 20 && s.as_bytes().get(10) == Some(&b'T') && s.ends_with('Z')
        }),
        "flattened" | "object" | "nested" => v.is_object() || v.is_array(),
        _ => false,
    }
}

fn no_nulls(v: &Value, at: &str, wrong: &mut Vec<String>) {
    match v {
        Value::Null => wrong.push(format!("{at} is null")),
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| no_nulls(v, &format!("{at}.{k}"), wrong)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| no_nulls(v, &format!("{at}[{i}]"), wrong)),
        _ => {}
    }
}
