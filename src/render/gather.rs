//! Asset gathering: turn one `.blend` into a project folder that renders the
//! same on any node.
//!
//! "Assets are missing" is the first complaint about every farm. A scene
//! names its textures, image sequences, linked libraries, caches, fonts and
//! sounds by path, often absolute or climbing out of its folder
//! (`//../textures/x.png`). Only Blender knows them all, so Blender is asked
//! (`gather.py`, run in background mode): it walks the scene and every linked
//! library, and re-saves each `.blend` into a staging folder with all its
//! paths made relative. Why this shape:
//! - the bundle's root is the deepest folder that holds the scene's folder
//!   and every asset, and each file keeps its place under it: relative paths
//!   need no rewriting at all, absolute ones become relative to the same
//!   layout, and image sequences, UDIM tiles and cache folders keep their
//!   neighbours without any renaming;
//! - libraries are re-saved too, so *their* absolute paths are fixed as well;
//! - the save uses `copy=True, relative_remap=False`: remapping would point
//!   the staged scene back at the originals, and the originals are never
//!   written;
//! - a simulation's bake folder that does not exist is not missing: the
//!   node simulates, as Blender here would;
//! - Blender only lists; this side copies the other files, expands sequences
//!   and decides what is missing, so the listing is typed and testable.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The Blender side, run with `--python-expr`.
const SCRIPT: &str = include_str!("gather.py");

/// A scene gathered into a staging folder (removed when this is dropped).
#[derive(Debug)]
pub struct Gathered {
    work: tempfile::TempDir,
    /// The scene's path inside [`Gathered::root`], `/`-separated.
    pub scene_file: String,
    /// Every file in the bundle, the re-saved `.blend`s included.
    pub files: Vec<GatheredFile>,
    /// Files the scene uses that do not exist.
    pub missing: Vec<MissingFile>,
}

/// One file copied (or re-saved) into the bundle.
#[derive(Debug, Clone)]
pub struct GatheredFile {
    /// Where it was on this machine.
    pub source: PathBuf,
    /// Its path inside the bundle.
    pub staged: String,
    pub bytes: u64,
}

/// A file a scene uses that is not there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFile {
    pub path: PathBuf,
    /// The `.blend` that uses it.
    pub used_by: PathBuf,
}

impl std::fmt::Display for MissingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (used by {})",
            self.path.display(),
            self.used_by.display()
        )
    }
}

impl Gathered {
    /// The staging folder: the project folder to import or upload.
    pub fn root(&self) -> PathBuf {
        self.work.path().join("bundle")
    }

    /// Bytes in the bundle.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("Blender could not list the assets of `{scene}`: {reason}")]
    Blender { scene: PathBuf, reason: String },
    #[error("cannot {what} `{path}`: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> GatherError {
    let path = path.to_path_buf();
    move |source| GatherError::Io { what, path, source }
}

/// Each missing file on its own line, and the way to go on anyway.
pub fn missing_message(missing: &[MissingFile]) -> String {
    let (count, verb, them) = match missing.len() {
        1 => ("1 file".to_string(), "does", "it"),
        n => (format!("{n} files"), "do", "them"),
    };
    let mut msg = format!("the scene uses {count} that {verb} not exist:");
    for m in missing {
        msg.push_str(&format!("\n  {m}"));
    }
    msg.push_str(&format!(
        "\nrestore {them}, or submit with --allow-missing to render without {them}"
    ));
    msg
}

