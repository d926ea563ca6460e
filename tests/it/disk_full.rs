//! A full disk under a node: its data directory is a small tmpfs made by
//! the test (as root; CI runs as root), filled while the node works. The
//! node must say so (the reason names the full disk), fail the tasks
//! cleanly, keep serving, keep its ledger intact, and carry on once space
//! returns (`swarm retry` gives the failed tasks fresh attempts).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;
use renderswarm::ledger::JobStatus;

/// A tmpfs of `size` mounted for the test's lifetime.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(ok.success(), "mount -t tmpfs failed");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Whether this test can make a tmpfs (root); under `CI=true` it must.
fn root_or_skip() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but the disk-full test needs root to mount a tmpfs"
        );
        eprintln!("note: not root; skipping the disk-full test");
    }
    root
}

/// Fill the filesystem of `dir` with 64 KiB files until it is full, then
/// free `keep` of them: room for a little ledger, not for frames.
fn fill(dir: &Path, keep: usize) -> Vec<PathBuf> {
    let block = vec![7u8; 64 << 10];
    let mut files = Vec::new();
    for i in 0.. {
        let path = dir.join(format!("filler-{i}"));
        let mut f = std::fs::File::create(&path).unwrap();
        let full = f.write_all(&block).and_then(|()| f.sync_all()).is_err();
        files.push(path);
        if full {
            break;
        }
    }
    for path in files.drain(files.len().saturating_sub(keep)..) {
        std::fs::remove_file(path).unwrap();
    }
    files
}

fn events_text(node: &NodeProc) -> String {
    get_json(&format!("{}/api/v1/events", node.api)).to_string()
}

#[test]
fn a_full_disk_fails_tasks_cleanly_and_the_node_recovers_when_space_returns() {
    if !root_or_skip() {
        return;
    }
    let fs = Tmpfs::new("24m");
    let data = fs.path().join("data");
    let mut node = NodeProc::start_in(&data, &[]);
    let filler = fill(fs.path(), 2);
    let orbit = example("orbit.toml");
    let job = node.submit(&[
        orbit.to_str().unwrap(),
        "--frames",
        "1-4",
        "--max-attempts",
        "2",
    ]);
    // Tasks whose frames cannot be written fail (an attempt each); a task
    // whose records cannot be written is given back and waits for space.
    let failed = node.wait_job(&job.id, "tasks failing on the full disk", |j| {
        j.tasks_failed >= 1 && j.frames_done == 0
    });
    let reasons: Vec<String> = failed
        .tasks
        .iter()
        .flatten()
        .filter_map(|t| t.reason.clone())
        .collect();
    let said = reasons
        .iter()
        .chain(std::iter::once(&events_text(&node)))
        .any(|r| r.contains("No space left on device"));
    assert!(said, "the node must name the full disk: {reasons:?}");
    let paused = wait_for("the node to say it pauses for the disk", || {
        events_text(&node).contains("\"disk_full\"").then_some(())
    });
    assert!(
        paused.is_some(),
        "no disk_full event: {}",
        events_text(&node)
    );
    assert!(!node.info()["id"].is_null(), "the node still answers");

    for f in filler {
        std::fs::remove_file(f).unwrap();
    }
    let retried = node.cli(&["retry", &job.id]);
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    let done = node.wait_job(&job.id, "the job done once space returned", |j| {
        j.status == JobStatus::Done
    });
    assert_eq!(done.frames_done, 4);
    let before = outputs(&node.job(&job.id));

    node.terminate();
    let node = NodeProc::start_in(&data, &[]);
    let after = node.job(&job.id);
    assert_eq!(after.status, JobStatus::Done);
    assert_eq!(
        outputs(&after),
        before,
        "the ledger reopens with every frame"
    );
}

/// A disk under 5 GiB free is nearly full (the `disk_low` check), as a
/// small tmpfs always is: the node trims its store to what jobs need at
/// once, without waiting for its periodic trim (an hour here).
#[test]
fn a_node_on_a_nearly_full_disk_gives_its_cache_back() {
    if !root_or_skip() {
        return;
    }
    let fs = Tmpfs::new("64m");
    let data = fs.path().join("data");
    let node = NodeProc::start_in(&data, &["--test-cache-every-ms", "3600000"]);
    let out = tempfile::tempdir().unwrap();
    let orbit = example("orbit.toml");
    let res = node.cli(&[
        "submit",
        orbit.to_str().unwrap(),
        "--frames",
        "1-2",
        "--wait",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(res.status.success(), "{}", node.log_text());
    // Collected: nothing of the job is needed any more.
    let cache = wait_for("the store to give everything back", || {
        let c = node.info()["cache"].clone();
        (c["bytes_freed"].as_u64() > Some(0) && c["bytes"] == 0).then_some(c)
    });
    assert!(
        cache.is_some(),
        "cache: {}\n{}",
        node.info()["cache"],
        node.log_text()
    );
    assert_eq!(
        std::fs::read_dir(data.join("scenes")).unwrap().count(),
        0,
        "no unpacked scene is left"
    );
}

/// Each task's status and output blobs, as JSON.
/// A job archived while the disk is full loses none of its tasks: the rows
/// not yet written when they left memory wait for a write that succeeds.
#[test]
fn a_job_archived_on_a_full_disk_keeps_its_tasks() {
    use renderswarm::ledger::{Ledger, NodeId, ops};
    if !root_or_skip() {
        return;
    }
    let fs = Tmpfs::new("4m");
    let path = fs.path().join("ledger.redb");
    let ledger = Ledger::open(&path, NodeId::new("n0")).unwrap();
    let mut spec = crate::ledger_laws::spec(5);
    spec.frames.end = 2000;
    spec.frames_per_task = 1;
    let (id, rec) = ledger.submit(spec).unwrap();
    ledger.flush().unwrap();
    crate::ledger_laws::render_all(&ledger, id, &rec);
    let whole = ledger.job(id).unwrap().unwrap();
    let filler = fill(fs.path(), 0);
    ledger.apply_local(id, &ops::archive(&rec)).unwrap();
    assert!(ledger.flush().is_err(), "the full disk took 2,000 tasks");
    assert!(ledger.read(|jobs| jobs[&id].tasks.is_empty()));

    for f in filler {
        std::fs::remove_file(f).unwrap();
    }
    ledger.flush().unwrap();
    drop(ledger);
    let again = Ledger::open(&path, NodeId::new("n0")).unwrap();
    let kept = again.job(id).unwrap().unwrap();
    assert!(kept.archived.0);
    assert_eq!(kept.tasks, whole.tasks, "every task's row was written");
}

fn outputs(job: &renderswarm::node::views::JobView) -> String {
    let tasks: Vec<_> = job
        .tasks
        .iter()
        .flatten()
        .map(|t| {
            (
                t.index,
                t.status,
                serde_json::to_string(&t.outputs).unwrap(),
            )
        })
        .collect();
    format!("{tasks:?}")
}
