//! `swarm bench`: how close the swarm comes to an ideal farm, measured on
//! real node processes on this machine.
//!
//! Every figure is a ratio against something measured in the same run, or
//! an absolute figure with the reason it can stand alone (a latency on
//! loopback, an idle node's footprint), because the machines this runs on
//! are shared and noisy. The benchmarks:
//!
//! - `farm` (one swarm of 8 nodes, [`farm`]): scheduling efficiency (ideal
//!   over actual makespan of 200 × 200 ms tasks), claim latency (submit on
//!   one node to the engine starting on another), dispatch throughput (a
//!   ~0 ms engine), wasted renders, and failover after `kill -9`.
//! - `transfer` ([`transfer`]): a scene pulled by one node against raw
//!   bytes over the same connection, one node to seven, and dedup.
//! - `links` ([`links`]): one node to seven again, each node in a network
//!   namespace of its own behind a link shaped to a studio's kind of speed,
//!   where the network, not this machine's cores, is the limit.
//! - `footprint` ([`footprint`]): an idle node's memory and CPU.
//! - `blender` ([`blender`]): a Blender job through the farm against
//!   Blender run directly.
//!
//! The table goes to stdout (or JSON with `--json`) and, as markdown with
//! the machine and the command, between two markers in `BENCHMARKS.md`, so
//! the analysis written around it survives a re-run.

mod blender;
mod farm;
mod footprint;
mod links;
mod transfer;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use super::{Api, BadInput};
use crate::ledger::JobStatus;
use crate::node::views::JobView;

/// Every benchmark group, in the order they run.
const GROUPS: [&str; 5] = ["farm", "transfer", "links", "footprint", "blender"];

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Run only these groups (comma-separated): farm, transfer, links, footprint, blender.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Small sizes, to check the harness works (figures mean little).
    #[arg(long)]
    pub quick: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the markdown table into this file ("-" for none).
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub write: String,
    /// The Blender for the Blender benchmark (default: `blender` on PATH).
    #[arg(long)]
    pub blender: Option<PathBuf>,
    /// The transfer scene's size in MiB.
    #[arg(long, default_value_t = 1024)]
    pub transfer_mib: u64,
    /// Keep the nodes' data folders and logs (their path is printed).
    #[arg(long)]
    pub keep: bool,
    /// The speed of each node's link in the `links` group, in Mbit/s each way.
    #[arg(long, default_value_t = 100)]
    pub link_mbit: u32,
    /// The scene's size in MiB in the `links` group.
    #[arg(long, default_value_t = 64)]
    pub link_mib: u64,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The benchmark, as numbered in the issue that asked for it.
    pub bench: String,
    pub value: f64,
    pub unit: String,
    /// The target, in words ("≥ 0.97").
    pub target: String,
    /// Whether the target was met; `None` where there is no target.
    pub met: Option<bool>,
    /// What the figure is made of.
    pub detail: String,
}

impl Row {
    fn new(bench: &str, value: f64, unit: &str, target: Target, detail: String) -> Row {
        Row {
            bench: bench.to_string(),
            value,
            unit: unit.to_string(),
            target: target.describe(),
            met: target.check(value),
            detail,
        }
    }

    /// A benchmark this machine cannot run, and `why`: no figure, no verdict.
    fn not_run(bench: &str, unit: &str, target: Target, why: String) -> Row {
        Row {
            met: None,
            ..Row::new(bench, f64::NAN, unit, target, why)
        }
    }
}

/// What a figure should be.
#[derive(Clone, Copy)]
enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    fn check(self, v: f64) -> Option<bool> {
        match self {
            Target::AtLeast(t) => Some(v >= t),
            Target::AtMost(t) => Some(v <= t),
        }
    }

    fn describe(self) -> String {
        match self {
            Target::AtLeast(t) => format!("≥ {t}"),
            Target::AtMost(t) => format!("≤ {t}"),
        }
    }
}

/// What the benchmarks share.
struct Ctx {
    base: PathBuf,
    key: PathBuf,
    quick: bool,
}

