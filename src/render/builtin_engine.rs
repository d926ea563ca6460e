//! The `builtin` engine: the compiled-in ray tracer (`super::builtin`) run as an engine.
//!
//! The tracer is CPU-bound blocking code, so each frame renders on tokio's blocking pool; cancel
//! and timeout reach it through an `AtomicBool` it polls (set by the token, by the deadline, and by
//! a guard if the render future is dropped). Each frame's PNG stays in memory
//! ([`Frame::Png`]): the node's store takes it from there, so a frame costs no file to create,
//! read back and remove (for the tracer's small frames, that was most of a task's disk work).
//! The scene file is read with a size cap: it arrives from the swarm.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::builtin::{self, RenderError, RenderOptions, Scene};
use super::log::LogBuffer;
use super::{FailureKind, Frame, Job, RenderFailure, RenderOutput};

/// Largest scene text accepted: the tracer's own limit.
const MAX_SCENE_BYTES: u64 = builtin::MAX_SCENE_BYTES as u64;
/// How long a cancelled frame may take to notice the flag before the task gives up on it.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Sets the flag when dropped, so a dropped render stops the tracer too.
struct RaiseOnDrop(Arc<AtomicBool>);

impl Drop for RaiseOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Why a frame stopped early.
enum Stop {
    Cancelled,
    TimedOut,
}

/// Renders the task's frames one after another.
pub(crate) async fn render(job: &Job<'_>, threads: usize) -> Result<RenderOutput, RenderFailure> {
    let mut log = LogBuffer::new();
    let scene = load_scene(job).await.map_err(|reason| {
        log.note(&reason);
        job.fail(FailureKind::EngineError, reason, &log)
    })?;
    let threads = match threads {
        0 => builtin::cpus(),
        n => n,
    };
    log.note(&format!(
        "builtin: {} frame(s), {threads} thread(s)",
        job.frames.len()
    ));
    let stop_flag = Arc::new(AtomicBool::new(false));
    let _raise = RaiseOnDrop(stop_flag.clone());
    let total = job.frames.len();
    let mut frames = BTreeMap::new();
    for (i, &frame) in job.frames.iter().enumerate() {
        job.report(
            i as f32 / total as f32,
            Some(frame),
            format!("frame {frame}: rendering"),
        );
        let began = Instant::now();
        let handle = spawn_frame(job, &scene, &stop_flag, frame, i, threads);
        let outcome = wait_frame(job, handle, &stop_flag).await;
        match outcome {
            Ok(png) => {
                log.note(&format!(
                    "frame {frame}: {} bytes in {} ms",
                    png.len(),
                    began.elapsed().as_millis()
                ));
                frames.insert(frame, Frame::Png(png));
            }
            Err((kind, reason)) => {
                log.note(&reason);
                return Err(job.fail(kind, reason, &log));
            }
        }
    }
    job.report(1.0, job.frames.last().copied(), "done".into());
    Ok(RenderOutput {
        frames,
        log: log.to_bytes(),
        elapsed: job.started.elapsed(),
    })
}

async fn load_scene(job: &Job<'_>) -> Result<Arc<Scene>, String> {
    let path = job.scene();
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| format!("scene file {} cannot be opened: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_SCENE_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("scene file {} cannot be read: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_SCENE_BYTES {
        return Err(format!(
            "scene file {} is larger than the builtin engine's limit of {} MiB",
            path.display(),
            MAX_SCENE_BYTES / (1024 * 1024)
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("scene file {} is not UTF-8 text: {e}", path.display()))?;
    let scene = Scene::parse(&text).map_err(|e| {
        format!(
            "scene file {} is not a valid builtin scene: {e}",
            path.display()
        )
    })?;
    Ok(Arc::new(scene))
}

/// Starts one frame on the blocking pool; it yields the frame's PNG.
fn spawn_frame(
    job: &Job<'_>,
    scene: &Arc<Scene>,
    stop_flag: &Arc<AtomicBool>,
    frame: u32,
    index: usize,
    threads: usize,
) -> JoinHandle<Result<Vec<u8>, String>> {
    let scene = scene.clone();
    let flag = stop_flag.clone();
    let progress = job.progress.clone();
    let total = job.frames.len() as f32;
    tokio::task::spawn_blocking(move || {
        let report = move |f: f32| {
            let f = if f.is_finite() {
                f.clamp(0.0, 1.0)
            } else {
                0.0
            };
            progress.send_replace(super::Progress {
                fraction: (index as f32 + f) / total,
                frame: Some(frame),
                message: format!("frame {frame}: {:.0}%", f * 100.0),
            });
        };
        let opts = RenderOptions { threads };
        builtin::render_png(&scene, frame, &opts, &flag, &report).map_err(|e| match e {
            RenderError::Cancelled => "cancelled".to_owned(),
            other => format!("frame {frame} could not be rendered: {other}"),
        })
    })
}

/// Waits for a frame, honouring cancel and the task deadline.
async fn wait_frame(
    job: &Job<'_>,
    mut handle: JoinHandle<Result<Vec<u8>, String>>,
    stop_flag: &AtomicBool,
) -> Result<Vec<u8>, (FailureKind, String)> {
    let stop = tokio::select! {
        biased;
        () = job.cancel.cancelled() => Stop::Cancelled,
        () = super::runner::until(job.limits.deadline) => Stop::TimedOut,
        joined = &mut handle => {
            return match joined {
                Ok(Ok(png)) => Ok(png),
                Ok(Err(reason)) => Err((FailureKind::EngineError, reason)),
                Err(e) => Err((FailureKind::EngineError, format!("the builtin renderer crashed: {e}"))),
            };
        }
    };
    stop_flag.store(true, Ordering::Relaxed);
    // The tracer polls the flag; give it a moment so its threads are free before we return.
    let _ = tokio::time::timeout(STOP_GRACE, handle).await;
    Err(match stop {
        Stop::Cancelled => (FailureKind::Cancelled, "cancelled by the node".into()),
        Stop::TimedOut => (
            FailureKind::Timeout,
            format!(
                "the builtin renderer ran past the task timeout of {}",
                super::runner::human(job.limits.timeout.unwrap_or_default())
            ),
        ),
    })
}
