//! The generated schema against events rendered by the emitter's own code:
//! every example validates; unknown kinds and undocumented members do not.
//! The privileged suite validates every event of real runs.
#![expect(
    clippy::unwrap_used,
    reason = "a test should fail loudly on a broken fixture"
)]

use serde_json::Value;

use super::{examples, schema};

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&schema::native()).unwrap()
}

fn lines(ecs: bool) -> Vec<String> {
    examples::lines(ecs)
}

fn errors(v: &jsonschema::Validator, ev: &Value) -> Vec<String> {
    v.iter_errors(ev)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

#[test]
fn every_kind_validates() {
    let v = validator();
    for line in lines(false) {
        let ev: Value = serde_json::from_str(&line).unwrap();
        let errors = errors(&v, &ev);
        assert!(errors.is_empty(), "{line}\n{errors:#?}");
    }
}

#[test]
fn unknown_kinds_and_members_fail() {
    let v = validator();
    let line: Value = serde_json::from_str(&lines(false)[0]).unwrap();
    let mut unknown = line.clone();
    unknown["kind"] = "file.chmod".into();
    assert!(!v.is_valid(&unknown), "an unknown kind must not validate");
    let mut stray = line.clone();
    stray["colour"] = 1.into();
    assert!(
        !v.is_valid(&stray),
        "an undocumented member must not validate"
    );
    let mut nested = line.clone();
    nested["process"]["colour"] = 1.into();
    assert!(
        !v.is_valid(&nested),
        "an undocumented nested member must not validate"
    );
    let mut ocsf = line.clone();
    ocsf["ocsf"]["colour"] = 1.into();
    assert!(
        !v.is_valid(&ocsf),
        "an undocumented OCSF member must not validate"
    );
    let mut missing = line.clone();
    missing.as_object_mut().unwrap().remove("chain");
    assert!(
        !v.is_valid(&missing),
        "a line without its chain must not validate"
    );
    let mut mixed = line;
    mixed["target"] = serde_json::json!({"path": "/x"});
    assert!(
        !v.is_valid(&mixed),
        "a connect with a file's target must not validate"
    );
}

fn nulls(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Null => out.push(at.to_owned()),
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| nulls(v, &format!("{at}.{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| nulls(v, &format!("{at}[{i}]"), out)),
        _ => {}
    }
}

#[test]
fn no_line_carries_a_null() {
    for line in lines(false).into_iter().chain(lines(true)) {
        let mut found = Vec::new();
        nulls(&serde_json::from_str(&line).unwrap(), "", &mut found);
        assert!(found.is_empty(), "nulls at {found:?} in {line}");
    }
}

#[test]
fn lines_verify_as_a_chain() {
    let dir = std::env::temp_dir().join(format!("ag-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, ecs) in [("native", false), ("ecs", true)] {
        let file = dir.join(format!("{name}.jsonl"));
        std::fs::write(&file, lines(ecs).concat()).unwrap();
        let report = super::verify::verify(std::slice::from_ref(&file), None).unwrap();
        assert_eq!(report.lines, examples::all().len() as u64);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// docs/events.md shows one event of each kind: exactly what the emitter
/// writes for them (indented for reading; only whitespace differs).
#[test]
fn the_docs_show_what_the_daemon_writes() {
    const DOCS: &str = include_str!("../../../docs/events.md");
    let expected: String = lines(false)
        .iter()
        .zip(examples::all())
        .map(|(l, e)| {
            format!(
                "<details><summary><code>{}</code> ({})</summary>\n\n```json\n{}\n```\n\n</details>\n",
                e.kind(),
                e.outcome(),
                examples::pretty(l)
            )
        })
        .collect();
    let begin = "<!-- examples: generated, see the_docs_show_what_the_daemon_writes -->\n";
    let end = "<!-- end of examples -->";
    let shown = DOCS
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(block, _)| block);
    assert!(
        shown == Some(expected.as_str()),
        "docs/events.md's examples differ from what the daemon writes; put this between \
         its example markers:\n{expected}"
    );
}
