//! `daemon --demo`: once the daemon guards, run the embedded policy's `demo`
//! agent through `agent-guard run`, exactly as a user would: one allowed and
//! one denied connect, one allowed and one denied delete. Its output goes to
//! stderr: stdout carries only events.
use std::{net::TcpListener, os::fd::AsFd as _, path::PathBuf};

use anyhow::{Context as _, Result};

/// Matches the deny rule in the embedded default policy.
const DEMO_DIR: &str = "/tmp/agent-guard-demo";

pub async fn run(socket: PathBuf) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").context("demo listener")?;
    let port = listener.local_addr()?.port();
    // Accept and drop connections so the allowed connect completes.
    std::thread::spawn(move || for _ in listener.incoming() {});

    // Files for the delete half, made by the daemon (outside the agent).
    let dir = std::path::Path::new(DEMO_DIR);
    std::fs::create_dir_all(dir.join("protected")).context("demo directory")?;
    std::fs::write(dir.join("scratch.txt"), "scratch\n").context("demo file")?;
    std::fs::write(dir.join("protected/keep.txt"), "keep\n").context("demo file")?;
    let script = format!(
        "echo 'demo agent: connect 127.0.0.1:{port} (policy: allow)'; \
         if exec 3<>/dev/tcp/127.0.0.1/{port}; then echo '  -> connected'; fi; \
         echo 'demo agent: connect 127.0.0.1:9 (policy: deny)'; \
         if ! exec 4<>/dev/tcp/127.0.0.1/9; then echo '  -> blocked by agent-guard'; fi; \
         echo 'demo agent: rm {DEMO_DIR}/scratch.txt (policy: allow)'; \
         rm {DEMO_DIR}/scratch.txt && echo '  -> removed'; \
         echo 'demo agent: rm {DEMO_DIR}/protected/keep.txt (policy: deny)'; \
         rm {DEMO_DIR}/protected/keep.txt || echo '  -> blocked by agent-guard'"
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
            "demo",
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
