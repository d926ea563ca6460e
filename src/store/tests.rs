//! Tests of the store as a whole: round trips at the sizes where the chunker
//! changes behaviour, dedup across an edit, corruption, partial blobs and
//! the fetch loop, concurrent imports, write failures, and (ignored by
//! default) throughput. Bundle tests live in `bundle_tests.rs`, gc tests in
//! `gc.rs`.

use std::fs;
use std::path::Path;
use std::time::Instant;

use super::manifest::{MAX_CHUNK_LEN, MIN_CHUNK_LEN};
use super::*;
use crate::hash::Hash;

pub(super) const KIB: usize = 1024;
pub(super) const MIB: usize = 1024 * KIB;

/// Sizes at which the chunker's behaviour changes.
const INTERESTING_SIZES: &[(usize, &str)] = &[
    (0, "empty file: a manifest with no chunks"),
    (1, "one byte: the smallest chunk"),
    (256 * KIB - 1, "just under the minimum chunk: never cut"),
    (256 * KIB, "exactly the minimum chunk: still one chunk"),
    (
        256 * KIB + 1,
        "one byte past the minimum: the first length where a cut could fall",
    ),
    (4 * MIB - 1, "just under the maximum chunk"),
    (
        4 * MIB,
        "exactly the maximum chunk: zeros give one full chunk",
    ),
    (
        4 * MIB + 1,
        "one past the maximum: zeros force a 4 MiB chunk plus a 1-byte tail",
    ),
    (20 * MIB, "many chunks"),
];

/// Flips one bit of byte `at` of the file at `path`: a chunk gone bad on disk.
pub(super) fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 1;
    fs::write(path, bytes).unwrap();
}

/// Writes each `(relative path, bytes)` under `root`, folders created.
pub(super) fn write_files(root: &Path, files: &[(&str, Vec<u8>)]) {
    for (rel, data) in files {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
    }
}

pub(super) use crate::hash::random_bytes;

pub(super) fn file_chunks(store: &Store, blob: Hash) -> (u64, Vec<ChunkRef>) {
    match store.manifest(blob).unwrap() {
        Manifest::File { size, chunks } => (size, chunks),
        other => panic!("expected a file manifest, got {other:?}"),
    }
}

/// Imports `data` three ways, checks the manifest, exports and compares.
fn round_trip(store: &Store, dir: &Path, data: &[u8], what: &str) -> Vec<ChunkRef> {
    let src = dir.join("src.bin");
    fs::write(&src, data).unwrap();
    let blob = store.import_file(&src).unwrap();
    assert_eq!(
        store.import_bytes(data).unwrap(),
        blob,
        "{what}: bytes and file imports differ"
    );
    assert_eq!(
        store.import_reader(data).unwrap(),
        blob,
        "{what}: reader and file imports differ"
    );
    let (size, chunks) = file_chunks(store, blob);
    assert_eq!(size, data.len() as u64, "{what}");
    assert_eq!(
        chunks.iter().map(|c| u64::from(c.len)).sum::<u64>(),
        size,
        "{what}"
    );
    for (i, c) in chunks.iter().enumerate() {
        assert!(c.len <= MAX_CHUNK_LEN, "{what}: chunk {i} too long");
        assert!(
            c.len >= MIN_CHUNK_LEN || i + 1 == chunks.len(),
            "{what}: short chunk {i} not last"
        );
        assert!(store.has_chunk(c.hash), "{what}");
    }
    assert!(store.has_blob(blob), "{what}");
    assert_eq!(store.blob_size(blob).unwrap(), size);
    let dest = dir.join("out.bin");
    store.export_file(blob, &dest).unwrap();
    assert!(
        fs::read(&dest).unwrap() == data,
        "{what}: exported bytes differ"
    );
    assert!(
        store.read_blob(blob, size).unwrap() == data,
        "{what}: read_blob differs"
    );
    chunks
}

