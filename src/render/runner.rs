//! The task runner: start an engine process, watch it, and stop it — all of it — when it must stop.
//!
//! Shape and reasons:
//! - The process gets its own process group (`process_group(0)`): renderers fork helpers
//!   (Blender's Python, a `sh -c` script's children), and killing only the leader would leave
//!   them burning the node's cores. Every stop signals the whole group: SIGTERM, a short grace,
//!   then SIGKILL. A guard kills the group if the future is dropped, so no orphan survives a
//!   node that gives up on a render.
//! - stdout and stderr are read concurrently by two small tasks that split lines on `\n` or `\r`
//!   (progress bars), cap each line and hand raw bytes over a channel; the watcher decodes them
//!   lossily for the engine's parser and keeps them in the capped log.
//! - Timeout (per task), stall (no output line for `stall`) and cancel are checked in one
//!   `select!` with the process exit; the exit code is reported, never trusted (the caller checks
//!   the output files).

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::FailureKind;
use super::log::{LogBuffer, MAX_LINE};

/// Between SIGTERM and SIGKILL: long enough for a renderer to remove its temp files.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long to keep reading output after the process ended (a stray that escaped the group may
/// hold the pipes open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// A program and its arguments, run in `cwd`.
#[derive(Debug, Clone)]
pub(crate) struct Invocation {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) cwd: PathBuf,
}

impl Invocation {
    /// The command line as a person reads it (for the log).
    pub(crate) fn display(&self) -> String {
        let mut words = vec![quote(&self.program)];
        words.extend(self.args.iter().map(quote));
        words.join(" ")
    }
}

fn quote(word: &OsString) -> String {
    let text = word.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./,:=@%+#".contains(c));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The limits of one task.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// When the task's time is up (shared by all processes of the task).
    pub(crate) deadline: Option<Instant>,
    /// The timeout the deadline came from, for the reason text.
    pub(crate) timeout: Option<Duration>,
    /// Longest silence allowed.
    pub(crate) stall: Duration,
    /// The niceness the engine's processes run at, at least (0-19; 0 leaves
    /// them as the node is).
    pub(crate) nice: i32,
}

/// How a process run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    Exited(i32),
    Signalled(i32),
    TimedOut,
    Stalled,
    Cancelled,
    SpawnFailed(String),
    /// Waiting for the process failed; it was killed.
    Lost(String),
}

impl Ending {
    /// The failure this ending is, if any; `error` is the best error line the engine printed.
    pub(crate) fn judge(
        &self,
        limits: &Limits,
        engine: &str,
        error: Option<&str>,
    ) -> Option<(FailureKind, String)> {
        let with_error = |base: String| match error {
            Some(e) => format!("{base}; last error: {e}"),
            None => base,
        };
        Some(match self {
            Ending::Exited(0) => return None,
            Ending::Exited(code) => (
                FailureKind::Exit(*code),
                error.map_or_else(
                    || format!("{engine} exited with code {code} without printing an error; see the log"),
                    str::to_owned,
                ),
            ),
            Ending::Signalled(sig) => (FailureKind::Signal(*sig), with_error(signal_reason(engine, *sig))),
            Ending::TimedOut => (
                FailureKind::Timeout,
                with_error(format!(
                    "{engine} ran past the task timeout of {}",
                    human(limits.timeout.unwrap_or_default())
                )),
            ),
            Ending::Stalled => (
                FailureKind::Stall,
                with_error(format!(
                    "{engine} printed nothing for {} (the node's stall limit) and was killed; \
                     raise the stall limit if this scene is silent that long",
                    human(limits.stall)
                )),
            ),
            Ending::Cancelled => (FailureKind::Cancelled, "cancelled by the node".into()),
            Ending::SpawnFailed(why) => (FailureKind::Spawn, why.clone()),
            Ending::Lost(why) => (FailureKind::EngineError, why.clone()),
        })
    }
}

fn signal_reason(engine: &str, sig: i32) -> String {
    let what = match sig {
        libc::SIGKILL => "SIGKILL; often the kernel's out-of-memory killer",
        libc::SIGSEGV => "SIGSEGV; it crashed",
        libc::SIGABRT => "SIGABRT; it aborted",
        libc::SIGBUS => "SIGBUS; it crashed",
        libc::SIGILL => "SIGILL; it crashed",
        libc::SIGFPE => "SIGFPE; it crashed",
        libc::SIGTERM => "SIGTERM; something outside the farm stopped it",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    };
    format!("{engine} was killed by signal {sig} ({what})")
}

/// A duration as a person writes it: `300 ms`, `4.5 s`, `10 min`, `1 min 30 s`.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{} s", (ms as f64 / 100.0).round() / 10.0)
    } else {
        let (min, s) = (d.as_secs() / 60, d.as_secs() % 60);
        if s == 0 {
            format!("{min} min")
        } else {
            format!("{min} min {s} s")
        }
    }
}

