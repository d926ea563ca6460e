//! What happened, for people: the node's event log.
//!
//! A bounded ring of recent events (the API's `/events` and the page read
//! it) plus a broadcast channel for live listeners. A slow listener lags and
//! skips; it never holds up the node.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::ledger::{JobId, NodeId, TaskIndex};

/// How much an event matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One thing that happened.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Position in this node's log; increases by one per event.
    pub seq: u64,
    /// Wall clock of the node that logged it, ms since the Unix epoch.
    pub time_ms: u64,
    pub severity: Severity,
    /// `job_submitted`, `task_failed`, `job_finished`, ...
    pub kind: String,
    pub job: Option<JobId>,
    pub task: Option<TaskIndex>,
    pub node: NodeId,
    pub message: String,
}

/// Events kept for the API.
const KEEP: usize = 2000;

/// The log.
pub struct EventLog {
    node: NodeId,
    ring: Mutex<(u64, VecDeque<Event>)>,
    live: broadcast::Sender<Event>,
}

/// Milliseconds since the Unix epoch: the clock alerts are dated by.
pub use crate::ledger::alerts::now_ms;

impl EventLog {
    pub fn new(node: NodeId) -> EventLog {
        EventLog {
            node,
            ring: Mutex::new((0, VecDeque::new())),
            live: broadcast::channel(256).0,
        }
    }

    /// Log an event.
    pub fn push(
        &self,
        severity: Severity,
        kind: &str,
        job: Option<JobId>,
        task: Option<TaskIndex>,
        message: String,
    ) {
        let event = {
            let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            ring.0 += 1;
            let event = Event {
                seq: ring.0,
                time_ms: now_ms(),
                severity,
                kind: kind.to_string(),
                job,
                task,
                node: self.node.clone(),
                message,
            };
            if ring.1.len() == KEEP {
                ring.1.pop_front();
            }
            ring.1.push_back(event.clone());
            event
        };
        match severity {
            Severity::Info => tracing::info!(kind, "{}", event.message),
            Severity::Warning => tracing::warn!(kind, "{}", event.message),
            Severity::Error => tracing::error!(kind, "{}", event.message),
        }
        let _ = self.live.send(event);
    }

    /// Events after `since`, oldest first, at most `limit`.
    pub fn since(&self, since: u64, limit: usize) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let newer: Vec<&Event> = ring.1.iter().filter(|e| e.seq > since).collect();
        let skip = newer.len().saturating_sub(limit);
        newer.into_iter().skip(skip).cloned().collect()
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}
