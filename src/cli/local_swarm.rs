//! Real `swarm node` processes on loopback, started by this same binary:
//! what `swarm demo` shows and what `swarm bench` measures.
//!
//! Each node gets its own data folder and log under a base folder, a web
//! port the OS picks, a loopback libp2p listener and the caller's swarm key
//! (so no node of a real farm on the LAN mixes in). A node is ready when it
//! prints where it serves its API; dropping a [`LocalNode`] stops it
//! cleanly (SIGTERM, so it releases its claims), killing it after 10 s.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::Api;
use crate::node::views::NodeView;

/// One node process.
pub struct LocalNode {
    pub name: String,
    pub child: Child,
    /// The API's base URL.
    pub api_url: String,
    pub api: Api,
    /// Its libp2p listen addresses.
    pub listen: Vec<String>,
}

/// How to start one node.
pub struct NodeSpec<'a> {
    pub base: &'a Path,
    pub name: &'a str,
    pub key: &'a Path,
    pub peers: &'a [String],
    /// `host:port` for the API.
    pub web: &'a str,
    /// More `swarm node` flags.
    pub extra: &'a [String],
    /// Where it listens for peers (a libp2p address).
    pub listen: &'a str,
    /// A command the node runs under (such as `ip netns exec NS`).
    pub wrapper: &'a [String],
    /// The API's token, for an API beyond loopback.
    pub token: Option<&'a str>,
}

impl<'a> NodeSpec<'a> {
    /// A node on loopback: `--listen` on a port the OS picks, no wrapper,
    /// no token.
    pub fn local(
        base: &'a Path,
        name: &'a str,
        key: &'a Path,
        peers: &'a [String],
        web: &'a str,
        extra: &'a [String],
    ) -> NodeSpec<'a> {
        NodeSpec {
            base,
            name,
            key,
            peers,
            web,
            extra,
            listen: "/ip4/127.0.0.1/tcp/0",
            wrapper: &[],
            token: None,
        }
    }
}

impl LocalNode {
    pub fn start(spec: &NodeSpec<'_>) -> Result<LocalNode> {
        let exe = std::env::current_exe().context("cannot find this program to start nodes")?;
        let data = spec.base.join(spec.name);
        let log = spec.base.join(format!("{}.log", spec.name));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = match spec.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.arg("node")
            .arg("--data")
            .arg(&data)
            .args(["--name", spec.name, "--web", spec.web])
            .args(["--listen", spec.listen, "--no-mdns"])
            .arg("--swarm-key")
            .arg(spec.key)
            .args(spec.extra)
            .env_remove("SWARM_WEB_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        for p in spec.peers {
            cmd.args(["--peer", p]);
        }
        if let Some(t) = spec.token {
            cmd.env("SWARM_WEB_TOKEN", t);
        }
        let mut child = cmd.spawn().context("cannot start a node")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout from the node"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut listen = Vec::new();
        loop {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
                let _ = child.kill();
                bail!("node {} did not start; see {}", spec.name, log.display());
            };
            if let Some(addr) = line.strip_prefix("listening on ") {
                listen.push(addr.trim().to_string());
            } else if let Some(rest) = line.split("serving ").nth(1) {
                let api_url = rest.trim().to_string();
                return Ok(LocalNode {
                    name: spec.name.to_string(),
                    child,
                    api: Api::new(&api_url, spec.token.map(String::from))?,
                    api_url,
                    listen,
                });
            }
        }
    }

    /// The address other nodes reach this one at.
    pub fn addr(&self) -> Result<String> {
        self.listen
            .first()
            .cloned()
            .ok_or_else(|| anyhow!("node {} did not say where it listens", self.name))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill the process outright, as a crash or a pulled plug would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM first: the node releases its claims and flushes.
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `n` nodes named `{prefix}{i}`, the first on `first_web`, the rest
/// joining it by `--peer`; wait until the first sees them all alive.
pub async fn start_swarm(
    base: &Path,
    prefix: &str,
    n: usize,
    key: &Path,
    first_web: &str,
    extra: impl Fn(usize) -> Vec<String>,
) -> Result<Vec<LocalNode>> {
    let mut nodes: Vec<LocalNode> = Vec::with_capacity(n);
    for i in 1..=n {
        let peers = match nodes.first() {
            Some(first) => vec![first.addr()?],
            None => Vec::new(),
        };
        let name = format!("{prefix}{i}");
        let web = if i == 1 { first_web } else { "127.0.0.1:0" };
        let extra = extra(i);
        nodes.push(LocalNode::start(&NodeSpec::local(
            base, &name, key, &peers, web, &extra,
        ))?);
    }
    for node in &nodes {
        wait_alive(&node.api, n, Duration::from_secs(60)).await?;
    }
    Ok(nodes)
}

/// Wait until the node behind `api` sees `n` live nodes (itself included).
pub async fn wait_alive(api: &Api, n: usize, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let nodes: Vec<NodeView> = api.get("/nodes").await?;
        if nodes.iter().filter(|n| n.alive).count() >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} sees {} live nodes of {n} after {} s",
                api.base(),
                nodes.iter().filter(|n| n.alive).count(),
                within.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh swarm key in `base`, so the local swarm keeps to itself.
pub fn write_key(base: &Path) -> Result<PathBuf> {
    let key = base.join("swarm.key");
    std::fs::write(&key, super::node::new_swarm_key()?)
        .with_context(|| format!("cannot write {}", key.display()))?;
    Ok(key)
}
