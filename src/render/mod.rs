//! Engines and the task runner: how a node turns a claimed task into checked frame files.
//!
//! The node hands [`Engines::render`] a task (a scene inside an unpacked bundle, its frames, an
//! empty output directory) and gets back either one checked file per frame or a
//! [`RenderFailure`] whose kind and one-line reason go into the ledger as a `Failed` end.
//!
//! Layout:
//! - `runner` spawns an engine process in its own process group and watches it: lines of output,
//!   exit, signal, per-task timeout, stall, cancel; every stop kills the whole group.
//! - `blender` finds Blender and builds its command line; `blender_lines` reads its output
//!   (`parse_blender_line` is a pure function over one line, unit-tested on captured lines and
//!   ready to fuzz) and picks the line that explains a failure.
//! - `command` splits a configured template into argv once, at config time, and fills in the
//!   placeholders per task, so a scene path with spaces stays one argument and no shell is run
//!   unless the template names one.
//! - `builtin_engine` runs the builtin ray tracer (`builtin`) on blocking threads.
//! - `output` checks what an engine left behind: exit codes are never trusted, files are.
//! - `gather` asks Blender for every file a `.blend` uses and stages them as a project folder
//!   (the submit side: `swarm submit scene.blend` and a node given a path).
//! - `log` keeps an engine's output with a hard cap (head and tail).
//!
//! Engines are configured locally ([`EngineConfig`]), never from the network: a job only names
//! one, and a node that lacks it does not claim the job.

mod blender;
mod blender_lines;
pub mod builtin;
mod builtin_engine;
mod command;
mod device;
mod ffmpeg;
pub mod gather;
mod log;
mod output;
mod runner;

#[cfg(test)]
mod blender_real_tests;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use blender::BLENDER_FORMATS;
pub use device::{DEVICE_NAMES, Device, UnknownDevice};
pub use ffmpeg::{Codec, ENCODE_ENGINE, ENCODE_SETTINGS_FILE, EncodeSettings, FPS_RANGE};

/// Blender for this machine: `configured` (which must answer `--version`), else `blender` on
/// `PATH`; `None` when there is none.
pub fn locate_blender(configured: Option<&Path>) -> Result<Option<PathBuf>, EngineError> {
    Ok(blender::Blender::locate(configured)?.map(|b| b.path().to_owned()))
}

/// The arguments the blender engine gives Blender to render `frames` of
/// `scene` into `output_dir` (all threads, the scene's own format): for
/// comparing the engine against Blender run by hand.
pub fn blender_args(
    scene: &std::path::Path,
    output_dir: &std::path::Path,
    frames: &[u32],
) -> Result<Vec<std::ffi::OsString>, String> {
    blender::build_args(scene, output_dir, None, 0, frames, None)
}
pub use blender_lines::{BlenderLine, BlenderProblem, parse_blender_line};
#[doc(hidden)]
pub use blender_lines::{Tracker as BlenderTracker, Update as BlenderUpdate};

use log::LogBuffer;
use runner::Limits;
pub(crate) use runner::until;

/// Default stall limit: Cycles can print nothing for minutes between progress lines.
pub const DEFAULT_STALL: Duration = Duration::from_secs(10 * 60);

/// Default niceness of the engines' processes: on a workstation the
/// person at it keeps a responsive machine, and on any node the node's own
/// work (heartbeats, gossip, serving blobs) goes before a render's.
pub const DEFAULT_RENDER_NICE: i32 = 10;

/// What this node can run, from the node's own configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Blender executable; `None` searches `PATH` for `blender`.
    pub blender: Option<PathBuf>,
    /// ffmpeg executable, for encode jobs; `None` searches `PATH`.
    pub ffmpeg: Option<PathBuf>,
    /// Command engines: name -> template with `{scene}` `{frame}` `{start}` `{end}` `{output}`.
    pub commands: BTreeMap<String, String>,
    /// Render threads per task; 0 lets the engine decide (all cores).
    pub threads: usize,
    /// How long an engine may print nothing before it is judged stalled and killed.
    pub stall: Duration,
    /// The niceness engines run at (0-19; see [`DEFAULT_RENDER_NICE`]). The
    /// builtin engine renders inside the node and is not reniced.
    pub nice: i32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            blender: None,
            ffmpeg: None,
            commands: BTreeMap::new(),
            threads: 0,
            stall: DEFAULT_STALL,
            nice: DEFAULT_RENDER_NICE,
        }
    }
}

/// An engine as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineInfo {
    /// The name jobs use (`builtin`, `blender`, or a command's name).
    pub name: String,
    /// Version (`Blender 3.4.1`) or, for a command, its template.
    pub version: String,
}

