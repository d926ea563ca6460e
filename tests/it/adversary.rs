//! A hostile peer that speaks the protocol: garbage, oversized messages,
//! forged records, Dones for outputs nobody has, chunks with wrong bytes,
//! floods. The honest nodes drop and count it all, disconnect the peer, and
//! finish their job with every frame correct.
//!
//! What belongs here: attacks from another node, made with the library's
//! own swarm layer so they arrive exactly as a real peer's would.

use std::collections::BTreeMap;
use std::time::Duration;

use renderswarm::codec;
use renderswarm::hash::Hash;
use renderswarm::ledger::JobStatus;
use renderswarm::ledger::{Claim, Done, FrameRange, JobId, JobRecord, NodeId, Output, job_id};
use renderswarm::node::peers::Heartbeat;
use renderswarm::node::wire::{self, ChunkReply, DeltaMsg, SyncReply, SyncRequest};
use renderswarm::render::builtin;
use renderswarm::swarm::{self, Event, Keypair, PeerId, ProtocolSpec, SwarmConfig};
use renderswarm::telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

use crate::harness::*;

fn spec(name: &str, size: usize) -> ProtocolSpec {
    ProtocolSpec {
        name: Box::leak(name.to_string().into_boxed_str()),
        max_request: size,
        max_response: size,
        timeout: Duration::from_secs(20),
    }
}

fn delta(job: JobId, record: JobRecord) -> Vec<u8> {
    wire::encode(&DeltaMsg::Job { job, record })
}

#[test]
fn a_hostile_peer_cannot_stop_honest_nodes_from_finishing_correctly() {
    let nodes = swarm_of(2, &[]);
    let orbit = example("orbit.toml");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stop = CancellationToken::new();
    let (client, mut events) = runtime.block_on(async {
        let mut cfg = SwarmConfig::new(Keypair::generate_ed25519());
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        cfg.peers = vec![
            nodes[0].addr().parse().unwrap(),
            nodes[1].addr().parse().unwrap(),
        ];
        cfg.topics = vec![wire::TOPIC_LEDGER.into(), wire::TOPIC_HEARTBEAT.into()];
        cfg.max_gossip_bytes = 4 << 20;
        cfg.protocols = vec![
            spec(wire::PROTO_SYNC, 256 << 20),
            spec(wire::PROTO_CHUNK, 64 << 20),
            spec(wire::PROTO_HAVE, 1 << 20),
        ];
        swarm::start(cfg, stop.clone()).unwrap()
    });
    let me = client.local_peer_id();
    let honest: Vec<PeerId> = nodes.iter().map(|n| n.id.parse().unwrap()).collect();

    // Answer every request from the honest nodes with lies, in the background.
    let liar = client.clone();
    let (disconnects_tx, disconnects) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Request {
                    protocol,
                    data,
                    channel,
                    ..
                } if protocol == wire::PROTO_CHUNK => {
                    let asked = wire::decode_chunk_request(&data)
                        .map(|r| r.hashes.len())
                        .unwrap_or(0);
                    let reply = ChunkReply {
                        chunks: vec![Some(&b"these are not the bytes you asked for"[..]); asked],
                    };
                    liar.respond(channel, wire::encode(&reply));
                }
                Event::Request { channel, .. } => liar.respond(channel, b"\x01garbage".to_vec()),
                Event::Disconnected(p) => {
                    let _ = disconnects_tx.send(p);
                }
                _ => {}
            }
        }
    });
    runtime.block_on(async {
        for p in &honest {
            wait_connected(&client, *p).await;
        }
    });

    let job = nodes[0].submit(&[orbit.to_str().unwrap(), "--frames", "1-12"]);
    let id: JobId = job.id.parse().unwrap();
    let real = runtime.block_on(fetch_record(&client, honest[0], id));

    let trap = tempfile::tempdir().unwrap();
    let forged = runtime.block_on(async {
        // Before the garbage: the honest nodes must still listen to this
        // peer for the forged job to reach them at all.
        let forged = forge_in_their_name(&client, &real, trap.path()).await;
        attack_with_garbage(&client, &honest).await;
        attack_with_forgeries(&client, me, id, &real).await;
        flood(&client, me, id, &real).await;
        forged
    });

    // The honest nodes finish, every frame is right, and they counted the attacks.
    let out = tempfile::tempdir().unwrap();
    let done = nodes[0].wait_job(&job.id, "the job finishes despite the attacks", |j| {
        j.status == JobStatus::Done
    });
    let res = nodes[1].cli(&["fetch", &job.id, "--out", out.path().to_str().unwrap()]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let scene = builtin::Scene::parse(include_str!("../../examples/orbit.toml")).unwrap();
    for f in 1..=12 {
        let got = std::fs::read(out.path().join(format!("frame_{f:04}.png"))).unwrap();
        let want = builtin::render_png(
            &scene,
            f,
            &builtin::RenderOptions { threads: 2 },
            &Default::default(),
            &|_| {},
        )
        .unwrap();
        assert!(got == want, "frame {f} is not what a correct render gives");
    }
    for t in done.tasks.iter().flatten() {
        let by = t.node.as_deref().unwrap_or_default();
        assert_ne!(
            by,
            me.to_base58(),
            "a forged Done was accepted for task {}",
            t.index
        );
    }
    for n in &nodes {
        let bad = n.info()["bad_input"].as_u64().unwrap();
        println!("node {} counted {bad} bad inputs", &n.id[n.id.len() - 6..]);
        assert!(bad >= 20, "bad input was not counted: {bad}");
        let logged = n
            .log_text()
            .lines()
            .filter(|l| l.contains("dropped bad input") && l.contains(&me.to_base58()))
            .count();
        assert!(
            (1..=2).contains(&logged),
            "bad input from one peer is logged once a minute: {logged} lines"
        );
    }
    // A job forged in the first node's name, asking it to write frames into
    // a folder of the attacker's choosing: rendered (it is a valid job), but
    // never collected, since that node did not submit it. A later job the
    // node did submit is collected, so its collector has had its chance.
    nodes[0].wait_job(&forged.to_string(), "the forged job is rendered", |j| {
        j.status == JobStatus::Done
    });
    let legit = tempfile::tempdir().unwrap();
    let later = nodes[0].submit(&[
        orbit.to_str().unwrap(),
        "--frames",
        "1",
        "--out",
        legit.path().to_str().unwrap(),
    ]);
    nodes[0].wait_job(&later.id, "a job the node submitted is collected", |j| {
        j.collected
    });
    let written: Vec<_> = std::fs::read_dir(trap.path()).unwrap().collect();
    assert!(
        written.is_empty(),
        "a forged job made a node write {} files",
        written.len()
    );
    let cut = disconnects
        .recv_timeout(DEADLINE)
        .expect("an honest node disconnects the hostile peer");
    assert!(honest.contains(&cut));
    stop.cancel();
}

