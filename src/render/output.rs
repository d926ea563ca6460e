//! Output checks: what an engine left in the output directory decides whether a task is done.
//!
//! Exit codes lie (Blender exits 0 after `-F` names an unknown format, a script's renderer may
//! exit 0 having written nothing), so every requested frame must have exactly one file named
//! `frame_NNNN.EXT` (zero-padded to at least four digits, as Blender's `####`), non-empty and
//! decodable as far as we can tell cheaply: PNG is fully decoded (row by row, so a huge frame
//! costs one row of memory), OpenEXR/JPEG/TIFF are checked by their magic bytes, anything else
//! must be non-empty. A file without extension is sniffed (Blender writes one when the scene turns
//! "file extensions" off).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::FailureKind;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
const EXR_MAGIC: &[u8] = &[0x76, 0x2f, 0x31, 0x01];

/// Why the outputs are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OutputProblem {
    /// These frames have no file; `present` lists (a few) names that are there instead.
    Missing {
        frames: Vec<u32>,
        dir: PathBuf,
        present: Vec<String>,
    },
    /// A file is there but unusable.
    Bad(String),
}

impl OutputProblem {
    /// The failure kind and the one-line reason.
    pub(crate) fn into_failure(self) -> (FailureKind, String) {
        match self {
            OutputProblem::Missing {
                frames,
                dir,
                present,
            } => {
                let list: Vec<String> = frames.iter().map(u32::to_string).collect();
                let found = if present.is_empty() {
                    "it is empty".to_owned()
                } else {
                    format!("it holds {}", present.join(", "))
                };
                let reason = format!(
                    "no output file for frame(s) {} in {} (expected frame_{}.EXT); {found}",
                    list.join(", "),
                    dir.display(),
                    pad(frames.first().copied().unwrap_or(0)),
                );
                (FailureKind::MissingOutput, reason)
            }
            OutputProblem::Bad(reason) => (FailureKind::BadOutput, reason),
        }
    }
}

/// `frame` zero-padded to four digits, as Blender's `####` writes it.
pub(crate) fn pad(frame: u32) -> String {
    format!("{frame:04}")
}

/// The frame a file name stands for: `frame_0001.png` -> 1. Only the canonical padding counts
/// (`frame_01.png` and `frame_00001.png` are not frame 1).
pub(crate) fn frame_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("frame_")?;
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (digits, ext) = rest.split_at(digits_end);
    if !(ext.is_empty() || ext.len() > 1 && ext.starts_with('.')) {
        return None;
    }
    let frame: u32 = digits.parse().ok()?;
    (pad(frame) == digits).then_some(frame)
}

/// Checks that each of `frames` has exactly one good file in `dir`.
pub(crate) fn check_outputs(
    dir: &Path,
    frames: &[u32],
) -> Result<BTreeMap<u32, PathBuf>, OutputProblem> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        OutputProblem::Bad(format!(
            "output directory {} cannot be read: {e}",
            dir.display()
        ))
    })?;
    let mut found: BTreeMap<u32, Vec<PathBuf>> = BTreeMap::new();
    let mut others = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        match name.to_str().and_then(frame_of) {
            Some(frame) => found.entry(frame).or_default().push(entry.path()),
            None => others.push(name.to_string_lossy().into_owned()),
        }
    }
    let missing: Vec<u32> = frames
        .iter()
        .copied()
        .filter(|f| !found.contains_key(f))
        .collect();
    if !missing.is_empty() {
        let mut present: Vec<String> = found.values().flatten().map(|p| file_name(p)).collect();
        present.extend(others);
        present.sort();
        present.truncate(6);
        return Err(OutputProblem::Missing {
            frames: missing,
            dir: dir.to_owned(),
            present,
        });
    }
    let mut result = BTreeMap::new();
    for &frame in frames {
        let files = found.remove(&frame).unwrap_or_default();
        let [file] = files.as_slice() else {
            let names: Vec<String> = files.iter().map(|p| file_name(p)).collect();
            return Err(OutputProblem::Bad(format!(
                "frame {frame} has {} output files ({}); expected exactly one",
                files.len(),
                names.join(", ")
            )));
        };
        check_file(file).map_err(|why| OutputProblem::Bad(format!("{}: {why}", file.display())))?;
        result.insert(frame, file.clone());
    }
    Ok(result)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Checks one frame file; the error says why it is unusable.
pub(crate) fn check_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.file_type().is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() == 0 {
        return Err("is empty".into());
    }
    let mut file = File::open(path).map_err(|e| format!("cannot be opened: {e}"))?;
    let mut head = [0u8; 8];
    let n = read_up_to(&mut file, &mut head).map_err(|e| format!("cannot be read: {e}"))?;
    let head = head.get(..n).unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => check_png(file),
        "exr" => magic(head, &[EXR_MAGIC], "OpenEXR"),
        "jpg" | "jpeg" => check_jpeg(&mut file, head, meta.len()),
        "tif" | "tiff" => magic(head, &[b"II*\0", b"MM\0*"], "TIFF"),
        "" if head.starts_with(PNG_MAGIC) => check_png(file),
        _ => Ok(()),
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(buf.get_mut(n..).unwrap_or_default())? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn magic(head: &[u8], magics: &[&[u8]], format: &str) -> Result<(), String> {
    if magics.iter().any(|m| head.starts_with(m)) {
        Ok(())
    } else {
        Err(format!(
            "is not an {format} file (its first bytes are {head:02x?})"
        ))
    }
}

/// Decodes the whole PNG, row by row.
fn check_png(mut file: File) -> Result<(), String> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| format!("cannot be read: {e}"))?;
    let decoder = png::Decoder::new(BufReader::new(file));
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("is not a valid PNG: {e}"))?;
    let height = reader.info().height;
    let mut rows = 0u32;
    loop {
        match reader.next_row() {
            Ok(Some(_)) => rows += 1,
            Ok(None) => break,
            Err(e) => {
                return Err(format!(
                    "is a damaged PNG (after {rows} of {height} rows): {e}"
                ));
            }
        }
    }
    reader
        .finish()
        .map_err(|e| format!("is a damaged PNG (after the image data): {e}"))
}

/// SOI at the start, EOI at the end (trailing zero padding allowed).
fn check_jpeg(file: &mut File, head: &[u8], len: u64) -> Result<(), String> {
    if !head.starts_with(&[0xff, 0xd8]) {
        return Err(format!(
            "is not a JPEG file (its first bytes are {head:02x?})"
        ));
    }
    let tail_len = len.min(1024);
    file.seek(SeekFrom::End(-(tail_len as i64)))
        .map_err(|e| format!("cannot be read: {e}"))?;
    let mut tail = Vec::new();
    file.take(tail_len)
        .read_to_end(&mut tail)
        .map_err(|e| format!("cannot be read: {e}"))?;
    let end = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if tail.get(..end).is_some_and(|t| t.ends_with(&[0xff, 0xd9])) {
        Ok(())
    } else {
        Err("is a truncated JPEG (no end-of-image marker)".into())
    }
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
