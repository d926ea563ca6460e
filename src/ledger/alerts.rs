//! Alerts in the ledger: the swarm's shared event log, and the claims that
//! make exactly one node send each alert.
//!
//! An alert is named by what it is about (`task_failed` of job J, task T,
//! epoch E; `node_lost` of node N at its last claim; ...), so two nodes that
//! observe the same event write the same id and their records merge into
//! one. What each observer writes as the entry may differ in time and
//! wording; the earliest `(time, node, entry)` is kept, a join like any
//! other. Sending is claimed exactly like a task: the winning claim (highest
//! epoch, then earliest stamp) sends and records a `Sent`; a claim whose
//! owner dies expires with its lease and another node claims the next
//! epoch. A `Sent` absorbs: the alert is delivered.
//!
//! Alerts do not stay forever: every sync sends a hash of each alert a node
//! holds, and a failure's alert carries its log's tail, so a farm's year of
//! alerts would make each sync megabytes and each node hold them all. An
//! alert is offered in sync for [`ALERT_KEEP_MS`] after it happened, and
//! dropped by every node a day later ([`ALERT_GRACE_MS`], so that a peer
//! whose clock runs behind does not hand it back meanwhile). Every node
//! applies the same rule to the alert's own time, so they agree without a
//! message.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::crdt::{Crdt, Min};
use super::types::{Claim, JobId, NodeId};
use super::validate::{Invalid, MAX_EPOCH, MAX_LAMPORT, MAX_SET};
use crate::hash::Hash;

/// An alert's id: the hash of what the alert is about.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct AlertId(pub Hash);

impl AlertId {
    /// The id of the event `kind` about `parts` (job id, task, node, ...).
    pub fn of(kind: &str, parts: &[&[u8]]) -> AlertId {
        let mut h = blake3::Hasher::new();
        h.update(b"renderswarm/alert-id/v1\0");
        h.update(kind.as_bytes());
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        AlertId(Hash::from(h.finalize()))
    }
}

impl fmt::Display for AlertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for AlertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlertId({})", self.0.short(12))
    }
}

/// What happened, as one observer wrote it. Fields are ordered so the
/// derived order is by time first: the earliest report wins a merge.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub struct AlertEntry {
    /// The observer's wall clock, ms since the Unix epoch.
    pub time_ms: u64,
    pub node: NodeId,
    /// `task_failed`, `job_failed`, `job_finished`, `node_lost`,
    /// `engine_missing`, `disk_low`, `node_joined`, `node_left`.
    pub kind: String,
    /// `info`, `warning` or `error`.
    pub severity: String,
    pub node_name: String,
    pub job: Option<JobId>,
    pub job_name: Option<String>,
    pub frames: Vec<u32>,
    pub reason: Option<String>,
    pub log_tail: Option<String>,
    /// One line for people.
    pub message: String,
}

/// The alert was sent, by the node holding claim `epoch`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub struct Sent {
    pub epoch: u32,
    pub node: NodeId,
    pub lamport: u64,
}

/// One alert in the ledger.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct AlertRecord {
    pub entry: Min<AlertEntry>,
    pub claims: BTreeSet<Claim>,
    pub sent: BTreeSet<Sent>,
}

impl AlertRecord {
    pub fn new(entry: AlertEntry) -> AlertRecord {
        AlertRecord {
            entry: Min(entry),
            claims: BTreeSet::new(),
            sent: BTreeSet::new(),
        }
    }

    /// The entry alone: the base of every delta.
    pub fn empty_like(&self) -> AlertRecord {
        AlertRecord::new(self.entry.0.clone())
    }

    /// The claim that sends: as for tasks, the highest epoch, then the
    /// earliest stamp.
    pub fn winning_claim(&self) -> Option<&Claim> {
        let top = self.claims.last()?.epoch;
        self.claims.iter().find(|c| c.epoch == top)
    }

    pub fn next_epoch(&self) -> u32 {
        self.claims.last().map_or(1, |c| c.epoch.saturating_add(1))
    }

    pub fn delivered(&self) -> bool {
        !self.sent.is_empty()
    }
}

impl Crdt for AlertRecord {
    fn merge(&mut self, other: &Self) -> bool {
        let mut changed = self.entry.merge(&other.entry);
        changed |= self.claims.merge(&other.claims);
        changed |= self.sent.merge(&other.sent);
        changed
    }
}

const DAY_MS: u64 = 24 * 3600 * 1000;

