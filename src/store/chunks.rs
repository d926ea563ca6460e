//! Single chunks on disk: where they live, how they are written atomically
//! and how every read is verified.
//!
//! This is the only file that creates or reads chunk files, so the two
//! guarantees of the store — no partial chunk ever sits under its name, no
//! read returns bytes that do not hash to the name — are kept in one place.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::direct;
use super::manifest::MAX_MANIFEST_BYTES;
use super::{Store, StoreError};
use crate::hash::Hash;

impl Store {
    /// `<root>/blobs/<first 2 hex>/<64 hex>`.
    pub(super) fn chunk_path(&self, hash: Hash) -> PathBuf {
        self.blobs
            .join(format!("{:02x}", hash.0[0]))
            .join(hash.to_hex())
    }

    /// Whether the chunk's file is present (not verified: see `read_chunk`).
    pub fn has_chunk(&self, hash: Hash) -> bool {
        self.chunk_len(hash).is_some()
    }

    /// The chunk's bytes, verified against its hash. A manifest is a chunk
    /// too, so this serves both to peers.
    pub fn read_chunk(&self, hash: Hash) -> Result<Vec<u8>, StoreError> {
        let mut buf = Vec::new();
        self.read_chunk_into(hash, &mut buf, MAX_MANIFEST_BYTES)?;
        Ok(buf)
    }

