//! Import: files, streams and project folders into blobs.
//!
//! The chunker (FastCDC, streamed in 8 MiB blocks so a multi-GB file never
//! sits in memory; see `chunker.rs`) runs on the calling thread and hands
//! each chunk to a few writer threads that hash it and store it. fsync is the slow step of a write, and
//! several fsyncs in flight go about four times faster than one at a time, so
//! the writers are threads even on a two-core machine. The channel between
//! them is bounded: at most a few chunks (each <= 4 MiB) wait in memory.
//!
//! A folder becomes a `Bundle`: every regular file under it, relative paths
//! kept, sorted. Symlinks to files are followed (stored as regular files);
//! symlinked folders are not (no loops); special files are skipped; empty
//! folders are not recorded.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};
use std::thread;

use super::chunker::{Chunk, Chunker};
use super::manifest::{
    BundleEntry, ChunkRef, MAX_ITEMS, MAX_MANIFEST_BYTES, Manifest, ManifestError, check_path,
};
use super::{Hold, Store, StoreError};
use crate::hash::Hash;

/// Threads hashing and writing chunks during one import.
const WRITERS: usize = 4;

/// A `File` blob just imported, and its size.
type Imported = (Hash, u64);

/// A file found under a folder being imported.
struct SourceFile {
    rel: String,
    abs: PathBuf,
    executable: bool,
}

impl Store {
    /// Imports one file as a `File` blob, streaming it.
    pub fn import_file(&self, path: &Path) -> Result<Hash, StoreError> {
        let hold = Hold::new(self);
        let (blob, _size) = self.import_path(path, &hold)?;
        self.mark_used(blob);
        Ok(blob)
    }

    /// Imports everything `r` yields as a `File` blob.
    pub fn import_reader(&self, r: impl Read) -> Result<Hash, StoreError> {
        let hold = Hold::new(self);
        let (blob, _size) = self.import_stream(r, None, Path::new("(stream)"), &hold)?;
        self.mark_used(blob);
        Ok(blob)
    }

    /// Imports `bytes` as a `File` blob (same chunks as the streamed import).
    pub fn import_bytes(&self, bytes: &[u8]) -> Result<Hash, StoreError> {
        let hold = Hold::new(self);
        let (blob, _size) =
            self.import_stream(bytes, Some(bytes.len() as u64), Path::new("(bytes)"), &hold)?;
        self.mark_used(blob);
        Ok(blob)
    }

    /// Imports a file (a bundle of one entry, named by the file name) or a
    /// folder (every regular file under it) as a `Bundle` blob.
    pub fn import_bundle(&self, path: &Path) -> Result<Hash, StoreError> {
        let hold = Hold::new(self);
        let md = fs::metadata(path).map_err(StoreError::io("reading", path))?;
        let mut files = if md.is_dir() {
            walk(path)?
        } else if md.is_file() {
            let name = path.file_name().unwrap_or_default();
            let rel = utf8_name(name.to_os_string(), path)?;
            check_path(&rel).map_err(|e| path_error(e, path))?;
            vec![SourceFile {
                rel,
                abs: path.to_path_buf(),
                executable: is_executable(&md),
            }]
        } else {
            return Err(StoreError::BadSource {
                path: path.into(),
                reason: "it is not a file or a folder".into(),
            });
        };
        files.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
        let blobs = self.import_files(&files, &hold)?;
        let entries = files
            .into_iter()
            .zip(blobs)
            .map(|(f, (blob, size))| BundleEntry {
                path: f.rel,
                blob,
                size,
                executable: f.executable,
            })
            .collect();
        let bundle = self.store_manifest(&Manifest::Bundle { entries }, path, &hold)?;
        self.mark_used(bundle);
        Ok(bundle)
    }

    /// Imports `files` (as `File` blobs, not marked used) on a few threads:
    /// a project of many small textures costs two fsyncs per file, and
    /// fsyncs in flight together finish sooner. Results are in `files` order.
    fn import_files(&self, files: &[SourceFile], hold: &Hold) -> Result<Vec<Imported>, StoreError> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let work = || -> Result<Vec<(usize, Imported)>, StoreError> {
            let mut done = Vec::new();
            while !failed.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(f) = files.get(i) else { break };
                match self.import_path(&f.abs, hold) {
                    Ok(r) => done.push((i, r)),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            Ok(done)
        };
        let parts: Vec<_> = thread::scope(|s| {
            let helpers: Vec<_> = (1..WRITERS.min(files.len()))
                .filter_map(|_| {
                    thread::Builder::new()
                        .name("store-import".into())
                        .spawn_scoped(s, work)
                        .ok()
                })
                .collect();
            let mine = work();
            let theirs = helpers
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            std::iter::once(mine).chain(theirs).collect()
        });
        let mut out = vec![(Hash::default(), 0); files.len()];
        for part in parts {
            for (i, r) in part? {
                if let Some(slot) = out.get_mut(i) {
                    *slot = r;
                }
            }
        }
        Ok(out)
    }

