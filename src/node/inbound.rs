//! Everything that arrives from other nodes, checked before it touches
//! anything.
//!
//! Gossip is decoded under its size limit, its author checked against the
//! signed source (a node may only gossip its own claims, starts, ends and
//! dones), its Dones checked for outputs that really exist (`fetch.rs`),
//! and its record checked for invariants by the ledger. Bad input is
//! dropped, counted, logged once per peer per minute, and reported to
//! gossipsub as invalid, which lowers the sender's peer score. Handlers run
//! as bounded concurrent tasks: a flood is shed, never queued without end,
//! and nothing here can stall the swarm's event loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::Semaphore;

use super::wire::{self, DeltaMsg};
use super::{Inner, lock};
use crate::ledger::{JobRecord, NodeId};
use crate::swarm::{Event, MessageHandle, Verdict};

/// Concurrent handlers of gossip and requests.
const MAX_HANDLERS: usize = 256;

/// Bad input a peer may send within a minute before it is disconnected.
const DISCONNECT_AFTER: u32 = 20;

/// Per peer: when its current minute began, bad inputs in it, and whether
/// that minute was logged.
struct Window {
    since: Instant,
    count: u32,
    logged: bool,
}

/// Rate-limited reports of bad input, and counts of it.
#[derive(Default)]
pub struct BadInput {
    windows: std::sync::Mutex<HashMap<PeerId, Window>>,
    pub count: std::sync::atomic::AtomicU64,
}

impl BadInput {
    /// Count `n` bad inputs from `peer` (`what`), logging at most once per
    /// peer per minute. Returns true when the peer has sent so much within
    /// the minute that it should be disconnected.
    pub fn report(&self, peer: PeerId, what: &str, n: u32) -> bool {
        self.count
            .fetch_add(u64::from(n), std::sync::atomic::Ordering::Relaxed);
        let mut windows = lock(&self.windows);
        let now = Instant::now();
        let w = windows.entry(peer).or_insert(Window {
            since: now,
            count: 0,
            logged: false,
        });
        if now.saturating_duration_since(w.since) >= Duration::from_secs(60) {
            *w = Window {
                since: now,
                count: 0,
                logged: false,
            };
        }
        let before = w.count;
        w.count = w.count.saturating_add(n);
        if !w.logged {
            w.logged = true;
            tracing::warn!(%peer, "dropped bad input: {what} (further reports from this peer muted for a minute)");
        }
        before < DISCONNECT_AFTER && w.count >= DISCONNECT_AFTER
    }
}

impl Inner {
    /// Count bad input from `peer`; disconnect a peer that keeps sending it
    /// (gossipsub's scoring also graylists it for gossip).
    pub(crate) fn bad_peer(self: &Arc<Self>, peer: PeerId, what: &str) {
        self.bad_inputs(peer, what, 1);
    }

    /// [`Inner::bad_peer`] for `n` bad inputs in one message (a chunk
    /// reply with `n` wrong chunks counts as `n`, as it did when each went
    /// in a request of its own).
    pub(crate) fn bad_inputs(self: &Arc<Self>, peer: PeerId, what: &str, n: u32) {
        if !self.bad_input.report(peer, what, n) {
            return;
        }
        tracing::warn!(%peer, "disconnecting a peer that sent {DISCONNECT_AFTER} bad inputs within a minute");
        let inner = self.clone();
        self.tracker.spawn(async move {
            if let Some(net) = &inner.net {
                net.client.disconnect(peer).await;
            }
        });
    }
}

/// Handle swarm events until the node stops.
pub(crate) async fn run(inner: Arc<Inner>, mut events: super::net::NetEvents) {
    let permits = Arc::new(Semaphore::new(MAX_HANDLERS));
    let mut sync_tick = tokio::time::interval(Duration::from_secs(5));
    sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = sync_tick.tick() => super::sync::sync_with_random_peer(&inner),
            ev = events.recv() => match ev {
                None => return,
                Some(ev) => dispatch(&inner, &permits, ev),
            },
        }
    }
}