/// Why the engine configuration cannot be used; the node refuses to start with it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A configured Blender path does not run or does not answer like Blender.
    #[error(
        "Blender at {} cannot be used: {reason}; fix the path or leave it unset to search PATH",
        path.display()
    )]
    BlenderUnusable { path: PathBuf, reason: String },
    /// A configured ffmpeg path does not run or does not answer like ffmpeg.
    #[error(
        "ffmpeg at {} cannot be used: {reason}; fix the path or leave it unset to search PATH",
        path.display()
    )]
    FfmpegUnusable { path: PathBuf, reason: String },
    /// A command template does not parse.
    #[error("command engine `{name}`: template `{template}`: {reason}")]
    Template {
        name: String,
        template: String,
        reason: String,
    },
    /// A command engine's name is reserved or malformed.
    #[error("command engine name `{name}` {reason}")]
    BadName { name: String, reason: String },
}

/// One task for an engine.
#[derive(Debug, Clone)]
pub struct RenderRequest {
    /// The scene file, inside the unpacked bundle.
    pub scene: PathBuf,
    /// The unpacked bundle root; the engine's working directory.
    pub workdir: PathBuf,
    /// The task's frames (any order; duplicates are rendered once).
    pub frames: Vec<u32>,
    /// Where frame N must appear as `frame_NNNN.EXT`; exists and is empty.
    pub output_dir: PathBuf,
    /// Output format override (Blender `-F` name); `None` keeps the scene's own.
    pub output_format: Option<String>,
    /// Per-task time limit.
    pub timeout: Option<Duration>,
    /// The device Cycles renders on (`None`: the scene's own setting).
    pub device: Option<Device>,
    /// The GPU this task may use, when the node runs one task per GPU.
    pub gpu: Option<u32>,
}

/// How far a render has got, for heartbeats and the page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// 0.0 ..= 1.0 over the whole task.
    pub fraction: f32,
    /// The frame being rendered, when known.
    pub frame: Option<u32>,
    /// What the engine is doing, one short line.
    pub message: String,
}

/// A finished task: every requested frame has exactly one checked output.
#[derive(Debug)]
pub struct RenderOutput {
    /// Frame -> its output.
    pub frames: BTreeMap<u32, Frame>,
    /// The engine's whole log (capped, see [`RenderFailure::log`]).
    pub log: Vec<u8>,
    /// Wall time of the task.
    pub elapsed: Duration,
}

/// One rendered frame: the checked file an engine wrote into the output
/// directory, or the builtin engine's PNG in memory. The builtin's frames
/// never touch the disk before the store takes them: a file made, read
/// back and removed per frame was a large part of a short task's cost.
#[derive(Debug)]
pub enum Frame {
    File(PathBuf),
    Png(Vec<u8>),
}

impl Frame {
    /// The frame's file, for an engine that writes one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Frame::File(p) => Some(p),
            Frame::Png(_) => None,
        }
    }

    /// The file extension the frame is stored under (lower case; "bin"
    /// for a file without a usable one).
    pub fn ext(&self) -> String {
        match self {
            Frame::File(p) => p
                .extension()
                .and_then(|e| e.to_str())
                .filter(|e| crate::ledger::validate::is_extension(e))
                .unwrap_or("bin")
                .to_ascii_lowercase(),
            Frame::Png(_) => "png".into(),
        }
    }
}

/// Whether `engine` writes its frames as files into the request's output
/// directory. Every engine does but the builtin, which hands them over in
/// memory ([`Frame::Png`]) and needs no output directory.
pub fn writes_files(engine: &str) -> bool {
    engine != "builtin"
}

/// How a render attempt ended without usable output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The engine process could not be started.
    Spawn,
    /// Exited with a non-zero code.
    Exit(i32),
    /// Died by a signal.
    Signal(i32),
    /// Ran past the task's timeout.
    Timeout,
    /// Printed nothing for the stall limit.
    Stall,
    /// A requested frame has no output file.
    MissingOutput,
    /// An output file is empty or does not decode.
    BadOutput,
    /// The engine refused the task (bad scene, bad setting) before or while rendering.
    EngineError,
    /// The node cancelled the render (lost claim, job cancelled, shutdown).
    Cancelled,
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureKind::Spawn => f.write_str("could not start"),
            FailureKind::Exit(code) => write!(f, "exit code {code}"),
            FailureKind::Signal(sig) => write!(f, "killed by signal {sig}"),
            FailureKind::Timeout => f.write_str("timeout"),
            FailureKind::Stall => f.write_str("stalled"),
            FailureKind::MissingOutput => f.write_str("missing output"),
            FailureKind::BadOutput => f.write_str("bad output"),
            FailureKind::EngineError => f.write_str("engine error"),
            FailureKind::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl FailureKind {
    /// Whether this ending counts against the task's attempts (a cancel is the node's doing,
    /// recorded as `Released`, not `Failed`).
    pub fn counts_as_attempt(self) -> bool {
        self != FailureKind::Cancelled
    }
}

