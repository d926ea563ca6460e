//! Getting blobs from peers, and checking that a peer's Done names outputs
//! that exist.
//!
//! A node that needs a blob asks the store what is missing (the manifest
//! first, then the chunks it lists; for a bundle, each file's manifest),
//! and requests the missing chunks from the peers that advertise the blob,
//! several requests in flight, spread over the providers. Every chunk is
//! verified against its hash before it is written; a peer that sends a bad
//! chunk is counted as bad input and skipped. A bundle (a job's scene) is
//! written out for its engine as its chunks arrive (`scenes.rs`), so the
//! render starts when the fetch ends instead of after a second pass. Nodes
//! that fetched a blob advertise it in their heartbeats, so fifty nodes
//! starting on one scene do not all pull from the submitter.
//!
//! Nodes that fetch one large blob at the same time feed each other as
//! well, so that the submitter sends each chunk about once, not once per
//! node: what matters when a scene goes to a room of machines over one
//! link each. A fetch of more than a few chunks is advertised in
//! heartbeats while it runs (`fetching`; a heartbeat goes out as it
//! begins), and each node sweeps the chunk list from a few fronts of its
//! own (at chunks derived from a hash of its id and the blob, so every node
//! knows where every other node's fronts are), so fetchers take different
//! chunks from the holders first: its own part, which it asks the holders
//! for before anything else. Each fetcher tells the others which chunks
//! it has got as they come (`have.rs`), and a chunk that another fetcher's
//! sweep passes first is asked of whoever told of it, once someone has
//! (or, if no one does for a while, of a fetcher ahead anyway), never of
//! the holders: the submitter's link is what a fan-out runs short of.
//! While its fetch runs, a node serves each of its chunks to two peers
//! and then answers "not here" (`sync::serve_chunks`): the peers it served
//! serve the rest, as a tree, rather than the first fetcher to take a
//! chunk from the holders serving it to every other fetcher (the fetchers'
//! shares of the list differ by up to twice, and the largest was the
//! bottleneck). Besides the heartbeat, the only message this adds is the
//! tell: a chunk request names chunks, and any node serves any chunk it has.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::str::FromStr;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::PeerId;
use tokio::time::Instant;

use super::wire::{self, ChunkRequest, MAX_CHUNKS_PER_REQUEST};
use super::{Inner, have, lock};
use crate::codec::CodecError;
use crate::hash::Hash;
use crate::ledger::{JobRecord, NodeId};
use crate::store::{Missing, StoreError, Unpacking};

/// A shared fetch's chunks, in [`Inner::chunks_coming`] while it runs.
struct Coming<'a> {
    inner: &'a Inner,
    want: &'a [Hash],
}

impl<'a> Coming<'a> {
    fn new(inner: &'a Inner, want: &'a [Hash]) -> Coming<'a> {
        let mut coming = lock(&inner.chunks_coming);
        for h in want {
            *coming.entry(*h).or_default() += 1;
        }
        Coming { inner, want }
    }
}

impl Drop for Coming<'_> {
    fn drop(&mut self) {
        let mut coming = lock(&self.inner.chunks_coming);
        let mut served = lock(&self.inner.served_while_fetching);
        for h in self.want {
            if let Some(k) = coming.get_mut(h) {
                *k -= 1;
                if *k == 0 {
                    coming.remove(h);
                    served.remove(h);
                    self.inner.haves.forget(h);
                }
            }
        }
    }
}

/// Unpacking a bundle while it is fetched.
enum Unpack {
    /// Not yet: it may not be a bundle, or its manifests are still to come.
    Untried,
    Running(Arc<Unpacking>),
    /// Not a bundle, unpacked already, or it cannot be.
    Off,
}

/// Chunk requests in flight for one blob.
pub(crate) const IN_FLIGHT: usize = 8;
/// Chunk requests in flight for one blob while other nodes fetch it too:
/// one chunk each, and each as slow as the peer that serves it shares its
/// link (a stream's window is 256 KiB, so a chunk takes several round
/// trips on a loaded link).
const IN_FLIGHT_WHILE_SHARING: usize = 16;
/// Data chunks per request (chunks average 1 MiB).
const DATA_CHUNKS_PER_REQUEST: usize = 2;
/// Rounds of asking before giving up (each round fetches what it can).
const MAX_ROUNDS: usize = 16;
/// How long a fetch waits for a fetcher of the same blob that serves it
/// nothing before it takes those chunks from the holders instead.
const FETCHER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);
/// How long after its start a big fetch assumes that other nodes may be
/// fetching the same blob, before it has heard of any.
const FIND_FETCHERS: std::time::Duration = std::time::Duration::from_millis(200);
/// How long a request of a shared fetch for chunks no peer has told of
/// waits for one to (`have.rs`), before it asks a fetcher ahead anyway: at
/// its first turn, and after each miss. Tells come in one round trip; this
/// is for a tell that was lost.
const WAIT_FOR_TELLING: std::time::Duration = std::time::Duration::from_secs(2);
/// A fetch too small to be shared (a bundle's manifests, while other nodes
/// fetch the bundle) is not told of: it asks fetchers ahead again this
/// long after the first miss, twice as long after the second, and so on
/// up to [`MAX_ASK_AGAIN_STEPS`] times as long.
const ASK_AGAIN: std::time::Duration = std::time::Duration::from_millis(50);
const MAX_ASK_AGAIN_STEPS: u32 = 6;
/// A fetch missing at least this many chunks is advertised while it runs
/// (smaller ones, such as a frame's output, end before a heartbeat would
/// tell anyone).
const SHARE_FROM_CHUNKS: usize = 16;

impl Inner {
    /// Make `blob` complete in the local store, fetching what is missing from
    /// peers (`hints` first, then those that advertise it, then any). A
    /// bundle (a scene) is unpacked for its engine as its chunks arrive.
    ///
    /// The fetch runs to its end in a task of its own: a caller that goes
    /// away (a web client that hangs up) neither wastes what was fetched
    /// nor leaves a half-unpacked scene behind.
    pub async fn fetch_blob(self: &Arc<Self>, blob: Hash, hints: &[NodeId]) -> Result<(), String> {
        let inner = self.clone();
        let hints = hints.to_vec();
        tokio::spawn(async move { inner.fetch_blob_to_the_end(blob, &hints).await })
            .await
            .unwrap_or_else(|e| Err(format!("fetching blob {}: {e}", blob.short(12))))
    }

