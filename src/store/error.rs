//! The one error type of the blob store.
//!
//! Every variant names the path or hash involved and says what to do, because
//! these errors reach an operator's terminal (`swarm submit`, `swarm fetch`)
//! and a peer's log; "I/O error" alone helps nobody. Manifest decoding has
//! its own [`ManifestError`] so that a bad manifest from the network can be
//! reported with its precise reason and counted against the peer.

use std::io;
use std::path::PathBuf;

use super::manifest::ManifestError;
use crate::hash::Hash;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem call failed; `op` says what the store was doing.
    #[error("{op} `{}` failed: {source} (check the disk, its free space and permissions)", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Another process (or another `Store` in this one) holds the store.
    #[error(
        "the blob store at `{}` is in use by another renderswarm node: stop it or give this node its own --data-dir",
        .0.display()
    )]
    InUse(PathBuf),

    /// The blob's manifest is not here.
    #[error("blob {0} is not in this node's store: import it, or fetch it from a peer that has it")]
    NotFound(Hash),

    /// A chunk is not here (a blob is held only in part).
    #[error(
        "chunk {0} is not in this node's store: fetch it (or the blob it belongs to) from a peer"
    )]
    MissingChunk(Hash),

    /// A stored chunk no longer hashes to its name. The file was removed.
    #[error(
        "chunk {hash} at `{}` is corrupt (its bytes no longer hash to its name); it was removed: fetch it again",
        path.display()
    )]
    Corrupt { hash: Hash, path: PathBuf },

    /// Bytes offered for a chunk are not that chunk.
    #[error(
        "bytes offered for chunk {expected} hash to {actual}: they were discarded; fetch the chunk from another peer"
    )]
    HashMismatch { expected: Hash, actual: Hash },

    /// The blob's manifest does not decode or breaks an invariant.
    #[error(
        "blob {hash} has a bad manifest: {source}; the blob cannot be used, import or fetch it again"
    )]
    BadManifest {
        hash: Hash,
        #[source]
        source: ManifestError,
    },

    /// A file name cannot become a bundle path (import) or a bundle path
    /// cannot become a file (export).
    #[error("unsafe path `{path}`: {reason}")]
    UnsafePath { path: String, reason: &'static str },

    /// Export would write through a symlink or over something that is not
    /// a regular file.
    #[error("cannot export to `{}`: {reason}", path.display())]
    Blocked { path: PathBuf, reason: &'static str },

    /// The path given to an import is not something the store can import.
    #[error("cannot import `{}`: {reason}", path.display())]
    BadSource { path: PathBuf, reason: String },

    /// The blob is a bundle where a single file was asked for.
    #[error("blob {0} is a bundle (a folder), not a single file: export it as a bundle")]
    NotAFile(Hash),

    /// The blob is a single file where a bundle was asked for.
    #[error("blob {0} is a single file, not a bundle: export it as a file")]
    NotABundle(Hash),

    /// Something is larger than the store allows or than the caller asked for.
    #[error("{what} is {size} bytes (or items), over the limit of {limit}")]
    TooLarge { what: String, size: u64, limit: u64 },
}

impl StoreError {
    /// Whether the disk (or the user's quota on it) is full: not the data's
    /// fault, and space may come back.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            StoreError::Io { source, .. }
                if matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
        )
    }

    /// A closure turning an `io::Error` into [`StoreError::Io`] naming `path`.
    pub(super) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }
}

/// `s` made safe and short for an error message: control characters escaped,
/// at most 120 characters shown.
pub(super) fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(120).flat_map(char::escape_debug).collect();
    if s.chars().nth(120).is_some() {
        out.push_str(&format!("… ({} bytes)", s.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_names_path_and_op() {
        let err =
            StoreError::io("writing chunk", "/x/y")(io::Error::from(io::ErrorKind::StorageFull));
        let text = err.to_string();
        assert!(text.contains("writing chunk `/x/y`"), "{text}");
        assert!(err.is_disk_full());
    }

    #[test]
    fn only_a_full_disk_or_quota_is_disk_full() {
        let io = |kind| StoreError::io("writing chunk", "/x")(io::Error::from(kind));
        assert!(io(io::ErrorKind::QuotaExceeded).is_disk_full());
        assert!(!io(io::ErrorKind::PermissionDenied).is_disk_full());
        assert!(!StoreError::MissingChunk(Hash::of(b"x")).is_disk_full());
    }

    #[test]
    fn shown_escapes_and_truncates() {
        assert_eq!(shown("a\0b"), "a\\0b");
        let long = "x".repeat(10_000);
        let s = shown(&long);
        assert!(s.len() < 200 && s.contains("10000 bytes"), "{s}");
    }
}