/// The machine the figures came from.
#[derive(Debug, Serialize)]
struct Machine {
    cpu: String,
    cores: usize,
    memory_gib: f64,
    kernel: String,
    build: &'static str,
    version: &'static str,
    /// Of all CPU time over the run, the share the hypervisor gave to other
    /// guests (`steal` in `/proc/stat`), in per cent: how much a shared VM
    /// slowed this run. `None` where the kernel does not say.
    stolen_percent: Option<f64>,
}

#[derive(Serialize)]
struct Report<'a> {
    machine: &'a Machine,
    command: String,
    seconds: f64,
    rows: &'a [Row],
}

pub async fn run(args: BenchArgs) -> Result<i32> {
    for g in &args.only {
        if !GROUPS.contains(&g.as_str()) {
            return Err(BadInput(format!(
                "--only `{g}` is not a benchmark; choose from {}",
                GROUPS.join(", ")
            ))
            .into());
        }
    }
    BadInput::check_range("--transfer-mib", args.transfer_mib, 1, 16 * 1024)?;
    BadInput::check_range("--link-mbit", args.link_mbit, 1, 100_000)?;
    BadInput::check_range("--link-mib", args.link_mib, 1, 16 * 1024)?;
    let want = |g: &str| args.only.is_empty() || args.only.iter().any(|o| o == g);
    let base = std::env::temp_dir().join(format!("renderswarm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let key = super::local_swarm::write_key(&base)?;
    let ctx = Ctx {
        base: base.clone(),
        key,
        quick: args.quick,
    };
    let started = Instant::now();
    let cpu_before = CpuTimes::read();
    let rows = match run_groups(&ctx, &args, &want).await {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("the nodes' data and logs are kept in {}", base.display());
            return Err(e);
        }
    };
    if args.keep {
        eprintln!("the nodes' data and logs are kept in {}", base.display());
    } else {
        let _ = std::fs::remove_dir_all(&base);
    }
    let mut machine = machine();
    machine.stolen_percent = cpu_before
        .zip(CpuTimes::read())
        .and_then(|(a, b)| b.stolen_since(&a));
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = Report {
        machine: &machine,
        command,
        seconds: started.elapsed().as_secs_f64(),
        rows: &rows,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&rows));
    }
    if args.write != "-" {
        write_markdown(Path::new(&args.write), &report)?;
        eprintln!("wrote the table into {}", args.write);
    }
    Ok(0)
}

async fn run_groups(ctx: &Ctx, args: &BenchArgs, want: &dyn Fn(&str) -> bool) -> Result<Vec<Row>> {
    // The idle node is measured alongside the rest: its CPU time is its own
    // whatever else the machine does, and the minute it needs is not added.
    let idle = if want("footprint") {
        Some(footprint::start(ctx).await?)
    } else {
        None
    };
    let mut rows = Vec::new();
    if want("farm") {
        rows.extend(farm::run(ctx).await?);
    }
    if want("transfer") {
        rows.extend(transfer::run(ctx, args.transfer_mib).await?);
    }
    if want("links") {
        rows.extend(links::run(ctx, args.link_mib, args.link_mbit).await?);
    }
    if want("blender") {
        rows.extend(blender::run(ctx, args.blender.as_deref()).await?);
    }
    if let Some(idle) = idle {
        rows.extend(idle.finish().await?);
    }
    Ok(rows)
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<34} {:>12} {:<6} {:<9} {:<4} {}\n",
        "benchmark", "figure", "unit", "target", "met", "detail"
    ));
    for r in rows {
        out.push_str(&format!(
            "{:<34} {:>12} {:<6} {:<9} {:<4} {}\n",
            r.bench,
            figure(r.value),
            r.unit,
            r.target,
            met(r.met),
            r.detail
        ));
    }
    out
}

fn figure(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "",
    }
}

const BEGIN: &str = "<!-- swarm bench: begin (generated; edit around it) -->";
const END: &str = "<!-- swarm bench: end -->";