#[test]
fn interesting_sizes_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    for &(len, why) in INTERESTING_SIZES {
        let random = random_bytes(&format!("size {len}"), len);
        round_trip(
            &store,
            dir.path(),
            &random,
            &format!("{len} random bytes ({why})"),
        );
        let zeros = vec![0u8; len];
        let chunks = round_trip(
            &store,
            dir.path(),
            &zeros,
            &format!("{len} zero bytes ({why})"),
        );
        // Zeros never trigger a content-defined cut: every chunk is full.
        let expected: Vec<u32> = (0..len.div_ceil(MAX_CHUNK_LEN as usize))
            .map(|i| (len - i * MAX_CHUNK_LEN as usize).min(MAX_CHUNK_LEN as usize) as u32)
            .collect();
        assert_eq!(
            chunks.iter().map(|c| c.len).collect::<Vec<_>>(),
            expected,
            "{len} zeros"
        );
    }
    assert_eq!(
        fs::read_dir(dir.path().join("store/tmp")).unwrap().count(),
        0,
        "temp files left"
    );
}

#[test]
fn read_blob_refuses_more_than_max_len_and_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let blob = store.import_bytes(b"frame log").unwrap();
    assert!(matches!(
        store.read_blob(blob, 3),
        Err(StoreError::TooLarge {
            size: 9,
            limit: 3,
            ..
        })
    ));
    assert!(
        matches!(store.export_bundle(blob, dir.path()), Err(StoreError::NotABundle(b)) if b == blob)
    );
    let absent = Hash::of(b"never imported");
    let err = store.read_blob(absent, 10).unwrap_err();
    assert!(matches!(err, StoreError::NotFound(b) if b == absent));
    assert!(err.to_string().contains(&absent.to_hex()), "{err}");
}

#[test]
fn an_edit_in_the_middle_keeps_most_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let original = random_bytes("dedup original", 64 * MIB);
    let mut edited = original[..32 * MIB].to_vec();
    edited.extend_from_slice(&random_bytes("dedup insert", MIB));
    edited.extend_from_slice(&original[32 * MIB..]);
    let (_, a) = file_chunks(&store, store.import_bytes(&original).unwrap());
    let (_, b) = file_chunks(&store, store.import_bytes(&edited).unwrap());
    let in_b: std::collections::HashSet<Hash> = b.iter().map(|c| c.hash).collect();
    let shared: u64 = a
        .iter()
        .filter(|c| in_b.contains(&c.hash))
        .map(|c| u64::from(c.len))
        .sum();
    let fraction = shared as f64 / original.len() as f64;
    println!(
        "dedup: {:.1}% of the 64 MiB original shared after a 1 MiB insert ({} and {} chunks)",
        fraction * 100.0,
        a.len(),
        b.len()
    );
    assert!(fraction >= 0.90, "only {:.1}% shared", fraction * 100.0);
}

#[test]
fn corrupt_chunk_fails_export_and_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let data = random_bytes("corrupt", 6 * MIB);
    let blob = store.import_bytes(&data).unwrap();
    let (_, chunks) = file_chunks(&store, blob);
    assert!(chunks.len() >= 2);
    let victim = chunks[1];
    let path = store.chunk_path(victim.hash);
    flip_byte(&path, 17);

    let dest = dir.path().join("out.bin");
    match store.export_file(blob, &dest) {
        Err(StoreError::Corrupt { hash, path: p }) => assert_eq!((hash, p), (victim.hash, path)),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(
        !dest.exists(),
        "a failed export must leave nothing at the destination"
    );
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temp file left next to the destination"
    );
    assert_eq!(
        store.missing_chunks(blob).unwrap(),
        Missing::Chunks(vec![victim.hash])
    );
    assert!(!store.has_blob(blob));

    let start: usize = chunks[0].len as usize;
    store
        .write_chunk(victim.hash, &data[start..start + victim.len as usize])
        .unwrap();
    assert!(store.has_blob(blob));
    store.export_file(blob, &dest).unwrap();
    assert!(fs::read(&dest).unwrap() == data);
}

