//! The blob store within `--cache-size`: what no job needs goes, what a job
//! needs stays, whatever the size.

use std::path::Path;

use crate::harness::*;

fn trims(node: &NodeProc) -> u64 {
    node.info()["cache"]["trims"].as_u64().unwrap()
}

/// Wait for two more trims than now: one that may have started before
/// the caller's change, and a whole one after it.
fn wait_for_a_trim(node: &NodeProc) {
    let start = trims(node);
    wait_for("the store to be trimmed twice", || {
        (trims(node) >= start + 2).then_some(())
    })
    .unwrap_or_else(|| panic!("no trim\n{}", node.log_text()));
}

fn unpacked_scenes(data: &Path) -> usize {
    std::fs::read_dir(data.join("scenes")).unwrap().count()
}

fn frame_status(node: &NodeProc, job: &str, frame: u32) -> u16 {
    reqwest::blocking::get(format!("{}/api/v1/jobs/{job}/frames/{frame}", node.api))
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn the_store_keeps_what_jobs_need_and_trims_the_rest_to_its_size() {
    let engine = sleepy("60");
    let node = NodeProc::start(&[
        "--cache-size",
        "1K",
        "--test-cache-every-ms",
        "100",
        "--engine-command",
        &engine,
    ]);
    let orbit = example("orbit.toml");
    let orbit = orbit.to_str().unwrap();

    // Collected: once written out, nothing of it is needed.
    let out = tempfile::tempdir().unwrap();
    let res = node.cli(&[
        "submit",
        orbit,
        "--frames",
        "1-2",
        "--wait",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(res.status.success(), "{}", node.log_text());
    let collected = node
        .jobs()
        .into_iter()
        .find(|j| j.frames == "1-2")
        .unwrap()
        .id;
    // Not collected (no --out): its frame stays for whoever fetches it.
    let kept = node.submit(&[orbit, "--frames", "3"]);
    node.wait_job(&kept.id, "the uncollected job is done", |j| {
        j.tasks_done == 1
    });
    // Running: its scene stays, packed and unpacked.
    let tiny = example("tiny.toml");
    let running = node.submit(&[
        tiny.to_str().unwrap(),
        "--engine",
        "sleepy",
        "--frames",
        "1",
    ]);
    node.wait_job(&running.id, "the sleepy task runs", |j| {
        j.tasks_running == 1
    });

    wait_for_a_trim(&node);
    let cache = node.info()["cache"].clone();
    assert_eq!(cache["size"], 1024, "{cache}");
    assert!(cache["bytes_freed"].as_u64().unwrap() > 0, "{cache}");
    assert!(
        cache["bytes"].as_u64().unwrap() > 1024,
        "the needed blobs stay beyond the size: {cache}"
    );
    assert_eq!(
        frame_status(&node, &kept.id, 3),
        200,
        "an uncollected frame"
    );
    assert_eq!(
        frame_status(&node, &collected, 1),
        503,
        "a collected frame is evicted"
    );
    assert_eq!(
        unpacked_scenes(&node.data),
        1,
        "only the running job's scene stays unpacked"
    );

    // Cancelled, its scene is needed no more.
    let res = node.cli(&["cancel", &running.id]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    node.wait_job(&running.id, "the task stops", |j| j.tasks_running == 0);
    wait_for_a_trim(&node);
    assert_eq!(unpacked_scenes(&node.data), 0);
    assert_eq!(frame_status(&node, &kept.id, 3), 200, "still uncollected");
}
