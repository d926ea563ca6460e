//! Manifests: what a blob is made of, and the checks that make a manifest
//! from the network safe to act on.
//!
//! A manifest is stored as a chunk like any other, and a blob's hash is the
//! hash of its manifest bytes, so the bytes must be canonical: one format
//! version byte, then postcard, nothing after it. Two kinds exist: a `File`
//! (size plus ordered chunk list) and a `Bundle` (a project folder: sorted
//! relative paths, each naming a `File` blob).
//!
//! Manifests arrive from peers, so [`Manifest::decode`] treats its input as
//! hostile: a size cap before postcard runs, no trailing bytes, then
//! [`Manifest::validate`] — sizes add up, chunk lengths are within the
//! chunker's bounds, and every bundle path stays inside the folder it will be
//! exported to. [`Manifest::encode`] validates too, so this node never stores
//! a manifest it would refuse from a peer.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::error::shown;
use crate::hash::Hash;

/// First byte of every manifest. Bump it (and keep a decoder for the old
/// one) when the encoding changes: stored blobs outlive releases.
pub const FORMAT_VERSION: u8 = 1;
/// Largest manifest accepted, in bytes (about 450,000 chunks: ~450 GiB).
pub const MAX_MANIFEST_BYTES: usize = 16 << 20;
/// Most chunks in a file, or entries in a bundle.
pub const MAX_ITEMS: usize = 1_000_000;
/// FastCDC bounds for data chunks.
pub const MIN_CHUNK_LEN: u32 = 256 << 10;
pub const AVG_CHUNK_LEN: u32 = 1 << 20;
pub const MAX_CHUNK_LEN: u32 = 4 << 20;
/// Longest bundle path, and longest component of one, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
pub const MAX_COMPONENT_BYTES: usize = 255;

/// One chunk of a file, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub hash: Hash,
    pub len: u32,
}

/// One file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEntry {
    /// Relative, `/`-separated, checked by [`check_path`].
    pub path: String,
    /// A `File` blob.
    pub blob: Hash,
    pub size: u64,
    pub executable: bool,
}

/// What a blob is made of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Manifest {
    /// One file's content. A 0-byte file has no chunks.
    File { size: u64, chunks: Vec<ChunkRef> },
    /// A folder (or a single scene file), entries sorted by path.
    Bundle { entries: Vec<BundleEntry> },
}

/// Why manifest bytes were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {0} bytes, over the limit of {MAX_MANIFEST_BYTES}")]
    TooBig(usize),
    #[error("manifest is empty")]
    Empty,
    #[error(
        "manifest format version {0} is unknown (this node reads {FORMAT_VERSION}): upgrade renderswarm"
    )]
    Version(u8),
    #[error("manifest does not decode: {0}")]
    Decode(String),
    #[error("manifest has {0} stray bytes after its end")]
    Trailing(usize),
    #[error("manifest is not in its canonical encoding (an overlong number)")]
    NotCanonical,
    #[error("manifest lists {0} chunks or entries, over the limit of {MAX_ITEMS}")]
    TooManyItems(usize),
    #[error("chunk #{index} ({hash}) is {len} bytes; chunks must be 1..={MAX_CHUNK_LEN} bytes")]
    BadChunkLen { index: usize, hash: Hash, len: u32 },
    #[error("chunk lengths add up to {sum} bytes but the manifest says the file is {size}")]
    SizeMismatch { sum: u64, size: u64 },
    #[error("bundle path `{path}` is unsafe: {reason}")]
    UnsafePath { path: String, reason: &'static str },
    #[error("bundle path `{0}` appears twice")]
    Duplicate(String),
    #[error("bundle paths are not sorted: `{prev}` is listed before `{next}`")]
    Unsorted { prev: String, next: String },
    #[error("bundle path `{0}` is a file and also a folder of another entry")]
    FileIsFolder(String),
    #[error("bundle sizes add up to more than 2^64 bytes")]
    SizeOverflow,
    #[error("chunk {hash} is {actual} bytes but the manifest lists it as {listed}")]
    ChunkLen {
        hash: Hash,
        listed: u32,
        actual: usize,
    },
    #[error("bundle entry `{path}` names blob {blob}, which is not a file of {size} bytes")]
    BadEntry { path: String, blob: Hash, size: u64 },
}

