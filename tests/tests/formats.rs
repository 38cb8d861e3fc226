//! The events docs/events.md shows (one of each kind, exactly as the daemon
//! writes them: a unit test renders them with the daemon's code) against
//! the written schema and the published OCSF and ECS definitions. Every
//! event of the other privileged tests is checked the same way when their
//! daemon stops; this covers the kinds a test run rarely makes.
use agent_guard_tests::*;
use serde_json::Value;

const DOCS: &str = include_str!("../../docs/events.md");

fn documented() -> Vec<Value> {
    let (_, rest) = DOCS
        .split_once("<!-- examples: generated")
        .expect("docs/events.md has its examples");
    let (block, _) = rest
        .split_once("<!-- end of examples -->")
        .expect("the examples end");
    block
        .split("```json\n")
        .skip(1)
        .map(|b| {
            let json = b.split("\n```").next().expect("a closing fence");
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
        })
        .collect()
}

#[test]
fn every_documented_kind_is_valid_ocsf_and_matches_the_schema() {
    let events = documented();
    let mut kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    kinds.dedup();
    for kind in [
        "net.connect",
        "net.send",
        "net.unix_connect",
        "net.unix_send",
        "file.unlink",
        "file.rmdir",
        "file.rename",
        "file.truncate",
        "file.link",
        "file.mount",
        "file.io_uring",
        "hold.decision",
        "agent.start",
        "agent.exit",
        "agent.kill",
        "agent.mode",
        "policy.reload",
        "control.refused",
        "notify.failed",
        "loss",
        "daemon.start",
        "daemon.stop",
        "agent.escape",
        "guard.tamper",
        "daemon.task",
    ] {
        assert!(kinds.contains(&kind), "docs/events.md shows no {kind}");
    }
    assert_schema(&events);
    assert_conformance(&events);
}

/// The same events as ECS documents, from `agent-guard events examples
/// --format ecs`, against Elastic's published field definitions; and the
/// native ones it prints are the documented ones.
#[test]
fn every_example_is_valid_ecs_and_the_cli_prints_the_documented_ones() {
    let print = |format: &str| -> Vec<Value> {
        let out = std::process::Command::new(agent_guard_bin())
            .args(["events", "examples", "--format", format])
            .output()
            .expect("agent-guard events examples");
        assert!(
            out.status.success(),
            "events examples --format {format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    assert_eq!(print("native"), documented());
    let docs = print("ecs");
    assert_eq!(docs.len(), documented().len());
    assert!(docs.iter().all(|d| d.get("ecs").is_some()));
    assert_conformance(&docs);
}

#[test]
fn the_checks_catch_what_they_are_for() {
    let events = documented();
    let call = &events[0];
    let fails = |e: Value| std::panic::catch_unwind(|| assert_ocsf(&e)).is_err();
    let mut wrong_type = call.clone();
    wrong_type["ocsf"]["type_uid"] = 400_105.into();
    assert!(fails(wrong_type), "type_uid must follow activity_id");
    let mut wrong_caption = call.clone();
    wrong_caption["ocsf"]["disposition"] = "Blocked".into();
    assert!(
        fails(wrong_caption),
        "a disposition must be its id's caption"
    );
    let delete = events
        .iter()
        .find(|e| e["kind"] == "file.unlink")
        .expect("a delete");
    let mut missing = delete.clone();
    missing["ocsf"]
        .as_object_mut()
        .expect("object")
        .remove("device");
    assert!(fails(missing), "File System Activity requires device");
    let mut nameless = delete.clone();
    nameless["ocsf"]["file"]
        .as_object_mut()
        .expect("object")
        .remove("name");
    assert!(fails(nameless), "a file needs its name");
    let mut undefined = call.clone();
    undefined["ocsf"]["actor"]["agent_list"] = serde_json::json!([]);
    assert!(fails(undefined), "OCSF's actor has no agent_list");
    let mut uid = call.clone();
    uid["ocsf"]["actor"]["process"]["user"]["uid"] = 0.into();
    assert!(fails(uid), "user.uid is a string in OCSF");
}
