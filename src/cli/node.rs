//! `swarm node`: flags and config file in, a validated `NodeConfig` out,
//! then run the node until SIGINT or SIGTERM.
//!
//! Precedence: a flag beats the config file, which beats the default. Every
//! check that can fail on a typo happens here, before anything starts, with
//! a message naming the bad value.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::BadInput;
use libp2p::Multiaddr;

use crate::alert::{
    AlertConfig, DEFAULT_BATCH_WINDOW, DEFAULT_MAX_MAILS_PER_HOUR, Sender, read_password,
};
use crate::node::sleep::SleepSchedule;
use crate::node::{NetConfig, Node, NodeConfig};
use crate::render::{DEFAULT_RENDER_NICE, DEFAULT_STALL, EngineConfig};

#[derive(Args, Debug, Default)]
pub struct NodeArgs {
    /// Where the ledger, blobs and work files live (default: the platform's data dir).
    #[arg(long, env = "SWARM_DATA")]
    pub data: Option<PathBuf>,
    /// Address of the API and page. Beyond loopback, --web-token is required.
    #[arg(long)]
    pub web: Option<String>,
    /// Token the API and page require (needed for a non-loopback --web).
    #[arg(long, env = "SWARM_WEB_TOKEN", hide_env_values = true)]
    pub web_token: Option<String>,
    /// Renders at a time.
    #[arg(long)]
    pub slots: Option<usize>,
    /// Run this many tasks on each GPU at once, each pinned to its GPU
    /// (sets --slots to GPUs x N unless --slots is given).
    #[arg(long, value_name = "N")]
    pub slots_per_gpu: Option<usize>,
    /// The Blender executable (default: `blender` on PATH).
    #[arg(long)]
    pub blender: Option<PathBuf>,
    /// The ffmpeg executable that encodes movies (default: `ffmpeg` on PATH).
    #[arg(long)]
    pub ffmpeg: Option<PathBuf>,
    /// A command engine: NAME=TEMPLATE with {scene} {frame} {start} {end} {output} (repeatable).
    #[arg(long = "engine-command", value_name = "NAME=TEMPLATE")]
    pub engine_commands: Vec<String>,
    /// What people call this node (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Tags jobs can require, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Seconds of engine silence before a render counts as stalled.
    #[arg(long)]
    pub stall: Option<u64>,
    /// The niceness engines run at, 0-19 (default 10): people working at
    /// the machine, and the node's own work, go before a render. 0 runs
    /// them as the node runs.
    #[arg(long, value_name = "N")]
    pub render_nice: Option<i32>,
    /// Disk the blob store may use, e.g. 20G (default 20G). Least recently
    /// used blobs go beyond it; what active jobs and uncollected outputs
    /// need always stays.
    #[arg(long, value_name = "SIZE", value_parser = super::size::parse_size)]
    pub cache_size: Option<u64>,
    /// Days after its submission that a finished job is archived: off the
    /// job list and the page, its frames free to leave the cache (default
    /// 30; 0: only by hand, `swarm archive JOB`).
    #[arg(long, value_name = "DAYS")]
    pub archive_after_days: Option<u32>,
    /// When this node takes no new tasks, each week in local time, e.g.
    /// "mon-fri 09:00-18:00" (windows separated by `;`, days alone for whole
    /// days). `swarm wake` overrides it until it next changes.
    #[arg(long, value_name = "SCHEDULE")]
    pub sleep_schedule: Option<String>,
    /// Tests only: milliseconds between trims of the store (default 60 s).
    #[arg(long, hide = true)]
    pub test_cache_every_ms: Option<u64>,
    /// Settings file (TOML); flags override it. Default: the first of
    /// ~/.config/renderswarm/swarm.toml and /etc/renderswarm/swarm.toml.
    #[arg(long, env = "SWARM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where to listen for peers (repeatable; default /ip4/0.0.0.0/tcp/7879).
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// A peer to dial, for networks without multicast (repeatable).
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<String>,
    /// Do not discover peers by mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// Seconds between mDNS queries.
    #[arg(long, default_value_t = 5)]
    pub mdns_interval: u64,
    /// The private swarm's key (made by `swarm keygen`): nodes without it cannot connect.
    #[arg(long, env = "SWARM_KEY_FILE")]
    pub swarm_key: Option<PathBuf>,
    /// Send alerts by email through this SMTP server: smtp://host:port (a
    /// local relay), add ?tls=required for STARTTLS, smtps://host for TLS.
    /// The password comes from SWARM_SMTP_PASSWORD or --smtp-password-file.
    #[arg(long, value_name = "URL")]
    pub smtp: Option<String>,
    /// A file holding the SMTP password (never put it in arguments).
    #[arg(long)]
    pub smtp_password_file: Option<PathBuf>,
    /// Who gets alert mail (repeatable).
    #[arg(long = "alert-to", value_name = "ADDR")]
    pub alert_to: Vec<String>,
    /// The sender of alert mail.
    #[arg(long, value_name = "ADDR")]
    pub alert_from: Option<String>,
    /// The least severe alert sent: info, warning or error.
    #[arg(long)]
    pub alert_level: Option<String>,
    /// Only these kinds of alert (comma-separated: task_failed, job_failed,
    /// job_finished, node_lost, engine_missing, disk_low, node_joined, node_left).
    #[arg(long, value_delimiter = ',')]
    pub alert_kinds: Vec<String>,
    /// Seconds a burst of alerts is gathered into one digest mail.
    #[arg(long)]
    pub alert_batch: Option<u64>,
    /// At most this many alert mails an hour; the rest wait and are merged.
    #[arg(long)]
    pub alert_max_per_hour: Option<u32>,
    /// POST alerts as JSON to this URL (chat and SMS bridges).
    #[arg(long, value_name = "URL")]
    pub alert_webhook: Option<String>,
    /// The status page link put in alert mails (default: this node's --web address).
    #[arg(long, value_name = "URL")]
    pub page_url: Option<String>,
    /// Tests only: a file of peer ids whose traffic is cut (a partition).
    #[arg(long, hide = true)]
    pub test_partition_file: Option<PathBuf>,
    /// Tests only: when this file appears, publish every ledger message
    /// published so far again (a replay), then write FILE.done.
    #[arg(long, hide = true)]
    pub test_replay_file: Option<PathBuf>,
    /// Benchmarks only: serve raw bytes to peers, the transfer baseline.
    #[arg(long, hide = true)]
    pub test_bench_protocol: bool,
    /// Tests only: NODES,FRAMES of a synthetic farm shown by this node.
    #[arg(long, hide = true, value_parser = parse_synthetic)]
    pub test_synthetic_farm: Option<(usize, u32)>,
}

