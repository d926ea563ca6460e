//! Several request-response protocols as one `NetworkBehaviour`.
//!
//! libp2p's request-response behaviour offers *all* of its protocols on every
//! outbound request and lets the remote pick, and it has one timeout for all
//! of them. Our protocols differ (a sync digest is small and quick, a chunk
//! is megabytes), and a request must go out on the protocol the node named.
//! So each [`ProtocolSpec`](super::ProtocolSpec) gets its own behaviour, with
//! its own codec limits and timeout, and this type multiplexes a runtime list
//! of them behind one behaviour: connection handlers are combined with
//! libp2p's `MultiHandler` keyed by the protocol's index, and every event is
//! tagged with that index on its way out.

use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::handler::multi::MultiHandler;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};

use super::codec::RawCodec;

type Inner = request_response::Behaviour<RawCodec>;

/// An event of the protocol at index `.0` of the list given to [`Requests::new`].
pub(super) type RequestsEvent = (usize, request_response::Event<Vec<u8>, Vec<u8>>);

/// A runtime list of request-response behaviours, one per protocol.
pub(super) struct Requests {
    protocols: Vec<Inner>,
}

impl Requests {
    pub(super) fn new(protocols: Vec<Inner>) -> Self {
        Self { protocols }
    }

    /// Sends `data` to `peer` on the protocol at `index`; `None` if there is
    /// no such protocol.
    pub(super) fn send_request(
        &mut self,
        index: usize,
        peer: &PeerId,
        data: Vec<u8>,
    ) -> Option<OutboundRequestId> {
        self.protocols
            .get_mut(index)
            .map(|p| p.send_request(peer, data))
    }

    /// Answers an inbound request of the protocol at `index`. Returns false if
    /// the request is gone (timed out, connection closed).
    pub(super) fn send_response(
        &mut self,
        index: usize,
        channel: ResponseChannel<Vec<u8>>,
        data: Vec<u8>,
    ) -> bool {
        match self.protocols.get_mut(index) {
            Some(p) => p.send_response(channel, data).is_ok(),
            None => false,
        }
    }

    fn handlers<F>(&mut self, mut make: F) -> Result<THandler<Self>, ConnectionDenied>
    where
        F: FnMut(&mut Inner) -> Result<THandler<Inner>, ConnectionDenied>,
    {
        let mut handlers = Vec::with_capacity(self.protocols.len());
        for (index, protocol) in self.protocols.iter_mut().enumerate() {
            handlers.push((index, make(protocol)?));
        }
        MultiHandler::try_from_iter(handlers).map_err(ConnectionDenied::new)
    }
}

impl NetworkBehaviour for Requests {
    type ConnectionHandler = MultiHandler<usize, THandler<Inner>>;
    type ToSwarm = RequestsEvent;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        for p in &mut self.protocols {
            p.handle_pending_inbound_connection(connection_id, local_addr, remote_addr)?;
        }
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.handlers(|p| {
            p.handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
        })
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let mut all = Vec::new();
        for p in &mut self.protocols {
            for addr in p.handle_pending_outbound_connection(
                connection_id,
                maybe_peer,
                addresses,
                effective_role,
            )? {
                if !all.contains(&addr) {
                    all.push(addr);
                }
            }
        }
        Ok(all)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.handlers(|p| {
            p.handle_established_outbound_connection(
                connection_id,
                peer,
                addr,
                role_override,
                port_use,
            )
        })
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        for p in &mut self.protocols {
            p.on_swarm_event(event);
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        (index, event): THandlerOutEvent<Self>,
    ) {
        if let Some(p) = self.protocols.get_mut(index) {
            p.on_connection_handler_event(peer_id, connection_id, event);
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        for (index, p) in self.protocols.iter_mut().enumerate() {
            if let Poll::Ready(event) = p.poll(cx) {
                return Poll::Ready(event.map_out(|e| (index, e)).map_in(|e| (index, e)));
            }
        }
        Poll::Pending
    }
}
