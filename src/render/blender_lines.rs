//! Reading Blender's output: a pure parser over one line, and a tracker that turns parsed lines
//! into task progress and, when the render fails, the one line that explains why.
//!
//! The patterns come from Debian's Blender 3.4.1 (captured lines are in the tests): progress is
//! `Fra:N Mem:.. | Time:.. | .. | Sample a/b` (Cycles), `Rendered x/y Tiles` (tiled renders),
//! `Rendering a / b samples` (Eevee), then `Saved: '..'` and ` Time: ..` per frame. Errors are
//! `Error: ..` lines (an unreadable scene), `Build without OpenImageDenoiser` (a property of the
//! node's Blender, not of the scene), Python tracebacks, out-of-memory lines, and
//! `Writing: ...crash.txt` when Blender crashes. The parser never panics on any input (it is a
//! fuzz target).

/// What one line of Blender's output means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlenderLine {
    /// A `Fra:` status line that carries no count (e.g. `Synchronizing object | Cube`).
    Status { frame: u32, text: String },
    /// Cycles or Eevee sample progress of `frame`.
    Sample { frame: u32, done: u32, total: u32 },
    /// Tile progress of `frame`.
    Tiles { frame: u32, done: u32, total: u32 },
    /// A frame file was written.
    Saved { path: String },
    /// A frame finished: ` Time: 00:00.38 (Saving: 00:00.28)`.
    FrameTime { time: String },
    /// Something went wrong; `text` is the line without Blender's `Error: ` prefix.
    Problem { kind: BlenderProblem, text: String },
    /// `Traceback (most recent call last):` — a Python error follows.
    PythonTraceback,
    /// The last line of a traceback: `ValueError: boom`.
    PythonException { text: String },
    /// Blender wrote a crash report (`Writing: /tmp/x.crash.txt`).
    CrashReport { path: String },
    /// `Blender quit` — Blender reached its normal exit path.
    Quit,
}

/// The kinds of problem a line can report, from the most to the least telling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BlenderProblem {
    /// This node's Blender lacks OpenImageDenoise and the scene asks for it.
    NoDenoiser,
    /// The scene file could not be read (truncated, not a .blend, missing).
    UnreadableScene,
    /// Blender or Cycles ran out of memory.
    OutOfMemory,
    /// Blender could not open a file the scene needs.
    UnopenableFile,
    /// Any other `Error:` line.
    Error,
}

/// Parses one line of Blender's stdout or stderr; `None` for lines that say nothing useful.
pub fn parse_blender_line(line: &str) -> Option<BlenderLine> {
    let line = line.trim_end();
    if let Some(problem) = problem(line) {
        return Some(problem);
    }
    if let Some(rest) = line.strip_prefix("Fra:") {
        return fra_line(rest);
    }
    let trimmed = line.trim_start();
    if let Some(path) = line.strip_prefix("Saved: ") {
        return Some(BlenderLine::Saved {
            path: unquote(path).to_owned(),
        });
    }
    if let Some(time) = trimmed.strip_prefix("Time: ") {
        return Some(BlenderLine::FrameTime {
            time: time.to_owned(),
        });
    }
    if let Some(path) = line
        .strip_prefix("Writing: ")
        .filter(|p| p.ends_with(".crash.txt"))
    {
        return Some(BlenderLine::CrashReport {
            path: path.to_owned(),
        });
    }
    if line == "Blender quit" {
        return Some(BlenderLine::Quit);
    }
    if trimmed.ends_with("Traceback (most recent call last):") {
        return Some(BlenderLine::PythonTraceback);
    }
    if is_python_exception(line) {
        return Some(BlenderLine::PythonException {
            text: line.to_owned(),
        });
    }
    None
}

fn problem(line: &str) -> Option<BlenderLine> {
    let found = |kind, text: &str| {
        Some(BlenderLine::Problem {
            kind,
            text: text.trim().to_owned(),
        })
    };
    let lower = line.to_ascii_lowercase();
    if line.contains("Build without OpenImageDenoiser") {
        return found(
            BlenderProblem::NoDenoiser,
            "Build without OpenImageDenoiser",
        );
    }
    if lower.contains("out of memory") || lower.contains("malloc returns null") {
        let text = line.strip_prefix("Error: ").unwrap_or(line);
        return found(BlenderProblem::OutOfMemory, last_field(text));
    }
    if let Some(text) = line.strip_prefix("Warning: Unable to open") {
        return found(
            BlenderProblem::UnopenableFile,
            &format!("Unable to open{text}"),
        );
    }
    let text = line.strip_prefix("Error: ")?;
    if text.contains("Python: Traceback") {
        return Some(BlenderLine::PythonTraceback);
    }
    let unreadable = [
        "Failed to read blend file",
        "Cannot read file",
        "File format is not supported",
    ];
    if unreadable.iter().any(|p| text.starts_with(p)) {
        return found(BlenderProblem::UnreadableScene, text);
    }
    found(BlenderProblem::Error, text)
}

/// A `Fra:` line after the prefix: `1 Mem:8.98M ... | Scene, ViewLayer | Sample 1/4`.
fn fra_line(rest: &str) -> Option<BlenderLine> {
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let frame: u32 = rest.get(..digits_end)?.parse().ok()?;
    let text = last_field(rest);
    if let Some((done, total)) = count_after(text, "Sample ") {
        return Some(BlenderLine::Sample { frame, done, total });
    }
    if let Some((done, total)) = text.strip_prefix("Rendering ").and_then(|t| {
        let t = t.strip_suffix(" samples")?;
        let (a, b) = t.split_once(" / ")?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    }) {
        return Some(BlenderLine::Sample { frame, done, total });
    }
    if let Some((done, total)) = count_after(text, "Rendered ").filter(|_| text.contains(" Tiles"))
    {
        return Some(BlenderLine::Tiles { frame, done, total });
    }
    Some(BlenderLine::Status {
        frame,
        text: text.to_owned(),
    })
}

