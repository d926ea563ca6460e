//! Tests of the Blender line parser on lines captured from Debian's Blender 3.4.1.

use super::*;

fn problem(kind: BlenderProblem, text: &str) -> Option<BlenderLine> {
    Some(BlenderLine::Problem {
        kind,
        text: text.into(),
    })
}

#[test]
fn cycles_progress_lines() {
    let line = "Fra:1 Mem:9.99M (Peak 10.83M) | Time:00:00.09 | Remaining:00:00.01 | Mem:0.86M, \
                Peak:0.86M | Scene, ViewLayer | Sample 1/4";
    assert_eq!(
        parse_blender_line(line),
        Some(BlenderLine::Sample {
            frame: 1,
            done: 1,
            total: 4
        })
    );
    let line = "Fra:3 Mem:10.03M (Peak 10.83M) | Time:00:00.00 | Mem:0.86M, Peak:0.86M | Scene, ViewLayer | Sample 4/4";
    assert_eq!(
        parse_blender_line(line),
        Some(BlenderLine::Sample {
            frame: 3,
            done: 4,
            total: 4
        })
    );
    let line = "Fra:1 Mem:8.98M (Peak 10.83M) | Time:00:00.01 | Mem:0.00M, Peak:0.00M | Scene, ViewLayer | Synchronizing object | Cube";
    assert_eq!(
        parse_blender_line(line),
        Some(BlenderLine::Status {
            frame: 1,
            text: "Cube".into()
        })
    );
    let line = "Fra:2 Mem:9.87M (Peak 10.83M) | Time:00:00.00 | Mem:0.76M, Peak:0.76M | Scene, ViewLayer | Finished";
    assert_eq!(
        parse_blender_line(line),
        Some(BlenderLine::Status {
            frame: 2,
            text: "Finished".into()
        })
    );
}

#[test]
fn tile_and_eevee_progress_lines() {
    let line = "Fra:12 Mem:120.5M (Peak 130.1M) | Time:00:03.21 | Remaining:00:10.00 | Mem:40M, Peak:41M | \
                Scene, RenderLayer | Rendered 3/16 Tiles, Sample 32/128";
    assert_eq!(
        parse_blender_line(line),
        Some(BlenderLine::Sample {
            frame: 12,
            done: 32,
            total: 128
        })
    );
    let line = "Fra:5 Mem:50.00M (Peak 60.00M) | Time:00:01.00 | Rendered 7/16 Tiles";
    assert_eq!(
        parse_blender_line(line),
        Some(BlenderLine::Tiles {
            frame: 5,
            done: 7,
            total: 16
        })
    );
    let line = "Fra:1 Mem:120.98M (Peak 121.58M) | Time:00:00.64 | Rendering 9 / 64 samples";
    assert_eq!(
        parse_blender_line(line),
        Some(BlenderLine::Sample {
            frame: 1,
            done: 9,
            total: 64
        })
    );
}

#[test]
fn saved_and_time_lines() {
    assert_eq!(
        parse_blender_line("Saved: '/tmp/bl/out/frame_0001.png'"),
        Some(BlenderLine::Saved {
            path: "/tmp/bl/out/frame_0001.png".into()
        })
    );
    assert_eq!(
        parse_blender_line(" Time: 00:00.38 (Saving: 00:00.28)"),
        Some(BlenderLine::FrameTime {
            time: "00:00.38 (Saving: 00:00.28)".into()
        })
    );
    assert_eq!(parse_blender_line("Blender quit"), Some(BlenderLine::Quit));
    assert_eq!(parse_blender_line("Blender 3.4.1"), None);
    assert_eq!(parse_blender_line("Read blend: /tmp/bl/s.blend"), None);
    assert_eq!(parse_blender_line(""), None);
}

