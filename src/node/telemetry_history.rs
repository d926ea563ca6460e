//! The last minutes of this node's telemetry, for the page's small graphs.

use std::collections::VecDeque;

use crate::telemetry::Telemetry;

/// Samples kept: ten minutes at one per second.
const KEEP: usize = 600;

/// The latest sample and a bounded history of them.
#[derive(Default)]
pub struct History {
    pub latest: Telemetry,
    pub samples: VecDeque<(u64, Telemetry)>,
}

impl History {
    /// The samples as the page graphs them.
    pub fn samples(&self) -> Vec<super::views::Sample> {
        self.samples
            .iter()
            .map(|(t, tel)| super::views::Sample::of(*t, tel))
            .collect()
    }

    pub fn push(&mut self, time_ms: u64, t: Telemetry) {
        if self.samples.len() == KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back((time_ms, t.clone()));
        self.latest = t;
    }
}
