//! Turning a submission into a job: check everything, then import the scene,
//! then write the job to the ledger.
//!
//! Every check names the request field it concerns, so the CLI can exit 2
//! with the message and the page can show it next to the right input.
//! Nothing is written to the ledger unless every check passed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Inner, Severity};
use crate::ledger::validate::{self, MAX_ATTEMPTS};
use crate::ledger::{DEVICE_OPTION, FrameRange, JobId, JobSpec};
use crate::render::builtin;
use crate::render::gather::{Gathered, gather, missing_message};
use crate::render::{BLENDER_FORMATS, Codec, Device, ENCODE_ENGINE, FPS_RANGE, UnknownDevice};

/// A request to render a scene, as the API and the CLI send it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// Absolute path, on this node's machine, of a scene file or a project
    /// folder (absent in an upload's `request` part: the upload is the scene).
    #[serde(default)]
    pub scene: String,
    /// The scene file inside a project folder (relative to it).
    #[serde(default)]
    pub scene_file: Option<String>,
    /// `builtin`, `blender` or a command engine's name; default from the
    /// scene's extension (`.blend` -> blender, `.toml` -> builtin).
    #[serde(default)]
    pub engine: Option<String>,
    /// `A-B`, `A-B:STEP` or `N`.
    pub frames: String,
    #[serde(default)]
    pub frames_per_task: Option<u32>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Per-task timeout in seconds.
    #[serde(default)]
    pub timeout: Option<u32>,
    #[serde(default)]
    pub name: Option<String>,
    /// Absolute directory on this node where finished frames are written.
    #[serde(default)]
    pub out: Option<String>,
    #[serde(default)]
    pub output_format: Option<String>,
    #[serde(default)]
    pub requirements: Vec<String>,
    /// Where Cycles renders: cpu, cuda, optix, hip, metal, oneapi or auto
    /// (Blender jobs only; a GPU backend becomes a requirement).
    #[serde(default)]
    pub device: Option<String>,
    /// Encode the finished frames into a movie: `mp4` or `prores`.
    #[serde(default)]
    pub encode: Option<String>,
    /// The movie's frames per second (default 24).
    #[serde(default)]
    pub fps: Option<u32>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Submit even when files the scene uses are missing (default: refuse,
    /// naming each).
    #[serde(default)]
    pub allow_missing: Option<bool>,
    /// Gather a `.blend`'s assets into a project folder (default: yes, when
    /// this node has Blender). An upload is never gathered: it is the
    /// bundle already.
    #[serde(default)]
    pub gather: Option<bool>,
}

/// A submission that was refused: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SubmitError {
    pub field: &'static str,
    pub message: String,
    /// The node failed, not the request (a 5xx, not a 4xx).
    pub internal: bool,
}

fn bad(field: &'static str, message: impl Into<String>) -> SubmitError {
    SubmitError {
        field,
        message: message.into(),
        internal: false,
    }
}

/// Defaults a submission gets.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The scene, located and checked.
struct Scene {
    /// What is imported: the file, or the project folder.
    root: PathBuf,
    /// The scene file's path inside the bundle.
    file: String,
    /// The scene file on disk.
    path: PathBuf,
}

