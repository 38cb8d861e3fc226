//! Which agents on-call froze, kept in the state directory. A freeze is a
//! decision from outside every agent and only a thaw ends it: a daemon
//! that crashed, was killed or was restarted by systemd must not come back
//! with a frozen agent running free in its policy's mode.
use std::{
    collections::BTreeSet,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

pub struct Frozen {
    file: PathBuf,
}

impl Frozen {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            file: state_dir.join("frozen.json"),
        }
    }

    /// The agents that were frozen when the last daemon stopped or died.
    /// A file that cannot be read is an error: guessing could thaw one.
    pub fn load(&self) -> Result<BTreeSet<String>> {
        match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "reading {} (the agents on-call froze); repair it, or remove it to start \
                     with every agent in its policy's mode",
                    self.file.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.file.display())),
        }
    }

    /// Records `names` as the frozen agents (write, fsync, rename).
    pub fn save(&self, names: &BTreeSet<String>) -> Result<()> {
        let tmp = self.file.with_extension("json.tmp");
        let bytes = serde_json::to_vec(names).context("encoding the frozen agents")?;
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.file)
            .with_context(|| format!("renaming {} into place", tmp.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_saved_is_loaded_and_a_broken_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("agent-guard-frozen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let frozen = Frozen::new(&dir);
        assert!(frozen.load().expect("no file").is_empty());
        let names: BTreeSet<String> = ["bot".to_string(), "etl".to_string()].into();
        frozen.save(&names).expect("save");
        assert_eq!(frozen.load().expect("load"), names);
        std::fs::write(dir.join("frozen.json"), b"{not json").expect("write");
        let err = frozen.load().expect_err("broken file");
        assert!(format!("{err:#}").contains("frozen.json"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
