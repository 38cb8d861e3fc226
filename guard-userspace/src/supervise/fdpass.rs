//! Passing the listener fd from the launcher child to the daemon.
use std::{
    io,
    mem::{self, size_of},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    ptr,
};

use tokio::{io::Interest, net::UnixStream};

/// Control-message space for one fd.
// SAFETY: CMSG_SPACE only does arithmetic on its argument.
const ONE_FD_SPACE: usize = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;

/// Most fds taken in from one received chunk; the kernel closes any more
/// (MSG_CTRUNC), and that is a protocol error. Small on purpose: whoever
/// connects can send fds, and each one taken in is one of ours until it is
/// dropped.
const MAX_FDS: usize = 2;
// SAFETY: as above.
const MANY_FDS_SPACE: usize =
    unsafe { libc::CMSG_SPACE((MAX_FDS * size_of::<RawFd>()) as u32) } as usize;

/// Bytes peeked or read per step while looking for the end of the line.
const CHUNK: usize = 512;

/// A control buffer aligned as `cmsghdr` requires, on the stack.
#[repr(C)]
union CmsgBuf<const N: usize> {
    buf: [u8; N],
    _align: libc::cmsghdr,
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot; reading it
    // is async-signal-safe.
    unsafe { *libc::__errno_location() }
}

/// Sends `bytes` on the stream socket `sock` with `fd` attached
/// (`SCM_RIGHTS`, on the first byte). Returns whether everything was sent.
///
/// Async-signal-safe (for a `pre_exec` hook): the control buffer lives on
/// the stack, and only `sendmsg`/`send` are called; EINTR is retried and
/// SIGPIPE suppressed. `bytes` must not be empty (a stream socket carries
/// fds only with data).
#[must_use = "the fd may not have been sent"]
pub fn send_with_fd(sock: RawFd, bytes: &[u8], fd: RawFd) -> bool {
    if bytes.is_empty() {
        return false;
    }
    let mut cmsg = CmsgBuf::<ONE_FD_SPACE> {
        buf: [0; ONE_FD_SPACE],
    };
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: writing the union's byte view, which is always initialized.
    msg.msg_control = unsafe { cmsg.buf.as_mut_ptr() }.cast();
    msg.msg_controllen = ONE_FD_SPACE;
    let mut sent;
    // SAFETY: `msg` points at `iov`, `bytes` and `cmsg`, all alive until the
    // calls return; CMSG_FIRSTHDR is non-null because msg_controllen is at
    // least one header; the fd is written unaligned into the data area
    // CMSG_SPACE reserved for it. The kernel only reads `bytes`.
    unsafe {
        let hdr = libc::CMSG_FIRSTHDR(&raw const msg);
        (*hdr).cmsg_level = libc::SOL_SOCKET;
        (*hdr).cmsg_type = libc::SCM_RIGHTS;
        (*hdr).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        ptr::write_unaligned(libc::CMSG_DATA(hdr).cast::<RawFd>(), fd);
        loop {
            sent = libc::sendmsg(sock, &raw const msg, libc::MSG_NOSIGNAL);
            if sent >= 0 || errno() != libc::EINTR {
                break;
            }
        }
        if sent <= 0 {
            return false;
        }
        // The fd went with the first part; the rest is plain data.
        let mut done = sent as usize;
        while done < bytes.len() {
            let n = libc::send(
                sock,
                bytes[done..].as_ptr().cast(),
                bytes.len() - done,
                libc::MSG_NOSIGNAL,
            );
            if n > 0 {
                done += n as usize;
            } else if n == 0 || errno() != libc::EINTR {
                return false;
            }
        }
    }
    true
}

/// Reads one line (through `'\n'`, inclusive) of at most `max` bytes from
/// `stream`, collecting the fds that arrive with it (close-on-exec); more
/// than `max_fds` of them is an error (and they are closed). Never
/// consumes bytes after the newline: it peeks first, then reads exactly up
/// to the newline.
pub async fn recv_with_fds(
    stream: &UnixStream,
    max: usize,
    max_fds: usize,
) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let fd = stream.as_raw_fd();
    let mut data = Vec::new();
    let mut fds = Vec::new();
    while data.last() != Some(&b'\n') {
        if data.len() >= max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no end of line within {max} bytes"),
            ));
        }
        let mut chunk = [0u8; CHUNK];
        let want = CHUNK.min(max - data.len());
        let peeked = stream
            .async_io(Interest::READABLE, || peek(fd, &mut chunk[..want]))
            .await?;
        if peeked == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let take = chunk[..peeked]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(peeked, |p| p + 1);
        let got = stream
            .async_io(Interest::READABLE, || {
                recv_collecting(fd, &mut chunk[..take], &mut fds)
            })
            .await?;
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if fds.len() > max_fds {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {max_fds} file descriptors passed with one request"),
            ));
        }
        data.extend_from_slice(&chunk[..got]);
    }
    Ok((data, fds))
}

