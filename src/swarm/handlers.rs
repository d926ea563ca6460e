//! What the event loop does with each swarm event.
//!
//! One small function per kind of event; none of them awaits, none panics.
//! Complaints about a peer (garbage requests, failed pings) are logged at
//! warn at most once per peer per minute, so a bad peer cannot flood the log.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use libp2p::core::ConnectedPoint;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::request_response::{self, InboundFailure, OutboundFailure, ResponseChannel};
use libp2p::swarm::{ConnectionError, ConnectionId, DialError, SwarmEvent};
use libp2p::{PeerId, identify, ping};

use super::behaviour::{BehaviourEvent, IDENTIFY_VERSION};
use super::event_loop::EventLoop;
use super::stats::{bump, drop_one};
use super::types::{Event, MessageHandle, NetError, RequestFailure, ResponseHandle};

/// At most one warning per peer per this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Says what a Noise handshake that fails to decrypt means here: the two
/// nodes' swarm keys differ (the key is the handshake's prologue, see
/// `transport.rs`), which libp2p words only as "decrypt error".
fn explain_handshake_failure(error: String) -> String {
    if error.contains("Handshake failed") && error.contains("decrypt error") {
        format!(
            "{error} (the two nodes' swarm keys differ: one has another key or none, or runs a renderswarm from before 2026-12-06)"
        )
    } else {
        error
    }
}