    async fn fetch_blob_to_the_end(
        self: &Arc<Self>,
        blob: Hash,
        hints: &[NodeId],
    ) -> Result<(), String> {
        let lock_for_blob = {
            let mut locks = lock(&self.fetch_locks);
            locks.entry(blob).or_default().clone()
        };
        let fetched = {
            let _one_fetch_per_blob = lock_for_blob.lock().await;
            let mut unpack = Unpack::Untried;
            let fetched = self.fetch_rounds(blob, hints, &mut unpack).await;
            if let Unpack::Running(u) = unpack {
                match fetched {
                    Ok(()) => self.scenes.finish_unpacking(&self.store, blob, u).await,
                    Err(_) => self.scenes.abandon_unpacking(blob).await,
                }
            }
            fetched
        };
        if fetched.is_err() {
            lock(&self.fetches_shared).remove(&blob);
        }
        // The last one out forgets the blob's lock (clones are only taken
        // under the map's mutex, so the count cannot rise meanwhile).
        let mut locks = lock(&self.fetch_locks);
        if Arc::strong_count(&lock_for_blob) == 2 {
            locks.remove(&blob);
        }
        fetched
    }

    /// Whether a fetch of `blob` is under way here: its chunks may all be in
    /// the store while the scene it unpacks is not yet in place.
    pub(crate) fn fetching(&self, blob: Hash) -> bool {
        lock(&self.fetch_locks).contains_key(&blob)
    }

    /// The rounds of asking for what `blob` still lacks, until it lacks
    /// nothing; from the round that has all its manifests on, a bundle is
    /// unpacked as its chunks arrive (`unpack`).
    async fn fetch_rounds(
        self: &Arc<Self>,
        blob: Hash,
        hints: &[NodeId],
        unpack: &mut Unpack,
    ) -> Result<(), String> {
        let began = std::time::Instant::now();
        // Chunks this fetch wrote, without an fsync each: made durable
        // before the blob is said to be held (see `sync_then_hold`).
        let mut written: Vec<Hash> = Vec::new();
        for _ in 0..MAX_ROUNDS {
            let store = self.store.clone();
            let missing = tokio::task::spawn_blocking(move || store.missing_chunks(blob))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let want = match missing {
                Missing::Nothing => {
                    if written.is_empty() {
                        self.hold_blob(blob);
                    } else {
                        tracing::debug!(
                            "fetched blob {}: {} chunks in {:?}",
                            blob.short(12),
                            written.len(),
                            began.elapsed()
                        );
                        self.sync_then_hold(blob, written);
                    }
                    return Ok(());
                }
                Missing::Manifest(h) => vec![h],
                Missing::Chunks(list) => {
                    if list.len() >= SHARE_FROM_CHUNKS {
                        self.share_fetch(blob);
                    }
                    self.try_unpacking(blob, unpack).await;
                    list
                }
            };
            let providers = self.providers(blob, hints);
            if providers.is_empty() {
                return Err(format!(
                    "blob {} is not on this node and no peer is connected to provide it",
                    blob.short(12)
                ));
            }
            let into = match unpack {
                Unpack::Running(u) => Some(u.clone()),
                _ => None,
            };
            let got = self.fetch_chunks(blob, &want, &providers, into).await;
            if got.is_empty() {
                return Err(format!(
                    "no peer could provide blob {} ({} chunks missing)",
                    blob.short(12),
                    want.len()
                ));
            }
            written.extend(got);
        }
        Err(format!(
            "blob {} is still incomplete after {MAX_ROUNDS} rounds of fetching",
            blob.short(12)
        ))
    }

    /// Advertise that this node is fetching `blob` (and serves what it has
    /// of it so far), at once: fetchers that start together learn of each
    /// other within a round trip, not a heartbeat period.
    fn share_fetch(&self, blob: Hash) {
        let new = {
            let mut shared = lock(&self.fetches_shared);
            shared.len() < super::peers::MAX_HEARTBEAT_FETCHING && shared.insert(blob)
        };
        if new {
            self.heartbeat_now.notify_one();
        }
    }

    /// Begin unpacking `blob` as it is fetched, if it is a bundle whose
    /// manifests are all here and it is not unpacked already.
    async fn try_unpacking(self: &Arc<Self>, blob: Hash, unpack: &mut Unpack) {
        if !matches!(unpack, Unpack::Untried) {
            return;
        }
        let inner = self.clone();
        let begun =
            tokio::task::spawn_blocking(move || inner.scenes.begin_unpacking(&inner.store, blob))
                .await;
        *unpack = match begun {
            Ok(Ok(Some(u))) => Unpack::Running(Arc::new(u)),
            // Some manifests are still to come: the next round tries again.
            Ok(Err(StoreError::NotFound(_))) => Unpack::Untried,
            Ok(Ok(None) | Err(StoreError::NotABundle(_))) => Unpack::Off,
            Ok(Err(e)) => {
                tracing::debug!("cannot unpack blob {} as it arrives: {e}", blob.short(12));
                Unpack::Off
            }
            Err(_) => Unpack::Off,
        };
    }

    /// Peers to ask: hints and advertisers, then every other connected peer.
    fn providers(&self, blob: Hash, hints: &[NodeId]) -> Providers {
        let now = std::time::Instant::now();
        let connected = lock(&self.connected).clone();
        let advertisers = lock(&self.peers).providers(blob, now);
        let mut known: Vec<PeerId> = Vec::new();
        for n in hints.iter().chain(&advertisers) {
            if let Ok(p) = PeerId::from_str(n.as_str())
                && connected.contains(&p)
                && !known.contains(&p)
            {
                known.push(p);
            }
        }
        let others = connected
            .iter()
            .filter(|p| !known.contains(p))
            .copied()
            .collect();
        Providers { known, others }
    }

