//! Export: blobs back into files and folders, and small blobs into memory.
//!
//! A file is written to a temp file next to its destination, fsynced and
//! renamed, so a reader (the render engine, a user) never sees half a frame
//! or half a scene. Every chunk is verified on the way out. A copy that its
//! owner throws away after a crash (the node's unpacked scenes) skips the
//! fsync: [`Store::export_bundle_unsynced`].
//!
//! A bundle's paths come from the network. They were validated when the
//! manifest was decoded and are validated again here, right where they
//! become paths; and the export walks the destination one folder at a time,
//! refusing to pass through a symlink, so an entry can only ever land
//! inside `dest_dir`.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::manifest::{BundleEntry, ChunkRef, MAX_CHUNK_LEN, Manifest, ManifestError, check_path};
use super::{Hold, Store, StoreError};
use crate::hash::Hash;

impl Store {
    /// Writes the `File` blob `blob` to `dest` (atomically).
    pub fn export_file(&self, blob: Hash, dest: &Path) -> Result<(), StoreError> {
        let hold = Hold::new(self);
        let (_size, chunks) = self.hold_file(blob, &hold)?;
        self.mark_used(blob);
        self.write_file(blob, &chunks, dest, false, Fsync::Yes)
    }

    /// Writes every entry of the `Bundle` blob `bundle` under `dest_dir`
    /// (created if needed), never outside it. Every entry's manifest must be
    /// present before anything is written.
    pub fn export_bundle(&self, bundle: Hash, dest_dir: &Path) -> Result<(), StoreError> {
        self.export_bundle_as(bundle, dest_dir, Fsync::Yes)
    }

    /// [`Store::export_bundle`] without fsync: for a copy its owner removes
    /// after a crash (a torn file is never used), where waiting for the disk
    /// would only delay the render.
    pub fn export_bundle_unsynced(&self, bundle: Hash, dest_dir: &Path) -> Result<(), StoreError> {
        self.export_bundle_as(bundle, dest_dir, Fsync::No)
    }

    fn export_bundle_as(
        &self,
        bundle: Hash,
        dest_dir: &Path,
        sync: Fsync,
    ) -> Result<(), StoreError> {
        let hold = Hold::new(self);
        let files = self.hold_bundle(bundle, &hold)?;
        self.mark_used(bundle);
        fs::create_dir_all(dest_dir).map_err(StoreError::io("creating folder", dest_dir))?;
        let mut safe_folders = HashSet::new();
        for (entry, chunks) in &files {
            let dest = prepare_dest(dest_dir, &entry.path, &mut safe_folders)?;
            self.write_file(entry.blob, chunks, &dest, entry.executable, sync)?;
        }
        Ok(())
    }