#[test]
fn chunks_are_appended_to_a_reply_verified() {
    // How a source serves: each chunk read straight into the reply after
    // what is already there; a corrupt one leaves the reply as it was.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let data = random_bytes("append", 6 * MIB);
    let blob = store.import_bytes(&data).unwrap();
    let (_, chunks) = file_chunks(&store, blob);
    let (first, second) = (chunks[0], chunks[1]);
    let len = |c: ChunkRef| store.chunk_len(c.hash).unwrap() as usize;
    assert_eq!(len(first), first.len as usize);

    let mut reply = b"header".to_vec();
    store
        .append_chunk(first.hash, &mut reply, len(first))
        .unwrap();
    assert!(reply[6..] == data[..first.len as usize]);

    let path = store.chunk_path(second.hash);
    flip_byte(&path, 3);
    let before = reply.clone();
    match store.append_chunk(second.hash, &mut reply, len(second)) {
        Err(StoreError::Corrupt { hash, .. }) => assert_eq!(hash, second.hash),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(reply == before, "a corrupt chunk must not reach the reply");
    assert!(
        !path.exists(),
        "a corrupt chunk is removed to be fetched again"
    );
    assert!(store.chunk_len(second.hash).is_none());
    assert!(matches!(
        store.append_chunk(second.hash, &mut reply, 10),
        Err(StoreError::MissingChunk(h)) if h == second.hash
    ));
    // A length that is not the file's: not served as asked.
    assert!(
        store
            .append_chunk(first.hash, &mut reply, len(first) + 1)
            .is_err()
    );
    assert!(reply == before);
}

/// Copies what `to` lacks of `blob` from `from`, round by round, as the
/// fetcher does. Returns the number of rounds.
fn fetch(from: &Store, to: &Store, blob: Hash) -> usize {
    for round in 0..5 {
        let wanted = match to.missing_chunks(blob).unwrap() {
            Missing::Nothing => return round,
            Missing::Manifest(h) => vec![h],
            Missing::Chunks(hs) => hs,
        };
        for h in wanted {
            to.write_chunk(h, &from.read_chunk(h).unwrap()).unwrap();
        }
    }
    panic!("fetch did not converge");
}

#[test]
fn missing_chunks_of_a_partly_present_blob() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(&dir.path().join("a")).unwrap();
    let b = Store::open(&dir.path().join("b")).unwrap();
    let data = random_bytes("partial", 9 * MIB);
    let blob = a.import_bytes(&data).unwrap();
    let (_, chunks) = file_chunks(&a, blob);
    assert_eq!(b.missing_chunks(blob).unwrap(), Missing::Manifest(blob));
    b.write_chunk(blob, &a.read_chunk(blob).unwrap()).unwrap();
    b.write_chunk(chunks[1].hash, &a.read_chunk(chunks[1].hash).unwrap())
        .unwrap();
    let expected: Vec<Hash> = chunks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, c)| c.hash)
        .collect();
    assert_eq!(b.missing_chunks(blob).unwrap(), Missing::Chunks(expected));
    assert_eq!(fetch(&a, &b, blob), 1);
    assert!(b.has_blob(blob));
    assert!(b.read_blob(blob, u64::MAX).unwrap() == data);

    // A file repeating one chunk lists it once.
    let zeros = a.import_bytes(&vec![0u8; 12 * MIB]).unwrap();
    b.write_chunk(zeros, &a.read_chunk(zeros).unwrap()).unwrap();
    let Missing::Chunks(list) = b.missing_chunks(zeros).unwrap() else {
        panic!("chunks expected")
    };
    assert_eq!(list.len(), 1);
}

#[test]
fn a_bundle_is_fetched_in_three_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(&dir.path().join("a")).unwrap();
    let b = Store::open(&dir.path().join("b")).unwrap();
    let src = dir.path().join("project");
    fs::create_dir_all(src.join("tex")).unwrap();
    fs::write(src.join("scene.blend"), random_bytes("scene", 3 * MIB)).unwrap();
    fs::write(src.join("tex/a.png"), random_bytes("tex", 100 * KIB)).unwrap();
    fs::write(src.join("tex/copy.png"), random_bytes("tex", 100 * KIB)).unwrap();
    let bundle = a.import_bundle(&src).unwrap();
    // Manifest, then the entries' manifests, then their data chunks.
    assert_eq!(fetch(&a, &b, bundle), 3);
    assert!(b.has_blob(bundle));
    assert_eq!(b.blob_size(bundle).unwrap(), (3 * MIB + 200 * KIB) as u64);
}

#[test]
fn concurrent_imports_of_the_same_content() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = random_bytes("shared", 10 * MIB);
    let blobs: Vec<Hash> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| store.import_bytes(&data).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(blobs.windows(2).all(|w| w[0] == w[1]));
    assert!(store.read_blob(blobs[0], u64::MAX).unwrap() == data);
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn one_store_per_folder_and_leftover_temp_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(matches!(Store::open(dir.path()), Err(StoreError::InUse(_))));
    drop(store);
    fs::write(dir.path().join("tmp/7-deadbeef"), b"half a chunk").unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert_eq!(store.root(), dir.path());
}