    /// Fetch `want` (chunks of `blob`) from `providers`, sweeping the list
    /// from this node's own starting point; returns the chunks stored. Each
    /// is also placed `into` the bundle being unpacked, if any.
    ///
    /// While other nodes fetch the blob too, requests are of one chunk, one
    /// of them at a time to the holders, for this node's own part first; a
    /// chunk whose sweep another fetcher passed first waits until a peer
    /// tells of it, and is then asked of that peer (never of the holders:
    /// the submitter's link is what a fan-out runs short of). Meanwhile the
    /// sweep goes on, and this fetch tells the others what it got. A
    /// fetcher that has served nothing for [`FETCHER_PATIENCE`] is waited
    /// for no more.
    async fn fetch_chunks(
        self: &Arc<Self>,
        blob: Hash,
        want: &[Hash],
        providers: &Providers,
        into: Option<Arc<Unpacking>>,
    ) -> Vec<Hash> {
        let per_request = if want.len() > 1 {
            DATA_CHUNKS_PER_REQUEST
        } else {
            1
        };
        let n = want.len();
        let _coming = (n >= SHARE_FROM_CHUNKS).then(|| Coming::new(self, want));
        let me = Sweep::of(self.id.as_str(), blob, n);
        let mut queue: VecDeque<Request> = me
            .batches(want, per_request)
            .into_iter()
            .enumerate()
            .map(|(i, (at, batch))| Request {
                i,
                at,
                batch,
                asked: 0,
                waited: false,
                before: false,
            })
            .collect();
        // The fetchers the requests' `before` and this node's `share` of
        // the sweep were worked out for.
        let mut marked_for: Option<Vec<PeerId>> = None;
        let mut share = 1.0;
        // Requests the fetchers could not answer yet, and when to ask again.
        let mut later: VecDeque<(Instant, Request)> = VecDeque::new();
        let patience = Patience::default();
        let mut fetchers_known = HashMap::new();
        let mut in_flight = FuturesUnordered::new();
        let mut to_holders = 0;
        let mut stored = Vec::new();
        // Fetchers that start together hear of each other within a round
        // trip of their start (`share_fetch`): until then, a big fetch
        // takes no more of the holders' slots than it would beside them.
        let alone_from = Instant::now() + FIND_FETCHERS;
        // What this fetch stored, told to the other fetchers (and what they
        // stored, told to this one).
        let telling = n >= SHARE_FROM_CHUNKS;
        let mut announce = telling.then(have::Announce::new);
        loop {
            let told_more = self.haves.came();
            let mut sweeps = self.fetcher_sweeps(blob, n, &mut fetchers_known);
            sweeps.retain(|(p, _)| patience.still_waits_for(*p));
            let fetchers: Vec<PeerId> = sweeps.iter().map(|(p, _)| *p).collect();
            if marked_for.as_ref() != Some(&fetchers) {
                for r in queue.iter_mut() {
                    r.before = anyone_before(r.at, &me, &sweeps);
                }
                share = own_share(&me, &sweeps);
                marked_for = Some(fetchers.clone());
            }
            if let Some(a) = &mut announce {
                a.tell(self, &fetchers, false);
            }
            let sharing =
                !sweeps.is_empty() || (n >= SHARE_FROM_CHUNKS && Instant::now() < alone_from);
            let (slots, holder_slots) = if sharing {
                (IN_FLIGHT_WHILE_SHARING, holder_slots_for(share))
            } else {
                (IN_FLIGHT, IN_FLIGHT)
            };
            while in_flight.len() < slots {
                let holders_free = to_holders < holder_slots;
                let next = self.next_request(&mut queue, &mut later, holders_free);
                let Some(mut req) = next else { break };
                // While sharing, one chunk at a time: each fetcher has
                // something to serve the others sooner, and a chunk comes
                // from whoever told of it.
                if sharing && req.batch.len() > 1 {
                    let rest = Request {
                        batch: req.batch.split_off(1),
                        at: req.at + 1,
                        before: anyone_before(req.at + 1, &me, &sweeps),
                        ..req
                    };
                    queue.push_front(rest);
                }
                let tellers = self.haves.tellers(&req.batch, req.i + req.asked, 2);
                let ahead = passed_before(req.at, &me, &sweeps);
                // Chunks a fetcher ahead has not told of yet: it has most
                // likely not got them. Asked for when it does, or if none
                // does for a while (a tell lost).
                if telling && !ahead.is_empty() && tellers.is_empty() && !req.waited {
                    req.waited = true;
                    ask_later(&mut later, Instant::now() + WAIT_FOR_TELLING, req);
                    continue;
                }
                if ahead.is_empty() && tellers.is_empty() {
                    to_holders += 1;
                }
                // Only a request that missed twice asks those behind.
                let behind = if req.asked > 1 {
                    let behind = sweeps.iter().map(|(p, _)| *p);
                    behind.filter(|p| !ahead.contains(p)).collect()
                } else {
                    Vec::new()
                };
                let how = Ask {
                    tellers,
                    behind,
                    ahead,
                    providers,
                    patience: &patience,
                };
                in_flight.push(self.request(req, how, into.clone()));
            }
            if in_flight.is_empty() && later.is_empty() && queue.is_empty() {
                if let Some(a) = &mut announce {
                    a.tell(self, &fetchers, true);
                }
                return stored;
            }
            // With a slot free and a request waiting, wake when it is due
            // or when a peer tells of a chunk; wake to tell what came.
            let slot_free = in_flight.len() < slots && !later.is_empty();
            let wake = [
                later.front().map(|(due, _)| *due).filter(|_| slot_free),
                announce.as_ref().and_then(|a| a.due(&fetchers)),
            ]
            .into_iter()
            .flatten()
            .min();
            let done = tokio::select! {
                Some(d) = in_flight.next(), if !in_flight.is_empty() => d,
                _ = sleep_until_some(wake), if wake.is_some() => continue,
                _ = told_more, if slot_free => continue,
                // Cannot be: a request waits in `later` whenever none is in
                // flight. Whatever is missing, the next round asks for.
                else => return stored,
            };
            {
                if done.from_holders {
                    to_holders -= 1;
                }
                if let Some(a) = &mut announce {
                    a.stored(&done.got);
                }
                stored.extend(done.got);
                if let Some(r) = done.again {
                    // Missed: asked again when someone tells of it, or
                    // after a while.
                    let wait = if telling {
                        WAIT_FOR_TELLING
                    } else {
                        ASK_AGAIN * (r.asked as u32).min(MAX_ASK_AGAIN_STEPS)
                    };
                    ask_later(&mut later, Instant::now() + wait, r);
                }
            }
        }
    }

    /// Which request of a fetch goes next, taken from the `queue` (the
    /// sweep, in order) or from `later` (those to ask again): first this
    /// node's own part of the sweep (the chunks no other fetcher takes from
    /// the holders first), while the holders have a slot free; then a
    /// request to ask again whose chunks a peer has told of; then one due;
    /// then the sweep's first that has a slot.
    fn next_request(
        &self,
        queue: &mut VecDeque<Request>,
        later: &mut VecDeque<(Instant, Request)>,
        holders_free: bool,
    ) -> Option<Request> {
        let told_now = self.haves.told_now();
        let told = |r: &Request| told_now.of_any(&r.batch);
        let own = |r: &Request| !r.before && !told(r);
        if holders_free && let Some(k) = queue.iter().position(own) {
            return queue.remove(k);
        }
        if let Some(k) = later.iter().position(|(_, r)| told(r)) {
            return later.remove(k).map(|(_, r)| r);
        }
        if matches!(later.front(), Some((t, _)) if *t <= Instant::now()) {
            return later.pop_front().map(|(_, r)| r);
        }
        let fits = |r: &Request| holders_free || r.before || told(r);
        let k = queue.iter().position(fits)?;
        queue.remove(k)
    }

