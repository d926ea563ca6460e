//! A node's validated settings.
//!
//! The CLI and the config file produce raw values; they are checked and
//! turned into a [`NodeConfig`] in one place (`cli/node.rs`), ripgrep-style,
//! so everything below it can trust what it is given.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;

use crate::render::EngineConfig;

/// The store's size unless `--cache-size` says otherwise: 20 GiB.
pub const DEFAULT_CACHE_SIZE: u64 = 20 << 30;

/// Finished jobs are archived 30 days after they were submitted.
pub const DEFAULT_ARCHIVE_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// How a node joins the swarm. `None` in [`NodeConfig::net`] runs a node
/// alone, without any network.
#[derive(Clone, Debug, Default)]
pub struct NetConfig {
    /// Where to listen (default: every interface, a free TCP port).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and whenever the connection drops.
    pub peers: Vec<Multiaddr>,
    /// Discover peers on the LAN by mDNS.
    pub mdns: bool,
    /// How often mDNS asks.
    pub mdns_interval: Duration,
    /// The private swarm's pre-shared key (32 bytes), if any.
    pub swarm_key: Option<[u8; 32]>,
    /// Tests only: a file listing peer ids (one per line) whose traffic is
    /// cut, re-read continuously, so a test can partition and heal a swarm.
    pub partition_file: Option<PathBuf>,
    /// Tests only: when this file appears, the node publishes every ledger
    /// message it has published so far again, deletes the file and writes
    /// the count to the file with `.done` added.
    pub replay_file: Option<PathBuf>,
    /// Benchmarks only: serve [`super::wire::PROTO_BENCH`].
    pub bench_protocol: bool,
}

/// Everything a node needs to run.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Ledger, store, scenes and work files live here.
    pub data_dir: PathBuf,
    /// What people call this node (default: the host name).
    pub name: String,
    /// Tags jobs can require (`gpu`, `bigmem`, ...).
    pub tags: BTreeSet<String>,
    /// Where the HTTP API and page listen.
    pub web: SocketAddr,
    /// Required for a non-loopback `web` address.
    pub web_token: Option<String>,
    /// Renders at a time.
    pub slots: usize,
    /// One entry per GPU slot: the GPU index a task in that slot renders on
    /// (each GPU repeated `--slots-per-gpu` times). Empty: tasks are not
    /// pinned, and a GPU job uses every GPU.
    pub gpu_slots: Vec<u32>,
    pub engines: EngineConfig,
    /// How often this node says it is alive.
    pub heartbeat: Duration,
    /// How long a peer counts as alive after its last heartbeat.
    pub lease: Duration,
    /// Failed attempts on one job after which this node stops taking it
    /// (while another node can).
    pub blocklist_after: u32,
    /// Bytes the blob store may hold: least recently used blobs are
    /// evicted beyond it, except those jobs still need (kept whatever the
    /// size).
    pub cache_size: u64,
    /// How often the store is trimmed to `cache_size`.
    pub cache_every: Duration,
    /// Finished jobs submitted longer ago than this are archived (see
    /// `archive.rs`); `None`: only by hand.
    pub archive_after: Option<Duration>,
    /// When this node takes no new tasks each week (see `sleep`).
    pub sleep_schedule: Option<super::sleep::SleepSchedule>,
    /// The swarm; `None` for a lone node.
    pub net: Option<NetConfig>,
    /// Where and when to send alerts; `None`: this node sends none (it still
    /// raises and shows them).
    pub alerts: Option<crate::alert::AlertConfig>,
    /// Tests only: show a synthetic farm of this many nodes and a job of
    /// this many frames (see `synthetic.rs`).
    pub synthetic: Option<(usize, u32)>,
}

impl NodeConfig {
    /// Defaults for a node keeping its data in `data_dir`.
    pub fn new(data_dir: PathBuf) -> NodeConfig {
        let heartbeat = Duration::from_secs(1);
        NodeConfig {
            data_dir,
            name: default_name(),
            tags: BTreeSet::new(),
            web: SocketAddr::from(([127, 0, 0, 1], 7878)),
            web_token: None,
            slots: 1,
            gpu_slots: Vec::new(),
            engines: EngineConfig::default(),
            heartbeat,
            lease: heartbeat * 3,
            blocklist_after: 3,
            cache_size: DEFAULT_CACHE_SIZE,
            cache_every: Duration::from_secs(60),
            archive_after: Some(DEFAULT_ARCHIVE_AFTER),
            sleep_schedule: None,
            net: None,
            alerts: None,
            synthetic: None,
        }
    }
}

/// The host name, or `node` when it cannot be read.
pub fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "node".to_string())
}
