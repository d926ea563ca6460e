//! The node: the one place where ledger, store, engines and network meet.
//!
//! A [`Node`] is a cheap handle on shared state. Starting one opens the
//! ledger and store in the data directory, finds the engines, and spawns the
//! node's loops (`loops.rs`): the scheduler that claims tasks when a slot is
//! free, the watchdog that stops renders which lost their claim or whose job
//! was cancelled, the flusher that makes merged gossip durable, the
//! heartbeat, and the collector that writes finished frames where the
//! submitter asked. Each claimed task runs in `worker.rs`: claim, settle,
//! start, render, record. What people ask of a node (submit, pause, views)
//! is in `api.rs`; the HTTP layer in `web` is a thin skin over it.
//!
//! A lone node (no `net` in its config) runs exactly the same code; the
//! swarm only adds gossip, sync and fetching behind [`net::Net`].

mod alerts;
mod api;
mod archive;
mod cache;
mod collect;
pub mod config;
mod encode;
pub mod events;
mod fetch;
mod fetch_many;
mod have;
mod inbound;
mod loops;
mod memory;
pub mod metrics;
pub mod net;
mod outbox;
pub mod peers;
mod replicate;
mod scenes;
pub mod scheduler;
pub mod sleep;
mod submit;
mod sync;
mod synthetic;
pub mod views;
pub mod wire;
mod worker;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use api::{Action, ActionError, CacheInfo, NodeInfo};
pub use collect::{collected_name, frame_file_name};
pub use config::{NetConfig, NodeConfig};
pub use events::{Event, EventLog, Severity};
#[doc(hidden)]
pub use inbound::check_authorship;
pub use submit::{SubmitError, SubmitRequest};