    /// One request. To the peers that told of its chunks, if any; else,
    /// with no fetcher `ahead` of this node, to the `providers` in turn;
    /// else to one of those fetchers, another each time it is asked again.
    /// Chunks it did not get come back to be asked again. Everyone who has
    /// a chunk serves it, so the submitter sends it about once and no one
    /// fetcher serves its part of the blob to all the others.
    async fn request(
        self: &Arc<Self>,
        req: Request,
        how: Ask<'_>,
        into: Option<Arc<Unpacking>>,
    ) -> Done {
        let Ask {
            tellers,
            ahead,
            behind,
            providers,
            patience,
        } = how;
        if ahead.is_empty() && tellers.is_empty() {
            let order = providers.order(req.i);
            let got = self.fetch_batch(&req.batch, &order, into).await.stored;
            return Done {
                got,
                again: None,
                from_holders: true,
            };
        }
        // The peers that told of its chunks; with none, a fetcher ahead,
        // and when asked before and missed, the first fetcher past it,
        // which fetched it from the holders, in the same turn.
        let mut order = tellers;
        if order.is_empty() {
            let pick = ahead[(req.i + req.asked) % ahead.len()];
            order.push(pick);
            if req.asked > 0 && pick != ahead[0] {
                order.push(ahead[0]);
            }
            if req.asked > 1 {
                order.extend(behind);
            }
        }
        for p in &order {
            patience.asking(*p);
        }
        let Fetched {
            stored: got,
            servers,
        } = self.fetch_batch(&req.batch, &order, into).await;
        // Only those that sent a chunk: a fetcher asked first that stalls
        // until the request times out, with the next one asked serving,
        // has served nothing.
        for p in servers {
            patience.served(p);
        }
        let left: Vec<Hash> = req
            .batch
            .iter()
            .filter(|h| !got.contains(h))
            .copied()
            .collect();
        let again = (!left.is_empty()).then_some(Request {
            batch: left,
            asked: req.asked + 1,
            ..req
        });
        Done {
            got,
            again,
            from_holders: false,
        }
    }

    /// The connected peers fetching `blob` (a list of `n` chunks), each
    /// with its sweep. `known` keeps each fetcher's peer id and sweep for
    /// the life of the fetch: both are fixed, and asked for after every
    /// finished request.
    fn fetcher_sweeps(
        &self,
        blob: Hash,
        n: usize,
        known: &mut HashMap<NodeId, (PeerId, Sweep)>,
    ) -> Vec<(PeerId, Sweep)> {
        let fetchers = lock(&self.peers).fetchers(blob, std::time::Instant::now());
        if fetchers.is_empty() {
            return Vec::new();
        }
        let connected = lock(&self.connected);
        let mut sweeps = Vec::with_capacity(fetchers.len());
        for node in fetchers {
            let (p, sweep) = match known.get(&node) {
                Some(k) => k,
                None => {
                    let Ok(p) = PeerId::from_str(node.as_str()) else {
                        continue;
                    };
                    let sweep = Sweep::of(node.as_str(), blob, n);
                    known.entry(node).or_insert((p, sweep))
                }
            };
            if connected.contains(p) {
                sweeps.push((*p, sweep.clone()));
            }
        }
        sweeps
    }

    /// Ask providers in turn for a batch until every chunk is stored;
    /// returns the chunks stored and who sent them.
    pub(super) async fn fetch_batch(
        self: &Arc<Self>,
        batch: &[Hash],
        order: &[PeerId],
        into: Option<Arc<Unpacking>>,
    ) -> Fetched {
        let Some(net) = &self.net else {
            return Fetched::default();
        };
        ask_in_turn(batch, order, |peer, left| {
            let into = into.clone();
            async move {
                let req = wire::encode(&ChunkRequest {
                    hashes: left.clone(),
                });
                let asked_at = std::time::Instant::now();
                let reply = net
                    .client
                    .request(peer, wire::PROTO_CHUNK, req)
                    .await
                    .ok()?;
                let (ok, bad) = match self.store_reply(reply, left.clone(), into).await {
                    Ok(stored) => stored,
                    Err(e) => {
                        self.bad_peer(peer, &format!("chunk reply does not decode: {e}"));
                        return None;
                    }
                };
                tracing::trace!(
                    %peer,
                    asked = left.len(),
                    got = ok.len(),
                    ms = asked_at.elapsed().as_millis() as u64,
                    first = %left[0].short(8),
                    "chunk request"
                );
                if bad > 0 {
                    let what = format!("{bad} chunk(s) with wrong bytes");
                    self.bad_inputs(peer, &what, u32::try_from(bad).unwrap_or(u32::MAX));
                }
                let missed: Vec<Hash> = left.iter().filter(|h| !ok.contains(h)).copied().collect();
                self.haves.missed(peer, &missed);
                Some(ok)
            }
        })
        .await
    }

    /// Verify and write the chunks of a `reply` to a request for `asked`,
    /// and place them `into` the bundle being unpacked; returns the hashes
    /// stored and how many were bad. The chunks are written from the reply
    /// as it arrived, without a copy.
    async fn store_reply(
        self: &Arc<Self>,
        reply: Vec<u8>,
        asked: Vec<Hash>,
        into: Option<Arc<Unpacking>>,
    ) -> Result<(BTreeSet<Hash>, usize), CodecError> {
        let inner = self.clone();
        tokio::task::spawn_blocking(move || {
            let reply = wire::decode_chunk_reply(&reply)?;
            let mut ok = BTreeSet::new();
            let mut bad = 0;
            for (h, c) in asked.iter().zip(reply.chunks) {
                let Some(c) = c else { continue };
                inner
                    .metrics
                    .chunk_bytes_fetched
                    .fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
                match inner.store.write_chunk(*h, c) {
                    Ok(()) => {
                        if let Some(u) = &into {
                            u.place(*h, c);
                        }
                        ok.insert(*h);
                    }
                    Err(StoreError::HashMismatch { .. } | StoreError::TooLarge { .. }) => bad += 1,
                    // This node's disk, not the peer: left to fetch again.
                    Err(e) => tracing::warn!("storing fetched chunk {}: {e}", h.short(12)),
                }
            }
            Ok((ok, bad))
        })
        .await
        .unwrap_or_else(|_| Ok(Default::default()))
    }

