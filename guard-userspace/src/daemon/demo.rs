//! `daemon --demo`: once the daemon guards, run the policy's `demo` agent
//! through `agent-guard run`, exactly as a user would: one allowed and one
//! denied connect, one allowed and one denied delete, and one delete its
//! `ask` rule holds until someone decides (or its 60 s run out). The demo
//! watches the event stream like any client and says how to decide the
//! hold. Its output goes to stderr: stdout carries only events.
use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{
    control::{self, Client, Request},
    policy::Policy,
};

/// Matches the deny and ask rules of the demo agent in the embedded policy.
const DEMO_DIR: &str = "/tmp/agent-guard-demo";
const AGENT: &str = "demo";

/// Refuses `--demo` with a policy that has no `demo` agent, before anything
/// is loaded.
pub fn check(policy: &Policy) -> Result<()> {
    if !policy.agents.iter().any(|a| a.name == AGENT) {
        bail!(
            "--demo runs the agent {AGENT:?}, which {} does not declare; copy its [[agent]] \
             table from `agent-guard policy default`, or drop --policy to use that policy",
            policy.file
        );
    }
    Ok(())
}

/// `page`: the approval page's address when `[web]` is on.
pub async fn run(socket: PathBuf, page: Option<String>) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").context("demo listener")?;
    let port = listener.local_addr()?.port();
    // Accept and drop connections so the allowed connect completes.
    std::thread::spawn(move || for _ in listener.incoming() {});

    // Files for the delete half, made by the daemon (outside the agent).
    let dir = Path::new(DEMO_DIR);
    for sub in ["protected", "held"] {
        std::fs::create_dir_all(dir.join(sub)).context("demo directory")?;
    }
    std::fs::write(dir.join("scratch.txt"), "scratch\n").context("demo file")?;
    std::fs::write(dir.join("protected/keep.txt"), "keep\n").context("demo file")?;
    std::fs::write(dir.join("held/report.txt"), "report\n").context("demo file")?;

    // Subscribed before the agent starts, so its hold cannot be missed
    // (a blocking client, kept off the runtime's threads).
    let sock = socket.clone();
    let stream = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut client = Client::connect(&sock)?;
        client
            .call(Request::Subscribe {
                agent: Some(AGENT.into()),
            })
            .context("subscribing to the demo agent's events")?;
        Ok(client.into_stream())
    })
    .await??;
    let approve_cmd = if socket == Path::new(control::DEFAULT_SOCKET) {
        "agent-guard".to_owned()
    } else {
        format!("agent-guard --socket {}", socket.display())
    };
    std::thread::spawn(move || explain_holds(stream, &approve_cmd, page.as_deref()));

    let script = format!(
        "echo 'demo agent: connect 127.0.0.1:{port} (policy: allow)'; \
         if exec 3<>/dev/tcp/127.0.0.1/{port}; then echo '  -> connected'; fi; \
         echo 'demo agent: connect 127.0.0.1:9 (policy: deny)'; \
         if ! exec 4<>/dev/tcp/127.0.0.1/9; then echo '  -> blocked by agent-guard'; fi; \
         echo 'demo agent: rm {DEMO_DIR}/scratch.txt (policy: allow)'; \
         rm {DEMO_DIR}/scratch.txt && echo '  -> removed'; \
         echo 'demo agent: rm {DEMO_DIR}/protected/keep.txt (policy: deny)'; \
         rm {DEMO_DIR}/protected/keep.txt || echo '  -> blocked by agent-guard'; \
         echo 'demo agent: rm {DEMO_DIR}/held/report.txt (policy: ask; waits for a decision)'; \
         if rm {DEMO_DIR}/held/report.txt; then echo '  -> approved: removed'; \
         else echo '  -> not approved: the file stays'; fi"
    );
    let exe = std::env::current_exe().context("locating agent-guard")?;
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let mut cmd = tokio::process::Command::new(exe);
    // SAFETY: only sigprocmask between fork and exec.
    unsafe {
        cmd.pre_exec(super::signals::unblock_in_child);
    }
    let status = cmd
        .arg("--socket")
        .arg(&socket)
        .args([
            "run",
            "--agent",
            AGENT,
            "--on-behalf-of",
            "demo-user",
            "--",
            "bash",
            "-c",
        ])
        .arg(script)
        .stdout(stderr)
        .status()
        .await
        .context("starting the demo agent")?;
    tracing::info!(%status, "demo agent finished; the daemon keeps guarding (Ctrl-C stops it)");
    Ok(())
}

