//! The builtin engine's scene format: `Scene::parse` on any UTF-8 text (a
//! scene file is read as a string first; non-UTF-8 never reaches the
//! parser). Scenes arrive inside bundles from whoever submitted the job, and
//! every node that renders one parses it, so a parse must never panic. A
//! scene that parses is asked what the node asks before rendering.

#![no_main]

use libfuzzer_sys::fuzz_target;
use renderswarm::render::builtin::{MAX_PIXELS, MAX_SAMPLES, Scene};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(scene) = Scene::parse(text) else {
        return;
    };
    let (start, end) = scene.frame_range();
    assert!(start <= end, "range {start}..={end}");
    let (w, h) = scene.resolution();
    assert!(u64::from(w) * u64::from(h) <= MAX_PIXELS);
    assert!(scene.samples() <= MAX_SAMPLES);
});
