//! Unpacking a bundle while it is fetched: one store imports a project,
//! another receives its manifests and chunks the way a fetch does, and the
//! folder written on the way must equal the project.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::tests::{KIB, MIB, flip_byte, random_bytes, write_files};
use super::*;

/// A project whose files share chunks: `copy.bin` is `big.bin` again, and
/// `big.bin` holds one stretch twice, so chunks have several places.
fn project(root: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let stretch = random_bytes("stretch", 3 * MIB);
    let mut big = stretch.clone();
    big.extend(random_bytes("middle", 2 * MIB));
    big.extend(&stretch);
    let files = vec![
        ("big.bin", big.clone()),
        ("copy.bin", big),
        ("empty.txt", Vec::new()),
        ("run.sh", b"#!/bin/sh\necho hi\n".to_vec()),
        ("tex/small.png", random_bytes("small", 10 * KIB)),
    ];
    write_files(root, &files);
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    files
}

/// The bundle's manifests, then its data chunks, as a fetch would ask.
fn manifests_and_chunks(store: &Store, bundle: Hash) -> (Vec<Hash>, Vec<Hash>) {
    let Manifest::Bundle { entries } = store.manifest(bundle).unwrap() else {
        panic!("not a bundle")
    };
    let mut manifests = vec![bundle];
    let mut chunks = Vec::new();
    for e in entries {
        manifests.push(e.blob);
        let Manifest::File { chunks: list, .. } = store.manifest(e.blob).unwrap() else {
            panic!("not a file")
        };
        for c in list {
            if !chunks.contains(&c.hash) {
                chunks.push(c.hash);
            }
        }
    }
    (manifests, chunks)
}

fn copy_chunk(from: &Store, to: &Store, hash: Hash) -> Vec<u8> {
    let bytes = from.read_chunk(hash).unwrap();
    to.write_chunk(hash, &bytes).unwrap();
    bytes
}

struct Setup {
    _dir: tempfile::TempDir,
    source: Store,
    here: Store,
    bundle: Hash,
    files: Vec<(&'static str, Vec<u8>)>,
    out: std::path::PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(&dir.path().join("source")).unwrap();
    let here = Store::open(&dir.path().join("here")).unwrap();
    let files = project(&dir.path().join("project"));
    let bundle = source.import_bundle(&dir.path().join("project")).unwrap();
    let out = dir.path().join("out");
    Setup {
        _dir: dir,
        source,
        here,
        bundle,
        files,
        out,
    }
}

#[test]
fn a_bundle_unpacked_as_its_chunks_arrive_equals_the_project() {
    let s = setup();
    let (manifests, chunks) = manifests_and_chunks(&s.source, s.bundle);
    assert!(chunks.len() >= 4, "the project spans several chunks");
    for m in manifests {
        copy_chunk(&s.source, &s.here, m);
    }
    // Every other chunk the store already had; the rest arrive and are placed.
    let (had, arrive): (Vec<_>, Vec<_>) = chunks.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    for (_, h) in had {
        copy_chunk(&s.source, &s.here, *h);
    }
    let u = s.here.begin_unpacking(s.bundle, &s.out).unwrap();
    for (_, h) in arrive {
        let bytes = copy_chunk(&s.source, &s.here, *h);
        u.place(*h, &bytes);
        u.place(*h, b"a second arrival of a placed chunk is ignored");
    }
    u.place(Hash::of(b"no chunk of this bundle"), b"ignored");
    u.finish(&s.here).unwrap();
    for (rel, data) in &s.files {
        assert!(fs::read(s.out.join(rel)).unwrap() == *data, "{rel} differs");
    }
    let mode = fs::metadata(s.out.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "run.sh stays executable");
    let mode = fs::metadata(s.out.join("big.bin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0, "big.bin is not executable");
}

#[test]
fn unpacking_waits_for_every_manifest() {
    let s = setup();
    let (manifests, _) = manifests_and_chunks(&s.source, s.bundle);
    let err = s.here.begin_unpacking(s.bundle, &s.out).unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound(h) if h == s.bundle),
        "{err}"
    );
    copy_chunk(&s.source, &s.here, manifests[0]);
    let err = s.here.begin_unpacking(s.bundle, &s.out).unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound(h) if manifests[1..].contains(&h)),
        "{err}"
    );
    assert!(
        !s.out.exists(),
        "nothing is written before the layout is known"
    );
    // A file blob is no bundle.
    let err = s.here.begin_unpacking(manifests[1], &s.out).unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound(_) | StoreError::NotABundle(_)),
        "{err}"
    );
}

#[test]
fn a_chunk_of_the_wrong_length_or_a_corrupt_one_fails_the_unpacking() {
    let s = setup();
    let (manifests, chunks) = manifests_and_chunks(&s.source, s.bundle);
    for m in &manifests {
        copy_chunk(&s.source, &s.here, *m);
    }
    let u = s.here.begin_unpacking(s.bundle, &s.out).unwrap();
    u.place(chunks[0], b"short");
    let err = u.finish(&s.here).unwrap_err();
    assert!(err.to_string().contains("bytes"), "{err}");

    // A chunk the store had, gone bad on disk: its verified read fails.
    fs::remove_dir_all(&s.out).unwrap();
    for h in &chunks {
        copy_chunk(&s.source, &s.here, *h);
    }
    flip_byte(&s.here.chunk_path(chunks[1]), 0);
    let u = s.here.begin_unpacking(s.bundle, &s.out).unwrap();
    let err = u.finish(&s.here).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}
