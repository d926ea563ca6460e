//! The `blender` engine: one Blender process per task, all of the task's frames in it.
//!
//! `BLENDER -b --disable-autoexec SCENE [--python-exit-code 1 --python-expr DEVICE] -o OUTDIR/frame_####
//! [-F FORMAT] [-t THREADS] -f A,B,C` (the device expression: see `super::device`).
//! Why this shape (measured on Debian's Blender 3.4.1):
//! - one process for the whole task, so the scene loads once (loading is often half of a short
//!   frame's time);
//! - `-o` before `-f`: Blender acts on its arguments in order, and frames rendered before `-o`
//!   land in `/tmp`;
//! - `--disable-autoexec`: scenes come from the swarm and are data, their scripts never run;
//! - the scene's own output format is kept unless the job overrides it, and an override is
//!   checked against Blender's `-F` names first, because Blender only prints an error for an
//!   unknown one and renders in the scene's format anyway (exit code 0);
//! - the exit code is not trusted: outputs are checked by `super::output`, and the reason for a
//!   failure comes from Blender's own lines (`super::blender_lines`).

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::blender_lines::{Tracker, parse_blender_line};
use super::log::LogBuffer;
use super::runner::{self, Invocation};
use super::{Device, EngineError, Job, RenderFailure, RenderOutput};

/// The `-F` names Blender accepts.
pub const BLENDER_FORMATS: &[&str] = &[
    "TGA",
    "RAWTGA",
    "JPEG",
    "IRIS",
    "IRIZ",
    "PNG",
    "BMP",
    "HDR",
    "TIFF",
    "OPEN_EXR",
    "OPEN_EXR_MULTILAYER",
    "CINEON",
    "DPX",
    "JP2",
    "WEBP",
];

/// How long `blender --version` may take at startup (a cold disk, a slow network home).
const VERSION_TIMEOUT: Duration = Duration::from_secs(60);

/// A Blender executable that answered `--version`.
#[derive(Debug, Clone)]
pub(crate) struct Blender {
    path: PathBuf,
    version: String,
}

impl Blender {
    /// Finds Blender: the configured path (which must work), else `blender` on `PATH` (a broken
    /// one there is skipped with a warning, so a node without Blender still starts).
    pub(crate) fn locate(configured: Option<&Path>) -> Result<Option<Blender>, EngineError> {
        if let Some(path) = configured {
            let version =
                version_of(path, "Blender").map_err(|reason| EngineError::BlenderUnusable {
                    path: path.to_owned(),
                    reason,
                })?;
            return Ok(Some(Blender {
                path: path.to_owned(),
                version,
            }));
        }
        let Some(path) = find_in_path("blender") else {
            return Ok(None);
        };
        match version_of(&path, "Blender") {
            Ok(version) => Ok(Some(Blender { path, version })),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "blender on PATH is unusable; engine disabled");
                Ok(None)
            }
        }
    }

    /// The executable.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `Blender 3.4.1`: the first line of `blender --version`.
    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    /// Renders all frames of the task in one Blender process.
    pub(crate) async fn render(
        &self,
        job: &Job<'_>,
        threads: usize,
    ) -> Result<RenderOutput, RenderFailure> {
        let format = job.req.output_format.as_deref();
        let args = build_args(
            &job.scene(),
            &job.req.output_dir,
            format,
            threads,
            &job.frames,
            job.req.device.map(|d| (d, job.req.gpu)),
        )
        .map_err(|reason| job.refuse(reason))?;
        let inv = Invocation {
            program: self.path.clone().into_os_string(),
            args,
            cwd: job.req.workdir.clone(),
        };
        let mut log = LogBuffer::new();
        let mut tracker = Tracker::new(job.frames.len());
        job.report(0.0, job.frames.first().copied(), "starting Blender".into());
        let mut on_line = |line: &str| {
            if let Some(parsed) = parse_blender_line(line)
                && let Some((fraction, frame, message)) = tracker.feed(parsed)
            {
                job.report(fraction, frame, message);
            }
        };
        let ending = runner::run(&inv, &job.limits, job.cancel, &mut log, &mut on_line).await;
        let reason = tracker.reason();
        if let Some((kind, mut why)) = ending.judge(&job.limits, "Blender", reason.as_deref()) {
            if reason.is_none()
                && !tracker.quit_cleanly()
                && matches!(kind, super::FailureKind::Exit(_))
            {
                why.push_str(" (it did not reach its normal exit)");
            }
            log.note(&why);
            return Err(job.fail(kind, why, &log));
        }
        job.finish(log, reason).await
    }
}

/// Blender's arguments for one task. Errors (said before anything runs) name the bad value.
pub(crate) fn build_args(
    scene: &Path,
    output_dir: &Path,
    format: Option<&str>,
    threads: usize,
    frames: &[u32],
    device: Option<(Device, Option<u32>)>,
) -> Result<Vec<OsString>, String> {
    if let Some(format) = format
        && !BLENDER_FORMATS.contains(&format)
    {
        return Err(format!(
            "output format `{format}` is not one Blender knows; use one of {}",
            BLENDER_FORMATS.join(", ")
        ));
    }
    if output_dir.as_os_str().to_string_lossy().contains('#') {
        // Blender would replace the `#` with frame numbers.
        return Err(format!(
            "output directory {} contains `#`",
            output_dir.display()
        ));
    }
    if !scene.is_absolute() {
        // A relative path starting with `-` would be read as an option.
        return Err(format!("scene path {} must be absolute", scene.display()));
    }
    if frames.is_empty() {
        return Err("the task has no frames".into());
    }
    let mut args: Vec<OsString> = vec!["-b".into(), "--disable-autoexec".into(), scene.into()];
    if let Some((device, gpu)) = device {
        // After the scene (it sets the loaded scenes' device), before `-f`.
        args.extend(["--python-exit-code".into(), "1".into()]);
        args.extend(["--python-expr".into(), device.python_expr(gpu).into()]);
    }
    args.push("-o".into());
    args.push(output_dir.join("frame_####").into_os_string());
    if let Some(format) = format {
        args.extend(["-F".into(), format.into()]);
    }
    if threads > 0 {
        args.extend(["-t".into(), threads.to_string().into()]);
    }
    let list: Vec<String> = frames.iter().map(u32::to_string).collect();
    args.extend(["-f".into(), list.join(",").into()]);
    Ok(args)
}

