//! What the store holds: manifests, completeness, sizes.
//!
//! The fetcher's loop is: `missing_chunks(blob)`; fetch what it lists; ask
//! again; stop at [`Missing::Nothing`]. A bundle needs up to three rounds
//! (its manifest, then its entries' manifests, then their data chunks), so
//! the answer lists what can be asked for now rather than trying to be
//! complete in one go.

use std::collections::HashSet;

use super::manifest::{BundleEntry, ChunkRef, MAX_MANIFEST_BYTES, Manifest, ManifestError};
use super::{Store, StoreError};
use crate::hash::Hash;

/// What must still be fetched to hold a blob completely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Everything is here.
    Nothing,
    /// The blob's own manifest is absent: fetch that chunk, then ask again.
    Manifest(Hash),
    /// These chunks are absent, deduplicated, in blob order. For a bundle
    /// this includes entry manifests that are absent: once they arrive, ask
    /// again to learn their data chunks.
    Chunks(Vec<Hash>),
}

impl Missing {
    pub fn is_complete(&self) -> bool {
        matches!(self, Missing::Nothing)
    }
}

impl Store {
    /// The blob's manifest, verified and validated.
    pub fn manifest(&self, blob: Hash) -> Result<Manifest, StoreError> {
        let mut buf = Vec::new();
        match self.read_chunk_into(blob, &mut buf, MAX_MANIFEST_BYTES) {
            Ok(()) => Manifest::decode(&buf)
                .map_err(|source| StoreError::BadManifest { hash: blob, source }),
            Err(StoreError::MissingChunk(_)) => Err(StoreError::NotFound(blob)),
            Err(e) => Err(e),
        }
    }

    /// What must still be fetched to hold `blob` completely. Registers the
    /// blob as held (a fetch starts here), so gc accounts for its chunks.
    pub fn missing_chunks(&self, blob: Hash) -> Result<Missing, StoreError> {
        self.mark_used(blob);
        self.missing(blob)
    }

    /// Whether `blob` is complete locally (manifests and every data chunk
    /// present; not re-verified).
    pub fn has_blob(&self, blob: Hash) -> bool {
        matches!(self.missing(blob), Ok(Missing::Nothing))
    }

    /// Bytes of content: a file's size, or the sum of a bundle's entries.
    pub fn blob_size(&self, blob: Hash) -> Result<u64, StoreError> {
        Ok(self.manifest(blob)?.content_size())
    }

    /// `missing_chunks` without the use mark.
    fn missing(&self, blob: Hash) -> Result<Missing, StoreError> {
        let manifest = match self.manifest(blob) {
            Ok(m) => m,
            Err(StoreError::NotFound(_) | StoreError::Corrupt { .. }) => {
                return Ok(Missing::Manifest(blob));
            }
            Err(e) => return Err(e),
        };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        match manifest {
            Manifest::File { chunks, .. } => self.push_missing(&chunks, &mut seen, &mut out),
            Manifest::Bundle { entries } => {
                let mut visited = HashSet::new();
                for entry in entries.iter().filter(|e| visited.insert(e.blob)) {
                    match self.entry_chunks(blob, entry)? {
                        Some(chunks) => self.push_missing(&chunks, &mut seen, &mut out),
                        None => {
                            if seen.insert(entry.blob) {
                                out.push(entry.blob);
                            }
                        }
                    }
                }
            }
        }
        Ok(if out.is_empty() {
            Missing::Nothing
        } else {
            Missing::Chunks(out)
        })
    }

    fn push_missing(&self, chunks: &[ChunkRef], seen: &mut HashSet<Hash>, out: &mut Vec<Hash>) {
        for c in chunks {
            if !self.has_chunk(c.hash) && seen.insert(c.hash) {
                out.push(c.hash);
            }
        }
    }

    /// The chunks of a bundle entry's file, or `None` when its manifest is
    /// absent. An entry that names anything but a file of the stated size
    /// makes the bundle bad.
    pub(super) fn entry_chunks(
        &self,
        bundle: Hash,
        entry: &BundleEntry,
    ) -> Result<Option<Vec<ChunkRef>>, StoreError> {
        match self.manifest(entry.blob) {
            Ok(Manifest::File { size, chunks }) if size == entry.size => Ok(Some(chunks)),
            Ok(_) | Err(StoreError::BadManifest { .. }) => Err(StoreError::BadManifest {
                hash: bundle,
                source: ManifestError::BadEntry {
                    path: entry.path.clone(),
                    blob: entry.blob,
                    size: entry.size,
                },
            }),
            Err(StoreError::NotFound(_) | StoreError::Corrupt { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
