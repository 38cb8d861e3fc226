//! Secrets the daemon reads at start (web tokens, webhook keys) must be
//! root's alone: a file others can read or write is refused, not used.
use std::{fs, os::unix::fs::MetadataExt as _, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum RootFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} must be owned by root and not readable or writable by group or others \
         (it is owned by uid {uid}, mode {mode:04o}); fix with: chown root:root {path} && chmod 600 {path}"
    )]
    Exposed { path: String, uid: u32, mode: u32 },
    #[error("{path} must be a regular file (not a symlink, directory or device)")]
    NotAFile { path: String },
    #[error("{path} is empty")]
    Empty { path: String },
}

/// Reads a root-only secret file, refusing one that is exposed.
pub fn read(path: &Path) -> Result<String, RootFileError> {
    let shown = path.display().to_string();
    let read_err = |source| RootFileError::Read {
        path: shown.clone(),
        source,
    };
    // Metadata of the file itself, not a symlink's target chosen by someone else.
    let meta = fs::symlink_metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(RootFileError::NotAFile { path: shown });
    }
    let mode = meta.mode() & 0o7777;
    if meta.uid() != 0 || mode & 0o077 != 0 {
        return Err(RootFileError::Exposed {
            path: shown,
            uid: meta.uid(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(read_err)?;
    if text.trim().is_empty() {
        return Err(RootFileError::Empty { path: shown });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn only_root_may_read_it() {
        let dir = std::env::temp_dir().join(format!("agent-guard-rootfile-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("key");
        fs::write(&file, "secret\n").expect("write");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read(&file).expect_err("group/world-readable is refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
        let owned_by_root = nix::unistd::geteuid().is_root();
        match read(&file) {
            Ok(text) => assert!(owned_by_root && text == "secret\n"),
            Err(err) => assert!(!owned_by_root && err.to_string().contains("owned by root")),
        }
        let err = read(&dir).expect_err("a directory is refused");
        assert!(err.to_string().contains("regular file"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