/// Reads the demo agent's events (JSON lines, as `events --follow` gets
/// them) and, for each held call, says how to decide it; then what was
/// decided.
fn explain_holds(stream: impl std::io::Read, cmd: &str, page: Option<&str>) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(text) = hold_notice(&event, cmd, page) {
            eprintln!("{text}");
        }
    }
}

/// What the demo prints for a `held` event or a hold's decision.
fn hold_notice(event: &Value, cmd: &str, page: Option<&str>) -> Option<String> {
    let id = event["hold"]["id"].as_str()?;
    let target = event["target"]["path"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "{}:{}",
                event["target"]["address"].as_str().unwrap_or("?"),
                event["target"]["port"]
            )
        });
    if event["outcome"] == "held" {
        let call = event["kind"].as_str().unwrap_or("call");
        let mut text = format!(
            "\nagent-guard: HELD {call} {target} (hold {id}); it waits for a decision.\n\
             \x20 In another terminal, as root:\n\
             \x20   {cmd} approve {id}\n\
             \x20   {cmd} deny {id}\n"
        );
        if let Some(page) = page {
            text.push_str(&format!("  or on the approval page: {page}/#hold={id}\n"));
        }
        text.push_str(&format!(
            "  With no decision it is denied after {} s.\n",
            event["hold"]["timeout_secs"]
        ));
        return Some(text);
    }
    if event["kind"] == "hold.decision" {
        let hold = &event["hold"];
        if hold["decision"] == "expired" {
            return Some(format!(
                "agent-guard: hold {id} expired: nobody decided in time, so it is denied"
            ));
        }
        return Some(format!(
            "agent-guard: hold {id} {} by {}{}",
            hold["decision"].as_str().unwrap_or("decided"),
            hold["by"]["user"].as_str().unwrap_or("?"),
            hold["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_call_is_explained_with_the_commands_and_the_page() {
        let held = serde_json::json!({"kind": "file.unlink", "outcome": "held",
            "target": {"path": "/tmp/agent-guard-demo/held/report.txt"},
            "hold": {"id": "77", "timeout_secs": 60}});
        let text = hold_notice(
            &held,
            "agent-guard --socket /tmp/s.sock",
            Some("http://127.0.0.1:8787"),
        )
        .expect("a notice");
        assert!(text.contains("HELD file.unlink /tmp/agent-guard-demo/held/report.txt (hold 77)"));
        assert!(text.contains("In another terminal, as root:"));
        assert!(text.contains("\n    agent-guard --socket /tmp/s.sock approve 77\n"));
        assert!(text.contains("\n    agent-guard --socket /tmp/s.sock deny 77\n"));
        assert!(text.contains("approval page: http://127.0.0.1:8787/#hold=77"));
        assert!(text.contains("denied after 60 s"));

        let no_page = hold_notice(&held, "agent-guard", None).expect("a notice");
        assert!(!no_page.contains("approval page"), "{no_page}");

        let decided = serde_json::json!({"kind": "hold.decision", "outcome": "denied",
            "target": {"path": "/x"},
            "hold": {"id": "77", "decision": "expired",
                     "by": {"user": "agent-guard (approval timeout)"},
                     "reason": "no decision before approval_timeout_secs"}});
        assert_eq!(
            hold_notice(&decided, "agent-guard", None).as_deref(),
            Some("agent-guard: hold 77 expired: nobody decided in time, so it is denied")
        );
        let approved = serde_json::json!({"kind": "hold.decision", "outcome": "allowed",
            "hold": {"id": "78", "decision": "approved", "by": {"user": "root"},
                     "reason": "ticket OPS-1"}});
        assert_eq!(
            hold_notice(&approved, "agent-guard", None).as_deref(),
            Some("agent-guard: hold 78 approved by root (ticket OPS-1)")
        );
        let allowed = serde_json::json!({"kind": "file.unlink", "outcome": "allowed"});
        assert_eq!(hold_notice(&allowed, "agent-guard", None), None);
    }
}