fn dispatch(inner: &Arc<Inner>, permits: &Arc<Semaphore>, ev: Event) {
    match ev {
        Event::Message {
            source,
            from,
            topic,
            data,
            handle,
        } if topic == wire::TOPIC_HEARTBEAT => {
            // Inline and never dropped: a heartbeat is cheap (no waiting),
            // and one ignored while delta handlers are busy would make a
            // live peer look dead and its claimed tasks look free.
            let author = source.unwrap_or(from);
            report(inner, author, on_heartbeat(inner, author, &data), handle);
        }
        Event::Message {
            source,
            from,
            topic,
            data,
            handle,
        } => {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                net(inner).client.report(handle, Verdict::Ignore);
                return;
            };
            let inner = inner.clone();
            inner.tracker.clone().spawn(async move {
                on_message(&inner, source, from, &topic, &data, handle).await;
                drop(permit);
            });
        }
        Event::Request {
            from,
            protocol,
            data,
            channel,
        } => {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                return;
            };
            let inner = inner.clone();
            inner.tracker.clone().spawn(async move {
                let reply = super::sync::serve(&inner, from, protocol, &data).await;
                if let Some(reply) = reply {
                    net(&inner).client.respond(channel, reply);
                }
                drop(permit);
            });
        }
        Event::Connected(peer) => {
            lock(&inner.connected).insert(peer);
            let inner = inner.clone();
            inner
                .tracker
                .clone()
                .spawn(async move { super::sync::sync_with(&inner, peer).await });
        }
        Event::Disconnected(peer) => {
            lock(&inner.connected).remove(&peer);
        }
        Event::Subscribed { topic, .. } if topic == wire::TOPIC_HEARTBEAT => {
            inner.heartbeat_now.notify_one()
        }
        Event::Subscribed { .. } => {}
        Event::Rtt { peer, rtt } => lock(&inner.peers).set_rtt(&NodeId::new(peer.to_base58()), rtt),
        Event::DialFailed { peer, error } => {
            tracing::info!(?peer, "dial failed: {error}");
        }
        Event::Listening(addr) => {
            let full = format!("{addr}/p2p/{}", inner.id);
            tracing::info!("listening on {full}");
            lock(&inner.listen_addrs).push(full);
        }
    }
}

pub(crate) fn net(inner: &Inner) -> &super::net::Net {
    // Inbound handling only runs on networked nodes.
    inner
        .net
        .as_ref()
        .expect("inbound events come only from a network")
}

async fn on_message(
    inner: &Arc<Inner>,
    source: Option<PeerId>,
    from: PeerId,
    topic: &str,
    data: &[u8],
    handle: MessageHandle,
) {
    let author = source.unwrap_or(from);
    // Heartbeats never come here: `dispatch` handles them inline.
    let verdict = match topic {
        wire::TOPIC_LEDGER => on_delta(inner, author, from, data).await,
        _ => Err(format!("message on unknown topic `{topic}`")),
    };
    report(inner, author, verdict, handle);
}

/// Tell gossipsub what became of a message; a refused one counts against
/// its author.
fn report(
    inner: &Arc<Inner>,
    author: PeerId,
    verdict: Result<Verdict, String>,
    handle: MessageHandle,
) {
    let verdict = verdict.unwrap_or_else(|what| {
        inner.bad_peer(author, &what);
        Verdict::Reject
    });
    net(inner).client.report(handle, verdict);
}

fn on_heartbeat(inner: &Arc<Inner>, author: PeerId, data: &[u8]) -> Result<Verdict, String> {
    let hb = wire::decode_heartbeat(data).map_err(|e| format!("heartbeat: {e}"))?;
    if hb.node.as_str() != author.to_base58() {
        return Err(format!(
            "heartbeat signed by {author} claims to be from {}",
            hb.node
        ));
    }
    if hb.held.len() > 4096
        || hb.blobs.len() > super::peers::MAX_HEARTBEAT_BLOBS
        || hb.fetching.len() > super::peers::MAX_HEARTBEAT_FETCHING
        || hb.name.len() > 256
        || hb.addrs.len() > 16
    {
        return Err("heartbeat over its limits".into());
    }
    inner.clock_observe_heartbeat(hb.stamp);
    maybe_dial(inner, author, &hb.addrs);
    let new = lock(&inner.peers).heard(hb.clone(), Instant::now());
    if new {
        inner.on_peer_seen(&hb);
    }
    Ok(Verdict::Accept)
}

/// How often this node tries to dial a peer it hears of but is not connected to.
const REDIAL: Duration = Duration::from_secs(5);

/// Dial a peer known only through gossip, at most every [`REDIAL`].
fn maybe_dial(inner: &Arc<Inner>, peer: PeerId, addrs: &[String]) {
    if lock(&inner.connected).contains(&peer) {
        return;
    }
    {
        let mut tried = lock(&inner.dial_attempts);
        let now = Instant::now();
        if tried
            .get(&peer)
            .is_some_and(|t| now.saturating_duration_since(*t) < REDIAL)
        {
            return;
        }
        tried.insert(peer, now);
    }
    let Some(addr) = addrs
        .iter()
        .find_map(|a| a.parse::<libp2p::Multiaddr>().ok())
    else {
        return;
    };
    let inner = inner.clone();
    inner.tracker.clone().spawn(async move {
        if let Some(net) = &inner.net
            && let Err(e) = net.client.dial(addr).await
        {
            tracing::debug!(%peer, "dialling a peer heard of through gossip: {e}");
        }
    });
}

