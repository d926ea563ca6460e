//! Tests of the runner with real processes (`sh -c`). Durations are the behaviour's own limits
//! (a 300 ms stall limit, a 500 ms timeout), never waits; a process's death is awaited through a
//! pidfd, which becomes readable when the process exits.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::*;

fn sh(script: &str) -> Invocation {
    Invocation {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        cwd: std::env::temp_dir(),
    }
}

fn limits(timeout: Option<Duration>, stall: Duration) -> Limits {
    Limits {
        deadline: timeout.map(|t| Instant::now() + t),
        timeout,
        stall,
        nice: 0,
    }
}

fn relaxed() -> Limits {
    limits(None, Duration::from_secs(60))
}

/// Runs `inv`, collecting the lines `on_line` saw.
async fn run_collect(inv: &Invocation, limits: &Limits) -> (Ending, Vec<String>, LogBuffer) {
    let mut log = LogBuffer::new();
    let mut lines = Vec::new();
    let cancel = CancellationToken::new();
    let ending = run(inv, limits, &cancel, &mut log, &mut |l: &str| {
        lines.push(l.to_owned())
    })
    .await;
    (ending, lines, log)
}

/// A pidfd for `pid`, or `None` if the process is already gone.
fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a fresh fd that we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the process behind `fd` exits within 30 seconds (generous: on a
/// loaded CI machine a killed process can take seconds to be scheduled).
fn exits(fd: &Option<OwnedFd>) -> bool {
    let Some(fd) = fd else { return true };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis();
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut p, 1, left as libc::c_int) };
        // Other tests' children exiting deliver SIGCHLD to this process,
        // which interrupts poll: wait again rather than report a survivor.
        let interrupted =
            ready < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
        if !interrupted || Instant::now() >= deadline {
            return ready == 1;
        }
    }
}

#[tokio::test]
async fn non_zero_exit_keeps_both_streams() {
    let (ending, lines, log) = run_collect(
        &sh("echo hello; echo 'Error: bad thing' >&2; exit 3"),
        &relaxed(),
    )
    .await;
    assert_eq!(ending, Ending::Exited(3));
    assert!(lines.contains(&"hello".to_owned()), "{lines:?}");
    assert!(lines.contains(&"Error: bad thing".to_owned()), "{lines:?}");
    let text = String::from_utf8(log.to_bytes()).unwrap();
    assert!(text.contains("[swarm] running sh -c"), "{text}");
    assert!(text.contains("exited with code 3"), "{text}");
    let (kind, reason) = ending
        .judge(&relaxed(), "mycmd", Some("Error: bad thing"))
        .unwrap();
    assert_eq!(kind, FailureKind::Exit(3));
    assert_eq!(reason, "Error: bad thing");
}

/// Prints the niceness of the shell (field 19 of `/proc/PID/stat`) as
/// `WHO N`.
#[cfg(target_os = "linux")]
const PRINT_NICE: &str = "read -r _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ n _ < /proc/$$/stat; echo";

#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_engine_and_what_it_starts_run_at_the_niceness_asked() {
    let node = own_nice().unwrap();
    let script = format!("{PRINT_NICE} engine $n; sh -c '{PRINT_NICE} helper $n'");
    for asked in [0, 7, 19] {
        let limits = Limits {
            nice: asked,
            ..relaxed()
        };
        let (ending, lines, _) = run_collect(&sh(&script), &limits).await;
        assert_eq!(ending, Ending::Exited(0), "{lines:?}");
        let want = asked.max(node);
        assert_eq!(lines, [format!("engine {want}"), format!("helper {want}")]);
    }
    assert_eq!(own_nice().unwrap(), node, "the node's own priority is kept");
}

#[tokio::test]
async fn success_is_not_a_failure() {
    let (ending, _, _) = run_collect(&sh("echo ok"), &relaxed()).await;
    assert_eq!(ending, Ending::Exited(0));
    assert_eq!(ending.judge(&relaxed(), "x", None), None);
}

#[tokio::test]
async fn death_by_signal() {
    let (ending, lines, _) = run_collect(&sh("echo before; kill -9 $$"), &relaxed()).await;
    assert_eq!(ending, Ending::Signalled(9));
    assert_eq!(lines, ["before"]);
    let (kind, reason) = ending.judge(&relaxed(), "blender", None).unwrap();
    assert_eq!(kind, FailureKind::Signal(9));
    assert!(reason.contains("out-of-memory"), "{reason}");
}

#[tokio::test]
async fn timeout_kills_a_chatty_process() {
    let lim = limits(Some(Duration::from_millis(500)), Duration::from_secs(60));
    let script = "while :; do echo tick; sleep 0.05; done";
    let (ending, lines, _) = run_collect(&sh(script), &lim).await;
    assert_eq!(ending, Ending::TimedOut);
    assert!(lines.len() > 1, "it was running: {lines:?}");
    let (kind, reason) = ending.judge(&lim, "mycmd", None).unwrap();
    assert_eq!(kind, FailureKind::Timeout);
    assert!(reason.contains("500 ms"), "{reason}");
}

