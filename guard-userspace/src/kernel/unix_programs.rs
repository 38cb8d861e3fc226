//! cgroup/connect_unix and cgroup/sendmsg_unix (6.7+), which aya 0.14
//! cannot declare: its `CgroupSockAddr` fixes the expected attach type at
//! load from a closed list without the unix types, and the kernel links a
//! sock_addr program only to the attach type it was loaded for (measured
//! here: a program aya loaded as cgroup/sendmsg4 is refused by
//! BPF_LINK_CREATE with BPF_CGROUP_UNIX_CONNECT, EINVAL).
//!
//! So for these two programs only, this file does aya's last step itself,
//! with aya's own object crate: parse the same embedded object, relocate
//! its map references to the maps aya already created (so they share
//! policy, events and holds with every other program), and load the
//! instructions with BPF_PROG_LOAD and the unix attach type; then attach
//! with BPF_LINK_CREATE. Nothing else of aya is repeated.
use std::{
    collections::HashSet,
    ffi::CString,
    io,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use aya::{Ebpf, maps::Map};

/// BPF_PROG_TYPE_CGROUP_SOCK_ADDR (include/uapi/linux/bpf.h).
const PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// enum bpf_attach_type: BPF_CGROUP_UNIX_CONNECT and _SENDMSG (6.7+).
const ATTACH_UNIX_CONNECT: u32 = 49;
const ATTACH_UNIX_SENDMSG: u32 = 50;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;

/// The two programs, by name in the object, with their attach types.
pub const PROGRAMS: [(&str, u32); 2] = [
    ("connect_unix", ATTACH_UNIX_CONNECT),
    ("sendmsg_unix", ATTACH_UNIX_SENDMSG),
];

/// The loaded programs (their fds keep them alive for new attachments).
pub struct UnixPrograms {
    programs: Vec<(&'static str, u32, OwnedFd)>,
}

/// The leading part of `union bpf_attr` for BPF_PROG_LOAD, zero-padded to
/// a size every kernel since 4.x accepts (the tail must be zero).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _rest: [u8; 64],
}

/// `union bpf_attr` for BPF_LINK_CREATE (target fd, attach type, flags).
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u8; 48],
}

/// `union bpf_attr` for BPF_OBJ_PIN.
#[repr(C)]
struct ObjPinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _rest: [u8; 44],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<RawFd> {
    // SAFETY: the attribute is a live, zero-padded bpf_attr prefix of the
    // size passed; the kernel reads (and for logs writes) only within it
    // and the buffers it points at, which outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as RawFd)
    }
}

