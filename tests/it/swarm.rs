//! Swarms of separate `swarm node` processes on loopback: sharing work,
//! surviving loss, converging after restarts and partitions.
//!
//! What belongs here: the swarm issue's acceptance tests. Each prints the
//! figures it measures (run with `--nocapture` to see them).

use std::path::Path;
use std::time::{Duration, Instant};

use renderswarm::ledger::{JobStatus, TaskStatus};
use renderswarm::node::views::JobView;
use renderswarm::render::builtin;

use crate::harness::*;

/// Every output of `job` is byte-identical to a direct (single-node)
/// render of the same frame.
fn assert_frames_match_direct(dir: &Path, frames: std::ops::RangeInclusive<u32>) {
    let scene = builtin::Scene::parse(include_str!("../../examples/orbit.toml")).unwrap();
    for f in frames {
        let got = std::fs::read(dir.join(format!("frame_{f:04}.png"))).unwrap();
        let want = builtin::render_png(
            &scene,
            f,
            &builtin::RenderOptions { threads: 2 },
            &std::sync::atomic::AtomicBool::new(false),
            &|_| {},
        )
        .unwrap();
        assert!(got == want, "frame {f} differs from a single-node render");
    }
}

fn renderers(job: &JobView) -> std::collections::BTreeSet<String> {
    job.tasks
        .iter()
        .flatten()
        .filter_map(|t| t.node.clone())
        .collect()
}

