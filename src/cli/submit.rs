//! `swarm submit`: send a scene to a node, optionally wait for it and
//! collect the frames.
//!
//! To a node on this machine the scene is passed as a path (no copy); to a
//! node elsewhere, or with `--upload`, the file or folder is uploaded,
//! streamed from disk. With `--wait`, progress is a bar on a terminal and
//! plain lines otherwise, and the exit code says whether every frame is done.
//!
//! A `.blend` that is uploaded first has its assets gathered here, with this
//! machine's Blender, into a project folder that is uploaded instead (see
//! [`crate::render::gather`]); a `.blend` passed as a path is gathered by
//! the node. Missing files stop the submission (exit 2) unless
//! `--allow-missing`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::jobs::{api, download_frames, frames_label};
use super::{Api, ApiArgs, BadInput, print_json};
use crate::ledger::{FrameRange, JobStatus, TaskStatus};
use crate::node::SubmitRequest;
use crate::node::views::JobView;
use crate::render::gather::{GatherError, Gathered, gather, missing_message};
use crate::render::locate_blender;

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The scene: a file, or a project folder (then --scene-file names the scene in it).
    pub scene: PathBuf,
    /// Frames to render: A-B, A-B:STEP or N.
    #[arg(long)]
    pub frames: String,
    /// builtin, blender or a command engine's name (default: from the scene's extension).
    #[arg(long)]
    pub engine: Option<String>,
    /// The scene file inside a project folder.
    #[arg(long)]
    pub scene_file: Option<String>,
    /// Consecutive frames per task (one engine process renders them all).
    #[arg(long, default_value_t = 1)]
    pub frames_per_task: u32,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Failed attempts per task before it is given up.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Per-task timeout in seconds.
    #[arg(long)]
    pub timeout: Option<u32>,
    /// The job's name (default: the scene's file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Override the scene's output format (Blender -F names: PNG, OPEN_EXR, ...).
    #[arg(long)]
    pub output_format: Option<String>,
    /// Where Cycles renders: cpu, cuda, optix, hip, metal, oneapi or auto
    /// (a GPU backend is required of the nodes that take the job; auto uses
    /// the best GPU a node has, else its CPU).
    #[arg(long)]
    pub device: Option<String>,
    /// When every frame is in, encode them into a movie: mp4 (H.264) or
    /// prores (ProRes 422 HQ), kept as `movie.mp4` / `movie.mov` with the frames.
    #[arg(long, value_name = "FORMAT")]
    pub encode: Option<String>,
    /// The movie's frames per second.
    #[arg(long, requires = "encode")]
    pub fps: Option<u32>,
    /// A tag nodes must have to take the job (repeatable).
    #[arg(long = "require")]
    pub requirements: Vec<String>,
    /// Wait until the job ends, showing progress; exit 0 only if every frame is done.
    #[arg(long)]
    pub wait: bool,
    /// Write the finished frames here as frame_0001.png, ...
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Upload the scene even to a node on this machine.
    #[arg(long)]
    pub upload: bool,
    /// Submit even if files the scene uses are missing.
    #[arg(long)]
    pub allow_missing: bool,
    /// Send a .blend alone, without gathering the files it uses.
    #[arg(long)]
    pub no_gather: bool,
    /// The Blender that gathers a .blend's files before an upload (default: `blender` on PATH).
    #[arg(long)]
    pub blender: Option<PathBuf>,
    /// Print the new job as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

