//! The `ffmpeg` engine: a job's finished frames, encoded into one movie.
//!
//! An encode is an ordinary job of its own (see `node::encode`): one task of
//! one "frame", claimed, leased, retried and collected like any other, so a
//! submitter that is gone when the frames are in leaves it to whichever node
//! has ffmpeg. The worker lays the frames out as `000001.EXT`, `000002.EXT`,
//! ... in the task's input folder (so a stepped range still numbers 1, 2, 3)
//! next to `encode.toml` ([`EncodeSettings`]); this engine reads both and
//! writes `frame_0001.mp4` (H.264, yuv420p, even dimensions, for players
//! everywhere) or `frame_0001.mov` (ProRes 422 HQ, for editing). ffmpeg's
//! `-progress` lines give the progress; its last error line is the reason of
//! a failure. Nothing from the job reaches ffmpeg but the codec (one of two
//! fixed argument lists) and the frame rate (a number).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::log::LogBuffer;
use super::runner::{self, Invocation};
use super::{EngineError, Job, RenderFailure, RenderOutput};

/// The engine name encode jobs use.
pub const ENCODE_ENGINE: &str = "ffmpeg";
/// The settings file the worker writes into an encode task's input folder.
pub const ENCODE_SETTINGS_FILE: &str = "encode.toml";

/// The movie formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// H.264 in MP4.
    Mp4,
    /// Apple ProRes 422 HQ in QuickTime.
    Prores,
}

impl Codec {
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Mp4 => "mp4",
            Codec::Prores => "prores",
        }
    }

    /// The movie file's extension.
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Mp4 => "mp4",
            Codec::Prores => "mov",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Codec::Mp4 => &[
                "-c:v",
                "libx264",
                "-preset",
                "medium",
                "-crf",
                "18",
                "-pix_fmt",
                "yuv420p",
                // yuv420p needs even dimensions.
                "-vf",
                "scale=trunc(iw/2)*2:trunc(ih/2)*2",
                "-movflags",
                "+faststart",
            ],
            Codec::Prores => &[
                "-c:v",
                "prores_ks",
                "-profile:v",
                "3",
                "-pix_fmt",
                "yuv422p10le",
            ],
        }
    }
}

impl std::str::FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Codec, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mp4" | "h264" => Ok(Codec::Mp4),
            "prores" | "mov" => Ok(Codec::Prores),
            other => Err(format!("unknown movie format `{other}`: use mp4 or prores")),
        }
    }
}

/// What an encode task makes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodeSettings {
    pub codec: Codec,
    /// Frames per second of the movie.
    pub fps: u32,
}

/// Frame rates a movie may have.
pub const FPS_RANGE: std::ops::RangeInclusive<u32> = 1..=240;

/// An ffmpeg executable that answered `-version`.
#[derive(Debug, Clone)]
pub(crate) struct Ffmpeg {
    path: PathBuf,
    version: String,
}

impl Ffmpeg {
    /// The configured ffmpeg (which must work), else `ffmpeg` on `PATH`
    /// (one that does not answer there is skipped: the node runs without).
    pub(crate) fn locate(configured: Option<&Path>) -> Result<Option<Ffmpeg>, EngineError> {
        if let Some(path) = configured {
            let version = super::blender::version_of(path, "ffmpeg").map_err(|reason| {
                EngineError::FfmpegUnusable {
                    path: path.to_owned(),
                    reason,
                }
            })?;
            return Ok(Some(Ffmpeg {
                path: path.to_owned(),
                version,
            }));
        }
        let Some(path) = super::blender::find_in_path("ffmpeg") else {
            return Ok(None);
        };
        match super::blender::version_of(&path, "ffmpeg") {
            Ok(version) => Ok(Some(Ffmpeg { path, version })),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "ffmpeg on PATH is unusable; encoding disabled");
                Ok(None)
            }
        }
    }

    /// `ffmpeg version 5.1.6-0+deb12u1 ...`, cut at the copyright.
    pub(crate) fn version(&self) -> &str {
        self.version
            .split(" Copyright")
            .next()
            .unwrap_or(&self.version)
    }

    /// Encodes the frames of the task's input folder into `frame_0001.EXT`.
    pub(crate) async fn render(&self, job: &Job<'_>) -> Result<RenderOutput, RenderFailure> {
        let (settings, frames) = read_inputs(job).map_err(|reason| job.refuse(reason))?;
        let inv = Invocation {
            program: self.path.clone().into_os_string(),
            args: build_args(&settings, &frames, &job.req.output_dir),
            cwd: job.req.workdir.clone(),
        };
        let mut log = LogBuffer::new();
        log.note(&format!(
            "encoding {} frames: {}",
            frames.count,
            inv.display()
        ));
        job.report(0.0, Some(1), format!("encoding {} frames", frames.count));
        let mut last_error: Option<String> = None;
        let mut on_line = |line: &str| {
            let line = line.trim();
            if let Some(n) = line
                .strip_prefix("frame=")
                .and_then(|n| n.trim().parse::<u32>().ok())
            {
                let fraction = n as f32 / frames.count.max(1) as f32;
                job.report(
                    fraction,
                    Some(1),
                    format!("encoded {n}/{} frames", frames.count),
                );
            } else if !line.is_empty() && !line.contains('=') {
                last_error = Some(line.to_string());
            }
        };
        let ending = runner::run(&inv, &job.limits, job.cancel, &mut log, &mut on_line).await;
        if let Some((kind, why)) = ending.judge(&job.limits, "ffmpeg", last_error.as_deref()) {
            log.note(&why);
            return Err(job.fail(kind, why, &log));
        }
        job.finish(log, last_error).await
    }
}

