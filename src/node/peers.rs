//! Who is alive, judged on this node's own clock, and whose claims still hold.
//!
//! Every node says what it is doing once per heartbeat period. A peer is
//! alive while its last heartbeat arrived within the lease, measured with
//! this node's monotonic clock when the heartbeat *arrived* — no clock sync
//! is assumed. A claim holds while its owner is alive and the owner's
//! heartbeats stamped *after* the claim still list it (a heartbeat sent
//! before the claim says nothing about it; comparing Lamport stamps keeps
//! that race from turning into a duplicate render).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::scheduler::Capability;
use super::views::Sample;
use crate::hash::Hash;
use crate::ledger::{AlertId, Claim, JobId, Liveness, NodeId, TaskIndex};
use crate::telemetry::Telemetry;

/// A task a node holds a claim on, as its heartbeat reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldTask {
    pub job: JobId,
    pub task: TaskIndex,
    pub epoch: u32,
    /// 0..=1 once the engine runs.
    pub progress: f32,
    pub frame: Option<u32>,
}

/// "I am alive, and this is what I am doing."
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: NodeId,
    pub name: String,
    /// Lamport stamp: later than every claim this node made before sending it.
    pub stamp: u64,
    pub version: String,
    pub slots: u32,
    pub held: Vec<HeldTask>,
    pub engines: Vec<String>,
    pub tags: Vec<String>,
    pub telemetry: Telemetry,
    /// Blobs this node holds completely (bounded), so fetchers know whom to ask.
    pub blobs: Vec<Hash>,
    /// Large blobs this node is fetching now (bounded): it serves the chunks
    /// it has so far, so nodes fetching one scene at once feed each other.
    pub fetching: Vec<Hash>,
    /// The node's page, when it is reachable from other machines.
    pub web: Option<String>,
    /// Where it listens for peers: nodes that hear of it through others
    /// dial it, so a swarm joined by `--peer` alone becomes fully connected.
    pub addrs: Vec<String>,
    /// Alert claims it holds (alert, epoch): it is about to send them.
    pub alerts: Vec<(AlertId, u32)>,
    /// Wall clock at sending, ms since the Unix epoch: shown, never trusted.
    pub sent_ms: u64,
    /// Why it takes no new tasks now (see `sleep`); `None` while it does,
    /// and from nodes of versions before sleep, whose heartbeats end
    /// before it. A field added later goes after it, read the same way.
    #[serde(deserialize_with = "absent_is_none")]
    pub asleep: Option<String>,
}

/// An optional field at the end of a message that an earlier version did
/// not send: the input ends where it would be, and it reads as `None`.
/// (Postcard has no field names or lengths; a field that is there but does
/// not decode reads as `None` too, and what follows it is ignored with the
/// rest of a later version's fields.)
fn absent_is_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d).unwrap_or(None))
}

/// Telemetry samples kept per peer: ten minutes at one per second.
const HISTORY_SAMPLES: usize = 600;
/// At most one sample per this many ms per peer.
const HISTORY_STEP_MS: u64 = 900;

/// At most this many blobs are listed in one heartbeat.
pub const MAX_HEARTBEAT_BLOBS: usize = 512;
/// At most this many fetches under way are listed in one heartbeat.
pub const MAX_HEARTBEAT_FETCHING: usize = 16;

/// What this node knows of one peer.
#[derive(Clone, Debug)]
pub struct Peer {
    pub heartbeat: Heartbeat,
    /// When its latest heartbeat arrived, on this node's clock.
    pub seen: Instant,
    held: BTreeSet<(JobId, TaskIndex, u32)>,
    held_alerts: BTreeSet<(AlertId, u32)>,
}

/// Every peer this node has heard from.
pub struct PeerTable {
    peers: HashMap<NodeId, Peer>,
    /// Round-trip times of connections, which may be measured before a
    /// peer's first heartbeat arrives.
    rtts: HashMap<NodeId, Duration>,
    /// The last minutes of each peer's telemetry, for the page's graphs.
    history: HashMap<NodeId, std::collections::VecDeque<Sample>>,
    lease: Duration,
    /// Until a lease has passed since this node started, a peer it has not
    /// heard from yet may simply not have spoken: its claims are presumed held.
    started: Instant,
}

impl PeerTable {
    pub fn new(lease: Duration) -> PeerTable {
        PeerTable {
            peers: HashMap::new(),
            rtts: HashMap::new(),
            history: HashMap::new(),
            lease,
            started: Instant::now(),
        }
    }

