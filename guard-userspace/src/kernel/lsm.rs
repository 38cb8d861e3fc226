//! Loading the BPF LSM hooks: unlink/rmdir in their best variant first,
//! then the hooks that close the side doors (renames, links, truncation,
//! mounts, unix sockets), which build paths with the dentry walk.
use aya::{Ebpf, programs::Lsm};

use super::{Attachment, LsmStatus, describe_load_error, typed_program};

/// The unlink/rmdir program pairs, best first: how each builds paths, and
/// its (program name, hook) pairs. A kernel that does not allow bpf_d_path
/// in the path hooks (6.1) refuses the first pair at load; the second
/// builds the path itself with offsets from BTF.
const LSM_VARIANTS: [(&str, [(&str, &str); 2]); 2] = [
    (
        "bpf_d_path",
        [("path_unlink", "path_unlink"), ("path_rmdir", "path_rmdir")],
    ),
    (
        "dentry walk",
        [
            ("path_unlink_walk", "path_unlink"),
            ("path_rmdir_walk", "path_rmdir"),
        ],
    ),
];

/// Whether a hook must load for the LSM backend to be in force.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Without it a door stays open: the backend is not used at all.
    Required,
    /// Newer than the oldest kernel we support, or needing optional
    /// offsets; what covers for it (if anything) is said in doctor.
    Optional,
}

/// Side-door hooks: (program = hook name, need). Each program is named
/// after its hook.
const SIDE_DOOR_HOOKS: [(&str, Need); 11] = [
    ("path_rename", Need::Required),
    ("path_link", Need::Required),
    // truncate(2) everywhere; on 6.1 also ftruncate and O_TRUNC opens.
    ("path_truncate", Need::Required),
    // 6.2+: ftruncate and O_TRUNC opens no longer reach path_truncate.
    ("file_truncate", Need::Optional),
    ("sb_mount", Need::Required),
    ("move_mount", Need::Required),
    ("sb_pivotroot", Need::Required),
    ("path_chroot", Need::Required),
    // 6.1+.
    ("userns_create", Need::Optional),
    // Need unix_sock offsets from BTF (CONFIG_UNIX=y).
    ("unix_stream_connect", Need::Optional),
    ("unix_may_send", Need::Optional),
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
    let mut refusals = Vec::new();
    let mut chosen = None;
    for (paths, programs) in LSM_VARIANTS {
        match load_programs(ebpf, &btf, &programs) {
            Ok(()) => {
                chosen = Some((paths, programs));
                break;
            }
            Err(why) => refusals.push(format!("{paths}: {why}")),
        }
    }
    let Some((paths, programs)) = chosen else {
        return LsmStatus::Unavailable(refusals.join("; "));
    };
    let mut hooks: Vec<&'static str> = programs.iter().map(|(_, hook)| *hook).collect();
    let mut missing = Vec::new();
    let mut side = Vec::new();
    for (hook, need) in SIDE_DOOR_HOOKS {
        if hook.starts_with("unix_") && !unix {
            missing.push((
                hook,
                "unix_sock has no known layout in this kernel's BTF".to_owned(),
            ));
            continue;
        }
        match load_programs(ebpf, &btf, &[(hook, hook)]) {
            Ok(()) => side.push((hook, hook)),
            Err(why) if need == Need::Optional => missing.push((hook, why)),
            Err(why) => {
                return LsmStatus::Unavailable(format!(
                    "lsm/{hook} is needed to close a side door and {why}"
                ));
            }
        }
    }
    // Attach only once everything needed loaded: all or nothing.
    for (name, hook) in programs.iter().copied().chain(side) {
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
        if !hooks.contains(&hook) {
            hooks.push(hook);
        }
    }
    LsmStatus::Attached {
        paths,
        hooks,
        missing,
    }
}

/// Loads (verifies) programs; attaches nothing.
fn load_programs(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    programs: &[(&'static str, &'static str)],
) -> Result<(), String> {
    for &(name, hook) in programs {
        let prog: &mut Lsm = typed_program(ebpf, name).map_err(|e| e.to_string())?;
        prog.load(hook, btf).map_err(|err| {
            format!(
                "the kernel refused to load lsm/{hook} (BPF_PROG_TYPE_LSM): {}",
                describe_load_error(&err)
            )
        })?;
    }
    Ok(())
}
