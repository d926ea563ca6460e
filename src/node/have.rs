//! Telling the other fetchers of a blob which chunks this node has got.
//!
//! Nodes fetching one scene at once feed each other (`fetch.rs`): each
//! asks the others for the chunks their sweeps passed first. Without
//! knowing what a peer has, most such requests came too early: in the
//! `links` benchmark 75-90 % of them were answered "not here" and asked
//! again 50-300 ms later, and each receiver took its scene at ~60 % of its
//! link. So a fetcher tells the others, every [`ANNOUNCE_EVERY`], which
//! chunks it has stored since it last told them (`/renderswarm/have/1`,
//! hashes only), as BitTorrent's `have` messages do. A node asks a peer
//! that told it of a chunk first, and a request waiting to be asked again
//! goes out as soon as someone tells of one of its chunks.
//!
//! Only chunks this node is fetching right now are remembered
//! (`Inner::chunks_coming`), and each is forgotten when its fetch ends, so
//! what a peer says costs memory only for a fetch under way; a peer that
//! answers "not here" for a chunk it told of (it is serving that chunk to
//! others already, see `sync::withhold`, or it lied) is forgotten for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use libp2p::PeerId;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::wire::{self, Have};
use super::{Inner, lock};
use crate::hash::Hash;

/// How often a fetcher tells the others what it has got since it last did.
const ANNOUNCE_EVERY: std::time::Duration = std::time::Duration::from_millis(20);
/// Peers remembered per chunk (there is no use in more: a request asks two).
const PEERS_PER_CHUNK: usize = 16;

/// What peers have told this node of the chunks it is fetching.
#[derive(Default)]
pub struct Haves {
    told: Mutex<HashMap<Hash, Vec<PeerId>>>,
    /// Wakes fetches when a peer tells of a chunk.
    came: Notify,
}

/// A look at what peers have told, from [`Haves::told_now`].
pub(crate) struct Told<'a>(std::sync::MutexGuard<'a, HashMap<Hash, Vec<PeerId>>>);

impl Told<'_> {
    /// Whether any peer told of one of `batch`.
    pub(crate) fn of_any(&self, batch: &[Hash]) -> bool {
        !self.0.is_empty() && batch.iter().any(|h| self.0.contains_key(h))
    }
}

impl Haves {
    /// `peer` has `hashes`; `coming` are the chunks this node is fetching
    /// (the others are not remembered). Returns how many were new.
    pub(crate) fn note(&self, peer: PeerId, hashes: &[Hash], coming: &HashMap<Hash, u32>) -> u64 {
        let mut told = lock(&self.told);
        let mut new = 0;
        for h in hashes.iter().filter(|h| coming.contains_key(h)) {
            let peers = told.entry(*h).or_default();
            if !peers.contains(&peer) && peers.len() < PEERS_PER_CHUNK {
                peers.push(peer);
                new += 1;
            }
        }
        drop(told);
        if new > 0 {
            self.came.notify_waiters();
        }
        new
    }

