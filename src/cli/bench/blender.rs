//! Blender through the farm against Blender run by hand: a 12-frame Cycles
//! job on one node with 4 frames per task, against `blender -b` on the same
//! frames with the same arguments the engine uses — once as the same three
//! 4-frame runs (what the node adds: claiming, scene import and unpacking,
//! output import), and once as one 12-frame run (what a user saves by not
//! splitting the job, reported alongside). Rounds through a fresh node
//! alternate with rounds by hand (hand, node, hand, node, hand, node,
//! hand); each node round is compared with the mean of the two rounds by
//! hand either side of it, and the figure is the median of those ratios.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Ctx, Row, Target, wait_done};
use crate::cli::local_swarm::{LocalNode, NodeSpec};
use crate::node::SubmitRequest;
use crate::node::views::JobView;

/// An animated cube under a point light, heavy enough (320×240, 32 samples)
/// that rendering, not Blender's start-up, is most of a frame's cost.
const SCRIPT: &str = r#"
import bpy, sys
path = sys.argv[sys.argv.index("--") + 1]
s = bpy.context.scene
for o in list(bpy.data.objects):
    bpy.data.objects.remove(o, do_unlink=True)
bpy.ops.mesh.primitive_monkey_add(location=(0, 0, 0))
m = bpy.context.active_object
bpy.ops.object.modifier_add(type="SUBSURF")
m.modifiers[0].levels = 2
m.keyframe_insert("rotation_euler", frame=1)
m.rotation_euler = (0.0, 0.0, 3.0)
m.keyframe_insert("rotation_euler", frame=12)
light = bpy.data.objects.new("L", bpy.data.lights.new("L", "POINT"))
light.data.energy = 1000
light.location = (4, -4, 6)
s.collection.objects.link(light)
cam = bpy.data.objects.new("C", bpy.data.cameras.new("C"))
cam.location = (5, -5, 4)
cam.rotation_euler = (1.1, 0, 0.785)
s.collection.objects.link(cam)
s.camera = cam
s.render.engine = "CYCLES"
s.cycles.device = "CPU"
s.cycles.samples = 32
s.cycles.seed = 0
s.cycles.use_denoising = False
s.render.resolution_x, s.render.resolution_y, s.render.resolution_percentage = 320, 240, 100
s.frame_start, s.frame_end = 1, 12
s.render.image_settings.file_format = "PNG"
bpy.ops.wm.save_as_mainfile(filepath=path)
"#;

pub(super) async fn run(ctx: &Ctx, blender: Option<&Path>) -> Result<Vec<Row>> {
    let blender = match blender {
        Some(b) => b.to_path_buf(),
        None => match find_on_path("blender") {
            Some(b) => b,
            None if std::env::var("CI").as_deref() == Ok("true") => {
                bail!("the Blender benchmark needs Blender: install it or pass --blender PATH")
            }
            None => {
                eprintln!("blender: no `blender` on PATH; skipped (pass --blender PATH)");
                return Ok(Vec::new());
            }
        },
    };
    let frames: u32 = if ctx.quick { 4 } else { 12 };
    let dir = ctx.base.join("blender");
    std::fs::create_dir_all(&dir)?;
    let scene = dir.join("bench.blend");
    make_scene(&blender, &scene)?;
    let rounds = if ctx.quick { 1 } else { 3 };
    eprintln!("blender: {frames} frames by hand (1 of {})…", rounds + 1);
    let chunks: Vec<Vec<u32>> = (1..=frames)
        .collect::<Vec<_>>()
        .chunks(4)
        .map(<[u32]>::to_vec)
        .collect();
    let by_hand = |round: &str| -> Result<f64> {
        let started = Instant::now();
        for (i, c) in chunks.iter().enumerate() {
            direct(&blender, &scene, &dir.join(format!("direct-{round}{i}")), c)?;
        }
        Ok(started.elapsed().as_secs_f64())
    };
    let mut hand = vec![by_hand("0")?];
    let started = Instant::now();
    let all: Vec<u32> = (1..=frames).collect();
    direct(&blender, &scene, &dir.join("direct-all"), &all)?;
    let one_run = started.elapsed().as_secs_f64();
    // This machine's speed drifts by tens of per cent over a minute, and
    // Blender's own run time by ~10 % from run to run: each node round is
    // weighed against the rounds by hand just before and after it, and the
    // median of those ratios is reported, so one slow round on either side
    // moves the figure by less than it moved a mean of each side.
    let mut farm = Vec::new();
    for round in 1..=rounds {
        eprintln!("blender: {frames} frames through a node ({round} of {rounds})…");
        farm.push(through_node(ctx, &blender, &scene, &dir, frames, round).await?);
        eprintln!(
            "blender: {frames} frames by hand ({} of {})…",
            round + 1,
            rounds + 1
        );
        hand.push(by_hand(&round.to_string())?);
    }
    let ratios = bracketed_ratios(&farm, &hand);
    let list = |v: &[f64], digits: usize| {
        v.iter()
            .map(|s| format!("{s:.digits$}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(vec![Row::new(
        "9 Blender overhead",
        median(&ratios),
        "ratio",
        Target::AtMost(1.05),
        format!(
            "{frames} frames, 320×240, 32 samples, 4 per task on one node: {} s; by hand as the same {} runs: {} s (before, between and after); each node round against the mean of the rounds by hand either side: {}, median shown; as one run: {one_run:.2} s",
            list(&farm, 2),
            chunks.len(),
            list(&hand, 2),
            list(&ratios, 3),
        ),
    )])
}

