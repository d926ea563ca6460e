//! Tests of the engine as the farm uses it: example scenes, determinism
//! across runs and thread counts, animation, PNG validity, the golden hash,
//! cancellation, progress, and pictures that show shading, shadows and
//! reflections. Scenes here are tiny so the tests stay fast in debug builds.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

const ORBIT: &str = include_str!("../../../examples/orbit.toml");
const TINY: &str = include_str!("../../../examples/tiny.toml");
const DOC: &str = include_str!("../../../docs/builtin-scene.md");

/// A small scene with every kind of object, material feature and motion.
const GOLDEN_SCENE: &str = r#"
[output]
width = 24
height = 16
samples = 4
max_depth = 3
[world]
background = [0.7, 0.8, 0.9]
zenith = [0.2, 0.4, 0.8]
ambient = [0.1, 0.1, 0.1]
fog = 50.0
[animation]
start = 1
end = 10
[camera]
look_at = [0, 0.5, 0]
fov = 50
interpolation = "smooth"
keys = [{ frame = 1, position = [0, 2, -6] }, { frame = 10, position = [1, 1.5, -5], fov = 40 }]
[materials.floor]
colour = [0.9, 0.9, 0.9]
checker = [0.1, 0.1, 0.1]
reflect = 0.2
[materials.mirror]
colour = [0.9, 0.9, 0.9]
specular = 0.8
shininess = 200
reflect = 0.8
[materials.red]
color = [0.8, 0.1, 0.1]
specular = 0.5
[[light]]
position = [-4, 6, -4]
[[light]]
position = [4, 3, -2]
colour = [0.5, 0.6, 1.0]
intensity = 0.5
[[plane]]
material = "floor"
[[sphere]]
centre = [0, 1, 0]
material = "mirror"
[[sphere]]
centre = [0, 0.4, 0]
radius = 0.4
material = "red"
orbit = { radius = 2, period = 10, phase = 0.25 }
[[box]]
center = [-1.5, 0.3, 1]
size = [0.6, 0.6, 0.6]
keys = [{ frame = 1, size = [0.6, 0.6, 0.6] }, { frame = 10, size = [1, 0.6, 1] }]
"#;

fn scene(text: &str) -> Scene {
    Scene::parse(text).unwrap_or_else(|e| panic!("scene should parse: {e}"))
}

/// orbit.toml at a test-friendly size (every feature, fewer pixels, still
/// enough work for 7 workers).
fn small_orbit() -> Scene {
    scene(
        &ORBIT
            .replace("width = 320", "width = 64")
            .replace("height = 180", "height = 36"),
    )
}

fn render(scene: &Scene, frame: u32, threads: usize) -> Vec<u8> {
    let cancel = AtomicBool::new(false);
    render_png(scene, frame, &RenderOptions { threads }, &cancel, &|_| {}).unwrap()
}

fn rgb(scene: &Scene, frame: u32) -> Vec<u8> {
    render_rgb(
        scene,
        frame,
        &RenderOptions { threads: 1 },
        &AtomicBool::new(false),
        &|_| {},
    )
    .unwrap()
}

fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(
        (info.color_type, info.bit_depth),
        (png::ColorType::Rgb, png::BitDepth::Eight)
    );
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn example_scenes_parse_with_their_documented_ranges_and_sizes() {
    let orbit = scene(ORBIT);
    assert_eq!(orbit.frame_range(), (1, 48));
    assert_eq!(orbit.resolution(), (320, 180));
    assert_eq!(orbit.samples(), 4);
    let tiny = scene(TINY);
    assert_eq!(tiny.frame_range(), (1, 10_000));
    assert_eq!(tiny.resolution(), (16, 16));
    assert_eq!(tiny.samples(), 1);
}

/// Every TOML example in docs/builtin-scene.md is valid: the first is a
/// whole scene, the others parse alone or appended to it.
#[test]
fn the_documented_examples_parse() {
    let blocks: Vec<&str> = DOC
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or(""))
        .collect();
    assert!(blocks.len() >= 4, "found {} toml blocks", blocks.len());
    let first = scene(blocks[0]);
    assert_eq!(first.frame_range(), (1, 24));
    assert_ne!(render(&first, 1, 2), render(&first, 24, 2));
    for b in &blocks[1..] {
        let alone = Scene::parse(b);
        let appended = Scene::parse(&format!("{}\n{b}", blocks[0]));
        assert!(
            alone.is_ok() || appended.is_ok(),
            "{b}\n{alone:?}\n{appended:?}"
        );
    }
}

