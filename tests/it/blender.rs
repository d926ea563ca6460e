//! Real Blender through a real node: the outputs match a direct
//! `blender -b` render pixel for pixel, and a corrupt scene fails cleanly.
//!
//! What belongs here: tests that need Blender. Under `CI=true` a missing
//! Blender fails them; elsewhere they skip with a note.

use renderswarm::ledger::{JobStatus, TaskStatus};

use crate::harness::*;

/// Frames 1-3 through the node as one task and as three tasks, against a
/// direct render. Cycles with a fixed seed on the CPU is deterministic, so
/// the pixels must match exactly (the files differ only in their text
/// chunks: render date and time).
#[test]
fn blender_frames_match_a_direct_render() {
    let Some(blender) = blender_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let scene = tmp.path().join("cube.blend");
    make_blend(&blender, &scene);
    let direct = tmp.path().join("direct");
    render_direct(&blender, &scene, &direct, "1,2,3");

    let node = NodeProc::start(&[]);
    for fpt in ["3", "1"] {
        let out = tmp.path().join(format!("fpt{fpt}"));
        let res = node.cli(&[
            "submit",
            scene.to_str().unwrap(),
            "--frames",
            "1-3",
            "--frames-per-task",
            fpt,
            "--wait",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            res.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&res.stderr),
            node.log_text()
        );
        for f in 1..=3 {
            let name = format!("frame_{f:04}.png");
            let farm = decode_png(&out.join(&name));
            let by_hand = decode_png(&direct.join(&name));
            assert_eq!((farm.0, farm.1), (64, 48));
            assert!(
                farm == by_hand,
                "frame {f} with {fpt} frames per task differs from a direct render"
            );
        }
    }
    let jobs = node.jobs();
    let one_task = jobs.iter().find(|j| j.frames_per_task == 3).unwrap();
    assert_eq!(
        one_task.tasks_total, 1,
        "three frames in one Blender process"
    );
    assert_eq!(
        jobs.iter()
            .find(|j| j.frames_per_task == 1)
            .unwrap()
            .tasks_total,
        3
    );
}

/// A truncated .blend: each attempt fails with Blender's reason, the task is
/// retried up to max attempts, the job ends Failed, and the node carries on.
#[test]
fn corrupt_blend_fails_with_the_reason_and_the_node_carries_on() {
    let Some(blender) = blender_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.blend");
    make_blend(&blender, &good);
    let bytes = std::fs::read(&good).unwrap();
    let bad = tmp.path().join("truncated.blend");
    std::fs::write(&bad, &bytes[..1000]).unwrap();

    let node = NodeProc::start(&[]);
    // Not gathered: gathering would refuse the scene at submit, and this
    // test is about a render that fails.
    let job = node.submit(&[
        bad.to_str().unwrap(),
        "--frames",
        "1",
        "--max-attempts",
        "2",
        "--no-gather",
    ]);
    let job = node.wait_job(&job.id, "the corrupt job fails", |j| {
        j.status == JobStatus::Failed
    });
    let task = &job.tasks.as_ref().unwrap()[0];
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.failures, 2);
    let reason = task.reason.as_deref().unwrap_or("");
    assert!(
        reason.contains("could not read the scene"),
        "reason: {reason}"
    );
    let shown = node.cli(&["job", &job.id]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("could not read the scene"));

    let ok = node.submit(&[example("orbit.toml").to_str().unwrap(), "--frames", "1"]);
    node.wait_job(&ok.id, "the node still renders", |j| {
        j.status == JobStatus::Done
    });
}

/// A Blender job spread over a 2-node swarm matches a direct render.
#[test]
fn blender_job_over_two_nodes_matches_a_direct_render() {
    let Some(blender) = blender_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let scene = tmp.path().join("cube.blend");
    make_blend(&blender, &scene);
    let direct = tmp.path().join("direct");
    render_direct(&blender, &scene, &direct, "1,2,3");
    let nodes = swarm_of(2, &[]);
    let out = tmp.path().join("farm");
    let res = nodes[0].cli(&[
        "submit",
        scene.to_str().unwrap(),
        "--frames",
        "1-3",
        "--wait",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    for f in 1..=3 {
        let name = format!("frame_{f:04}.png");
        assert!(
            decode_png(&out.join(&name)) == decode_png(&direct.join(&name)),
            "frame {f} differs"
        );
    }
    let job = nodes[0].jobs().remove(0);
    let who: std::collections::BTreeSet<_> = job
        .tasks
        .iter()
        .flatten()
        .filter_map(|t| t.node.clone())
        .collect();
    assert_eq!(who.len(), 2, "both nodes rendered: {who:?}");
}
