//! The seccomp journal of one supervised run: every notification the
//! daemon received and has not answered yet, in `state_dir/seccomp/`.
//!
//! A daemon that dies leaves the calls it had received waiting in the
//! kernel (the run's launcher keeps the listener open). The kernel cannot
//! list them, so this file does: the successor re-handles each one that is
//! still valid. Appended without fsync: it must survive a crash of the
//! daemon, which leaves the page cache (and so every write made) intact,
//! not a crash of the host, which ends the waiting calls too. A
//! notification costs two small writes to the page cache and no disk
//! flush. Emptied when nothing is in flight and it has grown past
//! [`RESET_AT`], so it stays small without a truncation per call; while a
//! call stays in flight (held for a human) it is rewritten with just the
//! calls in flight instead, so an agent that holds one call and deletes on
//! cannot fill the state directory.
use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use parking_lot::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::supervise::Journal;

/// One line of the journal.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Received(Notif),
    Answered(u64),
}

/// `libc::seccomp_notif`, field by field (serde stays off libc's types).
#[derive(Clone, Copy, Serialize, Deserialize)]
struct Notif {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}

impl From<&libc::seccomp_notif> for Notif {
    fn from(n: &libc::seccomp_notif) -> Self {
        Self {
            id: n.id,
            pid: n.pid,
            flags: n.flags,
            nr: n.data.nr,
            arch: n.data.arch,
            ip: n.data.instruction_pointer,
            args: n.data.args,
        }
    }
}

impl From<Notif> for libc::seccomp_notif {
    fn from(n: Notif) -> Self {
        // SAFETY: a plain C struct; all-zero is a valid value.
        let mut out: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        out.id = n.id;
        out.pid = n.pid;
        out.flags = n.flags;
        out.data.nr = n.nr;
        out.data.arch = n.arch;
        out.data.instruction_pointer = n.ip;
        out.data.args = n.args;
        out
    }
}

pub struct NotifJournal {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    /// Bytes appended since the file was last emptied.
    len: u64,
    /// By id: the order received (for a rewrite) and the notification.
    in_flight: HashMap<u64, (u64, Notif)>,
    /// The order the next notification received gets.
    next: u64,
}

/// Size past which the journal is emptied once nothing is in flight.
const RESET_AT: u64 = 64 * 1024;

/// Where the journal of session `id` lives.
pub fn path(state_dir: &Path, session: &str) -> PathBuf {
    state_dir.join("seccomp").join(format!("{session}.jsonl"))
}

impl NotifJournal {
    /// Opens the journal at `path`, returning what a predecessor received
    /// and never answered (oldest first). They stay in the journal until
    /// answered.
    pub fn open(path: PathBuf) -> io::Result<(Self, Vec<libc::seccomp_notif>)> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut order = Vec::new();
        let mut in_flight = HashMap::new();
        match fs::read_to_string(&path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    // A torn last line is what a crash mid-write leaves;
                    // anything else unreadable is reported and skipped.
                    match serde_json::from_str::<Line>(line) {
                        Ok(Line::Received(notif)) => {
                            order.push(notif.id);
                            in_flight.insert(notif.id, (order.len() as u64, notif));
                        }
                        Ok(Line::Answered(id)) => {
                            in_flight.remove(&id);
                        }
                        Err(err) => tracing::warn!(
                            file = %path.display(), line = n + 1, %err,
                            "unreadable line in a seccomp journal; skipped"
                        ),
                    }
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        let unanswered: Vec<libc::seccomp_notif> = order
            .iter()
            .filter_map(|id| in_flight.get(id).map(|(_, n)| (*n).into()))
            .collect();
        // Rewritten with just what is still in flight.
        let (file, len) = replace(
            &path,
            order
                .iter()
                .filter_map(|id| in_flight.get(id).map(|(_, n)| n)),
        )?;
        Ok((
            Self {
                path,
                inner: Mutex::new(Inner {
                    file,
                    len,
                    in_flight,
                    next: order.len() as u64 + 1,
                }),
            },
            unanswered,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// Replaces the file with one that lists just the calls in flight.
    fn rewrite(&self, inner: &mut Inner) -> io::Result<()> {
        let mut calls: Vec<&(u64, Notif)> = inner.in_flight.values().collect();
        calls.sort_unstable_by_key(|(order, _)| *order);
        (inner.file, inner.len) = replace(&self.path, calls.into_iter().map(|(_, n)| n))?;
        Ok(())
    }

    fn append(&self, inner: &mut Inner, line: &Line) {
        match write_line(&mut inner.file, line) {
            Ok(n) => inner.len += n,
            Err(err) => {
                tracing::error!(file = %self.path.display(), %err,
                "writing the seccomp journal; a call in flight now would not survive a daemon crash");
            }
        }
    }
}

/// Writes a journal of `calls` beside `path` and renames it over `path` (a
/// crash midway leaves the old file, which says the same); the new file,
/// open for appending, and its length.
fn replace<'a>(path: &Path, calls: impl Iterator<Item = &'a Notif>) -> io::Result<(File, u64)> {
    let tmp = path.with_extension("jsonl.new");
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&tmp)?;
    let mut len = 0;
    for notif in calls {
        len += write_line(&mut file, &Line::Received(*notif))?;
    }
    drop(file);
    fs::rename(&tmp, path)?;
    Ok((OpenOptions::new().append(true).open(path)?, len))
}

/// Appends `line`; the bytes written.
fn write_line(file: &mut File, line: &Line) -> io::Result<u64> {
    let mut bytes = serde_json::to_vec(line).map_err(io::Error::other)?;
    bytes.push(b'\n');
    // One write: a crash leaves at most one torn line, at the end.
    file.write_all(&bytes)?;
    Ok(bytes.len() as u64)
}

impl Journal for NotifJournal {
    fn received(&self, notif: &libc::seccomp_notif) {
        let mut inner = self.lock();
        let notif = Notif::from(notif);
        let order = inner.next;
        inner.next += 1;
        inner.in_flight.insert(notif.id, (order, notif));
        self.append(&mut inner, &Line::Received(notif));
    }