pub async fn run(args: SubmitArgs) -> Result<i32> {
    let frames: FrameRange = args
        .frames
        .parse()
        .map_err(|e: crate::ledger::FrameRangeError| BadInput(e.to_string()))?;
    let scene = check_scene(&args.scene)?;
    let out = args.out.as_deref().map(absolute).transpose()?;
    let api = api(&args.api)?;
    let upload = args.upload || !api.is_local();
    let gathered = if upload {
        gather_for_upload(&args, &scene).await?
    } else {
        None
    };
    let req = SubmitRequest {
        scene: scene.display().to_string(),
        scene_file: match &gathered {
            Some(g) => Some(g.scene_file.clone()),
            None => args.scene_file.clone(),
        },
        engine: args.engine.clone(),
        frames: frames.to_string(),
        frames_per_task: Some(args.frames_per_task),
        priority: Some(args.priority),
        max_attempts: Some(args.max_attempts),
        timeout: args.timeout,
        name: args.name.clone(),
        out: if upload {
            None
        } else {
            out.as_ref().map(|o| o.display().to_string())
        },
        output_format: args.output_format.clone(),
        requirements: args.requirements.clone(),
        device: args.device.clone(),
        encode: args.encode.clone(),
        fps: args.fps,
        options: BTreeMap::new(),
        allow_missing: args.allow_missing.then_some(true),
        gather: args.no_gather.then_some(false),
    };
    let job: JobView = if upload {
        let bundle = gathered
            .as_ref()
            .map_or_else(|| scene.clone(), |g| g.root());
        api.post_multipart("/jobs/upload", upload_form(&req, &bundle).await?)
            .await?
    } else {
        api.post("/jobs", &req).await?
    };
    if args.json {
        print_json(&job)?;
    } else {
        eprintln!(
            "submitted job {} ({}): {} frames in {} tasks",
            &job.id[..12],
            job.name,
            job.frames_total,
            job.tasks_total
        );
    }
    if !args.wait {
        if upload && out.is_some() {
            eprintln!(
                "note: --out with a node on another machine needs --wait (the frames are downloaded by this command)"
            );
        }
        return Ok(0);
    }
    let collect = match (&out, upload) {
        (Some(dir), true) => Collect::Download(dir.clone()),
        (Some(_), false) => Collect::ByNode,
        (None, _) => Collect::Nothing,
    };
    let code = wait(&api, &job.id, collect.clone()).await?;
    if code != 0 || args.encode.is_none() {
        return Ok(code);
    }
    let movie = encode_job_of(&api, &job.id).await?;
    eprintln!("encoding the frames: job {}", &movie[..12]);
    wait(&api, &movie, collect).await
}

/// The encode job made with render job `id`.
async fn encode_job_of(api: &Api, id: &str) -> Result<String> {
    let jobs: Vec<JobView> = api.get("/jobs?tasks=false").await?;
    jobs.into_iter()
        .find(|j| {
            j.options
                .get(crate::ledger::ENCODE_OF_OPTION)
                .map(String::as_str)
                == Some(id)
        })
        .map(|j| j.id)
        .ok_or_else(|| anyhow::anyhow!("the node shows no encode job for job {}", &id[..12]))
}

/// A `.blend` about to be uploaded, with every file it uses, as a staging
/// project folder; `None` when it goes as it is.
async fn gather_for_upload(args: &SubmitArgs, scene: &Path) -> Result<Option<Gathered>> {
    let is_blend = scene.is_file() && scene.extension().is_some_and(|e| e == "blend");
    let for_blender = args.engine.as_deref().is_none_or(|e| e == "blender");
    if !is_blend || !for_blender || args.no_gather {
        return Ok(None);
    }
    let blender = locate_blender(args.blender.as_deref())
        .map_err(|e| BadInput(e.to_string()))?
        .ok_or_else(|| BadInput(no_blender(scene)))?;
    let path = scene.to_path_buf();
    let gathered = tokio::task::spawn_blocking(move || gather(&blender, &path, None))
        .await?
        .map_err(|e| match e {
            GatherError::Blender { .. } => anyhow::Error::from(BadInput(e.to_string())),
            GatherError::Io { .. } => e.into(),
        })?;
    if !gathered.missing.is_empty() {
        if !args.allow_missing {
            return Err(BadInput(missing_message(&gathered.missing)).into());
        }
        eprintln!("warning: {}", missing_message(&gathered.missing));
    }
    let count = gathered.files.len();
    eprintln!(
        "gathered {count} file{} ({} bytes) with the scene",
        if count == 1 { "" } else { "s" },
        gathered.bytes()
    );
    Ok(Some(gathered))
}

fn no_blender(scene: &Path) -> String {
    let name = scene
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "no Blender on this machine to gather the files `{name}` uses (textures, libraries, caches): \
         submit its project folder instead (`swarm submit FOLDER --scene-file {name} ...`), \
         name Blender with --blender PATH, or pass --no-gather to send the .blend alone"
    )
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("cannot read the current directory")?
        .join(p))
}

