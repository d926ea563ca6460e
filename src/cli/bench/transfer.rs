//! The transfer benchmarks, on one swarm of 8 nodes serving the bench
//! protocol: a scene pulled by one node against raw bytes over the same
//! connection, dedup of a re-submitted scene, and one node to seven.
//!
//! A node fetches a job's scene as soon as it hears of a job it can run, so
//! "pull the scene" is "submit a job only that node can run". The time runs
//! from the submit returning (the submitter has imported the scene) to the
//! node's job finishing (which it cannot before the whole scene is there
//! and verified) for one receiver, and to every receiver's fetched-bytes
//! counter covering the scene for seven. The baseline is
//! `POST /api/v1/bench/raw`: the same number of bytes in replies as large
//! as chunks, as many in flight, over the same connection, with no
//! hashing, no store and no disk.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::{Ctx, Row, Target, metric, wait_done};
use crate::cli::Api;
use crate::cli::local_swarm::{LocalNode, start_swarm};
use crate::hash::random_bytes;
use crate::node::views::JobView;
use crate::node::{NodeInfo, SubmitRequest};
use crate::web::bench::{RawReply, RawRequest};

const MIB: u64 = 1 << 20;

pub(super) async fn run(ctx: &Ctx, mib: u64) -> Result<Vec<Row>> {
    let (n, mib, fan_mib) = if ctx.quick {
        (3, mib.min(32), mib.min(8))
    } else {
        (8, mib, mib.min(256))
    };
    let dir = ctx.base.join("transfer");
    std::fs::create_dir_all(&dir)?;
    eprintln!("transfer: starting {n} nodes…");
    let nodes = start_swarm(&dir, "xfer-", n, &ctx.key, "127.0.0.1:0", |i| {
        let mut a = vec![
            "--test-bench-protocol".to_string(),
            "--engine-command".to_string(),
            NOOP_ENGINE.to_string(),
        ];
        if let Some(tags) = transfer_tags(i) {
            a.extend(["--tags".into(), tags.into()]);
        }
        a
    })
    .await?;
    let source: NodeInfo = nodes[0].api.get("/node").await?;
    let mut rows = Vec::new();
    let scene = dir.join("scene.bin");
    let size = mib * MIB;
    let data = random_bytes("bench scene", size as usize);
    std::fs::write(&scene, &data)?;
    eprintln!("transfer: {mib} MiB, raw, through the store, raw again…");
    settle_disks().await;
    let before = raw(&nodes[1].api, &source.id, size).await?;
    let (secs, _) = pull(&nodes, &scene, "one", 1, &[1]).await?;
    settle_disks().await;
    let after = raw(&nodes[1].api, &source.id, size).await?;
    // The machine drifts within a minute: the baseline is the mean of a
    // raw pull just before and just after the one through the store.
    let raw = (before + after) / 2.0;
    let gb_s = size as f64 / secs / 1e9;
    rows.push(Row::new(
        "6 transfer vs raw stream",
        raw / secs,
        "ratio",
        Target::AtLeast(0.8),
        format!(
            "{mib} MiB scene, one node to one: {secs:.2} s through chunks, store and disk; {raw:.2} s raw over the same connection ({:.2} GB/s; mean of {before:.2} s before and {after:.2} s after)",
            size as f64 / raw / 1e9
        ),
    ));
    rows.push(Row::new(
        "6 transfer rate",
        gb_s,
        "GB/s",
        Target::AtLeast(1.0),
        format!("{mib} MiB, one node to one, loopback"),
    ));
    // 7: the same scene with 1 MiB inserted in the middle.
    let mut edited = data[..data.len() / 2].to_vec();
    edited.extend(random_bytes("inserted", MIB as usize));
    edited.extend(&data[data.len() / 2..]);
    drop(data);
    let scene2 = dir.join("scene-edited.bin");
    std::fs::write(&scene2, &edited)?;
    drop(edited);
    eprintln!("transfer: dedup of the edited scene…");
    let (_, fetched) = pull(&nodes, &scene2, "one", 2, &[1]).await?;
    rows.push(Row::new(
        "7 dedup: bytes sent for an edited scene",
        fetched[0] as f64 / size as f64 * 100.0,
        "%",
        Target::AtMost(3.0),
        format!(
            "{mib} MiB scene with 1 MiB inserted in the middle: {:.1} MiB fetched",
            fetched[0] as f64 / MIB as f64
        ),
    ));
    let _ = std::fs::remove_file(&scene);
    let _ = std::fs::remove_file(&scene2);
    if n > 2 {
        eprintln!("transfer: {fan_mib} MiB to one node, then to {}…", n - 1);
        let fan = fan_out(&nodes, &dir, fan_mib).await?;
        rows.push(Row::new(
            "6 one node to seven, vs one to one",
            fan.ratio(),
            "ratio",
            Target::AtMost(1.5),
            fan.detail(),
        ));
    }
    Ok(rows)
}

/// What [`fan_out`] measured.
pub(super) struct FanOut {
    mib: u64,
    receivers: usize,
    /// Seconds to one node, and to every receiver at once.
    single: f64,
    all: f64,
    /// MiB the receivers fetched in all, and how much the source sent.
    fetched: f64,
    from_source: f64,
}

