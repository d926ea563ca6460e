//! `swarm demo`: a local swarm rendering the built-in example, to see the
//! farm work with nothing installed.
//!
//! It starts N real `swarm node` processes (this same binary) on loopback,
//! joined by `--peer` under a fresh swarm key (so no node of a real farm on
//! the LAN mixes in), submits `examples/orbit.toml` (compiled into the
//! binary, so the demo works from anywhere), shows progress, writes the
//! frames, and prints who rendered what and where the page is. With
//! `--keep` the swarm stays up until Ctrl-C.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use super::local_swarm::{start_swarm, write_key};
use super::{Api, BadInput};
use crate::ledger::FrameRange;
use crate::node::SubmitRequest;
use crate::node::views::{JobView, NodeView};

/// The example animation, shipped inside the binary.
pub const ORBIT: &str = include_str!("../../examples/orbit.toml");

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Frames of the example animation to render.
    #[arg(long, default_value = "1-48")]
    pub frames: String,
    /// Where the frames go.
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// Leave the swarm running (browse its page) until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
}

pub async fn run(args: DemoArgs) -> Result<i32> {
    BadInput::check_range("--nodes", args.nodes, 1, 32)?;
    let frames: FrameRange = args
        .frames
        .parse()
        .map_err(|e: crate::ledger::FrameRangeError| BadInput(e.to_string()))?;
    let base = std::env::temp_dir().join(format!("renderswarm-demo-{}", std::process::id()));
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let result = demo(&args, frames, &base).await;
    let _ = std::fs::remove_dir_all(&base);
    result
}

async fn demo(args: &DemoArgs, frames: FrameRange, base: &Path) -> Result<i32> {
    let key = write_key(base)?;
    let scene = base.join("orbit.toml");
    std::fs::write(&scene, ORBIT)?;
    let out = std::env::current_dir()?.join(&args.out);
    eprintln!("starting {} nodes on loopback…", args.nodes);
    let web = if std::net::TcpListener::bind("127.0.0.1:7878").is_ok() {
        "127.0.0.1:7878"
    } else {
        "127.0.0.1:0"
    };
    let nodes = start_swarm(base, "demo-", args.nodes, &key, web, |_| Vec::new()).await?;
    let api = &nodes[0].api;
    eprintln!(
        "swarm up: {} nodes; status page: {}",
        args.nodes, nodes[0].api_url
    );
    let req = SubmitRequest {
        scene: scene.display().to_string(),
        frames: frames.to_string(),
        name: Some("orbit (demo)".into()),
        out: Some(out.display().to_string()),
        ..SubmitRequest::default()
    };
    let job: JobView = api.post("/jobs", &req).await?;
    eprintln!(
        "submitted job {} ({} frames)",
        &job.id[..12],
        job.frames_total
    );
    let code = super::submit::wait_collected(api, &job.id).await?;
    report(api, &job.id, &out).await?;
    if args.keep {
        eprintln!(
            "the swarm keeps running: open {} ; Ctrl-C stops it",
            nodes[0].api_url
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(nodes);
    Ok(code)
}

/// Who rendered what.
async fn report(api: &Api, id: &str, out: &Path) -> Result<()> {
    let job: JobView = api.get(&format!("/jobs/{id}")).await?;
    let nodes: Vec<NodeView> = api.get("/nodes").await?;
    let name = |id: &str| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| id.to_string())
    };
    let mut by_node: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for t in job.tasks.iter().flatten() {
        if let Some(n) = &t.node {
            by_node.entry(name(n)).or_default().extend(&t.frames);
        }
    }
    println!("{} frames in {}", job.frames_done, out.display());
    for (node, frames) in &by_node {
        println!(
            "  {node:<8} rendered {:>3} frames: {}",
            frames.len(),
            list(frames)
        );
    }
    println!(
        "renders started {}, wasted {}",
        job.renders_started, job.renders_wasted
    );
    Ok(())
}

fn list(frames: &[u32]) -> String {
    let mut v = frames.to_vec();
    v.sort_unstable();
    let shown: Vec<String> = v.iter().take(12).map(u32::to_string).collect();
    if v.len() > 12 {
        format!("{} …", shown.join(" "))
    } else {
        shown.join(" ")
    }
}