async fn wait_connected(client: &swarm::Client, peer: PeerId) {
    for _ in 0..600 {
        if client.connected_peers().await.contains(&peer) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the hostile peer never connected");
}

/// The job's record, asked for like any peer would (an empty digest).
async fn fetch_record(client: &swarm::Client, peer: PeerId, id: JobId) -> JobRecord {
    for _ in 0..200 {
        let req = wire::encode(&SyncRequest::Digest {
            jobs: BTreeMap::new(),
            alerts: BTreeMap::new(),
        });
        if let Ok(bytes) = client.request(peer, wire::PROTO_SYNC, req).await
            && let Ok(SyncReply::Diff { jobs, .. }) = wire::decode_sync_reply(&bytes)
            && let Some((_, r)) = jobs.into_iter().find(|(j, _)| *j == id)
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the honest node never shared the job");
}

async fn attack_with_garbage(client: &swarm::Client, honest: &[PeerId]) {
    for bytes in [
        vec![],
        vec![0xff; 7],
        vec![codec::VERSION; 100_000],
        b"\x01\x02\x03".to_vec(),
    ] {
        let _ = client.publish(wire::TOPIC_LEDGER, bytes.clone()).await;
        let _ = client.publish(wire::TOPIC_HEARTBEAT, bytes.clone()).await;
        for p in honest {
            let _ = client.request(*p, wire::PROTO_SYNC, bytes.clone()).await;
            let _ = client.request(*p, wire::PROTO_CHUNK, bytes.clone()).await;
            let _ = client.request(*p, wire::PROTO_HAVE, bytes.clone()).await;
        }
    }
    // Oversized: beyond the gossip limit and the sync request limit.
    let _ = client
        .publish(wire::TOPIC_LEDGER, vec![codec::VERSION; 2 << 20])
        .await;
    let _ = client
        .request(honest[0], wire::PROTO_SYNC, vec![codec::VERSION; 80 << 20])
        .await;
}

/// A valid job forged in the submitter's name, asking for its frames in
/// `trap`; returns its id.
async fn forge_in_their_name(
    client: &swarm::Client,
    real: &JobRecord,
    trap: &std::path::Path,
) -> JobId {
    let mut in_their_name = real.empty_like();
    in_their_name.spec.name = "forged in the submitter's name".into();
    in_their_name.spec.collect_dir = Some(trap.display().to_string());
    let forged = job_id(&in_their_name.spec);
    let _ = client
        .publish(wire::TOPIC_LEDGER, delta(forged, in_their_name.clone()))
        .await;
    // Gossip may not have a mesh yet; sync delivers for sure.
    for p in client.connected_peers().await {
        let _ = client
            .request(
                p,
                wire::PROTO_SYNC,
                wire::encode(&SyncRequest::Push {
                    jobs: vec![(forged, in_their_name.clone())],
                    alerts: vec![],
                }),
            )
            .await;
    }
    forged
}

async fn attack_with_forgeries(client: &swarm::Client, me: PeerId, id: JobId, real: &JobRecord) {
    let mine = NodeId::new(me.to_base58());
    // A record under a job id its spec does not hash to.
    let mut other = real.empty_like();
    other.spec.name = "forged".into();
    let _ = client
        .publish(wire::TOPIC_LEDGER, delta(id, other.clone()))
        .await;
    // A new job whose spec is invalid (no frames), correctly hashed.
    let mut bad = real.empty_like();
    bad.spec.frames = FrameRange {
        start: 9,
        end: 1,
        step: 1,
    };
    let _ = client
        .publish(wire::TOPIC_LEDGER, delta(job_id(&bad.spec), bad))
        .await;
    // Claims in the name of an honest node.
    let mut stolen = real.empty_like();
    stolen.tasks.entry(0).or_default().claims.insert(Claim {
        epoch: 99,
        lamport: 1,
        node: real.spec.submitter.clone(),
    });
    let _ = client.publish(wire::TOPIC_LEDGER, delta(id, stolen)).await;
    // Dones for outputs nobody has (asked for, this peer answers wrong bytes).
    let fake = fake_dones(real, &mine, 1);
    let _ = client
        .publish(wire::TOPIC_LEDGER, delta(id, fake.clone()))
        .await;
    // Such Dones carrying "manifests": the very bytes whose hashes they name
    // as outputs, which are no manifests.
    let manifests = (0..real.spec.task_count())
        .flat_map(|t| real.spec.task_frames(t))
        .map(|f| serde_bytes::ByteBuf::from(vec![f as u8, 7]))
        .collect();
    let inline = DeltaMsg::JobWithManifests {
        job: id,
        record: fake_dones(real, &mine, 2),
        manifests,
    };
    let _ = client
        .publish(wire::TOPIC_LEDGER, wire::encode(&inline))
        .await;
    // The same, pushed through sync.
    for p in client.connected_peers().await {
        let _ = client
            .request(
                p,
                wire::PROTO_SYNC,
                wire::encode(&SyncRequest::Push {
                    jobs: vec![(id, fake.clone()), (id, other.clone())],
                    alerts: vec![],
                }),
            )
            .await;
    }
    // A heartbeat in another node's name.
    let _ = client
        .publish(
            wire::TOPIC_HEARTBEAT,
            wire::encode(&heartbeat(real.spec.submitter.clone(), 1)),
        )
        .await;
}

/// A Done for every task of `real`, by `mine`, naming outputs that do not
/// exist: frame f's blob is the hash of the two bytes [f, 7].
fn fake_dones(real: &JobRecord, mine: &NodeId, epoch: u32) -> JobRecord {
    let mut fake = real.empty_like();
    for task in 0..real.spec.task_count() {
        let outputs = real
            .spec
            .task_frames(task)
            .into_iter()
            .map(|f| {
                (
                    f,
                    Output {
                        blob: Hash::of(&[f as u8, 7]),
                        ext: "png".into(),
                    },
                )
            })
            .collect();
        fake.tasks.entry(task).or_default().dones.insert(Done {
            outputs,
            node: mine.clone(),
            epoch,
            lamport: 4 + u64::from(epoch),
            render_ms: 1,
        });
    }
    fake
}

/// Valid-looking messages in bulk: heartbeats and duplicate deltas.
async fn flood(client: &swarm::Client, me: PeerId, id: JobId, real: &JobRecord) {
    let mine = NodeId::new(me.to_base58());
    for i in 0..1500u64 {
        let _ = client
            .publish(
                wire::TOPIC_HEARTBEAT,
                wire::encode(&heartbeat(mine.clone(), 10 + i)),
            )
            .await;
        let _ = client
            .publish(wire::TOPIC_LEDGER, delta(id, real.header()))
            .await;
    }
}

fn heartbeat(node: NodeId, stamp: u64) -> Heartbeat {
    Heartbeat {
        node,
        name: "mallory".into(),
        stamp,
        version: "0".into(),
        slots: 0,
        held: vec![],
        engines: vec![],
        tags: vec![],
        telemetry: Telemetry::default(),
        blobs: vec![],
        fetching: Vec::new(),
        web: None,
        addrs: vec![],
        alerts: vec![],
        sent_ms: 0,
        asleep: None,
    }
}
