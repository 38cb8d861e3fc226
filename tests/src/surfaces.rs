//! Helpers for the on-call and operator surface tests (web page, webhooks,
//! metrics): root-only secret files, free loopback ports, plain HTTP GETs,
//! and a policy whose deletes under one directory are held.
use std::{
    fs,
    io::Write as _,
    net::TcpListener,
    path::PathBuf,
    process::Child,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{Daemon, TestCgroups};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A root-only secret file (root-owned, mode 0600), as the daemon demands
/// for web tokens and webhook keys; removed on drop.
pub struct SecretFile {
    pub path: PathBuf,
}

impl SecretFile {
    pub fn new(test: &str, contents: &str) -> Self {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Created new, never cleared first: a file of that name may be
        // another test's (pids repeat, see crate::claim_dir).
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "agent-guard-secret-{}-{test}-{n}",
                std::process::id()
            ));
            let mut f = match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("secret file {}: {e}", path.display()),
            };
            f.write_all(contents.as_bytes()).expect("write secret");
            return Self { path };
        }
    }

    pub fn s(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A port nobody uses right now on any IPv4 address (for a server the
/// daemon will open, or for a receiver that is down). Taken below the
/// kernel's ephemeral range (32768 and up by default): a port the kernel
/// handed out for `bind(0)` could go to some connection's source port
/// before the daemon binds it (seen: `[metrics] cannot listen on
/// 0.0.0.0:39107: Address already in use`). Spread by pid, so test
/// binaries running side by side start far apart.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(97) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LOW + (base + n) % SPAN).expect("below 32000");
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// GET `url` and return (status, headers lookup, body), for any status.
pub fn http_get(url: &str, bearer: Option<&str>) -> (u16, Vec<(String, String)>, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(token) = bearer {
        req = req.header("Authorization", &format!("Bearer {token}"));
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = resp
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
    (resp.status().as_u16(), headers, body)
}

/// A policy with agent "cleaner" whose deletes under `ask_dir` are held,
/// plus `extra` (surfaces such as [web], [metrics], [[notify]]).
pub fn cleaner_policy(cg: &TestCgroups, ask_dir: &str, extra: &str) -> String {
    format!(
        r#"
[daemon]
approval_timeout_secs = 300
approvers = {{ uids = [0] }}

{extra}

[[agent]]
name = "cleaner"
owner = "ops@example.com"
purpose = "on-call surface tests"
cgroup = "{}"

[agent.delete]
default = "allow"
ask = ["{ask_dir}"]
"#,
        cg.path("cleaner"),
    )
}

/// Starts `argv` as agent "cleaner" and waits until its delete of `path`
/// is held; returns the running child and the hold id.
pub fn held_delete(daemon: &Daemon, argv: &[&str], path: &str) -> (Child, String) {
    let child = daemon.spawn_agent("cleaner", argv);
    let ev = daemon.wait_event("file.unlink", |e| {
        e["outcome"] == "held" && e["target"]["path"] == path
    });
    let id = ev["hold"]["id"].as_str().expect("hold id").to_string();
    (child, id)
}