#[test]
fn unreadable_scene_lines() {
    // A .blend cut to its first 1000 bytes; exit code 1.
    assert_eq!(
        parse_blender_line(
            "Error: Failed to read blend file '/tmp/bl/trunc.blend': Missing DNA block"
        ),
        problem(
            BlenderProblem::UnreadableScene,
            "Failed to read blend file '/tmp/bl/trunc.blend': Missing DNA block"
        )
    );
    // A text file named .blend; exit code 1.
    assert_eq!(
        parse_blender_line("Error: File format is not supported in file '/tmp/bl/notblend.blend'"),
        problem(
            BlenderProblem::UnreadableScene,
            "File format is not supported in file '/tmp/bl/notblend.blend'"
        )
    );
    // A path that does not exist; exit code 1.
    assert_eq!(
        parse_blender_line(
            "Error: Cannot read file '/tmp/bl/nonexist.blend': No such file or directory"
        ),
        problem(
            BlenderProblem::UnreadableScene,
            "Cannot read file '/tmp/bl/nonexist.blend': No such file or directory"
        )
    );
    assert_eq!(
        parse_blender_line("Warning: Unable to open '//textures/wood.png'"),
        problem(
            BlenderProblem::UnopenableFile,
            "Unable to open '//textures/wood.png'"
        )
    );
}

#[test]
fn denoiser_lines_in_every_form() {
    // Denoising on, Debian's build lacks OIDN; exit code 1. Blender prints all three.
    for line in [
        "Build without OpenImageDenoiser",
        "Fra:1 Mem:9.87M (Peak 10.83M) | Time:00:00.04 | Mem:0.76M, Peak:0.76M | Scene, ViewLayer | Build without OpenImageDenoiser",
        "Error: Build without OpenImageDenoiser",
    ] {
        assert_eq!(
            parse_blender_line(line),
            problem(
                BlenderProblem::NoDenoiser,
                "Build without OpenImageDenoiser"
            ),
            "{line}"
        );
    }
}

#[test]
fn python_and_memory_and_crash_lines() {
    assert_eq!(
        parse_blender_line("Error: Python: Traceback (most recent call last):"),
        Some(BlenderLine::PythonTraceback)
    );
    assert_eq!(
        parse_blender_line("Traceback (most recent call last):"),
        Some(BlenderLine::PythonTraceback)
    );
    assert_eq!(
        parse_blender_line("ValueError: boom"),
        Some(BlenderLine::PythonException {
            text: "ValueError: boom".into()
        })
    );
    assert_eq!(
        parse_blender_line("  File \"<string>\", line 1, in <module>"),
        None
    );
    assert_eq!(
        parse_blender_line("Error: script failed, expr: 'raise ValueError(\"boom\")', exiting."),
        problem(
            BlenderProblem::Error,
            "script failed, expr: 'raise ValueError(\"boom\")', exiting."
        )
    );
    assert_eq!(
        parse_blender_line(
            "Error: Format from '-F / --render-format' not known or not compiled in this release."
        ),
        problem(
            BlenderProblem::Error,
            "Format from '-F / --render-format' not known or not compiled in this release."
        )
    );
    assert_eq!(
        parse_blender_line(
            "Fra:7 Mem:31000.00M (Peak 31000.00M) | Time:01:02.00 | Out of memory in cuMemAlloc(&device_pointer, size)"
        ),
        problem(
            BlenderProblem::OutOfMemory,
            "Out of memory in cuMemAlloc(&device_pointer, size)"
        )
    );
    assert_eq!(
        parse_blender_line(
            "Error: Malloc returns null: len=1234567890 in CDDerivedMesh, total 2000000"
        ),
        problem(
            BlenderProblem::OutOfMemory,
            "Malloc returns null: len=1234567890 in CDDerivedMesh, total 2000000"
        )
    );
    assert_eq!(
        parse_blender_line("Writing: /tmp/scene.crash.txt"),
        Some(BlenderLine::CrashReport {
            path: "/tmp/scene.crash.txt".into()
        })
    );
}