/// The last ` | `-separated field, trimmed: Blender puts the news of a status line there.
fn last_field(text: &str) -> &str {
    text.rsplit(" | ").next().unwrap_or(text).trim()
}

/// `a/b` right after `label` (e.g. `Sample 3/128`, `Rendered 2/16 Tiles`).
fn count_after(text: &str, label: &str) -> Option<(u32, u32)> {
    let start = text.find(label)? + label.len();
    let tail = text.get(start..)?;
    let (a, rest) = tail.split_once('/')?;
    let b_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    Some((a.trim().parse().ok()?, rest.get(..b_end)?.parse().ok()?))
}

fn unquote(text: &str) -> &str {
    let text = text.trim();
    text.strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .unwrap_or(text)
}

/// `ValueError: boom`, `bpy.types.Foo.Error: x`, `KeyboardInterrupt`: a dotted identifier ending
/// in Error/Exception, then `:`.
fn is_python_exception(line: &str) -> bool {
    let Some((name, _)) = line.split_once(':') else {
        return false;
    };
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && (name.ends_with("Error") || name.ends_with("Exception"))
        && name != "Error"
}

/// What the lines of one Blender run said: progress through the task and the best reason.
/// Public (hidden) for the Blender-lines fuzz target, which feeds it every parsed line.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Tracker {
    total: usize,
    saved: usize,
    frame: Option<u32>,
    within: f32,
    problems: Vec<(BlenderProblem, String)>,
    in_traceback: bool,
    exception: Option<String>,
    crash_report: Option<String>,
    quit: bool,
}

/// Progress to publish: (fraction of the task, frame, message).
pub type Update = (f32, Option<u32>, String);

impl Tracker {
    /// A tracker for a task of `total` frames.
    pub fn new(total: usize) -> Tracker {
        Tracker {
            total: total.max(1),
            ..Tracker::default()
        }
    }

    /// Takes one parsed line; returns the progress to publish, if it changed.
    pub fn feed(&mut self, line: BlenderLine) -> Option<Update> {
        match line {
            BlenderLine::Sample { frame, done, total }
            | BlenderLine::Tiles { frame, done, total } => {
                self.frame = Some(frame);
                self.within = if total == 0 {
                    0.0
                } else {
                    done.min(total) as f32 / total as f32
                };
                Some(self.update(format!("frame {frame}: {done}/{total}")))
            }
            BlenderLine::Status { frame, text } => {
                self.frame = Some(frame);
                Some(self.update(format!("frame {frame}: {text}")))
            }
            BlenderLine::Saved { path } => {
                self.saved = (self.saved + 1).min(self.total);
                self.within = 0.0;
                let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
                Some(self.update(format!("saved {name}")))
            }
            BlenderLine::Problem { kind, text } => {
                if self.problems.len() < 64 {
                    self.problems.push((kind, text));
                }
                None
            }
            BlenderLine::PythonTraceback => {
                self.in_traceback = true;
                None
            }
            BlenderLine::PythonException { text } if self.in_traceback => {
                self.exception = Some(text);
                self.in_traceback = false;
                None
            }
            BlenderLine::CrashReport { path } => {
                self.crash_report = Some(path);
                None
            }
            BlenderLine::Quit => {
                self.quit = true;
                None
            }
            BlenderLine::FrameTime { .. } | BlenderLine::PythonException { .. } => None,
        }
    }

    fn update(&self, message: String) -> Update {
        // A sample line after the last frame was saved (Blender rendering a
        // frame the task did not count) must not push progress past 1.
        (
            ((self.saved as f32 + self.within) / self.total as f32).min(1.0),
            self.frame,
            message,
        )
    }

    /// The sentence that best explains a failed run, if Blender said anything useful.
    pub fn reason(&self) -> Option<String> {
        let best = self.problems.iter().min_by_key(|(kind, _)| *kind);
        match best {
            Some((BlenderProblem::NoDenoiser, _)) => Some(NO_DENOISER.to_owned()),
            Some((BlenderProblem::UnreadableScene, text)) => {
                Some(format!("Blender could not read the scene file: {text}"))
            }
            Some((BlenderProblem::OutOfMemory, text)) => {
                Some(format!("Blender ran out of memory: {text}"))
            }
            _ if self.exception.is_some() => self
                .exception
                .as_ref()
                .map(|e| format!("a Python script inside Blender failed: {e}")),
            Some((BlenderProblem::UnopenableFile, text)) => Some(format!(
                "Blender could not open a file the scene needs: {text}"
            )),
            Some((BlenderProblem::Error, text)) => Some(format!("Blender reported: {text}")),
            None => self
                .crash_report
                .as_ref()
                .map(|p| format!("Blender crashed; its crash report is {p} on this node")),
        }
    }

    /// Whether Blender reached its normal exit path.
    pub fn quit_cleanly(&self) -> bool {
        self.quit
    }
}

/// The reason for the OIDN case: it is this node's Blender, not the scene.
pub(crate) const NO_DENOISER: &str = "this node's Blender was built without OpenImageDenoise; \
     turn denoising off in the scene or render on a node whose Blender has it";

#[cfg(test)]
#[path = "blender_lines_tests.rs"]
mod tests;