impl Inner {
    /// Check a submission, import its scene, and add the job.
    pub async fn submit(&self, req: SubmitRequest) -> Result<JobId, SubmitError> {
        let frames: FrameRange = req
            .frames
            .parse()
            .map_err(|e: crate::ledger::FrameRangeError| bad("frames", e.to_string()))?;
        let mut scene = locate_scene(&req, &self.cfg.name)?;
        let engine = self.choose_engine(&req, &scene)?;
        let spec_probe = self.check_settings(&req, &engine, frames)?;
        let encode = check_encode(&req)?;
        if engine == "builtin" {
            check_builtin_scene(&scene.path)?;
        }
        // Held until the import is done: the staging folder is removed on drop.
        let _gathered = self.gather_assets(&req, &engine, &mut scene).await?;
        let store = self.store.clone();
        let root = scene.root.clone();
        let blob = tokio::task::spawn_blocking(move || store.import_bundle(&root))
            .await
            .map_err(|e| internal(e.to_string()))?
            .map_err(|e| bad("scene", format!("cannot import the scene: {e}")))?;
        self.hold_blob(blob);
        let spec = JobSpec {
            name: req
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| default_name(&scene)),
            scene: blob,
            scene_file: scene.file.clone(),
            engine,
            submitter: self.id.clone(),
            submitted_ms: super::events::now_ms(),
            ..spec_probe
        };
        validate::check_spec(&spec).map_err(|e| bad("frames", e.to_string()))?;
        let id = self.add_job(&spec).await?;
        if let Some((codec, fps)) = encode {
            let movie = super::encode::encode_spec(id, &spec, codec, fps);
            self.add_job(&movie).await?;
        }
        Ok(id)
    }

    /// Writes a checked spec to the ledger, durably, and tells the swarm.
    async fn add_job(&self, spec: &JobSpec) -> Result<JobId, SubmitError> {
        if spec.collect_dir.is_some() {
            let mark = super::DataDirs::of(&self.cfg.data_dir)
                .submitted
                .join(crate::ledger::job_id(spec).to_string());
            std::fs::write(&mark, b"")
                .map_err(|e| internal(format!("cannot write {}: {e}", mark.display())))?;
        }
        let (id, delta) = self
            .ledger
            .submit(spec.clone())
            .map_err(|e| internal(e.to_string()))?;
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || ledger.flush())
            .await
            .map_err(|e| internal(e.to_string()))?
            .map_err(|e| internal(e.to_string()))?;
        if let Some(net) = &self.net {
            net.publish_delta(id, &delta, Vec::new());
        }
        self.events.push(
            Severity::Info,
            "job_submitted",
            Some(id),
            None,
            format!(
                "job {} submitted: {} frames {} on {}",
                spec.name, spec.engine, spec.frames, self.cfg.name
            ),
        );
        Ok(id)
    }

    /// A `.blend` given as a path becomes a project folder holding every
    /// file it uses, gathered with this node's Blender (see
    /// [`crate::render::gather`]). Without Blender here, the file goes alone,
    /// as it always did.
    async fn gather_assets(
        &self,
        req: &SubmitRequest,
        engine: &str,
        scene: &mut Scene,
    ) -> Result<Option<Gathered>, SubmitError> {
        let is_blend_file = scene.root == scene.path && scene.file.ends_with(".blend");
        if engine != "blender" || !is_blend_file || req.gather == Some(false) {
            return Ok(None);
        }
        let Some(blender) = self.engines.blender_path().map(Path::to_path_buf) else {
            return Ok(None);
        };
        let temp = super::DataDirs::of(&self.cfg.data_dir).uploads;
        let path = scene.path.clone();
        let gathered = tokio::task::spawn_blocking(move || gather(&blender, &path, Some(&temp)))
            .await
            .map_err(|e| internal(e.to_string()))?
            .map_err(|e| bad("scene", format!("cannot gather the scene's assets: {e}")))?;
        if !gathered.missing.is_empty() && req.allow_missing != Some(true) {
            return Err(bad("scene", missing_message(&gathered.missing)));
        }
        self.events.push(
            Severity::Info,
            "assets_gathered",
            None,
            None,
            format!(
                "gathered {} files ({} bytes) for {}; {} missing",
                gathered.files.len(),
                gathered.bytes(),
                scene.file,
                gathered.missing.len()
            ),
        );
        scene.root = gathered.root();
        scene.path = scene.root.join(&gathered.scene_file);
        scene.file = gathered.scene_file.clone();
        Ok(Some(gathered))
    }

    fn choose_engine(&self, req: &SubmitRequest, scene: &Scene) -> Result<String, SubmitError> {
        let engine = match req
            .engine
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            Some(e) => e.to_string(),
            None => match Path::new(&scene.file).extension().and_then(|e| e.to_str()) {
                Some("blend") => "blender".to_string(),
                Some("toml") => "builtin".to_string(),
                _ => {
                    return Err(bad(
                        "engine",
                        "cannot tell the engine from the scene's extension; name one with --engine",
                    ));
                }
            },
        };
        // Said whether or not a node has ffmpeg: the name is not wrong, the
        // way of asking is.
        if engine == ENCODE_ENGINE {
            return Err(bad(
                "engine",
                "`ffmpeg` encodes a job's frames: submit the scene with --encode mp4|prores instead",
            ));
        }
        let mut known: BTreeSet<String> = self.engines.names().into_iter().collect();
        let now = std::time::Instant::now();
        let peers = super::lock(&self.peers);
        for p in peers.alive(now) {
            known.extend(p.heartbeat.engines.iter().cloned());
        }
        if !known.contains(&engine) {
            let list: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err(bad(
                "engine",
                format!(
                    "unknown engine `{engine}`: no live node has it (known here: {})",
                    list.join(", ")
                ),
            ));
        }
        Ok(engine)
    }

    /// Everything but the scene, as a spec with placeholders for the scene.
    fn check_settings(
        &self,
        req: &SubmitRequest,
        engine: &str,
        frames: FrameRange,
    ) -> Result<JobSpec, SubmitError> {
        let count = frames.count();
        if count > validate::MAX_FRAMES {
            return Err(bad(
                "frames",
                format!(
                    "frame range `{}` holds {count} frames; a job may hold at most {}",
                    req.frames,
                    validate::MAX_FRAMES
                ),
            ));
        }
        let frames_per_task = req.frames_per_task.unwrap_or(1);
        if frames_per_task == 0 {
            return Err(bad("frames_per_task", "frames per task must be at least 1"));
        }
        let max_attempts = req.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if max_attempts == 0 || max_attempts > MAX_ATTEMPTS {
            return Err(bad(
                "max_attempts",
                format!("max attempts must be between 1 and {MAX_ATTEMPTS}, not {max_attempts}"),
            ));
        }
        if req.timeout == Some(0) {
            return Err(bad("timeout", "the timeout must be at least 1 second"));
        }
        let output_format = req
            .output_format
            .as_ref()
            .map(|f| f.trim().to_ascii_uppercase())
            .filter(|f| !f.is_empty());
        if let Some(f) = &output_format
            && engine == "blender"
            && !BLENDER_FORMATS.contains(&f.as_str())
        {
            return Err(bad(
                "output_format",
                format!(
                    "`{f}` is not a Blender output format (one of {})",
                    BLENDER_FORMATS.join(", ")
                ),
            ));
        }
        let collect_dir = check_out(req.out.as_deref())?;
        let mut requirements: BTreeSet<String> = req
            .requirements
            .iter()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect();
        let mut options = req.options.clone();
        if let Some(device) = check_device(req, engine)? {
            options.insert(DEVICE_OPTION.into(), device.as_str().into());
            requirements.extend(device.required_tag().map(String::from));
        }
        Ok(JobSpec {
            name: String::new(),
            scene: Default::default(),
            scene_file: String::new(),
            engine: engine.to_string(),
            frames,
            frames_per_task,
            priority: req.priority.unwrap_or(0),
            output_format,
            requirements,
            max_attempts,
            timeout_secs: req.timeout,
            collect_dir,
            options,
            submitter: self.id.clone(),
            submitted_ms: 0,
        })
    }
}