/// The frames laid out for ffmpeg: `000001.EXT` .. `{count:06}.EXT`.
#[derive(Debug, PartialEq)]
struct Frames {
    ext: String,
    count: usize,
}

fn read_inputs(job: &Job<'_>) -> Result<(EncodeSettings, Frames), String> {
    if job.frames != [1] {
        return Err("an encode task makes one movie: its frames must be [1]".into());
    }
    let text = std::fs::read_to_string(job.scene())
        .map_err(|e| format!("cannot read {}: {e}", job.scene().display()))?;
    let settings: EncodeSettings =
        toml::from_str(&text).map_err(|e| format!("{ENCODE_SETTINGS_FILE} is not valid: {e}"))?;
    if !FPS_RANGE.contains(&settings.fps) {
        return Err(format!(
            "{} frames per second is not a frame rate",
            settings.fps
        ));
    }
    let frames = numbered_frames(&job.req.workdir)?;
    Ok((settings, frames))
}

/// Checks the folder holds `000001.EXT` .. `N.EXT` and nothing else but the
/// settings file.
fn numbered_frames(dir: &Path) -> Result<Frames, String> {
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?
    {
        let name = entry.map_err(|e| e.to_string())?.file_name();
        let name = name.to_string_lossy().into_owned();
        if name != ENCODE_SETTINGS_FILE {
            names.push(name);
        }
    }
    names.sort();
    let Some(ext) = names
        .first()
        .and_then(|n| n.split_once('.'))
        .map(|(_, e)| e.to_string())
    else {
        return Err(format!("no frames to encode in {}", dir.display()));
    };
    for (i, name) in names.iter().enumerate() {
        if *name != format!("{:06}.{ext}", i + 1) {
            return Err(format!(
                "frame files must be 000001.{ext}, 000002.{ext}, ... in one format; found `{name}`"
            ));
        }
    }
    Ok(Frames {
        ext,
        count: names.len(),
    })
}

fn build_args(settings: &EncodeSettings, frames: &Frames, output_dir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "-hide_banner",
        "-nostdin",
        "-y",
        "-loglevel",
        "error",
        "-progress",
        "pipe:1",
        "-nostats",
        "-framerate",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(settings.fps.to_string().into());
    args.extend(["-start_number".into(), "1".into(), "-i".into()]);
    args.push(format!("%06d.{}", frames.ext).into());
    args.extend(settings.codec.args().iter().map(OsString::from));
    args.push(
        output_dir
            .join(format!("frame_0001.{}", settings.codec.extension()))
            .into_os_string(),
    );
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_parse_and_name_their_files() {
        assert_eq!("MP4".parse::<Codec>(), Ok(Codec::Mp4));
        assert_eq!("prores".parse::<Codec>().map(Codec::extension), Ok("mov"));
        let err = "gif".parse::<Codec>().unwrap_err();
        assert!(
            err.contains("`gif`") && err.contains("mp4 or prores"),
            "{err}"
        );
    }

    #[test]
    fn the_command_line_reads_numbered_frames_and_writes_frame_0001() {
        let s = EncodeSettings {
            codec: Codec::Mp4,
            fps: 25,
        };
        let f = Frames {
            ext: "png".into(),
            count: 3,
        };
        let args: Vec<String> = build_args(&s, &f, Path::new("/o"))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let at = |x: &str| args.iter().position(|a| a == x).unwrap();
        assert_eq!(args[at("-framerate") + 1], "25");
        assert_eq!(args[at("-i") + 1], "%06d.png");
        assert_eq!(args[at("-c:v") + 1], "libx264");
        assert_eq!(args.last().unwrap(), "/o/frame_0001.mp4");
    }

    #[test]
    fn only_a_gapless_numbered_sequence_is_encoded() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            numbered_frames(dir.path())
                .unwrap_err()
                .contains("no frames")
        );
        std::fs::write(dir.path().join(ENCODE_SETTINGS_FILE), "").unwrap();
        for n in [1, 2] {
            std::fs::write(dir.path().join(format!("{n:06}.png")), "x").unwrap();
        }
        assert_eq!(
            numbered_frames(dir.path()),
            Ok(Frames {
                ext: "png".into(),
                count: 2
            })
        );
        std::fs::write(dir.path().join("000004.png"), "x").unwrap();
        let err = numbered_frames(dir.path()).unwrap_err();
        assert!(err.contains("000004.png"), "{err}");
    }
}