/// The first line of `path --version` (`-version` for ffmpeg), which must
/// start with `expect`.
pub(crate) fn version_of(path: &Path, expect: &str) -> Result<String, String> {
    let flag = if expect == "ffmpeg" {
        "-version"
    } else {
        "--version"
    };
    let mut child = std::process::Command::new(path)
        .arg(flag)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("it does not start: {e}"))?;
    let Some(mut stdout) = child.stdout.take() else {
        let _ = child.kill();
        return Err("its output cannot be read".into());
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout).take(1 << 20).read_to_end(&mut out);
        let _ = tx.send(out);
    });
    let Ok(out) = rx.recv_timeout(VERSION_TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "`{flag}` did not answer within {}",
            runner::human(VERSION_TIMEOUT)
        ));
    };
    let status = child
        .wait()
        .map_err(|e| format!("`{flag}` was lost: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    if !status.success() {
        return Err(format!("`{flag}` failed ({status})"));
    }
    if !first.starts_with(expect) {
        return Err(format!("`{flag}` printed `{first}`, which is not {expect}"));
    }
    Ok(first.to_owned())
}

/// The first executable file `name` in the directories of `PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(format: Option<&str>, threads: usize, frames: &[u32]) -> Vec<String> {
        build_args(
            Path::new("/work/b/shot 1.blend"),
            Path::new("/out/t7"),
            format,
            threads,
            frames,
            None,
        )
        .unwrap()
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect()
    }

    #[test]
    fn arguments_keep_the_scene_format_and_put_o_before_f() {
        assert_eq!(
            args(None, 0, &[1, 2, 3]),
            [
                "-b",
                "--disable-autoexec",
                "/work/b/shot 1.blend",
                "-o",
                "/out/t7/frame_####",
                "-f",
                "1,2,3"
            ]
        );
    }

    #[test]
    fn format_and_threads_come_between_o_and_f() {
        let a = args(Some("OPEN_EXR"), 8, &[10]);
        assert_eq!(
            a,
            [
                "-b",
                "--disable-autoexec",
                "/work/b/shot 1.blend",
                "-o",
                "/out/t7/frame_####",
                "-F",
                "OPEN_EXR",
                "-t",
                "8",
                "-f",
                "10"
            ]
        );
        let pos = |s: &str| a.iter().position(|x| x == s).unwrap();
        assert!(pos("-o") < pos("-f") && pos("-F") < pos("-f") && pos("-t") < pos("-f"));
    }

    #[test]
    fn unknown_formats_are_refused_before_anything_runs() {
        let err = build_args(
            Path::new("/s.blend"),
            Path::new("/o"),
            Some("exr"),
            0,
            &[1],
            None,
        )
        .unwrap_err();
        assert!(err.contains("`exr`") && err.contains("OPEN_EXR"), "{err}");
        for format in BLENDER_FORMATS {
            assert!(
                build_args(
                    Path::new("/s.blend"),
                    Path::new("/o"),
                    Some(format),
                    0,
                    &[1],
                    None
                )
                .is_ok()
            );
        }
    }

    #[test]
    fn paths_blender_would_misread_are_refused() {
        assert!(
            build_args(
                Path::new("/s.blend"),
                Path::new("/o/#1"),
                None,
                0,
                &[1],
                None
            )
            .is_err()
        );
        assert!(build_args(Path::new("-P.blend"), Path::new("/o"), None, 0, &[1], None).is_err());
        assert!(build_args(Path::new("/s.blend"), Path::new("/o"), None, 0, &[], None).is_err());
    }

    #[test]
    fn a_device_goes_after_the_scene_with_an_exit_code_for_python_errors() {
        let a: Vec<String> = build_args(
            Path::new("/s.blend"),
            Path::new("/o"),
            None,
            0,
            &[3],
            Some((Device::Optix, Some(2))),
        )
        .unwrap()
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect();
        assert_eq!(
            a[..6],
            [
                "-b",
                "--disable-autoexec",
                "/s.blend",
                "--python-exit-code",
                "1",
                "--python-expr"
            ]
        );
        assert!(
            a[6].contains("('OPTIX',)") && a[6].contains("want = 2\n"),
            "{}",
            a[6]
        );
        assert_eq!(a[7..], ["-o", "/o/frame_####", "-f", "3"]);
    }

    #[test]
    fn a_configured_path_that_is_not_blender_is_an_error() {
        let err = Blender::locate(Some(Path::new("/nonexistent/blender"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/blender"), "{err}");
        // `true` runs and exits 0 but prints no version.
        let err = Blender::locate(find_in_path("true").as_deref()).unwrap_err();
        assert!(err.to_string().contains("not Blender"), "{err}");
    }

    #[test]
    fn path_search_finds_executables_only() {
        let sh = find_in_path("sh").expect("sh on PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"));
        assert_eq!(find_in_path("no-such-program-renderswarm"), None);
    }
}
