//! Tools of a rogue agent looking for side doors, and of the services it might lean on: an
//! io_uring driver (Python ctypes, raw system calls: no liburing, nothing
//! to compile), a root helper daemon on a unix socket that deletes what it
//! is asked to, and UDP listeners.
use std::{
    collections::HashMap,
    net::UdpSocket,
    process::{Child, Command, Output, Stdio},
};

use crate::Daemon;

/// Python prelude for agent scripts: `t(label, fn)` prints "label errno"
/// (0 on success); `sys_(nr, ...)` is a raw system call that raises OSError.
pub const PY_PRELUDE: &str = r#"
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sys_(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *args)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r
def t(label, fn):
    try:
        fn()
        print(label, 0, flush=True)
    except OSError as e:
        print(label, e.errno, flush=True)
"#;

/// Runs `script` (after [`PY_PRELUDE`]) as `agent`; returns "label errno"
/// lines as a map, and the output.
pub fn run_py(daemon: &Daemon, agent: &str, script: &str) -> (HashMap<String, i32>, Output) {
    let code = format!("{PY_PRELUDE}{script}");
    let out = daemon.run_agent(agent, &["python3", "-c", &code]);
    (labels(&out), out)
}

/// Parses "label errno" lines.
pub fn labels(out: &Output) -> HashMap<String, i32> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (label, code) = line.rsplit_once(' ')?;
            Some((label.to_owned(), code.parse().ok()?))
        })
        .collect()
}

/// io_uring without liburing: setup, one submission queue entry per
/// operation, wait for its completion, print "label res" (the CQE's result:
/// 0 or -errno). If io_uring_setup fails, prints "setup errno" and exits.
/// Operations (argv): unlink:PATH, rename:OLD:NEW, exchange:OLD:NEW
/// (RENAME_EXCHANGE), link:OLD:NEW, trunc:PATH (openat O_WRONLY|O_TRUNC),
/// connect:IPV4:PORT (a TCP socket's IORING_OP_CONNECT; printed as
/// "connect_PORT res").
pub const PY_IO_URING: &str = r#"
import ctypes, mmap, os, struct, sys
u32, u64 = ctypes.c_uint32, ctypes.c_uint64
class SqOff(ctypes.Structure):
    _fields_ = [(n, u32) for n in ("head", "tail", "mask", "entries", "flags", "dropped", "array", "resv1")] + [("user_addr", u64)]
class CqOff(ctypes.Structure):
    _fields_ = [(n, u32) for n in ("head", "tail", "mask", "entries", "overflow", "cqes", "flags", "resv1")] + [("user_addr", u64)]
class Params(ctypes.Structure):
    _fields_ = [(n, u32) for n in ("sq_entries", "cq_entries", "flags", "sq_thread_cpu", "sq_thread_idle", "features", "wq_fd")] + [("resv", u32 * 3), ("sq_off", SqOff), ("cq_off", CqOff)]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
p = Params()
fd = libc.syscall(ctypes.c_long(425), 4, ctypes.byref(p))
if fd < 0:
    print("setup", ctypes.get_errno(), flush=True)
    sys.exit(0)
print("setup", 0, flush=True)
sq = mmap.mmap(fd, p.sq_off.array + p.sq_entries * 4, offset=0)
cq = mmap.mmap(fd, p.cq_off.cqes + p.cq_entries * 16, offset=0x8000000)
sqes = mmap.mmap(fd, p.sq_entries * 64, offset=0x10000000)
keep = []
def c(s):
    b = ctypes.create_string_buffer(s.encode())
    keep.append(b)
    return ctypes.addressof(b)
def submit(op, fd_, addr, length=0, off=0, op_flags=0):
    tail = struct.unpack_from("I", sq, p.sq_off.tail)[0]
    idx = tail & struct.unpack_from("I", sq, p.sq_off.mask)[0]
    sqe = struct.pack("BBHiQQIIQHHiQQ", op, 0, 0, fd_, off, addr, length, op_flags, 7, 0, 0, 0, 0, 0)
    sqes[idx * 64: idx * 64 + 64] = sqe
    struct.pack_into("I", sq, p.sq_off.array + idx * 4, idx)
    struct.pack_into("I", sq, p.sq_off.tail, tail + 1)
    n = libc.syscall(ctypes.c_long(426), fd, 1, 1, 1, None, 0)
    if n < 0:
        return -ctypes.get_errno()
    head = struct.unpack_from("I", cq, p.cq_off.head)[0]
    at = p.cq_off.cqes + (head & struct.unpack_from("I", cq, p.cq_off.mask)[0]) * 16
    _, res, _ = struct.unpack_from("QiI", cq, at)
    struct.pack_into("I", cq, p.cq_off.head, head + 1)
    return res