fn share_60_frames(n: usize) {
    let nodes = swarm_of(n, &[]);
    let out = tempfile::tempdir().unwrap();
    let orbit = example("orbit.toml");
    let started = Instant::now();
    let res = nodes[0].cli(&[
        "submit",
        orbit.to_str().unwrap(),
        "--frames",
        "1-60",
        "--wait",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(
        res.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&res.stderr),
        nodes[0].log_text()
    );
    let job = nodes[0].jobs().remove(0);
    let who = renderers(&job);
    println!(
        "{n}-node swarm: 60 frames in {:.1} s; renders started {}, wasted {}; {} nodes rendered",
        started.elapsed().as_secs_f64(),
        job.renders_started,
        job.renders_wasted,
        who.len()
    );
    assert_eq!(job.frames_done, 60);
    for node in &nodes {
        assert!(
            who.contains(&node.id),
            "node {} rendered nothing: {who:?}",
            node.id
        );
    }
    assert_eq!(
        job.renders_wasted, 0,
        "wasted renders in a swarm without faults"
    );
    assert_frames_match_direct(out.path(), 1..=60);
    // The others fetched the scene, and wrote it for their engine as its
    // chunks arrived rather than reading it back afterwards; the frames
    // above, identical to a direct render, show the file was whole.
    for node in &nodes[1..] {
        let log = node.log_text();
        assert!(
            log.contains("while fetching it; the rest in"),
            "node {} did not unpack the scene as it arrived:\n{log}",
            node.id
        );
    }
}

#[test]
fn two_node_swarm_shares_60_frames_without_waste() {
    share_60_frames(2);
}

#[test]
fn five_node_swarm_shares_60_frames_without_waste() {
    share_60_frames(5);
}

/// `kill -9` of a node mid-render: its task is re-claimed elsewhere within
/// the lease plus one second, and the job completes.
#[test]
fn killed_node_task_is_reclaimed_within_the_lease() {
    // One long task: the node that renders it is killed while the others
    // are idle, so the re-claim waits only for the lease, not for a slot.
    // The submitter does not render: killing it right after submitting
    // could take the only copy of the scene, a different story.
    let engine = sleepy("30");
    let mut nodes = submitter_and_renderers(&engine, "farm", 2);
    let job = submit_sleepy(&nodes[0], "1", &["--require", "farm"]);
    let running = nodes[0].wait_job(&job.id, "some node renders the task", |j| {
        j.tasks_running == 1
    });
    let victim_id = running.tasks.as_ref().unwrap()[0].node.clone().unwrap();
    let victim = nodes.iter().position(|n| n.id == victim_id).unwrap();
    let witness = 0;
    nodes[victim].kill9();
    let killed = Instant::now();
    nodes[witness].wait_job(&job.id, "the task is re-claimed elsewhere", |j| {
        let t = &j.tasks.as_ref().unwrap()[0];
        t.node.as_deref().is_some_and(|n| n != victim_id)
            && matches!(t.status, TaskStatus::Running | TaskStatus::Done)
    });
    let took = killed.elapsed();
    println!(
        "kill -9 to re-claim: {:.2} s (lease 3 s)",
        took.as_secs_f64()
    );
    assert!(
        took <= Duration::from_secs(4),
        "re-claim took {took:?}, more than the lease plus one second"
    );
    let done = nodes[witness].job(&job.id);
    println!(
        "after the kill: renders started {}, wasted {}",
        done.renders_started, done.renders_wasted
    );
}

/// `kill -9` of the submitting node mid-job: the others finish; when it
/// comes back it collects every output where it was asked to.
#[test]
fn killed_submitter_collects_when_it_returns() {
    let engine = sleepy("0.5");
    let mut nodes = swarm_of(3, &["--engine-command", &engine]);
    let out = tempfile::tempdir().unwrap();
    let job = submit_sleepy(&nodes[0], "1-12", &["--out", out.path().to_str().unwrap()]);
    nodes[1].wait_job(&job.id, "a few frames done", |j| j.frames_done >= 2);
    nodes[0].kill9();
    nodes[1].wait_job(&job.id, "the others finish the job", |j| {
        j.status == JobStatus::Done
    });
    let peer = nodes[1].addr().to_string();
    nodes[0].restart(&["--engine-command", &engine, "--peer", &peer]);
    nodes[0].wait_job(&job.id, "the submitter collects", |j| j.collected);
    for f in 1..=12 {
        let text = std::fs::read_to_string(out.path().join(format!("frame_{f:04}.txt"))).unwrap();
        assert_eq!(text.trim(), format!("frame {f}"));
    }
}

/// A killed node restarted on its data dir rejoins, syncs, and its ledger
/// digest equals the others'.
#[test]
fn restarted_node_converges_to_the_same_digest() {
    let engine = sleepy("0.2");
    let mut nodes = swarm_of(3, &["--engine-command", &engine]);
    let job = submit_sleepy(&nodes[0], "1-20", &[]);
    nodes[0].wait_job(&job.id, "some frames done", |j| j.frames_done >= 3);
    nodes[2].kill9();
    nodes[0].wait_job(&job.id, "the job finishes without it", |j| {
        j.status == JobStatus::Done
    });
    let peer = nodes[0].addr().to_string();
    nodes[2].restart(&["--engine-command", &engine, "--peer", &peer]);
    let want = nodes[0].digest();
    wait_for("digests converge", || {
        let all: Vec<String> = nodes.iter().map(|n| n.digest()).collect();
        all.iter().all(|d| *d == all[0]).then_some(())
    })
    .unwrap_or_else(|| panic!("digests differ: {want} vs {}", nodes[2].digest()));
}

/// Two nodes and a job of `frames`: node 1 stops (SIGTERM) once a few
/// frames are done, and node 0 finishes the job without it. Returns the
/// nodes, their engine, and the finished job as node 0 sees it.
fn finished_while_node_1_is_away(frames: &str) -> (Vec<NodeProc>, String, JobView) {
    let engine = sleepy("0.2");
    let mut nodes = swarm_of(2, &["--engine-command", &engine]);
    let job = submit_sleepy(&nodes[0], frames, &[]);
    nodes[1].wait_job(&job.id, "some frames done", |j| j.frames_done >= 3);
    nodes[1].terminate();
    let done = nodes[0].wait_job(&job.id, "the job finishes without it", |j| {
        j.status == JobStatus::Done
    });
    (nodes, engine, done)
}

/// A node that comes back after the swarm finished a job it left half done
/// claims nothing of it: it would have rendered again the tasks it last saw
/// pending, had it claimed before its first sync (it waits for that sync,
/// or a lease).
#[test]
fn a_node_back_from_away_renders_nothing_the_swarm_finished() {
    let (mut nodes, engine, before) = finished_while_node_1_is_away("1-30");
    let peer = nodes[0].addr().to_string();
    nodes[1].restart(&["--engine-command", &engine, "--peer", &peer]);
    wait_for("the returning node converges", || {
        let j = nodes[1].job(&before.id);
        (j.status == JobStatus::Done && nodes[1].digest() == nodes[0].digest()).then_some(())
    })
    .expect("converged");
    let started = metric(&nodes[1], "renderswarm_local_renders_started_total");
    let after = nodes[0].job(&before.id);
    assert_eq!(
        (started, after.renders_started),
        (0.0, before.renders_started),
        "renders started by the returning node, and in all"
    );
}

/// A node away while a job finished and was archived learns of the archive
/// when it returns, although archived jobs leave the digests nodes compare,
/// and takes the swarm's tasks with it: the job leaves its open list (so
/// it stops claiming the frames it last saw pending).
#[test]
fn a_node_away_during_an_archive_learns_of_it_when_it_returns() {
    let (mut nodes, engine, job) = finished_while_node_1_is_away("1-20");
    let out = nodes[0].cli(&["archive", &job.id]);
    assert!(out.status.success(), "archive: {out:?}");
    let peer = nodes[0].addr().to_string();
    nodes[1].restart(&["--engine-command", &engine, "--peer", &peer]);
    let seen = wait_for("the returning node hears of the archive", || {
        nodes[1]
            .all_jobs()
            .into_iter()
            .find(|j| j.id == job.id && j.archived)
    })
    .unwrap_or_else(|| {
        let j = nodes[1].job(&job.id);
        panic!(
            "node 1 still has the job open: {:?}, archived {}",
            j.status, j.archived
        )
    });
    assert_eq!(
        (seen.status, seen.frames_done),
        (JobStatus::Done, 20),
        "the swarm's tasks, not those it last saw"
    );
    assert!(nodes[1].jobs().iter().all(|j| j.id != job.id));
}

/// A node away while a job finished, was archived and its frames left the
/// cache of the node that kept them still learns every frame done: an
/// archived job's Dones are not dropped for want of their outputs'
/// manifests (they would never come back: its tasks are frozen).
#[test]
fn an_archived_job_whose_frames_left_the_cache_shows_every_frame_done_on_return() {
    let engine = sleepy("0.2");
    let small = [
        "--engine-command",
        &engine,
        "--cache-size",
        "1",
        "--test-cache-every-ms",
        "200",
    ];
    let mut nodes = swarm_of(2, &small);
    let job = submit_sleepy(&nodes[0], "1-20", &[]);
    nodes[1].wait_job(&job.id, "some frames done", |j| j.frames_done >= 3);
    nodes[1].terminate();
    let done = nodes[0].wait_job(&job.id, "the job finishes without it", |j| {
        j.status == JobStatus::Done
    });
    let out = nodes[0].cli(&["archive", &job.id]);
    assert!(out.status.success(), "archive: {out:?}");
    let frames: Vec<String> = (1..=20).map(|f| format!("frame {f}\n")).collect();
    wait_for("the archived job's frames leave the cache", || {
        let gone = frames
            .iter()
            .all(|f| !store_holds(&nodes[0].data, f.as_bytes()));
        gone.then_some(())
    })
    .expect("an archived job's frames are free to leave a small cache");
    let peer = nodes[0].addr().to_string();
    let mut back = small.to_vec();
    back.extend(["--peer", &peer]);
    nodes[1].restart(&back);
    let seen = wait_for("the returning node hears of the archive", || {
        nodes[1]
            .all_jobs()
            .into_iter()
            .find(|j| j.id == job.id && j.archived)
    })
    .expect("node 1 learns of the archive");
    assert_eq!(
        (seen.status, seen.frames_done),
        (JobStatus::Done, done.frames_done),
        "every frame done, as on the node that archived it"
    );
}

/// A node that joins after a job was submitted receives the whole ledger
/// and takes work.
#[test]
fn late_joiner_gets_the_ledger_and_takes_work() {
    let engine = sleepy("0.4");
    let nodes = swarm_of(2, &["--engine-command", &engine]);
    let job = submit_sleepy(&nodes[0], "1-30", &[]);
    let peer = nodes[1].addr().to_string();
    let late = NodeProc::start(&["--engine-command", &engine, "--peer", &peer]);
    let seen = late.wait_job(&job.id, "the late node knows the job", |_| true);
    assert_eq!(seen.frames_total, 30);
    let done = nodes[0].wait_job(&job.id, "the job finishes", |j| j.status == JobStatus::Done);
    assert!(
        renderers(&done).contains(&late.id),
        "the late node took no work: {:?}",
        renderers(&done)
    );
    let want = nodes[0].digest();
    wait_for("the late node converges", || {
        (late.digest() == want && nodes[1].digest() == want).then_some(())
    })
    .expect("digests converge");
}

/// Partition a 4-node swarm into two halves while both render, then heal:
/// every node's digest is identical, every frame is done, and the renders
/// both halves duplicated are counted as wasted.
#[test]
fn partition_then_heal_converges() {
    let engine = sleepy("0.3");
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..4).map(|i| tmp.path().join(format!("cut{i}"))).collect();
    for f in &files {
        std::fs::write(f, "").unwrap();
    }
    let first = NodeProc::start(&[
        "--engine-command",
        &engine,
        "--test-partition-file",
        files[0].to_str().unwrap(),
    ]);
    let peer = first.addr().to_string();
    let mut nodes = vec![first];
    for f in &files[1..] {
        nodes.push(NodeProc::start(&[
            "--engine-command",
            &engine,
            "--test-partition-file",
            f.to_str().unwrap(),
            "--peer",
            &peer,
        ]));
    }
    for n in &nodes {
        n.wait_alive(4);
    }
    let job = submit_sleepy(&nodes[0], "1-60", &[]);
    // Every node holds the scene (has rendered) before the cut.
    wait_every_node_rendered(&nodes, &job.id);
    let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    let (a, b) = (&ids[..2], &ids[2..]);
    for (i, f) in files.iter().enumerate() {
        let other = if i < 2 { b } else { a };
        std::fs::write(f, other.join("\n")).unwrap();
    }
    // Both halves lose the other's lease, then keep rendering on their own.
    for n in &nodes {
        wait_for("the other half's lease expires", || {
            (n.nodes().iter().filter(|v| v.alive).count() == 2).then_some(())
        })
        .expect("the cut is seen");
    }
    let before: Vec<u64> = nodes.iter().map(|n| n.job(&job.id).frames_done).collect();
    for (i, n) in nodes.iter().enumerate() {
        n.wait_job(&job.id, "progress on each side of the cut", |j| {
            j.frames_done >= before[i] + 4
        });
    }
    for f in &files {
        std::fs::write(f, "").unwrap();
    }
    wait_done_and_converged(&nodes, &job.id);
    let done = nodes[3].job(&job.id);
    println!(
        "partition: 60 frames done; renders started {}, wasted {} (duplicated across the cut)",
        done.renders_started, done.renders_wasted
    );
    assert_eq!(done.frames_done, 60);
}

