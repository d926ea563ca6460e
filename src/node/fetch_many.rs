//! Many small blobs from one peer in a few requests: the second copies of
//! the frames a renderer made, and the frames a submitter collects for a
//! `--out` job (`collect.rs`).
//!
//! [`Inner::fetch_blob`] is shaped for one blob that may be large (a
//! scene): its own lock, rounds of asking what is missing, sweeps shared
//! with other fetchers, a sync of its chunks. A submitter keeping a second
//! copy of every frame (`replicate.rs`) fetched each frame so: two requests
//! (the manifest, then the chunk) and a sync per frame, hundreds a second
//! when frames are quick. Here the frames a renderer finished since the
//! last look go together: one request for all their manifests, one for all
//! their chunks (in requests of at most [`MAX_CHUNKS_PER_REQUEST`]), one
//! sync. What does not arrive this way (the renderer is gone, a reply was
//! cut short and no more came) is left to the caller, which fetches it
//! blob by blob from every provider as before.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use libp2p::PeerId;

use super::wire::MAX_CHUNKS_PER_REQUEST;
use super::{Inner, lock};
use crate::hash::Hash;
use crate::ledger::NodeId;
use crate::store::{Missing, Store};

/// Rounds of asking: manifests, then chunks, then what a reply cut short
/// (a bundle's entry manifests would need one more; the blob-by-blob fetch
/// finishes those).
const ROUNDS: usize = 4;

/// A blob missing more chunks than this is left to the blob-by-blob fetch,
/// which keeps several requests in flight over every provider: for a large
/// frame the requests' count is not the cost, its bytes are.
const MOST_CHUNKS: usize = 8;

impl Inner {
    /// Fetches `blobs` from node `from` together; holds those that arrive
    /// whole once their chunks are durable, and returns the rest (all of
    /// them when `from` is not connected). Blobs held here already, or
    /// being fetched by another fetch, are left alone.
    pub(super) async fn fetch_many(self: &Arc<Self>, from: &NodeId, blobs: Vec<Hash>) -> Vec<Hash> {
        let mut blobs: Vec<Hash> = blobs
            .into_iter()
            .filter(|b| !super::replicate::held_or_syncing(self, *b) && !self.fetching(*b))
            .collect();
        let connected = PeerId::from_str(from.as_str())
            .ok()
            .filter(|p| lock(&self.connected).contains(p));
        let Some(from) = connected else {
            return blobs;
        };
        if blobs.is_empty() {
            return blobs;
        }
        let mut written: Vec<Hash> = Vec::new();
        let mut large: Vec<Hash> = Vec::new();
        let mut whole: Vec<Hash> = Vec::new();
        let began = std::time::Instant::now();
        // Each look says what is whole as well as what to ask for; the
        // loop ends on a look taken after the last chunk stored, so the
        // last look's whole blobs are the ones to hold.
        for round in 0..=ROUNDS {
            let store = self.store.clone();
            let asked = blobs.clone();
            let Ok(wanted) =
                tokio::task::spawn_blocking(move || missing_of_all(&store, &asked)).await
            else {
                blobs.extend(large);
                return blobs;
            };
            blobs.retain(|b| !wanted.too_many.contains(b));
            large.extend(wanted.too_many);
            whole = wanted.complete;
            if wanted.want.is_empty() || round == ROUNDS {
                break;
            }
            let before = written.len();
            for batch in wanted.want.chunks(MAX_CHUNKS_PER_REQUEST) {
                let got = self.fetch_batch(batch, &[from], None).await;
                written.extend(got.stored);
            }
            if written.len() == before {
                break;
            }
        }
        let whole_set: HashSet<Hash> = whole.iter().copied().collect();
        let mut rest: Vec<Hash> = blobs
            .into_iter()
            .filter(|b| !whole_set.contains(b))
            .collect();
        rest.extend(large);
        tracing::debug!(
            %from,
            whole = whole.len(),
            rest = rest.len(),
            chunks = written.len(),
            ms = began.elapsed().as_millis() as u64,
            "fetched blobs together"
        );
        if !whole.is_empty() {
            self.sync_then_hold_all(whole, written);
        }
        rest
    }
}

/// Blobs grouped by the node to fetch them from, for [`Inner::fetch_many`].
pub(super) fn by_node(
    blobs: impl IntoIterator<Item = (NodeId, Hash)>,
) -> BTreeMap<NodeId, Vec<Hash>> {
    let mut out: BTreeMap<NodeId, Vec<Hash>> = BTreeMap::new();
    for (node, blob) in blobs {
        out.entry(node).or_default().push(blob);
    }
    out
}

/// What a round asks for.
#[derive(Debug, Default, PartialEq)]
struct Wanted {
    /// Every chunk that can be asked for now for the blobs, each once.
    want: Vec<Hash>,
    /// Blobs missing more than [`MOST_CHUNKS`] chunks, left out of `want`.
    too_many: Vec<Hash>,
    /// Blobs missing nothing.
    complete: Vec<Hash>,
}

/// What `blobs` miss, marking each as used (held), as a fetch does.
fn missing_of_all(store: &Store, blobs: &[Hash]) -> Wanted {
    let mut seen = HashSet::new();
    let mut wanted = Wanted::default();
    for &blob in blobs {
        let missing = match store.missing_chunks(blob) {
            Ok(Missing::Nothing) => {
                wanted.complete.push(blob);
                continue;
            }
            Err(_) => continue,
            Ok(Missing::Manifest(h)) => vec![h],
            Ok(Missing::Chunks(list)) if list.len() > MOST_CHUNKS => {
                wanted.too_many.push(blob);
                continue;
            }
            Ok(Missing::Chunks(list)) => list,
        };
        wanted
            .want
            .extend(missing.into_iter().filter(|h| seen.insert(*h)));
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_blobs_miss_is_asked_for_once_manifests_first() {
        let dir = tempfile::tempdir().unwrap();
        let here = Store::open(&dir.path().join("here")).unwrap();
        let there = Store::open(&dir.path().join("there")).unwrap();
        let a = there.import_bytes(b"frame a").unwrap();
        let b = there.import_bytes(b"frame b").unwrap();
        let held = here.import_bytes(b"frame c").unwrap();
        let copy = there.import_bytes(b"frame c").unwrap();
        assert_eq!(held, copy);
        // 16 MiB that FastCDC cuts into well over MOST_CHUNKS chunks.
        let noise = crate::hash::random_bytes("a large frame", 16 << 20);
        let large = there.import_bytes(&noise).unwrap();
        // Nothing is here of a, b and the large one: their manifests are
        // asked for first, a blob held already asks nothing, a blob named
        // twice once.
        let first = missing_of_all(&here, &[a, held, large, b, a]);
        assert_eq!(first.want, vec![a, large, b]);
        assert!(first.too_many.is_empty());
        assert_eq!(first.complete, vec![held], "and is said to be whole");
        for blob in [a, b, large] {
            here.write_chunk(blob, &there.read_chunk(blob).unwrap())
                .unwrap();
        }
        let chunk_of = |blob: Hash| match here.missing_chunks(blob).unwrap() {
            Missing::Chunks(c) => c,
            other => panic!("expected chunks, got {other:?}"),
        };
        assert!(chunk_of(large).len() > MOST_CHUNKS);
        let mut both = chunk_of(a);
        both.extend(chunk_of(b));
        let second = missing_of_all(&here, &[a, large, b]);
        assert_eq!(second.want, both, "then the small ones' chunks");
        assert!(second.complete.is_empty());
        assert_eq!(
            second.too_many,
            vec![large],
            "the large one goes blob by blob"
        );
    }
}
