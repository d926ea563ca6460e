//! Seeds for the fuzz targets under `fuzz/`: small, valid encodings of every
//! message kind, written by the code that really encodes them, so a format
//! change shows up as a seed change instead of silently starving the
//! fuzzers. An ignored test, because it writes into the repository:
//!
//! `cargo test --lib -- --ignored write_fuzz_seeds`
//!
//! then minimise with `cargo fuzz cmin` (see `fuzz/run.sh`). Scene seeds are
//! the examples; Blender seeds are the lines the parser's tests captured.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::codec;
use crate::hash::Hash;
use crate::ledger::alerts::{AlertEntry, AlertId, AlertRecord, Sent};
use crate::ledger::crdt::{Crdt, Lww};
use crate::ledger::{
    Claim, Control, Done, End, EndKind, FrameRange, JobRecord, JobSpec, NodeId, Output, Stamp,
    Start, job_id, ops,
};
use crate::node::peers::{Heartbeat, HeldTask};
use crate::node::wire::{ChunkReply, ChunkRequest, DeltaMsg, SyncReply, SyncRequest};
use crate::store::{BundleEntry, ChunkRef, Manifest};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

fn spec(name: &str, frames_per_task: u32) -> JobSpec {
    JobSpec {
        name: name.into(),
        scene: Hash::of(b"bundle"),
        scene_file: "scenes/orbit.toml".into(),
        engine: "builtin".into(),
        frames: FrameRange {
            start: 1,
            end: 6,
            step: 1,
        },
        frames_per_task,
        priority: 2,
        output_format: Some("PNG".into()),
        requirements: BTreeSet::from(["gpu".to_string()]),
        max_attempts: 3,
        timeout_secs: Some(60),
        collect_dir: Some("out".into()),
        options: BTreeMap::from([("device".to_string(), "cpu".to_string())]),
        submitter: NodeId::new("alice"),
        submitted_ms: 1_700_000_000_000,
    }
}

/// A job whose tasks went through every state, all by node `n1`.
fn busy_record() -> JobRecord {
    let n = NodeId::new("n1");
    let base = JobRecord::new(spec("orbit", 2));
    let claim = |epoch, lamport| Claim {
        epoch,
        lamport,
        node: n.clone(),
    };
    let mut outputs = BTreeMap::new();
    for f in [1, 2] {
        let ext = "png".to_string();
        outputs.insert(
            f,
            Output {
                blob: Hash::of(&[f as u8]),
                ext,
            },
        );
    }
    let deltas = [
        ops::claim(&base, 0, claim(1, 5)),
        ops::start(
            &base,
            0,
            Start {
                epoch: 1,
                node: n.clone(),
            },
        ),
        ops::done(
            &base,
            0,
            Done {
                outputs: outputs.into_iter().collect(),
                node: n.clone(),
                epoch: 1,
                lamport: 7,
                render_ms: 1200,
            },
        ),
        ops::claim(&base, 1, claim(1, 6)),
        ops::end(
            &base,
            1,
            End {
                epoch: 1,
                node: n.clone(),
                generation: 0,
                kind: EndKind::Failed,
                reason: "engine exited with status 1".into(),
                log: Some(Hash::of(b"log")),
            },
        ),
        ops::claim(&base, 2, claim(2, 9)),
        ops::control(
            &base,
            Stamp {
                lamport: 10,
                node: n.clone(),
            },
            Control::Paused,
        ),
    ];
    let mut rec = base;
    for d in &deltas {
        rec.try_merge(d).expect("same spec");
    }
    rec.priority = Lww::new(
        Stamp {
            lamport: 11,
            node: n.clone(),
        },
        5,
    );
    rec
}

