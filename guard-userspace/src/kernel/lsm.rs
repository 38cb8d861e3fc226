//! Loading the BPF LSM hooks: unlink and rmdir, and the hooks that close
//! the side doors (renames, links, truncation, mounts, unix sockets), each
//! in the best variant this kernel accepts.
use aya::{Ebpf, programs::Lsm};

use super::{Attachment, LsmStatus, describe_load_error, typed_program};

/// Whether a hook must load for the LSM backend to be in force.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Without it a door stays open: the backend is not used at all.
    Required,
    /// Newer than the oldest kernel we support, or needing optional
    /// offsets; what covers for it (if anything) is said in doctor.
    Optional,
}

/// Every hook: its programs, best first, and whether it is required.
/// Where a hook has two programs, the first builds paths with bpf_d_path,
/// which kernels allow only in hooks on their sleepable list (path_unlink
/// and the other path hooks from 6.2 on; not on 6.1), and the second with
/// the dentry walk from BTF offsets; a program that merely mentions
/// bpf_d_path is refused where it is not allowed, so the loader keeps the
/// first the kernel accepts. Cheap to verify matters: every daemon start
/// verifies them all.
const HOOKS: [(&str, &[&str], Need); 13] = [
    (
        "path_unlink",
        &["path_unlink", "path_unlink_walk"],
        Need::Required,
    ),
    (
        "path_rmdir",
        &["path_rmdir", "path_rmdir_walk"],
        Need::Required,
    ),
    (
        "path_rename",
        &["path_rename", "path_rename_walk"],
        Need::Required,
    ),
    (
        "path_link",
        &["path_link", "path_link_walk"],
        Need::Required,
    ),
    // truncate(2) everywhere; on 6.1 also ftruncate and O_TRUNC opens.
    (
        "path_truncate",
        &["path_truncate", "path_truncate_walk"],
        Need::Required,
    ),
    // 6.2+: ftruncate and O_TRUNC opens no longer reach path_truncate.
    (
        "file_truncate",
        &["file_truncate", "file_truncate_walk"],
        Need::Optional,
    ),
    ("sb_mount", &["sb_mount"], Need::Required),
    ("move_mount", &["move_mount"], Need::Required),
    ("sb_pivotroot", &["sb_pivotroot"], Need::Required),
    ("path_chroot", &["path_chroot"], Need::Required),
    // 6.1+.
    ("userns_create", &["userns_create"], Need::Optional),
    // Need unix_sock offsets from BTF (CONFIG_UNIX=y).
    (
        "unix_stream_connect",
        &["unix_stream_connect"],
        Need::Optional,
    ),
    ("unix_may_send", &["unix_may_send"], Need::Optional),
];

pub(super) fn load_lsm(ebpf: &mut Ebpf, links: &mut Vec<Attachment>, unix: bool) -> LsmStatus {
    let active = std::fs::read_to_string("/sys/kernel/security/lsm").ok();
    if let Some(list) = &active {
        if !list.split(',').any(|l| l.trim() == "bpf") {
            return LsmStatus::Unavailable(format!(
                "\"bpf\" is not in the active LSM list ({}); boot with lsm=...,bpf",
                list.trim()
            ));
        }
    }
    let btf = match aya::Btf::from_sys_fs() {
        Ok(btf) => btf,
        Err(err) => return LsmStatus::Unavailable(format!("kernel BTF: {err}")),
    };
    let mut chosen: Vec<(&'static str, &'static str)> = Vec::new();
    let mut missing = Vec::new();
    for (hook, programs, need) in HOOKS {
        if hook.starts_with("unix_") && !unix {
            missing.push((
                hook,
                "unix_sock has no known layout in this kernel's BTF".to_owned(),
            ));
            continue;
        }
        let mut refusals = Vec::new();
        let loaded = programs
            .iter()
            .find(|name| match load_program(ebpf, &btf, name, hook) {
                Ok(()) => true,
                Err(why) => {
                    refusals.push(why);
                    false
                }
            });
        match (loaded, need) {
            (Some(name), _) => chosen.push((name, hook)),
            (None, Need::Optional) => missing.push((hook, refusals.join("; "))),
            (None, Need::Required) => {
                return LsmStatus::Unavailable(refusals.join("; "));
            }
        }
    }
    let paths = if chosen.iter().any(|(name, _)| *name == "path_unlink") {
        "bpf_d_path"
    } else {
        "dentry walk"
    };
    // Attach only once everything needed loaded: all or nothing.
    let mut hooks = Vec::new();
    for (name, hook) in chosen {
        let attached = typed_program::<Lsm>(ebpf, name)
            .ok()
            .map(|p| p.attach().and_then(|id| p.take_link(id)));
        match attached {
            Some(Ok(link)) => links.push(Attachment::Owned(name.to_owned(), link.into())),
            Some(Err(err)) => {
                links.clear();
                return LsmStatus::Unavailable(format!(
                    "the kernel refused to attach lsm/{hook} (BPF_PROG_TYPE_LSM): {}",
                    describe_load_error(&err)
                ));
            }
            None => {
                links.clear();
                return LsmStatus::Unavailable(format!("program {name} missing"));
            }
        }
        hooks.push(hook);
    }
    LsmStatus::Attached {
        paths,
        hooks,
        missing,
    }
}

/// Loads (verifies) one program; attaches nothing.
fn load_program(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    name: &'static str,
    hook: &'static str,
) -> Result<(), String> {
    let prog: &mut Lsm = typed_program(ebpf, name).map_err(|e| e.to_string())?;
    prog.load(hook, btf).map_err(|err| {
        format!(
            "the kernel refused to load {name} at lsm/{hook} (BPF_PROG_TYPE_LSM): {}",
            describe_load_error(&err)
        )
    })
}