impl EventLoop {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.on_gossip(e),
            SwarmEvent::Behaviour(BehaviourEvent::Requests((index, e))) => {
                self.on_request_event(index, e)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.on_identify(e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.on_ping(e),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(e)) => self.on_mdns(e),
            SwarmEvent::Behaviour(BehaviourEvent::Block(never)) => match never {},
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.on_established(peer_id, connection_id, &endpoint, num_established),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => self.on_closed(peer_id, connection_id, num_established, cause),
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => self.on_dial_error(connection_id, peer_id, error),
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                let error = explain_handshake_failure(error.to_string());
                tracing::debug!(%send_back_addr, %error, "inbound connection failed")
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::debug!(%address, "listening");
                self.emit_control(Event::Listening(address));
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                if let Err(error) = reason {
                    tracing::warn!(?addresses, %error, "listener closed");
                }
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(%error, "listener error");
            }
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    fn on_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
        num_established: NonZeroU32,
    ) {
        tracing::debug!(%peer, addr = %endpoint.get_remote_address(), "connection established");
        bump(&self.stats.connections);
        bump(&self.stats.connections_opened);
        self.dialer.on_established(peer, connection, endpoint);
        if let Some((_, reply)) = self.pending_dials.remove(&connection) {
            let _ = reply.send(Ok(()));
        }
        if num_established.get() == 1 {
            self.dialer.on_peer_connected(peer);
            self.emit_control(Event::Connected(peer));
        }
    }

    fn on_closed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        num_established: u32,
        cause: Option<ConnectionError>,
    ) {
        tracing::debug!(%peer, ?cause, "connection closed");
        drop_one(&self.stats.connections);
        self.dialer.on_closed(connection);
        if num_established == 0 {
            self.dialer.on_peer_disconnected(peer);
            self.emit_control(Event::Disconnected(peer));
        }
    }

    fn on_dial_error(&mut self, connection: ConnectionId, peer: Option<PeerId>, error: DialError) {
        tracing::debug!(?peer, %error, "dial failed");
        let report = self.dialer.on_dial_failed(connection, &error);
        let error = explain_handshake_failure(error.to_string());
        if let Some((addr, reply)) = self.pending_dials.remove(&connection) {
            let reason = error.clone();
            let _ = reply.send(Err(NetError::Dial { addr, reason }));
        }
        // A configured peer that is down fails a dial every 2 s: said when
        // it starts and once an hour (`dialer.rs`).
        let Some(note) = report else {
            return;
        };
        let error = format!("{error}{note}");
        if self.emit_lossy(Event::DialFailed { peer, error }).is_some() {
            bump(&self.stats.events_dropped);
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => self.on_gossip_message(propagation_source, message_id, message),
            gossipsub::Event::Subscribed { peer_id, topic } => {
                tracing::debug!(peer = %peer_id, %topic, "peer subscribed");
                let topic = topic.into_string();
                self.emit_control(Event::Subscribed {
                    peer: peer_id,
                    topic,
                });
            }
            gossipsub::Event::Unsubscribed { peer_id, topic } => {
                tracing::debug!(peer = %peer_id, %topic, "peer unsubscribed");
            }
            gossipsub::Event::GossipsubNotSupported { peer_id } => {
                tracing::debug!(peer = %peer_id, "peer does not speak gossipsub");
            }
            gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            } => self.warn_peer(peer_id, &format!("slow peer: {failed_messages:?}")),
        }
    }

    fn on_gossip_message(&mut self, from: PeerId, id: MessageId, message: gossipsub::Message) {
        bump(&self.stats.gossip_in);
        let event = Event::Message {
            source: message.source,
            from,
            topic: message.topic.into_string(),
            data: message.data,
            handle: MessageHandle { id, from },
        };
        if let Some(Event::Message { handle, .. }) = self.emit_lossy(event) {
            bump(&self.stats.gossip_dropped);
            tracing::debug!(peer = %from, "node busy: gossip message dropped");
            let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
            gossipsub.report_message_validation_result(
                &handle.id,
                &handle.from,
                MessageAcceptance::Ignore,
            );
        }
    }

    fn on_request_event(&mut self, index: usize, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_inbound_request(index, peer, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(pending) = self.pending_requests.remove(&(index, request_id)) {
                        let _ = pending.reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                bump(&self.stats.request_failures);
                if let Some(pending) = self.pending_requests.remove(&(index, request_id)) {
                    tracing::debug!(peer = %pending.peer, protocol = pending.protocol, %error, "request failed");
                    let _ = pending.reply.send(Err(NetError::Request {
                        peer: pending.peer,
                        protocol: pending.protocol,
                        failure: request_failure(error),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => match error {
                InboundFailure::Io(e) => {
                    self.warn_peer(peer, &format!("bad request: {e}"));
                }
                other => tracing::debug!(%peer, error = %other, "inbound request failed"),
            },
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_inbound_request(
        &mut self,
        index: usize,
        from: PeerId,
        data: Vec<u8>,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        let Some(spec) = self.protocols.get(index) else {
            return;
        };
        let event = Event::Request {
            from,
            protocol: spec.name,
            data,
            channel: ResponseHandle {
                protocol: index,
                channel,
            },
        };
        match self.emit_lossy(event) {
            None => bump(&self.stats.requests_in),
            // Dropping the channel makes the request fail at the requester.
            Some(_) => {
                bump(&self.stats.requests_dropped);
                tracing::debug!(peer = %from, "node busy: request dropped");
            }
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        if let identify::Event::Received { peer_id, info, .. } = event {
            if info.protocol_version != IDENTIFY_VERSION {
                tracing::debug!(peer = %peer_id, version = %info.protocol_version, "not a renderswarm node; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer_id);
                return;
            }
            for addr in info.listen_addrs {
                self.swarm.add_peer_address(peer_id, addr);
            }
        }
    }

    fn on_ping(&mut self, event: ping::Event) {
        let peer = event.peer;
        match event.result {
            Ok(rtt) => {
                self.dialer.on_ping_ok(peer, event.connection);
                if self.emit_lossy(Event::Rtt { peer, rtt }).is_some() {
                    bump(&self.stats.events_dropped);
                }
            }
            Err(ping::Failure::Unsupported) => self.dialer.on_ping_unsupported(event.connection),
            Err(error) => {
                self.warn_peer(
                    peer,
                    &format!("ping failed ({error}); closing the connection"),
                );
                self.swarm.close_connection(event.connection);
            }
        }
    }

    /// Logs a complaint about `peer` at warn, at most once per minute per peer.
    fn warn_peer(&mut self, peer: PeerId, what: &str) {
        let now = Instant::now();
        let last = self.warned.get(&peer).copied();
        if last.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
            if self.warned.len() >= 1024 {
                self.warned
                    .retain(|_, t| now.duration_since(*t) < WARN_EVERY);
            }
            self.warned.insert(peer, now);
            tracing::warn!(%peer, "{what}");
        } else {
            tracing::debug!(%peer, "{what}");
        }
    }
}

fn request_failure(error: OutboundFailure) -> RequestFailure {
    match error {
        OutboundFailure::DialFailure => RequestFailure::Unreachable,
        OutboundFailure::Timeout => RequestFailure::Timeout,
        OutboundFailure::ConnectionClosed => RequestFailure::ConnectionClosed,
        OutboundFailure::UnsupportedProtocols => RequestFailure::Unsupported,
        OutboundFailure::Io(e) => RequestFailure::Stream(e.to_string()),
    }
}