/// Nodes with another swarm key, or none, cannot join a keyed swarm.
#[test]
fn swarm_key_keeps_strangers_out() {
    let tmp = tempfile::tempdir().unwrap();
    let key = |name: &str| {
        let p = tmp.path().join(name);
        let out = std::process::Command::new(swarm_bin())
            .arg("keygen")
            .arg(&p)
            .output()
            .unwrap();
        assert!(out.status.success());
        p.display().to_string()
    };
    let (k1, k2) = (key("one.key"), key("two.key"));
    let a = NodeProc::start(&["--swarm-key", &k1]);
    let b = NodeProc::start(&["--swarm-key", &k1, "--peer", a.addr()]);
    a.wait_alive(2);
    let stranger = NodeProc::start(&["--swarm-key", &k2, "--peer", a.addr()]);
    let keyless = NodeProc::start(&["--peer", a.addr()]);
    // Each stranger dials and fails in the handshake, and its log says why.
    for n in [&stranger, &keyless] {
        wait_for("a failed dial that names the swarm keys", || {
            n.log_text().contains("swarm keys differ").then_some(())
        });
    }
    for n in [&stranger, &keyless] {
        assert_eq!(
            n.nodes().len(),
            1,
            "a node without the swarm's key joined it: {:#?}",
            n.nodes()
        );
    }
    let seen_by_a: Vec<String> = a.nodes().into_iter().map(|n| n.id).collect();
    assert!(!seen_by_a.contains(&stranger.id) && !seen_by_a.contains(&keyless.id));
    assert!(seen_by_a.contains(&b.id));
}

