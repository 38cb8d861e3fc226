//! A supervisor that dies while a call is held, with another copy of the
//! listener kept open (as the `run` launcher does): the call stays held, and
//! a successor that knows the notification from the journal answers it.
use std::sync::{Arc, Mutex};

use tokio::{io::AsyncWriteExt as _, time::timeout};

use super::harness::{Hold, LIVENESS, Policy, TestDir, python, results, spawn_guarded, stderr};
use crate::supervise::{Journal, Resume, supervise_resuming};

/// Notifications received and not answered, as the daemon's journal keeps them.
#[derive(Default)]
struct Memory(Mutex<Vec<libc::seccomp_notif>>);

impl Journal for Memory {
    fn received(&self, notif: &libc::seccomp_notif) {
        self.0.lock().expect("lock").push(*notif);
    }
    fn answered(&self, id: u64) {
        self.0.lock().expect("lock").retain(|n| n.id != id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_answers_the_call_its_predecessor_held() {
    let dir = TestDir::new("resume");
    let held = dir.make("held.txt");
    let after = dir.make("after.txt");
    let (hold, mut called) = Hold::new(&held);
    let script = r#"
t("held", lambda: os.unlink(os.path.join(D, "held.txt")))
sys.stdin.readline()
t("after", lambda: os.unlink(os.path.join(D, "after.txt")))
"#;
    let mut command = python(script, dir.path());
    command.stdin(std::process::Stdio::piped());
    let (mut child, listener) = spawn_guarded(command).await;
    let kept = listener.try_clone().expect("dup of the listener");
    let journal = Arc::new(Memory::default());
    let first = tokio::spawn(supervise_resuming(
        listener,
        Policy::holding(hold),
        Resume {
            journal: Some(journal.clone()),
            received: Vec::new(),
        },
    ));
    timeout(LIVENESS, called.recv())
        .await
        .expect("held call reached the decider");
    first.abort();
    assert!(first.await.expect_err("aborted").is_cancelled());

    // The held call neither failed nor happened: it waits for an answer.
    let unanswered = journal.0.lock().expect("lock").clone();
    assert_eq!(unanswered.len(), 1, "the journal has the held call");
    assert!(held.exists());
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the caller still waits"
    );

    let successor = Policy::deny(&[]);
    let second = tokio::spawn(supervise_resuming(
        kept,
        successor.clone(),
        Resume {
            journal: Some(journal.clone()),
            received: unanswered,
        },
    ));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").await.expect("write");
    drop(stdin);
    let out = timeout(LIVENESS, child.wait_with_output())
        .await
        .expect("exit")
        .expect("output");
    let r = results(&out);
    assert_eq!(r.get("held"), Some(&0), "{}", stderr(&out));
    assert_eq!(r.get("after"), Some(&0));
    assert!(!held.exists() && !after.exists());
    assert_eq!(
        successor.seen_paths(),
        [
            held.to_str().expect("utf-8"),
            after.to_str().expect("utf-8")
        ],
        "the successor decided the resumed call first, then the new one"
    );
    timeout(LIVENESS, second)
        .await
        .expect("supervisor ended once the child was gone")
        .expect("no panic")
        .expect("clean end");
    assert!(
        journal.0.lock().expect("lock").is_empty(),
        "every call answered"
    );
}