/// The config file: the same settings as the flags.
#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data: Option<PathBuf>,
    pub web: Option<String>,
    pub web_token: Option<String>,
    pub slots: Option<usize>,
    pub slots_per_gpu: Option<usize>,
    pub blender: Option<PathBuf>,
    pub ffmpeg: Option<PathBuf>,
    #[serde(default)]
    pub engine_commands: BTreeMap<String, String>,
    pub name: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub stall: Option<u64>,
    pub render_nice: Option<i32>,
    /// Like `--cache-size`: "20G".
    pub cache_size: Option<String>,
    pub archive_after_days: Option<u32>,
    /// Like `--sleep-schedule`.
    pub sleep_schedule: Option<String>,
    pub threads: Option<usize>,
    #[serde(default)]
    pub listen: Vec<String>,
    #[serde(default)]
    pub peers: Vec<String>,
    pub mdns: Option<bool>,
    pub swarm_key: Option<PathBuf>,
    pub smtp: Option<String>,
    pub smtp_password_file: Option<PathBuf>,
    #[serde(default)]
    pub alert_to: Vec<String>,
    pub alert_from: Option<String>,
    pub alert_level: Option<String>,
    #[serde(default)]
    pub alert_kinds: Vec<String>,
    pub alert_batch: Option<u64>,
    pub alert_max_per_hour: Option<u32>,
    pub alert_webhook: Option<String>,
    pub page_url: Option<String>,
}

fn read_file_config(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BadInput(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| BadInput(format!("config file {} is not valid: {e}", path.display())).into())
}