#[test]
fn same_frame_twice_gives_identical_bytes() {
    let s = scene(GOLDEN_SCENE);
    assert_eq!(render(&s, 3, 1), render(&s, 3, 1));
}

#[test]
fn thread_count_does_not_change_a_single_byte() {
    let s = small_orbit();
    let one = render(&s, 7, 1);
    assert_eq!(one, render(&s, 7, 2));
    assert_eq!(one, render(&s, 7, 7));
    assert_eq!(one, render(&s, 7, 0));
}

#[test]
fn frames_of_an_animation_differ() {
    let s = small_orbit();
    let frames: Vec<Vec<u8>> = [1, 2, 13, 25].iter().map(|f| render(&s, *f, 2)).collect();
    for (i, a) in frames.iter().enumerate() {
        for b in &frames[i + 1..] {
            assert_ne!(a, b);
        }
    }
    let tiny = scene(TINY);
    assert_ne!(render(&tiny, 1, 1), render(&tiny, 2, 1));
    assert_ne!(render(&tiny, 9_999, 1), render(&tiny, 10_000, 1));
}

#[test]
fn the_png_decodes_to_the_declared_resolution_and_pixels() {
    let s = scene(GOLDEN_SCENE);
    let (w, h, pixels) = decode(&render(&s, 1, 2));
    assert_eq!((w, h), s.resolution());
    assert_eq!(
        pixels,
        rgb(&s, 1),
        "the PNG holds exactly the rendered pixels"
    );
    let (w, h, _) = decode(&render(&small_orbit(), 1, 2));
    assert_eq!((w, h), (64, 36));
}

/// Pins the engine's output. If this fails, the picture of every existing
/// scene changed: deliberate changes update the hashes (and say so in the
/// changelog); accidental ones are bugs. `rgb` covers the tracer, `png` the
/// encoder settings too (a png crate upgrade may change only the latter).
#[test]
fn golden_hash_of_frame_one() {
    let s = scene(GOLDEN_SCENE);
    let rgb_hash = blake3::hash(&rgb(&s, 1)).to_hex().to_string();
    let png_hash = blake3::hash(&render(&s, 1, 1)).to_hex().to_string();
    assert_eq!(
        rgb_hash,
        "ac6a9685c46363ae98324abb12a8508a0e9b21bd97798e84ae805d4864c0d73e"
    );
    assert_eq!(
        png_hash,
        "96b2cda2fd263b45c8ac4c5c7fc0c9c8870ee10c44f76b78c6536b2819cb0405"
    );
}

#[test]
fn small_frames_use_few_workers_and_big_ones_as_many_as_asked() {
    assert_eq!(worker_count(7, &small_orbit()), 7);
    assert_eq!(worker_count(7, &scene(TINY)), 1);
    assert_eq!(worker_count(1_000_000, &scene(ORBIT)), 180);
    assert_eq!(worker_count(3, &scene(ORBIT)), 3);
    assert!(worker_count(0, &scene(ORBIT)) >= 1);
}

#[test]
fn a_cancel_set_before_the_render_returns_cancelled() {
    let s = scene(GOLDEN_SCENE);
    let cancel = AtomicBool::new(true);
    for threads in [1, 3] {
        let r = render_png(&s, 1, &RenderOptions { threads }, &cancel, &|_| {});
        assert!(
            matches!(r, Err(RenderError::Cancelled)),
            "threads = {threads}: {r:?}"
        );
    }
}

