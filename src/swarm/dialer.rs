//! Keeping peers connected: re-dialling, mDNS, and the ping watchdog.
//!
//! A peer is re-dialled every [`REDIAL_INTERVAL`] while it is not connected:
//! configured addresses (with or without `/p2p/<id>`; the id is learned on
//! first contact) and peers mDNS reported. mDNS only reports; dialling is up
//! to us. A cut cable closes nothing for minutes, so every connection must
//! answer a ping within three ping intervals or it is closed, and then the
//! re-dial brings the peer back once the cable is mended.
//!
//! One more thing heals here. Gossipsub tells a peer its subscriptions only
//! on the *first* connection to it. When a cut is mended, one side may close
//! its old connections (its ping watchdog fired) while the other still
//! holds one as the new connection arrives: the second side then sends no
//! subscriptions, and the first never learns them, so it never publishes to
//! that peer: gossip flows one way only, for as long as the connection
//! lasts. So a peer connected for [`SUBSCRIBE_GRACE`] that gossipsub still
//! lists with no topic is disconnected, and the re-dial starts both sides
//! afresh (seen in `tests/it/netns.rs`: a node that heard no one for minutes
//! while everyone heard it).
//!
//! A configured peer that is down (a workstation switched off for the
//! weekend) fails its dial every [`REDIAL_INTERVAL`]. Its failure is
//! reported when it starts, then once every [`REPORT_AGAIN`] with a count,
//! and its return is logged: one line an hour, not 1,800.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError};
use libp2p::{Multiaddr, PeerId, mdns};

use super::event_loop::EventLoop;
use super::types::Event;

/// How often peers that are not connected are dialled again.
pub(super) const REDIAL_INTERVAL: Duration = Duration::from_secs(2);

/// A connection without a ping answer for this many ping intervals is dead.
const DEAD_AFTER_INTERVALS: u32 = 3;

/// How long a connected peer may go without gossipsub knowing any of its
/// subscriptions (they normally arrive within milliseconds).
pub(super) const SUBSCRIBE_GRACE: Duration = Duration::from_secs(10);

/// How often a configured peer that keeps failing its dials is reported.
pub(super) const REPORT_AGAIN: Duration = Duration::from_secs(3600);

/// A `--peer` address and what we learned about it.
struct ConfiguredPeer {
    addr: Multiaddr,
    /// From the `/p2p/` suffix, or learned when a dial to `addr` succeeded.
    peer: Option<PeerId>,
    /// The dial in flight, so slow dials do not pile up.
    dialing: Option<ConnectionId>,
    /// The address turned out to be this node: never dial it again.
    is_self: bool,
    /// Dials failed in a row, since when, and when that was last reported.
    failing: Option<Failing>,
}

/// A configured peer's run of failed dials.
#[derive(Debug, Clone, Copy)]
struct Failing {
    dials: u32,
    since: Instant,
    reported: Instant,
}

impl ConfiguredPeer {
    /// Counts a failed dial at `now`. What to add to its report, or `None`
    /// when it was reported less than [`REPORT_AGAIN`] ago.
    fn dial_failed(&mut self, now: Instant) -> Option<String> {
        let Some(f) = &mut self.failing else {
            self.failing = Some(Failing {
                dials: 1,
                since: now,
                reported: now,
            });
            return Some(format!(
                "; dialling it again every {} s, and saying so again in an hour if it still fails",
                REDIAL_INTERVAL.as_secs()
            ));
        };
        f.dials = f.dials.saturating_add(1);
        if now.duration_since(f.reported) < REPORT_AGAIN {
            return None;
        }
        f.reported = now;
        Some(format!(
            "; {} dials have failed since {} min ago",
            f.dials,
            now.duration_since(f.since).as_secs() / 60
        ))
    }