    /// Resolves when a peer next tells of a chunk this node is fetching,
    /// from the moment it is called (not when first polled): a fetch
    /// takes it before it looks at what it has been told.
    pub(crate) fn came(&self) -> impl Future<Output = ()> + '_ {
        let mut notified = Box::pin(self.came.notified());
        notified.as_mut().enable();
        notified
    }

    /// What peers have told so far, held still while a fetch looks through
    /// its requests: one lock for the lot, not one per request.
    pub(crate) fn told_now(&self) -> Told<'_> {
        Told(lock(&self.told))
    }

    /// The peers that told of `batch`'s first chunk, rotated by `turn`,
    /// then those that told only of others; at most `max`.
    pub(crate) fn tellers(&self, batch: &[Hash], turn: usize, max: usize) -> Vec<PeerId> {
        let told = lock(&self.told);
        let mut out: Vec<PeerId> = Vec::new();
        for (k, h) in batch.iter().enumerate() {
            let Some(peers) = told.get(h) else { continue };
            let mut peers = peers.clone();
            if k == 0 && !peers.is_empty() {
                let n = peers.len();
                peers.rotate_left(turn % n);
            }
            for p in peers {
                if out.len() < max && !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// `peer` answered "not here" for `hashes`: not asked for them again.
    pub(crate) fn missed(&self, peer: PeerId, hashes: &[Hash]) {
        let mut told = lock(&self.told);
        if told.is_empty() {
            return;
        }
        for h in hashes {
            if let Some(peers) = told.get_mut(h) {
                peers.retain(|p| *p != peer);
                if peers.is_empty() {
                    told.remove(h);
                }
            }
        }
    }

    /// `hash` is no longer being fetched.
    pub(crate) fn forget(&self, hash: &Hash) {
        lock(&self.told).remove(hash);
    }
}

/// A fetch's side of telling: the chunks it has stored, in order, and how
/// many of them each peer has been told of.
pub(crate) struct Announce {
    got: Vec<Hash>,
    told: HashMap<PeerId, usize>,
    last: Instant,
}

impl Announce {
    pub(crate) fn new() -> Announce {
        Announce {
            got: Vec::new(),
            told: HashMap::new(),
            last: Instant::now(),
        }
    }

    pub(crate) fn stored(&mut self, hashes: &[Hash]) {
        self.got.extend_from_slice(hashes);
    }

    /// When `to` are next due to be told something, if anything.
    pub(crate) fn due(&self, to: &[PeerId]) -> Option<Instant> {
        self.untold(to).then_some(self.last + ANNOUNCE_EVERY)
    }

    fn untold(&self, to: &[PeerId]) -> bool {
        to.iter()
            .any(|p| self.told.get(p).copied().unwrap_or(0) < self.got.len())
    }

    /// Tell each of `to` what it has not been told yet, if it is time
    /// (`now`: whatever the time).
    pub(crate) fn tell(&mut self, inner: &Inner, to: &[PeerId], now: bool) {
        if !now && self.last.elapsed() < ANNOUNCE_EVERY || !self.untold(to) {
            return;
        }
        let Some(net) = &inner.net else { return };
        self.last = Instant::now();
        for p in to {
            let from = self.told.get(p).copied().unwrap_or(0);
            for part in self.got[from..].chunks(wire::MAX_HAVE_HASHES) {
                let msg = wire::encode(&Have {
                    hashes: part.to_vec(),
                });
                let (client, peer) = (net.client.clone(), *p);
                tokio::spawn(async move {
                    if let Err(e) = client.request(peer, wire::PROTO_HAVE, msg).await {
                        tracing::trace!(%peer, "telling chunks held: {e}");
                    }
                });
            }
            self.told.insert(*p, self.got.len());
        }
    }
}

/// Answer `/renderswarm/have/1` from `from`.
pub(crate) fn serve(inner: &Arc<Inner>, from: PeerId, data: &[u8]) -> Option<Vec<u8>> {
    let have = match wire::decode_have(data) {
        Ok(h) => h,
        Err(e) => {
            inner.bad_peer(from, &format!("have message: {e}"));
            return None;
        }
    };
    let coming = lock(&inner.chunks_coming);
    if !coming.is_empty() {
        let new = inner.haves.note(from, &have.hashes, &coming);
        inner
            .metrics
            .chunks_told
            .fetch_add(new, std::sync::atomic::Ordering::Relaxed);
    }
    Some(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_peers_tell_is_kept_for_chunks_coming_until_they_miss() {
        let [a, b, c] = [b"a", b"b", b"c"].map(|x| Hash::of(x));
        let (p, q) = (PeerId::random(), PeerId::random());
        let coming = HashMap::from([(a, 1), (b, 1)]);
        let haves = Haves::default();
        haves.note(p, &[a, c], &coming);
        haves.note(q, &[a, b], &coming);
        haves.note(q, &[a], &coming);
        // `c` is not being fetched: not kept.
        assert!(!haves.told_now().of_any(&[c]));
        assert!(haves.told_now().of_any(&[c, b]));
        assert_eq!(haves.tellers(&[a, b], 0, 4), vec![p, q]);
        assert_eq!(haves.tellers(&[a, b], 1, 4), vec![q, p]);
        assert_eq!(haves.tellers(&[a, b], 1, 1), vec![q]);
        assert_eq!(haves.tellers(&[b, a], 0, 4), vec![q, p]);
        // A peer that answered "not here" is not asked again for it.
        haves.missed(q, &[b]);
        assert!(!haves.told_now().of_any(&[b]));
        assert_eq!(haves.tellers(&[a], 0, 4), vec![p, q]);
        haves.forget(&a);
        assert!(haves.tellers(&[a, b], 0, 4).is_empty());
    }

    #[tokio::test]
    async fn each_peer_is_told_what_it_has_not_been_told() {
        let (p, q) = (PeerId::random(), PeerId::random());
        let mut announce = Announce::new();
        assert_eq!(announce.due(&[p]), None);
        announce.stored(&[Hash::of(b"1")]);
        let due = announce.due(&[p, q]).expect("something to tell");
        assert!(due > announce.last);
        // Without a network nothing is sent, and nothing is marked told.
        announce.told.insert(p, 1);
        assert!(announce.due(&[p]).is_none());
        assert!(announce.due(&[p, q]).is_some());
        announce.stored(&[Hash::of(b"2")]);
        assert!(announce.due(&[p]).is_some());
    }
}
