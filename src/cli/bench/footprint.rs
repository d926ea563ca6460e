//! An idle node's footprint: two nodes that know each other (so heartbeats,
//! pings and periodic digest sync all run) and have nothing to do; the
//! first one's resident memory and CPU time over a minute, read from
//! `/proc`. It runs while the other benchmarks do: a process's CPU time is
//! its own whatever else the machine is doing.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use super::{Ctx, Row, Target};
use crate::cli::local_swarm::{LocalNode, start_swarm};

/// Two idle nodes, and the start of the measured window once it opens.
pub(super) struct Idle {
    nodes: Vec<LocalNode>,
    window: Duration,
    opened: std::sync::mpsc::Receiver<Result<(Instant, f64)>>,
}

/// Let a fresh node settle before the window opens.
const WARM_UP: Duration = Duration::from_secs(5);

pub(super) async fn start(ctx: &Ctx) -> Result<Idle> {
    let dir = ctx.base.join("idle");
    std::fs::create_dir_all(&dir)?;
    let nodes = start_swarm(&dir, "idle-", 2, &ctx.key, "127.0.0.1:0", |_| Vec::new()).await?;
    let pid = nodes[0].pid();
    // The window opens after the warm-up, while the other benchmarks run.
    let (tx, opened) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        std::thread::sleep(WARM_UP);
        let _ = tx.send(cpu_seconds(pid).map(|c| (Instant::now(), c)));
    });
    Ok(Idle {
        nodes,
        window: if ctx.quick {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(60)
        },
        opened,
    })
}

impl Idle {
    /// Wait out what is left of the window and report.
    pub(super) async fn finish(self) -> Result<Vec<Row>> {
        let pid = self.nodes[0].pid();
        let opened = self.opened;
        let (t0, c0) = tokio::task::spawn_blocking(move || opened.recv())
            .await?
            .map_err(|_| anyhow!("the footprint window never opened"))??;
        let left = self.window.saturating_sub(t0.elapsed());
        if !left.is_zero() {
            eprintln!("footprint: {} s more of an idle node…", left.as_secs());
            tokio::time::sleep(left).await;
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = (cpu_seconds(pid)? - c0) / wall * 100.0;
        let rss = status_kib(pid, "VmRSS:")? as f64 / 1024.0;
        let peak = status_kib(pid, "VmHWM:")? as f64 / 1024.0;
        Ok(vec![
            Row::new(
                "8 idle node memory",
                rss,
                "MiB",
                Target::AtMost(30.0),
                format!("resident after {wall:.0} s idle in a 2-node swarm; peak {peak:.1} MiB"),
            ),
            Row::new(
                "8 idle node CPU",
                cpu,
                "% core",
                Target::AtMost(0.5),
                format!("user + system time over {wall:.0} s idle, heartbeats every second"),
            ),
        ])
    }
}

/// User plus system CPU seconds of `pid`, from `/proc/PID/stat`.
pub(super) fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("the node process {pid} is gone"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unreadable /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: f64 = f
        .get(11)
        .zip(f.get(12))
        .and_then(|(u, s)| Some(u.parse::<f64>().ok()? + s.parse::<f64>().ok()?))
        .ok_or_else(|| anyhow!("no CPU times in /proc/{pid}/stat"))?;
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// A `kB` line of `/proc/PID/status`.
fn status_kib(pid: u32, key: &str) -> Result<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no {key} in /proc/{pid}/status"))
}
