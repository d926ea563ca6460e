//! Writing a fetched chunk's file past the page cache (`O_DIRECT`).
//!
//! A fetched chunk is written twice on its way in: into the store, and into
//! the scene's files the engine reads (`unpacking.rs`). The engine reads the
//! second copy soon; the store's copy is read only when a peer asks for it
//! or the scene is unpacked again. Through the page cache, both copies take
//! fresh pages, and on a VM whose host takes back the guest's free memory
//! (free page reporting: Firecracker, cloud VMs) every such page costs a
//! fault to the host when it is first written: in a profile of writing
//! 1 GiB to a new file here, 97 % of the time was that first write of each
//! page, 6-7 s of CPU for the gigabyte, against 0.1 s for the same chunk
//! files written with `O_DIRECT` from one reused buffer. A direct write also
//! leaves the page cache to what is read: the scene, the renders' outputs.
//!
//! `O_DIRECT` wants the buffer, the offset and the length aligned to the
//! disk's blocks. The chunk is copied into a buffer aligned to [`ALIGN`]
//! that each thread keeps (a reused buffer costs no fresh pages); its whole
//! blocks are written direct and the tail, under a block, through the page
//! cache. A filesystem that refuses `O_DIRECT` (tmpfs, some network
//! filesystems) gets the whole chunk through the page cache, as before.

use std::io;
use std::path::Path;
#[cfg(target_os = "linux")]
use std::{
    cell::RefCell,
    fs::{File, OpenOptions},
    os::unix::fs::{FileExt, OpenOptionsExt},
};

#[cfg(target_os = "linux")]
use super::chunks::start_writeback;

#[cfg(target_os = "linux")]
/// The alignment of direct writes: a page, which every disk's logical
/// block divides.
const ALIGN: usize = 4096;

/// Chunks shorter than this go through the page cache: a direct write is a
/// round trip to the disk, and a small file is mostly its tail anyway.
pub(super) const DIRECT_FROM: usize = 64 * 1024;

/// No `O_DIRECT` on this system: the caller writes every chunk through the
/// page cache.
#[cfg(not(target_os = "linux"))]
pub(super) fn write_new_direct(_path: &Path, _bytes: &[u8]) -> io::Result<bool> {
    Ok(false)
}

/// Creates `path` (which must not exist) and writes `bytes` to it, its whole
/// blocks with `O_DIRECT` and the tail's writeback started. `Ok(false)` when
/// the filesystem refuses direct writes: nothing is left at `path` then, and
/// the caller writes it through the page cache.
#[cfg(target_os = "linux")]
pub(super) fn write_new_direct(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let direct_len = bytes.len() / ALIGN * ALIGN;
    let file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
        Err(e) => return Err(e),
    };
    let written = ALIGNED.with(|buf| match buf.borrow_mut().holding(&bytes[..direct_len]) {
        Some(aligned) => file.write_all_at(aligned, 0),
        None => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    });
    match written {
        Ok(()) => {}
        // Refused by the filesystem (or no aligned buffer): through the
        // page cache instead.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            drop(file);
            std::fs::remove_file(path)?;
            return Ok(false);
        }
        Err(e) => return Err(e),
    }
    if direct_len < bytes.len() {
        buffered(&file)?;
        file.write_all_at(&bytes[direct_len..], direct_len as u64)?;
        let tail = (bytes.len() - direct_len) as u64;
        start_writeback(&file, direct_len as u64, tail);
    }
    Ok(true)
}

/// Turns `O_DIRECT` off for `file`, so that an unaligned tail can be
/// written.
#[cfg(target_os = "linux")]
fn buffered(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor `file` owns for the call's duration; no
    // pointers are passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(target_os = "linux")]
thread_local! {
    /// Each thread's buffer, grown to the largest chunk it wrote.
    static ALIGNED: RefCell<AlignedBuf> = const { RefCell::new(AlignedBuf(Vec::new())) };
}

#[cfg(target_os = "linux")]
/// A buffer that hands out slices starting on an [`ALIGN`] boundary: a
/// `Vec` one alignment longer than needed, used from its first aligned byte.
struct AlignedBuf(Vec<u8>);

#[cfg(target_os = "linux")]
impl AlignedBuf {
    /// `bytes`, copied into this buffer (grown if needed) at an aligned
    /// address; `None` should the address not be found.
    fn holding(&mut self, bytes: &[u8]) -> Option<&[u8]> {
        if self.0.len() < bytes.len() + ALIGN {
            self.0 = vec![0; bytes.len() + ALIGN];
        }
        let start = self.0.as_ptr().align_offset(ALIGN);
        let end = start.checked_add(bytes.len())?;
        let held = self.0.get_mut(start..end)?;
        held.copy_from_slice(bytes);
        Some(held)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Whether the filesystem under `dir` takes a direct write of a block.
    fn takes_direct(dir: &Path) -> bool {
        let probe = dir.join("probe");
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .and_then(|f| {
                let mut buf = AlignedBuf(Vec::new());
                let block = buf.holding(&[7; ALIGN]).expect("an aligned block");
                f.write_all_at(block, 0)
            });
        let _ = std::fs::remove_file(&probe);
        written.is_ok()
    }

    #[test]
    fn whole_blocks_and_tails_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        // Largest first: the thread's buffer is then reused, longer than
        // what it holds.
        let sizes = [
            crate::store::manifest::MAX_CHUNK_LEN as usize,
            (1 << 20) + 4095,
            100 * ALIGN,
            100 * ALIGN + 1,
            DIRECT_FROM,
        ];
        for (i, len) in sizes.into_iter().enumerate() {
            let path = dir.path().join(format!("chunk-{i}"));
            let want = bytes(len, i as u8);
            match write_new_direct(&path, &want).unwrap() {
                true => {
                    assert_eq!(std::fs::read(&path).unwrap(), want, "{len} bytes");
                }
                // Only where the filesystem refuses it, and then nothing
                // is left behind for the caller's own write to trip on.
                false => {
                    assert!(!takes_direct(dir.path()), "{len} bytes fell back");
                    assert!(!path.exists());
                }
            }
        }
    }

    #[test]
    fn an_existing_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunk");
        std::fs::write(&path, b"already here").unwrap();
        let err = write_new_direct(&path, &bytes(DIRECT_FROM, 1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"already here");
    }
}
