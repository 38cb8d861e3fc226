//! Loading the BPF LSM delete hooks, best variant first.
use aya::{Ebpf, programs::Lsm};

use super::{Attachment, LsmStatus, describe_load_error, typed_program};

/// The LSM program pairs, best first: how each builds paths, and its
/// (program name, hook) pairs. A kernel that does not allow bpf_d_path in
/// the path hooks (6.1) refuses the first pair at load; the second builds
/// the path itself with offsets from BTF.
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

pub(super) fn load_lsm(ebpf: &mut Ebpf, links: &mut Vec<Attachment>) -> LsmStatus {
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
    for (paths, programs) in LSM_VARIANTS {
        match load_lsm_variant(ebpf, &btf, &programs) {
            Ok(()) => {
                for (name, hook) in programs {
                    let attached = typed_program::<Lsm>(ebpf, name)
                        .ok()
                        .map(|p| p.attach().and_then(|id| p.take_link(id)));
                    match attached {
                        Some(Ok(link)) => {
                            links.push(Attachment::Owned(name.to_owned(), link.into()))
                        }
                        Some(Err(err)) => {
                            return LsmStatus::Unavailable(format!(
                                "the kernel refused to attach lsm/{hook} (BPF_PROG_TYPE_LSM): {}",
                                describe_load_error(&err)
                            ));
                        }
                        None => return LsmStatus::Unavailable(format!("program {name} missing")),
                    }
                }
                return LsmStatus::Attached { paths };
            }
            Err(why) => refusals.push(format!("{paths}: {why}")),
        }
    }
    LsmStatus::Unavailable(refusals.join("; "))
}

/// Loads (verifies) both programs of one variant; attaches nothing.
fn load_lsm_variant(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    programs: &[(&'static str, &'static str); 2],
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