impl Manifest {
    /// The canonical bytes: version byte, then postcard. Refuses (and so
    /// never stores) a manifest that [`Manifest::decode`] would refuse.
    pub fn encode(&self) -> Result<Vec<u8>, ManifestError> {
        self.validate()?;
        let out = postcard::to_extend(self, vec![FORMAT_VERSION])
            .map_err(|e| ManifestError::Decode(e.to_string()))?;
        if out.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooBig(out.len()));
        }
        Ok(out)
    }

    /// Decodes and validates untrusted manifest bytes.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooBig(bytes.len()));
        }
        let (&version, body) = bytes.split_first().ok_or(ManifestError::Empty)?;
        if version != FORMAT_VERSION {
            return Err(ManifestError::Version(version));
        }
        let (manifest, rest) = postcard::take_from_bytes::<Manifest>(body)
            .map_err(|e| ManifestError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(ManifestError::Trailing(rest.len()));
        }
        manifest.validate()?;
        // postcard reads an overlong varint (`80 00` for 0) as the number it
        // spells, so one manifest has many byte strings, each a different
        // blob hash: only the one [`Manifest::encode`] writes is accepted.
        let canonical = postcard::to_extend(&manifest, vec![FORMAT_VERSION])
            .map_err(|e| ManifestError::Decode(e.to_string()))?;
        if canonical != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(manifest)
    }

    /// Checks every invariant listed in the module doc.
    pub fn validate(&self) -> Result<(), ManifestError> {
        match self {
            Manifest::File { size, chunks } => validate_file(*size, chunks),
            Manifest::Bundle { entries } => validate_bundle(entries).map(|_| ()),
        }
    }

    /// Bytes of content: the file size, or the sum of a bundle's entries.
    pub fn content_size(&self) -> u64 {
        match self {
            Manifest::File { size, .. } => *size,
            Manifest::Bundle { entries } => entries
                .iter()
                .fold(0u64, |acc, e| acc.saturating_add(e.size)),
        }
    }
}

fn validate_file(size: u64, chunks: &[ChunkRef]) -> Result<(), ManifestError> {
    if chunks.len() > MAX_ITEMS {
        return Err(ManifestError::TooManyItems(chunks.len()));
    }
    let mut sum = 0u64;
    for (index, c) in chunks.iter().enumerate() {
        if c.len == 0 || c.len > MAX_CHUNK_LEN {
            return Err(ManifestError::BadChunkLen {
                index,
                hash: c.hash,
                len: c.len,
            });
        }
        sum += u64::from(c.len); // at most 1e6 * 4 MiB: cannot overflow
    }
    if sum != size {
        return Err(ManifestError::SizeMismatch { sum, size });
    }
    Ok(())
}

/// Validates a bundle's entries; returns their total size.
fn validate_bundle(entries: &[BundleEntry]) -> Result<u64, ManifestError> {
    if entries.len() > MAX_ITEMS {
        return Err(ManifestError::TooManyItems(entries.len()));
    }
    let mut total = 0u64;
    let mut prev: Option<&str> = None;
    for e in entries {
        check_path(&e.path)?;
        if let Some(p) = prev {
            match p.cmp(e.path.as_str()) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Err(ManifestError::Duplicate(shown(&e.path))),
                std::cmp::Ordering::Greater => {
                    return Err(ManifestError::Unsorted {
                        prev: shown(p),
                        next: shown(&e.path),
                    });
                }
            }
        }
        prev = Some(&e.path);
        total = total
            .checked_add(e.size)
            .ok_or(ManifestError::SizeOverflow)?;
    }
    // A path may not also be a folder on the way to another path ("a" and "a/b").
    let files: HashSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    for e in entries {
        for (i, _) in e.path.match_indices('/') {
            let folder = e.path.get(..i).unwrap_or_default();
            if files.contains(folder) {
                return Err(ManifestError::FileIsFolder(shown(folder)));
            }
        }
    }
    Ok(total)
}