#[tokio::test]
async fn silence_is_a_stall() {
    let lim = limits(Some(Duration::from_secs(60)), Duration::from_millis(300));
    let (ending, lines, _) = run_collect(&sh("echo start; exec sleep 30"), &lim).await;
    assert_eq!(ending, Ending::Stalled);
    assert_eq!(lines, ["start"]);
    let (kind, reason) = ending.judge(&lim, "blender", None).unwrap();
    assert_eq!(kind, FailureKind::Stall);
    assert!(reason.contains("300 ms"), "{reason}");
}

#[tokio::test]
async fn cancel_kills_the_whole_group() {
    let cancel = CancellationToken::new();
    let mut child_fd = None;
    let mut seen_pid = false;
    let mut log = LogBuffer::new();
    let inv = sh("sleep 30 & echo $!; wait");
    let ending = run(&inv, &relaxed(), &cancel, &mut log, &mut |l: &str| {
        if let Ok(pid) = l.trim().parse::<i32>() {
            child_fd = pidfd(pid);
            seen_pid = true;
            cancel.cancel();
        }
    })
    .await;
    assert_eq!(ending, Ending::Cancelled);
    assert!(seen_pid);
    assert!(
        exits(&child_fd),
        "the shell's child `sleep` survived the cancel"
    );
}

#[tokio::test]
async fn dropping_the_future_kills_the_whole_group() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let cancel = CancellationToken::new();
    let mut log = LogBuffer::new();
    let inv = sh("sleep 30 & echo $!; wait");
    let lim = relaxed();
    let mut on_line = |l: &str| {
        if let (Ok(pid), Some(tx)) = (l.trim().parse::<i32>(), tx.take()) {
            let _ = tx.send(pidfd(pid));
        }
    };
    let fd = tokio::select! {
        _ = run(&inv, &lim, &cancel, &mut log, &mut on_line) => panic!("the render ended by itself"),
        fd = rx => fd.unwrap(),
    };
    assert!(exits(&fd), "a dropped render left its child running");
}

#[tokio::test]
async fn strays_of_a_finished_process_are_killed() {
    // The shell exits at once; its background child holds the output pipe open.
    let mut fd = None;
    let mut log = LogBuffer::new();
    let cancel = CancellationToken::new();
    let inv = sh("sleep 30 & echo $!");
    let ending = run(&inv, &relaxed(), &cancel, &mut log, &mut |l: &str| {
        if let Ok(pid) = l.trim().parse::<i32>() {
            fd = pidfd(pid);
        }
    })
    .await;
    assert_eq!(ending, Ending::Exited(0));
    assert!(exits(&fd), "the stray `sleep` survived");
}

#[tokio::test]
async fn spawn_failure_names_the_program() {
    let inv = Invocation {
        program: "/nonexistent/renderer".into(),
        args: vec![],
        cwd: std::env::temp_dir(),
    };
    let (ending, _, _) = run_collect(&inv, &relaxed()).await;
    let Ending::SpawnFailed(why) = &ending else {
        panic!("{ending:?}")
    };
    assert!(why.contains("/nonexistent/renderer"), "{why}");
    assert_eq!(
        ending.judge(&relaxed(), "x", None).unwrap().0,
        FailureKind::Spawn
    );
}

#[tokio::test]
async fn lines_split_on_cr_lf_and_crlf_and_decode_lossily() {
    let script = r"printf 'a\rb\r\nc\n\n\377x\nlast'";
    let (ending, lines, _) = run_collect(&sh(script), &relaxed()).await;
    assert_eq!(ending, Ending::Exited(0));
    assert_eq!(lines, ["a", "b", "c", "", "\u{fffd}x", "last"]);
}

#[tokio::test]
async fn huge_lines_are_capped() {
    let script = "head -c 300000 /dev/zero | tr '\\0' 'x'; echo; echo after";
    let (ending, lines, _) = run_collect(&sh(script), &relaxed()).await;
    assert_eq!(ending, Ending::Exited(0));
    assert_eq!(lines.len(), 2, "{}", lines.len());
    assert!(lines[0].starts_with(&"x".repeat(MAX_LINE)));
    assert!(lines[0].ends_with(&format!(
        "[... {} more bytes of this line dropped]",
        300_000 - MAX_LINE
    )));
    assert_eq!(lines[1], "after");
}

#[test]
fn durations_read_like_a_person_wrote_them() {
    assert_eq!(human(Duration::from_millis(300)), "300 ms");
    assert_eq!(human(Duration::from_millis(4500)), "4.5 s");
    assert_eq!(human(Duration::from_secs(600)), "10 min");
    assert_eq!(human(Duration::from_secs(90)), "1 min 30 s");
}

#[test]
fn command_lines_are_quoted_for_the_log() {
    let inv = Invocation {
        program: "blender".into(),
        args: vec![
            "-b".into(),
            "/my scene.blend".into(),
            "-o".into(),
            "/out/frame_####".into(),
        ],
        cwd: "/".into(),
    };
    assert_eq!(
        inv.display(),
        "blender -b '/my scene.blend' -o /out/frame_####"
    );
}