    /// Imports the file at `path` without marking it used.
    fn import_path(&self, path: &Path, hold: &Hold) -> Result<(Hash, u64), StoreError> {
        let file = File::open(path).map_err(StoreError::io("opening", path))?;
        let md = file.metadata().map_err(StoreError::io("reading", path))?;
        if !md.is_file() {
            return Err(StoreError::BadSource {
                path: path.into(),
                reason: "it is not a regular file".into(),
            });
        }
        self.import_stream(file, Some(md.len()), path, hold)
    }

    /// Chunks, stores and describes a stream of about `size_hint` bytes;
    /// `source` names it in errors.
    fn import_stream(
        &self,
        r: impl Read,
        size_hint: Option<u64>,
        source: &Path,
        hold: &Hold,
    ) -> Result<(Hash, u64), StoreError> {
        let chunks =
            Chunker::new(r, size_hint).map(|c| c.map_err(StoreError::io("reading", source)));
        let refs = self.store_chunks(chunks, source, hold)?;
        let size = refs.iter().map(|c| u64::from(c.len)).sum();
        let blob = self.store_manifest(&Manifest::File { size, chunks: refs }, source, hold)?;
        Ok((blob, size))
    }

    /// Stores every chunk; returns their refs in order. One chunk is stored
    /// on this thread; more go through the writer threads.
    fn store_chunks(
        &self,
        mut chunks: impl Iterator<Item = Result<Chunk, StoreError>>,
        source: &Path,
        hold: &Hold,
    ) -> Result<Vec<ChunkRef>, StoreError> {
        let Some(first) = chunks.next().transpose()? else {
            return Ok(Vec::new());
        };
        let Some(second) = chunks.next().transpose()? else {
            return Ok(vec![self.hash_and_store(&first, hold)?]);
        };
        let all = [Ok(first), Ok(second)].into_iter().chain(chunks);
        self.store_chunks_parallel(all, source, hold)
    }

    fn hash_and_store(&self, bytes: &[u8], hold: &Hold) -> Result<ChunkRef, StoreError> {
        let hash = Hash::of(bytes);
        self.store_held(hash, bytes, hold)?;
        // The chunker never yields more than MAX_CHUNK_LEN bytes.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        Ok(ChunkRef { hash, len })
    }

    fn store_chunks_parallel(
        &self,
        chunks: impl Iterator<Item = Result<Chunk, StoreError>>,
        source: &Path,
        hold: &Hold,
    ) -> Result<Vec<ChunkRef>, StoreError> {
        let (work_tx, work_rx) = mpsc::sync_channel::<(usize, Chunk)>(WRITERS);
        let work_rx = Mutex::new(work_rx);
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        thread::scope(|s| {
            let mut results = Results::default();
            for _ in 0..WRITERS {
                let (done_tx, work_rx) = (done_tx.clone(), &work_rx);
                let worker = move || {
                    loop {
                        let job = work_rx
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .recv();
                        let Ok((i, bytes)) = job else { break };
                        if done_tx
                            .send((i, self.hash_and_store(&bytes, hold)))
                            .is_err()
                        {
                            break;
                        }
                    }
                };
                if let Err(e) = thread::Builder::new()
                    .name("store-writer".into())
                    .spawn_scoped(s, worker)
                {
                    results.fail(StoreError::io("starting a chunk writer thread for", source)(e));
                    break;
                }
            }
            drop(done_tx);
            for (i, chunk) in chunks.enumerate() {
                while let Ok(done) = done_rx.try_recv() {
                    results.record(done);
                }
                if results.failure.is_some() {
                    break;
                }
                match chunk {
                    Err(e) => results.fail(e),
                    Ok(bytes) => {
                        results.expect(i);
                        if work_tx.send((i, bytes)).is_err() {
                            break;
                        }
                    }
                }
            }
            drop(work_tx);
            for done in done_rx {
                results.record(done);
            }
            results.finish(source)
        })
    }

    /// Encodes, stores (held) and names a manifest.
    fn store_manifest(
        &self,
        manifest: &Manifest,
        source: &Path,
        hold: &Hold,
    ) -> Result<Hash, StoreError> {
        let bytes = manifest.encode().map_err(|e| manifest_error(e, source))?;
        let hash = Hash::of(&bytes);
        self.store_held(hash, &bytes, hold)?;
        Ok(hash)
    }

