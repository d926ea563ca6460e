//! Load: 20 node processes on this machine and a job of thousands of tasks
//! whose render costs ~nothing (a shell writing a few bytes), so it measures
//! the ledger and the gossip, not rendering. The job must finish and every
//! ledger converge; the test prints the time, wasted renders, bytes each
//! node sent and each node's peak memory.
//!
//! CI runs 20 nodes and 400 tasks; the full load of the hardening issue is
//! `RENDERSWARM_LOAD_TASKS=2000 cargo test --test it load -- --nocapture`
//! (`RENDERSWARM_LOAD_NODES` changes the node count).

use std::time::Instant;

use crate::harness::*;
use renderswarm::ledger::JobStatus;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident memory of a process, in MiB.
fn peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

#[test]
fn twenty_nodes_finish_thousands_of_cheap_tasks_and_converge() {
    exclusive();
    let n = env_or("RENDERSWARM_LOAD_NODES", 20) as usize;
    let tasks = env_or("RENDERSWARM_LOAD_TASKS", 400);
    let engine = "z=sh -c 'echo x > \"$1/frame_$(printf %04d $2).txt\"' sh {output} {frame}";
    let up = Instant::now();
    let nodes = swarm_of(n, &["--engine-command", engine]);
    eprintln!(
        "load: {n} nodes up and all alive to each other in {:.1?}",
        up.elapsed()
    );
    let scene = example("tiny.toml");
    let started = Instant::now();
    let job = nodes[0].submit(&[
        scene.to_str().unwrap(),
        "--engine",
        "z",
        "--frames",
        &format!("1-{tasks}"),
    ]);
    let done = nodes[0].wait_job(&job.id, "the load job finished", |j| j.status.is_final());
    let elapsed = started.elapsed();
    assert_eq!(done.status, JobStatus::Done, "{done:?}");
    assert_eq!(done.frames_done, tasks);
    let digests = wait_for("every ledger the same", || {
        let d: Vec<String> = nodes.iter().map(NodeProc::digest).collect();
        d.iter().all(|x| *x == d[0]).then_some(d)
    });
    assert!(digests.is_some(), "the ledgers did not converge");
    let converged = started.elapsed();
    eprintln!(
        "load: {tasks} tasks on {n} nodes in {elapsed:.2?} ({:.0} tasks/s), ledgers converged after {converged:.2?}; {} renders started, {} wasted",
        tasks as f64 / elapsed.as_secs_f64(),
        done.renders_started,
        done.renders_wasted
    );
    let mut rendered_by: std::collections::BTreeMap<String, usize> = Default::default();
    for t in nodes[0].job(&job.id).tasks.unwrap_or_default() {
        *rendered_by.entry(t.node.unwrap_or_default()).or_default() += 1;
    }
    for (i, node) in nodes.iter().enumerate() {
        let id = node.info()["id"].as_str().unwrap_or_default().to_string();
        let sent = metric(node, "renderswarm_bytes_sent_total");
        let peak = peak_mib(node.pid());
        eprintln!(
            "load: node {i:2}: {:5} tasks, {:8.0} KiB sent, peak {peak:.1} MiB",
            rendered_by.get(&id).copied().unwrap_or(0),
            sent / 1024.0,
        );
        assert!(sent > 0.0, "node {i} sent nothing: it took no part");
        assert!(peak > 0.0, "node {i}'s memory could not be read");
    }
}
