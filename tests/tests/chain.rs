//! The tamper-evident log: the file sink rotates at its size without
//! splitting or losing a line, the chain verifies across rotated files and
//! across daemon runs, and `events verify` finds an edited, a deleted and a
//! reordered line at the right line number. Needs: seccomp user
//! notification or BPF LSM (the events come from supervised deletes).
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Output,
};

use agent_guard_tests::*;
use serde_json::Value;

fn policy(cg: &TestCgroups, scratch: &Scratch, sinks: &str) -> String {
    format!(
        r#"
[[agent]]
name = "bot"
owner = "o@example.com"
purpose = "chain tests"
labels = {{ env = "ci" }}
cgroup = "{}"

[agent.delete]
default = "allow"
deny = ["{}"]

[[sink]]
type = "stdout"
format = "v1"
{sinks}
"#,
        cg.path("bot"),
        scratch.s("keep"),
    )
}

/// Makes `n` files and removes them as the agent (one event each).
fn deletes(daemon: &Daemon, scratch: &Scratch, tag: &str, n: usize) {
    let files: Vec<String> = (0..n)
        .map(|i| {
            let p = scratch.file(&format!("work/{tag}-{i}"));
            p.display().to_string()
        })
        .collect();
    let mut argv = vec!["rm"];
    argv.extend(files.iter().map(String::as_str));
    let out = daemon.run_agent("bot", &argv);
    assert!(out.status.success(), "{out:?}");
}

fn verify(args: &[&str]) -> (Output, Value) {
    let out = std::process::Command::new(agent_guard_bin())
        .args(["events", "verify", "--json"])
        .args(args)
        .output()
        .expect("agent-guard events verify");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify --json printed {out:?}: {e}"));
    (out, report)
}

fn lines_of(files: &[PathBuf]) -> Vec<Value> {
    let mut all = Vec::new();
    for f in files {
        let text = fs::read_to_string(f).expect("read log");
        assert!(text.ends_with('\n'), "{} ends mid-line", f.display());
        for line in text.lines() {
            all.push(
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("{}: split or broken line {line:?}: {e}", f.display())
                }),
            );
        }
    }
    all
}

fn rotated(base: &Path) -> Vec<PathBuf> {
    let mut older: Vec<PathBuf> = (1..)
        .map(|n| PathBuf::from(format!("{}.{n}", base.display())))
        .take_while(|p| p.exists())
        .collect();
    older.reverse();
    older.push(base.to_owned());
    older
}