/// What `gather.py` reports.
#[derive(Debug, Deserialize)]
struct Report {
    root: PathBuf,
    scene: String,
    blends: Vec<String>,
    assets: Vec<Asset>,
    missing_libraries: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct Asset {
    path: PathBuf,
    sequence: bool,
    /// A simulation's bake folder: not missing when it is not baked.
    #[serde(default)]
    optional: bool,
    used_by: PathBuf,
}

/// Gather `scene` (a `.blend`) with `blender` into a staging folder made
/// under `temp_in` (the system's temporary folder when `None`).
pub fn gather(
    blender: &Path,
    scene: &Path,
    temp_in: Option<&Path>,
) -> Result<Gathered, GatherError> {
    let work = match temp_in {
        Some(dir) => tempfile::Builder::new()
            .prefix("gather-")
            .tempdir_in(dir)
            .map_err(io("create a staging folder in", dir))?,
        None => tempfile::Builder::new()
            .prefix("swarm-gather-")
            .tempdir()
            .map_err(io("create a staging folder in", &std::env::temp_dir()))?,
    };
    let scene = std::path::absolute(scene).map_err(io("resolve", scene))?;
    let report = ask_blender(blender, &scene, work.path())?;
    let bundle = work.path().join("bundle");
    let mut gathered = Gathered {
        work,
        scene_file: report.scene.clone(),
        files: Vec::new(),
        missing: Vec::new(),
    };
    for blend in &report.blends {
        let staged = bundle.join(blend);
        let bytes = std::fs::metadata(&staged)
            .map_err(io("read the re-saved", &staged))?
            .len();
        gathered.files.push(GatheredFile {
            source: report.root.join(blend),
            staged: blend.clone(),
            bytes,
        });
    }
    for lib in &report.missing_libraries {
        gathered.missing.push(MissingFile {
            path: lib.clone(),
            used_by: scene.clone(),
        });
    }
    copy_assets(&report, &bundle, &mut gathered)?;
    Ok(gathered)
}

/// How long Blender may take to list and re-save a scene and its libraries:
/// generous (a big scene on a slow disk), but a hung Blender must not hang a
/// submission for ever.
const BLENDER_DEADLINE: Duration = Duration::from_secs(600);

/// Run `gather.py`; its report lands in `work`.
fn ask_blender(blender: &Path, scene: &Path, work: &Path) -> Result<Report, GatherError> {
    let report_path = work.join("report.json");
    let mut cmd = Command::new(blender);
    cmd.args(["-b", "--factory-startup", "--disable-autoexec"])
        .args(["--python-exit-code", "1", "--python-expr", SCRIPT, "--"])
        .arg(scene)
        .arg(work.join("bundle"))
        .arg(&report_path);
    let failed = |reason: String| GatherError::Blender {
        scene: scene.to_path_buf(),
        reason,
    };
    let (status, log) = run_logged(cmd, &work.join("blender.log"), BLENDER_DEADLINE)
        .map_err(|e| failed(format!("cannot run `{}`: {e}", blender.display())))?;
    let Some(status) = status else {
        return Err(failed(format!(
            "Blender did not finish within {} s",
            BLENDER_DEADLINE.as_secs()
        )));
    };
    if !status.success() {
        return Err(failed(why_blender_failed(status, &log)));
    }
    let text = std::fs::read(&report_path).map_err(|_| failed(why_blender_failed(status, &log)))?;
    serde_json::from_slice(&text).map_err(|e| failed(format!("unreadable report: {e}")))
}

/// Run `cmd` with its output in `log`; `None` (and killed) past `deadline`.
fn run_logged(
    mut cmd: Command,
    log: &Path,
    deadline: Duration,
) -> std::io::Result<(Option<ExitStatus>, String)> {
    let out = std::fs::File::create(log)?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = String::from_utf8_lossy(&std::fs::read(log)?).into_owned();
    Ok((status, text))
}

/// The lines of Blender's output that say what went wrong.
fn why_blender_failed(status: ExitStatus, text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            let says_why =
                lower.contains("error") || lower.contains("cannot") || lower.contains("failed");
            // The traceback's frame and the script's own text say nothing.
            says_why && !lower.contains("traceback") && !lower.contains("script failed")
        })
        .collect();
    match lines.last() {
        Some(line) => line.trim_start_matches("RuntimeError: ").to_string(),
        None => format!("Blender exited with {status}"),
    }
}

/// Copy every asset that exists to its place under `bundle`; list the rest.
fn copy_assets(report: &Report, bundle: &Path, into: &mut Gathered) -> Result<(), GatherError> {
    let mut seen = std::collections::BTreeSet::new();
    for asset in &report.assets {
        let files = files_of(asset)?;
        if files.is_empty() && !asset.optional {
            into.missing.push(MissingFile {
                path: asset.path.clone(),
                used_by: asset.used_by.clone(),
            });
        }
        // Outside the root: a bake folder Blender left out on purpose.
        for file in files {
            let Ok(rel) = file.strip_prefix(&report.root) else {
                continue;
            };
            if !seen.insert(file.clone()) || rel.as_os_str().is_empty() {
                continue;
            }
            let target = bundle.join(rel);
            if target.exists() {
                continue; // a .blend Blender already re-saved there
            }
            let bytes = copy_file(&file, &target)?;
            into.files.push(GatheredFile {
                staged: rel.to_string_lossy().replace('\\', "/"),
                source: file,
                bytes,
            });
        }
    }
    Ok(())
}

