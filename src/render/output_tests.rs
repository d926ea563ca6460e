//! Tests of the output checks on real files in a temp directory.

use super::*;

/// A valid `w` x `h` RGB PNG.
pub(crate) fn png_bytes(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    let mut writer = enc.write_header().unwrap();
    let data: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
    writer.write_image_data(&data).unwrap();
    writer.finish().unwrap();
    out
}

fn dir_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    dir
}

#[test]
fn frame_names_follow_blenders_padding() {
    assert_eq!(frame_of("frame_0001.png"), Some(1));
    assert_eq!(frame_of("frame_0000.exr"), Some(0));
    assert_eq!(frame_of("frame_12345.png"), Some(12345));
    assert_eq!(frame_of("frame_0001"), Some(1));
    assert_eq!(frame_of("frame_0001.tar.gz"), Some(1));
    assert_eq!(frame_of("frame_01.png"), None);
    assert_eq!(frame_of("frame_00001.png"), None);
    assert_eq!(frame_of("frame_0001-0003.mp4"), None);
    assert_eq!(frame_of("frame_0001."), None);
    assert_eq!(frame_of("frame_.png"), None);
    assert_eq!(frame_of(".frame_0001.png.partial"), None);
    assert_eq!(frame_of("frame_99999999999.png"), None);
}

#[test]
fn good_png_frames_pass() {
    let png = png_bytes(16, 9);
    let dir = dir_with(&[
        ("frame_0001.png", &png),
        ("frame_0002.png", &png),
        ("notes.txt", b"x"),
    ]);
    let files = check_outputs(dir.path(), &[1, 2]).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[&2], dir.path().join("frame_0002.png"));
}

#[test]
fn truncated_png_is_bad_output() {
    let png = png_bytes(64, 48);
    let cut = &png[..png.len() / 2];
    let dir = dir_with(&[("frame_0007.png", cut)]);
    let problem = check_outputs(dir.path(), &[7]).unwrap_err();
    let (kind, reason) = problem.into_failure();
    assert_eq!(kind, FailureKind::BadOutput);
    assert!(reason.contains("frame_0007.png"), "{reason}");
    assert!(reason.contains("damaged PNG"), "{reason}");
}

#[test]
fn png_with_a_wrong_signature_is_bad_output() {
    let dir = dir_with(&[("frame_0001.png", b"GIF89a not a png at all")]);
    let (kind, reason) = check_outputs(dir.path(), &[1]).unwrap_err().into_failure();
    assert_eq!(kind, FailureKind::BadOutput);
    assert!(reason.contains("not a valid PNG"), "{reason}");
}

#[test]
fn missing_frames_are_named() {
    let png = png_bytes(4, 4);
    let dir = dir_with(&[("frame_0002.png", &png), ("frame_0001-0003.mp4", b"movie")]);
    let problem = check_outputs(dir.path(), &[1, 2, 3]).unwrap_err();
    let (kind, reason) = problem.into_failure();
    assert_eq!(kind, FailureKind::MissingOutput);
    assert!(reason.contains("frame(s) 1, 3"), "{reason}");
    assert!(
        reason.contains("frame_0001-0003.mp4"),
        "the reason shows what is there instead: {reason}"
    );
}

#[test]
fn an_empty_directory_is_missing_output() {
    let dir = dir_with(&[]);
    let (kind, reason) = check_outputs(dir.path(), &[5]).unwrap_err().into_failure();
    assert_eq!(kind, FailureKind::MissingOutput);
    assert!(reason.contains("it is empty"), "{reason}");
}

#[test]
fn two_files_for_one_frame_are_bad_output() {
    let png = png_bytes(4, 4);
    let dir = dir_with(&[
        ("frame_0001.png", &png),
        ("frame_0001.exr", &[0x76, 0x2f, 0x31, 0x01, 2]),
    ]);
    let (kind, reason) = check_outputs(dir.path(), &[1]).unwrap_err().into_failure();
    assert_eq!(kind, FailureKind::BadOutput);
    assert!(reason.contains("2 output files"), "{reason}");
}

#[test]
fn empty_files_are_bad_output_whatever_the_format() {
    let dir = dir_with(&[("frame_0001.xyz", b"")]);
    let (kind, reason) = check_outputs(dir.path(), &[1]).unwrap_err().into_failure();
    assert_eq!(kind, FailureKind::BadOutput);
    assert!(reason.contains("is empty"), "{reason}");
}

#[test]
fn magic_checks_for_exr_jpeg_tiff() {
    let cases: &[(&str, &[u8], bool)] = &[
        ("frame_0001.exr", &[0x76, 0x2f, 0x31, 0x01, 0, 0], true),
        ("frame_0001.exr", b"P6 not exr", false),
        (
            "frame_0001.jpg",
            &[0xff, 0xd8, 0xff, 0xe0, 1, 2, 0xff, 0xd9],
            true,
        ),
        (
            "frame_0001.jpeg",
            &[0xff, 0xd8, 0xff, 0xe0, 1, 2, 0xff, 0xd9, 0, 0],
            true,
        ),
        ("frame_0001.jpg", &[0xff, 0xd8, 0xff, 0xe0, 1, 2, 3], false),
        ("frame_0001.tif", b"II*\0rest", true),
        ("frame_0001.TIFF", b"MM\0*rest", true),
        ("frame_0001.tiff", b"XX*\0rest", false),
        ("frame_0001.hdr", b"#?RADIANCE", true),
    ];
    for (name, bytes, ok) in cases {
        let dir = dir_with(&[(name, bytes)]);
        let result = check_outputs(dir.path(), &[1]);
        assert_eq!(result.is_ok(), *ok, "{name} {bytes:02x?}: {result:?}");
    }
}

#[test]
fn files_without_extension_are_sniffed() {
    let png = png_bytes(4, 4);
    let dir = dir_with(&[("frame_0001", &png[..png.len() - 20])]);
    assert!(
        check_outputs(dir.path(), &[1]).is_err(),
        "a damaged PNG without extension"
    );
    let dir = dir_with(&[("frame_0001", &png)]);
    assert!(check_outputs(dir.path(), &[1]).is_ok());
}

#[test]
fn symlinks_are_not_frames() {
    let png = png_bytes(4, 4);
    let dir = dir_with(&[("real.png", &png)]);
    std::os::unix::fs::symlink(
        dir.path().join("real.png"),
        dir.path().join("frame_0001.png"),
    )
    .unwrap();
    let (kind, reason) = check_outputs(dir.path(), &[1]).unwrap_err().into_failure();
    assert_eq!(kind, FailureKind::BadOutput);
    assert!(reason.contains("not a regular file"), "{reason}");
}