/// The scene must exist and be readable here, before anything is sent.
fn check_scene(scene: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(scene).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            BadInput(format!("scene `{}` does not exist", scene.display()))
        }
        _ => BadInput(format!("cannot read scene `{}`: {e}", scene.display())),
    })?;
    if meta.is_file() {
        std::fs::File::open(scene)
            .map_err(|e| BadInput(format!("cannot read scene `{}`: {e}", scene.display())))?;
    }
    let abs = scene
        .canonicalize()
        .map_err(|e| BadInput(format!("cannot resolve `{}`: {e}", scene.display())))?;
    Ok(abs)
}

/// The multipart body: the request, then every file, streamed from disk.
async fn upload_form(req: &SubmitRequest, scene: &Path) -> Result<reqwest::multipart::Form> {
    let mut form = reqwest::multipart::Form::new().text("request", serde_json::to_string(req)?);
    let files = if scene.is_dir() {
        walk(scene)?
    } else {
        vec![scene.to_path_buf()]
    };
    let base = if scene.is_dir() {
        scene
    } else {
        scene.parent().unwrap_or(scene)
    };
    for f in files {
        let rel = f
            .strip_prefix(base)
            .map(|r| r.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
        let file = tokio::fs::File::open(&f)
            .await
            .with_context(|| format!("cannot read {}", f.display()))?;
        let len = file.metadata().await?.len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        form = form.part(
            "file",
            reqwest::multipart::Part::stream_with_length(body, len).file_name(rel),
        );
    }
    Ok(form)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    crate::render::gather::files_under(dir)
        .map_err(|(d, e)| anyhow::Error::new(e).context(format!("cannot list {}", d.display())))
}

/// Wait for a job the node collects itself; the exit code says whether
/// every frame is done.
pub(crate) async fn wait_collected(api: &Api, id: &str) -> Result<i32> {
    wait(api, id, Collect::ByNode).await
}

#[derive(Clone)]
enum Collect {
    Nothing,
    /// The node writes the frames (it is on this machine).
    ByNode,
    /// This command downloads them.
    Download(PathBuf),
}

async fn wait(api: &Api, id: &str, collect: Collect) -> Result<i32> {
    let mut progress = Progress::new();
    let path = format!("/jobs/{id}");
    let job = loop {
        let job: JobView = api.get(&path).await?;
        progress.show(&job);
        if let Collect::Download(dir) = &collect {
            download_frames(api, &job, dir, &mut |_| {}).await?;
        }
        let collected = !matches!(collect, Collect::ByNode) || job.collected;
        if job.status.is_final() && (collected || job.status != JobStatus::Done) {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    progress.finish();
    Ok(verdict(&job))
}

/// Exit 0 when every frame is done; otherwise say which frames are not.
fn verdict(job: &JobView) -> i32 {
    match job.status {
        JobStatus::Done => {
            eprintln!(
                "job {} done: {} frames, {} renders wasted",
                job.name, job.frames_done, job.renders_wasted
            );
            0
        }
        JobStatus::Cancelled => {
            eprintln!(
                "job {} was cancelled with {} of {} frames done",
                job.name, job.frames_done, job.frames_total
            );
            1
        }
        _ => {
            let failed: Vec<_> = job
                .tasks
                .iter()
                .flatten()
                .filter(|t| t.status == TaskStatus::Failed)
                .collect();
            eprintln!(
                "job {} failed: {} of {} frames done; failed frames:",
                job.name, job.frames_done, job.frames_total
            );
            for t in failed {
                let reason = t
                    .reason
                    .as_deref()
                    .and_then(|r| r.lines().next())
                    .unwrap_or("no reason recorded");
                eprintln!(
                    "  frames {} (task {}, {} attempts): {reason}",
                    frames_label(&t.frames),
                    t.index,
                    t.failures
                );
            }
            1
        }
    }
}

/// Progress as a bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last: Option<(u64, &'static str)>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            bar: None,
            last: None,
        }
    }

    fn show(&mut self, job: &JobView) {
        let status = job.status.as_str();
        if std::io::stderr().is_terminal() {
            let bar = self.bar.get_or_insert_with(|| {
                let b = indicatif::ProgressBar::new(job.frames_total);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {msg:12} [{bar:40}] {pos}/{len} frames  eta {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b
            });
            bar.set_position(job.frames_done);
            bar.set_message(status.to_string());
            bar.tick();
        } else if self.last != Some((job.frames_done, status)) {
            eprintln!(
                "job {}: {status}, {}/{} frames done",
                job.name, job.frames_done, job.frames_total
            );
            self.last = Some((job.frames_done, status));
        }
    }

    fn finish(&mut self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}