use crate::ledger::{Delta, JobId, Ledger, LedgerError, NodeId, TaskIndex};
use crate::render::{Engines, Progress};
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Renders shorter than this (as this node has timed the job's) have their
/// start wait for company in the outbox (see [`Inner::commit_start`]).
const SHORT_RENDER: Duration = Duration::from_millis(50);

/// Why a node could not start or do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Engine(#[from] crate::render::EngineError),
    #[error("network: {0}")]
    Net(String),
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// A task this node holds a claim on.
pub(crate) struct Running {
    pub epoch: u32,
    pub lamport: u64,
    pub progress: watch::Receiver<Progress>,
    pub cancel: CancellationToken,
    /// Why it was cancelled, for the End record.
    pub cancel_reason: Arc<Mutex<Option<String>>>,
    /// When its engine started; unset while the claim waits.
    pub began: Arc<std::sync::OnceLock<std::time::Instant>>,
}

/// The shared state behind a [`Node`] handle.
pub(crate) struct Inner {
    pub id: NodeId,
    pub cfg: NodeConfig,
    pub ledger: Arc<Ledger>,
    pub store: Arc<Store>,
    pub engines: Arc<Engines>,
    pub peers: Mutex<peers::PeerTable>,
    pub running: Mutex<HashMap<(JobId, TaskIndex), Running>>,
    pub events: EventLog,
    pub net: Option<net::Net>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    /// Wakes the scheduler when a slot frees.
    pub slot_freed: Notify,
    /// Jobs whose scene could not be fetched, and until when to leave them.
    pub scene_waits: Mutex<HashMap<JobId, std::time::Instant>>,
    /// The jobs open in the ledger when this node started, left alone until
    /// it has synced with a peer once or a lease has passed: a node that was
    /// away holds them as it last saw them, and would claim and render
    /// again tasks that others finished meanwhile. `None` once caught up.
    pub open_at_start: Mutex<Option<HashSet<JobId>>>,
    /// How long this node's renders of each job take (claims held ahead).
    pub render_times: loops::RenderTimes,
    /// How far each job's first tasks are done, for the scheduler's picks.
    pub done_prefix: scheduler::DonePrefix,
    /// The data disk is (nearly) full: trim the store now, to what jobs need.
    pub trim_now: Notify,
    /// One permit per slot, held from a render's start to its record.
    pub render_slots: Arc<tokio::sync::Semaphore>,
    /// The GPUs of the free GPU slots (see `NodeConfig::gpu_slots`).
    pub free_gpus: Mutex<Vec<u32>>,
    /// No new claims until then: the ledger or the store could not be
    /// written (a full disk), and claiming again at once would only fail again.
    pub storage_pause: Mutex<Option<std::time::Instant>>,
    /// Whether this node takes no new tasks now (by hand or by schedule).
    pub sleep: sleep::Sleep,
    pub scenes: scenes::SceneCache,
    pub telemetry: Mutex<telemetry_history::History>,
    /// Peers with an open connection.
    pub connected: Mutex<HashSet<libp2p::PeerId>>,
    /// Wakes the heartbeat loop early (a peer just subscribed).
    pub heartbeat_now: Notify,
    /// Where this node listens, as `/ip4/.../tcp/PORT/p2p/ID`.
    pub listen_addrs: Mutex<Vec<String>>,
    /// Bad input from peers, counted and rate-limit logged.
    pub bad_input: inbound::BadInput,
    pub metrics: metrics::Metrics,
    /// Large fetches under way, advertised in heartbeats (their chunks so
    /// far are served to peers fetching the same blob).
    pub fetches_shared: Mutex<BTreeSet<crate::hash::Hash>>,
    /// The chunks of this node's shared fetches while they run, with how
    /// many fetches want each.
    pub chunks_coming: Mutex<HashMap<crate::hash::Hash, u32>>,
    /// How many peers each chunk of a shared fetch has been served to
    /// while the fetch runs (see `sync::serve_chunks`).
    pub served_while_fetching: Mutex<HashMap<crate::hash::Hash, u32>>,
    /// What peers told of the chunks of this node's shared fetches.
    pub haves: have::Haves,
    /// One fetch per blob at a time.
    pub fetch_locks: Mutex<HashMap<crate::hash::Hash, Arc<tokio::sync::Mutex<()>>>>,
    /// Alert claims this node holds (alert, epoch), for its heartbeats.
    pub alert_claims: Mutex<HashMap<crate::ledger::AlertId, u32>>,
    /// When the node started.
    pub started: std::time::Instant,
    /// When this node last tried to dial each peer it heard of.
    pub dial_attempts: Mutex<HashMap<libp2p::PeerId, std::time::Instant>>,
    /// Every blob known to be complete in the store.
    pub complete_blobs: Mutex<replicate::Complete>,
    /// Blobs held completely, most recent last (advertised in heartbeats).
    pub held_blobs: Mutex<VecDeque<crate::hash::Hash>>,
    /// Blobs fetched complete whose chunks are still being made durable,
    /// with the syncs under way for each (a blob evicted and fetched again
    /// during its sync has two): usable here already, held (and advertised)
    /// once every sync has ended.
    pub syncing: Mutex<HashMap<crate::hash::Hash, usize>>,
}

pub(crate) mod telemetry_history;

/// A running node.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Node {
    /// Open the data directory, find the engines, join the swarm (if
    /// configured) and start working.
    pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        let dirs = DataDirs::create(&cfg.data_dir)?;
        let key = net::load_or_create_key(&dirs.root)?;
        let id = NodeId::new(key.public().to_peer_id().to_base58());
        let ledger = Arc::new(Ledger::open(&dirs.root.join("ledger.redb"), id.clone())?);
        let store = Arc::new(Store::open(&dirs.root.join("store"))?);
        let engines_cfg = cfg.engines.clone();
        let engines = tokio::task::spawn_blocking(move || Engines::new(&engines_cfg))
            .await
            .map_err(|e| NodeError::Net(e.to_string()))??;
        let shutdown = CancellationToken::new();
        let (net, net_events) = match &cfg.net {
            Some(net_cfg) => {
                let (n, ev) = net::Net::start(key, net_cfg, shutdown.child_token())?;
                (Some(n), Some(ev))
            }
            None => (None, None),
        };
        let inner = Arc::new(Inner {
            events: EventLog::new(id.clone()),
            peers: Mutex::new(peers::PeerTable::new(cfg.lease)),
            running: Mutex::new(HashMap::new()),
            scenes: scenes::SceneCache::new(dirs.scenes.clone()),
            telemetry: Mutex::new(telemetry_history::History::default()),
            connected: Mutex::new(HashSet::new()),
            heartbeat_now: Notify::new(),
            listen_addrs: Mutex::new(Vec::new()),
            bad_input: inbound::BadInput::default(),
            metrics: metrics::Metrics::default(),
            fetch_locks: Mutex::new(HashMap::new()),
            fetches_shared: Mutex::new(BTreeSet::new()),
            chunks_coming: Mutex::new(HashMap::new()),
            served_while_fetching: Mutex::new(HashMap::new()),
            haves: have::Haves::default(),
            held_blobs: Mutex::new(VecDeque::new()),
            complete_blobs: Mutex::new(Default::default()),
            syncing: Mutex::new(HashMap::new()),
            dial_attempts: Mutex::new(HashMap::new()),
            alert_claims: Mutex::new(HashMap::new()),
            started: std::time::Instant::now(),
            render_slots: Arc::new(tokio::sync::Semaphore::new(cfg.slots)),
            free_gpus: Mutex::new(cfg.gpu_slots.clone()),
            storage_pause: Mutex::new(None),
            sleep: sleep::Sleep::open(&dirs.root, cfg.sleep_schedule.clone()),
            scene_waits: Mutex::new(HashMap::new()),
            open_at_start: Mutex::new(net.is_some().then(|| open_jobs(&ledger))),
            render_times: loops::RenderTimes::default(),
            done_prefix: scheduler::DonePrefix::default(),
            trim_now: Notify::new(),
            id,
            cfg,
            ledger,
            store,
            engines: Arc::new(engines),
            net,
            shutdown,
            tracker: TaskTracker::new(),
            slot_freed: Notify::new(),
        });
        loops::spawn_all(&inner, net_events);
        let joined = inner.clone();
        inner.tracker.spawn(async move {
            let e = joined.entry(
                crate::alert::AlertKind::NodeJoined,
                format!("node {} joined the swarm", joined.cfg.name),
            );
            let id = crate::ledger::AlertId::of(
                "node_joined",
                &[joined.id.as_str().as_bytes(), &e.time_ms.to_le_bytes()],
            );
            joined.raise(id, e).await;
        });
        tracing::info!(node = %inner.id, name = %inner.cfg.name, "node started");
        Ok(Node { inner })
    }

    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.cfg
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.inner.ledger
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    pub fn events(&self) -> &EventLog {
        &self.inner.events
    }

    /// Resolves when the node starts shutting down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Stop cleanly: stop claiming, kill renders, release their claims so
    /// the swarm does not wait out the lease, flush the ledger.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutdown.cancel();
        inner.stop_renders(&format!("node {} shut down", inner.cfg.name));
        inner.tracker.close();
        if tokio::time::timeout(Duration::from_secs(20), inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some node tasks did not stop within 20 s");
        }
        let e = inner.entry(
            crate::alert::AlertKind::NodeLeft,
            format!("node {} left the swarm", inner.cfg.name),
        );
        let id = crate::ledger::AlertId::of(
            "node_left",
            &[inner.id.as_str().as_bytes(), &e.time_ms.to_le_bytes()],
        );
        inner.raise(id, e).await;
        let ledger = inner.ledger.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || ledger.flush()).await {
            tracing::error!("final ledger flush failed: {e}");
        }
        if let Some(net) = &inner.net {
            net.drained().await;
            // Give gossipsub a moment to put the last messages on the wire.
            tokio::time::sleep(Duration::from_millis(200)).await;
            net.close().await;
        }
        // Whatever still holds the node when the process exits, the file is
        // closed cleanly (redb would otherwise check all of it next start).
        let ledger = inner.ledger.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || ledger.close()).await {
            tracing::error!("closing the ledger failed: {e}");
        }
        tracing::info!("node stopped");
    }

    /// Where this node listens for peers, once it does (waits up to `wait`).
    pub async fn listen_addrs(&self, wait: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let addrs = lock(&self.inner.listen_addrs).clone();
            if !addrs.is_empty()
                || self.inner.net.is_none()
                || tokio::time::Instant::now() >= deadline
            {
                return addrs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// This node's own counters.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// The network's counters, when the node is in a swarm.
    pub fn net_stats(&self) -> Option<crate::swarm::StatsSnapshot> {
        self.inner.net.as_ref().map(|n| n.stats().snapshot())
    }

    /// Bad messages and records received from peers so far.
    pub fn bad_input_count(&self) -> u64 {
        self.inner
            .bad_input
            .count
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The latest hardware sample of this node.
    pub fn telemetry(&self) -> Telemetry {
        lock(&self.inner.telemetry).latest.clone()
    }
}

impl Inner {
    /// Merge a local change, make it durable, then tell the swarm.
    pub async fn commit(&self, id: JobId, delta: Delta) -> Result<(), NodeError> {
        self.commit_with_manifests(id, delta, Vec::new()).await
    }

    /// [`Inner::commit`] for a delta with Dones: the manifests of their
    /// outputs go out with it, so receivers need not ask for them.
    pub async fn commit_with_manifests(
        &self,
        id: JobId,
        delta: Delta,
        manifests: Vec<Vec<u8>>,
    ) -> Result<(), NodeError> {
        let seq = self.ledger.apply_local(id, &delta)?;
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || ledger.flush_to(seq))
            .await
            .map_err(|_| NodeError::ShuttingDown)??;
        if let Some(net) = &self.net {
            net.publish_delta(id, &delta, manifests);
        }
        Ok(())
    }

    /// Merge a local change and tell the swarm at once; the group commit
    /// makes it durable within a few tens of milliseconds. Returns the
    /// change's sequence number, for a caller that must wait for it with
    /// [`Ledger::flush_to`](crate::ledger::Ledger::flush_to) before acting
    /// on it (a claim: before its engine starts).
    pub fn commit_soon(&self, id: JobId, delta: Delta) -> Result<u64, NodeError> {
        let seq = self.ledger.apply_local(id, &delta)?;
        if let Some(net) = &self.net {
            net.publish_delta(id, &delta, Vec::new());
        }
        Ok(seq)
    }

    /// [`Inner::commit_soon`] for a task's start. The start of a task whose
    /// renders here take less than [`SHORT_RENDER`] waits a moment in the
    /// outbox for the done of the task before, still being stored, to go
    /// out with it: one signed message to check and merge on every peer
    /// instead of two.
    pub fn commit_start(&self, id: JobId, delta: Delta) -> Result<u64, NodeError> {
        let short = self.render_times.of(id).is_some_and(|t| t < SHORT_RENDER);
        if !short {
            return self.commit_soon(id, delta);
        }
        let seq = self.ledger.apply_local(id, &delta)?;
        if let Some(net) = &self.net {
            net.publish_start(id, &delta);
        }
        Ok(seq)
    }

    /// Stop every task this node holds, saying `why` in its End.
    pub fn stop_renders(&self, why: &str) {
        for r in lock(&self.running).values() {
            *lock(&r.cancel_reason) = Some(why.to_string());
            r.cancel.cancel();
        }
    }

    /// Jobs to leave alone for now: their scene could not be fetched, or
    /// this node has not caught up with the swarm since it started.
    pub fn jobs_left_alone(&self) -> HashSet<JobId> {
        let now = std::time::Instant::now();
        let mut alone: HashSet<JobId> = {
            let mut waits = lock(&self.scene_waits);
            waits.retain(|_, until| *until > now);
            waits.keys().copied().collect()
        };
        let mut stale = lock(&self.open_at_start);
        if now.saturating_duration_since(self.started) > self.cfg.lease {
            *stale = None;
        }
        alone.extend(stale.iter().flatten());
        alone
    }

    /// This node has synced with a peer: what it held from before it
    /// started is merged with the swarm's.
    pub fn caught_up(&self) {
        if lock(&self.open_at_start)
            .take()
            .is_some_and(|s| !s.is_empty())
        {
            tracing::debug!("synced with a peer: claiming from every job");
        }
    }

    /// The (job, task, epoch) triples this node holds.
    pub fn held(&self) -> BTreeSet<(JobId, TaskIndex, u32)> {
        lock(&self.running)
            .iter()
            .map(|((j, t), r)| (*j, *t, r.epoch))
            .collect()
    }

    /// Whether an alert claim still holds: this node's own while it holds
    /// it, a peer's while the peer table says so.
    pub fn alert_claim_holds(
        &self,
        alert: crate::ledger::AlertId,
        claim: &crate::ledger::Claim,
        now: std::time::Instant,
    ) -> bool {
        if claim.node == self.id {
            return lock(&self.alert_claims).get(&alert) == Some(&claim.epoch);
        }
        lock(&self.peers).alert_claim_holds(alert, claim, now)
    }

    /// Run `f` with this node's judgement of which claims hold: its own
    /// while it works on them, a peer's while the peer table says so, now.
    pub fn with_liveness<R>(&self, f: impl FnOnce(&peers::NodeLiveness<'_>) -> R) -> R {
        let held = self.held();
        let table = lock(&self.peers);
        let live = peers::NodeLiveness {
            me: &self.id,
            mine: &held,
            peers: &table,
            now: std::time::Instant::now(),
        };
        f(&live)
    }
}

/// The jobs with tasks left in `ledger`.
fn open_jobs(ledger: &Ledger) -> HashSet<JobId> {
    ledger.read(|jobs| {
        jobs.iter()
            .filter(|(_, r)| !r.archived.0 && r.has_tasks_left())
            .map(|(id, _)| *id)
            .collect()
    })
}

/// The data directory's layout.
pub(crate) struct DataDirs {
    pub root: PathBuf,
    pub scenes: PathBuf,
    pub work: PathBuf,
    pub uploads: PathBuf,
    /// One empty file per job submitted through this node, named by its id:
    /// a node writes outputs only for jobs it really submitted, never for a
    /// record from the network that merely names it as the submitter.
    pub submitted: PathBuf,
}

impl DataDirs {
    pub fn of(root: &std::path::Path) -> DataDirs {
        DataDirs {
            root: root.to_path_buf(),
            scenes: root.join("scenes"),
            work: root.join("work"),
            uploads: root.join("uploads"),
            submitted: root.join("submitted"),
        }
    }

    fn create(root: &std::path::Path) -> Result<DataDirs, NodeError> {
        let dirs = DataDirs::of(root);
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| NodeError::DataDir { path, source }
        };
        std::fs::create_dir_all(&dirs.root).map_err(io(&dirs.root))?;
        // Work and upload files of a previous run belong to renders and
        // uploads that died with it. Unpacked scenes are written without
        // fsync (the store holds them durably), so after a crash one could
        // be half on disk: they are unpacked again as tasks need them.
        for d in [&dirs.work, &dirs.uploads, &dirs.scenes] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        std::fs::create_dir_all(&dirs.submitted).map_err(io(&dirs.submitted))?;
        Ok(dirs)
    }
}
