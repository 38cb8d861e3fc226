//! An automated on-call: follows the event stream on the control socket
//! (the JSON-lines protocol of guard-userspace/src/control.rs) and approves
//! every hold the moment its `held` event arrives.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    thread::JoinHandle,
};

use anyhow::{Context as _, Result, bail};

use super::worker::boot_ns;

/// One approval, all times CLOCK_BOOTTIME ns.
#[derive(Clone, Copy, Debug)]
pub struct Approval {
    /// The hold id, which the kernel takes from CLOCK_BOOTTIME when it
    /// registers the hold: the start of the round trip.
    pub hold_ns: u64,
    /// When the `held` event reached the approver.
    pub seen_ns: u64,
    /// When the approver sent its decision.
    pub decided_ns: u64,
}

fn send(writer: &mut UnixStream, reader: &mut BufReader<UnixStream>, req: &str) -> Result<()> {
    writer.write_all(req.as_bytes())?;
    writer.write_all(b"\n")?;
    let mut reply = String::new();
    if reader.read_line(&mut reply)? == 0 {
        bail!("the daemon closed the control connection");
    }
    if !reply.starts_with(r#"{"v":1,"ok":true"#) {
        bail!("the daemon refused {req}: {}", reply.trim());
    }
    Ok(())
}

fn connect(socket: &Path) -> Result<(UnixStream, BufReader<UnixStream>)> {
    let s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let r = BufReader::new(s.try_clone()?);
    Ok((s, r))
}

/// Subscribes now (so no hold is missed), then approves `count` holds of
/// `agent` in a thread; the thread returns them in order.
pub fn spawn(
    socket: &Path,
    agent: &str,
    count: usize,
) -> Result<JoinHandle<Result<Vec<Approval>>>> {
    let (mut sub_w, mut sub_r) = connect(socket)?;
    send(
        &mut sub_w,
        &mut sub_r,
        &format!(r#"{{"v":1,"op":"subscribe","agent":"{agent}"}}"#),
    )?;
    let (mut w, mut r) = connect(socket)?;
    Ok(std::thread::spawn(move || {
        let mut out = Vec::with_capacity(count);
        let mut line = String::new();
        while out.len() < count {
            line.clear();
            if sub_r.read_line(&mut line)? == 0 {
                bail!("the event stream ended after {} approvals", out.len());
            }
            if !line.contains(r#""outcome":"held""#) {
                continue;
            }
            let seen_ns = boot_ns();
            let event: serde_json::Value = serde_json::from_str(&line)?;
            // Hold ids travel as strings (they exceed what JSON numbers
            // carry safely in every consumer).
            let id = &event["hold"]["id"];
            let Some(id) = id
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .or_else(|| id.as_u64())
            else {
                bail!("held event without hold.id: {line}");
            };
            let decided_ns = boot_ns();
            send(
                &mut w,
                &mut r,
                &format!(r#"{{"v":1,"op":"decide","id":"{id}","approve":true}}"#),
            )?;
            out.push(Approval {
                hold_ns: id,
                seen_ns,
                decided_ns,
            });
        }
        drop(sub_w);
        Ok(out)
    }))
}