    fn answered(&self, id: u64) {
        let mut inner = self.lock();
        if inner.in_flight.remove(&id).is_none() {
            return;
        }
        // A received line is about 150 bytes: past RESET_AT, and past twice
        // what the calls in flight need, the file is mostly answered calls.
        let needed = inner.in_flight.len() as u64 * 2 * 160;
        if inner.len >= RESET_AT.max(needed) {
            let done = if inner.in_flight.is_empty() {
                // Nothing in flight: start over instead of growing.
                inner.file.set_len(0).map(|()| inner.len = 0)
            } else {
                // A call still in flight (held): keep just the calls in flight.
                self.rewrite(&mut inner)
            };
            match done {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(file = %self.path.display(), %err, "shrinking the seccomp journal");
                }
            }
        }
        self.append(&mut inner, &Line::Answered(id));
    }
}

impl Drop for NotifJournal {
    /// The supervision ended (every process of the run is gone): nothing
    /// can be waiting any more.
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        // What a crash in the middle of a rewrite would have left.
        let _ = fs::remove_file(self.path.with_extension("jsonl.new"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notif(id: u64) -> libc::seccomp_notif {
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        n.id = id;
        n.pid = 42;
        n.data.nr = 263;
        n.data.args = [1, 2, 3, 4, 5, 6];
        n
    }

    #[test]
    fn what_was_received_and_not_answered_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("ag-journal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let file = path(&dir, "s1");
        let (journal, before) = NotifJournal::open(file.clone()).expect("open");
        assert!(before.is_empty());
        journal.received(&notif(7));
        journal.received(&notif(8));
        journal.received(&notif(9));
        journal.answered(8);
        // A crashed daemon does not run Drop.
        std::mem::forget(journal);
        let mut text = fs::read_to_string(&file).expect("read");
        text.push_str("{\"received\":{\"id\":1"); // torn last line
        fs::write(&file, text).expect("write");

        let (journal, left) = NotifJournal::open(file.clone()).expect("reopen");
        let ids: Vec<u64> = left.iter().map(|n| n.id).collect();
        assert_eq!(ids, [7, 9]);
        assert_eq!(left[0].data.args, [1, 2, 3, 4, 5, 6]);
        assert_eq!(left[0].data.nr, 263);
        journal.answered(7);
        journal.answered(9);
        let (journal, left) = {
            // Nothing is in flight: a successor would resume nothing.
            std::mem::forget(journal);
            NotifJournal::open(file.clone()).expect("reopen")
        };
        assert!(left.is_empty());
        // Past the reset size, answering the last call in flight empties it.
        for id in 100..2_000 {
            journal.received(&notif(id));
            journal.answered(id);
        }
        assert!(
            fs::metadata(&file).expect("stat").len() < RESET_AT,
            "emptied once it grew"
        );
        // A call held all along: the file is rewritten with it alone, in
        // order with what is received after.
        journal.received(&notif(5));
        for id in 3_000..6_000 {
            journal.received(&notif(id));
            journal.answered(id);
        }
        journal.received(&notif(6));
        assert!(
            fs::metadata(&file).expect("stat").len() < RESET_AT + 1_000,
            "rewritten while a call was held"
        );
        std::mem::forget(journal);
        let (journal, left) = NotifJournal::open(file.clone()).expect("reopen");
        let ids: Vec<u64> = left.iter().map(|n| n.id).collect();
        assert_eq!(ids, [5, 6]);
        drop(journal);
        assert!(!file.exists(), "removed when supervision ends");
        let _ = fs::remove_dir_all(&dir);
    }
}
