//! State the daemon keeps across its own restarts (runs, held calls,
//! frozen agents, the chain's tip): one JSON value per file, written whole,
//! fsynced and renamed into place, so that a crash at any point leaves the
//! old file or the new one, never a mix.
use std::{
    fs,
    io::{self, Write as _},
    marker::PhantomData,
    path::{Path, PathBuf},
};

use serde::{Serialize, de::DeserializeOwned};

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} is not what this daemon wrote: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: io::Error },
}

/// The file at `path`, holding one `T`.
pub struct StateFile<T> {
    path: PathBuf,
    _value: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> StateFile<T> {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            _value: PhantomData,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value last saved; None when there is no file (a first start).
    /// A file that cannot be read or parsed is an error, never "nothing":
    /// the caller decides what losing it means.
    pub fn load(&self) -> Result<Option<T>, StateFileError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateFileError::Read {
                    path: self.path.display().to_string(),
                    source,
                });
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StateFileError::Parse {
                path: self.path.display().to_string(),
                source,
            })
    }

    /// Replaces the file with `value`: written to a temporary file beside
    /// it, fsynced, then renamed over it.
    pub fn save(&self, value: &T) -> Result<(), StateFileError> {
        let write = |source| StateFileError::Write {
            path: self.path.display().to_string(),
            source,
        };
        let bytes = serde_json::to_vec(value).map_err(|e| write(io::Error::other(e)))?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = fs::File::create(&tmp).map_err(write)?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(write)?;
        fs::rename(&tmp, &self.path).map_err(write)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn saves_and_loads_back_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StateFile::<BTreeSet<String>>::new(dir.path().join("frozen.json"));
        assert!(file.load().expect("load").is_none());
        let names: BTreeSet<String> = ["a".to_owned(), "b".to_owned()].into();
        file.save(&names).expect("save");
        assert_eq!(file.load().expect("load"), Some(names));
        // Nothing left beside it.
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 1);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("holds.json");
        fs::write(&path, b"{not json").expect("write");
        let err = StateFile::<Vec<u32>>::new(path)
            .load()
            .expect_err("damaged");
        assert!(err.to_string().contains("holds.json"), "{err}");
    }
}
