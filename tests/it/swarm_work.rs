//! Who takes which work, and where finished frames live: blocklists, tags,
//! fetching from any node, second copies of outputs.
//!
//! What belongs here: swarm behaviour beyond the headline acceptance tests
//! in `swarm.rs`.

use renderswarm::ledger::{JobStatus, TaskStatus};
use renderswarm::node::views::JobView;

use crate::harness::*;

/// A command engine writing `frame N` for frame N after `secs` seconds.
fn writer(name: &str, secs: &str) -> String {
    format!(
        "{name}=sh -c 'sleep {secs}; echo frame $3 > \"$2/frame_$(printf %04d $3).txt\"' sh {{scene}} {{output}} {{frame}}"
    )
}

/// A node whose engine keeps failing a job is blocklisted after 3 failures
/// and leaves the job to a node that can render it.
#[test]
fn a_failing_node_is_blocklisted_and_the_other_finishes() {
    let good = NodeProc::start(&["--engine-command", &writer("flaky", "0.2")]);
    let bad = NodeProc::start(&[
        "--engine-command",
        "flaky=sh -c 'exit 9'",
        "--peer",
        good.addr(),
    ]);
    good.wait_alive(2);
    let orbit = example("orbit.toml");
    let job = bad.submit(&[
        orbit.to_str().unwrap(),
        "--frames",
        "1-12",
        "--engine",
        "flaky",
        "--max-attempts",
        "6",
    ]);
    let done = good.wait_job(&job.id, "the job finishes", |j| j.status == JobStatus::Done);
    let failures_on_bad: u32 = done.tasks.iter().flatten().map(|t| t.failures).sum();
    println!("failures on the bad node: {failures_on_bad}");
    assert_eq!(
        failures_on_bad, 3,
        "the bad node stops claiming the job after 3 failures"
    );
    assert!(
        done.tasks
            .iter()
            .flatten()
            .all(|t| t.node.as_deref() == Some(good.id.as_str()))
    );
}

/// A job requiring a tag runs only on nodes that have it.
#[test]
fn requirements_send_work_only_to_tagged_nodes() {
    let engine = writer("w", "0.1");
    let plain = NodeProc::start(&["--engine-command", &engine]);
    let gpu = NodeProc::start(&[
        "--engine-command",
        &engine,
        "--tags",
        "gpu,bigmem",
        "--peer",
        plain.addr(),
    ]);
    plain.wait_alive(2);
    let orbit = example("orbit.toml");
    let job = plain.submit(&[
        orbit.to_str().unwrap(),
        "--frames",
        "1-8",
        "--engine",
        "w",
        "--require",
        "gpu",
    ]);
    let done = plain.wait_job(&job.id, "the job finishes", |j| j.status == JobStatus::Done);
    for t in done.tasks.iter().flatten() {
        assert_eq!(
            t.node.as_deref(),
            Some(gpu.id.as_str()),
            "task {} ran on an untagged node",
            t.index
        );
    }
}

/// Nodes that fetch one large scene at the same time feed each other: the
/// submitter sends it about once, not once per node (each tells the others
/// which chunks it has got, and sends them those it has so far).
#[test]
fn nodes_fetching_one_scene_at_once_feed_each_other() {
    exclusive();
    let nodes = submitter_and_renderers(&writer("w", "0.1"), "fan", 3);
    let dir = tempfile::tempdir().unwrap();
    let scene = dir.path().join("scene.bin");
    let size: usize = 96 << 20;
    let mut bytes = vec![0; size];
    blake3::Hasher::new()
        .update(b"fan-out scene")
        .finalize_xof()
        .fill(&mut bytes);
    std::fs::write(&scene, &bytes).unwrap();
    drop(bytes);
    let job = nodes[0].submit(&[
        scene.to_str().unwrap(),
        "--frames",
        "1-6",
        "--engine",
        "w",
        "--require",
        "fan",
    ]);
    for node in &nodes[1..] {
        wait_for("every renderer fetches the whole scene", || {
            (metric(node, FETCHED) >= size as f64).then_some(())
        })
        .unwrap_or_else(|| panic!("{} has not fetched the scene", node.api));
    }
    nodes[0].wait_job(&job.id, "the job finishes", |j| j.status == JobStatus::Done);
    let fetched: f64 = nodes[1..].iter().map(|n| metric(n, FETCHED)).sum();
    let from_submitter = metric(&nodes[0], SERVED);
    let from_renderers: f64 = nodes[1..].iter().map(|n| metric(n, SERVED)).sum();
    let mib = |b: f64| b / (1 << 20) as f64;
    eprintln!(
        "fetched {:.0} MiB in all: {:.0} from the submitter, {:.0} from the renderers",
        mib(fetched),
        mib(from_submitter),
        mib(from_renderers)
    );
    // Alone, each renderer would take the whole scene from the submitter:
    // three times its size.
    assert!(
        from_submitter < 2.0 * size as f64,
        "the submitter sent {:.0} MiB of a {:.0} MiB scene to 3 nodes",
        mib(from_submitter),
        mib(size as f64)
    );
    assert!(from_renderers > 0.0);
    let told: f64 = nodes[1..].iter().map(|n| metric(n, TOLD)).sum();
    assert!(told > 0.0, "no renderer told another of a chunk it had got");
}

const FETCHED: &str = "renderswarm_chunk_bytes_fetched_total";
const SERVED: &str = "renderswarm_chunk_bytes_served_total";
const TOLD: &str = "renderswarm_chunks_told_total";