/// The fd of a map aya created.
fn map_fd(map: &Map) -> RawFd {
    let data = match map {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::BloomFilter(d)
        | Map::CgroupArray(d)
        | Map::CgroupStorage(d)
        | Map::CgrpStorage(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashMap(d)
        | Map::HashOfMaps(d)
        | Map::InodeStorage(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuCgroupStorage(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::Queue(d)
        | Map::ReusePortSockArray(d)
        | Map::RingBuf(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::SkStorage(d)
        | Map::Stack(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => d,
    };
    data.fd().as_fd().as_raw_fd()
}

impl UnixPrograms {
    /// Loads both programs from `object` against `ebpf`'s maps. The error
    /// names the program and the kernel's reason (ENOTSUP-like EINVAL on
    /// kernels before 6.7, which have no unix attach types).
    pub fn load(ebpf: &Ebpf, object: &[u8]) -> Result<Self, String> {
        let mut obj = aya_obj::Object::parse(object).map_err(|e| format!("parsing: {e}"))?;
        let defs = obj.maps.clone();
        let fds: Vec<(String, RawFd)> = ebpf
            .maps()
            .map(|(name, map)| (name.to_owned(), map_fd(map)))
            .collect();
        let text: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
        obj.relocate_maps(
            fds.iter()
                .filter_map(|(name, fd)| Some((name.as_str(), *fd, defs.get(name)?))),
            &text,
        )
        .map_err(|e| format!("relocating maps: {e}"))?;
        obj.relocate_calls(&text)
            .map_err(|e| format!("relocating calls: {e}"))?;
        let mut programs = Vec::new();
        for (name, attach_type) in PROGRAMS {
            let program = obj
                .programs
                .get(name)
                .ok_or_else(|| format!("program {name} missing from the object"))?;
            let function = obj
                .functions
                .get(&program.function_key())
                .ok_or_else(|| format!("program {name} has no code"))?;
            let fd = prog_load(name, &program.license, &function.instructions, attach_type)
                .map_err(|e| format!("cgroup/{name}: {e}"))?;
            programs.push((name, attach_type, fd));
        }
        Ok(Self { programs })
    }

    /// Attaches both to the cgroup open as `cgroup`; returns the links,
    /// named by program.
    pub fn attach(&self, cgroup: RawFd) -> io::Result<Vec<(&'static str, OwnedFd)>> {
        let mut links = Vec::new();
        for (name, attach_type, prog) in &self.programs {
            let mut attr = LinkCreateAttr {
                prog_fd: prog.as_raw_fd() as u32,
                target_fd: cgroup as u32,
                attach_type: *attach_type,
                flags: 0,
                _rest: [0; 48],
            };
            let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
            // SAFETY: the kernel just returned this descriptor to us.
            links.push((*name, unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        Ok(links)
    }
}

fn prog_load(
    name: &str,
    license: &CString,
    insns: &[aya_obj::generated::bpf_insn],
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut log = vec![0u8; 64 * 1024];
    let mut prog_name = [0u8; 16];
    for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let mut attr = ProgLoadAttr {
        prog_type: PROG_TYPE_CGROUP_SOCK_ADDR,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: attach_type,
        _rest: [0; 64],
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel just returned this descriptor to us.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(first) => {
            // Again with the verifier's log, to say why.
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let text = String::from_utf8_lossy(&log);
            let tail: Vec<&str> = text
                .trim_end_matches('\0')
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect();
            let start = tail.len().saturating_sub(4);
            Err(io::Error::new(
                first.kind(),
                format!("{first}; verifier: {}", tail[start..].join(" | ")),
            ))
        }
    }
}

/// Pins link `fd` at `path` (a bpffs), as aya pins its own links.
pub fn pin(fd: &OwnedFd, path: &std::path::Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let mut attr = ObjPinAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
        path_fd: 0,
        _rest: [0; 44],
    };
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd as _;

    use aya::programs::CgroupSockAddr;

    use super::*;
    use crate::kernel::{Kernel, OBJECT, typed_program};

    /// Why this file exists, measured: the program aya loads (as the
    /// cgroup/sendmsg4 it is declared with) cannot be linked as
    /// cgroup/connect_unix; the same program loaded here can.
    #[test]
    fn aya_cannot_link_a_unix_attach_type_and_this_loader_can() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED unix programs: loading BPF programs needs root");
            return;
        }
        let root = guard_host::cgroup::Hierarchy::discover()
            .expect("cgroup2")
            .root()
            .join(format!("agent-guard-unixprog-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("test cgroup");
        let cgroup = std::fs::File::open(&root).expect("open cgroup");
        let mut kernel = Kernel::load(None).expect("load");
        let ours = match UnixPrograms::load(&kernel.ebpf, OBJECT) {
            Ok(p) => p,
            Err(why) => {
                let _ = std::fs::remove_dir(&root);
                eprintln!(
                    "SKIPPED unix programs: this kernel has no cgroup unix hooks (6.7+): {why}"
                );
                return;
            }
        };
        let prog: &mut CgroupSockAddr =
            typed_program(&mut kernel.ebpf, "connect_unix").expect("prog");
        prog.load().expect("aya loads it as cgroup/sendmsg4");
        let mut attr = LinkCreateAttr {
            prog_fd: prog.fd().expect("fd").as_fd().as_raw_fd() as u32,
            target_fd: cgroup.as_raw_fd() as u32,
            attach_type: ATTACH_UNIX_CONNECT,
            flags: 0,
            _rest: [0; 48],
        };
        let refused = bpf(BPF_LINK_CREATE, &mut attr);
        assert_eq!(
            refused.map_err(|e| e.raw_os_error()),
            Err(Some(libc::EINVAL)),
            "the kernel links a sock_addr program only to its load-time attach type"
        );
        let links = ours.attach(cgroup.as_raw_fd()).expect("attached");
        assert_eq!(links.len(), 2);
        drop(links);
        drop(kernel);
        let _ = std::fs::remove_dir(&root);
    }
}