impl FanOut {
    pub(super) fn ratio(&self) -> f64 {
        self.all / self.single
    }

    pub(super) fn detail(&self) -> String {
        let FanOut {
            mib,
            receivers,
            single,
            all,
            fetched,
            from_source,
        } = self;
        format!(
            "{mib} MiB to {receivers} nodes at once: {all:.2} s; to one: {single:.2} s; {fetched:.0} MiB fetched in all, {from_source:.0} MiB of it from the source"
        )
    }
}

/// One node to all the others (tag `fan`), against one to one (tag `one`),
/// same size. Also says how much of it the source sent: the rest, the
/// receivers sent each other (a chunk is served by any node that has it).
pub(super) async fn fan_out(nodes: &[LocalNode], dir: &Path, mib: u64) -> Result<FanOut> {
    let receivers: Vec<usize> = (1..nodes.len()).collect();
    let one = dir.join("fan-one.bin");
    std::fs::write(&one, random_bytes("fan one", (mib * MIB) as usize))?;
    let (single, _) = pull(nodes, &one, "one", 3, &[1]).await?;
    let many = dir.join("fan-many.bin");
    std::fs::write(&many, random_bytes("fan many", (mib * MIB) as usize))?;
    let served_before = metric(&nodes[0].api, SERVED, "").await?;
    let (all, fetched) = pull(nodes, &many, "fan", 4, &receivers).await?;
    let from_source =
        (metric(&nodes[0].api, SERVED, "").await? - served_before) as f64 / MIB as f64;
    let _ = std::fs::remove_file(&one);
    let _ = std::fs::remove_file(&many);
    Ok(FanOut {
        mib,
        receivers: receivers.len(),
        single,
        all,
        fetched: fetched.iter().sum::<u64>() as f64 / MIB as f64,
        from_source,
    })
}

/// The command engine of the transfer benchmarks: writes the frame number.
pub(super) const NOOP_ENGINE: &str =
    r#"noop=sh -c 'echo $3 > "$2/frame_$(printf %04d $3).txt"' sh {scene} {output} {frame}"#;

/// The tags of node `i` (1-based): the first is the source, the second
/// the receiver of one to one; all but the first receive the fan-out.
pub(super) fn transfer_tags(i: usize) -> Option<&'static str> {
    match i {
        1 => None,
        2 => Some("one,fan"),
        _ => Some("fan"),
    }
}

/// Submit a job on the first node that only the nodes tagged `tag` can run,
/// and time until each of `receivers` holds the scene. Returns the seconds
/// and the bytes each receiver fetched.
async fn pull(
    nodes: &[LocalNode],
    scene: &Path,
    tag: &str,
    frame: u32,
    receivers: &[usize],
) -> Result<(f64, Vec<u64>)> {
    let size = std::fs::metadata(scene)?.len();
    let mut before = Vec::new();
    for &r in receivers {
        before.push(fetched(&nodes[r].api).await?);
    }
    let req = SubmitRequest {
        scene: scene.display().to_string(),
        engine: Some("noop".into()),
        frames: if receivers.len() == 1 {
            frame.to_string()
        } else {
            format!("{frame}-{}", frame as usize + receivers.len() - 1)
        },
        requirements: vec![tag.to_string()],
        name: Some("bench transfer".into()),
        ..SubmitRequest::default()
    };
    let job: JobView = nodes[0].api.post("/jobs", &req).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let mut got = vec![0u64; receivers.len()];
    if let [r] = receivers {
        // One receiver: its job finishing proves the whole scene arrived.
        wait_done(
            &nodes[*r].api,
            &job.id,
            Duration::from_secs(600),
            "transfer",
        )
        .await?;
        let secs = started.elapsed().as_secs_f64();
        got[0] = fetched(&nodes[*r].api).await? - before[0];
        return Ok((secs, got));
    }
    loop {
        for (k, &r) in receivers.iter().enumerate() {
            got[k] = fetched(&nodes[r].api).await? - before[k];
        }
        if got.iter().all(|&g| g >= size) {
            return Ok((started.elapsed().as_secs_f64(), got));
        }
        if Instant::now() > deadline {
            bail!("the scene did not reach every node in 600 s: {got:?} of {size} bytes");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the page cache holds nothing dirty, so that the writeback
/// of what the last step wrote (the scene, a pull's chunks and files) does
/// not share the cores with the next timed step.
async fn settle_disks() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    let _ = tokio::task::spawn_blocking(|| unsafe { libc::sync() }).await;
}

/// The raw baseline: seconds to pull `bytes` from `peer`.
async fn raw(api: &Api, peer: &str, bytes: u64) -> Result<f64> {
    let reply: RawReply = api
        .post(
            "/bench/raw",
            &RawRequest {
                peer: peer.to_string(),
                bytes,
            },
        )
        .await?;
    Ok(reply.elapsed_ms / 1000.0)
}

/// A node's chunk bytes fetched so far, from its metrics.
async fn fetched(api: &Api) -> Result<u64> {
    metric(api, FETCHED, "").await
}

const FETCHED: &str = "renderswarm_chunk_bytes_fetched_total";
const SERVED: &str = "renderswarm_chunk_bytes_served_total";