/// Put the table between the markers in `path`, keeping what is around it.
fn write_markdown(path: &Path, report: &Report<'_>) -> Result<()> {
    let m = report.machine;
    let mut md = format!(
        "{BEGIN}\n\nMeasured {} with `{}` ({} build, {:.0} s) on {} × {} ({:.0} GiB, Linux {}), renderswarm {}{}.\n\n",
        utc_now(),
        report.command,
        m.build,
        report.seconds,
        m.cores,
        m.cpu,
        m.memory_gib,
        m.kernel,
        m.version,
        m.stolen_percent.map_or(String::new(), |p| format!(
            "; the hypervisor gave {p:.1} % of the CPU time to other guests during the run (steal)"
        )),
    );
    md.push_str("| benchmark | figure | unit | target | met | detail |\n");
    md.push_str("|---|---:|---|---|---|---|\n");
    for r in report.rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.bench,
            figure(r.value),
            r.unit,
            r.target,
            met(r.met),
            r.detail.replace('|', "\\|")
        ));
    }
    md.push_str(&format!("\n{END}\n"));
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if a < b => {
            format!(
                "{}{}{}",
                &old[..a],
                md,
                old[b + END.len()..].trim_start_matches('\n')
            )
        }
        _ if old.is_empty() => format!("# Benchmarks\n\n{md}"),
        _ => format!("{}\n{md}", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}

fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: mem_kib / (1024.0 * 1024.0),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        version: env!("CARGO_PKG_VERSION"),
        stolen_percent: None,
    }
}

/// The whole machine's CPU time so far, from the first line of
/// `/proc/stat`, in clock ticks.
#[derive(Debug, PartialEq)]
struct CpuTimes {
    total: u64,
    steal: u64,
}

impl CpuTimes {
    fn read() -> Option<CpuTimes> {
        CpuTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// `cpu  user nice system idle iowait irq softirq steal ...`
    fn parse(stat: &str) -> Option<CpuTimes> {
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        Some(CpuTimes {
            // guest and guest_nice (fields 9, 10) are counted in user and
            // nice already.
            total: fields.iter().take(8).sum(),
            steal: *fields.get(7)?,
        })
    }

    fn stolen_since(&self, before: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(before.total).filter(|&t| t > 0)?;
        let steal = self.steal.checked_sub(before.steal)?;
        Some(100.0 * steal as f64 / total as f64)
    }
}

fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs % 86_400 / 3600,
        secs % 3600 / 60
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Wall clock in nanoseconds, comparable with `date +%s%N` in an engine.
fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Poll a job's summary (no task list: cheap for the node; see
/// [`poll_interval`] for how often) until it is Done, then return it in
/// full.
async fn wait_done(api: &Api, id: &str, within: Duration, what: &str) -> Result<JobView> {
    wait_polling(
        api,
        &format!("/jobs/{id}?tasks=false"),
        id,
        within,
        what,
        |j| j.status == JobStatus::Done,
    )
    .await?;
    api.get(&format!("/jobs/{id}")).await
}

/// Poll a job on `api` until `done` holds, as often as [`poll_interval`]
/// says.
async fn wait_job(
    api: &Api,
    id: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&JobView) -> bool,
) -> Result<JobView> {
    wait_polling(api, &format!("/jobs/{id}"), id, within, what, done).await
}

async fn wait_polling(
    api: &Api,
    path: &str,
    id: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&JobView) -> bool,
) -> Result<JobView> {
    let began = Instant::now();
    let deadline = began + within;
    loop {
        // A node asked about a job submitted elsewhere may not have heard
        // of it yet: ask again until the deadline.
        let job: JobView = match api.get(path).await {
            Ok(job) => job,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => {
                tokio::time::sleep(poll_interval(began.elapsed())).await;
                continue;
            }
        };
        if done(&job) {
            return Ok(job);
        }
        if matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) {
            let why = job
                .tasks
                .iter()
                .flatten()
                .find_map(|t| t.reason.clone())
                .unwrap_or_default();
            bail!(
                "{what}: job {} is {:?}: {why}",
                &id[..12.min(id.len())],
                job.status
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: job {} still {:?} after {} s ({} of {} frames done)",
                &id[..12.min(id.len())],
                job.status,
                within.as_secs(),
                job.frames_done,
                job.frames_total
            );
        }
        tokio::time::sleep(poll_interval(began.elapsed())).await;
    }
}

