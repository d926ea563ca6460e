//! One node to seven when the network, not the CPU, is the limit.
//!
//! On one machine's loopback a fan-out is bound by the machine's cores:
//! every byte is encrypted once and decrypted once whoever sends it, so
//! receivers feeding each other cannot make it faster there, and eight
//! nodes share the cores. A studio's machines each have cores of their own
//! and one network link, and there the submitter's link is the limit unless
//! the receivers feed each other. This group builds that room on one
//! machine: each node in a network namespace of its own, all cabled to one
//! bridge, each cable shaped to `--link-mbit` both ways by a token bucket
//! (`tc ... tbf`); each node's API on a management link of its own, which
//! is not shaped and carries no swarm traffic.
//!
//! Needs root and iproute2 (`ip`, `tc`); without them the row says so
//! instead of a figure.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

use super::transfer::{NOOP_ENGINE, fan_out, transfer_tags};
use super::{Ctx, Row, Target};
use crate::cli::local_swarm::{LocalNode, NodeSpec, wait_alive};

const BENCH: &str = "6 one node to seven over shaped links, vs one to one";
const TOKEN: &str = "renderswarm-bench-links";

pub(super) async fn run(ctx: &Ctx, mib: u64, mbit: u32) -> Result<Vec<Row>> {
    let (n, mib) = if ctx.quick { (3, mib.min(8)) } else { (8, mib) };
    if let Err(why) = can_build_a_lab() {
        return Ok(vec![Row::not_run(BENCH, "ratio", Target::AtMost(1.5), why)]);
    }
    eprintln!("links: {n} nodes in network namespaces, {mbit} Mbit/s links…");
    let lab = Lab::new(n, mbit)?;
    let dir = ctx.base.join("links");
    std::fs::create_dir_all(&dir)?;
    let nodes = start_nodes(&lab, &dir, &ctx.key).await?;
    eprintln!("links: {mib} MiB to one node, then to {}…", n - 1);
    let fan = fan_out(&nodes, &dir, mib).await?;
    drop(nodes);
    Ok(vec![Row::new(
        BENCH,
        fan.ratio(),
        "ratio",
        Target::AtMost(1.5),
        format!(
            "{mbit} Mbit/s each way on every node's link; {}",
            fan.detail()
        ),
    )])
}

/// Why a lab cannot be built here, if it cannot.
fn can_build_a_lab() -> Result<(), String> {
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not run: building network namespaces needs root".into());
    }
    for tool in ["ip", "tc"] {
        let ok = Command::new(tool)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Err(format!("not run: `{tool}` (iproute2) is not installed"));
        }
    }
    Ok(())
}

/// The nodes, one per host; the first is the source.
async fn start_nodes(lab: &Lab, dir: &Path, key: &Path) -> Result<Vec<LocalNode>> {
    let mut nodes: Vec<LocalNode> = Vec::new();
    for (i, host) in lab.hosts.iter().enumerate() {
        let peers = match nodes.first() {
            Some(first) => vec![first.addr()?],
            None => Vec::new(),
        };
        let mut extra = vec!["--engine-command".to_string(), NOOP_ENGINE.to_string()];
        if let Some(tags) = transfer_tags(i + 1) {
            extra.extend(["--tags".into(), tags.into()]);
        }
        let wrapper = ["ip", "netns", "exec", &host.ns].map(String::from);
        let name = format!("link-{}", i + 1);
        let listen = format!("/ip4/{}/tcp/0", host.data_ip);
        let web = format!("{}:0", host.api_ip);
        nodes.push(LocalNode::start(&NodeSpec {
            listen: &listen,
            wrapper: &wrapper,
            token: Some(TOKEN),
            ..NodeSpec::local(dir, &name, key, &peers, &web, &extra)
        })?);
    }
    for node in &nodes {
        wait_alive(&node.api, nodes.len(), Duration::from_secs(60)).await?;
    }
    Ok(nodes)
}

/// Hosts on one bridge, removed when dropped.
struct Lab {
    prefix: String,
    hosts: Vec<Host>,
}

struct Host {
    ns: String,
    /// Where it listens for peers (on the bridge).
    data_ip: String,
    /// Where its API listens (its management link).
    api_ip: String,
}

impl Lab {
    fn new(n: usize, mbit: u32) -> Result<Lab> {
        let prefix = format!("rsb{}", std::process::id() % 100_000);
        let mut lab = Lab {
            prefix,
            hosts: Vec::new(),
        };
        let sw = lab.switch();
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let host = lab.add_host(i, mbit)?;
            lab.hosts.push(host);
        }
        Ok(lab)
    }

    fn switch(&self) -> String {
        format!("{}sw", self.prefix)
    }

    /// Host `i`: a namespace cabled to the bridge, the cable shaped both
    /// ways, and a management link to this namespace.
    fn add_host(&self, i: usize, mbit: u32) -> Result<Host> {
        let sw = self.switch();
        let ns = format!("{}n{i}", self.prefix);
        let cable = format!("c{i}");
        let mgmt = format!("{}m{i}", self.prefix);
        let host = Host {
            ns: ns.clone(),
            data_ip: format!("10.215.0.{}", 10 + i),
            api_ip: format!("10.216.{i}.2"),
        };
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", &sw, "link", "add", &cable, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["-n", &sw, "link", "set", &cable, "master", "br0", "up"])?;
        let data = format!("{}/24", host.data_ip);
        ip(&["-n", &ns, "addr", "add", &data, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        // Upload: what leaves the host; download: what the switch sends it.
        shape(&ns, "eth0", mbit)?;
        shape(&sw, &cable, mbit)?;
        ip(&[
            "link", "add", &mgmt, "type", "veth", "peer", "name", "mg0", "netns", &ns,
        ])?;
        ip(&["addr", "add", &format!("10.216.{i}.1/30"), "dev", &mgmt])?;
        ip(&["link", "set", &mgmt, "up"])?;
        let api = format!("{}/30", host.api_ip);
        ip(&["-n", &ns, "addr", "add", &api, "dev", "mg0"])?;
        ip(&["-n", &ns, "link", "set", "mg0", "up"])?;
        Ok(host)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends, and so their peers.
        for ns in self
            .hosts
            .iter()
            .map(|h| h.ns.clone())
            .chain([self.switch()])
        {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// Limit what leaves `dev` in namespace `ns` to `mbit` Mbit/s.
fn shape(ns: &str, dev: &str, mbit: u32) -> Result<()> {
    let rate = format!("{mbit}mbit");
    tool(
        "tc",
        &[
            "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", "128kb",
            "latency", "50ms",
        ],
    )
}

fn ip(args: &[&str]) -> Result<()> {
    tool("ip", args)
}

/// Run `name ARGS`, failing with what it printed.
fn tool(name: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(name).args(args).output()?;
    if !out.status.success() {
        bail!(
            "{name} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
