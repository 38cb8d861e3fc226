//! `agent-guard doctor` tells an operator where they stand, from probes that
//! load the real programs. Needs: root.
use agent_guard_tests::*;

#[test]
fn doctor_names_what_this_kernel_refuses_and_the_backends() {
    require_root();
    let out = std::process::Command::new(agent_guard_bin())
        .arg("doctor")
        .output()
        .expect("doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[ ok ] cgroup v2"), "{text}");
    assert!(text.contains("[ ok ] cgroup sock_addr programs"), "{text}");
    assert!(
        text.contains("connect and datagrams: cgroup/connect4, connect6, sendmsg4, sendmsg6"),
        "{text}"
    );
    // Every door a kernel cannot close is named, under one heading.
    assert!(text.contains("doors this kernel cannot close:"), "{text}");
    assert!(
        text.contains("raw and packet sockets (SOCK_RAW, AF_PACKET)"),
        "{text}"
    );
    // What a connects budget leaves out, on either backend.
    assert!(
        text.contains("unix sockets and budgets: no budget counts them"),
        "{text}"
    );
    if text.contains("[ ok ] LSM programs") {
        // A kernel with BPF LSM: file operations are guarded host-wide,
        // io_uring's included, and unix sockets by their real path.
        assert!(
            text.contains("unlink, rmdir, rename, link, truncate: BPF LSM, host-wide"),
            "{text}"
        );
        assert!(text.contains("lsm/sb_mount"), "{text}");
        assert!(
            text.contains("unix sockets: lsm/unix_stream_connect"),
            "{text}"
        );
        assert!(
            text.contains("new mount namespaces (unshare -m, setns): no LSM hook"),
            "{text}"
        );
        assert_eq!(out.status.code(), Some(0), "{text}");
    } else {
        assert!(tier() != "vm", "the VM tier's kernel has BPF LSM: {text}");
        // This host's kernel: the refused program type and errno are named,
        // the fallback is stated, and the exit status says "degraded".
        assert!(text.contains("BPF_PROG_TYPE_LSM"), "{text}");
        assert!(text.contains("EPERM") || text.contains("EINVAL"), "{text}");
        assert!(
            text.contains("seccomp supervision, only for processes started with `agent-guard run`"),
            "{text}"
        );
        assert!(
            text.contains("lsm="),
            "tells how to get full enforcement: {text}"
        );
        assert!(
            text.contains("io_uring_setup fails with EPERM in runs unless the agent sets allow_io_uring = true"),
            "{text}"
        );
        assert!(
            text.contains(
                "processes placed in an agent cgroup by other means than `agent-guard run`"
            ),
            "{text}"
        );
        assert_eq!(out.status.code(), Some(2), "{text}");
    }
    // Refusals are events on every backend: the hooks report their own,
    // the observer at system call exit reports Landlock's and the filter's.
    let (reporter, unreported) = if text.contains("[ ok ] LSM programs") {
        (
            "[ ok ] run: reported by the BPF LSM hooks",
            "[note] not reported: SIGIO",
        )
    } else {
        (
            "[ ok ] run: reported from tp_btf/sys_exit",
            "[note] not reported for runs: kill(-1)",
        )
    };
    assert!(text.contains(reporter), "{text}");
    // What is refused without an event is named, not left silent.
    assert!(text.contains(unreported), "{text}");
}

/// The guard's own defences, per backend, each in force or named as a limit.
#[test]
fn doctor_lists_the_protections_of_the_control_plane_and_holds() {
    require_root();
    let out = std::process::Command::new(agent_guard_bin())
        .arg("doctor")
        .output()
        .expect("doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "[ ok ] agents have no say in the control plane",
        "[ ok ] failures do not release enforcement",
        "[ ok ] connect holds bound to the held call",
        "[ ok ] web page callers: no agent process can connect",
        // Closed for adopted cgroups too, on every backend.
        "connect to the approval page or the metrics endpoint (a web token makes an approver):\n    [ ok ] run: refused by cgroup/connect4 and connect6",
        "    [ ok ] adopted: refused by cgroup/connect4 and connect6",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    let pinning = if guard_host::peer::peer_pidfd_supported() {
        "[ ok ] control-plane callers pinned against pid reuse: SO_PEERPIDFD"
    } else {
        "[note] control-plane callers pinned against pid reuse: no SO_PEERPIDFD"
    };
    assert!(text.contains(pinning), "{text}");
    if text.contains("[ ok ] LSM programs") {
        assert!(
            text.contains("[ ok ] LSM delete holds bound to the held call"),
            "{text}"
        );
    } else {
        assert!(
            text.contains("[ ok ] supervised delete holds bound to the held call"),
            "{text}"
        );
    }
}