    /// The peer is connected: a run of failures ends, and says so.
    fn reached(&mut self, now: Instant) {
        if let Some(f) = self.failing.take() {
            tracing::info!(
                addr = %self.addr,
                "reached after {} failed dials over {} s",
                f.dials,
                now.duration_since(f.since).as_secs()
            );
        }
    }
}

/// What the loop knows about whom to keep connected.
pub(super) struct Dialer {
    configured: Vec<ConfiguredPeer>,
    discovered: HashMap<PeerId, Vec<Multiaddr>>,
    pub(super) blocked: HashSet<PeerId>,
    /// Last ping answer (or the opening) per connection.
    last_ping: HashMap<ConnectionId, (PeerId, Instant)>,
    /// Since when each peer has been connected (by one connection or more),
    /// or was last disconnected for lacking subscriptions.
    connected_since: HashMap<PeerId, Instant>,
    last_check: Instant,
    ping_interval: Duration,
    local: PeerId,
}

impl Dialer {
    pub(super) fn new(peers: Vec<Multiaddr>, local: PeerId, ping_interval: Duration) -> Self {
        let configured = peers
            .into_iter()
            .map(|addr| ConfiguredPeer {
                peer: peer_of(&addr),
                addr,
                dialing: None,
                is_self: false,
                failing: None,
            })
            .collect();
        Self {
            configured,
            discovered: HashMap::new(),
            blocked: HashSet::new(),
            last_ping: HashMap::new(),
            connected_since: HashMap::new(),
            last_check: Instant::now(),
            ping_interval,
            local,
        }
    }

    pub(super) fn ping_interval(&self) -> Duration {
        self.ping_interval
    }

    pub(super) fn on_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        self.last_ping.insert(connection, (peer, Instant::now()));
        let dialled = match endpoint {
            ConnectedPoint::Dialer { address, .. } => Some(address),
            ConnectedPoint::Listener { .. } => None,
        };
        let now = Instant::now();
        for cp in &mut self.configured {
            let ours =
                cp.dialing == Some(connection) || (cp.peer.is_none() && dialled == Some(&cp.addr));
            if ours {
                cp.dialing = None;
                cp.peer = Some(peer);
            }
            if cp.peer == Some(peer) {
                cp.reached(now);
            }
        }
    }

    pub(super) fn on_closed(&mut self, connection: ConnectionId) {
        self.last_ping.remove(&connection);
    }

    /// The peer's first connection (of those now open) came up.
    pub(super) fn on_peer_connected(&mut self, peer: PeerId) {
        self.connected_since.insert(peer, Instant::now());
    }

    /// The peer's last connection closed.
    pub(super) fn on_peer_disconnected(&mut self, peer: PeerId) {
        self.connected_since.remove(&peer);
    }

    /// Peers connected for longer than [`SUBSCRIBE_GRACE`] that `subscribed`
    /// says have told us of no topic; each is given a new grace from now.
    fn silent_subscribers(&mut self, subscribed: impl Fn(&PeerId) -> bool) -> Vec<PeerId> {
        let now = Instant::now();
        let mut silent = Vec::new();
        for (peer, since) in &mut self.connected_since {
            if now.duration_since(*since) > SUBSCRIBE_GRACE && !subscribed(peer) {
                silent.push(*peer);
                *since = now;
            }
        }
        silent
    }

    /// A dial failed. What to add to its report, or `None` to say nothing:
    /// a configured peer's failure is reported as [`ConfiguredPeer::dial_failed`]
    /// says, any other dial's always.
    pub(super) fn on_dial_failed(
        &mut self,
        connection: ConnectionId,
        error: &DialError,
    ) -> Option<String> {
        let now = Instant::now();
        let mut report = Some(String::new());
        for cp in &mut self.configured {
            if cp.dialing == Some(connection) {
                cp.dialing = None;
                if matches!(error, DialError::LocalPeerId { .. }) {
                    tracing::debug!(addr = %cp.addr, "configured peer is this node; not dialling it");
                    cp.is_self = true;
                    continue;
                }
                report = cp.dial_failed(now);
            }
        }
        report
    }

    pub(super) fn on_ping_ok(&mut self, peer: PeerId, connection: ConnectionId) {
        self.last_ping.insert(connection, (peer, Instant::now()));
    }

    /// The peer does not speak ping: the watchdog cannot judge the connection.
    pub(super) fn on_ping_unsupported(&mut self, connection: ConnectionId) {
        self.last_ping.remove(&connection);
    }

    /// Connections whose last ping answer is too old. If the loop itself was
    /// stalled (the check runs late), nobody is judged this round, and
    /// every peer's subscription grace starts again.
    fn dead_connections(&mut self) -> Vec<(ConnectionId, PeerId, Duration)> {
        let now = Instant::now();
        let late = now.duration_since(self.last_check) > self.ping_interval * 2;
        self.last_check = now;
        if late {
            for (_, seen) in self.last_ping.values_mut() {
                *seen = now;
            }
            // Subscriptions may be waiting in the same stalled loop.
            for since in self.connected_since.values_mut() {
                *since = now;
            }
            return Vec::new();
        }
        let dead_after = self.ping_interval * DEAD_AFTER_INTERVALS;
        self.last_ping
            .iter()
            .filter(|(_, (_, seen))| now.duration_since(*seen) > dead_after)
            .map(|(conn, (peer, seen))| (*conn, *peer, now.duration_since(*seen)))
            .collect()
    }
}