    /// Makes the chunks a fetch `written` durable in the background, then
    /// holds `blob`. The caller uses the blob at once (the engine reads it
    /// from the page cache; a crash before the sync leaves at worst a torn
    /// chunk, which its next verified read finds and fetches again); only
    /// telling peers this node holds it waits for the disk. A fetched 1 GiB
    /// scene took 1.4-1.8 s to sync here when the render waited for it;
    /// ~50 ms since each chunk's writeback starts as it is written.
    fn sync_then_hold(self: &Arc<Self>, blob: Hash, written: Vec<Hash>) {
        self.sync_then_hold_all(vec![blob], written);
    }

    /// [`Inner::sync_then_hold`] for several blobs fetched together, with
    /// one sync of every chunk written for them.
    pub(super) fn sync_then_hold_all(self: &Arc<Self>, blobs: Vec<Hash>, written: Vec<Hash>) {
        {
            let mut syncing = lock(&self.syncing);
            for &blob in &blobs {
                *syncing.entry(blob).or_default() += 1;
            }
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            let store = inner.store.clone();
            let checked = blobs.clone();
            let synced = tokio::task::spawn_blocking(move || {
                store.sync_chunks(&written).map_err(|e| e.to_string())?;
                // Evicted meanwhile (a full disk trims at once): not held.
                Ok(checked
                    .iter()
                    .map(|b| store.has_blob(*b))
                    .collect::<Vec<_>>())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            // Another sync of a blob (evicted and fetched again during this
            // one) keeps it unheld until that one ends too.
            {
                let mut syncing = lock(&inner.syncing);
                for blob in &blobs {
                    if let Some(n) = syncing.get_mut(blob) {
                        *n -= 1;
                        if *n == 0 {
                            syncing.remove(blob);
                        }
                    }
                }
            }
            let here = match synced {
                Ok(here) => here,
                Err(e) => {
                    tracing::warn!("making {} fetched blob(s) durable: {e}", blobs.len());
                    vec![false; blobs.len()]
                }
            };
            for (blob, here) in blobs.into_iter().zip(here) {
                if here {
                    tracing::debug!("synced blob {} in {:?}", blob.short(12), began.elapsed());
                    inner.hold_blob(blob);
                } else {
                    lock(&inner.fetches_shared).remove(&blob);
                }
            }
        });
    }

    /// Remember that this node holds `blob` completely (advertised in
    /// heartbeats), unless its fetched chunks are still being synced (then
    /// the sync holds it when done).
    pub fn hold_blob(&self, blob: Hash) {
        if lock(&self.syncing).contains_key(&blob) {
            return;
        }
        lock(&self.complete_blobs).insert(blob);
        // From now on it is advertised as held, no longer as being fetched.
        lock(&self.fetches_shared).remove(&blob);
        let mut held = lock(&self.held_blobs);
        held.retain(|h| *h != blob);
        held.push_back(blob);
        while held.len() > super::peers::MAX_HEARTBEAT_BLOBS {
            held.pop_front();
        }
    }
}

/// What one batch's requests got: the chunks stored, and the peers that
/// sent at least one of them.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Fetched {
    pub(super) stored: Vec<Hash>,
    servers: Vec<PeerId>,
}

/// Ask the peers of `order` in turn for what of `batch` is still missing,
/// until nothing is. `ask` returns the chunks a peer's reply stored, or
/// `None` when it failed (timed out, refused, could not be decoded).
async fn ask_in_turn<F, Fut>(batch: &[Hash], order: &[PeerId], mut ask: F) -> Fetched
where
    F: FnMut(PeerId, Vec<Hash>) -> Fut,
    Fut: std::future::Future<Output = Option<BTreeSet<Hash>>>,
{
    let mut left: Vec<Hash> = batch.to_vec();
    let mut got = Fetched::default();
    for &peer in order {
        if left.is_empty() {
            break;
        }
        let Some(ok) = ask(peer, left.clone()).await else {
            continue;
        };
        left.retain(|h| !ok.contains(h));
        if !ok.is_empty() {
            got.servers.push(peer);
        }
        got.stored.extend(ok);
    }
    got
}

/// Drop from `rec` every Done this node does not know yet whose outputs
/// cannot be found: a Done must name blobs that exist, and a blob exists
/// once its manifest (whose hash is the blob's name) is seen. `manifests`
/// came with the record (a renderer gossips its Done with them), so most
/// Dones are checked by hashing these few bytes. Other outputs' manifests
/// are asked for from the Done's author, then from `also` (the peers the
/// record came through, which checked it themselves before passing it on);
/// those found are stored (they are small). Returns how many Dones were
/// dropped.
pub(crate) async fn verify_dones(
    inner: &Arc<Inner>,
    also: &[PeerId],
    rec: &mut JobRecord,
    manifests: &[serde_bytes::ByteBuf],
) -> usize {
    let id = crate::ledger::job_id(&rec.spec);
    let known = |task: u32, d: &crate::ledger::Done| {
        inner.ledger.read(|jobs| {
            jobs.get(&id)
                .and_then(|r| r.tasks.get(&task))
                .is_some_and(|t| t.dones.contains(d))
        })
    };
    let mut needed: HashMap<Hash, Vec<NodeId>> = HashMap::new();
    for (task, t) in &rec.tasks {
        for d in t.dones.iter().filter(|d| !known(*task, d)) {
            for o in d.outputs.values() {
                needed.entry(o.blob).or_default().push(d.node.clone());
            }
        }
    }
    if !needed.is_empty() && !manifests.is_empty() {
        // A manifest shows its blob when it hashes to the blob's name and
        // is a manifest (bytes that merely hash right prove nothing).
        let shown: std::collections::HashSet<Hash> = manifests
            .iter()
            .filter(|m| crate::store::Manifest::decode(m).is_ok())
            .map(|m| Hash::of(m))
            .collect();
        needed.retain(|blob, _| !shown.contains(blob));
    }
    if needed.is_empty() {
        return 0;
    }
    let missing = manifests_missing(inner, needed.keys().copied().collect()).await;
    // Manifests to ask of the same peers go together, a request's worth at
    // a time: a node that syncs a job with thousands of frames it has not
    // seen asks for their manifests in a few requests, not one each.
    let mut by_askee: BTreeMap<Vec<PeerId>, Vec<Hash>> = BTreeMap::new();
    for &blob in &missing {
        let authors = needed.get(&blob).map(Vec::as_slice).unwrap_or_default();
        by_askee
            .entry(whom_to_ask(authors, also))
            .or_default()
            .push(blob);
    }
    for (peers, blobs) in &by_askee {
        for batch in blobs.chunks(MAX_CHUNKS_PER_REQUEST) {
            inner.fetch_batch(batch, peers, None).await;
        }
    }
    let unobtainable: BTreeSet<Hash> = manifests_missing(inner, missing)
        .await
        .into_iter()
        .collect();
    let mut dropped = 0;
    for t in rec.tasks.values_mut() {
        let before = t.dones.len();
        t.dones
            .retain(|d| d.outputs.values().all(|o| !unobtainable.contains(&o.blob)));
        dropped += before - t.dones.len();
    }
    dropped
}