/// How long after it happened an alert is offered in sync: 30 days.
pub const ALERT_KEEP_MS: u64 = 30 * DAY_MS;

/// How long after that a node still takes the alert from a peer, then
/// drops it: a day, more than any clock skew that matters here.
pub const ALERT_GRACE_MS: u64 = DAY_MS;

impl AlertRecord {
    /// Whether sync offers the alert at `now_ms` (ms since the Unix epoch).
    pub fn offered_at(&self, now_ms: u64) -> bool {
        self.entry.0.time_ms.saturating_add(ALERT_KEEP_MS) >= now_ms
    }

    /// Whether the alert has left the ledger at `now_ms`.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.entry
            .0
            .time_ms
            .saturating_add(ALERT_KEEP_MS + ALERT_GRACE_MS)
            < now_ms
    }
}

/// The wall clock in ms since the Unix epoch, as alerts are dated.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Text an alert may carry.
const MAX_ALERT_TEXT: usize = 16 * 1024;

/// Check an alert record from another node.
pub fn check_alert(rec: &AlertRecord) -> Result<(), Invalid> {
    let e = &rec.entry.0;
    let texts = [
        Some(&e.kind),
        Some(&e.severity),
        Some(&e.node_name),
        e.job_name.as_ref(),
        e.reason.as_ref(),
        e.log_tail.as_ref(),
        Some(&e.message),
    ];
    for t in texts.into_iter().flatten() {
        if t.len() > MAX_ALERT_TEXT {
            return Err(Invalid::TooLong {
                field: "alert text",
                len: t.len(),
            });
        }
    }
    if e.frames.len() > 10_000 {
        return Err(Invalid::TooLong {
            field: "alert frames",
            len: e.frames.len(),
        });
    }
    if rec.claims.len() > MAX_SET || rec.sent.len() > MAX_SET {
        return Err(Invalid::SetTooLarge {
            task: 0,
            len: rec.claims.len().max(rec.sent.len()),
        });
    }
    let bad_claim = rec
        .claims
        .iter()
        .any(|c| c.epoch == 0 || c.epoch > MAX_EPOCH || c.lamport > MAX_LAMPORT);
    let bad_sent = rec
        .sent
        .iter()
        .any(|s| s.epoch > MAX_EPOCH || s.lamport > MAX_LAMPORT);
    if bad_claim || bad_sent {
        return Err(Invalid::Stamp(MAX_LAMPORT));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(time_ms: u64, node: &str) -> AlertEntry {
        AlertEntry {
            time_ms,
            node: NodeId::new(node),
            kind: "node_lost".into(),
            severity: "warning".into(),
            node_name: node.into(),
            job: None,
            job_name: None,
            frames: vec![],
            reason: None,
            log_tail: None,
            message: "x".into(),
        }
    }

    #[test]
    fn two_observers_of_one_event_merge_into_one_record() {
        let mut a = AlertRecord::new(entry(20, "a"));
        let b = AlertRecord::new(entry(10, "b"));
        assert!(a.merge(&b));
        assert_eq!(
            a.entry.0.node,
            NodeId::new("b"),
            "the earliest report is kept"
        );
        let mut b2 = b.clone();
        b2.merge(&AlertRecord::new(entry(20, "a")));
        assert_eq!(a, b2, "whatever the order");
        assert_eq!(
            AlertId::of("node_lost", &[b"n"]),
            AlertId::of("node_lost", &[b"n"])
        );
        assert_ne!(
            AlertId::of("node_lost", &[b"n"]),
            AlertId::of("node_lost", &[b"m"])
        );
    }

    #[test]
    fn sending_is_claimed_like_a_task() {
        let mut r = AlertRecord::new(entry(1, "a"));
        assert_eq!(r.next_epoch(), 1);
        r.claims.insert(Claim {
            epoch: 1,
            lamport: 5,
            node: NodeId::new("b"),
        });
        r.claims.insert(Claim {
            epoch: 1,
            lamport: 3,
            node: NodeId::new("c"),
        });
        assert_eq!(r.winning_claim().unwrap().node, NodeId::new("c"));
        r.claims.insert(Claim {
            epoch: 2,
            lamport: 9,
            node: NodeId::new("b"),
        });
        assert_eq!(r.winning_claim().unwrap().node, NodeId::new("b"));
        assert!(!r.delivered());
        r.sent.insert(Sent {
            epoch: 2,
            node: NodeId::new("b"),
            lamport: 10,
        });
        assert!(r.delivered());
    }
}
