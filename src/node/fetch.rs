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

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;

use futures::StreamExt;
use libp2p::PeerId;

use super::wire::{self, ChunkRequest};
use super::{Inner, lock};
use crate::codec::CodecError;
use crate::hash::Hash;
use crate::ledger::{JobRecord, NodeId};
use crate::store::{Missing, StoreError, Unpacking};

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
/// Data chunks per request (chunks average 1 MiB).
const DATA_CHUNKS_PER_REQUEST: usize = 2;
/// Rounds of asking before giving up (each round fetches what it can).
const MAX_ROUNDS: usize = 16;

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
            let got = self.fetch_chunks(&want, &providers, into).await;
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

    /// Fetch `want` from `providers`; returns the chunks stored. Each is
    /// also placed `into` the bundle being unpacked, if any.
    async fn fetch_chunks(
        self: &Arc<Self>,
        want: &[Hash],
        providers: &Providers,
        into: Option<Arc<Unpacking>>,
    ) -> Vec<Hash> {
        let per_request = if want.len() > 1 {
            DATA_CHUNKS_PER_REQUEST
        } else {
            1
        };
        let batches: Vec<Vec<Hash>> = want.chunks(per_request).map(<[Hash]>::to_vec).collect();
        let results = futures::stream::iter(batches.into_iter().enumerate())
            .map(|(i, batch)| {
                let inner = self.clone();
                let order = providers.order(i);
                let into = into.clone();
                async move { inner.fetch_batch(&batch, &order, into).await }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<Vec<Hash>>>()
            .await;
        results.concat()
    }

    /// Ask providers in turn for a batch until every chunk is stored;
    /// returns the chunks stored.
    async fn fetch_batch(
        self: &Arc<Self>,
        batch: &[Hash],
        order: &[PeerId],
        into: Option<Arc<Unpacking>>,
    ) -> Vec<Hash> {
        let Some(net) = &self.net else {
            return Vec::new();
        };
        let mut left: Vec<Hash> = batch.to_vec();
        let mut stored = Vec::new();
        for peer in order {
            if left.is_empty() {
                break;
            }
            let req = wire::encode(&ChunkRequest {
                hashes: left.clone(),
            });
            let Ok(reply) = net.client.request(*peer, wire::PROTO_CHUNK, req).await else {
                continue;
            };
            let (ok, bad) = match self.store_reply(reply, left.clone(), into.clone()).await {
                Ok(stored) => stored,
                Err(e) => {
                    self.bad_peer(*peer, &format!("chunk reply does not decode: {e}"));
                    continue;
                }
            };
            if bad > 0 {
                self.bad_peer(*peer, &format!("{bad} chunk(s) with wrong bytes"));
            }
            left.retain(|h| !ok.contains(h));
            stored.extend(ok);
        }
        stored
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
        *lock(&self.syncing).entry(blob).or_default() += 1;
        let inner = self.clone();
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            let store = inner.store.clone();
            let synced = tokio::task::spawn_blocking(move || {
                store.sync_chunks(&written).map_err(|e| e.to_string())?;
                // Evicted meanwhile (a full disk trims at once): not held.
                Ok(store.has_blob(blob))
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            // Another sync of the blob (evicted and fetched again during
            // this one) keeps it unheld until that one ends too.
            {
                let mut syncing = lock(&inner.syncing);
                if let Some(n) = syncing.get_mut(&blob) {
                    *n -= 1;
                    if *n == 0 {
                        syncing.remove(&blob);
                    }
                }
            }
            match synced {
                Ok(true) => {
                    tracing::debug!("synced blob {} in {:?}", blob.short(12), began.elapsed());
                    inner.hold_blob(blob);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("making blob {} durable: {e}", blob.short(12)),
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
        let mut held = lock(&self.held_blobs);
        held.retain(|h| *h != blob);
        held.push_back(blob);
        while held.len() > super::peers::MAX_HEARTBEAT_BLOBS {
            held.pop_front();
        }
    }
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
    for &blob in &missing {
        let authors = needed.get(&blob).cloned().unwrap_or_default();
        let mut peers: Vec<PeerId> = authors
            .iter()
            .filter_map(|n| PeerId::from_str(n.as_str()).ok())
            .collect();
        peers.extend(
            also.iter()
                .filter(|p| !peers.contains(p))
                .copied()
                .collect::<Vec<_>>(),
        );
        inner.fetch_batch(&[blob], &peers, None).await;
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
}
