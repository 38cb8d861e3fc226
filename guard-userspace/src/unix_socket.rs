//! Binding the daemon's unix stream sockets (control socket, event sinks).
use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::{Context as _, Result, bail};
use tokio::net::UnixListener;

/// Binds `path` with permissions `mode`. A leftover socket file nobody
/// serves is replaced; a live one is an error (`busy` says whose), never a
/// takeover.
pub fn bind(path: &Path, mode: u32, busy: impl FnOnce(&Path) -> String) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{}", busy(path));
        }
        fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}