fn internal(message: String) -> SubmitError {
    SubmitError {
        field: "",
        message,
        internal: true,
    }
}

/// The movie to make of the frames, if any: codec and frame rate.
fn check_encode(req: &SubmitRequest) -> Result<Option<(Codec, u32)>, SubmitError> {
    let Some(codec) = req
        .encode
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    else {
        if req.fps.is_some() {
            return Err(bad(
                "fps",
                "a frame rate is for a movie: add --encode mp4|prores",
            ));
        }
        return Ok(None);
    };
    let codec: Codec = codec.parse().map_err(|e: String| bad("encode", e))?;
    let fps = req.fps.unwrap_or(24);
    if !FPS_RANGE.contains(&fps) {
        return Err(bad(
            "fps",
            format!(
                "the frame rate must be between {} and {}, not {fps}",
                FPS_RANGE.start(),
                FPS_RANGE.end()
            ),
        ));
    }
    Ok(Some((codec, fps)))
}

/// The device a Blender job renders on, from `device` or `options.device`.
fn check_device(req: &SubmitRequest, engine: &str) -> Result<Option<Device>, SubmitError> {
    let given = req
        .device
        .as_deref()
        .or(req.options.get(DEVICE_OPTION).map(String::as_str))
        .map(str::trim)
        .filter(|d| !d.is_empty());
    let Some(given) = given else {
        return Ok(None);
    };
    let device: Device = given
        .parse()
        .map_err(|e: UnknownDevice| bad("device", e.to_string()))?;
    if engine != "blender" {
        return Err(bad(
            "device",
            format!(
                "a device is chosen for Blender's Cycles only; this job's engine is `{engine}`"
            ),
        ));
    }
    Ok(Some(device))
}

