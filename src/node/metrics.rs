//! Counters a node keeps about itself, for `/metrics` and benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Monotonic counters (read with `Ordering::Relaxed`).
#[derive(Default, Debug)]
pub struct Metrics {
    /// Digest exchanges this node started.
    pub syncs: AtomicU64,
    /// Chunk bytes sent to peers.
    pub chunk_bytes_served: AtomicU64,
    /// Chunk bytes received from peers (before verification).
    pub chunk_bytes_fetched: AtomicU64,
    /// Chunks peers told this node they have got, of its fetches under
    /// way (`have.rs`).
    pub chunks_told: AtomicU64,
    /// Renders this node started.
    pub renders_started: AtomicU64,
    /// Renders this node stopped because another node's claim won or another
    /// node finished the task first.
    pub renders_lost: AtomicU64,
    /// Gossiped job deltas that changed this node's ledger.
    pub deltas_changed: AtomicU64,
    /// Gossiped job deltas that changed nothing (already known: a
    /// duplicate, a replay, or older than what this node holds).
    pub deltas_unchanged: AtomicU64,
    /// How long this node's renders took.
    pub render_seconds: Histogram,
    /// Passes that trimmed the store to `--cache-size` (see `cache.rs`).
    pub cache_trims: AtomicU64,
    /// Bytes of chunks the store kept at the last pass.
    pub cache_bytes: AtomicU64,
    /// Bytes of chunks evicted since the node started.
    pub cache_bytes_freed: AtomicU64,
}

/// Upper bounds of the render-time histogram's buckets, in seconds.
pub const RENDER_BUCKETS: [f64; 11] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

/// A Prometheus-style histogram of durations (cumulative when read).
#[derive(Default, Debug)]
pub struct Histogram {
    buckets: [AtomicU64; RENDER_BUCKETS.len()],
    count: AtomicU64,
    sum_ms: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = RENDER_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ms
            .fetch_add(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket, the total count, and the sum in seconds.
    pub fn read(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut acc = 0;
        let cumulative = RENDER_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| {
                acc += c.load(Ordering::Relaxed);
                (*b, acc)
            })
            .collect();
        let sum = self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        (cumulative, self.count.load(Ordering::Relaxed), sum)
    }
}