/// Checks that `path` is a safe relative bundle path: it can only name a
/// file inside the folder the bundle is exported to, on any OS.
pub fn check_path(path: &str) -> Result<(), ManifestError> {
    let unsafe_path = |reason| {
        Err(ManifestError::UnsafePath {
            path: shown(path),
            reason,
        })
    };
    if path.is_empty() {
        return unsafe_path("it is empty");
    }
    if path.len() > MAX_PATH_BYTES {
        return unsafe_path("it is longer than 4096 bytes");
    }
    if path.contains('\0') {
        return unsafe_path("it contains a NUL byte");
    }
    if path.contains('\\') {
        return unsafe_path("it contains a backslash (bundle paths separate folders with `/`)");
    }
    if path.starts_with('/') {
        return unsafe_path("it is absolute (bundle paths are relative to the bundle folder)");
    }
    let b = path.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return unsafe_path("it starts with a drive prefix");
    }
    for component in path.split('/') {
        match component {
            "" => return unsafe_path("it has an empty component (`//` or a trailing `/`)"),
            "." => return unsafe_path("it has a `.` component"),
            ".." => {
                return unsafe_path("it has a `..` component, which would leave the bundle folder");
            }
            c if c.len() > MAX_COMPONENT_BYTES => {
                return unsafe_path("a component is longer than 255 bytes");
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> BundleEntry {
        BundleEntry {
            path: path.to_string(),
            blob: Hash::of(path.as_bytes()),
            size: 1,
            executable: false,
        }
    }

    /// Encodes without validating, as a hostile peer would.
    fn raw(m: &Manifest) -> Vec<u8> {
        postcard::to_extend(m, vec![FORMAT_VERSION]).unwrap()
    }

    fn decode_bundle(paths: &[&str]) -> Result<Manifest, ManifestError> {
        let m = Manifest::Bundle {
            entries: paths.iter().map(|p| entry(p)).collect(),
        };
        Manifest::decode(&raw(&m))
    }

    #[test]
    fn round_trip_and_version_byte() {
        let m = Manifest::File {
            size: 5,
            chunks: vec![ChunkRef {
                hash: Hash::of(b"hello"),
                len: 5,
            }],
        };
        let bytes = m.encode().unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        let b = Manifest::Bundle {
            entries: vec![entry("a/b.png"), entry("scene.blend")],
        };
        assert_eq!(Manifest::decode(&b.encode().unwrap()).unwrap(), b);
    }

    #[test]
    fn framing_is_checked() {
        let bytes = Manifest::File {
            size: 0,
            chunks: vec![],
        }
        .encode()
        .unwrap();
        assert_eq!(Manifest::decode(&[]), Err(ManifestError::Empty));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(Manifest::decode(&v2), Err(ManifestError::Version(2)));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(Manifest::decode(&trailing), Err(ManifestError::Trailing(1)));
        assert!(matches!(
            Manifest::decode(&[FORMAT_VERSION, 7]),
            Err(ManifestError::Decode(_))
        ));
        let huge = vec![FORMAT_VERSION; MAX_MANIFEST_BYTES + 1];
        assert_eq!(
            Manifest::decode(&huge),
            Err(ManifestError::TooBig(MAX_MANIFEST_BYTES + 1))
        );
    }

    #[test]
    fn huge_declared_length_does_not_allocate_or_panic() {
        // Variant 0 (File), size 0, then a chunk count of u32::MAX as a varint.
        let bytes = [FORMAT_VERSION, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(
            Manifest::decode(&bytes),
            Err(ManifestError::Decode(_))
        ));
    }

    #[test]
    fn file_sizes_must_add_up() {
        let c = |len| ChunkRef {
            hash: Hash::of(b"x"),
            len,
        };
        let bad_sum = Manifest::File {
            size: 10,
            chunks: vec![c(4), c(5)],
        };
        assert_eq!(
            Manifest::decode(&raw(&bad_sum)),
            Err(ManifestError::SizeMismatch { sum: 9, size: 10 })
        );
        let zero = Manifest::File {
            size: 0,
            chunks: vec![c(0)],
        };
        assert!(matches!(
            Manifest::decode(&raw(&zero)),
            Err(ManifestError::BadChunkLen { index: 0, .. })
        ));
        let over = Manifest::File {
            size: u64::from(MAX_CHUNK_LEN) + 1,
            chunks: vec![c(MAX_CHUNK_LEN + 1)],
        };
        assert!(matches!(
            Manifest::decode(&raw(&over)),
            Err(ManifestError::BadChunkLen { .. })
        ));
        let max = Manifest::File {
            size: u64::from(MAX_CHUNK_LEN),
            chunks: vec![c(MAX_CHUNK_LEN)],
        };
        assert!(Manifest::decode(&raw(&max)).is_ok());
        assert!(max.encode().is_ok());
        assert!(
            bad_sum.encode().is_err(),
            "encode must refuse what decode refuses"
        );
    }

    #[test]
    fn unsafe_paths_are_rejected() {
        let long_name = "n".repeat(10_000);
        let long_path = vec!["d"; 3000].join("/");
        let cases: &[(&str, &str)] = &[
            ("../x", "`..`"),
            ("a/../../x", "`..`"),
            ("/etc/passwd", "absolute"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("a/./b", "`.` component"),
            ("./a", "`.` component"),
            ("a\\b", "backslash"),
            ("..\\x", "backslash"),
            ("a\0b", "NUL"),
            ("C:/Windows/x", "drive prefix"),
            ("c:x", "drive prefix"),
            ("", "empty"),
            (&long_name, "longer than 4096"),
            (&long_path, "longer than 4096"),
        ];
        for (path, why) in cases {
            match decode_bundle(&[path]) {
                Err(ManifestError::UnsafePath {
                    reason,
                    path: shown_path,
                }) => {
                    assert!(
                        reason.contains(why),
                        "{path:?}: reason {reason:?} lacks {why:?}"
                    );
                    assert!(shown_path.len() < 300, "error text must stay short");
                }
                other => panic!("{path:?} was not rejected as unsafe: {other:?}"),
            }
        }
        let component = format!("a/{}", "n".repeat(256));
        assert!(matches!(
            decode_bundle(&[&component]),
            Err(ManifestError::UnsafePath { .. })
        ));
        let ok_component = format!("a/{}", "n".repeat(255));
        assert!(decode_bundle(&[&ok_component]).is_ok());
    }

    #[test]
    fn duplicates_order_and_file_folder_clashes_are_rejected() {
        assert_eq!(
            decode_bundle(&["a", "a"]),
            Err(ManifestError::Duplicate("a".into()))
        );
        assert!(matches!(
            decode_bundle(&["b", "a"]),
            Err(ManifestError::Unsorted { .. })
        ));
        assert_eq!(
            decode_bundle(&["a", "a-x", "a/b"]),
            Err(ManifestError::FileIsFolder("a".into()))
        );
        assert!(decode_bundle(&["a-x", "a/b", "a/c/d", "ü/ñ.png"]).is_ok());
    }

    /// Found by the `manifest` fuzz target: a bundle whose entry count was
    /// written `81 00` (1, in two bytes) decoded, and re-encoded to other
    /// bytes, so one manifest had two blob hashes.
    #[test]
    fn a_manifest_with_an_overlong_varint_is_refused() {
        let found = hex::decode(
            "010103810063659281df74657c6e7473a06cff097f413c918132627def6edbe3\
             bff9f5c801010000017406f9f5c80100aee3bff9f5c801010000000000000432\
             7def6edbe3bff9f5c8010000017c6e652e6cf9f5c80100aee3f5c80101000000\
             00000004327def6edbe3bff9f5c80100",
        )
        .expect("hex");
        assert_eq!(Manifest::decode(&found), Err(ManifestError::NotCanonical));
        // The smallest case: an empty file whose size 0 is written `80 00`.
        assert_eq!(
            Manifest::decode(&[FORMAT_VERSION, 0, 0x80, 0x00, 0]),
            Err(ManifestError::NotCanonical)
        );
        assert_eq!(
            Manifest::decode(&[FORMAT_VERSION, 0, 0, 0]),
            Ok(Manifest::File {
                size: 0,
                chunks: vec![]
            })
        );
    }

    #[test]
    fn safe_unusual_paths_are_accepted() {
        for p in [
            "scene.blend",
            ".hidden",
            "..dots",
            "render:01.png",
            "tex/ü ñ 日本.png",
            "a/.b/c",
        ] {
            assert_eq!(check_path(p), Ok(()), "{p:?}");
        }
    }
}