/// Looks at pending bytes without consuming them. With no control buffer,
/// the kernel drops (does not install) the fds a peek would duplicate.
fn peek(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv into `buf`, which is valid for `buf.len()` bytes.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One `recvmsg` of at most `buf.len()` bytes; fds go to `fds`.
fn recv_collecting(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut cmsg = CmsgBuf::<MANY_FDS_SPACE> {
        buf: [0; MANY_FDS_SPACE],
    };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: the byte view of the union is always initialized.
    msg.msg_control = unsafe { cmsg.buf.as_mut_ptr() }.cast();
    msg.msg_controllen = MANY_FDS_SPACE;
    // SAFETY: `msg` points at `iov` (into `buf`) and `cmsg`, alive until the
    // call returns.
    let n = unsafe {
        libc::recvmsg(
            fd,
            &raw mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled msg_controllen bytes of `cmsg` with complete
    // headers; CMSG_FIRSTHDR/NXTHDR stay within them, and each SCM_RIGHTS
    // payload holds (cmsg_len - CMSG_LEN(0)) / 4 fds just installed in our
    // table, which nothing else owns, so wrapping them in OwnedFd is sound.
    unsafe {
        let mut hdr = libc::CMSG_FIRSTHDR(&raw const msg);
        while !hdr.is_null() {
            if (*hdr).cmsg_level == libc::SOL_SOCKET && (*hdr).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*hdr).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(hdr).cast::<RawFd>();
                for i in 0..payload / size_of::<RawFd>() {
                    let raw = ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            hdr = libc::CMSG_NXTHDR(&raw const msg, hdr);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than {MAX_FDS} fds arrived with one message; the rest were dropped"),
        ));
    }
    Ok(n as usize)
}

/// Receives one short message and the fds that came with it, without
/// waiting: for a peer that has already sent (the `run` launcher reading
/// what its child sent before exec). `Ok(None)` if nothing is there.
pub fn recv_fds_now(sock: RawFd) -> io::Result<Option<Vec<OwnedFd>>> {
    let mut buf = [0u8; CHUNK];
    let mut fds = Vec::new();
    match recv_collecting(sock, &mut buf, &mut fds) {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(fds)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Write as _, os::unix::net::UnixStream as StdStream};

    use super::*;

    #[tokio::test]
    async fn passes_an_fd_with_a_line_and_leaves_the_next_line() {
        let (a, b) = StdStream::pair().expect("socketpair");
        let file = std::fs::File::open("/proc/self/stat").expect("open");
        assert!(send_with_fd(
            a.as_raw_fd(),
            b"first line\n",
            file.as_raw_fd()
        ));
        (&a).write_all(b"second\n").expect("write");
        b.set_nonblocking(true).expect("nonblocking");
        let b = UnixStream::from_std(b).expect("tokio stream");
        let (line, fds) = recv_with_fds(&b, 100, 1).await.expect("first");
        assert_eq!(line, b"first line\n");
        assert_eq!(fds.len(), 1);
        // SAFETY: fcntl F_GETFD on an fd we own.
        let flags = unsafe { libc::fcntl(fds[0].as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let (line, fds) = recv_with_fds(&b, 100, 1).await.expect("second");
        assert_eq!(line, b"second\n");
        assert!(fds.is_empty());
    }

    #[tokio::test]
    async fn bounds_the_line_and_reports_eof() {
        let (a, b) = StdStream::pair().expect("socketpair");
        (&a).write_all(b"0123456789").expect("write");
        b.set_nonblocking(true).expect("nonblocking");
        let b = UnixStream::from_std(b).expect("tokio stream");
        let err = recv_with_fds(&b, 4, 1).await.expect_err("too long");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        drop(a);
        let err = recv_with_fds(&b, 100, 1).await.expect_err("eof");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn refuses_more_fds_than_allowed() {
        let (a, b) = StdStream::pair().expect("socketpair");
        let file = std::fs::File::open("/proc/self/stat").expect("open");
        // Two messages of one line, each with an fd: two fds for one request.
        assert!(send_with_fd(a.as_raw_fd(), b"one ", file.as_raw_fd()));
        assert!(send_with_fd(a.as_raw_fd(), b"line\n", file.as_raw_fd()));
        b.set_nonblocking(true).expect("nonblocking");
        let b = UnixStream::from_std(b).expect("tokio stream");
        let err = recv_with_fds(&b, 100, 1).await.expect_err("two fds");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn refuses_empty_data() {
        let (a, _b) = StdStream::pair().expect("socketpair");
        assert!(!send_with_fd(a.as_raw_fd(), b"", 0));
    }
}
