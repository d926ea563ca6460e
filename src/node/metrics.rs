//! Counters a node keeps about itself, for `/metrics` and benchmarks.

use std::sync::atomic::AtomicU64;

/// Monotonic counters (read with `Ordering::Relaxed`).
#[derive(Default, Debug)]
pub struct Metrics {
    /// Digest exchanges this node started.
    pub syncs: AtomicU64,
    /// Chunk bytes sent to peers.
    pub chunk_bytes_served: AtomicU64,
    /// Chunk bytes received from peers (before verification).
    pub chunk_bytes_fetched: AtomicU64,
    /// Renders this node started.
    pub renders_started: AtomicU64,
    /// Renders this node stopped because another node's claim won or another
    /// node finished the task first.
    pub renders_lost: AtomicU64,
}
