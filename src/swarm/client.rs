//! The handle the node holds: every call is a command to the event loop.
//!
//! The command channel is unbounded on purpose: the only sender is the node
//! itself, each async call waits for its reply (so one caller has at most one
//! command in flight), and the fire-and-forget calls (`respond`, `report`)
//! must never be lost or block — a dropped response would fail a peer's
//! request for nothing. The loop handles every command without awaiting.

use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use super::stats::Stats;
use super::types::{MessageHandle, NetError, ProtocolSpec, ResponseHandle, Verdict};

/// What the node asks of the event loop.
pub(super) enum Command {
    Publish {
        topic: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Request {
        peer: PeerId,
        protocol: usize,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, NetError>>,
    },
    Respond {
        handle: ResponseHandle,
        data: Vec<u8>,
    },
    Report {
        handle: MessageHandle,
        verdict: Verdict,
    },
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    SetBlocked {
        peers: Vec<PeerId>,
        reply: oneshot::Sender<()>,
    },
    Disconnect {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    PeerScore {
        peer: PeerId,
        reply: oneshot::Sender<Option<f64>>,
    },
    SetAppScore {
        peer: PeerId,
        score: f64,
    },
    Close(oneshot::Sender<()>),
}

/// A cloneable handle to the running network layer.
#[derive(Clone)]
pub struct Client {
    local_peer_id: PeerId,
    commands: mpsc::UnboundedSender<Command>,
    stats: Arc<Stats>,
    protocols: Arc<[ProtocolSpec]>,
}

impl Client {
    pub(super) fn new(
        local_peer_id: PeerId,
        commands: mpsc::UnboundedSender<Command>,
        stats: Arc<Stats>,
        protocols: Arc<[ProtocolSpec]>,
    ) -> Self {
        Self {
            local_peer_id,
            commands,
            stats,
            protocols,
        }
    }

    /// This node's identity.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Publishes `data` on `topic`. With no subscribed peer yet this is `Ok`
    /// and counted in `gossip_unsent`: wait for [`Event::Subscribed`](super::Event::Subscribed).
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<(), NetError> {
        let topic = topic.to_owned();
        self.ask(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    /// Sends a request on `protocol` and waits for the response (at most the
    /// protocol's timeout). Dials the peer if it is known but not connected.
    pub async fn request(
        &self,
        peer: PeerId,
        protocol: &'static str,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        let (index, spec) = self
            .protocols
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == protocol)
            .ok_or_else(|| NetError::UnknownProtocol(protocol.to_owned()))?;
        if data.len() > spec.max_request {
            return Err(NetError::TooLarge {
                what: format!("{protocol} request"),
                size: data.len(),
                limit: spec.max_request,
            });
        }
        self.ask(|reply| Command::Request {
            peer,
            protocol: index,
            data,
            reply,
        })
        .await?
    }

    /// Answers a request; if the requester is gone the response is dropped.
    pub fn respond(&self, channel: ResponseHandle, data: Vec<u8>) {
        self.tell(Command::Respond {
            handle: channel,
            data,
        });
    }

    /// Gives gossipsub the node's verdict on a message: Accept forwards it,
    /// Reject also penalises the peer that sent it, Ignore just drops it.
    pub fn report(&self, message: MessageHandle, verdict: Verdict) {
        self.tell(Command::Report {
            handle: message,
            verdict,
        });
    }

    /// Peers with at least one open connection.
    pub async fn connected_peers(&self) -> Vec<PeerId> {
        self.ask(Command::ConnectedPeers).await.unwrap_or_default()
    }

    /// Addresses this node listens on (the real ports, not `/tcp/0`).
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.ask(Command::ListenAddrs).await.unwrap_or_default()
    }

    /// Dials `addr` once and waits until the connection is up or has failed.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.ask(|reply| Command::Dial { addr, reply }).await?
    }

    /// Blocks exactly `peers` (for partition tests): their connections close,
    /// we stop dialling them, and their dials are refused. An empty list heals
    /// everything (re-dialling reconnects within ~2 s). The refusal happens
    /// after the handshake, when the dialler's identity is known, so a peer
    /// blocked on one side only sees brief connections come and go; block on
    /// both sides for a silent partition.
    pub async fn set_blocked(&self, peers: Vec<PeerId>) {
        let _ = self.ask(|reply| Command::SetBlocked { peers, reply }).await;
    }

    /// Closes every connection to `peer` (configured peers are re-dialled).
    pub async fn disconnect(&self, peer: PeerId) {
        let _ = self.ask(|reply| Command::Disconnect { peer, reply }).await;
    }

    /// The gossipsub score of `peer`, if it is known.
    pub async fn peer_score(&self, peer: PeerId) -> Option<f64> {
        self.ask(|reply| Command::PeerScore { peer, reply })
            .await
            .ok()
            .flatten()
    }

    /// Sets the application-specific part of `peer`'s gossip score (weight 1):
    /// negative for misbehaviour seen outside gossip, such as a corrupt chunk.
    pub fn set_app_score(&self, peer: PeerId, score: f64) {
        self.tell(Command::SetAppScore { peer, score });
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Stops the event loop and closes every connection; returns when done.
    pub async fn close(&self) {
        let _ = self.ask(Command::Close).await;
    }

    fn tell(&self, command: Command) {
        if self.commands.send(command).is_err() {
            tracing::debug!("network layer stopped; command dropped");
        }
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .map_err(|_| NetError::Closed)?;
        answer.await.map_err(|_| NetError::Closed)
    }
}