#[test]
fn the_file_sink_rotates_whole_lines_and_the_chain_spans_files_and_runs() {
    let cg = TestCgroups::new("chain-rotate");
    let scratch = Scratch::new("chain-rotate");
    let log = scratch.path("log/events.jsonl");
    let ecs = scratch.path("log/ecs.jsonl");
    let sinks = format!(
        "[[sink]]\nname = \"audit\"\ntype = \"file\"\nformat = \"v1\"\npath = \"{}\"\nmax_bytes = 8192\nkeep = 200\n\n\
         [[sink]]\nname = \"elastic\"\ntype = \"file\"\npath = \"{}\"\n",
        log.display(),
        ecs.display()
    );
    let text = policy(&cg, &scratch, &sinks);
    // `--format ecs`: every sink that names no format (here "elastic").
    let opts = || Options {
        args: vec!["--format".into(), "ecs".into()],
        ..Options::default()
    };
    let daemon = Daemon::start_with(&text, cg, Daemon::fresh_dir(), opts());
    deletes(&daemon, &scratch, "a", 40);
    let (first_run, cg, dir) = daemon.stop_keeping_dir();

    let files = rotated(&log);
    assert!(
        files.len() >= 4,
        "40 events in 8 KiB files must rotate: {files:?}"
    );
    for f in &files {
        let size = fs::metadata(f).expect("stat").len();
        assert!(
            size <= 8192,
            "{} is {size} bytes, past max_bytes",
            f.display()
        );
    }
    let logged = lines_of(&files);
    let seqs = |evs: &[Value]| evs.iter().map(|e| e["seq"].as_u64()).collect::<Vec<_>>();
    assert_eq!(
        seqs(&logged),
        seqs(&first_run),
        "the file has every line, once, in order"
    );
    assert_eq!(
        logged.last().map(|e| e["kind"].clone()),
        Some("daemon.stop".into())
    );
    let (out, report) = verify(&["--rotated", &log.display().to_string()]);
    assert!(out.status.success(), "{report}");
    assert_eq!(report["lines"], first_run.len());
    assert_eq!(report["starts_at_genesis"], true);

    // The ECS file is its own chain, and verifies too.
    let docs = lines_of(std::slice::from_ref(&ecs));
    // Every ECS line is ECS (no nulls, ECS fields with ECS types), and
    // every file-sink line validates like the stdout ones.
    assert!(docs.iter().all(|d| d.get("ecs").is_some()));
    assert_conformance(&docs);
    assert_schema(&logged);
    assert_conformance(&logged);
    let unlink = docs
        .iter()
        .find(|d| d["agent_guard"]["kind"] == "file.unlink")
        .expect("an ECS file.unlink");
    assert_eq!(unlink["event"]["category"], serde_json::json!(["file"]));
    assert_eq!(unlink["event"]["type"], serde_json::json!(["deletion"]));
    assert_eq!(unlink["event"]["outcome"], "success");
    assert!(
        unlink["file"]["path"]
            .as_str()
            .is_some_and(|p| p.contains("/work/a-"))
    );
    assert_eq!(unlink["gen_ai"]["agent"]["name"], "bot");
    assert_eq!(unlink["labels"]["agent_env"], "ci");
    assert_eq!(unlink["user"]["name"], "root");
    assert!(unlink["process"]["pid"].is_u64());
    assert!(verify(&[&ecs.display().to_string()]).0.status.success());

    // A second run appends, and its first event links to the first run's
    // last one (persisted in the state directory).
    let daemon = Daemon::start_with(&text, cg, dir.clone(), opts());
    deletes(&daemon, &scratch, "b", 5);
    let second_run = daemon.stop();
    assert_eq!(
        second_run[0]["chain"]["prev"],
        first_run.last().expect("events")["chain"]["hash"],
        "the new run continues the chain"
    );
    let (out, report) = verify(&["--rotated", &log.display().to_string()]);
    assert!(out.status.success(), "{report}");
    assert_eq!(report["lines"], first_run.len() + second_run.len());
    assert_eq!(report["runs"], 2);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn verify_names_the_line_of_an_edit_a_deletion_and_a_reorder() {
    let cg = TestCgroups::new("chain-tamper");
    let scratch = Scratch::new("chain-tamper");
    let log = scratch.path("log/events.jsonl");
    let sinks = format!("[[sink]]\ntype = \"file\"\npath = \"{}\"\n", log.display());
    let daemon = Daemon::start(&policy(&cg, &scratch, &sinks), cg);
    deletes(&daemon, &scratch, "t", 8);
    scratch.file("keep/x");
    daemon.run_agent("bot", &["rm", &scratch.s("keep/x")]);
    daemon.stop();
    let original = fs::read_to_string(&log).expect("log");
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() >= 10, "{} lines", lines.len());
    assert!(verify(&[&log.display().to_string()]).0.status.success());

    let tampered = |name: &str, edit: &dyn Fn(&mut Vec<String>)| {
        let mut l: Vec<String> = lines.iter().map(|s| (*s).to_owned()).collect();
        edit(&mut l);
        let p = scratch.path(name);
        fs::write(&p, l.join("\n") + "\n").expect("write");
        let (out, report) = verify(&[&p.display().to_string()]);
        assert!(!out.status.success(), "{name} must not verify: {report}");
        (
            report["line"].as_u64().expect("line"),
            report["error"].to_string(),
        )
    };
    // Line 6 says "allowed" where it said "denied"... or any edit at all.
    let (line, why) = tampered("edited.jsonl", &|l| {
        l[5] = l[5].replacen("\"uid\":0", "\"uid\":1000", 1);
    });
    assert_eq!(line, 6, "{why}");
    assert!(why.contains("edited"), "{why}");
    let (line, why) = tampered("deleted.jsonl", &|l| {
        l.remove(5);
    });
    assert_eq!(line, 6, "the line after the gap: {why}");
    assert!(why.contains("deleted"), "{why}");
    let (line, _) = tampered("reordered.jsonl", &|l| l.swap(5, 6));
    assert_eq!(line, 6);
    // Dropping the newest lines is seen only against the persisted tip or
    // a copy elsewhere; dropping the oldest shows as a chain that does not
    // start at the beginning.
    let p = scratch.path("head-cut.jsonl");
    fs::write(&p, lines[3..].join("\n") + "\n").expect("write");
    let (out, report) = verify(&[&p.display().to_string()]);
    assert!(out.status.success());
    assert_eq!(report["starts_at_genesis"], false);
}