/// Runs `inv` to its end; every output line goes to `log` and then to `on_line`.
pub(crate) async fn run(
    inv: &Invocation,
    limits: &Limits,
    cancel: &CancellationToken,
    log: &mut LogBuffer,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Ending {
    log.note(&format!("running {}", inv.display()));
    let mut child = match spawn(inv, limits.nice) {
        Ok((child, None)) => child,
        Ok((child, Some(why))) => {
            log.note(&why);
            child
        }
        Err(e) => {
            let why = format!("could not start {}: {e}", inv.program.to_string_lossy());
            log.note(&why);
            return Ending::SpawnFailed(why);
        }
    };
    let mut group = ProcessGroup::of(&child);
    let (tx, mut rx) = mpsc::channel(256);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(AbortOnDropHandle::new(tokio::spawn(pump(out, tx.clone()))));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(AbortOnDropHandle::new(tokio::spawn(pump(err, tx.clone()))));
    }
    drop(tx);
    let ending = match watch(&mut child, &mut rx, limits, cancel, log, on_line).await {
        Watched::Exited(status) => {
            // Strays left in the group by a finished engine are killed too.
            group.signal(libc::SIGKILL);
            status_ending(status)
        }
        Watched::Stop(ending) => {
            stop(&mut child, &group).await;
            ending
        }
    };
    drain(&mut rx, log, on_line).await;
    group.disarm();
    drop(readers);
    log.note(&describe(&ending));
    ending
}

/// Starts `inv` at niceness `nice`, or at the node's own if that is higher
/// (a node started niced keeps its renders as low). Where the niceness
/// cannot be set (a sandbox that forbids it), the engine runs as the node
/// does, and the note returned says why.
///
/// On Linux a process is born with the niceness of the thread that starts
/// it, and an unprivileged thread can raise its own but never lower it
/// again; so a niced engine is started from a short-lived thread of its
/// own, niced first (a tenth of a millisecond). Renicing the engine once it
/// runs would race with it: it may have forked helpers or read its
/// priority by then.
#[cfg(target_os = "linux")]
fn spawn(inv: &Invocation, nice: i32) -> io::Result<(Child, Option<String>)> {
    if own_nice().is_ok_and(|own| nice <= own) {
        return Ok((spawn_here(inv)?, None));
    }
    let runtime = tokio::runtime::Handle::current();
    std::thread::scope(|s| {
        let starter = std::thread::Builder::new()
            .name("engine-start".into())
            .spawn_scoped(s, || {
                let _entered = runtime.enter();
                let note = set_own_nice(nice).err().map(|e| e.to_string());
                Ok((spawn_here(inv)?, note))
            })?;
        starter
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the thread starting the engine panicked")))
    })
}

/// Elsewhere a niceness belongs to the whole process, not to a thread: the
/// engine is reniced right after its start (a helper it forks in that
/// moment keeps the node's priority).
#[cfg(not(target_os = "linux"))]
fn spawn(inv: &Invocation, nice: i32) -> io::Result<(Child, Option<String>)> {
    let child = spawn_here(inv)?;
    let Some(pid) = child.id().filter(|_| nice > 0) else {
        return Ok((child, None));
    };
    // SAFETY: changes only the scheduling priority of our own child.
    let set = unsafe { libc::setpriority(libc::PRIO_PROCESS as _, pid as libc::id_t, nice) };
    let note = (set != 0).then(|| not_reniced(nice));
    Ok((child, note))
}

/// This thread's niceness (the node's own, unless one of its threads was
/// reniced alone).
#[cfg(target_os = "linux")]
pub(crate) fn own_nice() -> io::Result<i32> {
    // getpriority may return -1 as a niceness: only errno tells an error.
    // SAFETY: errno is this thread's own; getpriority only reads.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS as _, 0)
    };
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(errno) if errno != 0 && nice == -1 => Err(err),
        _ => Ok(nice),
    }
}

/// Sets this thread's niceness (on Linux, `PRIO_PROCESS` with 0 is the
/// calling thread).
#[cfg(target_os = "linux")]
fn set_own_nice(nice: i32) -> io::Result<()> {
    // SAFETY: changes only the calling thread's scheduling weight.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS as _, 0, nice) } == 0 {
        Ok(())
    } else {
        Err(io::Error::other(not_reniced(nice)))
    }
}

/// The render log's note when `setpriority` just refused `nice`.
fn not_reniced(nice: i32) -> String {
    format!(
        "could not lower the engine's priority to nice {nice} ({}); it runs as the node does",
        io::Error::last_os_error()
    )
}