/// How long to wait before asking about a job again, `waited` into the
/// wait: 10 ms at first, then a two-hundredth of the wait so far, up to
/// 100 ms. Each answer costs the node a pass over the job's tasks and an
/// HTTP reply: at 10 ms throughout, answering took ~5 % of the submitting
/// node's samples in a `perf` profile of it during the dispatch job, which
/// is the benchmark's cost, not the farm's. The time measured is late by
/// at most the interval: 0.5 % of a wait longer than 2 s.
fn poll_interval(waited: Duration) -> Duration {
    (waited / 200).clamp(Duration::from_millis(10), Duration::from_millis(100))
}

/// A counter from a node's `/metrics`: the sum of its samples whose labels
/// contain `labels` (`""` for all).
async fn metric(api: &Api, name: &str, labels: &str) -> Result<u64> {
    let text = api.metrics().await?;
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with(['{', ' ']) && rest.contains(labels))
        .filter_map(|rest| rest.rsplit(' ').next()?.trim().parse().ok())
        .collect();
    if values.is_empty() {
        bail!("{}/metrics has no {name}{labels}", api.base());
    }
    Ok(values.iter().sum::<f64>() as u64)
}

/// The median and the 99th percentile of `v` (sorted here).
fn median_p99(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (quantile(v, 0.5), quantile(v, 0.99))
}

/// The `q` quantile (nearest rank) of `sorted`; NaN when it is empty.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_percentiles() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let mut v: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        let (m, p) = median_p99(&mut v);
        assert_eq!((m, p), (51.0, 99.0));
    }

    #[test]
    fn polling_slows_as_the_wait_grows_within_bounds() {
        let ms = |m| Duration::from_millis(m);
        assert_eq!(poll_interval(ms(0)), ms(10));
        assert_eq!(poll_interval(ms(1_000)), ms(10));
        assert_eq!(poll_interval(ms(6_000)), ms(30));
        assert_eq!(poll_interval(ms(600_000)), ms(100));
    }

    #[test]
    fn targets_are_checked_both_ways() {
        assert_eq!(Target::AtLeast(0.97).check(0.98), Some(true));
        assert_eq!(Target::AtLeast(0.97).check(0.9), Some(false));
        assert_eq!(Target::AtMost(3.0).check(3.5), Some(false));
    }

    #[test]
    fn stolen_time_is_a_share_of_all_cpu_time_between_two_readings() {
        let before = CpuTimes::parse("cpu  100 0 50 800 10 0 5 35 7 0\ncpu0 1 2 3\n").unwrap();
        assert_eq!(
            before,
            CpuTimes {
                total: 1000,
                steal: 35
            },
            "guest time is in user time already"
        );
        let after = CpuTimes::parse("cpu  300 0 100 1350 10 0 5 235 9 0\n").unwrap();
        assert_eq!(after.stolen_since(&before), Some(20.0));
        assert_eq!(before.stolen_since(&before), None, "no time passed");
        assert_eq!(CpuTimes::parse("intr 5\n"), None);
    }

    #[test]
    fn the_table_replaces_only_its_own_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("B.md");
        std::fs::write(
            &path,
            format!("# B\n\nintro\n\n{BEGIN}\nold\n{END}\n\nanalysis\n"),
        )
        .unwrap();
        let m = machine();
        let rows = vec![Row::new("x", 1.5, "s", Target::AtMost(3.0), "d|e".into())];
        let r = Report {
            machine: &m,
            command: "swarm bench".into(),
            seconds: 1.0,
            rows: &rows,
        };
        write_markdown(&path, &r).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# B\n\nintro\n\n"));
        assert!(text.ends_with("analysis\n"), "{text}");
        assert!(!text.contains("old"));
        assert!(
            text.contains("| x | 1.500 | s | ≤ 3 | yes | d\\|e |"),
            "{text}"
        );
    }
}