    /// The content of the `File` blob `blob`, if it is at most `max_len`
    /// bytes (for logs and thumbnails).
    pub fn read_blob(&self, blob: Hash, max_len: u64) -> Result<Vec<u8>, StoreError> {
        let hold = Hold::new(self);
        let (size, chunks) = self.hold_file(blob, &hold)?;
        if size > max_len {
            return Err(StoreError::TooLarge {
                what: format!("blob {blob}"),
                size,
                limit: max_len,
            });
        }
        self.mark_used(blob);
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let mut buf = Vec::new();
        for c in &chunks {
            self.read_data_chunk(blob, c, &mut buf)?;
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }

    /// The size and chunks of the `File` blob `blob`, held.
    fn hold_file(&self, blob: Hash, hold: &Hold) -> Result<(u64, Vec<ChunkRef>), StoreError> {
        let _writer = self.writer();
        let Manifest::File { size, chunks } = self.manifest(blob)? else {
            return Err(StoreError::NotAFile(blob));
        };
        hold.add(std::iter::once(blob).chain(chunks.iter().map(|c| c.hash)));
        Ok((size, chunks))
    }

    /// The entries of the `Bundle` blob `bundle` with their chunks, held;
    /// paths checked again.
    fn hold_bundle(
        &self,
        bundle: Hash,
        hold: &Hold,
    ) -> Result<Vec<(BundleEntry, Vec<ChunkRef>)>, StoreError> {
        let _writer = self.writer();
        let files = self.bundle_layout(bundle)?;
        hold.add([bundle]);
        for (entry, chunks) in &files {
            hold.add(std::iter::once(entry.blob).chain(chunks.iter().map(|c| c.hash)));
        }
        Ok(files)
    }

    /// The entries of the `Bundle` blob `bundle` with their chunks, paths
    /// checked again; [`StoreError::NotFound`] names the first entry whose
    /// manifest is not here.
    pub(super) fn bundle_layout(
        &self,
        bundle: Hash,
    ) -> Result<Vec<(BundleEntry, Vec<ChunkRef>)>, StoreError> {
        let Manifest::Bundle { entries } = self.manifest(bundle)? else {
            return Err(StoreError::NotABundle(bundle));
        };
        let mut files = Vec::with_capacity(entries.len());
        for entry in entries {
            check_path(&entry.path).map_err(|source| StoreError::BadManifest {
                hash: bundle,
                source,
            })?;
            let chunks = self
                .entry_chunks(bundle, &entry)?
                .ok_or(StoreError::NotFound(entry.blob))?;
            files.push((entry, chunks));
        }
        Ok(files)
    }

    /// Reads and verifies one data chunk of `blob` into `buf`.
    fn read_data_chunk(
        &self,
        blob: Hash,
        c: &ChunkRef,
        buf: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        self.read_chunk_into(c.hash, buf, MAX_CHUNK_LEN as usize)?;
        if buf.len() != c.len as usize {
            let source = ManifestError::ChunkLen {
                hash: c.hash,
                listed: c.len,
                actual: buf.len(),
            };
            return Err(StoreError::BadManifest { hash: blob, source });
        }
        Ok(())
    }

    /// Writes `chunks` to a temp file beside `dest`, then renames it there.
    fn write_file(
        &self,
        blob: Hash,
        chunks: &[ChunkRef],
        dest: &Path,
        executable: bool,
        sync: Fsync,
    ) -> Result<(), StoreError> {
        let Some(name) = dest.file_name() else {
            return Err(StoreError::Blocked {
                path: dest.into(),
                reason: "it does not name a file",
            });
        };
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp_name = format!(
            ".{}.swarm-{}-{}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            self.next_seq()
        );
        let tmp = dir.join(tmp_name);
        let result = self
            .fill(blob, chunks, &tmp, executable, sync)
            .and_then(|()| {
                fs::rename(&tmp, dest)
                    .map_err(StoreError::io("moving exported file into place", dest))
            });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn fill(
        &self,
        blob: Hash,
        chunks: &[ChunkRef],
        tmp: &Path,
        executable: bool,
        sync: Fsync,
    ) -> Result<(), StoreError> {
        let mut file = File::create_new(tmp).map_err(StoreError::io("creating temp file", tmp))?;
        let mut buf = Vec::new();
        for c in chunks {
            self.read_data_chunk(blob, c, &mut buf)?;
            file.write_all(&buf)
                .map_err(StoreError::io("writing", tmp))?;
        }
        if executable {
            make_executable(&file).map_err(StoreError::io("setting permissions of", tmp))?;
        }
        match sync {
            Fsync::Yes => file.sync_data().map_err(StoreError::io("syncing", tmp)),
            Fsync::No => Ok(()),
        }
    }
}

/// Whether an exported file is made durable before it is renamed into place.
#[derive(Clone, Copy)]
enum Fsync {
    Yes,
    No,
}

/// The destination of bundle path `rel` under `dest_dir`, its folders
/// created; refuses symlinks on the way and anything but a file at the end.
/// `safe_folders` remembers folders already checked.
pub(super) fn prepare_dest(
    dest_dir: &Path,
    rel: &str,
    safe_folders: &mut HashSet<String>,
) -> Result<PathBuf, StoreError> {
    let mut path = dest_dir.to_path_buf();
    let mut components = rel.split('/').peekable();
    let mut so_far = String::new();
    while let Some(component) = components.next() {
        path.push(component);
        if components.peek().is_none() {
            break;
        }
        if !so_far.is_empty() {
            so_far.push('/');
        }
        so_far.push_str(component);
        if safe_folders.contains(&so_far) {
            continue;
        }
        match kind_of(&path)? {
            Kind::Absent => match fs::create_dir(&path) {
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists
                        && kind_of(&path)? == Kind::Folder => {}
                other => other.map_err(StoreError::io("creating folder", &path))?,
            },
            Kind::Folder => {}
            Kind::Symlink => return Err(symlink_in_the_way(path)),
            Kind::Other => {
                return Err(StoreError::Blocked {
                    path,
                    reason: "a file is in the way of a folder of the bundle",
                });
            }
        }
        safe_folders.insert(so_far.clone());
    }
    match kind_of(&path)? {
        Kind::Absent | Kind::Other => Ok(path),
        Kind::Symlink => Err(symlink_in_the_way(path)),
        Kind::Folder => Err(StoreError::Blocked {
            path,
            reason: "a folder is in the way of a file of the bundle",
        }),
    }
}

#[derive(PartialEq, Eq)]
enum Kind {
    Absent,
    Folder,
    Symlink,
    Other,
}

/// What is at `path`, without following a symlink.
fn kind_of(path: &Path) -> Result<Kind, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_symlink() => Ok(Kind::Symlink),
        Ok(md) if md.is_dir() => Ok(Kind::Folder),
        Ok(_) => Ok(Kind::Other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Kind::Absent),
        Err(e) => Err(StoreError::io("reading", path)(e)),
    }
}

fn symlink_in_the_way(path: PathBuf) -> StoreError {
    StoreError::Blocked {
        path,
        reason: "it is a symlink and exports never write through one: remove it",
    }
}

/// Adds execute permission wherever read permission is set.
#[cfg(unix)]
pub(super) fn make_executable(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file.metadata()?.permissions().mode();
    file.set_permissions(fs::Permissions::from_mode(mode | ((mode & 0o444) >> 2)))
}

#[cfg(not(unix))]
pub(super) fn make_executable(_file: &File) -> io::Result<()> {
    Ok(())
}