fn check_out(out: Option<&str>) -> Result<Option<String>, SubmitError> {
    let Some(out) = out.map(str::trim).filter(|o| !o.is_empty()) else {
        return Ok(None);
    };
    let path = Path::new(out);
    if !path.is_absolute() {
        return Err(bad(
            "out",
            format!("output directory `{out}` must be an absolute path on this node"),
        ));
    }
    if path.exists() && !path.is_dir() {
        return Err(bad("out", format!("`{out}` exists and is not a directory")));
    }
    Ok(Some(out.to_string()))
}

/// Find the scene the request names, and make sure it can be read.
fn locate_scene(req: &SubmitRequest, node_name: &str) -> Result<Scene, SubmitError> {
    let given = req.scene.trim();
    if given.is_empty() {
        return Err(bad(
            "scene",
            "no scene given: name a scene file or a project folder",
        ));
    }
    let path = PathBuf::from(given);
    if !path.is_absolute() {
        return Err(bad(
            "scene",
            format!("scene path `{given}` must be absolute (a path on node {node_name})"),
        ));
    }
    let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad(
            "scene",
            format!("scene `{given}` does not exist on node {node_name}"),
        ),
        _ => bad("scene", format!("cannot read scene `{given}`: {e}")),
    })?;
    let scene = if meta.is_dir() {
        let file = match req
            .scene_file
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty())
        {
            Some(f) => f.to_string(),
            None => only_scene_in(&path)?,
        };
        if !validate::is_safe_relative(&file) {
            return Err(bad(
                "scene_file",
                format!("scene file `{file}` must be a relative path inside `{given}`"),
            ));
        }
        Scene {
            path: path.join(&file),
            root: path,
            file,
        }
    } else {
        if req
            .scene_file
            .as_deref()
            .is_some_and(|f| !f.trim().is_empty())
        {
            return Err(bad(
                "scene_file",
                "--scene-file is for project folders; the scene given is a file",
            ));
        }
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                bad(
                    "scene",
                    format!("scene file name `{given}` is not valid UTF-8"),
                )
            })?
            .to_string();
        Scene {
            root: path.clone(),
            path,
            file,
        }
    };
    std::fs::File::open(&scene.path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut [0u8; 1]))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => bad(
                "scene_file",
                format!(
                    "scene file `{}` is not in the project folder `{given}`",
                    scene.file
                ),
            ),
            _ => bad(
                "scene",
                format!("cannot read scene `{}`: {e}", scene.path.display()),
            ),
        })?;
    Ok(scene)
}

/// The one `.blend` or `.toml` at the top of a project folder.
fn only_scene_in(dir: &Path) -> Result<String, SubmitError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| bad("scene", format!("cannot list `{}`: {e}", dir.display())))?;
    let found: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".blend") || n.ends_with(".toml"))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(bad(
            "scene_file",
            format!(
                "no .blend or .toml scene at the top of `{}`: name it with --scene-file",
                dir.display()
            ),
        )),
        many => Err(bad(
            "scene_file",
            format!(
                "`{}` holds several scenes ({}): name one with --scene-file",
                dir.display(),
                many.join(", ")
            ),
        )),
    }
}

/// Parse a builtin scene now, so a typo is reported at submission and not
/// as every task failing.
fn check_builtin_scene(path: &Path) -> Result<(), SubmitError> {
    let limit = builtin::MAX_SCENE_BYTES as u64;
    if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) > limit {
        return Err(bad(
            "scene",
            format!(
                "scene `{}` is over {} MiB: not a builtin scene",
                path.display(),
                limit >> 20
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        bad(
            "scene",
            format!("cannot read scene `{}`: {e}", path.display()),
        )
    })?;
    builtin::Scene::parse(&text).map_err(|e| {
        bad(
            "scene",
            format!(
                "scene `{}` is not a valid builtin scene: {e}",
                path.display()
            ),
        )
    })?;
    Ok(())
}

fn default_name(scene: &Scene) -> String {
    Path::new(&scene.file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("job")
        .to_string()
}