/// SHA-256 of `prev` and the line without its chain member (the bytes
/// before its last `,"chain":`, closed), the way an attacker without the
/// key would rebuild the chain.
fn rebuild_unkeyed(lines: &[String]) -> Vec<String> {
    use sha2::Digest as _;
    let mut prev = "0".repeat(64);
    lines
        .iter()
        .map(|l| {
            let at = l.rfind(",\"chain\":").expect("a chain member");
            let body = format!("{}}}", &l[..at]);
            let mut h = sha2::Sha256::new();
            h.update(prev.as_bytes());
            h.update(body.as_bytes());
            let hash: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            let line = format!(
                "{},\"chain\":{{\"alg\":\"sha256\",\"prev\":\"{prev}\",\"hash\":\"{hash}\"}}}}",
                &l[..at]
            );
            prev = hash;
            line
        })
        .collect()
}

#[test]
fn a_keyed_chain_rebuilt_without_the_key_does_not_verify() {
    let cg = TestCgroups::new("chain-hmac");
    let scratch = Scratch::new("chain-hmac");
    let log = scratch.path("log/events.jsonl");
    let key = scratch.path("chain.key");
    fs::write(&key, "correct horse battery staple\n").expect("key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    let sinks = format!("[[sink]]\ntype = \"file\"\npath = \"{}\"\n", log.display());
    let text = policy(&cg, &scratch, &sinks);

    // A key others can read is refused, with the reason.
    let dir = Daemon::fresh_dir();
    fs::write(dir.join("policy.toml"), &text).expect("policy");
    let out = std::process::Command::new(agent_guard_bin())
        .args([
            "--socket",
            &dir.join("s.sock").display().to_string(),
            "daemon",
        ])
        .args(["--policy", &dir.join("policy.toml").display().to_string()])
        .args(["--state-dir", &dir.join("state").display().to_string()])
        .args(["--chain-key", &key.display().to_string()])
        .output()
        .expect("daemon");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("readable by root only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = fs::remove_dir_all(&dir);

    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
    let opts = Options {
        args: vec!["--chain-key".into(), key.display().to_string()],
        ..Options::default()
    };
    let daemon = Daemon::start_with(&text, cg, Daemon::fresh_dir(), opts);
    deletes(&daemon, &scratch, "k", 4);
    let events = daemon.stop();
    assert!(events.iter().all(|e| e["chain"]["alg"] == "hmac-sha256"));
    let log_s = log.display().to_string();
    let key_s = key.display().to_string();
    assert!(verify(&["--key", &key_s, &log_s]).0.status.success());
    let (out, report) = verify(&[&log_s]);
    assert!(!out.status.success());
    assert!(report["error"].to_string().contains("--key"), "{report}");

    // Edit a line and rebuild every hash with plain SHA-256: the rebuilt
    // log is a valid unkeyed chain, but not the keyed log it claims to be.
    let mut lines: Vec<String> = fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(str::to_owned)
        .collect();
    lines[2] = lines[2].replacen("\"outcome\":\"allowed\"", "\"outcome\":\"denied\"", 1);
    let forged = scratch.path("forged.jsonl");
    fs::write(&forged, rebuild_unkeyed(&lines).join("\n") + "\n").expect("write");
    let forged_s = forged.display().to_string();
    assert!(
        verify(&[&forged_s]).0.status.success(),
        "unkeyed, it chains"
    );
    let (out, report) = verify(&["--key", &key_s, &forged_s]);
    assert!(!out.status.success(), "with the key it must not: {report}");
    assert_eq!(report["line"], 1);
}