/// Merge flags over the file and check everything.
pub fn config(args: &NodeArgs) -> Result<NodeConfig> {
    let file = match super::config_file::locate(args.config.as_deref()) {
        Some(p) => read_file_config(&p)?,
        None => FileConfig::default(),
    };
    let data = args
        .data
        .clone()
        .or(file.data.clone())
        .map(Ok)
        .unwrap_or_else(default_data_dir)?;
    // Engines run in work folders under it; they must get absolute paths.
    let data = if data.is_absolute() {
        data
    } else {
        std::env::current_dir()?.join(data)
    };
    let mut cfg = NodeConfig::new(data);
    if let Some(name) = args.name.clone().or(file.name.clone()) {
        cfg.name = name;
    }
    let tags = if args.tags.is_empty() {
        &file.tags
    } else {
        &args.tags
    };
    cfg.tags = check_tags(tags)?;
    let web = args
        .web
        .clone()
        .or(file.web.clone())
        .unwrap_or_else(|| "127.0.0.1:7878".into());
    cfg.web = web.parse::<SocketAddr>().map_err(|_| {
        BadInput(format!(
            "--web `{web}` is not an address like 127.0.0.1:7878"
        ))
    })?;
    cfg.web_token = args
        .web_token
        .clone()
        .or(file.web_token.clone())
        .filter(|t| !t.is_empty());
    if !cfg.web.ip().is_loopback() && cfg.web_token.is_none() {
        return Err(BadInput(format!(
            "--web {} is reachable from other machines: set --web-token TOKEN (or SWARM_WEB_TOKEN) so only people with the token can use this node",
            cfg.web
        ))
        .into());
    }
    cfg.slots = args.slots.or(file.slots).unwrap_or(1);
    BadInput::check_range("--slots", cfg.slots, 1, 256)?;
    gpu_config(args, &file, &mut cfg)?;
    cache_config(args, &file, &mut cfg)?;
    cfg.engines = engine_config(args, &file)?;
    cfg.net = Some(net_config(args, &file)?);
    cfg.synthetic = args.test_synthetic_farm;
    cfg.sleep_schedule = sleep_schedule(args, &file)?;
    cfg.alerts = alert_config(args, &file, cfg.web)?;
    Ok(cfg)
}

