//! Pinning: every attachment can outlive the daemon, so a crash leaves the
//! last policy enforced (fail closed). Links live in `<state_dir>/bpf/links`,
//! the held-calls map in `<state_dir>/bpf/maps`.
use std::{
    io,
    path::{Path, PathBuf},
};

use aya::programs::links::{FdLink, PinnedLink};

use super::{Kernel, KernelError};

pub(super) enum Attachment {
    Owned(String, FdLink),
    /// A link made without aya (kernel/unix_programs.rs).
    Raw(String, std::os::fd::OwnedFd),
    Pinned(String, PinnedLink),
}

impl Attachment {
    pub(super) fn name(&self) -> &str {
        match self {
            Attachment::Owned(name, _) | Attachment::Raw(name, _) | Attachment::Pinned(name, _) => {
                name
            }
        }
    }

    /// Detaches now, pinned or not.
    pub(super) fn detach(self) {
        match self {
            Attachment::Owned(_, link) => drop(link),
            Attachment::Raw(_, link) => drop(link),
            Attachment::Pinned(name, p) => match p.unpin() {
                Ok(link) => drop(link),
                Err(err) => tracing::error!(%err, %name, "unpinning an attachment to detach it"),
            },
        }
    }
}

/// The bpffs under the state directory: links/ and maps/, and whether we
/// mounted it.
pub(super) struct Pins {
    pub(super) root: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) mount: Option<PathBuf>,
}

impl Pins {
    /// Mounts bpffs at `state_dir/bpf` unless one is there already.
    pub(super) fn mount(state_dir: &Path) -> Result<Self, KernelError> {
        let root = state_dir.join("bpf");
        let io = |what: &'static str, path: &Path| {
            let path = path.display().to_string();
            move |source| KernelError::Pin { what, path, source }
        };
        std::fs::create_dir_all(&root).map_err(io("creating", &root))?;
        let mount = if nix::sys::statfs::statfs(&root)
            .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
            .unwrap_or(false)
        {
            None
        } else {
            nix::mount::mount(
                Some("bpf"),
                &root,
                Some("bpf"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| io("mounting bpffs at", &root)(io::Error::from(e)))?;
            Some(root.clone())
        };
        for sub in ["links", "maps"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        }
        Ok(Self {
            dir: root.join("links"),
            root,
            mount,
        })
    }
}

/// statfs(2) magic of bpffs (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn pin_path(dir: &Path, name: &str) -> PathBuf {
    // The pid keeps names unique across daemons that share a directory.
    dir.join(format!("{}-{name}", std::process::id()))
}

fn pin(dir: &Path, name: &str, link: FdLink) -> Result<PinnedLink, KernelError> {
    let path = pin_path(dir, name);
    link.pin(&path).map_err(|e| KernelError::Pin {
        what: "pinning",
        path: path.display().to_string(),
        source: io::Error::other(e),
    })
}

/// Pins a link made without aya, then takes it back as aya's PinnedLink,
/// so that every pinned attachment is handled alike from here on.
fn pin_raw(dir: &Path, name: &str, link: &std::os::fd::OwnedFd) -> Result<PinnedLink, KernelError> {
    let path = pin_path(dir, name);
    let err = |source| KernelError::Pin {
        what: "pinning",
        path: path.display().to_string(),
        source,
    };
    super::unix_programs::pin(link, &path).map_err(err)?;
    PinnedLink::from_pin(&path).map_err(|e| err(io::Error::other(e)))
}

impl Kernel {
    /// Keeps an attachment: pinned if pinning is on, else owned.
    pub(super) fn keep(&mut self, name: String, link: FdLink) -> Result<(), KernelError> {
        let attachment = match &self.pins {
            Some(pins) if self.pinning => {
                let pinned = pin(&pins.dir, &name, link)?;
                Attachment::Pinned(name, pinned)
            }
            _ => Attachment::Owned(name, link),
        };
        self.links.push(attachment);
        Ok(())
    }

    /// Keeps a link made without aya, like [`Kernel::keep`].
    pub(super) fn keep_raw(
        &mut self,
        name: String,
        link: std::os::fd::OwnedFd,
    ) -> Result<(), KernelError> {
        let attachment = match &self.pins {
            Some(pins) if self.pinning => {
                let pinned = pin_raw(&pins.dir, &name, &link)?;
                Attachment::Pinned(name, pinned)
            }
            _ => Attachment::Raw(name, link),
        };
        self.links.push(attachment);
        Ok(())
    }

    /// Pins every attachment, now and later, under `state_dir/bpf/links`,
    /// so that if the daemon dies the programs stay attached and keep
    /// enforcing the last policy: fail closed. Pins left by a daemon that
    /// died are removed only after ours are in force, so there is no gap.
    pub fn pin_links(&mut self) -> Result<(), KernelError> {
        let Some(pins) = &self.pins else {
            return Err(KernelError::Pin {
                what: "pinning without",
                path: "a state directory".into(),
                source: io::Error::from(io::ErrorKind::InvalidInput),
            });
        };
        let dir = pins.dir.clone();
        let maps_dir = pins.root.join("maps");
        let ours = format!("{}-", std::process::id());
        let stale: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        !p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(&ours))
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.pinning = true;
        for attachment in std::mem::take(&mut self.links) {
            let pinned = match attachment {
                Attachment::Owned(name, link) => {
                    let pinned = pin(&dir, &name, link)?;
                    Attachment::Pinned(name, pinned)
                }
                Attachment::Raw(name, link) => {
                    let pinned = pin_raw(&dir, &name, &link)?;
                    Attachment::Pinned(name, pinned)
                }
                pinned @ Attachment::Pinned(..) => pinned,
            };
            self.links.push(pinned);
        }
        for path in stale {
            tracing::warn!(pin = %path.display(), "removing an attachment left by a daemon that did not shut down cleanly");
            let _ = std::fs::remove_file(&path);
        }
        // Map pins this build does not use: a predecessor's HOLDS of
        // another layout. Its held threads are restarted by the hold
        // registry and judged afresh (see `Holds::resume`).
        let ours: Vec<String> = super::PINNED_MAPS
            .iter()
            .map(|n| super::pin_file(n))
            .collect();
        if let Ok(maps) = std::fs::read_dir(&maps_dir) {
            for entry in maps.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !ours.contains(&name) {
                    tracing::warn!(pin = %entry.path().display(), "removing a map pin of another agent-guard version");
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Clean shutdown: unpins and detaches every attachment, removes the
    /// map pins (nothing is held any more, and a later daemon starts with a
    /// fresh stream), and unmounts the bpffs we mounted. Agents run
    /// unguarded from here on.
    pub fn release(mut self) {
        if let Some(pins) = &self.pins {
            for name in super::PINNED_MAPS {
                let _ = std::fs::remove_file(pins.root.join("maps").join(super::pin_file(name)));
            }
        }
        for attachment in std::mem::take(&mut self.links) {
            if let Attachment::Pinned(_, p) = attachment {
                if let Err(err) = p.unpin() {
                    tracing::error!(%err, "unpinning an attachment");
                }
            }
        }
        if let Some(Pins {
            mount: Some(root), ..
        }) = self.pins.take()
        {
            let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
