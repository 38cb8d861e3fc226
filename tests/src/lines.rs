//! A child's output read line by line, each wait bounded: a test that
//! waits for a line that never comes fails, naming the line, instead of
//! hanging until CI's limit.
use std::{
    io::{BufRead as _, BufReader, Read},
    sync::mpsc,
    thread,
};

use crate::PATIENCE;

pub struct ChildLines {
    rx: mpsc::Receiver<std::io::Result<String>>,
}

impl ChildLines {
    /// Reads `pipe` (a child's stdout) on a thread of its own, which ends
    /// when the pipe closes.
    pub fn new(pipe: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { rx }
    }

    /// The next line, waiting at most [`PATIENCE`]; fails the test, saying
    /// `what` did not come, when the wait runs out or the output ends.
    pub fn next_line(&mut self, what: &str) -> String {
        match self.rx.recv_timeout(PATIENCE) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => panic!("reading the {what}: {e}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("no {what} within {PATIENCE:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the output ended before the {what}")
            }
        }
    }

    /// Every line up to the end of the output, of a child that has exited
    /// (or is about to); each wait is bounded as in [`Self::next_line`].
    pub fn rest(self) -> Vec<String> {
        let mut rest = Vec::new();
        loop {
            match self.rx.recv_timeout(PATIENCE) {
                Ok(Ok(line)) => rest.push(line),
                Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => return rest,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the output did not end within {PATIENCE:?}; so far: {rest:?}")
                }
            }
        }
    }
}