/// The weekly hours this node sleeps, if any.
fn sleep_schedule(args: &NodeArgs, file: &FileConfig) -> Result<Option<SleepSchedule>> {
    let (text, from) = match (&args.sleep_schedule, &file.sleep_schedule) {
        (Some(t), _) => (t, "--sleep-schedule"),
        (None, Some(t)) => (t, "sleep_schedule in the config file"),
        (None, None) => return Ok(None),
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    SleepSchedule::parse(text)
        .map(Some)
        .map_err(|e| BadInput(format!("{from}: {e}")).into())
}

/// The store's size, how often it is trimmed, and when jobs are archived.
fn cache_config(args: &NodeArgs, file: &FileConfig, cfg: &mut NodeConfig) -> Result<()> {
    if let Some(size) = args.cache_size {
        cfg.cache_size = size;
    } else if let Some(text) = &file.cache_size {
        cfg.cache_size = super::size::parse_size(text)
            .map_err(|e| BadInput(format!("cache_size in the config file: {e}")))?;
    }
    if let Some(ms) = args.test_cache_every_ms {
        cfg.cache_every = std::time::Duration::from_millis(ms.max(1));
    }
    if let Some(days) = args.archive_after_days.or(file.archive_after_days) {
        cfg.archive_after = (days > 0).then(|| Duration::from_secs(u64::from(days) * 24 * 3600));
    }
    Ok(())
}

/// Tags from the GPUs found, and one slot per GPU (times N) with
/// `--slots-per-gpu N`.
fn gpu_config(args: &NodeArgs, file: &FileConfig, cfg: &mut NodeConfig) -> Result<()> {
    use crate::telemetry::gpu;
    let gpus = gpu::detect();
    cfg.tags.extend(gpu::tags(&gpus));
    let Some(per) = args.slots_per_gpu.or(file.slots_per_gpu) else {
        return Ok(());
    };
    BadInput::check_range("--slots-per-gpu", per, 1, 16)?;
    cfg.gpu_slots = gpus
        .iter()
        .filter(|g| !g.backends().is_empty())
        .flat_map(|g| std::iter::repeat_n(g.index, per))
        .collect();
    if cfg.gpu_slots.is_empty() {
        eprintln!("warning: --slots-per-gpu {per}: no GPU Cycles can use was found; ignored");
    } else if args.slots.or(file.slots).is_none() {
        cfg.slots = cfg.gpu_slots.len().min(256);
    }
    Ok(())
}

/// Alert settings, when a sink is configured.
fn alert_config(
    args: &NodeArgs,
    file: &FileConfig,
    web: SocketAddr,
) -> Result<Option<AlertConfig>> {
    let smtp = args.smtp.clone().or(file.smtp.clone());
    let webhook = args.alert_webhook.clone().or(file.alert_webhook.clone());
    let to = if args.alert_to.is_empty() {
        &file.alert_to
    } else {
        &args.alert_to
    };
    if smtp.is_none() && webhook.is_none() {
        if !to.is_empty() {
            return Err(BadInput(
                "--alert-to needs --smtp URL (the mail server to send through)".into(),
            )
            .into());
        }
        return Ok(None);
    }
    let password_file = args
        .smtp_password_file
        .clone()
        .or(file.smtp_password_file.clone());
    let password = read_password(password_file.as_deref()).map_err(|e| BadInput(e.to_string()))?;
    let kinds = if args.alert_kinds.is_empty() {
        &file.alert_kinds
    } else {
        &args.alert_kinds
    };
    let page = args
        .page_url
        .clone()
        .or(file.page_url.clone())
        .unwrap_or_else(|| format!("http://{web}/"));
    AlertConfig::from_args(
        smtp.as_deref(),
        password,
        to,
        args.alert_from.as_deref().or(file.alert_from.as_deref()),
        args.alert_level
            .as_deref()
            .or(file.alert_level.as_deref())
            .unwrap_or("warning"),
        kinds,
        args.alert_batch
            .or(file.alert_batch)
            .unwrap_or(DEFAULT_BATCH_WINDOW.as_secs()),
        args.alert_max_per_hour
            .or(file.alert_max_per_hour)
            .unwrap_or(DEFAULT_MAX_MAILS_PER_HOUR),
        webhook.as_deref(),
        Some(page),
    )
    .map(Some)
    .map_err(|e| BadInput(e.to_string()).into())
}

/// `swarm alert test`: a test mail with this node's settings.
pub async fn alert_test(args: NodeArgs) -> Result<i32> {
    let cfg = config(&args)?;
    let Some(alerts) = cfg.alerts.filter(|a| a.email_enabled()) else {
        return Err(BadInput("no mail settings: give --smtp URL, --alert-to ADDR and --alert-from ADDR (or the same in the config file)".into()).into());
    };
    let sender = Sender::new(&alerts).map_err(|e| BadInput(e.to_string()))?;
    match sender.send_test(&cfg.name).await {
        Ok(answer) => {
            println!("the server accepted the test mail: {answer}");
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: the test mail was not sent: {e}");
            Ok(1)
        }
    }
}

fn parse_synthetic(s: &str) -> Result<(usize, u32), String> {
    let (n, f) = s.split_once(',').ok_or("write NODES,FRAMES")?;
    Ok((
        n.trim().parse().map_err(|_| "NODES is a number")?,
        f.trim().parse().map_err(|_| "FRAMES is a number")?,
    ))
}

/// The default swarm port.
pub const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/7879";

fn net_config(args: &NodeArgs, file: &FileConfig) -> Result<NetConfig> {
    let listen = if args.listen.is_empty() {
        &file.listen
    } else {
        &args.listen
    };
    let mut listen: Vec<Multiaddr> = listen
        .iter()
        .map(|a| multiaddr("--listen", a))
        .collect::<Result<_>>()?;
    if listen.is_empty() {
        listen.push(multiaddr("--listen", DEFAULT_LISTEN)?);
    }
    let peers = if args.peers.is_empty() {
        &file.peers
    } else {
        &args.peers
    };
    let peers = peers
        .iter()
        .map(|a| multiaddr("--peer", a))
        .collect::<Result<_>>()?;
    let key_file = args.swarm_key.clone().or(file.swarm_key.clone());
    let swarm_key = key_file.map(|f| read_swarm_key(&f)).transpose()?;
    if args.mdns_interval == 0 {
        return Err(BadInput("--mdns-interval must be at least 1 second".into()).into());
    }
    Ok(NetConfig {
        listen,
        peers,
        mdns: !args.no_mdns && file.mdns.unwrap_or(true),
        mdns_interval: Duration::from_secs(args.mdns_interval),
        swarm_key,
        partition_file: args.test_partition_file.clone(),
        replay_file: args.test_replay_file.clone(),
        bench_protocol: args.test_bench_protocol,
    })
}

fn multiaddr(flag: &str, text: &str) -> Result<Multiaddr> {
    text.trim().parse().map_err(|e| {
        BadInput(format!(
            "{flag} `{text}` is not a multiaddr ({e}); write it like /ip4/192.168.1.20/tcp/7879"
        ))
        .into()
    })
}

/// The first line of a swarm key file.
const KEY_HEADER: &str = "/key/swarm/psk/1.0.0/";

/// Read a swarm key file (the IPFS format: header, `/base16/`, 64 hex digits).
pub fn read_swarm_key(path: &Path) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BadInput(format!("cannot read swarm key {}: {e}", path.display())))?;
    let bad = || {
        BadInput(format!(
            "{} is not a swarm key: make one with `swarm keygen FILE`",
            path.display()
        ))
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some(KEY_HEADER) || lines.next() != Some("/base16/") {
        return Err(bad().into());
    }
    let mut key = [0u8; 32];
    hex::decode_to_slice(lines.next().ok_or_else(bad)?, &mut key).map_err(|_| bad())?;
    Ok(key)
}