    /// Stores a chunk received from a peer: refuses bytes that do not hash to
    /// `hash`, writes nothing in that case.
    pub fn write_chunk(&self, hash: Hash, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(StoreError::TooLarge {
                what: format!("chunk {hash} offered by a peer"),
                size: bytes.len() as u64,
                limit: MAX_MANIFEST_BYTES as u64,
            });
        }
        let actual = Hash::of(bytes);
        if actual != hash {
            return Err(StoreError::HashMismatch {
                expected: hash,
                actual,
            });
        }
        let _writer = self.writer();
        self.place_chunk(hash, bytes, Durability::Later)
    }

    /// Makes the chunks `written` (stored with [`Store::write_chunk`])
    /// durable; a node calls it when a fetched blob is complete, before it
    /// says it holds the blob. Each chunk gets an fdatasync, from
    /// `SYNC_THREADS` threads at once so that the filesystem commits its
    /// journal once for many of them; their data is mostly on disk already
    /// (see `start_writeback`). Not a `syncfs`: that waits for every dirty
    /// page of the filesystem, other programs' too, and everything that
    /// fsyncs meanwhile waits with it. In the transfer benchmark it held the
    /// render's output, stored right after a 1 GiB fetch, for 0.75 s while
    /// it flushed a gigabyte the benchmark had written; in the farm
    /// benchmark it held a one-chunk scene for 190 ms on each of 7 nodes.
    pub fn sync_chunks(&self, written: &[Hash]) -> Result<(), StoreError> {
        let next = AtomicUsize::new(0);
        let sync_from_queue = || -> Result<(), StoreError> {
            while let Some(&hash) = written.get(next.fetch_add(1, Ordering::Relaxed)) {
                self.sync_chunk(hash)?;
            }
            Ok(())
        };
        let threads = SYNC_THREADS.min(written.len());
        if threads <= 1 {
            return sync_from_queue();
        }
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads).map(|_| s.spawn(sync_from_queue)).collect();
            workers.into_iter().try_for_each(|w| {
                w.join().unwrap_or_else(|_| {
                    let panicked = io::Error::other("a thread syncing chunks panicked");
                    Err(StoreError::io("syncing chunks in", &self.blobs)(panicked))
                })
            })
        })
    }

    fn sync_chunk(&self, hash: Hash) -> Result<(), StoreError> {
        let path = self.chunk_path(hash);
        match File::open(&path) {
            Ok(file) => file
                .sync_data()
                .map_err(StoreError::io("syncing chunk", &path)),
            // Removed since (found corrupt, or collected): nothing to keep.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("opening chunk", path)(e)),
        }
    }

    /// Reads chunk `hash` into `buf` (replacing its content) and verifies it.
    /// A file longer than `max_len` or with the wrong hash is corrupt: it is
    /// removed so that it gets fetched again.
    pub(super) fn read_chunk_into(
        &self,
        hash: Hash,
        buf: &mut Vec<u8>,
        max_len: usize,
    ) -> Result<(), StoreError> {
        buf.clear();
        self.append_verified(hash, buf, max_len)
    }

    /// Appends chunk `hash`, whose length [`Store::chunk_len`] said is
    /// `len`, to `buf` and verifies it: how a chunk is read straight into
    /// the reply that serves it. On any failure `buf` is as it was.
    pub fn append_chunk(
        &self,
        hash: Hash,
        buf: &mut Vec<u8>,
        len: usize,
    ) -> Result<(), StoreError> {
        let start = buf.len();
        self.append_verified(hash, buf, len.min(MAX_MANIFEST_BYTES))?;
        if buf.len() - start != len {
            // Shorter than said, yet the right bytes: the file was replaced
            // since its length was read. Not here as asked.
            buf.truncate(start);
            return Err(StoreError::MissingChunk(hash));
        }
        Ok(())
    }

    /// The length of chunk `hash`'s file, if it is here (not verified).
    pub fn chunk_len(&self, hash: Hash) -> Option<u64> {
        fs::metadata(self.chunk_path(hash))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Appends chunk `hash` to `buf` and verifies what was appended. A file
    /// longer than `max_len` or with the wrong hash is corrupt: it is
    /// removed so that it gets fetched again. On any failure `buf` is as it
    /// was.
    fn append_verified(
        &self,
        hash: Hash,
        buf: &mut Vec<u8>,
        max_len: usize,
    ) -> Result<(), StoreError> {
        let start = buf.len();
        let path = self.chunk_path(hash);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingChunk(hash));
            }
            Err(e) => return Err(StoreError::io("opening chunk", path)(e)),
        };
        let len = file
            .metadata()
            .map_err(StoreError::io("reading chunk", &path))?
            .len();
        if len <= max_len as u64 {
            buf.reserve_exact(len as usize);
            // `take` bounds the read should the file grow meanwhile.
            if let Err(e) = (&mut file).take(max_len as u64 + 1).read_to_end(buf) {
                buf.truncate(start);
                return Err(StoreError::io("reading chunk", &path)(e));
            }
        }
        let got = &buf[start..];
        if len > max_len as u64 || got.len() > max_len || Hash::of(got) != hash {
            buf.truncate(start);
            drop(file);
            tracing::warn!(chunk = %hash, path = %path.display(), "corrupt chunk removed");
            // Already gone is fine; anything else leaves a file we cannot
            // trust, so say so.
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("removing corrupt chunk", path)(e)),
            }
            return Err(StoreError::Corrupt { hash, path });
        }
        Ok(())
    }

    /// Writes a chunk whose hash the caller has computed, unless it is
    /// already present: temp file, fsync, rename. The caller holds
    /// `self.writer()`. On any failure the temp file is removed.
    pub(super) fn store_chunk(&self, hash: Hash, bytes: &[u8]) -> Result<(), StoreError> {
        self.place_chunk(hash, bytes, Durability::Now)
    }

    fn place_chunk(
        &self,
        hash: Hash,
        bytes: &[u8],
        durability: Durability,
    ) -> Result<(), StoreError> {
        let path = self.chunk_path(hash);
        if fs::symlink_metadata(&path).is_ok() {
            return Ok(());
        }
        let tmp = self.tmp_path(hash);
        let result =
            write_new(&tmp, bytes, durability).and_then(|()| rename_into_place(&tmp, &path));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// Threads [`Store::sync_chunks`] fsyncs from: enough that a journal
/// commit covers several chunks, few enough to leave the cores to the render.
const SYNC_THREADS: usize = 4;

/// When a chunk's bytes must be on disk.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// Before it is placed under its name: the only copy (an import).
    Now,
    /// At the next [`Store::sync_chunks`]: a copy fetched from a peer. A crash
    /// before then can leave a torn file under the chunk's name, which the
    /// next read finds (every read is verified), removes and fetches again.
    Later,
}