#[test]
fn a_cancel_during_the_render_stops_it_early() {
    let s = small_orbit();
    for threads in [1, 2] {
        let cancel = AtomicBool::new(false);
        let calls = Mutex::new(0u32);
        let progress = |_: f32| {
            *calls.lock().unwrap() += 1;
            cancel.store(true, Ordering::Relaxed);
        };
        let r = render_png(&s, 1, &RenderOptions { threads }, &cancel, &progress);
        assert!(
            matches!(r, Err(RenderError::Cancelled)),
            "threads = {threads}: {r:?}"
        );
        // Each worker finishes at most the row it was on.
        assert!(
            *calls.lock().unwrap() <= threads as u32,
            "rows kept coming after cancel"
        );
    }
}

#[test]
fn progress_rises_to_one() {
    let s = scene(GOLDEN_SCENE);
    let seen = Mutex::new(Vec::new());
    let cancel = AtomicBool::new(false);
    render_png(&s, 1, &RenderOptions { threads: 1 }, &cancel, &|p| {
        seen.lock().unwrap().push(p)
    })
    .unwrap();
    let seen = seen.into_inner().unwrap();
    assert!(
        seen.len() >= 16,
        "at least one call per row, got {}",
        seen.len()
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "one thread reports in order: {seen:?}"
    );
    assert!(seen.iter().all(|p| (0.0..=1.0).contains(p)));
    assert_eq!(seen.last(), Some(&1.0));

    let last = Mutex::new(0.0f32);
    render_png(&s, 1, &RenderOptions { threads: 3 }, &cancel, &|p| {
        *last.lock().unwrap() = p
    })
    .unwrap();
    assert_eq!(*last.lock().unwrap(), 1.0);
}

#[test]
fn frames_outside_the_scene_range_still_render() {
    let s = scene(GOLDEN_SCENE);
    assert_eq!(
        rgb(&s, 10),
        rgb(&s, 500),
        "keys hold after the last one; the orbit period is 10"
    );
    assert_eq!(decode(&render(&s, u32::MAX, 1)).0, 24);
}

/// Luma of pixel (x, y) of a raw RGB buffer of width `w`.
fn luma(rgb: &[u8], w: u32, x: u32, y: u32) -> u32 {
    let i = ((y * w + x) * 3) as usize;
    u32::from(rgb[i]) + u32::from(rgb[i + 1]) + u32::from(rgb[i + 2])
}

#[test]
fn a_sphere_casts_a_hard_shadow_on_the_floor() {
    // Looking straight down; the light at +x throws the ball's shadow to
    // x = -1.25, which the camera (right = +x) sees left of centre.
    let text = r#"
        output = { width = 64, height = 64, samples = 1 }
        world = { ambient = [0.05, 0.05, 0.05] }
        camera = { position = [0, 10, 0], look_at = [0, 0, 0], up = [0, 0, 1], fov = 40 }
        [[light]]
        position = [5, 5, 0]
        [[plane]]
        [[sphere]]
        centre = [0, 1, 0]
        radius = 0.5
    "#;
    let img = rgb(&scene(text), 1);
    let shadow = luma(&img, 64, 20, 32);
    let lit = luma(&img, 64, 43, 32);
    assert!(
        shadow * 3 < lit,
        "shadow {shadow} should be far darker than lit floor {lit}"
    );
}

#[test]
fn a_mirror_floor_reflects_the_sky_above() {
    let text = r#"
        output = { width = 8, height = 8, samples = 1 }
        world = { background = [1, 0, 0], zenith = [0, 0, 1], ambient = [0, 0, 0] }
        camera = { position = [0, 5, 0], look_at = [0, 0, 0], up = [0, 0, 1], fov = 20 }
        materials.mirror = { colour = [0, 0, 0], reflect = 1.0 }
        [[plane]]
        material = "mirror"
    "#;
    let img = rgb(&scene(text), 1);
    let centre = ((4 * 8 + 4) * 3) as usize;
    assert!(
        img[centre + 2] > 200 && img[centre] < 40,
        "sees the blue zenith: {:?}",
        &img[centre..centre + 3]
    );
}

#[test]
fn the_orbit_example_is_a_seamless_loop() {
    // Frame 49 is frame 1 again, so a player looping 1..=48 never jumps.
    let s = small_orbit();
    let (a, b) = (rgb(&s, 1), rgb(&s, 49));
    let worst = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max();
    assert!(worst <= Some(2), "largest channel difference {worst:?}");
}