#[test]
fn odd_input_never_panics() {
    for line in [
        "Fra:",
        "Fra:x",
        "Fra:99999999999 | Sample 1/",
        "Fra:1 | Sample /4",
        "Saved: ",
        "Saved: '",
        "Error: ",
        "é:ü",
        ":",
    ] {
        let _ = parse_blender_line(line);
    }
    assert_eq!(
        parse_blender_line("Fra:99999999999 Mem:1M | Sample 1/2"),
        None
    );
    assert_eq!(
        parse_blender_line("Fra:1 Mem:1M | Sample 1/"),
        Some(BlenderLine::Status {
            frame: 1,
            text: "Sample 1/".into()
        })
    );
}

fn feed_all(tracker: &mut Tracker, lines: &[&str]) -> Vec<Update> {
    lines
        .iter()
        .filter_map(|l| parse_blender_line(l))
        .filter_map(|p| tracker.feed(p))
        .collect()
}

#[test]
fn progress_runs_over_the_whole_task() {
    let mut t = Tracker::new(2);
    let updates = feed_all(
        &mut t,
        &[
            "Fra:1 Mem:1M | Time:00:00.01 | Scene, ViewLayer | Sample 2/4",
            "Saved: '/o/frame_0001.png'",
            "Fra:2 Mem:1M | Time:00:00.01 | Scene, ViewLayer | Sample 2/4",
            "Saved: '/o/frame_0002.png'",
        ],
    );
    let fractions: Vec<f32> = updates.iter().map(|u| u.0).collect();
    assert_eq!(fractions, [0.25, 0.5, 0.75, 1.0]);
    assert_eq!(updates[2].1, Some(2));
    assert_eq!(updates[3].2, "saved frame_0002.png");
}

#[test]
fn the_denoiser_reason_wins_and_is_plain() {
    let mut t = Tracker::new(1);
    feed_all(
        &mut t,
        &[
            "Build without OpenImageDenoiser",
            "No device available to denoise on",
            "Error: Build without OpenImageDenoiser",
            "Blender quit",
        ],
    );
    let reason = t.reason().unwrap();
    assert!(
        reason.contains("this node's Blender was built without OpenImageDenoise"),
        "{reason}"
    );
    assert!(reason.contains("turn denoising off"), "{reason}");
}

#[test]
fn reasons_for_other_failures() {
    let mut t = Tracker::new(1);
    feed_all(
        &mut t,
        &[
            "Error: Failed to read blend file '/w/s.blend': Missing DNA block",
            "Blender quit",
        ],
    );
    assert_eq!(
        t.reason().unwrap(),
        "Blender could not read the scene file: Failed to read blend file '/w/s.blend': Missing DNA block"
    );
    let mut t = Tracker::new(1);
    feed_all(
        &mut t,
        &[
            "Error: Python: Traceback (most recent call last):",
            "  File \"<string>\", line 1, in <module>",
            "ValueError: boom",
            "Error: script failed, expr: 'x', exiting.",
        ],
    );
    assert_eq!(
        t.reason().unwrap(),
        "a Python script inside Blender failed: ValueError: boom"
    );
    let mut t = Tracker::new(1);
    feed_all(&mut t, &["Writing: /tmp/s.crash.txt"]);
    assert!(t.reason().unwrap().contains("/tmp/s.crash.txt"));
    assert!(!t.quit_cleanly());
    let mut t = Tracker::new(1);
    feed_all(&mut t, &["Fra:1 Mem:1M | Sample 1/4", "Blender quit"]);
    assert_eq!(t.reason(), None);
    assert!(t.quit_cleanly());
}

/// Found by the `blender_lines` fuzz target (its input, whose first byte
/// sets the frame count, here 1): a task of one frame, its frame saved, then
/// a sample line reported progress 1.25.
#[test]
fn a_sample_line_after_the_last_saved_frame_keeps_progress_at_one() {
    let mut t = Tracker::new(1);
    let mut last = None;
    for line in "0\nSaved: '\nFra:1 Sample 1/4".lines() {
        if let Some(update) = parse_blender_line(line).and_then(|l| t.feed(l)) {
            last = Some(update.0);
        }
    }
    assert_eq!(last, Some(1.0));
}