/// Creates `path` (which must not exist), writes `bytes`, fsyncs when
/// `durability` says so. A fetched chunk (`Later`) of
/// [`direct::DIRECT_FROM`] bytes or more is written past the page cache
/// where the filesystem allows: see `direct.rs` for why.
pub(super) fn write_new(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), StoreError> {
    if durability == Durability::Later
        && bytes.len() >= direct::DIRECT_FROM
        && direct::write_new_direct(path, bytes)
            .map_err(StoreError::io("writing chunk to", path))?
    {
        return Ok(());
    }
    let mut file = File::create_new(path).map_err(StoreError::io("creating temp file", path))?;
    file.write_all(bytes)
        .map_err(StoreError::io("writing chunk to", path))?;
    match durability {
        Durability::Now => file
            .sync_data()
            .map_err(StoreError::io("syncing chunk", path))?,
        Durability::Later => start_writeback(&file, 0, bytes.len() as u64),
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to
/// disk, without waiting for it. A fetch writes a scene's worth of chunks
/// (and the scene's files, `unpacking.rs`) faster than the kernel's own
/// writeback begins; left dirty, those gigabytes are flushed all at once
/// when anything on the filesystem fsyncs next (ext4 orders a journal
/// commit after the data it allocated): the task's Done, right after the
/// fetch, waited 0.6 s for it here. Written back as they arrive, they cost
/// that commit nothing and the later sync of the chunks little.
pub(super) fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: a syscall on a descriptor `file` owns for the call's
        // duration; it takes no pointers. A failure only leaves the pages
        // to the kernel's own writeback.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Renames `tmp` to `path`, creating the `<2 hex>` folder on first use.
fn rename_into_place(tmp: &Path, path: &Path) -> Result<(), StoreError> {
    match fs::rename(tmp, path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(StoreError::io("creating folder", dir))?;
            }
            fs::rename(tmp, path).map_err(StoreError::io("moving chunk into place", path))
        }
        other => other.map_err(StoreError::io("moving chunk into place", path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_is_verified_and_placed_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes = b"some chunk".to_vec();
        let hash = Hash::of(&bytes);
        assert!(!store.has_chunk(hash));
        store.write_chunk(hash, &bytes).unwrap();
        assert!(store.has_chunk(hash));
        let hex = hash.to_hex();
        assert!(
            dir.path()
                .join("blobs")
                .join(&hex[..2])
                .join(&hex)
                .is_file()
        );
        assert_eq!(store.read_chunk(hash).unwrap(), bytes);
        // Writing again is a no-op, not an error.
        store.write_chunk(hash, &bytes).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn fetched_chunks_are_synced_from_several_threads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chunks: Vec<Hash> = (0..=3 * SYNC_THREADS)
            .map(|i| {
                let bytes = format!("chunk {i}").into_bytes();
                let hash = Hash::of(&bytes);
                store.write_chunk(hash, &bytes).unwrap();
                hash
            })
            .collect();
        // One gone since is not an error.
        fs::remove_file(store.chunk_path(chunks[0])).unwrap();
        store.sync_chunks(&chunks).unwrap();
        store.sync_chunks(&chunks[1..2]).unwrap();
        store.sync_chunks(&[]).unwrap();
        // A chunk that cannot be opened is an error naming it, among many.
        let blocked = Hash::of(b"blocked");
        let folder = store.chunk_path(blocked).parent().unwrap().to_path_buf();
        let _ = fs::remove_dir_all(&folder);
        fs::write(&folder, b"a file where the folder should be").unwrap();
        let mut with_blocked = chunks.clone();
        with_blocked.insert(5, blocked);
        let err = store.sync_chunks(&with_blocked).unwrap_err().to_string();
        assert!(err.contains(&blocked.to_hex()), "{err}");
    }

    #[test]
    fn large_fetched_chunks_are_written_whole_and_read_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Past the size written direct: whole blocks and a tail, and whole
        // blocks alone.
        for len in [(1 << 20) + 123, 64 * 4096] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let hash = Hash::of(&bytes);
            store.write_chunk(hash, &bytes).unwrap();
            assert_eq!(store.chunk_len(hash), Some(len as u64));
            store.sync_chunks(&[hash]).unwrap();
            assert_eq!(store.read_chunk(hash).unwrap(), bytes);
        }
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn wrong_bytes_are_refused_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let claimed = Hash::of(b"the real chunk");
        match store.write_chunk(claimed, b"something else") {
            Err(StoreError::HashMismatch { expected, actual }) => {
                assert_eq!(expected, claimed);
                assert_eq!(actual, Hash::of(b"something else"));
            }
            other => panic!("expected HashMismatch, got {other:?}"),
        }
        assert!(!store.has_chunk(claimed));
        assert!(!store.has_chunk(Hash::of(b"something else")));
        assert_eq!(store.usage().unwrap(), 0);
    }

    #[test]
    fn missing_chunk_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let h = Hash::of(b"absent");
        assert!(matches!(store.read_chunk(h), Err(StoreError::MissingChunk(x)) if x == h));
    }

    #[test]
    fn flipped_byte_is_corrupt_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes = vec![7u8; 1000];
        let hash = Hash::of(&bytes);
        store.write_chunk(hash, &bytes).unwrap();
        let path = store.chunk_path(hash);
        crate::store::tests::flip_byte(&path, 500);
        match store.read_chunk(hash) {
            Err(StoreError::Corrupt { hash: h, path: p }) => {
                assert_eq!(h, hash);
                assert_eq!(p, path);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(
            !store.has_chunk(hash),
            "a corrupt chunk must be removed so it is fetched again"
        );
    }
}