/// Runs `efbig_child` in a child process whose file size limit makes every
/// write past 64 KiB fail, as a full disk would.
#[cfg(unix)]
#[test]
fn write_failure_leaves_no_partial_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            &format!("{module}::efbig_child"),
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("STORE_EFBIG_DIR", dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("efbig child checked"),
        "{text}"
    );
}

#[cfg(unix)]
#[test]
#[ignore = "run in a child process by write_failure_leaves_no_partial_chunk"]
fn efbig_child() {
    let Some(dir) = std::env::var_os("STORE_EFBIG_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    let store = Store::open(&dir.join("store")).unwrap();
    let big = store
        .import_bytes(&random_bytes("before the limit", 300 * KIB))
        .unwrap();
    // SAFETY: plain libc calls on this (child) process; no memory is shared.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = 64 * 1024;
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let usage = store.usage().unwrap();
    let data = random_bytes("past the limit", 5 * MIB);
    match store.import_bytes(&data) {
        Err(StoreError::Io { path, source, .. }) => {
            assert!(
                path.starts_with(dir.join("store/tmp")),
                "{}",
                path.display()
            );
            assert_eq!(source.raw_os_error(), Some(libc::EFBIG));
        }
        other => panic!("expected an Io error, got {other:?}"),
    }
    let chunk = random_bytes("peer chunk", 200 * KIB);
    assert!(matches!(
        store.write_chunk(Hash::of(&chunk), &chunk),
        Err(StoreError::Io { .. })
    ));
    let dest = dir.join("out.bin");
    match store.export_file(big, &dest) {
        Err(StoreError::Io { path, .. }) => assert!(path.starts_with(dir), "{}", path.display()),
        other => panic!("expected an Io error, got {other:?}"),
    }
    assert!(!dest.exists());
    assert_eq!(
        store.usage().unwrap(),
        usage,
        "a partial chunk reached blobs/"
    );
    assert_eq!(
        fs::read_dir(dir.join("store/tmp")).unwrap().count(),
        0,
        "temp files left in tmp/"
    );
    assert_eq!(
        fs::read_dir(dir).unwrap().count(),
        1,
        "temp file left next to the export"
    );
    println!("efbig child checked");
}

fn mb_per_s(bytes: usize, since: Instant) -> f64 {
    bytes as f64 / 1e6 / since.elapsed().as_secs_f64()
}

/// `cargo test --release -- --ignored throughput --nocapture`
#[test]
#[ignore = "slow: run in --release by hand"]
fn throughput_512_mib() {
    let dir =
        tempfile::tempdir_in(std::env::var_os("STORE_BENCH_DIR").unwrap_or_else(|| ".".into()))
            .unwrap();
    let len = 512 * MIB;
    let src = dir.path().join("src.bin");
    fs::write(&src, random_bytes("throughput", len)).unwrap();
    let a = Store::open(&dir.path().join("a")).unwrap();
    let t = Instant::now();
    let blob = a.import_file(&src).unwrap();
    println!("import_file 512 MiB: {:.0} MB/s", mb_per_s(len, t));
    let t = Instant::now();
    assert_eq!(a.import_file(&src).unwrap(), blob);
    println!(
        "re-import (all chunks present): {:.0} MB/s",
        mb_per_s(len, t)
    );
    let t = Instant::now();
    a.export_file(blob, &dir.path().join("out.bin")).unwrap();
    println!("export_file 512 MiB: {:.0} MB/s", mb_per_s(len, t));
    let (_, chunks) = file_chunks(&a, blob);
    let b = Store::open(&dir.path().join("b")).unwrap();
    let t = Instant::now();
    std::thread::scope(|s| {
        for part in chunks.chunks(chunks.len().div_ceil(4)) {
            let (a, b) = (&a, &b);
            s.spawn(move || {
                for c in part {
                    b.write_chunk(c.hash, &a.read_chunk(c.hash).unwrap())
                        .unwrap();
                }
            });
        }
    });
    println!(
        "read_chunk -> write_chunk, 4 threads: {:.0} MB/s",
        mb_per_s(len, t)
    );
}
