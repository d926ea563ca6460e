//! The types the node sees: configuration, events, handles, errors.
//!
//! Kept apart from the loop so that a reader learns the whole face of the
//! network layer from one short file.

use std::fmt;
use std::io;
use std::time::Duration;

use libp2p::gossipsub::MessageId;
use libp2p::identity::Keypair;
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};

/// Everything [`start`](super::start) needs.
#[derive(Clone)]
pub struct SwarmConfig {
    /// The node's identity; its `PeerId` is derived from it.
    pub keypair: Keypair,
    /// Where to listen, e.g. `/ip4/0.0.0.0/tcp/0`. Empty: dial only.
    pub listen: Vec<Multiaddr>,
    /// Peers dialled at start and re-dialled every ~2 s while not connected;
    /// with or without a `/p2p/<id>` suffix.
    pub peers: Vec<Multiaddr>,
    /// Discover peers on the LAN with mDNS (which ignores loopback).
    pub mdns: bool,
    /// How often mDNS asks the LAN (libp2p's default is 5 minutes).
    pub mdns_interval: Duration,
    /// Pre-shared swarm key: mixed into every Noise handshake (as its
    /// prologue), so nodes without the same key cannot complete one.
    pub psk: Option<[u8; 32]>,
    /// Gossipsub topics to subscribe to.
    pub topics: Vec<String>,
    /// Largest gossip payload, in bytes. Gossipsub's `max_transmit_size` is
    /// this plus a fixed envelope allowance for signature and metadata.
    pub max_gossip_bytes: usize,
    /// Request-response protocols, each with its own limits and timeout.
    pub protocols: Vec<ProtocolSpec>,
    /// How often each connection is pinged; a connection without a ping answer
    /// for three intervals is closed (a cut cable closes nothing by itself).
    pub ping_interval: Duration,
}

impl SwarmConfig {
    /// A config with sensible defaults that listens nowhere and knows no
    /// peers: mDNS off (every 5 s when turned on), no swarm key, no topics,
    /// 1 MiB gossip payloads, no protocols, ping every second.
    pub fn new(keypair: Keypair) -> Self {
        Self {
            keypair,
            listen: Vec::new(),
            peers: Vec::new(),
            mdns: false,
            mdns_interval: Duration::from_secs(5),
            psk: None,
            topics: Vec::new(),
            max_gossip_bytes: 1 << 20,
            protocols: Vec::new(),
            ping_interval: Duration::from_secs(1),
        }
    }
}

impl fmt::Debug for SwarmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwarmConfig")
            .field("peer_id", &self.keypair.public().to_peer_id())
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("mdns", &self.mdns)
            .field("mdns_interval", &self.mdns_interval)
            .field("psk", &self.psk.map(|_| "<set>"))
            .field("topics", &self.topics)
            .field("max_gossip_bytes", &self.max_gossip_bytes)
            .field("protocols", &self.protocols)
            .field("ping_interval", &self.ping_interval)
            .finish()
    }
}

/// One request-response protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolSpec {
    /// The libp2p protocol name, e.g. `/renderswarm/sync/1`; must start with `/`.
    pub name: &'static str,
    /// Largest request accepted or sent, in bytes (at most 4 GiB - 1).
    pub max_request: usize,
    /// Largest response accepted or sent, in bytes (at most 4 GiB - 1).
    pub max_response: usize,
    /// How long a request may take, from sending to the whole response.
    pub timeout: Duration,
}