    /// Record a heartbeat. Returns true if the peer is new (or was dead).
    pub fn heard(&mut self, hb: Heartbeat, now: Instant) -> bool {
        let held = hb.held.iter().map(|h| (h.job, h.task, h.epoch)).collect();
        let held_alerts = hb.alerts.iter().copied().collect();
        let was_alive = self.is_alive(&hb.node, now);
        // Heartbeats can arrive out of order; an older stamp never replaces a newer one.
        if let Some(p) = self.peers.get(&hb.node)
            && p.heartbeat.stamp > hb.stamp
        {
            return false;
        }
        let samples = self.history.entry(hb.node.clone()).or_default();
        if samples
            .back()
            // Saturating: a peer's clock (or a hostile peer) may say any
            // time, up to the last millisecond there is.
            .is_none_or(|s| hb.sent_ms >= s.t.saturating_add(HISTORY_STEP_MS))
        {
            if samples.len() == HISTORY_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(Sample::of(hb.sent_ms, &hb.telemetry));
        }
        self.peers.insert(
            hb.node.clone(),
            Peer {
                heartbeat: hb,
                seen: now,
                held,
                held_alerts,
            },
        );
        !was_alive
    }

    /// A peer's telemetry over the last minutes, oldest first.
    pub fn history(&self, node: &NodeId) -> Vec<Sample> {
        self.history
            .get(node)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Record a connection's round-trip time.
    pub fn set_rtt(&mut self, node: &NodeId, rtt: Duration) {
        self.rtts.insert(node.clone(), rtt);
    }

    /// The connection's round-trip time to `node`, where measured.
    pub fn rtt(&self, node: &NodeId) -> Option<Duration> {
        self.rtts.get(node).copied()
    }

    pub fn is_alive(&self, node: &NodeId, now: Instant) -> bool {
        self.peers
            .get(node)
            .is_some_and(|p| now.saturating_duration_since(p.seen) <= self.lease)
    }

    /// Peers alive now.
    pub fn alive(&self, now: Instant) -> impl Iterator<Item = &Peer> {
        self.peers
            .values()
            .filter(move |p| now.saturating_duration_since(p.seen) <= self.lease)
    }

    /// Every peer ever heard from, alive or not.
    pub fn all(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    pub fn get(&self, node: &NodeId) -> Option<&Peer> {
        self.peers.get(node)
    }

    /// Whether a peer's claim still holds, as of `now`.
    pub fn claim_holds(&self, job: JobId, task: TaskIndex, claim: &Claim, now: Instant) -> bool {
        match self.peers.get(&claim.node) {
            None => now.saturating_duration_since(self.started) <= self.lease,
            Some(p) => {
                let alive = now.saturating_duration_since(p.seen) <= self.lease;
                let spoke_after = p.heartbeat.stamp > claim.lamport;
                alive && (!spoke_after || p.held.contains(&(job, task, claim.epoch)))
            }
        }
    }

    /// Whether a peer's claim to send an alert still holds, as of `now`
    /// (the same rule as for task claims).
    pub fn alert_claim_holds(&self, alert: AlertId, claim: &Claim, now: Instant) -> bool {
        match self.peers.get(&claim.node) {
            None => now.saturating_duration_since(self.started) <= self.lease,
            Some(p) => {
                let alive = now.saturating_duration_since(p.seen) <= self.lease;
                let spoke_after = p.heartbeat.stamp > claim.lamport;
                alive && (!spoke_after || p.held_alerts.contains(&(alert, claim.epoch)))
            }
        }
    }

    /// The slowest round trip to a live peer: the base of the settle window.
    pub fn max_rtt(&self, now: Instant) -> Option<Duration> {
        self.alive(now)
            .filter_map(|p| self.rtt(&p.heartbeat.node))
            .max()
    }

    /// Live peers holding `blob`, for fetching.
    pub fn providers(&self, blob: Hash, now: Instant) -> Vec<NodeId> {
        self.alive(now)
            .filter(|p| p.heartbeat.blobs.contains(&blob))
            .map(|p| p.heartbeat.node.clone())
            .collect()
    }

    /// Live peers fetching `blob` now, for fetching from them what they
    /// have so far.
    pub fn fetchers(&self, blob: Hash, now: Instant) -> Vec<NodeId> {
        self.alive(now)
            .filter(|p| p.heartbeat.fetching.contains(&blob))
            .map(|p| p.heartbeat.node.clone())
            .collect()
    }

    /// Whether a peer said in its latest heartbeat that it takes no tasks.
    pub fn is_asleep(&self, node: &NodeId) -> bool {
        self.peers
            .get(node)
            .is_some_and(|p| p.heartbeat.asleep.is_some())
    }

    /// What every live peer can run.
    pub fn capabilities(&self, now: Instant) -> BTreeMap<NodeId, Capability> {
        self.alive(now)
            .map(|p| {
                let hb = &p.heartbeat;
                let cap = Capability {
                    engines: hb.engines.iter().cloned().collect(),
                    tags: hb.tags.iter().cloned().collect(),
                };
                (hb.node.clone(), cap)
            })
            .collect()
    }
}

/// The liveness this node judges claims by: its own claims hold while it is
/// working on them; a peer's while the peer table says so.
pub struct NodeLiveness<'a> {
    pub me: &'a NodeId,
    pub mine: &'a BTreeSet<(JobId, TaskIndex, u32)>,
    pub peers: &'a PeerTable,
    pub now: Instant,
}

impl Liveness for NodeLiveness<'_> {
    fn holds(&self, job: JobId, task: TaskIndex, claim: &Claim) -> bool {
        if &claim.node == self.me {
            self.mine.contains(&(job, task, claim.epoch))
        } else {
            self.peers.claim_holds(job, task, claim, self.now)
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::node) fn hb(node: &str, stamp: u64, held: &[(JobId, u32, u32)]) -> Heartbeat {
        Heartbeat {
            node: NodeId::new(node),
            name: node.into(),
            stamp,
            version: "t".into(),
            slots: 1,
            held: held
                .iter()
                .map(|&(job, task, epoch)| HeldTask {
                    job,
                    task,
                    epoch,
                    progress: 0.0,
                    frame: None,
                })
                .collect(),
            engines: vec![],
            tags: vec![],
            telemetry: Telemetry::default(),
            blobs: vec![],
            fetching: vec![],
            web: None,
            addrs: vec![],
            alerts: vec![],
            sent_ms: 0,
            asleep: None,
        }
    }

    /// Found by the gossip fuzzer: a heartbeat sent at the last
    /// millisecond there is, then another, overflowed the history's step.
    #[test]
    fn a_heartbeat_stamped_at_the_end_of_time_does_not_overflow() {
        let mut peers = PeerTable::new(Duration::from_secs(3));
        let now = Instant::now();
        for stamp in [1, 2] {
            let late = Heartbeat {
                sent_ms: u64::MAX,
                ..hb("n", stamp, &[])
            };
            peers.heard(late, now);
        }
        assert!(!peers.history(&NodeId::new("n")).is_empty());
    }

    #[test]
    fn heartbeats_of_earlier_and_later_versions_read() {
        use super::super::wire::{decode_heartbeat, encode};
        let asleep = Heartbeat {
            asleep: Some("by hand".into()),
            ..hb("n", 7, &[(JobId::default(), 2, 1)])
        };
        let bytes = encode(&asleep);
        assert_eq!(decode_heartbeat(&bytes).unwrap(), asleep);
        // A later version's fields after ours are left unread.
        let mut later = bytes.clone();
        later.extend([1, 5, b'l', b'a', b't', b'e', b'r', 9, 9]);
        assert_eq!(decode_heartbeat(&later).unwrap(), asleep);
        // A node from before sleep sends no `asleep` (its None is one 0).
        let awake = Heartbeat {
            asleep: None,
            ..asleep.clone()
        };
        let mut earlier = encode(&awake);
        assert_eq!(earlier.pop(), Some(0));
        assert_eq!(decode_heartbeat(&earlier).unwrap(), awake);
        // Cut anywhere before the end, a heartbeat is refused, not guessed.
        for cut in 1..earlier.len() {
            assert!(decode_heartbeat(&earlier[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn claims_hold_only_while_listed_after_their_stamp() {
        let lease = Duration::from_secs(3);
        let mut t = PeerTable::new(lease);
        let t0 = t.started;
        let job = JobId::default();
        let claim = Claim {
            epoch: 1,
            lamport: 10,
            node: NodeId::new("b"),
        };
        // Unknown peer right after start: presumed alive; later: expired.
        assert!(t.claim_holds(job, 0, &claim, t0));
        assert!(!t.claim_holds(job, 0, &claim, t0 + lease * 2));
        // A heartbeat from before the claim says nothing about it.
        t.heard(hb("b", 5, &[]), t0);
        assert!(t.claim_holds(job, 0, &claim, t0));
        // A later heartbeat that lists it keeps it; one that omits it drops it.
        t.heard(hb("b", 11, &[(job, 0, 1)]), t0);
        assert!(t.claim_holds(job, 0, &claim, t0));
        t.heard(hb("b", 12, &[]), t0);
        assert!(!t.claim_holds(job, 0, &claim, t0));
        // An out-of-order older heartbeat does not bring it back.
        t.heard(hb("b", 11, &[(job, 0, 1)]), t0);
        assert!(!t.claim_holds(job, 0, &claim, t0));
    }

    #[test]
    fn a_silent_peer_loses_its_lease() {
        let lease = Duration::from_secs(3);
        let mut t = PeerTable::new(lease);
        let t0 = Instant::now();
        let job = JobId::default();
        t.heard(hb("b", 11, &[(job, 0, 1)]), t0);
        let claim = Claim {
            epoch: 1,
            lamport: 10,
            node: NodeId::new("b"),
        };
        assert!(t.claim_holds(job, 0, &claim, t0 + lease));
        assert!(!t.claim_holds(job, 0, &claim, t0 + lease + Duration::from_millis(1)));
        assert_eq!(t.alive(t0 + lease * 2).count(), 0);
    }
}