fn alert() -> (AlertId, AlertRecord) {
    let n = NodeId::new("n1");
    let mut rec = AlertRecord::new(AlertEntry {
        time_ms: 1_700_000_000_000,
        node: n.clone(),
        kind: "task_failed".into(),
        severity: "warning".into(),
        node_name: "render-1".into(),
        job: Some(job_id(&spec("orbit", 2))),
        job_name: Some("orbit".into()),
        frames: vec![3, 4],
        reason: Some("engine exited with status 1".into()),
        log_tail: Some("Error: boom".into()),
        message: "task 1 of orbit failed".into(),
    });
    rec.claims.insert(Claim {
        epoch: 1,
        lamport: 12,
        node: n.clone(),
    });
    rec.sent.insert(Sent {
        epoch: 1,
        node: n,
        lamport: 13,
    });
    (AlertId(Hash::of(b"alert")), rec)
}

fn heartbeat() -> Heartbeat {
    let rec = busy_record();
    Heartbeat {
        node: NodeId::new("n1"),
        name: "render-1".into(),
        stamp: 14,
        version: "0.1.0".into(),
        slots: 2,
        held: vec![HeldTask {
            job: job_id(&rec.spec),
            task: 2,
            epoch: 2,
            progress: 0.5,
            frame: Some(5),
        }],
        engines: vec!["builtin".into(), "blender".into()],
        tags: vec!["gpu".into()],
        telemetry: Default::default(),
        blobs: vec![Hash::of(b"bundle")],
        fetching: vec![Hash::of(b"bundle")],
        web: Some("http://10.0.0.2:8080".into()),
        addrs: vec!["/ip4/10.0.0.2/tcp/7400".into()],
        alerts: vec![(alert().0, 1)],
        sent_ms: 1_700_000_000_000,
        asleep: None,
    }
}

fn manifests() -> Vec<(&'static str, Manifest)> {
    vec![
        (
            "file",
            Manifest::File {
                size: (256 << 10) + 10,
                chunks: vec![
                    ChunkRef {
                        hash: Hash::of(b"a"),
                        len: 256 << 10,
                    },
                    ChunkRef {
                        hash: Hash::of(b"b"),
                        len: 10,
                    },
                ],
            },
        ),
        (
            "empty_file",
            Manifest::File {
                size: 0,
                chunks: vec![],
            },
        ),
        (
            "bundle",
            Manifest::Bundle {
                entries: ["scene.toml", "tex/a.png", "tex/b.png"]
                    .iter()
                    .enumerate()
                    .map(|(i, p)| BundleEntry {
                        path: (*p).into(),
                        blob: Hash::of(p.as_bytes()),
                        size: i as u64 * 100,
                        executable: i == 0,
                    })
                    .collect(),
            },
        ),
    ]
}