/// Each node round's time over the mean of the rounds by hand before and
/// after it (`hand` holds one more round than `farm`, interleaved).
fn bracketed_ratios(farm: &[f64], hand: &[f64]) -> Vec<f64> {
    farm.iter()
        .zip(hand.windows(2))
        .map(|(node, around)| node / ((around[0] + around[1]) / 2.0))
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Seconds from submitting the job to a fresh node until it is done.
async fn through_node(
    ctx: &Ctx,
    blender: &Path,
    scene: &Path,
    dir: &Path,
    frames: u32,
    round: u32,
) -> Result<f64> {
    // A fresh node each round: a second job on the same node would find
    // the scene imported and unpacked already.
    let name = format!("blender-node-{round}");
    let extra = ["--blender".to_string(), blender.display().to_string()];
    let node = LocalNode::start(&NodeSpec::local(
        dir,
        &name,
        &ctx.key,
        &[],
        "127.0.0.1:0",
        &extra,
    ))?;
    let started = Instant::now();
    let job: JobView = node
        .api
        .post(
            "/jobs",
            &SubmitRequest {
                scene: scene.display().to_string(),
                engine: Some("blender".into()),
                frames: format!("1-{frames}"),
                frames_per_task: Some(4),
                name: Some("bench blender".into()),
                // The scene uses no files: time the renders, not a gathering.
                gather: Some(false),
                ..SubmitRequest::default()
            },
        )
        .await?;
    wait_done(&node.api, &job.id, Duration::from_secs(900), "blender").await?;
    Ok(started.elapsed().as_secs_f64())
}

fn make_scene(blender: &Path, path: &Path) -> Result<()> {
    let status = Command::new(blender)
        .args(["-b", "--factory-startup", "--python-exit-code", "1"])
        .args(["--python-expr", SCRIPT, "--"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", blender.display()))?;
    if !status.success() {
        bail!("{} could not make the benchmark scene", blender.display());
    }
    Ok(())
}

/// `blender -b` with the arguments the engine would use.
fn direct(blender: &Path, scene: &Path, out: &Path, frames: &[u32]) -> Result<()> {
    let args = crate::render::blender_args(scene, out, frames)
        .map_err(|e| anyhow::anyhow!("blender arguments: {e}"))?;
    let status = Command::new(blender)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", blender.display()))?;
    if !status.success() {
        bail!("blender failed rendering frames {frames:?} by hand");
    }
    Ok(())
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_round_is_weighed_against_the_hand_rounds_around_it() {
        let ratios = bracketed_ratios(&[20.0, 20.0, 30.0], &[10.0, 30.0, 20.0, 20.0]);
        assert_eq!(ratios, vec![1.0, 0.8, 1.5]);
        assert_eq!(
            median(&ratios),
            1.0,
            "the slow third round does not move it"
        );
        assert_eq!(median(&[2.0, 1.0]), 1.5);
    }
}