/// A new swarm key file's text.
pub fn new_swarm_key() -> Result<String> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
    Ok(format!("{KEY_HEADER}\n/base16/\n{}\n", hex::encode(key)))
}

fn engine_config(args: &NodeArgs, file: &FileConfig) -> Result<EngineConfig> {
    let mut commands = file.engine_commands.clone();
    for spec in &args.engine_commands {
        let (name, template) = spec
            .split_once('=')
            .ok_or_else(|| BadInput(format!("--engine-command `{spec}` must be NAME=TEMPLATE")))?;
        commands.insert(name.trim().to_string(), template.to_string());
    }
    let stall = args
        .stall
        .or(file.stall)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_STALL);
    if stall.is_zero() {
        return Err(BadInput("--stall must be at least 1 second".into()).into());
    }
    let nice = args
        .render_nice
        .or(file.render_nice)
        .unwrap_or(DEFAULT_RENDER_NICE);
    if !(0..=19).contains(&nice) {
        return Err(BadInput(format!(
            "--render-nice (render_nice in the config file) must be 0 to 19, not {nice}"
        ))
        .into());
    }
    Ok(EngineConfig {
        blender: args.blender.clone().or(file.blender.clone()),
        ffmpeg: args.ffmpeg.clone().or(file.ffmpeg.clone()),
        commands,
        threads: file.threads.unwrap_or(0),
        stall,
        nice,
    })
}

fn check_tags(tags: &[String]) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for t in tags.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        if t.len() > 64
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(BadInput(format!(
                "tag `{t}` must be up to 64 letters, digits, `-`, `_` or `.`"
            ))
            .into());
        }
        out.insert(t.to_string());
    }
    Ok(out)
}

fn default_data_dir() -> Result<PathBuf> {
    directories::ProjectDirs::from("", "", "renderswarm")
        .map(|d| d.data_dir().to_path_buf())
        .ok_or_else(|| {
            BadInput("cannot find a data directory for this user: pass --data DIR".into()).into()
        })
}

