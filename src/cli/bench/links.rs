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
use std::time::Duration;

use anyhow::Result;

use super::transfer::{NOOP_ENGINE, fan_out, transfer_tags};
use super::{Ctx, Row, Target};
use crate::cli::local_swarm::{LocalNode, NodeSpec, wait_alive};
use crate::netlab::{self, Addressing, Lab};

const BENCH: &str = "6 one node to seven over shaped links, vs one to one";
const TOKEN: &str = "renderswarm-bench-links";

pub(super) async fn run(ctx: &Ctx, mib: u64, mbit: u32) -> Result<Vec<Row>> {
    let (n, mib) = if ctx.quick { (3, mib.min(8)) } else { (8, mib) };
    if let Some(why) = netlab::unavailable(&["ip", "tc"]) {
        let why = format!("not run: {why}");
        return Ok(vec![Row::not_run(BENCH, "ratio", Target::AtMost(1.5), why)]);
    }
    eprintln!("links: {n} nodes in network namespaces, {mbit} Mbit/s links…");
    let lab = build_lab(n, mbit)?;
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

/// `n` hosts on one bridge, every cable shaped to `mbit`.
fn build_lab(n: usize, mbit: u32) -> Result<Lab> {
    let at = Addressing {
        tag: "rsb",
        data: 215,
        mgmt: 216,
    };
    let mut lab = Lab::new(at, 1)?;
    for _ in 0..n {
        lab.add_host(0, Some(mbit))?;
    }
    Ok(lab)
}
