//! The file sink: append-only, rotated by size. At rotation the current
//! file is flushed and fsynced before it is renamed to FILE.1 (older ones
//! shift up; beyond `keep` they are removed), so a rotated file is complete
//! on disk. Lines are never split across files.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write as _},
    path::PathBuf,
    sync::{atomic::Ordering, mpsc::Receiver},
};

use super::{Line, SinkStats};

pub struct Rotating {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    out: BufWriter<File>,
    size: u64,
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Rotating {
    pub fn open(path: PathBuf, max_bytes: u64, keep: u32) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let f = open_append(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
        let size = f.metadata()?.len();
        Ok(Self {
            path,
            max_bytes,
            keep,
            out: BufWriter::with_capacity(256 * 1024, f),
            size,
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}.{n}", self.path.display()))
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        let _ = fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        fs::rename(&self.path, self.rotated(1))?;
        self.out = BufWriter::with_capacity(256 * 1024, open_append(&self.path)?);
        self.size = 0;
        // The renames are directory entries: make them durable too.
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(line)?;
        self.size += len;
        Ok(())
    }

    pub fn run(&mut self, rx: &Receiver<Line>, stats: &SinkStats) {
        while let Ok(line) = rx.recv() {
            let mut next = Some(line);
            while let Some(line) = next {
                match self.write(&line.bytes) {
                    Ok(()) => {
                        stats.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.write_failed.fetch_add(1, Ordering::Relaxed);
                        stats.set_error(format!("{}: {e}", self.path.display()));
                    }
                }
                next = rx.try_recv().ok();
            }
            if let Err(e) = self.out.flush() {
                stats.set_error(format!("{}: {e}", self.path.display()));
            }
            std::thread::sleep(super::LINGER);
        }
        let _ = self.out.flush();
        let _ = self.out.get_ref().sync_all();
    }
}
