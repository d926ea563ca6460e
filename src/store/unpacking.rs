//! A bundle written out as files while its chunks arrive.
//!
//! A node that fetches a scene used to store every chunk, then, once the
//! last had landed, read them all back, hash them again and write the
//! scene's files for the engine: for a 1 GiB scene 1.1 s here, after a
//! ~9 s fetch, all of it before the render could start. An [`Unpacking`]
//! takes each chunk as the fetch verifies and stores it, and writes the
//! same bytes at every offset where the bundle's files hold that chunk. When
//! the fetch ends, [`Unpacking::finish`] copies in the chunks no fetch
//! brought (the store had them: a re-submitted scene shares most of its
//! chunks with the last one), verified as every read from the store is, and
//! the folder is complete.
//!
//! Every byte written came from a chunk whose hash was checked, by the fetch
//! or by the read in `finish`; a chunk is placed once. The files are not
//! fsynced, like [`Store::export_bundle_unsynced`]: they are a copy its
//! owner throws away after a crash. Files are opened per chunk rather than
//! kept open, so a project folder of thousands of textures does not hold
//! thousands of descriptors.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::chunks::start_writeback;
use super::export::{make_executable, prepare_dest};
use super::manifest::{MAX_CHUNK_LEN, ManifestError};
use super::{Store, StoreError};
use crate::hash::Hash;

/// A bundle being written under a folder as its chunks arrive.
#[derive(Debug)]
pub struct Unpacking {
    bundle: Hash,
    dir: PathBuf,
    /// The bundle's files, by index.
    files: Vec<PathBuf>,
    /// Where each data chunk goes: (file index, offset); its length.
    places: HashMap<Hash, (u32, Vec<(usize, u64)>)>,
    /// Chunks not placed yet.
    left: Mutex<HashSet<Hash>>,
    /// The first write that failed; the unpacking is then of no use.
    broken: Mutex<Option<StoreError>>,
}

impl Store {
    /// Starts writing the `Bundle` blob `bundle` under `dir` (created; must
    /// not exist), every file at its full size and empty. Every manifest of
    /// the bundle must be here: [`StoreError::NotFound`] names the first
    /// that is not. The data chunks need not be.
    pub fn begin_unpacking(&self, bundle: Hash, dir: &Path) -> Result<Unpacking, StoreError> {
        let layout = self.bundle_layout(bundle)?;
        fs::create_dir(dir).map_err(StoreError::io("creating folder", dir))?;
        let mut safe_folders = HashSet::new();
        let mut files = Vec::with_capacity(layout.len());
        let mut places: HashMap<Hash, (u32, Vec<(usize, u64)>)> = HashMap::new();
        for (entry, chunks) in layout {
            let path = prepare_dest(dir, &entry.path, &mut safe_folders)?;
            let file = File::create_new(&path).map_err(StoreError::io("creating", &path))?;
            file.set_len(entry.size)
                .map_err(StoreError::io("sizing", &path))?;
            if entry.executable {
                make_executable(&file).map_err(StoreError::io("setting permissions of", &path))?;
            }
            let mut offset = 0;
            for c in chunks {
                places
                    .entry(c.hash)
                    .or_insert_with(|| (c.len, Vec::new()))
                    .1
                    .push((files.len(), offset));
                offset += u64::from(c.len);
            }
            files.push(path);
        }
        let left = places.keys().copied().collect();
        Ok(Unpacking {
            bundle,
            dir: dir.to_path_buf(),
            files,
            places,
            left: Mutex::new(left),
            broken: Mutex::new(None),
        })
    }
}

impl Unpacking {
    /// Writes data chunk `hash`, whose bytes were verified against it,
    /// wherever the bundle holds it. Chunks of other blobs, and chunks
    /// placed already, are ignored; a failed write is kept for `finish`.
    pub fn place(&self, hash: Hash, bytes: &[u8]) {
        if !self.take(hash) {
            return;
        }
        if let Err(e) = self.write(hash, bytes) {
            let mut broken = self.broken.lock().unwrap_or_else(PoisonError::into_inner);
            broken.get_or_insert(e);
        }
    }

    /// Places every chunk no fetch brought, read (and verified) from
    /// `store`; the folder is then complete. Call it once the fetch has
    /// stored every chunk of the bundle.
    pub fn finish(&self, store: &Store) -> Result<(), StoreError> {
        let broken = self
            .broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(e) = broken {
            return Err(e);
        }
        let left: Vec<Hash> = self
            .left
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        let mut buf = Vec::new();
        for hash in left {
            store.read_chunk_into(hash, &mut buf, MAX_CHUNK_LEN as usize)?;
            self.write(hash, &buf)?;
        }
        Ok(())
    }

    /// The folder the bundle is written under.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `hash` is a chunk still to place; it no longer is.
    fn take(&self, hash: Hash) -> bool {
        self.left
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&hash)
    }

    fn write(&self, hash: Hash, bytes: &[u8]) -> Result<(), StoreError> {
        let Some((len, at)) = self.places.get(&hash) else {
            return Ok(());
        };
        if bytes.len() != *len as usize {
            let source = ManifestError::ChunkLen {
                hash,
                listed: *len,
                actual: bytes.len(),
            };
            return Err(StoreError::BadManifest {
                hash: self.bundle,
                source,
            });
        }
        for &(file, offset) in at {
            let path = &self.files[file];
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(StoreError::io("opening", path))?;
            f.write_all_at(bytes, offset)
                .map_err(StoreError::io("writing", path))?;
            start_writeback(&f, offset, bytes.len() as u64);
        }
        Ok(())
    }
}
