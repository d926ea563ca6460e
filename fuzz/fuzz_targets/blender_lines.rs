//! Blender's output: every line of the input through `parse_blender_line`,
//! and every parsed line into the progress tracker, as the Blender runner
//! does with a render's stdout. A scene can make Blender print almost
//! anything (its Python scripts write to stdout), so the parser sees text
//! the scene's author chose; neither may panic, and progress stays a
//! fraction.

#![no_main]

use libfuzzer_sys::fuzz_target;
use renderswarm::render::{BlenderTracker, parse_blender_line};

fuzz_target!(|data: &[u8]| {
    // The runner reads lines lossily: Blender's output is not always UTF-8.
    let text = String::from_utf8_lossy(data);
    let frames = usize::from(data.first().copied().unwrap_or(1) % 8);
    let mut tracker = BlenderTracker::new(frames);
    for line in text.lines() {
        if let Some(parsed) = parse_blender_line(line)
            && let Some((fraction, _, _)) = tracker.feed(parsed)
        {
            assert!((0.0..=1.0).contains(&fraction), "progress {fraction}");
        }
    }
    let _ = tracker.reason();
    let _ = tracker.quit_cleanly();
});