/// Run a node until a signal.
pub async fn run(args: NodeArgs) -> Result<i32> {
    init_logging();
    let cfg = config(&args)?;
    let web = cfg.web;
    let token = cfg.web_token.clone();
    let listener = tokio::net::TcpListener::bind(web).await.map_err(|e| {
        BadInput(format!(
            "cannot listen on {web}: {e} (is another node running? choose another port with --web)"
        ))
    })?;
    let node = Node::start(cfg).await.context("the node could not start")?;
    let local = listener.local_addr()?;
    for addr in node.listen_addrs(Duration::from_secs(5)).await {
        println!("listening on {addr}");
    }
    println!(
        "node {} ({}) serving http://{local}",
        node.config().name,
        node.id()
    );
    let stop = node.shutdown_token();
    let server = tokio::spawn(crate::web::serve(
        node.clone(),
        listener,
        token,
        stop.clone(),
    ));
    wait_for_signal(&stop).await;
    eprintln!("shutting down: releasing claims");
    node.shutdown().await;
    let _ = server.await;
    Ok(0)
}

async fn wait_for_signal(stop: &tokio_util::sync::CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = stop.cancelled() => {}
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWARM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The node's settings from these flags over this config file, or why
    /// they are refused.
    fn try_node_config(flags: &[&str], file: &str) -> Result<NodeConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swarm.toml");
        std::fs::write(&path, file).unwrap();
        let (data, config) = (dir.path().to_str().unwrap(), path.to_str().unwrap());
        let mut argv = vec!["swarm", "node", "--data", data, "--config", config];
        argv.extend(flags);
        let cli = super::super::Cli::try_parse_from(argv).unwrap();
        let super::super::Command::Node(args) = cli.command else {
            panic!("not the node command");
        };
        super::config(&args)
    }

    fn node_config(flags: &[&str], file: &str) -> NodeConfig {
        try_node_config(flags, file).unwrap()
    }

    fn config_error(flags: &[&str], file: &str) -> String {
        try_node_config(flags, file).unwrap_err().to_string()
    }

    #[test]
    fn the_sleep_schedule_comes_from_the_flag_or_the_file_and_is_checked() {
        let text = |cfg: NodeConfig| cfg.sleep_schedule.map(|s| s.text().to_string());
        assert_eq!(text(node_config(&[], "")), None);
        let file = r#"sleep_schedule = "mon-fri 09:00-18:00""#;
        assert_eq!(
            text(node_config(&[], file)).as_deref(),
            Some("mon-fri 09:00-18:00")
        );
        let flag = ["--sleep-schedule", "sat,sun"];
        assert_eq!(text(node_config(&flag, file)).as_deref(), Some("sat,sun"));
        let e = config_error(&[], r#"sleep_schedule = "mon-fry""#);
        assert!(e.contains("sleep_schedule in the config file"), "{e}");
        assert!(e.contains("unknown day \"fry\""), "{e}");
        let e = config_error(&["--sleep-schedule", "mon 9-5"], "");
        assert!(e.contains("--sleep-schedule"), "{e}");
    }

    #[test]
    fn jobs_are_archived_after_30_days_unless_the_flag_or_the_file_says_otherwise() {
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(node_config(&[], "").archive_after, Some(30 * day));
        let file = "archive_after_days = 7";
        assert_eq!(node_config(&[], file).archive_after, Some(7 * day));
        let two = ["--archive-after-days", "2"];
        assert_eq!(node_config(&two, file).archive_after, Some(2 * day));
        let never = ["--archive-after-days", "0"];
        assert_eq!(node_config(&never, file).archive_after, None);
        assert_eq!(
            node_config(&[], "archive_after_days = 0").archive_after,
            None
        );
    }

    #[test]
    fn renders_run_at_nice_10_unless_the_flag_or_the_file_says_otherwise() {
        let nice = |flags: &[&str], file: &str| node_config(flags, file).engines.nice;
        assert_eq!(nice(&[], ""), 10);
        assert_eq!(nice(&[], "render_nice = 19"), 19);
        assert_eq!(nice(&["--render-nice", "0"], "render_nice = 19"), 0);
        let e = config_error(&["--render-nice", "20"], "");
        assert!(e.contains("must be 0 to 19, not 20"), "{e}");
        let e = config_error(&[], "render_nice = -5");
        assert!(e.contains("render_nice in the config file"), "{e}");
    }
}
