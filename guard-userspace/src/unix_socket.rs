//! Binding the daemon's unix stream sockets (control socket, event sinks).
use std::{fs, os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};
use tokio::net::{UnixListener, UnixStream};

/// Pause after a failed accept (EMFILE and the like), doubling up to
/// [`ACCEPT_BACKOFF_MAX`]: the connection waits in the backlog meanwhile.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

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

/// Accepts connections on a daemon socket until the daemon stops: a failed
/// accept (out of descriptors, most likely) is waited out, never fatal.
/// `admit` decides, per connection, whether it is taken.
pub async fn accept_loop<F>(listener: &UnixListener, what: &str, mut admit: F)
where
    F: FnMut(UnixStream),
{
    let mut backoff = ACCEPT_BACKOFF;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF;
                admit(stream);
            }
            Err(err) => {
                if backoff == ACCEPT_BACKOFF {
                    tracing::warn!(%err, socket = what, "accept failed; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}
