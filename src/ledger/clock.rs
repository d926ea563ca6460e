//! The Lamport clock: one per node, persisted with the ledger.
//!
//! `tick` stamps a local event; `observe` moves the clock past a stamp seen
//! in a merged record, so a later local event is ordered after everything
//! this node has seen. Stamps beyond `MAX_LAMPORT` never reach here: the
//! validator refuses them, so a hostile peer cannot run the clock out.

use std::sync::atomic::{AtomicU64, Ordering};

/// A thread-safe Lamport clock.
#[derive(Debug, Default)]
pub struct Clock(AtomicU64);

impl Clock {
    pub fn new(start: u64) -> Clock {
        Clock(AtomicU64::new(start))
    }

    /// The stamp of a new local event.
    pub fn tick(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Move past `seen`.
    pub fn observe(&self, seen: u64) {
        self.0.fetch_max(seen, Ordering::SeqCst);
    }

    /// The latest stamp issued or seen.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_pass_observed_stamps() {
        let c = Clock::new(5);
        assert_eq!(c.tick(), 6);
        c.observe(100);
        assert_eq!(c.tick(), 101);
        c.observe(3);
        assert_eq!(c.tick(), 102);
    }
}