/// The files an asset stands for: itself, a folder's files, or a
/// sequence's frames. Empty when none exists.
fn files_of(asset: &Asset) -> Result<Vec<PathBuf>, GatherError> {
    if asset.sequence {
        return sequence_files(&asset.path);
    }
    if asset.path.is_dir() {
        return walk(&asset.path);
    }
    Ok(if asset.path.is_file() {
        vec![asset.path.clone()]
    } else {
        Vec::new()
    })
}

/// Frames of an image sequence (`shot_0001.png` stands for every
/// `shot_NNNN.png`) or UDIM tiles (`wood.<UDIM>.png`) next to it.
fn sequence_files(path: &Path) -> Result<Vec<PathBuf>, GatherError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(Vec::new());
    };
    let (head, tail) = sequence_pattern(name);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(_) => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io("list", dir))?;
        let Ok(candidate) = entry.file_name().into_string() else {
            continue;
        };
        if is_frame_of(&candidate, head, tail) && entry.path().is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Split a sequence's file name around its frame number (or tile token).
fn sequence_pattern(name: &str) -> (&str, &str) {
    for token in ["<UDIM>", "<UVTILE>"] {
        if let Some(at) = name.find(token) {
            return (&name[..at], &name[at + token.len()..]);
        }
    }
    let stem_end = name.rfind('.').unwrap_or(name.len());
    let digits_end = name[..stem_end]
        .rfind(|c: char| c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let digits_start = name[..digits_end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    (&name[..digits_start], &name[digits_end..])
}

/// `candidate` is `head`, a frame number or tile (`1001`, `u1_v2`), `tail`.
fn is_frame_of(candidate: &str, head: &str, tail: &str) -> bool {
    let Some(middle) = candidate
        .strip_prefix(head)
        .and_then(|rest| rest.strip_suffix(tail))
    else {
        return false;
    };
    !middle.is_empty()
        && middle.chars().any(|c| c.is_ascii_digit())
        && middle
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, 'u' | 'v' | '_'))
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>, GatherError> {
    files_under(dir).map_err(|(d, e)| io("list", &d)(e))
}

/// Every file under `dir`, sorted; an error names the folder that could not
/// be listed.
pub fn files_under(dir: &Path) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| (d.clone(), e))?;
        for entry in entries {
            let path = entry.map_err(|e| (d.clone(), e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A hard link where the file system allows it (big texture sets cost
/// nothing), else a copy.
fn copy_file(from: &Path, to: &Path) -> Result<u64, GatherError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).map_err(io("copy", from))?;
    }
    Ok(std::fs::metadata(to).map_err(io("read", to))?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_patterns_split_around_the_frame_number() {
        assert_eq!(sequence_pattern("shot_0001.png"), ("shot_", ".png"));
        assert_eq!(sequence_pattern("wood.<UDIM>.png"), ("wood.", ".png"));
        assert_eq!(sequence_pattern("v2_0010.exr"), ("v2_", ".exr"));
        assert_eq!(sequence_pattern("0001.png"), ("", ".png"));
    }

    #[test]
    fn frames_of_a_sequence_match_and_strangers_do_not() {
        assert!(is_frame_of("shot_0002.png", "shot_", ".png"));
        assert!(is_frame_of("wood.1002.png", "wood.", ".png"));
        assert!(is_frame_of("wood.u1_v2.png", "wood.", ".png"));
        assert!(!is_frame_of("shot_.png", "shot_", ".png"));
        assert!(!is_frame_of("shot_abc.png", "shot_", ".png"));
        assert!(!is_frame_of("shot_0002.jpg", "shot_", ".png"));
    }

    #[test]
    fn a_sequence_gathers_every_frame_beside_it() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["s_0001.png", "s_0002.png", "s_0003.png", "other.png"] {
            std::fs::write(tmp.path().join(name), b"x").unwrap();
        }
        let found = sequence_files(&tmp.path().join("s_0001.png")).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["s_0001.png", "s_0002.png", "s_0003.png"]);
        assert!(
            sequence_files(&tmp.path().join("gone/x_01.png"))
                .unwrap()
                .is_empty()
        );
    }
}
