//! The shipped deployment files: the systemd unit passes `systemd-analyze
//! verify` (a syntax check where systemd is absent), and the DaemonSet
//! parses and mounts what the daemon needs. Not privileged.
use std::{fs, path::PathBuf, process::Command};

use agent_guard_tests::*;
use yaml_rust2::{Yaml, YamlLoader};

fn repo_file(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `key=value` lines of the unit's `[section]`.
fn unit_section(unit: &str, section: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{section}]");
            continue;
        }
        if !inside || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value in [{section}]: {line:?}"));
        out.push((k.to_owned(), v.to_owned()));
    }
    out
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = repo_file("deploy/agent-guard.service");
    let service = unit_section(&unit, "Service");
    let get = |k: &str| {
        service
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("ExecReload"), Some("/usr/bin/agent-guard reload"));
    // systemd's default soft limit (1024) is what an idle-connection flood
    // once exhausted.
    let nofile: u64 = get("LimitNOFILE")
        .and_then(|n| n.parse().ok())
        .expect("LimitNOFILE set to a number");
    assert!(nofile >= 65536, "LimitNOFILE={nofile}");
    assert!(get("ExecStart").is_some_and(|s| s.contains(" daemon --policy ")));
    // Directives that would hide the host's file system or cgroups from a
    // daemon that pins BPF, manages cgroups and deletes for agents.
    for forbidden in [
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateMounts",
        "ProtectControlGroups",
        "ProtectKernelTunables",
        "PrivateDevices",
    ] {
        assert!(
            get(forbidden).is_none(),
            "{forbidden} breaks loading BPF or supervised deletes"
        );
    }
    let caps = get("CapabilityBoundingSet").expect("a capability bounding set");
    for cap in ["CAP_BPF", "CAP_SYS_ADMIN", "CAP_PERFMON", "CAP_KILL"] {
        assert!(caps.split_whitespace().any(|c| c == cap), "{cap} missing");
    }
    assert!(!unit_section(&unit, "Install").is_empty());

    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| PathBuf::from(p).exists());
    let Some(analyze) = analyze else {
        skip(
            "the_systemd_unit_verifies",
            "systemd-analyze is not installed; checked the unit's syntax only",
        );
        return;
    };
    // Verified with the binary it would start: the one under test.
    let tmp = std::env::temp_dir();
    let dir = tmp.join(claim_dir(&tmp, "agent-guard-unit"));
    let path = dir.join("agent-guard.service");
    let bin = agent_guard_bin();
    fs::write(
        &path,
        unit.replace("/usr/bin/agent-guard", &bin.display().to_string()),
    )
    .expect("unit");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let _ = fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("agent-guard.service"),
        "warnings about the unit: {stderr}"
    );
}

fn mapping<'a>(y: &'a Yaml, key: &str) -> &'a Yaml {
    let v = &y[key];
    assert!(!v.is_badvalue(), "no {key:?} in {y:?}");
    v
}

fn s<'a>(y: &'a Yaml, key: &str) -> &'a str {
    mapping(y, key)
        .as_str()
        .unwrap_or_else(|| panic!("{key:?} is not a string"))
}

#[test]
fn the_daemonset_parses_and_mounts_what_the_daemon_needs() {
    let docs = YamlLoader::load_from_str(&repo_file("deploy/daemonset.yaml")).expect("YAML parses");
    let kinds: Vec<&str> = docs.iter().map(|d| s(d, "kind")).collect();
    assert_eq!(kinds, ["Namespace", "ConfigMap", "DaemonSet"]);

    // The ConfigMap's policy is one the daemon accepts.
    let policy = s(mapping(&docs[1], "data"), "policy.toml");
    let tmp = std::env::temp_dir();
    let dir = tmp.join(claim_dir(&tmp, "agent-guard-cm"));
    fs::write(dir.join("policy.toml"), policy).expect("policy");
    let out = Command::new(agent_guard_bin())
        .args(["policy", "check"])
        .arg(dir.join("policy.toml"))
        .output()
        .expect("agent-guard policy check");
    let _ = fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "the ConfigMap's policy: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ds = &docs[2];
    let pod = mapping(mapping(mapping(ds, "spec"), "template"), "spec");
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    let volumes = pod["volumes"].as_vec().expect("volumes");
    let host_path = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .and_then(|v| v["hostPath"]["path"].as_str())
            .unwrap_or_else(|| panic!("no hostPath volume {name}"))
    };
    assert_eq!(host_path("cgroup2"), "/sys/fs/cgroup");
    assert!(host_path("bpffs").starts_with("/sys/fs/bpf"));
    assert_eq!(host_path("btf"), "/sys/kernel/btf");
    assert_eq!(
        volumes
            .iter()
            .find(|v| v["name"].as_str() == Some("policy"))
            .map(|v| s(mapping(v, "configMap"), "name")),
        Some(s(mapping(&docs[1], "metadata"), "name"))
    );

    let container = &pod["containers"][0];
    let mounts = container["volumeMounts"].as_vec().expect("volumeMounts");
    let mounted = |name: &str| {
        mounts
            .iter()
            .find(|m| m["name"].as_str() == Some(name))
            .map(|m| s(m, "mountPath"))
            .unwrap_or_else(|| panic!("volume {name} not mounted"))
    };
    assert_eq!(mounted("cgroup2"), "/sys/fs/cgroup");
    // The daemon pins under <state_dir>/bpf; the ConfigMap's state_dir:
    assert!(policy.contains("state_dir = \"/var/lib/agent-guard\""));
    assert_eq!(mounted("bpffs"), "/var/lib/agent-guard/bpf");
    assert_eq!(mounted("btf"), "/sys/kernel/btf");
    assert_eq!(mounted("policy"), "/etc/agent-guard");

    let caps: Vec<&str> = container["securityContext"]["capabilities"]["add"]
        .as_vec()
        .expect("capabilities.add")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    for cap in ["BPF", "PERFMON", "SYS_ADMIN", "KILL"] {
        assert!(caps.contains(&cap), "capability {cap} missing: {caps:?}");
    }
}
