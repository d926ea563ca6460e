//! The one task that owns the `Swarm`: commands in, events out.
//!
//! Nothing in here awaits anything but the `select!` itself, so a slow node
//! can never stall the network: events go out with `try_send`. Gossip
//! messages and inbound requests are dropped (and counted) when the node's
//! channel is full — gossip is best effort and a dropped request just fails
//! at the requester. Connection and subscription events are the node's view
//! of who is there, so they are never dropped: they wait in a bounded
//! backlog that drains as the node reads, and while it is not empty lossy
//! events are dropped rather than overtaking it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::gossipsub::{IdentTopic, MessageAcceptance, PublishError};
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::behaviour::Behaviour;
use super::client::Command;
use super::dialer::{Dialer, REDIAL_INTERVAL};
use super::stats::{Stats, bump};
use super::transport;
use super::types::{
    Event, MessageHandle, NetError, ProtocolSpec, ResponseHandle, SwarmConfig, SwarmError, Verdict,
};

/// Connection events that may wait for a slow node before they, too, are dropped.
const BACKLOG_MAX: usize = 4096;

/// How long a closing node waits for its connections to close gracefully.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Connections idle (no stream open) this long are closed.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// An outbound request waiting for its response.
pub(super) struct PendingRequest {
    pub(super) peer: PeerId,
    pub(super) protocol: &'static str,
    pub(super) reply: oneshot::Sender<Result<Vec<u8>, NetError>>,
}

pub(super) struct EventLoop {
    pub(super) swarm: Swarm<Behaviour>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<Event>,
    backlog: VecDeque<Event>,
    pub(super) stats: Arc<Stats>,
    pub(super) protocols: Arc<[ProtocolSpec]>,
    pub(super) pending_requests: HashMap<(usize, OutboundRequestId), PendingRequest>,
    pub(super) pending_dials:
        HashMap<ConnectionId, (Multiaddr, oneshot::Sender<Result<(), NetError>>)>,
    pub(super) dialer: Dialer,
    /// When each peer was last complained about at warn level.
    pub(super) warned: HashMap<PeerId, Instant>,
    max_gossip_bytes: usize,
    stop: CancellationToken,
    closing: Vec<oneshot::Sender<()>>,
    close_requested: bool,
}