/// Discovery by mDNS across processes (no `--peer`), under a swarm key of
/// the test's own so other tests' nodes stay out.
#[test]
fn mdns_discovers_peers_across_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("mdns.key");
    assert!(
        std::process::Command::new(swarm_bin())
            .arg("keygen")
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let key = key.display().to_string();
    let args = [
        "--listen",
        "/ip4/0.0.0.0/tcp/0",
        "--mdns-interval",
        "1",
        "--swarm-key",
        &key,
    ];
    let da = tmp.path().join("a");
    let db = tmp.path().join("b");
    let a = NodeProc::start_raw(&da, &args);
    let b = NodeProc::start_raw(&db, &args);
    a.wait_alive(2);
    b.wait_alive(2);
}

/// `--peer` alone, with mDNS off, joins a swarm (every other test relies on
/// it; this one says so by name), and `swarm peers` lists the other node.
#[test]
fn peer_flag_alone_joins_and_peers_lists_it() {
    let nodes = swarm_of(2, &[]);
    let out = nodes[0].cli(&["peers", "--json"]);
    assert!(out.status.success());
    let peers: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(peers.len(), 1);
    let p = &peers[0];
    assert_eq!(p["id"], nodes[1].id.as_str());
    assert_eq!(p["alive"], true);
    for field in ["name", "tasks", "cpu", "memory"] {
        assert!(p.get(field).is_some(), "`{field}` missing from {p}");
    }
    let table = nodes[0].cli(&["peers"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("idle"));
}
