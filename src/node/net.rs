//! The node's side of the network: its identity, and a handle that
//! publishes deltas and heartbeats in order without ever blocking the node.
//!
//! The swarm layer (`crate::swarm`) moves bytes; what the bytes mean is
//! decided here and in `inbound.rs` (gossip and requests in), `sync.rs`
//! (digest exchange) and `fetch.rs` (chunks).

use std::path::Path;
use std::sync::{Arc, Mutex};

use libp2p::identity::Keypair;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::outbox::Outgoing;
use super::peers::Heartbeat;
use super::wire::{self, DeltaMsg};
use super::{NetConfig, NodeError, lock};
use crate::ledger::{Delta, JobId};
use crate::swarm::{self, Client, Event, ProtocolSpec, SwarmConfig};

/// The node's key: made once, kept in the data directory (mode 0600), so a
/// restarted node is the same peer with the same claims.
pub fn load_or_create_key(dir: &Path) -> Result<Keypair, NodeError> {
    let path = dir.join("node.key");
    let io = |source| NodeError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the node key does not decode ({e}); move it away to make a new identity"),
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| io(std::io::Error::other(e.to_string())))?;
            write_private(&path, &bytes).map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

/// Write a file only its owner can read.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The node's connection to the swarm.
pub struct Net {
    pub client: Client,
    /// Deltas and heartbeats to publish, in order, by one task.
    outbox: mpsc::UnboundedSender<Outgoing>,
    /// Tests only (`NetConfig::replay_file`): every ledger message this
    /// node published, so a test can publish them all again.
    published: Option<Arc<Mutex<Vec<Vec<u8>>>>>,
}

/// What the swarm tells the node.
pub type NetEvents = mpsc::Receiver<Event>;

impl Net {
    /// Join the swarm.
    pub fn start(
        key: Keypair,
        cfg: &NetConfig,
        stop: CancellationToken,
    ) -> Result<(Net, NetEvents), NodeError> {
        let spec = |name, max_request, max_response, timeout| ProtocolSpec {
            name,
            max_request,
            max_response,
            timeout,
        };
        let swarm_cfg = SwarmConfig {
            keypair: key,
            listen: cfg.listen.clone(),
            peers: cfg.peers.clone(),
            mdns: cfg.mdns,
            mdns_interval: cfg.mdns_interval,
            psk: cfg.swarm_key,
            topics: vec![
                wire::TOPIC_LEDGER.to_string(),
                wire::TOPIC_HEARTBEAT.to_string(),
            ],
            max_gossip_bytes: wire::MAX_GOSSIP,
            protocols: vec![
                spec(
                    wire::PROTO_SYNC,
                    wire::MAX_SYNC_REQUEST,
                    wire::MAX_SYNC_REPLY,
                    wire::SYNC_TIMEOUT,
                ),
                spec(
                    wire::PROTO_CHUNK,
                    wire::MAX_CHUNK_REQUEST,
                    wire::MAX_CHUNK_REPLY,
                    wire::CHUNK_TIMEOUT,
                ),
                spec(wire::PROTO_HAVE, wire::MAX_HAVE, 16, wire::HAVE_TIMEOUT),
            ]
            .into_iter()
            .chain(cfg.bench_protocol.then(|| {
                spec(
                    wire::PROTO_BENCH,
                    8,
                    wire::MAX_BENCH_REPLY + 64,
                    wire::CHUNK_TIMEOUT,
                )
            }))
            .collect(),
            ping_interval: std::time::Duration::from_secs(1),
        };
        let (client, events) =
            swarm::start(swarm_cfg, stop.clone()).map_err(|e| NodeError::Net(e.to_string()))?;
        let (outbox, queue) = mpsc::unbounded_channel::<Outgoing>();
        let published = cfg
            .replay_file
            .is_some()
            .then(|| Arc::new(Mutex::new(Vec::new())));
        tokio::spawn(super::outbox::run(client.clone(), queue, published.clone()));
        Ok((
            Net {
                client,
                outbox,
                published,
            },
            events,
        ))
    }

    /// Gossip a delta (best effort: sync repairs what gossip loses), with
    /// the manifests of the outputs its Dones name (see
    /// [`DeltaMsg::JobWithManifests`]).
    pub fn publish_delta(&self, job: JobId, delta: &Delta, manifests: Vec<Vec<u8>>) {
        let total: usize = manifests.iter().map(Vec::len).sum();
        let manifests = if total <= wire::MAX_INLINE_MANIFESTS {
            manifests
                .into_iter()
                .map(serde_bytes::ByteBuf::from)
                .collect()
        } else {
            Vec::new()
        };
        let _ = self
            .outbox
            .send(Outgoing::Delta(job, Box::new(delta.clone()), manifests));
    }

    /// Gossip a task's start that may wait a moment for the deltas after it
    /// (see `node/outbox.rs`).
    pub fn publish_start(&self, job: JobId, delta: &Delta) {
        let _ = self
            .outbox
            .send(Outgoing::Start(job, Box::new(delta.clone())));
    }

    /// Gossip an alert record.
    pub fn publish_alert(&self, id: crate::ledger::AlertId, record: &crate::ledger::AlertRecord) {
        let msg = DeltaMsg::Alert {
            id,
            record: record.clone(),
        };
        let _ = self
            .outbox
            .send(Outgoing::Publish(wire::TOPIC_LEDGER, wire::encode(&msg)));
    }

    /// Gossip a heartbeat.
    pub fn publish_heartbeat(&self, hb: &Heartbeat) {
        let _ = self
            .outbox
            .send(Outgoing::Publish(wire::TOPIC_HEARTBEAT, wire::encode(hb)));
    }

    pub fn stats(&self) -> Arc<swarm::Stats> {
        self.client.stats()
    }

    /// Wait until everything queued so far was handed to the swarm.
    pub async fn drained(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.outbox.send(Outgoing::Drained(tx)).is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rx).await;
        }
    }

    /// Tests only: publish every ledger message this node has published
    /// so far again, in order, a few at a time so the receivers keep up.
    /// Returns how many were published again.
    pub async fn replay_published(&self) -> usize {
        let Some(kept) = &self.published else {
            return 0;
        };
        let again = lock(kept).clone();
        let mut sent = 0;
        for batch in again.chunks(20) {
            for bytes in batch {
                if self
                    .client
                    .publish(wire::TOPIC_LEDGER, bytes.clone())
                    .await
                    .is_ok()
                {
                    sent += 1;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        sent
    }

    pub async fn close(&self) {
        self.client.close().await;
    }
}