/// What the network layer tells the node.
#[derive(Debug)]
pub enum Event {
    /// A gossip message; the node must [`report`](super::Client::report) a
    /// verdict on it (it is forwarded only when accepted).
    Message {
        /// The author (messages are signed, so this is verified).
        source: Option<PeerId>,
        /// The peer that forwarded it to us.
        from: PeerId,
        topic: String,
        data: Vec<u8>,
        handle: MessageHandle,
    },
    /// A request; answer with [`Client::respond`](super::Client::respond), or
    /// drop the channel to make the request fail at the requester.
    Request {
        from: PeerId,
        protocol: &'static str,
        data: Vec<u8>,
        channel: ResponseHandle,
    },
    /// The first connection to a peer was established.
    Connected(PeerId),
    /// The last connection to a peer closed.
    Disconnected(PeerId),
    /// A peer's subscription arrived: publishing to `topic` now reaches it.
    Subscribed { peer: PeerId, topic: String },
    /// A ping round-trip time.
    Rtt { peer: PeerId, rtt: Duration },
    /// A listen address became active.
    Listening(Multiaddr),
    /// A dial (configured peer, mDNS peer, or [`Client::dial`](super::Client::dial))
    /// failed; the re-dial goes on for configured and discovered peers.
    DialFailed { peer: Option<PeerId>, error: String },
}

/// Identifies a received gossip message for [`Client::report`](super::Client::report).
/// Move-only: a message gets exactly one verdict.
#[derive(Debug)]
pub struct MessageHandle {
    pub(super) id: MessageId,
    pub(super) from: PeerId,
}

/// The way back to a requester; move-only, used once by
/// [`Client::respond`](super::Client::respond).
#[derive(Debug)]
pub struct ResponseHandle {
    pub(super) protocol: usize,
    pub(super) channel: ResponseChannel<Vec<u8>>,
}

/// The node's judgement of a gossip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: deliver and forward.
    Accept,
    /// Invalid: drop, and penalise the peer that sent it.
    Reject,
    /// Not wanted (e.g. stale), but not the sender's fault: drop quietly.
    Ignore,
}

/// Why the swarm could not start.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("cannot derive the Noise handshake key from the node key: {0}")]
    Noise(#[source] libp2p::noise::Error),
    #[error("gossipsub rejected its configuration: {0}; check topics and max_gossip_bytes")]
    Gossipsub(String),
    #[error(
        "request-response protocol name {name:?} is invalid: it must start with '/', \
         e.g. /renderswarm/sync/1"
    )]
    BadProtocol { name: String },
    #[error("request-response protocol {name} is listed twice; list each protocol once")]
    DuplicateProtocol { name: String },
    #[error("{what} of {name} is {limit} bytes; the wire format allows at most 4294967295")]
    LimitTooLarge {
        name: String,
        what: &'static str,
        limit: usize,
    },
    #[error("ping_interval must be longer than zero; 1 s is the usual value")]
    ZeroPingInterval,
    #[error(
        "cannot listen on {addr}: {reason}; use an address of this machine, e.g. /ip4/0.0.0.0/tcp/0"
    )]
    Listen { addr: Multiaddr, reason: String },
    #[error("cannot start mDNS discovery: {0}; turn mDNS off and list peers instead")]
    Mdns(#[source] io::Error),
}

/// Why a network operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetError {
    #[error("the network layer has stopped; restart the node")]
    Closed,
    #[error("no request-response protocol {0} is configured; add it to SwarmConfig::protocols")]
    UnknownProtocol(String),
    #[error("{what} of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        what: String,
        size: usize,
        limit: usize,
    },
    #[error("publishing on {topic} failed: {reason}")]
    Publish { topic: String, reason: String },
    #[error("request on {protocol} to {peer} failed: {failure}")]
    Request {
        peer: PeerId,
        protocol: &'static str,
        failure: RequestFailure,
    },
    #[error("dialling {addr} failed: {reason}")]
    Dial { addr: Multiaddr, reason: String },
}

/// How a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestFailure {
    #[error("the peer could not be reached")]
    Unreachable,
    #[error("no complete response within the protocol's timeout")]
    Timeout,
    #[error("the connection closed before the response arrived")]
    ConnectionClosed,
    #[error("the peer does not speak this protocol")]
    Unsupported,
    #[error("stream error: {0}")]
    Stream(String),
}
