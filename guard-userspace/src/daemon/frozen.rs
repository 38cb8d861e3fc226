//! Which agents on-call froze, kept in the state directory. A freeze is a
//! decision from outside every agent and only a thaw ends it: a daemon
//! that crashed, was killed or was restarted by systemd must not come back
//! with a frozen agent running free in its policy's mode.
use std::{collections::BTreeSet, path::Path};

use anyhow::{Context as _, Result};

use crate::statefile::StateFile;

pub struct Frozen {
    file: StateFile<BTreeSet<String>>,
}

impl Frozen {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            file: StateFile::new(state_dir.join("frozen.json")),
        }
    }

    /// The agents that were frozen when the last daemon stopped or died.
    /// A file that cannot be read is an error: guessing could thaw one.
    pub fn load(&self) -> Result<BTreeSet<String>> {
        let names = self.file.load().with_context(|| {
            format!(
                "the agents on-call froze: repair {}, or remove it to start with every agent \
                 in its policy's mode",
                self.file.path().display()
            )
        })?;
        Ok(names.unwrap_or_default())
    }

    /// Records `names` as the frozen agents.
    pub fn save(&self, names: &BTreeSet<String>) -> Result<()> {
        Ok(self.file.save(names)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_saved_is_loaded_and_a_broken_file_is_an_error() {
        let scratch = tempfile::tempdir().expect("scratch dir");
        let dir = scratch.path();
        let frozen = Frozen::new(dir);
        assert!(frozen.load().expect("no file").is_empty());
        let names: BTreeSet<String> = ["bot".to_string(), "etl".to_string()].into();
        frozen.save(&names).expect("save");
        assert_eq!(frozen.load().expect("load"), names);
        std::fs::write(dir.join("frozen.json"), b"{not json").expect("write");
        let err = frozen.load().expect_err("broken file");
        assert!(format!("{err:#}").contains("frozen.json"), "{err:#}");
    }
}
