//! Counters of what the network layer moved and dropped.
//!
//! Plain atomics shared between the event loop, the connection tasks (which
//! count bytes at the TCP stream) and whoever reads them (`/metrics`, tests,
//! benchmarks). Relaxed ordering is enough: each counter is read on its own,
//! never used to synchronise anything else.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of the network layer; read them all at once with
/// [`Stats::snapshot`], or one with `load(Ordering::Relaxed)` on its field.
#[derive(Debug, Default)]
pub struct Stats {
    /// Bytes read from TCP streams: what travelled on the wire, so Noise
    /// and Yamux framing are included.
    pub bytes_in: AtomicU64,
    /// Bytes written to TCP streams, framing included.
    pub bytes_out: AtomicU64,
    /// Gossip messages received from the network (before validation).
    pub gossip_in: AtomicU64,
    /// Gossip messages this node published and gossipsub accepted.
    pub gossip_out: AtomicU64,
    /// Published while no peer was subscribed to the topic: sent to nobody.
    /// Not an error (gossip is best effort), but worth seeing.
    pub gossip_unsent: AtomicU64,
    /// Gossip messages dropped because the node's event channel was full.
    pub gossip_dropped: AtomicU64,
    /// Inbound requests handed to the node.
    pub requests_in: AtomicU64,
    /// Inbound requests dropped because the node's event channel was full
    /// (the requester sees its request fail).
    pub requests_dropped: AtomicU64,
    /// Outbound requests sent.
    pub requests_out: AtomicU64,
    /// Outbound requests that failed (timeout, refused, oversized, closed).
    pub request_failures: AtomicU64,
    /// Connections open right now (a peer may hold more than one).
    pub connections: AtomicU64,
    /// Connections opened since start.
    pub connections_opened: AtomicU64,
    /// Other events (round-trip times, dial failures) dropped because the
    /// node's event channel was full.
    pub events_dropped: AtomicU64,
}

/// A copy of [`Stats`] at one moment, for reports and assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub gossip_in: u64,
    pub gossip_out: u64,
    pub gossip_unsent: u64,
    pub gossip_dropped: u64,
    pub requests_in: u64,
    pub requests_dropped: u64,
    pub requests_out: u64,
    pub request_failures: u64,
    pub connections: u64,
    pub connections_opened: u64,
    pub events_dropped: u64,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            gossip_in: get(&self.gossip_in),
            gossip_out: get(&self.gossip_out),
            gossip_unsent: get(&self.gossip_unsent),
            gossip_dropped: get(&self.gossip_dropped),
            requests_in: get(&self.requests_in),
            requests_dropped: get(&self.requests_dropped),
            requests_out: get(&self.requests_out),
            request_failures: get(&self.request_failures),
            connections: get(&self.connections),
            connections_opened: get(&self.connections_opened),
            events_dropped: get(&self.events_dropped),
        }
    }
}

/// Adds one to a counter.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(super) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

/// Subtracts one from a gauge, never below zero.
pub(super) fn drop_one(counter: &AtomicU64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
}
