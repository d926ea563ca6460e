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
use serde::Deserialize;

use super::BadInput;
use crate::node::{Node, NodeConfig};
use crate::render::{DEFAULT_STALL, EngineConfig};

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
    /// The Blender executable (default: `blender` on PATH).
    #[arg(long)]
    pub blender: Option<PathBuf>,
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
    /// Settings file (TOML); flags override it.
    #[arg(long, env = "SWARM_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The config file: the same settings as the flags.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data: Option<PathBuf>,
    pub web: Option<String>,
    pub web_token: Option<String>,
    pub slots: Option<usize>,
    pub blender: Option<PathBuf>,
    #[serde(default)]
    pub engine_commands: BTreeMap<String, String>,
    pub name: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub stall: Option<u64>,
    pub threads: Option<usize>,
}

fn read_file_config(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BadInput(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| BadInput(format!("config file {} is not valid: {e}", path.display())).into())
}

/// Merge flags over the file and check everything.
pub fn config(args: &NodeArgs) -> Result<NodeConfig> {
    let file = match &args.config {
        Some(p) => read_file_config(p)?,
        None => FileConfig::default(),
    };
    let data = args
        .data
        .clone()
        .or(file.data.clone())
        .map(Ok)
        .unwrap_or_else(default_data_dir)?;
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
    if cfg.slots == 0 || cfg.slots > 256 {
        return Err(BadInput(format!(
            "--slots must be between 1 and 256, not {}",
            cfg.slots
        ))
        .into());
    }
    cfg.engines = engine_config(args, &file)?;
    Ok(cfg)
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
    Ok(EngineConfig {
        blender: args.blender.clone().or(file.blender.clone()),
        commands,
        threads: file.threads.unwrap_or(0),
        stall,
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