fn spawn_here(inv: &Invocation) -> io::Result<Child> {
    Command::new(&inv.program)
        .args(&inv.args)
        .current_dir(&inv.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

enum Watched {
    Exited(io::Result<ExitStatus>),
    Stop(Ending),
}

async fn watch(
    child: &mut Child,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    limits: &Limits,
    cancel: &CancellationToken,
    log: &mut LogBuffer,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Watched {
    let mut stall_at = after(limits.stall);
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Watched::Stop(Ending::Cancelled),
            () = until(limits.deadline) => return Watched::Stop(Ending::TimedOut),
            () = sleep_until(stall_at) => return Watched::Stop(Ending::Stalled),
            status = child.wait() => return Watched::Exited(status),
            line = rx.recv(), if open => match line {
                Some(line) => {
                    stall_at = after(limits.stall);
                    take_line(&line, log, on_line);
                }
                None => open = false,
            },
        }
    }
}

/// Now plus `d`, saturating (a configured stall of `Duration::MAX` must not overflow).
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Resolves at `deadline`, or never.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn take_line(line: &[u8], log: &mut LogBuffer, on_line: &mut (dyn FnMut(&str) + Send)) {
    log.push_line(line);
    on_line(&String::from_utf8_lossy(line));
}

/// SIGTERM to the group, a grace, SIGKILL to the group, reap the leader.
async fn stop(child: &mut Child, group: &ProcessGroup) {
    group.signal(libc::SIGTERM);
    let _ = timeout(TERM_GRACE, child.wait()).await;
    group.signal(libc::SIGKILL);
    // A leader in uninterruptible sleep (a dead NFS mount) could take long; kill_on_drop and
    // tokio's orphan reaper take over if it does.
    let _ = timeout(TERM_GRACE, child.wait()).await;
}

/// Reads what is left in the pipes once the process ended, for a bounded time.
async fn drain(
    rx: &mut mpsc::Receiver<Vec<u8>>,
    log: &mut LogBuffer,
    on_line: &mut (dyn FnMut(&str) + Send),
) {
    let until = Instant::now() + DRAIN_GRACE;
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => take_line(&line, log, on_line),
                None => return,
            },
            () = sleep_until(until) => {
                log.note("output pipes still open after the process ended; stopped reading");
                return;
            }
        }
    }
}

fn status_ending(status: io::Result<ExitStatus>) -> Ending {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Ending::Exited(code),
            (None, Some(sig)) => Ending::Signalled(sig),
            (None, None) => Ending::Lost(format!("the process ended in an unknown way: {status}")),
        },
        Err(e) => Ending::Lost(format!("lost track of the process: {e}")),
    }
}

fn describe(ending: &Ending) -> String {
    match ending {
        Ending::Exited(code) => format!("process exited with code {code}"),
        Ending::Signalled(sig) => format!("process killed by signal {sig}"),
        Ending::TimedOut => "task timeout reached; process group killed".into(),
        Ending::Stalled => "no output for the stall limit; process group killed".into(),
        Ending::Cancelled => "cancelled; process group killed".into(),
        Ending::SpawnFailed(why) | Ending::Lost(why) => why.clone(),
    }
}

/// Splits a stream into capped lines on `\n`, `\r` or `\r\n` and sends them as raw bytes.
async fn pump<R: AsyncRead + Unpin>(stream: R, tx: mpsc::Sender<Vec<u8>>) {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line = Vec::new();
    let mut dropped = 0usize;
    let mut after_cr = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let mut start = 0;
        if after_cr && buf.first() == Some(&b'\n') {
            start = 1;
        }
        after_cr = false;
        let rest = buf.get(start..).unwrap_or_default();
        let (taken, ended) = match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(i) => {
                after_cr = rest.get(i) == Some(&b'\r');
                (i, true)
            }
            None => (rest.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len()).min(taken);
        line.extend_from_slice(rest.get(..room).unwrap_or_default());
        dropped += taken - room;
        reader.consume(start + taken + usize::from(ended));
        if ended && tx.send(finish_line(&mut line, &mut dropped)).await.is_err() {
            return;
        }
    }
    if !line.is_empty() || dropped > 0 {
        let _ = tx.send(finish_line(&mut line, &mut dropped)).await;
    }
}

fn finish_line(line: &mut Vec<u8>, dropped: &mut usize) -> Vec<u8> {
    let mut out = std::mem::take(line);
    if *dropped > 0 {
        out.extend_from_slice(
            format!(" [... {} more bytes of this line dropped]", *dropped).as_bytes(),
        );
        *dropped = 0;
    }
    out
}

/// The engine's process group; kills it when dropped while armed.
struct ProcessGroup {
    pgid: Option<libc::pid_t>,
}

impl ProcessGroup {
    fn of(child: &Child) -> ProcessGroup {
        let pgid = child
            .id()
            .and_then(|pid| libc::pid_t::try_from(pid).ok())
            // Never 0 or 1: killpg(0) would hit the node's own group, killpg(1) init's.
            .filter(|&pid| pid > 1);
        ProcessGroup { pgid }
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pgid) = self.pgid {
            // SAFETY: killpg only sends a signal; pgid is the group our child leads (> 1).
            unsafe {
                libc::killpg(pgid, sig);
            }
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