async fn on_delta(
    inner: &Arc<Inner>,
    author: PeerId,
    from: PeerId,
    data: &[u8],
) -> Result<Verdict, String> {
    let author_id = NodeId::new(author.to_base58());
    let (job, mut record, manifests) =
        match wire::decode_delta(data).map_err(|e| format!("delta: {e}"))? {
            DeltaMsg::Job { job, record } => (job, record, Vec::new()),
            DeltaMsg::JobWithManifests {
                job,
                record,
                manifests,
            } => (job, record, manifests),
            DeltaMsg::Alert { id, record } => {
                let foreign = record.claims.iter().any(|c| c.node != author_id)
                    || record.sent.iter().any(|s| s.node != author_id);
                if foreign {
                    return Err(format!(
                        "alert delta from {author} carries another node's claim or sending"
                    ));
                }
                inner
                    .ledger
                    .apply_alert_remote(id, &record)
                    .map_err(|e| format!("alert {id}: {e}"))?;
                return Ok(Verdict::Accept);
            }
        };
    check_authorship(&record, &author_id)?;
    let dropped = super::fetch::verify_dones(inner, &[from], &mut record, &manifests).await;
    let changed = inner
        .ledger
        .apply_remote(job, &record)
        .map_err(|e| format!("delta for job {}: {e}", job.short()))?;
    if changed
        && record
            .tasks
            .values()
            .any(|t| !t.ends.is_empty() || !t.dones.is_empty())
    {
        inner.after_peer_end(job).await;
    }
    let effect = if changed {
        &inner.metrics.deltas_changed
    } else {
        &inner.metrics.deltas_unchanged
    };
    effect.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if dropped > 0 {
        return Err(format!(
            "{dropped} done record(s) naming outputs the sender cannot provide"
        ));
    }
    Ok(Verdict::Accept)
}

/// A node gossips only its own doings: every claim, start, end and done in
/// a gossiped delta must be the author's, and so must any stamp it sets.
/// Public (hidden) for the gossip fuzz target, which runs it after decoding.
#[doc(hidden)]
pub fn check_authorship(rec: &JobRecord, author: &NodeId) -> Result<(), String> {
    let foreign = |n: &NodeId| n != author;
    for (i, t) in &rec.tasks {
        let bad = t.claims.iter().any(|c| foreign(&c.node))
            || t.starts.iter().any(|s| foreign(&s.node))
            || t.ends.iter().any(|e| foreign(&e.node))
            || t.dones.iter().any(|d| foreign(&d.node));
        if bad {
            return Err(format!(
                "delta from {author} carries task {i} entries of another node"
            ));
        }
    }
    for stamp in [&rec.control.stamp, &rec.priority.stamp] {
        if stamp.lamport > 0 && foreign(&stamp.node) {
            return Err(format!(
                "delta from {author} carries a change stamped by {}",
                stamp.node
            ));
        }
    }
    Ok(())
}

impl Inner {
    /// Heartbeat stamps are Lamport stamps too: moving past them orders this
    /// node's next claims after what the peer said.
    fn clock_observe_heartbeat(&self, stamp: u64) {
        if stamp <= crate::ledger::validate::MAX_LAMPORT {
            self.ledger.clock().observe(stamp);
        }
    }

    fn on_peer_seen(&self, hb: &super::peers::Heartbeat) {
        // The node itself raises `node_joined`; observers only log.
        tracing::info!(node = %hb.node, "node {} is alive", hb.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Claim, FrameRange, JobSpec};

    fn rec() -> JobRecord {
        JobRecord::new(JobSpec {
            name: "j".into(),
            scene: Default::default(),
            scene_file: "s.toml".into(),
            engine: "builtin".into(),
            frames: FrameRange {
                start: 1,
                end: 2,
                step: 1,
            },
            frames_per_task: 1,
            priority: 0,
            output_format: None,
            requirements: Default::default(),
            max_attempts: 3,
            timeout_secs: None,
            collect_dir: None,
            options: Default::default(),
            submitter: NodeId::new("someone"),
            submitted_ms: 0,
        })
    }

    #[test]
    fn a_node_may_gossip_only_its_own_claims() {
        let me = NodeId::new("me");
        let mut r = rec();
        r.tasks.entry(0).or_default().claims.insert(Claim {
            epoch: 1,
            lamport: 3,
            node: me.clone(),
        });
        assert!(check_authorship(&r, &me).is_ok());
        r.tasks.entry(1).or_default().claims.insert(Claim {
            epoch: 1,
            lamport: 3,
            node: NodeId::new("other"),
        });
        assert!(
            check_authorship(&r, &me)
                .unwrap_err()
                .contains("another node")
        );
    }

    /// A message with many bad inputs (a chunk reply with many wrong
    /// chunks) counts each, and says to disconnect once, when the count
    /// crosses the limit, however it got there.
    #[test]
    fn bad_inputs_count_one_by_one_or_many_at_once() {
        let bad = BadInput::default();
        let (one, many) = (PeerId::random(), PeerId::random());
        let crossed: Vec<bool> = (0..DISCONNECT_AFTER + 2)
            .map(|_| bad.report(one, "a bad record", 1))
            .collect();
        let at = crossed.iter().position(|c| *c);
        assert_eq!(at, Some(DISCONNECT_AFTER as usize - 1));
        assert_eq!(crossed.iter().filter(|c| **c).count(), 1);
        assert!(!bad.report(many, "3 chunks with wrong bytes", 3));
        assert!(bad.report(many, "30 chunks with wrong bytes", 30));
        assert!(!bad.report(many, "1 chunk with wrong bytes", 1));
        let counted = bad.count.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(counted, u64::from(DISCONNECT_AFTER) + 2 + 34);
    }
}
