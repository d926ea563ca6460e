//! The bounded cache: last-use tracking, disk usage and LRU eviction.
//!
//! Each blob the node holds has a marker `used/<hash>` (a hard link to its
//! manifest, see [`Store::mark_used`]) whose mtime is its last use; an
//! in-memory copy of those times orders blobs exactly (stamps strictly
//! increase, whatever the clock or filesystem granularity) and the markers
//! carry the order across restarts for the price of one directory entry
//! and one `utimensat` per use.
//!
//! `gc` works from references, not from guesses: it keeps every chunk held
//! by a running import or export and every chunk of the pinned blobs
//! (active jobs, uncollected outputs), then walks the other blobs from most
//! to least recently used and keeps each while the total
//! stays within `max_bytes`; from the first that does not fit, it evicts
//! that one and every older one. A chunk goes when nothing kept references
//! it, so a chunk shared by a kept blob and an evicted one stays. A chunk
//! referenced by no known blob at all (a fetch whose caller never
//! registered the blob, a crash) is removed once it is [`ORPHAN_GRACE`] old,
//! and so is the record of a blob whose manifest never arrived.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::manifest::{MAX_MANIFEST_BYTES, Manifest};
use super::{Store, StoreError};
use crate::hash::Hash;

/// Age after which a chunk that no known blob references is removed.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// What one `gc` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub bytes_freed: u64,
    pub chunks_freed: u64,
    /// Blobs no longer held, most recently used first.
    pub blobs_evicted: Vec<Hash>,
    /// Bytes of the chunks kept for held, pinned and recently used blobs
    /// (orphans younger than [`ORPHAN_GRACE`] stay too, uncounted).
    pub bytes_kept: u64,
}

/// Last use of every blob held.
#[derive(Default)]
pub(super) struct Lru {
    last_used: HashMap<Hash, SystemTime>,
    newest: Option<SystemTime>,
}

impl Lru {
    /// Reads the markers in `used/`.
    pub(super) fn load(used: &Path) -> Result<Lru, StoreError> {
        let mut lru = Lru::default();
        for entry in fs::read_dir(used).map_err(StoreError::io("listing", used))? {
            let entry = entry.map_err(StoreError::io("listing", used))?;
            let Some(blob) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Hash>().ok())
            else {
                continue;
            };
            let time = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            lru.last_used.insert(blob, time);
            lru.newest = lru.newest.max(Some(time));
        }
        Ok(lru)
    }

    /// A use of `blob` now, strictly later than every earlier use.
    fn stamp(&mut self, blob: Hash) -> SystemTime {
        let now = SystemTime::now();
        let time = match self.newest {
            Some(newest) if newest >= now => newest + Duration::from_micros(1),
            _ => now,
        };
        self.newest = Some(time);
        self.last_used.insert(blob, time);
        time
    }

    /// Blobs with their last use, from most to least recently used.
    fn newest_first(&self) -> Vec<(SystemTime, Hash)> {
        let mut all: Vec<(SystemTime, Hash)> =
            self.last_used.iter().map(|(h, t)| (*t, *h)).collect();
        all.sort_unstable_by(|a, b| b.cmp(a));
        all
    }
}

/// The chunks gc has decided to keep so far.
struct Plan<'a> {
    on_disk: &'a HashMap<Hash, OnDisk>,
    kept: HashSet<Hash>,
    /// Bytes on disk of `kept`.
    kept_bytes: u64,
}

impl Plan<'_> {
    /// Bytes on disk that keeping `refs` would add.
    fn extra(&self, refs: &HashSet<Hash>) -> u64 {
        refs.iter()
            .filter(|h| !self.kept.contains(h))
            .filter_map(|h| self.on_disk.get(h))
            .map(|c| c.len)
            .sum()
    }

    fn keep(&mut self, refs: HashSet<Hash>) {
        self.kept_bytes += self.extra(&refs);
        self.kept.extend(refs);
    }
}

/// A chunk file as gc sees it.
struct OnDisk {
    len: u64,
    modified: SystemTime,
}

