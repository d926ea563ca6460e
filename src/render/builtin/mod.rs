//! The `builtin` engine: a small deterministic CPU ray tracer in the binary.
//!
//! It lets a newcomer run the farm with nothing else installed, and it makes
//! tests and benchmarks exact: the same scene and frame give the same PNG
//! bytes on every node, with any thread count. The scene format is documented
//! in docs/builtin-scene.md; `examples/orbit.toml` and `examples/tiny.toml`
//! are ready-made scenes.
//!
//! Layout:
//! - `format.rs` — the TOML file as serde types (the format's shape),
//! - `scene.rs` + `check.rs` — validation into a [`Scene`] (untrusted input),
//! - `anim.rs` — keyframe tracks and orbits (time = frame number),
//! - `trace.rs` — posing a frame, Whitted shading, sampling,
//! - `shapes.rs` — ray intersection with spheres, planes and boxes,
//! - `math.rs` — vectors and the `libm` wrappers,
//! - `encode.rs` — PNG with fixed settings.
//!
//! Why the bytes are stable: per-pixel code uses only IEEE basic arithmetic,
//! `sqrt`, `floor` and `libm` (pure Rust) — never `f64::sin`, whose result
//! depends on the platform's C library, and never `mul_add`. Each pixel is a
//! pure function of (scene, frame, x, y): sample positions come from a hash
//! of the coordinates, not from a shared RNG. Threads only decide who
//! computes a row, never what it contains. The PNG encoder's settings are
//! pinned (see `encode.rs`).

mod anim;
mod check;
mod encode;
mod format;
mod math;
mod scene;
mod shapes;
mod trace;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod validation_tests;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

pub use scene::{
    MAX_LIGHTS, MAX_OBJECTS, MAX_PIXELS, MAX_SAMPLES, MAX_SCENE_BYTES, MAX_SIDE, Scene, SceneError,
};

/// How to render; the image itself depends only on the scene and frame.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Worker threads; 0 means one per available CPU.
    pub threads: usize,
}

/// Errors from [`render_png`].
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("render cancelled")]
    Cancelled,
    #[error("could not encode the frame as PNG: {0}")]
    Encode(String),
    #[error(
        "a render thread failed: {0}; this is a bug in the builtin engine, please report it with the scene"
    )]
    Thread(String),
}

/// Renders `frame` of `scene` to PNG bytes.
///
/// `progress` receives the fraction of rows done (0..=1) after every row,
/// from whichever thread finished it, so calls may arrive slightly out of
/// order; after a successful render the last call is 1.0. `cancel` is
/// checked at least every 64 pixels; once set, the render stops and returns
/// [`RenderError::Cancelled`]. A frame outside [`Scene::frame_range`]
/// renders too: keyed values hold at their first and last keys, and orbits
/// keep turning.
pub fn render_png(
    scene: &Scene,
    frame: u32,
    opts: &RenderOptions,
    cancel: &AtomicBool,
    progress: &(dyn Fn(f32) + Sync),
) -> Result<Vec<u8>, RenderError> {
    let rgb = render_rgb(scene, frame, opts, cancel, progress)?;
    let (width, height) = scene.resolution();
    let png = encode::png_rgb8(width, height, &rgb)?;
    progress(1.0);
    Ok(png)
}

/// Renders `frame` to raw 8-bit sRGB, 3 bytes per pixel, rows top to bottom.
pub fn render_rgb(
    scene: &Scene,
    frame: u32,
    opts: &RenderOptions,
    cancel: &AtomicBool,
    progress: &(dyn Fn(f32) + Sync),
) -> Result<Vec<u8>, RenderError> {
    let (width, height) = scene.resolution();
    // Validation bounds width * height * 3 to about 100 MB.
    let row_len = width as usize * 3;
    let mut rgb = vec![0u8; row_len * height as usize];
    let view = trace::FrameView::new(scene, frame);
    let rows = Mutex::new(rgb.chunks_exact_mut(row_len).enumerate());
    let job = RowJob {
        view: &view,
        rows: &rows,
        done: AtomicU32::new(0),
        height,
        cancel,
        progress,
    };
    let threads = worker_count(opts.threads, scene);
    if threads <= 1 {
        job.work()?;
    } else {
        run_threads(&job, threads)?;
    }
    Ok(rgb)
}

type Rows<'b> = std::iter::Enumerate<std::slice::ChunksExactMut<'b, u8>>;

/// The rows of one frame, handed out one at a time to whichever worker asks.
struct RowJob<'a, 'b> {
    view: &'a trace::FrameView<'a>,
    rows: &'a Mutex<Rows<'b>>,
    done: AtomicU32,
    height: u32,
    cancel: &'a AtomicBool,
    progress: &'a (dyn Fn(f32) + Sync),
}

impl RowJob<'_, '_> {
    /// Renders rows until none are left or the render is cancelled.
    fn work(&self) -> Result<(), RenderError> {
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(RenderError::Cancelled);
            }
            // A poisoned lock only means another worker panicked; the
            // iterator inside is still sound.
            let next = self.rows.lock().unwrap_or_else(|e| e.into_inner()).next();
            let Some((y, row)) = next else { return Ok(()) };
            let y = u32::try_from(y).unwrap_or(u32::MAX);
            if !self.view.render_row(y, row, self.cancel) {
                return Err(RenderError::Cancelled);
            }
            let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
            (self.progress)(done as f32 / self.height.max(1) as f32);
        }
    }
}

/// Runs `threads` workers: the calling thread plus `threads - 1` spawned
/// ones. A thread that cannot be spawned is simply not there (the others
/// take its rows); the image is the same either way.
fn run_threads(job: &RowJob<'_, '_>, threads: usize) -> Result<(), RenderError> {
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|i| {
                std::thread::Builder::new()
                    .name(format!("builtin-render-{i}"))
                    .spawn_scoped(s, || job.work())
                    .ok()
            })
            .collect();
        let mut result = job.work();
        for h in helpers {
            let joined = h
                .join()
                .unwrap_or_else(|_| Err(RenderError::Thread("a worker panicked".into())));
            // Report a real failure over a cancellation, and either over Ok.
            result = match (result, joined) {
                (Err(RenderError::Cancelled), Err(e)) | (Ok(()), Err(e)) => Err(e),
                (r, _) => r,
            };
        }
        result
    })
}

/// Camera rays a worker should have at least, so that tiny frames are not
/// slowed down by starting threads (about 0.1 ms each).
const MIN_RAYS_PER_WORKER: u64 = 1024;

/// The cores this process may use. Asking the OS reads cgroup files (three
/// opens, tens of µs), which a farm of tiny tasks paid on every task: once
/// is enough.
pub(crate) fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn worker_count(requested: usize, scene: &Scene) -> usize {
    let wanted = match requested {
        0 => cpus(),
        n => n,
    };
    let (width, height) = scene.resolution();
    let rays = u64::from(width) * u64::from(height) * u64::from(scene.samples());
    let useful = rays.div_ceil(MIN_RAYS_PER_WORKER).min(u64::from(height));
    // 256 bounds a silly request; more workers than rows would idle.
    wanted
        .clamp(1, 256)
        .min(usize::try_from(useful).unwrap_or(1).max(1))
}