impl EventLoop {
    pub(super) fn new(
        cfg: SwarmConfig,
        stats: Arc<Stats>,
        commands: mpsc::UnboundedReceiver<Command>,
        events: mpsc::Sender<Event>,
        stop: CancellationToken,
    ) -> Result<Self, SwarmError> {
        if cfg.ping_interval.is_zero() {
            return Err(SwarmError::ZeroPingInterval);
        }
        let local = cfg.keypair.public().to_peer_id();
        let transport = transport::build(&cfg.keypair, cfg.psk, stats.clone())?;
        let behaviour = Behaviour::new(&cfg)?;
        let config = libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT);
        let mut swarm = Swarm::new(transport, behaviour, local, config);
        for addr in &cfg.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| SwarmError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        }
        Ok(Self {
            swarm,
            commands,
            events,
            backlog: VecDeque::new(),
            stats,
            protocols: cfg.protocols.clone().into(),
            pending_requests: HashMap::new(),
            pending_dials: HashMap::new(),
            dialer: Dialer::new(cfg.peers, local, cfg.ping_interval),
            warned: HashMap::new(),
            max_gossip_bytes: cfg.max_gossip_bytes,
            stop,
            closing: Vec::new(),
            close_requested: false,
        })
    }

    /// The protocol list, shared with the `Client` (same order, same indices).
    pub(super) fn protocols(&self) -> Arc<[ProtocolSpec]> {
        self.protocols.clone()
    }

    pub(super) async fn run(mut self) {
        let mut redial = tokio::time::interval(REDIAL_INTERVAL);
        redial.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut watchdog = tokio::time::interval(self.dialer.ping_interval());
        watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // A permit borrows its sender; a local clone keeps that borrow off `self`.
        let events = self.events.clone();
        while !self.close_requested {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = redial.tick() => self.redial(),
                _ = watchdog.tick() => {
                    self.check_pings();
                    self.check_subscriptions();
                }
                permit = events.reserve(), if !self.backlog.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.backlog.pop_front() {
                            permit.send(event);
                        }
                    }
                    Err(_) => self.backlog.clear(),
                },
            }
        }
        self.shut_down().await;
    }

    /// Closes every connection (gracefully, for a moment), then answers `close()`.
    async fn shut_down(mut self) {
        tracing::debug!("network layer closing");
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let drain = async {
            while self.swarm.connected_peers().next().is_some() {
                let event = self.swarm.select_next_some().await;
                self.on_swarm_event(event);
            }
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
        for reply in self.closing.drain(..) {
            let _ = reply.send(());
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(topic, data));
            }
            Command::Request {
                peer,
                protocol,
                data,
                reply,
            } => self.send_request(peer, protocol, data, reply),
            Command::Respond { handle, data } => self.respond(handle, data),
            Command::Report { handle, verdict } => self.report(handle, verdict),
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Dial { addr, reply } => self.dial(addr, reply),
            Command::SetBlocked { peers, reply } => {
                self.set_blocked(peers);
                let _ = reply.send(());
            }
            Command::Disconnect { peer, reply } => {
                let _ = self.swarm.disconnect_peer_id(peer);
                let _ = reply.send(());
            }
            Command::PeerScore { peer, reply } => {
                let _ = reply.send(self.swarm.behaviour().gossipsub.peer_score(&peer));
            }
            Command::SetAppScore { peer, score } => {
                let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
                if !gossipsub.set_application_score(&peer, score) {
                    tracing::debug!(%peer, "no score kept for this peer; application score not set");
                }
            }
            Command::Close(reply) => {
                self.closing.push(reply);
                self.close_requested = true;
            }
        }
    }

    fn publish(&mut self, topic: String, data: Vec<u8>) -> Result<(), NetError> {
        if data.len() > self.max_gossip_bytes {
            return Err(NetError::TooLarge {
                what: format!("gossip message on {topic}"),
                size: data.len(),
                limit: self.max_gossip_bytes,
            });
        }
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        match gossipsub.publish(IdentTopic::new(topic.as_str()), data) {
            Ok(_) => bump(&self.stats.gossip_out),
            Err(PublishError::NoPeersSubscribedToTopic) => bump(&self.stats.gossip_unsent),
            // Same author and sequence number twice: cannot happen for a new publish.
            Err(PublishError::Duplicate) => {}
            Err(e) => {
                return Err(NetError::Publish {
                    topic,
                    reason: e.to_string(),
                });
            }
        }
        Ok(())
    }

    fn send_request(
        &mut self,
        peer: PeerId,
        index: usize,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, NetError>>,
    ) {
        let Some(spec) = self.protocols.get(index) else {
            let _ = reply.send(Err(NetError::UnknownProtocol(format!("#{index}"))));
            return;
        };
        let protocol = spec.name;
        let requests = &mut self.swarm.behaviour_mut().requests;
        match requests.send_request(index, &peer, data) {
            Some(id) => {
                bump(&self.stats.requests_out);
                let pending = PendingRequest {
                    peer,
                    protocol,
                    reply,
                };
                self.pending_requests.insert((index, id), pending);
            }
            None => {
                let _ = reply.send(Err(NetError::UnknownProtocol(protocol.to_owned())));
            }
        }
    }

    fn respond(&mut self, handle: ResponseHandle, data: Vec<u8>) {
        let requests = &mut self.swarm.behaviour_mut().requests;
        if !requests.send_response(handle.protocol, handle.channel, data) {
            tracing::debug!("response dropped: the request timed out or its connection closed");
        }
    }

    fn report(&mut self, handle: MessageHandle, verdict: Verdict) {
        let acceptance = match verdict {
            Verdict::Accept => MessageAcceptance::Accept,
            Verdict::Reject => MessageAcceptance::Reject,
            Verdict::Ignore => MessageAcceptance::Ignore,
        };
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        if !gossipsub.report_message_validation_result(&handle.id, &handle.from, acceptance) {
            tracing::debug!(id = %handle.id, "verdict on a message gossipsub no longer holds");
        }
    }

    fn dial(&mut self, addr: Multiaddr, reply: oneshot::Sender<Result<(), NetError>>) {
        let opts = super::dialer::dial_opts(&addr, None);
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(id, (addr, reply));
            }
            // Already connected to the peer the address names.
            Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {
                let _ = reply.send(Ok(()));
            }
            Err(e) => {
                let reason = e.to_string();
                let _ = reply.send(Err(NetError::Dial { addr, reason }));
            }
        }
    }

    fn set_blocked(&mut self, peers: Vec<PeerId>) {
        let wanted: std::collections::HashSet<PeerId> = peers.into_iter().collect();
        let block = &mut self.swarm.behaviour_mut().block;
        for peer in self.dialer.blocked.difference(&wanted) {
            block.unblock_peer(*peer);
        }
        for peer in wanted.difference(&self.dialer.blocked) {
            block.block_peer(*peer);
        }
        self.dialer.blocked = wanted;
    }

    /// Sends an event the node must see (connections, subscriptions,
    /// listening): straight through if possible, else into the backlog.
    pub(super) fn emit_control(&mut self, event: Event) {
        if self.backlog.is_empty() {
            match self.events.try_send(event) {
                Ok(()) => return,
                Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(event)) => return self.push_backlog(event),
            }
        }
        self.push_backlog(event);
    }

    fn push_backlog(&mut self, event: Event) {
        if self.backlog.len() < BACKLOG_MAX {
            self.backlog.push_back(event);
        } else {
            bump(&self.stats.events_dropped);
        }
    }

    /// Sends an event that may be lost; gives it back if it was not sent.
    pub(super) fn emit_lossy(&mut self, event: Event) -> Option<Event> {
        if !self.backlog.is_empty() {
            return Some(event);
        }
        match self.events.try_send(event) {
            Ok(()) => None,
            Err(TrySendError::Full(event) | TrySendError::Closed(event)) => Some(event),
        }
    }
}
