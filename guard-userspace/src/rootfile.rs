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
    let mode = meta.mode() & 0o7777;
    if meta.uid() != 0 || mode & 0o077 != 0 || !meta.is_file() {
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
