//! Bundle tests: a project folder in and out again, and every way a
//! folder on disk or a manifest from a peer can try to put a file where it
//! does not belong. Unix only: they build symlinks and odd file names.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use super::manifest::FORMAT_VERSION;
use super::tests::{KIB, MIB, random_bytes, write_files};
use super::*;

/// A project folder with nested folders, an empty file, unicode names,
/// an executable, a symlinked file and a symlinked folder.
fn project(root: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let files: Vec<(&'static str, Vec<u8>)> = vec![
        ("empty.txt", Vec::new()),
        ("render.sh", b"#!/bin/sh\necho hi\n".to_vec()),
        ("scene.blend", random_bytes("scene", 300 * KIB)),
        ("tex/deep/er/normal.exr", random_bytes("normal", 5 * MIB)),
        ("tex/ünïcødé 日本.png", random_bytes("unicode", 10 * KIB)),
    ];
    write_files(root, &files);
    fs::set_permissions(root.join("render.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink(root.join("scene.blend"), root.join("linked.blend")).unwrap();
    symlink(root.join("tex"), root.join("tex-link")).unwrap();
    files
}

#[test]
fn bundle_round_trip_keeps_paths_and_follows_file_links() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let src = dir.path().join("project");
    let files = project(&src);
    let bundle = store.import_bundle(&src).unwrap();
    let Manifest::Bundle { entries } = store.manifest(bundle).unwrap() else {
        panic!("not a bundle")
    };
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "empty.txt",
            "linked.blend",
            "render.sh",
            "scene.blend",
            "tex/deep/er/normal.exr",
            "tex/ünïcødé 日本.png"
        ],
        "sorted relative paths; the symlinked folder is not followed"
    );
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.executable)
            .map(|e| e.path.as_str())
            .collect::<Vec<_>>(),
        ["render.sh"]
    );
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum::<u64>() + 300 * KIB as u64;
    assert_eq!(store.blob_size(bundle).unwrap(), total);

    let out = dir.path().join("out");
    store.export_bundle(bundle, &out).unwrap();
    for (rel, data) in &files {
        assert!(fs::read(out.join(rel)).unwrap() == *data, "{rel} differs");
    }
    let linked = fs::symlink_metadata(out.join("linked.blend")).unwrap();
    assert!(
        linked.is_file(),
        "a symlinked file is exported as a regular file"
    );
    assert!(fs::read(out.join("linked.blend")).unwrap() == files[2].1);
    assert!(!out.join("tex-link").exists());
    assert_ne!(
        fs::metadata(out.join("render.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111,
        0
    );
    assert_eq!(
        fs::metadata(out.join("scene.blend"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111,
        0
    );
    // Exporting again over the first export is fine.
    store.export_bundle(bundle, &out).unwrap();
}

#[test]
fn a_single_file_is_a_bundle_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let scene = dir.path().join("shot 010.blend");
    fs::write(&scene, b"BLENDER").unwrap();
    let bundle = store.import_bundle(&scene).unwrap();
    let Manifest::Bundle { entries } = store.manifest(bundle).unwrap() else {
        panic!("not a bundle")
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].path.as_str(), entries[0].size),
        ("shot 010.blend", 7)
    );
    assert!(matches!(
        store.export_file(bundle, &dir.path().join("x")),
        Err(StoreError::NotAFile(_))
    ));
    store
        .export_bundle(bundle, &dir.path().join("out"))
        .unwrap();
    assert_eq!(
        fs::read(dir.path().join("out/shot 010.blend")).unwrap(),
        b"BLENDER"
    );
}

#[test]
fn unimportable_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let src = dir.path().join("project");
    fs::create_dir_all(&src).unwrap();
    symlink(src.join("gone.png"), src.join("broken.png")).unwrap();
    let err = store.import_bundle(&src).unwrap_err();
    assert!(err.to_string().contains("broken.png"), "{err}");
    fs::remove_file(src.join("broken.png")).unwrap();

    fs::write(src.join("back\\slash.png"), b"x").unwrap();
    let err = store.import_bundle(&src).unwrap_err();
    assert!(
        matches!(err, StoreError::UnsafePath { .. }) && err.to_string().contains("back\\slash.png"),
        "{err}"
    );
    fs::remove_file(src.join("back\\slash.png")).unwrap();

    use std::os::unix::ffi::OsStrExt;
    fs::write(src.join(std::ffi::OsStr::from_bytes(b"bad\xff.png")), b"x").unwrap();
    let err = store.import_bundle(&src).unwrap_err();
    assert!(err.to_string().contains("not valid UTF-8"), "{err}");
}

#[test]
fn export_never_writes_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let src = dir.path().join("project");
    fs::create_dir_all(src.join("tex")).unwrap();
    fs::write(src.join("tex/a.png"), b"texture").unwrap();
    fs::write(src.join("z.blend"), b"scene").unwrap();
    let bundle = store.import_bundle(&src).unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();

    let out = dir.path().join("out1");
    fs::create_dir_all(&out).unwrap();
    symlink(&outside, out.join("tex")).unwrap();
    let err = store.export_bundle(bundle, &out).unwrap_err();
    assert!(
        matches!(&err, StoreError::Blocked { path, .. } if *path == out.join("tex")),
        "{err}"
    );

    let out = dir.path().join("out2");
    fs::create_dir_all(&out).unwrap();
    symlink(outside.join("z.blend"), out.join("z.blend")).unwrap();
    let err = store.export_bundle(bundle, &out).unwrap_err();
    assert!(
        matches!(&err, StoreError::Blocked { path, .. } if *path == out.join("z.blend")),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside"
    );
}

#[test]
fn a_hostile_bundle_from_a_peer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let file = store.import_bytes(b"payload").unwrap();
    for path in ["../escaped", "/tmp/escaped", "a/../../escaped"] {
        let m = Manifest::Bundle {
            entries: vec![BundleEntry {
                path: path.into(),
                blob: file,
                size: 7,
                executable: false,
            }],
        };
        let bytes = postcard::to_extend(&m, vec![FORMAT_VERSION]).unwrap();
        let hash = Hash::of(&bytes);
        store.write_chunk(hash, &bytes).unwrap(); // a chunk is a chunk
        let err = store
            .export_bundle(hash, &dir.path().join("out/inner"))
            .unwrap_err();
        assert!(
            matches!(
                &err,
                StoreError::BadManifest {
                    source: ManifestError::UnsafePath { .. },
                    ..
                }
            ),
            "{path}: {err}"
        );
        assert!(matches!(
            store.missing_chunks(hash),
            Err(StoreError::BadManifest { .. })
        ));
    }
    assert!(!dir.path().join("escaped").exists() && !dir.path().join("out/escaped").exists());
}

#[test]
fn an_entry_that_lies_about_its_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let file = store.import_bytes(b"payload").unwrap();
    let m = Manifest::Bundle {
        entries: vec![BundleEntry {
            path: "a".into(),
            blob: file,
            size: 999,
            executable: false,
        }],
    };
    let bytes = m.encode().unwrap();
    let hash = Hash::of(&bytes);
    store.write_chunk(hash, &bytes).unwrap();
    let err = store
        .export_bundle(hash, &dir.path().join("out"))
        .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::BadManifest {
                source: ManifestError::BadEntry { .. },
                ..
            }
        ),
        "{err}"
    );
}