/// The `/p2p/<id>` an address names, if any.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// Dial options for `addr`: by peer (no duplicate connections) when the
/// address names one or it was `learned`, else by address alone.
pub(super) fn dial_opts(addr: &Multiaddr, learned: Option<PeerId>) -> DialOpts {
    match peer_of(addr).or(learned) {
        Some(peer) => DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .addresses(vec![addr.clone()])
            .build(),
        None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
    }
}

impl EventLoop {
    /// Dials every configured or discovered peer that is not connected.
    pub(super) fn redial(&mut self) {
        let mut failures = Vec::new();
        for cp in &mut self.dialer.configured {
            let known = cp.peer;
            let skip = cp.is_self
                || cp.dialing.is_some()
                || known.is_some_and(|p| {
                    self.swarm.is_connected(&p) || self.dialer.blocked.contains(&p)
                });
            if skip {
                continue;
            }
            // An address without /p2p/ is dialled as such: the machine there
            // may have a new identity since we last met it.
            let opts = dial_opts(&cp.addr, None);
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => cp.dialing = Some(id),
                Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(e) => {
                    if let Some(note) = cp.dial_failed(Instant::now()) {
                        failures.push((known, format!("dialling {}: {e}{note}", cp.addr)));
                    }
                }
            }
        }
        let discovered: Vec<PeerId> = self.dialer.discovered.keys().copied().collect();
        for peer in discovered {
            if let Some(error) = self.dial_discovered(peer) {
                failures.push((Some(peer), error));
            }
        }
        for (peer, error) in failures {
            tracing::debug!(?peer, %error, "dial not started");
            if self.emit_lossy(Event::DialFailed { peer, error }).is_some() {
                super::stats::bump(&self.stats.events_dropped);
            }
        }
    }

    /// Dials a peer mDNS reported, unless connected, blocked or already dialling.
    fn dial_discovered(&mut self, peer: PeerId) -> Option<String> {
        if self.swarm.is_connected(&peer) || self.dialer.blocked.contains(&peer) {
            return None;
        }
        let addrs = self.dialer.discovered.get(&peer)?.clone();
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .addresses(addrs)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// Closes connections that stopped answering pings.
    pub(super) fn check_pings(&mut self) {
        for (connection, peer, silent) in self.dialer.dead_connections() {
            tracing::warn!(%peer, ?silent, "no ping answer; closing the connection");
            self.dialer.last_ping.remove(&connection);
            self.swarm.close_connection(connection);
        }
    }

    /// Disconnects peers gossipsub knows no subscription of (see the module
    /// documentation); the re-dial brings them back. A node subscribed to
    /// nothing publishes nothing, and so has nothing to check.
    pub(super) fn check_subscriptions(&mut self) {
        let gossipsub = &self.swarm.behaviour().gossipsub;
        if gossipsub.topics().next().is_none() {
            return;
        }
        let subscribed: HashSet<PeerId> = gossipsub
            .all_peers()
            .filter(|(_, topics)| !topics.is_empty())
            .map(|(peer, _)| *peer)
            .collect();
        for peer in self.dialer.silent_subscribers(|p| subscribed.contains(p)) {
            tracing::warn!(%peer, "connected for {SUBSCRIBE_GRACE:?} without its gossip subscriptions; reconnecting");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    pub(super) fn on_mdns(&mut self, event: mdns::Event) {
        match event {
            mdns::Event::Discovered(found) => {
                let mut peers = Vec::new();
                for (peer, addr) in found {
                    if peer == self.dialer.local {
                        continue;
                    }
                    tracing::debug!(%peer, %addr, "mDNS discovered a peer");
                    self.swarm.add_peer_address(peer, addr.clone());
                    let addrs = self.dialer.discovered.entry(peer).or_default();
                    if !addrs.contains(&addr) {
                        addrs.push(addr);
                    }
                    peers.push(peer);
                }
                for peer in peers {
                    if let Some(error) = self.dial_discovered(peer) {
                        tracing::debug!(%peer, %error, "dial of a discovered peer not started");
                    }
                }
            }
            mdns::Event::Expired(gone) => {
                for (peer, addr) in gone {
                    if let Some(addrs) = self.dialer.discovered.get_mut(&peer) {
                        addrs.retain(|a| a != &addr);
                        if addrs.is_empty() {
                            self.dialer.discovered.remove(&peer);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured() -> ConfiguredPeer {
        ConfiguredPeer {
            addr: "/ip4/10.0.0.9/tcp/7879".parse().unwrap(),
            peer: None,
            dialing: None,
            is_self: false,
            failing: None,
        }
    }

    #[test]
    fn a_peer_that_stays_down_is_reported_once_an_hour_and_its_return_resets_that() {
        let mut cp = configured();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let first = cp.dial_failed(t0).expect("the first failure is reported");
        assert!(first.contains("again in an hour"), "{first}");
        // A dial every 2 s for the rest of the hour: nothing.
        for s in (2..3600).step_by(2) {
            assert_eq!(cp.dial_failed(at(s)), None, "at {s} s");
        }
        let again = cp
            .dial_failed(at(3600))
            .expect("reported again after an hour");
        assert_eq!(again, "; 1801 dials have failed since 60 min ago");
        assert_eq!(cp.dial_failed(at(3602)), None);
        cp.reached(at(3700));
        assert!(cp.failing.is_none());
        let after = cp
            .dial_failed(at(4000))
            .expect("a new run is reported at once");
        assert!(after.contains("again in an hour"), "{after}");
    }

    #[test]
    fn a_failed_dial_that_is_no_configured_peers_is_always_reported() {
        let local = PeerId::random();
        let mut dialer = Dialer::new(vec![], local, Duration::from_secs(1));
        let conn = ConnectionId::new_unchecked(7);
        for _ in 0..3 {
            assert_eq!(
                dialer.on_dial_failed(conn, &DialError::Aborted),
                Some(String::new())
            );
        }
        let mut dialer = Dialer::new(vec![configured().addr], local, Duration::from_secs(1));
        dialer.configured[0].dialing = Some(conn);
        assert!(dialer.on_dial_failed(conn, &DialError::Aborted).is_some());
        dialer.configured[0].dialing = Some(conn);
        assert_eq!(dialer.on_dial_failed(conn, &DialError::Aborted), None);
        assert_eq!(dialer.configured[0].failing.map(|f| f.dials), Some(2));
    }
}