#[test]
#[ignore = "writes the fuzz seeds into the repository"]
fn write_fuzz_seeds() {
    let rec = busy_record();
    let id = job_id(&rec.spec);
    let fresh = JobRecord::new(spec("tiny", 1));
    let claim_delta = ops::claim(
        &rec,
        2,
        Claim {
            epoch: 2,
            lamport: 9,
            node: NodeId::new("n1"),
        },
    );
    let (alert_id, alert_rec) = alert();

    let job = |record: &JobRecord| DeltaMsg::Job {
        job: job_id(&record.spec),
        record: record.clone(),
    };
    write("gossip", "delta_job", &codec::encode(&job(&rec)));
    write("gossip", "delta_claim", &codec::encode(&job(&claim_delta)));
    write("gossip", "delta_new_job", &codec::encode(&job(&fresh)));
    let with_manifests = DeltaMsg::JobWithManifests {
        job: id,
        record: rec.clone(),
        manifests: vec![serde_bytes::ByteBuf::from(b"a manifest".to_vec())],
    };
    write(
        "gossip",
        "delta_with_manifests",
        &codec::encode(&with_manifests),
    );
    let alert_msg = DeltaMsg::Alert {
        id: alert_id,
        record: alert_rec.clone(),
    };
    write("gossip", "delta_alert", &codec::encode(&alert_msg));
    write("gossip", "heartbeat", &codec::encode(&heartbeat()));

    // Two versions of one job in one batch: where merges meet.
    let mut older = rec.empty_like();
    older.merge_tasks_from(&claim_delta);
    let digest = SyncRequest::Digest {
        jobs: BTreeMap::from([
            (id, Hash::of(b"h1")),
            (job_id(&fresh.spec), Hash::of(b"h2")),
        ]),
        alerts: BTreeMap::from([(alert_id, Hash::of(b"h3"))]),
    };
    write("sync", "request_digest", &codec::encode(&digest));
    let push = SyncRequest::Push {
        jobs: vec![(id, rec.clone()), (job_id(&fresh.spec), fresh.clone())],
        alerts: vec![(alert_id, alert_rec.clone())],
    };
    write("sync", "request_push", &codec::encode(&push));
    let diff = SyncReply::Diff {
        jobs: vec![(id, rec.clone()), (id, older)],
        alerts: vec![(alert_id, alert_rec)],
        want_jobs: vec![job_id(&fresh.spec)],
        want_alerts: vec![],
        more: true,
    };
    write("sync", "reply_diff", &codec::encode(&diff));
    write("sync", "reply_ack", &codec::encode(&SyncReply::Ack));

    let request = ChunkRequest {
        hashes: vec![Hash::of(b"a"), Hash::of(b"b"), Hash::of(b"c")],
    };
    write("chunks", "request", &codec::encode(&request));
    let manifest = manifests()[2].1.encode().expect("valid");
    let reply = ChunkReply {
        chunks: vec![Some(&b"chunk bytes"[..]), None, Some(&manifest)],
    };
    write("chunks", "reply", &codec::encode(&reply));

    for (name, m) in manifests() {
        write("manifest", name, &m.encode().expect("valid"));
    }

    // A frame stream: limit 300, 5 bytes a read; two frames, then an
    // oversized declaration.
    let mut frames = vec![3 | (4 << 3)];
    for body in [&b"hello"[..], &codec::encode(&SyncReply::Ack)] {
        frames.extend((body.len() as u32).to_be_bytes());
        frames.extend(body);
    }
    frames.extend(1000u32.to_be_bytes());
    write("frames", "two_frames", &frames);
    write("frames", "empty_frame", &[0, 0, 0, 0, 0]);

    // Every seed must pass the checks, or the fuzzers start outside them.
    crate::ledger::validate::check_record(id, &rec).expect("a valid record");
    crate::ledger::validate::check_record(job_id(&fresh.spec), &fresh).expect("a valid record");
    crate::ledger::alerts::check_alert(&alert().1).expect("a valid alert");

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tests = std::fs::read_to_string(root.join("src/render/blender_lines_tests.rs"))
        .expect("the Blender line tests");
    let lines = string_literals(&tests);
    for (i, line) in lines.iter().enumerate() {
        write("blender_lines", &format!("line_{i:02}"), line.as_bytes());
    }
    write("blender_lines", "whole_run", lines.join("\n").as_bytes());
    for ex in ["orbit.toml", "tiny.toml"] {
        let text = std::fs::read(root.join("examples").join(ex)).expect("example scene");
        write("scene", ex, &text);
    }
}

/// The string literals of Rust source longer than a few bytes, unescaped
/// enough for Blender lines (`\"`, `\\`, and `\` line continuations).
fn string_literals(src: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut chars = src.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut lit = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('\n') => {
                        let rest = chars.as_str().trim_start();
                        chars = rest.chars();
                    }
                    Some('n') => lit.push('\n'),
                    Some(other) => lit.push(other),
                    None => break,
                },
                c => lit.push(c),
            }
        }
        if lit.len() >= 8 && !out.contains(&lit) {
            out.push(lit);
        }
    }
    out
}

impl JobRecord {
    /// Copy `other`'s tasks in: the seeds' way to build a second version.
    fn merge_tasks_from(&mut self, other: &JobRecord) {
        for (i, t) in &other.tasks {
            self.tasks.entry(*i).or_default().merge(t);
        }
    }
}