/// A failed render, ready for the ledger and the page.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {reason}")]
pub struct RenderFailure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// One line a person understands.
    pub reason: String,
    /// The last ~40 lines of the engine's output.
    pub log_tail: String,
    /// The whole log, capped at 16 MiB keeping head and tail.
    pub log: Vec<u8>,
}

/// The engines this node can run.
#[derive(Debug)]
pub struct Engines {
    blender: Option<blender::Blender>,
    ffmpeg: Option<ffmpeg::Ffmpeg>,
    commands: BTreeMap<String, command::Template>,
    threads: usize,
    stall: Duration,
    nice: i32,
}

impl Engines {
    /// Checks the configuration: finds Blender (and asks its version once), parses templates.
    pub fn new(cfg: &EngineConfig) -> Result<Engines, EngineError> {
        let blender = blender::Blender::locate(cfg.blender.as_deref())?;
        let ffmpeg = ffmpeg::Ffmpeg::locate(cfg.ffmpeg.as_deref())?;
        let mut commands = BTreeMap::new();
        for (name, template) in &cfg.commands {
            commands.insert(name.clone(), command::Template::parse(name, template)?);
        }
        Ok(Engines {
            blender,
            ffmpeg,
            commands,
            threads: cfg.threads,
            stall: cfg.stall,
            nice: cfg.nice,
        })
    }

    /// Names of the engines this node can run, sorted.
    pub fn names(&self) -> Vec<String> {
        self.describe().into_iter().map(|info| info.name).collect()
    }

    /// Name and version of each engine, sorted by name.
    pub fn describe(&self) -> Vec<EngineInfo> {
        let mut infos = vec![EngineInfo {
            name: "builtin".into(),
            version: format!("renderswarm {}", env!("CARGO_PKG_VERSION")),
        }];
        if let Some(blender) = &self.blender {
            infos.push(EngineInfo {
                name: "blender".into(),
                version: blender.version().to_owned(),
            });
        }
        if let Some(ffmpeg) = &self.ffmpeg {
            infos.push(EngineInfo {
                name: ENCODE_ENGINE.into(),
                version: ffmpeg.version().to_owned(),
            });
        }
        for (name, template) in &self.commands {
            infos.push(EngineInfo {
                name: name.clone(),
                version: format!("command: {}", template.source()),
            });
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    /// The Blender this node renders with, if any (it also gathers assets at submit).
    pub fn blender_path(&self) -> Option<&Path> {
        self.blender.as_ref().map(|b| b.path())
    }

    /// Whether this node can run `name`.
    pub fn has(&self, name: &str) -> bool {
        match name {
            "builtin" => true,
            "blender" => self.blender.is_some(),
            ENCODE_ENGINE => self.ffmpeg.is_some(),
            other => self.commands.contains_key(other),
        }
    }

    /// Renders one task and checks its output files.
    ///
    /// Progress goes to `progress` (with `send_replace`, so it works with no receiver). Cancelling
    /// `cancel` kills the engine's whole process group and returns a `Cancelled` failure;
    /// dropping the future kills it too. Every failure carries a one-line reason and the log.
    pub async fn render(
        &self,
        engine: &str,
        req: RenderRequest,
        cancel: CancellationToken,
        progress: watch::Sender<Progress>,
    ) -> Result<RenderOutput, RenderFailure> {
        let limits = (self.stall, self.nice);
        let job = Job::new(&req, &cancel, progress, limits, writes_files(engine))?;
        match engine {
            "builtin" => builtin_engine::render(&job, self.threads).await,
            "blender" => match &self.blender {
                Some(blender) => blender.render(&job, self.threads).await,
                None => Err(job.refuse("Blender is not installed on this node".into())),
            },
            ENCODE_ENGINE => match &self.ffmpeg {
                Some(ffmpeg) => ffmpeg.render(&job).await,
                None => Err(job.refuse("ffmpeg is not installed on this node".into())),
            },
            name => match self.commands.get(name) {
                Some(template) => template.render(&job).await,
                None => Err(job.refuse(format!(
                    "engine `{name}` is not configured on this node (it has: {})",
                    self.names().join(", ")
                ))),
            },
        }
    }
}

/// One task on its way through an engine: the checked request and the shared plumbing.
pub(crate) struct Job<'a> {
    pub(crate) req: &'a RenderRequest,
    /// Sorted, without duplicates, never empty.
    pub(crate) frames: Vec<u32>,
    pub(crate) cancel: &'a CancellationToken,
    pub(crate) progress: Arc<watch::Sender<Progress>>,
    pub(crate) started: Instant,
    pub(crate) limits: Limits,
}

impl<'a> Job<'a> {
    fn new(
        req: &'a RenderRequest,
        cancel: &'a CancellationToken,
        progress: watch::Sender<Progress>,
        (stall, nice): (Duration, i32),
        writes_files: bool,
    ) -> Result<Job<'a>, RenderFailure> {
        let started = Instant::now();
        let mut frames = req.frames.clone();
        frames.sort_unstable();
        frames.dedup();
        let job = Job {
            req,
            frames,
            cancel,
            progress: Arc::new(progress),
            started,
            limits: Limits {
                deadline: req.timeout.and_then(|t| started.checked_add(t)),
                timeout: req.timeout,
                stall,
                nice,
            },
        };
        if let Err(reason) = job.check_request(writes_files) {
            return Err(job.refuse(reason));
        }
        if cancel.is_cancelled() {
            let log = LogBuffer::new();
            return Err(job.fail(
                FailureKind::Cancelled,
                "cancelled before it started".into(),
                &log,
            ));
        }
        Ok(job)
    }