/// Whom to ask for the manifest of a blob named in Dones by `authors`:
/// they, in order and once each, then the peers in `also`.
fn whom_to_ask(authors: &[NodeId], also: &[PeerId]) -> Vec<PeerId> {
    let mut peers: Vec<PeerId> = Vec::new();
    let named = authors
        .iter()
        .filter_map(|n| PeerId::from_str(n.as_str()).ok());
    for p in named.chain(also.iter().copied()) {
        if !peers.contains(&p) {
            peers.push(p);
        }
    }
    peers
}

/// The blobs whose manifest this node does not hold: absent, or bytes that
/// hash right but are no manifest.
async fn manifests_missing(inner: &Inner, blobs: Vec<Hash>) -> Vec<Hash> {
    let store = inner.store.clone();
    tokio::task::spawn_blocking(move || {
        blobs
            .into_iter()
            .filter(|b| store.manifest(*b).is_err())
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// One request of a fetch: the `i`th of its sweep, for `batch`, which
/// begins at chunk `at` of the list.
struct Request {
    i: usize,
    at: usize,
    batch: Vec<Hash>,
    /// Times asked of fetchers ahead that did not have it all.
    asked: usize,
    /// Whether it has waited for a fetcher to tell of its chunks.
    waited: bool,
    /// Whether another fetcher's sweep reaches its first chunk before this
    /// node's does (`anyone_before`), for the fetchers of the fetch's last
    /// look: worked out again for every request when they change, not on
    /// every look through the queue (which was quadratic in the chunks).
    before: bool,
}

/// Whom a request asks.
struct Ask<'a> {
    /// Peers that told of its chunks (`have.rs`), asked first.
    tellers: Vec<PeerId>,
    /// Fetchers whose sweeps passed its chunks before this node's.
    ahead: Vec<PeerId>,
    /// The other fetchers, asked when those ahead missed twice.
    behind: Vec<PeerId>,
    providers: &'a Providers,
    patience: &'a Patience,
}

/// What one request got, and what is to be asked again.
struct Done {
    got: Vec<Hash>,
    again: Option<Request>,
    /// Whether it went to the holders (it used one of their slots).
    from_holders: bool,
}

/// When each fetcher a fetch asked last served it something (or was
/// first asked), to stop waiting for one that has stalled or gone.
#[derive(Default)]
struct Patience(std::sync::Mutex<HashMap<PeerId, std::time::Instant>>);

impl Patience {
    /// Whether `peer` is still waited for: not asked yet, or it served
    /// something (or was first asked) less than [`FETCHER_PATIENCE`] ago.
    fn still_waits_for(&self, peer: PeerId) -> bool {
        lock(&self.0)
            .get(&peer)
            .is_none_or(|since| since.elapsed() < FETCHER_PATIENCE)
    }

    /// A request to `peer` is being made: its patience starts, if it has
    /// not already.
    fn asking(&self, peer: PeerId) {
        lock(&self.0)
            .entry(peer)
            .or_insert_with(std::time::Instant::now);
    }

    /// `peer` sent chunks a request asked for.
    fn served(&self, peer: PeerId) {
        lock(&self.0).insert(peer, std::time::Instant::now());
    }
}

/// How a node goes through a blob's list of `n` chunks: from a few
/// fronts at once, each at a chunk derived from a hash of the node's id and
/// the blob (so every node can tell where every other's fronts are), each
/// front running up to the next. Several fronts per node spread the parts
/// that each fetcher takes from the holders first more evenly than one
/// would: with one, a node whose front is far from the next node's has a
/// large part to fetch and then to serve to everyone.
///
/// Two nodes' fronts can begin at the same chunk (among 28 fronts on a
/// list of 60 chunks, several pairs do): then neither reaches that stretch
/// first, and both would take it from the holders. `tie`, from the same
/// hash, says which of them goes first.
#[derive(Clone, Debug, PartialEq)]
struct Sweep {
    n: usize,
    /// Where the fronts begin, ascending.
    fronts: Vec<usize>,
    /// Of two sweeps that reach a chunk at once, the lower goes first.
    tie: u64,
}

/// Fronts per sweep.
const SWEEP_FRONTS: usize = 4;

impl Sweep {
    fn of(node: &str, blob: Hash, n: usize) -> Sweep {
        let mut h = blake3::Hasher::new();
        h.update(node.as_bytes());
        h.update(&blob.0);
        let mut words = [0u8; (SWEEP_FRONTS + 1) * 8];
        h.finalize_xof().fill(&mut words);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        let (front_words, tie) = words.split_at(SWEEP_FRONTS * 8);
        let mut fronts: Vec<usize> = front_words
            .chunks_exact(8)
            .map(|b| ((word(b) as u128 * n as u128) >> 64) as usize)
            .collect();
        if n == 0 {
            fronts.clear();
        }
        fronts.sort_unstable();
        fronts.dedup();
        Sweep {
            n,
            fronts,
            tie: word(tie),
        }
    }

    /// When chunk `at` is reached, for comparing with other sweeps: how
    /// far the front that reaches it has gone by then, and the tie-break.
    fn place(&self, at: usize) -> (usize, u64) {
        (self.reach(at), self.tie)
    }

    /// How far the front that reaches chunk `at` has gone by then.
    fn reach(&self, at: usize) -> usize {
        let n = self.n.max(1);
        self.fronts
            .iter()
            .map(|&f| (at + n - f) % n)
            .min()
            .unwrap_or(usize::MAX)
    }

    /// `want` (the list) in requests of `per_request` chunks, taking from
    /// each front in turn, each with the chunk it begins at. A request
    /// does not straddle a front's start or the end of the list.
    fn batches(&self, want: &[Hash], per_request: usize) -> Vec<(usize, Vec<Hash>)> {
        let n = want.len().min(self.n);
        let mut runs: Vec<Vec<(usize, Vec<Hash>)>> = Vec::new();
        for (k, &f) in self.fronts.iter().enumerate() {
            let ranges = match self.fronts.get(k + 1) {
                Some(&next) => [f..next, 0..0],
                // The last front wraps around to the first.
                None => [f..n, 0..self.fronts[0]],
            };
            let run = ranges
                .into_iter()
                .flat_map(|r| {
                    let start = r.start;
                    want[r]
                        .chunks(per_request)
                        .enumerate()
                        .map(move |(j, b)| (start + j * per_request, b.to_vec()))
                        .collect::<Vec<_>>()
                })
                .collect();
            runs.push(run);
        }
        let mut batches = Vec::with_capacity(n.div_ceil(per_request) + runs.len());
        let mut iters: Vec<_> = runs.into_iter().map(Vec::into_iter).collect();
        while !iters.is_empty() {
            iters.retain_mut(|it| match it.next() {
                Some(b) => {
                    batches.push(b);
                    true
                }
                None => false,
            });
        }
        batches
    }
}

/// Of [`IN_FLIGHT_WHILE_SHARING`], requests in flight to the holders, for
/// a node whose own part of the sweep is `share` times the fetchers' mean:
/// one per mean part. Every fetcher shares the holders' link, so with more
/// each (two: fourteen 1 MiB chunks at once from one submitter) all
/// arrived together after a second, and nobody had anything to serve the
/// others until then; but the parts differ by up to twice, and with one
/// slot the node with the largest took its part alone at the end.
fn holder_slots_for(share: f64) -> usize {
    (share.round() as usize).clamp(1, 3)
}

/// How large this node's own part of the sweep is (the chunks no other
/// fetcher's sweep reaches first) against the mean of all fetchers' parts.
/// A fetch works it out again only when the fetchers change.
fn own_share(me: &Sweep, sweeps: &[(PeerId, Sweep)]) -> f64 {
    let n = me.n.max(1);
    let mine = (0..n).filter(|&at| !anyone_before(at, me, sweeps)).count();
    mine as f64 / (n as f64 / (sweeps.len() + 1) as f64)
}

/// Put `req` among the requests to ask again, kept in order of when each
/// is `due`.
fn ask_later(later: &mut VecDeque<(Instant, Request)>, due: Instant, req: Request) {
    let k = later.partition_point(|(t, _)| *t <= due);
    later.insert(k, (due, req));
}

/// Sleep until `when`; never, without one.
async fn sleep_until_some(when: Option<Instant>) {
    match when {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Whether any of `sweeps` reached chunk `at` before `mine` does.
fn anyone_before(at: usize, mine: &Sweep, sweeps: &[(PeerId, Sweep)]) -> bool {
    let me = mine.place(at);
    sweeps.iter().any(|(_, s)| s.place(at) < me)
}

/// Of `sweeps` (peers and their sweeps), those that reached chunk `at`
/// before this node's sweep (`mine`) does, the first to reach it first.
fn passed_before(at: usize, mine: &Sweep, sweeps: &[(PeerId, Sweep)]) -> Vec<PeerId> {
    let me = mine.place(at);
    let mut ahead: Vec<((usize, u64), PeerId)> = sweeps
        .iter()
        .map(|(p, sweep)| (sweep.place(at), *p))
        .filter(|&(d, _)| d < me)
        .collect();
    ahead.sort_by_key(|&(d, _)| d);
    ahead.into_iter().map(|(_, p)| p).collect()
}

/// The peers a fetch asks, in two groups: those known to hold the blob (the
/// hints, such as its submitter, and the peers that advertise it), then
/// every other connected peer, which may hold some of its chunks (a peer
/// fetching the same scene serves what it has so far) or all of it
/// unadvertised.
#[derive(Debug, Default)]
struct Providers {
    known: Vec<PeerId>,
    others: Vec<PeerId>,
}

impl Providers {
    fn is_empty(&self) -> bool {
        self.known.is_empty() && self.others.is_empty()
    }

    /// Whom request `i` asks, in turn: the known holders first, then the
    /// rest, each group rotated by `i` so that requests spread over the
    /// peers of a group. A peer that lacks a chunk answers `None` and the
    /// next is asked; known holders first spare a fetch from one source
    /// those round trips to every other peer.
    fn order(&self, i: usize) -> Vec<PeerId> {
        let rotated = |group: &[PeerId]| -> Vec<PeerId> {
            let mut g = group.to_vec();
            let n = g.len();
            if n > 0 {
                g.rotate_left(i % n);
            }
            g
        };
        let mut order = rotated(&self.known);
        order.extend(rotated(&self.others));
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_holders_are_asked_before_every_other_peer() {
        let p: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        let providers = Providers {
            known: vec![p[0], p[1]],
            others: vec![p[2], p[3], p[4]],
        };
        assert_eq!(providers.order(0), p);
        assert_eq!(providers.order(1), vec![p[1], p[0], p[3], p[4], p[2]]);
        assert_eq!(providers.order(2), vec![p[0], p[1], p[4], p[2], p[3]]);
        // Requests spread over the known holders.
        let firsts: BTreeSet<PeerId> = (0..4).map(|i| providers.order(i)[0]).collect();
        assert_eq!(firsts, BTreeSet::from([p[0], p[1]]));

        let nobody_known = Providers {
            known: Vec::new(),
            others: vec![p[2], p[3]],
        };
        assert_eq!(nobody_known.order(1), vec![p[3], p[2]]);
        assert!(!nobody_known.is_empty());
        assert!(Providers::default().is_empty());
        assert!(Providers::default().order(3).is_empty());
    }

    fn hashes(n: u8) -> Vec<Hash> {
        (0..n).map(|i| Hash::of(&[i])).collect()
    }

    #[test]
    fn a_sweep_covers_every_chunk_once_taking_from_each_front_in_turn() {
        let want = hashes(20);
        let sweep = Sweep {
            n: 20,
            fronts: vec![3, 9, 15],
            tie: 0,
        };
        let batches = sweep.batches(&want, 2);
        let ats: Vec<usize> = batches.iter().map(|(at, _)| *at).collect();
        // Fronts at 3, 9 and 15 in turn; the last wraps to 0 and stops at 3.
        assert_eq!(ats, vec![3, 9, 15, 5, 11, 17, 7, 13, 19, 0, 2]);
        for (at, batch) in &batches {
            assert_eq!(&want[*at..at + batch.len()], batch.as_slice());
        }
        let mut seen: Vec<Hash> = batches.iter().flat_map(|(_, b)| b.clone()).collect();
        seen.sort();
        let mut all = want.clone();
        all.sort();
        assert_eq!(seen, all);

        for node in ["a", "b", "c"] {
            let s = Sweep::of(node, Hash::of(b"scene"), 20);
            let mut seen: Vec<Hash> = s
                .batches(&want, 2)
                .into_iter()
                .flat_map(|(_, b)| b)
                .collect();
            seen.sort();
            assert_eq!(seen, all, "{s:?}");
        }
        assert!(Sweep::of("a", Hash::of(b"x"), 0).batches(&[], 2).is_empty());
        let one = Sweep::of("a", Hash::of(b"x"), 1);
        assert_eq!(one.batches(&want[..1], 2), vec![(0, vec![want[0]])]);
    }

    #[test]
    fn a_request_goes_to_the_fetchers_that_swept_past_it_before_this_node() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let sweep = |fronts: Vec<usize>| Sweep {
            n: 10,
            fronts,
            tie: 5,
        };
        let sweeps = [(a, sweep(vec![1])), (b, sweep(vec![5]))];
        let me = sweep(vec![8]);
        // At 6, b has been there longest and this node has not; at 3, a
        // has (2 swept, against b's 8 and this node's 5).
        assert_eq!(passed_before(6, &me, &sweeps), vec![b, a]);
        assert_eq!(passed_before(3, &me, &sweeps), vec![a]);
        // Where this node begins, and what it reaches first, it asks the
        // holders for.
        assert!(passed_before(8, &me, &sweeps).is_empty());
        assert!(passed_before(9, &me, &sweeps).is_empty());
        assert!(passed_before(6, &me, &[]).is_empty());
        for at in 0..10 {
            assert_eq!(
                anyone_before(at, &me, &sweeps),
                !passed_before(at, &me, &sweeps).is_empty(),
                "at {at}"
            );
        }
        // With two fronts, this node reaches 2 from its front at 0.
        let two = sweep(vec![0, 8]);
        assert_eq!(two.reach(2), 2);
        assert_eq!(passed_before(2, &two, &sweeps), vec![a]);
    }

    #[test]
    fn of_two_sweeps_that_reach_a_chunk_at_once_exactly_one_goes_first() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let sweep = |tie| Sweep {
            n: 10,
            fronts: vec![2, 7],
            tie,
        };
        let (low, high) = (sweep(1), sweep(9));
        for at in 0..10 {
            // The lower tie asks the holders; the other asks it.
            assert!(passed_before(at, &low, &[(b, high.clone())]).is_empty());
            assert_eq!(passed_before(at, &high, &[(a, low.clone())]), vec![a]);
            assert!(anyone_before(at, &high, &[(a, low.clone())]));
        }
        // Sweeps of real nodes carry different ties.
        let blob = Hash::of(b"scene");
        assert_ne!(Sweep::of("a", blob, 60).tie, Sweep::of("b", blob, 60).tie);
    }

    #[test]
    fn a_node_with_a_larger_part_of_the_sweep_takes_more_holder_slots() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let sweep = |fronts: Vec<usize>, tie| Sweep { n: 12, fronts, tie };
        // This node reaches 0-5 first, `a` 6-8 and `b` 9-11: 1.5 times the
        // mean part of 4.
        let me = sweep(vec![0], 0);
        let sweeps = [(a, sweep(vec![6], 1)), (b, sweep(vec![9], 2))];
        let share = own_share(&me, &sweeps);
        assert!((share - 1.5).abs() < 1e-9, "{share}");
        assert_eq!(holder_slots_for(share), 2);
        // `a`'s part is a quarter: one slot, as for anyone alone.
        let a_share = own_share(&sweeps[0].1, &[(b, sweeps[1].1.clone())]);
        assert_eq!(holder_slots_for(a_share), 1);
        assert_eq!(holder_slots_for(own_share(&me, &[])), 1);
        assert_eq!(holder_slots_for(7.0), 3);
        // With `a` alone beside it, this node reaches 0-5 first of 12.
        assert!((own_share(&me, &sweeps[..1]) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_fetcher_is_waited_for_from_the_first_ask_until_it_serves_nothing() {
        let (p, q) = (PeerId::random(), PeerId::random());
        let patience = Patience::default();
        // Seen long ago but never asked: still waited for.
        assert!(patience.still_waits_for(p));
        patience.asking(p);
        assert!(patience.still_waits_for(p));
        // Asked, and nothing since for longer than the patience.
        let Some(long_ago) = std::time::Instant::now().checked_sub(FETCHER_PATIENCE * 2) else {
            return; // a clock that began less than 20 s ago
        };
        lock(&patience.0).insert(p, long_ago);
        assert!(!patience.still_waits_for(p));
        // Asking again does not restart it; serving does.
        patience.asking(p);
        assert!(!patience.still_waits_for(p));
        patience.served(p);
        assert!(patience.still_waits_for(p));
        assert!(patience.still_waits_for(q));
    }

    #[tokio::test]
    async fn a_batch_credits_only_the_peers_that_sent_chunks() {
        let (stalled, partial, rest, unasked) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let batch: Vec<Hash> = (0..3u8).map(|i| Hash::of(&[i])).collect();
        let mut asked = Vec::new();
        let got = ask_in_turn(&batch, &[stalled, partial, rest, unasked], |peer, left| {
            asked.push((peer, left.len()));
            let reply = if peer == stalled {
                None
            } else if peer == partial {
                Some(left[..1].iter().copied().collect())
            } else {
                Some(left.iter().copied().collect())
            };
            async move { reply }
        })
        .await;
        // The stalled peer was asked for all three and sent nothing; the
        // next peer was asked for all three and sent one, the one after for
        // the two left; the last was not asked at all.
        assert_eq!(asked, vec![(stalled, 3), (partial, 3), (rest, 2)]);
        assert_eq!(got.servers, vec![partial, rest]);
        let mut stored = got.stored.clone();
        stored.sort();
        let mut want = batch.clone();
        want.sort();
        assert_eq!(stored, want);

        // A peer that answers with nothing it was asked for is no server.
        let empty = ask_in_turn(&batch, &[partial], |_, _| async { Some(BTreeSet::new()) }).await;
        assert_eq!(empty, Fetched::default());
    }

    #[test]
    fn sweeps_are_the_same_on_every_node_and_differ_by_node_and_blob() {
        let blob = Hash::of(b"scene");
        let s = Sweep::of("node-3", blob, 1000);
        assert_eq!(s, Sweep::of("node-3", blob, 1000));
        assert_ne!(s, Sweep::of("node-3", Hash::of(b"other"), 1000));
        assert_ne!(s, Sweep::of("node-4", blob, 1000));
        assert!(!s.fronts.is_empty() && s.fronts.len() <= SWEEP_FRONTS);
        assert!(s.fronts.windows(2).all(|w| w[0] < w[1]));
        assert!(s.fronts.iter().all(|&f| f < 1000));
    }
}