AT_FDCWD = -100
for arg in sys.argv[1:]:
    op, *a = arg.split(":")
    if op == "unlink":    # IORING_OP_UNLINKAT
        res = submit(36, AT_FDCWD, c(a[0]))
    elif op == "rename":  # IORING_OP_RENAMEAT: len = new dirfd, off = new path
        res = submit(35, AT_FDCWD, c(a[0]), length=AT_FDCWD & 0xffffffff, off=c(a[1]))
    elif op == "exchange":  # IORING_OP_RENAMEAT with RENAME_EXCHANGE
        res = submit(35, AT_FDCWD, c(a[0]), length=AT_FDCWD & 0xffffffff, off=c(a[1]), op_flags=2)
    elif op == "link":    # IORING_OP_LINKAT
        res = submit(39, AT_FDCWD, c(a[0]), length=AT_FDCWD & 0xffffffff, off=c(a[1]))
    elif op == "trunc":   # IORING_OP_OPENAT with O_WRONLY|O_TRUNC
        res = submit(18, AT_FDCWD, c(a[0]), length=0, op_flags=os.O_WRONLY | os.O_TRUNC)
    elif op == "connect":  # IORING_OP_CONNECT: addr = sockaddr, off = its length
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        keep.append(s)
        sa = ctypes.create_string_buffer(struct.pack("=H", socket.AF_INET) + struct.pack("!H", int(a[1])) + socket.inet_aton(a[0]) + bytes(8), 16)
        keep.append(sa)
        res = submit(16, s.fileno(), ctypes.addressof(sa), off=16)
        op = "connect_" + a[1]
    print(op, res, flush=True)
"#;

/// Runs [`PY_IO_URING`] as `agent` with `ops`.
pub fn io_uring_as(daemon: &Daemon, agent: &str, ops: &[String]) -> (HashMap<String, i32>, Output) {
    let mut argv = vec!["python3", "-c", PY_IO_URING];
    argv.extend(ops.iter().map(String::as_str));
    let out = daemon.run_agent(agent, &argv);
    (labels(&out), out)
}

/// A root service outside every agent, listening on a unix socket (a path,
/// or "@name" for an abstract one), that deletes the path each client
/// sends and answers "deleted" or "errno N": the way docker.sock or
/// systemd's private socket would do what an agent asks. Killed on drop.
pub struct UnixHelper {
    child: Child,
}

const PY_HELPER: &str = r#"
import os, socket, sys
addr = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0" + addr[1:] if addr.startswith("@") else addr)
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    path = c.makefile().readline().strip()
    try:
        os.unlink(path)
        c.sendall(b"deleted\n")
    except OSError as e:
        c.sendall(b"errno %d\n" % e.errno)
    c.close()
"#;

impl UnixHelper {
    pub fn start(addr: &str) -> Self {
        let mut child = Command::new("python3")
            .args(["-c", PY_HELPER, addr])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 helper");
        let line = crate::ChildLines::new(child.stdout.take().expect("stdout"))
            .next_line("helper's ready line");
        assert_eq!(line.trim(), "ready", "the helper did not start");
        Self { child }
    }
}

impl Drop for UnixHelper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Python for an agent: ask the helper at ADDR to delete PATH; prints
/// "LABEL errno" (0 and the helper's answer on stdout if it connected).
pub fn py_ask_helper(label: &str, addr: &str, path: &str) -> String {
    let sockaddr = match addr.strip_prefix('@') {
        Some(name) => format!("'\\0{name}'"),
        None => format!("{addr:?}"),
    };
    format!(
        r#"
def ask_{label}():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect({sockaddr})
    s.sendall(b"{path}\n")
    print("answer_{label}", s.makefile().readline().strip().replace(" ", "_"), flush=True)
t("{label}", ask_{label})
"#
    )
}

/// A UDP socket on loopback; `received` drains what arrived so far.
pub struct UdpListener {
    pub socket: UdpSocket,
    pub port: u16,
}

impl UdpListener {
    pub fn v4() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
        let port = socket.local_addr().expect("addr").port();
        socket.set_nonblocking(true).expect("nonblocking");
        Self { socket, port }
    }

    /// Datagrams queued now (non-blocking).
    pub fn received(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }

    /// Waits (generously) until a datagram equal to `want` has arrived,
    /// returning everything received up to and including it.
    pub fn wait_for(&self, want: &[u8]) -> Vec<Vec<u8>> {
        let deadline = std::time::Instant::now() + crate::PATIENCE;
        let mut all = Vec::new();
        loop {
            all.extend(self.received());
            if all.iter().any(|d| d == want) {
                return all;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{want:?} never arrived (got {all:?})"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