    /// The checks every engine needs before it starts (of the output
    /// directory, for one that writes files there).
    fn check_request(&self, writes_files: bool) -> Result<(), String> {
        let req = self.req;
        if self.frames.is_empty() {
            return Err("the task has no frames".into());
        }
        if !req.workdir.is_absolute() || !req.output_dir.is_absolute() {
            return Err(format!(
                "work directory {} and output directory {} must be absolute paths",
                req.workdir.display(),
                req.output_dir.display()
            ));
        }
        let scene = self.scene();
        if !is_inside(&scene, &req.workdir) {
            return Err(format!(
                "scene {} is outside the work directory {}",
                scene.display(),
                req.workdir.display()
            ));
        }
        if !scene.is_file() {
            return Err(format!("scene file {} does not exist", scene.display()));
        }
        if !writes_files {
            return Ok(());
        }
        let mut entries = std::fs::read_dir(&req.output_dir).map_err(|e| {
            format!(
                "output directory {} cannot be read: {e}",
                req.output_dir.display()
            )
        })?;
        if entries.next().is_some() {
            return Err(format!(
                "output directory {} is not empty; stale files would be taken for frames",
                req.output_dir.display()
            ));
        }
        Ok(())
    }

    /// The scene as an absolute path (relative scenes are taken from the work directory).
    pub(crate) fn scene(&self) -> PathBuf {
        self.req.workdir.join(&self.req.scene)
    }

    /// Publishes progress; the fraction is clamped to 0..=1.
    pub(crate) fn report(&self, fraction: f32, frame: Option<u32>, message: String) {
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.progress.send_replace(Progress {
            fraction,
            frame,
            message,
        });
    }

    /// A failure of `kind` with the log so far.
    pub(crate) fn fail(&self, kind: FailureKind, reason: String, log: &LogBuffer) -> RenderFailure {
        RenderFailure {
            kind,
            reason,
            log_tail: log.tail_text(),
            log: log.to_bytes(),
        }
    }

    /// An `EngineError` failure before anything ran.
    pub(crate) fn refuse(&self, reason: String) -> RenderFailure {
        let mut log = LogBuffer::new();
        log.note(&reason);
        self.fail(FailureKind::EngineError, reason, &log)
    }

    /// Checks the output files once the engine has ended; `hint` (what the engine complained
    /// about) is added to a missing-output reason.
    pub(crate) async fn finish(
        &self,
        mut log: LogBuffer,
        hint: Option<String>,
    ) -> Result<RenderOutput, RenderFailure> {
        let dir = self.req.output_dir.clone();
        let frames = self.frames.clone();
        let checked = tokio::task::spawn_blocking(move || output::check_outputs(&dir, &frames))
            .await
            .unwrap_or_else(|e| {
                Err(output::OutputProblem::Bad(format!(
                    "output check failed: {e}"
                )))
            });
        match checked {
            Ok(files) => {
                log.note(&format!("{} frame file(s) checked", files.len()));
                self.report(1.0, self.frames.last().copied(), "done".into());
                Ok(RenderOutput {
                    frames: files
                        .into_iter()
                        .map(|(f, p)| (f, Frame::File(p)))
                        .collect(),
                    log: log.to_bytes(),
                    elapsed: self.started.elapsed(),
                })
            }
            Err(problem) => {
                let (kind, mut reason) = problem.into_failure();
                if let (FailureKind::MissingOutput, Some(hint)) = (kind, hint) {
                    reason = format!("{reason}; the engine said: {hint}");
                }
                log.note(&reason);
                Err(self.fail(kind, reason, &log))
            }
        }
    }
}

/// Whether `path` stays inside `root` lexically (no `..`, same prefix).
fn is_inside(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
        && path
            .components()
            .all(|c| !matches!(c, Component::ParentDir | Component::CurDir))
}

#[cfg(test)]
mod tests;