impl Store {
    /// Records a use of `blob` (and that this node holds it). Failing to
    /// persist the marker only loses LRU order across a restart: logged.
    pub(super) fn mark_used(&self, blob: Hash) {
        let time = self
            .lru
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .stamp(blob);
        let path = self.used.join(blob.to_hex());
        if let Err(e) = self.touch_marker(blob, &path, time) {
            tracing::warn!(path = %path.display(), error = %e, "cannot record blob use");
        }
    }

    /// Sets the marker's mtime, making the marker first if there is none. A
    /// new marker is a hard link to the blob's manifest file: a link is a
    /// directory entry, where a new file is also an inode to allocate (in
    /// the dispatch benchmark, creating files was the largest single cost
    /// of a task). Marker and manifest then share an mtime, which only gc's
    /// grace for unreferenced chunks reads, and a held blob's manifest is
    /// referenced. Where links fail (another filesystem's rules), an empty
    /// file does. A fetch marks its blob before the manifest has come:
    /// then only the in-memory order knows of it, and the fetch's next
    /// look, with the manifest here, makes the link (an empty file made
    /// first was an inode per fetched frame, the cost links avoid).
    fn touch_marker(&self, blob: Hash, path: &Path, time: SystemTime) -> io::Result<()> {
        let marker = match File::options().write(true).open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match fs::hard_link(self.chunk_path(blob), path) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    // Failing otherwise, the link leaves the marker to
                    // `create` below.
                    _ => {}
                }
                File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path)
            }
            other => other,
        }?;
        marker.set_modified(time)
    }

    /// Bytes of chunk files on disk.
    pub fn usage(&self) -> Result<u64, StoreError> {
        Ok(self.scan_chunks()?.values().map(|c| c.len).sum())
    }

    /// Evicts least-recently-used blobs until the chunks of those kept fit in
    /// `max_bytes`; `pinned` blobs (and all they reference) always stay.
    pub fn gc(&self, pinned: &HashSet<Hash>, max_bytes: u64) -> Result<GcReport, StoreError> {
        self.gc_sparing(pinned, max_bytes, None)
    }

    /// [`Store::gc`], also keeping every blob used at or after
    /// `spare_since`: a blob just imported or fetched whose job is not in
    /// the ledger yet (a submission between its import and its record) is
    /// not pinned by anything else.
    pub fn gc_sparing(
        &self,
        pinned: &HashSet<Hash>,
        max_bytes: u64,
        spare_since: Option<SystemTime>,
    ) -> Result<GcReport, StoreError> {
        let _alone = self
            .gc_lock
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let on_disk = self.scan_chunks()?;
        let order = self
            .lru
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .newest_first();
        let mut plan = Plan {
            on_disk: &on_disk,
            kept: HashSet::new(),
            kept_bytes: 0,
        };
        // Chunks that running imports and exports are using.
        plan.keep(
            self.busy
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .keys()
                .copied()
                .collect(),
        );
        for blob in pinned {
            plan.keep(self.references(*blob)?);
        }
        let mut doomed: HashSet<Hash> = HashSet::new();
        let mut report = GcReport::default();
        let mut evicted = Vec::new();
        // Set at the first blob that does not fit: it and all older go.
        let mut full = false;
        let cutoff = SystemTime::now()
            .checked_sub(ORPHAN_GRACE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for (used, blob) in order.into_iter().filter(|(_, b)| !pinned.contains(b)) {
            if used < cutoff && !on_disk.contains_key(&blob) {
                // A fetch that never got the manifest, long ago: forget it.
                evicted.push((used, blob));
                continue;
            }
            let refs = self.references(blob)?;
            if spare_since.is_some_and(|since| used >= since) {
                plan.keep(refs);
                continue;
            }
            full = full || plan.kept_bytes.saturating_add(plan.extra(&refs)) > max_bytes;
            if full {
                evicted.push((used, blob));
                doomed.extend(refs);
            } else {
                plan.keep(refs);
            }
        }
        self.delete_unkept(&on_disk, &plan.kept, &doomed, &mut report)?;
        report.bytes_kept = plan.kept_bytes;
        self.forget(&evicted);
        report.blobs_evicted = evicted.into_iter().map(|(_, b)| b).collect();
        Ok(report)
    }

    /// Deletes chunks not kept that an evicted blob references or that are
    /// old orphans.
    fn delete_unkept(
        &self,
        on_disk: &HashMap<Hash, OnDisk>,
        kept: &HashSet<Hash>,
        doomed: &HashSet<Hash>,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        let cutoff = SystemTime::now()
            .checked_sub(ORPHAN_GRACE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for (hash, c) in on_disk {
            if kept.contains(hash) || (!doomed.contains(hash) && c.modified > cutoff) {
                continue;
            }
            let path = self.chunk_path(*hash);
            match fs::remove_file(&path) {
                Ok(()) => {
                    report.bytes_freed += c.len;
                    report.chunks_freed += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("removing chunk", path)(e)),
            }
        }
        Ok(())
    }

    /// Drops evicted blobs from the LRU and their markers, unless a blob
    /// was used again while gc ran (a fetch of it started).
    fn forget(&self, evicted: &[(SystemTime, Hash)]) {
        let mut lru = self
            .lru
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (used, blob) in evicted {
            if lru.last_used.get(blob) != Some(used) {
                continue;
            }
            lru.last_used.remove(blob);
            let path = self.used.join(blob.to_hex());
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove blob marker");
            }
        }
    }

    /// Every chunk `blob` needs that could be on disk: its manifest, and the
    /// chunks (and, for a bundle, the entry manifests) it lists. A manifest
    /// that is absent, corrupt or undecodable references only itself.
    fn references(&self, blob: Hash) -> Result<HashSet<Hash>, StoreError> {
        let mut refs = HashSet::from([blob]);
        let Some(manifest) = self.manifest_for_gc(blob)? else {
            return Ok(refs);
        };
        match manifest {
            Manifest::File { chunks, .. } => refs.extend(chunks.iter().map(|c| c.hash)),
            Manifest::Bundle { entries } => {
                for e in entries {
                    refs.insert(e.blob);
                    if let Some(Manifest::File { chunks, .. }) = self.manifest_for_gc(e.blob)? {
                        refs.extend(chunks.iter().map(|c| c.hash));
                    }
                }
            }
        }
        Ok(refs)
    }

    fn manifest_for_gc(&self, blob: Hash) -> Result<Option<Manifest>, StoreError> {
        let mut buf = Vec::new();
        match self.read_chunk_into(blob, &mut buf, MAX_MANIFEST_BYTES) {
            Ok(()) => Ok(Manifest::decode(&buf).ok()),
            Err(StoreError::MissingChunk(_) | StoreError::Corrupt { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every chunk file under `blobs/`, with its size and mtime. Files whose
    /// names are not chunk names are left alone.
    fn scan_chunks(&self) -> Result<HashMap<Hash, OnDisk>, StoreError> {
        let mut out = HashMap::new();
        let blobs = &self.blobs;
        for dir in fs::read_dir(blobs).map_err(StoreError::io("listing", blobs))? {
            let dir = dir.map_err(StoreError::io("listing", blobs))?.path();
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let entry = entry.map_err(StoreError::io("listing", &dir))?;
                let Some(hash) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<Hash>().ok())
                else {
                    continue;
                };
                let md = match entry.metadata() {
                    Ok(md) if md.is_file() => md,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io("reading", entry.path())(e)),
                };
                let modified = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.insert(
                    hash,
                    OnDisk {
                        len: md.len(),
                        modified,
                    },
                );
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Missing;
    use super::super::tests::{KIB, MIB, file_chunks, random_bytes};
    use super::*;

    /// Bytes on disk of a blob's manifest and data chunks (unshared).
    fn footprint(store: &Store, blob: Hash) -> u64 {
        let (size, _) = file_chunks(store, blob);
        size + store.read_chunk(blob).unwrap().len() as u64
    }

    #[test]
    fn gc_evicts_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.import_bytes(&random_bytes("a", 200 * KIB)).unwrap();
        let b = store.import_bytes(&random_bytes("b", 200 * KIB)).unwrap();
        let c = store.import_bytes(&random_bytes("c", 200 * KIB)).unwrap();
        store.read_blob(a, u64::MAX).unwrap(); // a is now the most recent; b the least
        let budget = footprint(&store, a) + footprint(&store, c);
        let before = store.usage().unwrap();
        let report = store.gc(&HashSet::new(), budget).unwrap();
        assert_eq!(report.blobs_evicted, vec![b]);
        assert_eq!(report.chunks_freed, 2, "b's data chunk and manifest");
        assert_eq!(report.bytes_freed, footprint_of_gone(before, &store));
        assert_eq!(report.bytes_kept, budget);
        assert!(store.has_blob(a) && store.has_blob(c));
        assert_eq!(store.missing_chunks(b).unwrap(), Missing::Manifest(b));
        // Nothing changed since: a second gc frees nothing.
        let again = store.gc(&HashSet::new(), budget).unwrap();
        assert_eq!((again.bytes_freed, again.blobs_evicted.len()), (0, 0));
    }

    fn footprint_of_gone(before: u64, store: &Store) -> u64 {
        before - store.usage().unwrap()
    }

    #[test]
    fn pinned_blobs_stay_whatever_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = store.import_bytes(&random_bytes("old", 200 * KIB)).unwrap();
        let new = store.import_bytes(&random_bytes("new", 200 * KIB)).unwrap();
        let report = store.gc(&HashSet::from([old]), 0).unwrap();
        assert_eq!(report.blobs_evicted, vec![new]);
        assert!(store.has_blob(old));
        assert!(!store.has_chunk(new));
        assert_eq!(store.usage().unwrap(), footprint(&store, old));
    }

    #[test]
    fn a_chunk_shared_with_a_kept_blob_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Zeros are cut at exactly 4 MiB, so both blobs start with chunk Z.
        let mut longer = vec![0u8; 4 * MIB];
        longer.extend_from_slice(&random_bytes("tail", 100 * KIB));
        let evicted = store.import_bytes(&longer).unwrap();
        let kept = store.import_bytes(&vec![0u8; 4 * MIB]).unwrap();
        let (_, ev_chunks) = file_chunks(&store, evicted);
        let (_, kept_chunks) = file_chunks(&store, kept);
        assert_eq!(ev_chunks[0], kept_chunks[0]);
        let report = store.gc(&HashSet::new(), footprint(&store, kept)).unwrap();
        assert_eq!(report.blobs_evicted, vec![evicted]);
        assert!(store.has_blob(kept), "the shared chunk must stay");
        assert!(!store.has_chunk(ev_chunks[1].hash) && !store.has_chunk(evicted));
        assert_eq!(report.chunks_freed, 2);
    }

    #[test]
    fn a_bundle_keeps_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let src = dir.path().join("project");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("scene.blend"), random_bytes("scene", 600 * KIB)).unwrap();
        let bundle = store.import_bundle(&src).unwrap();
        let report = store.gc(&HashSet::new(), u64::MAX).unwrap();
        assert_eq!(report.chunks_freed, 0);
        assert!(store.has_blob(bundle));
        let report = store.gc(&HashSet::new(), 0).unwrap();
        assert_eq!(report.blobs_evicted, vec![bundle]);
        assert_eq!(store.usage().unwrap(), 0);
    }

    #[test]
    fn orphan_chunks_go_only_when_old() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes = random_bytes("orphan", 1000);
        let orphan = Hash::of(&bytes);
        store.write_chunk(orphan, &bytes).unwrap();
        store.gc(&HashSet::new(), 0).unwrap();
        assert!(
            store.has_chunk(orphan),
            "a fresh chunk may belong to a fetch in progress"
        );
        let old = SystemTime::now() - ORPHAN_GRACE - Duration::from_secs(60);
        File::options()
            .write(true)
            .open(store.chunk_path(orphan))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let report = store.gc(&HashSet::new(), u64::MAX).unwrap();
        assert_eq!((report.chunks_freed, report.bytes_freed), (1, 1000));
        assert!(!store.has_chunk(orphan));
    }

    #[test]
    fn chunks_held_by_a_running_import_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = random_bytes("held", 200 * KIB);
        let blob = store.import_bytes(&data).unwrap();
        let (_, chunks) = file_chunks(&store, blob);
        // An import that has just deduplicated against `blob`'s chunk.
        let hold = super::super::Hold::new(&store);
        store.store_held(chunks[0].hash, &data, &hold).unwrap();
        let report = store.gc(&HashSet::new(), 0).unwrap();
        assert_eq!(report.blobs_evicted, vec![blob]);
        assert!(
            store.has_chunk(chunks[0].hash),
            "a held chunk must survive gc"
        );
        assert!(!store.has_chunk(blob));
        drop(hold);
        assert!(store.busy.lock().unwrap().is_empty());
    }

    #[test]
    fn an_abandoned_fetch_is_forgotten_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let never = Hash::of(b"a blob whose manifest never came");
        assert_eq!(
            store.missing_chunks(never).unwrap(),
            Missing::Manifest(never)
        );
        let report = store.gc(&HashSet::new(), 0).unwrap();
        assert!(
            report.blobs_evicted.is_empty(),
            "a fetch may still be starting"
        );
        let old = SystemTime::now() - ORPHAN_GRACE - Duration::from_secs(60);
        store
            .lru
            .lock()
            .unwrap()
            .last_used
            .insert(never, old + Duration::from_secs(1));
        let kept = store.import_bytes(b"an older, complete blob").unwrap();
        // Used before the abandoned fetch started, so gc meets it after.
        store.lru.lock().unwrap().last_used.insert(kept, old);
        let report = store.gc(&HashSet::new(), u64::MAX).unwrap();
        assert_eq!(report.blobs_evicted, vec![never]);
        assert!(!store.used.join(never.to_hex()).exists());
        assert!(
            store.has_blob(kept),
            "forgetting a fetch must not start evicting"
        );
    }

    #[test]
    fn lru_order_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = {
            let store = Store::open(dir.path()).unwrap();
            let a = store.import_bytes(&random_bytes("a", 200 * KIB)).unwrap();
            let b = store.import_bytes(&random_bytes("b", 200 * KIB)).unwrap();
            store.export_file(a, &dir.path().join("a.out")).unwrap();
            (a, b)
        };
        let store = Store::open(dir.path()).unwrap();
        let report = store.gc(&HashSet::new(), footprint(&store, a)).unwrap();
        assert_eq!(report.blobs_evicted, vec![b]);
        assert!(store.has_blob(a));
    }

    #[cfg(unix)]
    #[test]
    fn a_marker_is_a_link_to_its_manifest_and_carries_the_last_use() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blob = store.import_bytes(b"a small frame").unwrap();
        let marker = store.used.join(blob.to_hex());
        let (m, manifest) = (
            fs::metadata(&marker).unwrap(),
            fs::metadata(store.chunk_path(blob)).unwrap(),
        );
        assert_eq!((m.dev(), m.ino()), (manifest.dev(), manifest.ino()));
        let first = m.modified().unwrap();
        store.export_file(blob, &dir.path().join("out")).unwrap();
        let later = fs::metadata(&marker).unwrap().modified().unwrap();
        assert!(later > first, "a use moves the marker's time");
        // Evicting the blob takes marker and manifest; nothing is left held.
        let report = store.gc(&HashSet::new(), 0).unwrap();
        assert_eq!(report.blobs_evicted, vec![blob]);
        assert!(!marker.exists() && !store.has_chunk(blob));
    }

    #[cfg(unix)]
    #[test]
    fn a_blob_marked_before_its_manifest_comes_gets_its_link_when_it_has() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("here")).unwrap();
        let source = Store::open(&dir.path().join("there")).unwrap();
        let blob = source.import_bytes(b"a fetched frame").unwrap();
        store.mark_used(blob);
        let marker = store.used.join(blob.to_hex());
        assert!(!marker.exists(), "no inode for a manifest still to come");
        store
            .write_chunk(blob, &source.read_chunk(blob).unwrap())
            .unwrap();
        store.mark_used(blob);
        let (m, manifest) = (
            fs::metadata(&marker).unwrap(),
            fs::metadata(store.chunk_path(blob)).unwrap(),
        );
        assert_eq!((m.dev(), m.ino()), (manifest.dev(), manifest.ino()));
    }

    #[test]
    fn blobs_used_since_the_cutoff_are_spared() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = store.import_bytes(&random_bytes("old", 200 * KIB)).unwrap();
        let since = SystemTime::now();
        std::thread::sleep(Duration::from_millis(5));
        let fresh = store
            .import_bytes(&random_bytes("fresh", 200 * KIB))
            .unwrap();
        let report = store.gc_sparing(&HashSet::new(), 0, Some(since)).unwrap();
        assert_eq!(report.blobs_evicted, vec![old]);
        assert!(store.has_blob(fresh) && !store.has_blob(old));
    }
}
