//! Builds guard-ebpf for the BPF target (nightly, -Z build-std=core) and
//! leaves the object in OUT_DIR, where `kernel::load` embeds it.
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))?;
    let root = PathBuf::from(manifest).join("..").join("guard-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "guard-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context(
        "building the eBPF object failed; the BPF toolchain (nightly rust-src, bpf-linker \
         with LLVM 22) is installed by `cargo xtask setup`",
    )
}
