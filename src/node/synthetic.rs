//! Tests only: a synthetic farm in one node's view, to measure the page
//! with 50 nodes and 10,000 frames on a machine that cannot run them.
//!
//! Enabled only by the hidden `swarm node --test-synthetic-farm N,F` flag.
//! It writes one job of F frames in mixed states (done, running, failed,
//! wasted, pending) under an engine no node has, so nobody renders it, and
//! makes N peers "heard from" every second with changing telemetry and some
//! of the job's tasks in hand. Nothing of it is gossiped: the job's Dones
//! name outputs that do not exist, which real peers would rightly refuse.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::peers::{Heartbeat, HeldTask};
use super::{Inner, lock};
use crate::hash::Hash;
use crate::ledger::{
    Claim, Done, End, EndKind, FrameRange, JobId, JobRecord, JobSpec, NodeId, Output, Start,
    TaskState,
};
use crate::telemetry::{GpuSample, Telemetry};

/// Build the job, then keep the fake peers alive until the node stops.
pub(crate) async fn run(inner: Arc<Inner>, nodes: usize, frames: u32) {
    let peers: Vec<NodeId> = (0..nodes)
        .map(|i| NodeId::new(format!("synthetic-{i:02}")))
        .collect();
    let Some(job) = make_job(&inner, &peers, frames) else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut t = 0u64;
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        t += 1;
        let now = Instant::now();
        let mut table = lock(&inner.peers);
        for (i, p) in peers.iter().enumerate() {
            table.heard(heartbeat(&inner, p, i, t, job, frames), now);
        }
    }
}

fn make_job(inner: &Inner, peers: &[NodeId], frames: u32) -> Option<JobId> {
    let spec = JobSpec {
        name: "synthetic_10k".into(),
        scene: Hash::of(b"synthetic scene"),
        scene_file: "synthetic.blend".into(),
        engine: "synthetic".into(),
        frames: FrameRange {
            start: 1,
            end: frames.max(1),
            step: 1,
        },
        frames_per_task: 1,
        priority: 0,
        output_format: None,
        requirements: BTreeSet::new(),
        max_attempts: 3,
        timeout_secs: None,
        collect_dir: None,
        options: BTreeMap::new(),
        submitter: inner.id.clone(),
        submitted_ms: super::events::now_ms(),
    };
    let (id, _) = inner.ledger.submit(spec.clone()).ok()?;
    let mut rec = JobRecord::new(spec);
    for task in 0..frames {
        if let Some(t) = task_state(task, frames, peers) {
            rec.tasks.insert(task, t);
        }
    }
    inner.ledger.apply_local(id, &rec).ok()?;
    Some(id)
}

/// The state of task `task`: the first 58% done (some with wasted renders,
/// some failed), a band running on the fake peers, the rest pending.
fn task_state(task: u32, frames: u32, peers: &[NodeId]) -> Option<TaskState> {
    let done_until = frames * 58 / 100;
    let n = peers.len().max(1);
    let holder = if task >= done_until {
        (task - done_until) as usize
    } else {
        task as usize % n
    };
    let node = peers.get(holder)?.clone();
    let mut t = TaskState::default();
    let claim = Claim {
        epoch: 1,
        lamport: 1 + u64::from(task),
        node: node.clone(),
    };
    t.claims.insert(claim);
    t.starts.insert(Start {
        epoch: 1,
        node: node.clone(),
    });
    if task < done_until && task % 97 == 13 {
        for epoch in 1..=3 {
            let reason = "synthetic failure: CUDA out of memory".to_string();
            t.ends.insert(End {
                epoch,
                node: node.clone(),
                generation: 0,
                kind: EndKind::Failed,
                reason,
                log: None,
            });
        }
    } else if task < done_until {
        if task % 83 == 5 {
            t.starts.insert(Start {
                epoch: 2,
                node: peers.get((task as usize + 1) % peers.len())?.clone(),
            });
        }
        let outputs = crate::ledger::Outputs::from([(
            task + 1,
            Output {
                blob: Hash::of(&task.to_le_bytes()),
                ext: "png".into(),
            },
        )]);
        t.dones.insert(Done {
            outputs,
            node,
            epoch: 1,
            lamport: 2 + u64::from(task),
            render_ms: 60_000 + u64::from(task % 50) * 1000,
        });
    } else if task >= done_until + peers.len() as u32 {
        return None;
    }
    Some(t)
}

fn heartbeat(inner: &Inner, p: &NodeId, i: usize, t: u64, job: JobId, frames: u32) -> Heartbeat {
    let wave = |k: u64| ((t + k + i as u64 * 7) % 40) as f32 / 40.0;
    let task = frames * 58 / 100 + i as u32;
    Heartbeat {
        node: p.clone(),
        name: format!("rn-{i:02}"),
        stamp: inner.ledger.clock().now() + 1,
        version: env!("CARGO_PKG_VERSION").into(),
        slots: 1,
        held: vec![HeldTask {
            job,
            task,
            epoch: 1,
            progress: wave(3),
            frame: Some(task + 1),
        }],
        engines: vec!["blender".into(), "synthetic".into()],
        tags: vec!["gpu".into()],
        telemetry: Telemetry {
            cpu: 60.0 + 40.0 * wave(0),
            cores: 32,
            memory_used: (48 + (i as u64 % 16)) << 30,
            memory_total: 128 << 30,
            load: 20.0,
            disk_free: (400 + i as u64 * 10) << 30,
            disk_total: 2 << 40,
            gpus: vec![GpuSample {
                name: "RTX A6000".into(),
                memory_total: 48 << 30,
                memory_used: 20 << 30,
                usage: Some(100.0 * wave(1)),
            }],
        },
        blobs: Vec::new(),
        fetching: Vec::new(),
        web: None,
        addrs: Vec::new(),
        alerts: Vec::new(),
        sent_ms: super::events::now_ms(),
        asleep: None,
    }
}