/// `swarm fetch` works from any node, whoever rendered the frames.
#[test]
fn fetch_works_from_any_node() {
    let engine = writer("w", "0.1");
    let nodes = swarm_of(3, &["--engine-command", &engine]);
    let orbit = example("orbit.toml");
    let job = nodes[0].submit(&[orbit.to_str().unwrap(), "--frames", "1-9", "--engine", "w"]);
    nodes[0].wait_job(&job.id, "the job finishes", |j| j.status == JobStatus::Done);
    let out = tempfile::tempdir().unwrap();
    let res = nodes[2].cli(&[
        "fetch",
        &job.id[..10],
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    for f in 1..=9 {
        let text = std::fs::read_to_string(out.path().join(format!("frame_{f:04}.txt"))).unwrap();
        assert_eq!(text.trim(), format!("frame {f}"));
    }
}

/// Every finished frame is kept on a second node until it is collected: the
/// submitter dies, then a renderer dies, and the submitter still collects
/// every frame when it returns.
#[test]
fn outputs_survive_the_loss_of_their_renderer_before_collection() {
    let engine = writer("w", "0.2");
    // The submitter renders nothing: a frame it rendered and died holding
    // before anyone copied it would be on no live node, which is a
    // different story from the one told here.
    let mut nodes = submitter_and_renderers(&engine, "farm", 2);
    let out = tempfile::tempdir().unwrap();
    let orbit = example("orbit.toml");
    let job = nodes[0].submit(&[
        orbit.to_str().unwrap(),
        "--frames",
        "1-10",
        "--engine",
        "w",
        "--require",
        "farm",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    // The others take copies of the scene as soon as they hear of the job.
    nodes[1].wait_job(&job.id, "rendering has begun", |j| j.frames_done >= 1);
    nodes[0].kill9();
    let done = nodes[1].wait_job(&job.id, "the others finish", |j| {
        j.status == JobStatus::Done
    });
    assert!(
        done.tasks
            .iter()
            .flatten()
            .all(|t| t.status == TaskStatus::Done)
    );
    // Each output must now be on both live nodes: wait until the survivor
    // would hold everything, then kill the other.
    let survivor = &nodes[2];
    wait_for("second copies are made", || {
        let held = (1..=10).all(|f| store_holds(&survivor.data, format!("frame {f}\n").as_bytes()));
        held.then_some(())
    })
    .expect("the survivor holds a copy of every frame");
    nodes[1].kill9();
    let peer = nodes[2].addr().to_string();
    nodes[0].restart(&["--engine-command", &engine, "--peer", &peer]);
    nodes[0].wait_job(&job.id, "the returning submitter collects", |j| j.collected);
    for f in 1..=10 {
        let text = std::fs::read_to_string(out.path().join(format!("frame_{f:04}.txt"))).unwrap();
        assert_eq!(text.trim(), format!("frame {f}"));
    }
}

/// The submitter keeps a second copy of every frame a renderer finished,
/// fetched a renderer's frames at a time: a few requests for many frames,
/// not a manifest request and a chunk request for each.
#[test]
fn second_copies_of_many_frames_take_few_requests() {
    const FRAMES: u32 = 80;
    let engine = writer("w", "0");
    let nodes = submitter_and_renderers(&engine, "farm", 1);
    let submitter = &nodes[0];
    let before = metric(submitter, "renderswarm_requests_total");
    rendered_by_the_renderers(submitter, FRAMES);
    wait_for("the submitter holds a copy of every frame", || {
        let held =
            (1..=FRAMES).all(|f| store_holds(&submitter.data, format!("frame {f}\n").as_bytes()));
        held.then_some(())
    })
    .expect("the submitter keeps a copy of every frame");
    let asked = metric(submitter, "renderswarm_requests_total") - before;
    println!("second copies of {FRAMES} frames: {asked} requests from the submitter");
    assert!(
        asked < f64::from(FRAMES),
        "{asked} requests for {FRAMES} frames: copies went one frame at a time"
    );
}

/// A node that joins after a job is done checks every Done it learns of
/// by sync against its outputs' manifests, fetched in a few requests (a
/// request's worth at a time), not one request per frame: a node back from
/// a week away would otherwise make thousands before it had caught up.
#[test]
fn a_late_node_checks_the_frames_it_syncs_in_few_requests() {
    const FRAMES: u32 = 80;
    let engine = writer("w", "0");
    let nodes = submitter_and_renderers(&engine, "farm", 1);
    let job = rendered_by_the_renderers(&nodes[0], FRAMES);
    // No engine: it renders nothing, and has nothing to ask for but records
    // and the manifests that show them.
    let t0 = std::time::Instant::now();
    let late = NodeProc::start(&["--peer", nodes[0].addr()]);
    let synced = late.wait_job(&job.id, "the late node has every frame done", |j| {
        j.frames_done == u64::from(FRAMES)
    });
    println!("the late node caught up in {:?}", t0.elapsed());
    assert_eq!(synced.status, JobStatus::Done);
    let asked = metric(&late, "renderswarm_requests_total");
    println!("a late node synced a job of {FRAMES} done frames with {asked} requests");
    assert!(
        asked < f64::from(FRAMES) / 2.0,
        "{asked} requests to sync {FRAMES} done frames: their manifests went one at a time"
    );
}

/// A job of `frames` frames of engine `w` submitted on `submitter` for the
/// nodes tagged `farm` (of [`submitter_and_renderers`]), once they have
/// rendered it.
fn rendered_by_the_renderers(submitter: &NodeProc, frames: u32) -> JobView {
    let orbit = example("orbit.toml");
    let job = submitter.submit(&[
        orbit.to_str().unwrap(),
        "--frames",
        &format!("1-{frames}"),
        "--engine",
        "w",
        "--require",
        "farm",
    ]);
    submitter.wait_job(&job.id, "the renderers finish", |j| {
        j.status == JobStatus::Done
    })
}