    /// Stores a chunk and holds it, both under the gc lock.
    pub(super) fn store_held(
        &self,
        hash: Hash,
        bytes: &[u8],
        hold: &Hold,
    ) -> Result<(), StoreError> {
        let _writer = self.writer();
        self.store_chunk(hash, bytes)?;
        hold.add([hash]);
        Ok(())
    }
}

/// A writer's answer: chunk index and its ref, or why it failed.
type Done = (usize, Result<ChunkRef, StoreError>);

/// Chunk refs gathered from the writers, in chunk order, and the first
/// failure.
#[derive(Default)]
struct Results {
    refs: Vec<Option<ChunkRef>>,
    failure: Option<StoreError>,
}

impl Results {
    /// Chunk `i` was handed to a writer (indexes come in order).
    fn expect(&mut self, i: usize) {
        if self.refs.len() <= i {
            self.refs.resize(i + 1, None);
        }
    }

    fn record(&mut self, (i, result): Done) {
        match result {
            Ok(c) => {
                if let Some(slot) = self.refs.get_mut(i) {
                    *slot = Some(c);
                }
            }
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: StoreError) {
        self.failure.get_or_insert(e);
    }

    fn finish(self, source: &Path) -> Result<Vec<ChunkRef>, StoreError> {
        if let Some(e) = self.failure {
            return Err(e);
        }
        // Every chunk sent was answered; a hole means a writer died.
        self.refs
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                StoreError::io("importing", source)(io::Error::other(
                    "a chunk writer thread stopped early",
                ))
            })
    }
}

/// Every regular file under `root`, with its `/`-separated relative path.
fn walk(root: &Path) -> Result<Vec<SourceFile>, StoreError> {
    let mut out = Vec::new();
    let mut folders = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, dir_rel)) = folders.pop() {
        for entry in fs::read_dir(&dir).map_err(StoreError::io("listing folder", &dir))? {
            let entry = entry.map_err(StoreError::io("listing folder", &dir))?;
            let abs = entry.path();
            let name = utf8_name(entry.file_name(), &abs)?;
            let rel = if dir_rel.is_empty() {
                name
            } else {
                format!("{dir_rel}/{name}")
            };
            let kind = entry.file_type().map_err(StoreError::io("reading", &abs))?;
            if kind.is_dir() {
                folders.push((abs, rel));
                continue;
            }
            let md = if kind.is_symlink() {
                let md = fs::metadata(&abs).map_err(StoreError::io("following symlink", &abs))?;
                if md.is_dir() {
                    tracing::debug!(path = %abs.display(), "symlinked folder not followed");
                    continue;
                }
                md
            } else {
                entry.metadata().map_err(StoreError::io("reading", &abs))?
            };
            if !md.is_file() {
                tracing::warn!(path = %abs.display(), "special file (fifo, socket, device) left out of the bundle");
                continue;
            }
            check_path(&rel).map_err(|e| path_error(e, &abs))?;
            out.push(SourceFile {
                rel,
                abs,
                executable: is_executable(&md),
            });
            if out.len() > MAX_ITEMS {
                let what = format!("folder `{}` (files)", root.display());
                return Err(StoreError::TooLarge {
                    what,
                    size: out.len() as u64,
                    limit: MAX_ITEMS as u64,
                });
            }
        }
    }
    Ok(out)
}

fn utf8_name(name: std::ffi::OsString, abs: &Path) -> Result<String, StoreError> {
    name.into_string().map_err(|_| StoreError::UnsafePath {
        path: abs.display().to_string(),
        reason: "its name is not valid UTF-8: rename it",
    })
}

/// A file name that cannot be a bundle path.
fn path_error(e: ManifestError, abs: &Path) -> StoreError {
    match e {
        ManifestError::UnsafePath { reason, .. } => StoreError::UnsafePath {
            path: abs.display().to_string(),
            reason,
        },
        other => StoreError::BadSource {
            path: abs.into(),
            reason: other.to_string(),
        },
    }
}

/// A manifest this node built but cannot store.
fn manifest_error(e: ManifestError, source: &Path) -> StoreError {
    let what = format!("the manifest of `{}`", source.display());
    match e {
        ManifestError::TooBig(n) => StoreError::TooLarge {
            what,
            size: n as u64,
            limit: MAX_MANIFEST_BYTES as u64,
        },
        ManifestError::TooManyItems(n) => StoreError::TooLarge {
            what,
            size: n as u64,
            limit: MAX_ITEMS as u64,
        },
        ManifestError::UnsafePath { path, reason } => StoreError::UnsafePath { path, reason },
        other => StoreError::BadSource {
            path: source.into(),
            reason: other.to_string(),
        },
    }
}

#[cfg(unix)]
fn is_executable(md: &Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    md.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_md: &Metadata) -> bool {
    false
}
