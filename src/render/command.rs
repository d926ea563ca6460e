//! The `command` engines: any other renderer, run from a template in the node's own config.
//!
//! A template such as `myrender --in {scene} --out {output}/frame_{frame:04}.exr` is split into
//! argv once, when the node starts, with shell-like quoting (single quotes, double quotes,
//! backslash); the placeholders are filled in per task *inside* each argument, so a scene path with
//! spaces stays one argument. No shell runs unless the template names one (`sh -c '...'`); then a
//! scene or output path is only put into the script if it holds no character the shell would
//! interpret (pass such paths as positional arguments: `sh -c 'r "$1"' sh {scene}`), because scene
//! names come from the swarm.
//!
//! Placeholders: `{scene}` (absolute scene path), `{output}` (the output directory), `{frame}`,
//! `{start}`, `{end}` (numbers; `{frame:04}` zero-pads to 4 digits, as the output files must be
//! named `frame_NNNN.EXT`). `{{` and `}}` are literal braces. A template with `{frame}` runs once
//! per frame of the task, in order; otherwise once per task with `{start}`/`{end}`.

use std::ffi::OsString;
use std::path::Path;

use super::log::{LogBuffer, cut};
use super::runner::{self, Ending, Invocation};
use super::{EngineError, Job, RenderFailure, RenderOutput};

/// A value a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Scene,
    Output,
    Frame,
    Start,
    End,
}

/// Part of one argument.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// A placeholder and its zero-padding width (0 = none).
    Slot(Slot, usize),
}

/// A parsed command template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    name: String,
    source: String,
    argv: Vec<Vec<Piece>>,
}

/// The values of one run.
struct Values<'a> {
    scene: &'a Path,
    output: &'a Path,
    frame: u32,
    start: u32,
    end: u32,
}

const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish"];

impl Template {
    /// Parses `source`; errors name the engine and the template.
    pub(crate) fn parse(name: &str, source: &str) -> Result<Template, EngineError> {
        check_name(name)?;
        let bad = |reason: String| EngineError::Template {
            name: name.to_owned(),
            template: source.to_owned(),
            reason,
        };
        let words = split(source).map_err(bad)?;
        let argv = words
            .iter()
            .map(|w| pieces(w))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        match argv.first() {
            None => {
                return Err(bad(
                    "is empty; give the program to run and its arguments".into()
                ));
            }
            Some(first) if first.iter().any(|p| matches!(p, Piece::Slot(..))) => {
                return Err(bad(
                    "starts with a placeholder; the program must be fixed".into()
                ));
            }
            Some(_) => {}
        }
        Ok(Template {
            name: name.to_owned(),
            source: source.to_owned(),
            argv,
        })
    }

    /// The template as configured.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Whether the command runs once per frame.
    fn per_frame(&self) -> bool {
        self.argv
            .iter()
            .flatten()
            .any(|p| matches!(p, Piece::Slot(Slot::Frame, _)))
    }

    /// The command line for one run.
    fn invocation(&self, values: &Values<'_>, cwd: &Path) -> Result<Invocation, String> {
        let mut argv: Vec<OsString> = Vec::with_capacity(self.argv.len());
        let script = self.shell_script_index();
        for (i, arg) in self.argv.iter().enumerate() {
            let mut out = OsString::new();
            for piece in arg {
                match piece {
                    Piece::Text(text) => out.push(text),
                    Piece::Slot(Slot::Scene, _) => {
                        out.push(shell_safe(values.scene, script == Some(i))?)
                    }
                    Piece::Slot(Slot::Output, _) => {
                        out.push(shell_safe(values.output, script == Some(i))?)
                    }
                    Piece::Slot(Slot::Frame, w) => {
                        out.push(format!("{:0w$}", values.frame, w = *w))
                    }
                    Piece::Slot(Slot::Start, w) => {
                        out.push(format!("{:0w$}", values.start, w = *w))
                    }
                    Piece::Slot(Slot::End, w) => out.push(format!("{:0w$}", values.end, w = *w)),
                }
            }
            argv.push(out);
        }
        let mut argv = argv.into_iter();
        let program = argv.next().unwrap_or_default();
        Ok(Invocation {
            program,
            args: argv.collect(),
            cwd: cwd.to_owned(),
        })
    }

    /// The index of the script argument when the program is a shell run with `-c`.
    fn shell_script_index(&self) -> Option<usize> {
        let program = match self.argv.first()?.as_slice() {
            [Piece::Text(p)] => p.rsplit('/').next().unwrap_or(p),
            _ => return None,
        };
        if !SHELLS.contains(&program) {
            return None;
        }
        let c_option = self.argv.iter().position(|arg| match arg.as_slice() {
            [Piece::Text(t)] => t.starts_with('-') && !t.starts_with("--") && t.contains('c'),
            _ => false,
        })?;
        Some(c_option + 1)
    }

    /// Runs the command for the task (once, or once per frame) and checks the outputs.
    pub(crate) async fn render(&self, job: &Job<'_>) -> Result<RenderOutput, RenderFailure> {
        let (start, end) = match (job.frames.first(), job.frames.last()) {
            (Some(&s), Some(&e)) => (s, e),
            _ => return Err(job.refuse("the task has no frames".into())),
        };
        let runs: Vec<u32> = if self.per_frame() {
            job.frames.clone()
        } else {
            vec![start]
        };
        let scene = job.scene();
        let mut log = LogBuffer::new();
        let mut complaint = None;
        for (i, &frame) in runs.iter().enumerate() {
            let values = Values {
                scene: &scene,
                output: &job.req.output_dir,
                frame,
                start,
                end,
            };
            let inv = match self.invocation(&values, &job.req.workdir) {
                Ok(inv) => inv,
                Err(reason) => {
                    log.note(&reason);
                    return Err(job.fail(super::FailureKind::EngineError, reason, &log));
                }
            };
            let label = if runs.len() > 1 {
                format!("frame {frame}")
            } else {
                format!("frames {start}-{end}")
            };
            let base = i as f32 / runs.len() as f32;
            let heard = self
                .run_once(job, &inv, (base, frame, &label), &mut log)
                .await?;
            complaint = heard.or(complaint);
        }
        job.finish(log, complaint).await
    }

    /// One process run; `at` is (task fraction so far, frame, label) for progress. Returns the
    /// error line the command printed, if any, for a later missing-output reason.
    async fn run_once(
        &self,
        job: &Job<'_>,
        inv: &Invocation,
        at: (f32, u32, &str),
        log: &mut LogBuffer,
    ) -> Result<Option<String>, RenderFailure> {
        let (base, frame, label) = at;
        job.report(
            base,
            Some(frame),
            format!("{label}: starting {}", self.name),
        );
        let mut said = Complaint::default();
        let mut on_line = |line: &str| {
            said.hear(line);
            job.report(
                base,
                Some(frame),
                format!("{label}: {}", cut(line.trim(), 200)),
            );
        };
        let ending = runner::run(inv, &job.limits, job.cancel, log, &mut on_line).await;
        let best = said.best().map(|line| match ending {
            Ending::Exited(code) => format!("`{}` exited with code {code}: {line}", self.name),
            _ => line,
        });
        let engine = format!("`{}`", self.name);
        if let Some((kind, why)) = ending.judge(&job.limits, &engine, best.as_deref()) {
            log.note(&why);
            return Err(job.fail(kind, why, log));
        }
        Ok(said.error)
    }
}

/// The line of a command's output that best explains a failure.
#[derive(Default)]
struct Complaint {
    error: Option<String>,
    last: Option<String>,
}

impl Complaint {
    fn hear(&mut self, line: &str) {
        let line = cut(line.trim(), 500);
        if line.is_empty() {
            return;
        }
        let lower = line.to_ascii_lowercase();
        if ["error", "fatal", "exception", "failed", "cannot", "can't"]
            .iter()
            .any(|w| lower.contains(w))
        {
            self.error = Some(line.to_owned());
        }
        self.last = Some(line.to_owned());
    }

    fn best(&self) -> Option<String> {
        self.error.clone().or_else(|| self.last.clone())
    }
}

/// A path value for a placeholder; inside a shell script only if the shell would take it
/// literally.
fn shell_safe(path: &Path, in_script: bool) -> Result<&std::ffi::OsStr, String> {
    let text = path.to_string_lossy();
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./+,=@%:".contains(c);
    if in_script && !text.chars().all(safe) {
        return Err(format!(
            "path `{text}` has characters a shell would interpret and the command template puts \
             it inside its `-c` script; pass it as a positional argument instead \
             (sh -c '... \"$1\"' sh {{scene}})"
        ));
    }
    Ok(path.as_os_str())
}

fn check_name(name: &str) -> Result<(), EngineError> {
    let bad = |reason: &str| EngineError::BadName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name == "builtin" || name == "blender" || name == super::ENCODE_ENGINE {
        return Err(bad(
            "is reserved for the built-in engine of that name; pick another",
        ));
    }
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(bad(
            "must be 1-64 characters of letters, digits, `-`, `_`, `.`",
        ));
    }
    Ok(())
}

/// Splits a template into words like a POSIX shell would (quotes and backslashes; no expansion).
fn split(source: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = source.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("has a single quote that is never closed".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                double_quoted(&mut chars, &mut word)?;
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err("ends with a lone backslash".into()),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The rest of a double-quoted string: backslash escapes only `"`, `\`, `$`, `` ` `` and newline.
fn double_quoted(chars: &mut std::str::Chars<'_>, word: &mut String) -> Result<(), String> {
    loop {
        match chars.next() {
            Some('"') => return Ok(()),
            Some('\\') => match chars.next() {
                Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                Some('\n') => {}
                Some(c) => {
                    word.push('\\');
                    word.push(c);
                }
                None => break,
            },
            Some(c) => word.push(c),
            None => break,
        }
    }
    Err("has a double quote that is never closed".into())
}

/// One word's text and placeholders.
fn pieces(word: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut inner = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    inner.push(c);
                }
                if !closed {
                    return Err(format!(
                        "has a `{{` without `}}` in `{word}`; write `{{{{` for a literal brace"
                    ));
                }
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(placeholder(&inner)?);
            }
            '}' => {
                return Err(format!(
                    "has a `}}` without `{{` in `{word}`; write `}}}}` for a literal brace"
                ));
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() || out.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// `scene`, `frame`, `frame:04`, ... -> a slot.
fn placeholder(inner: &str) -> Result<Piece, String> {
    let (name, spec) = match inner.split_once(':') {
        Some((name, spec)) => (name, Some(spec)),
        None => (inner, None),
    };
    let slot = match name {
        "scene" => Slot::Scene,
        "output" => Slot::Output,
        "frame" => Slot::Frame,
        "start" => Slot::Start,
        "end" => Slot::End,
        _ => {
            return Err(format!(
                "has an unknown placeholder `{{{inner}}}`; known are {{scene}} {{output}} {{frame}} \
                 {{start}} {{end}} (write `{{{{` for a literal brace)"
            ));
        }
    };
    let width = match spec {
        None => 0,
        Some(spec) if matches!(slot, Slot::Frame | Slot::Start | Slot::End) => spec
            .strip_prefix('0')
            .and_then(|w| w.parse::<usize>().ok())
            .filter(|w| (1..=9).contains(w))
            .ok_or_else(|| format!("has `{{{inner}}}`; a width is written like {{{name}:04}}"))?,
        Some(_) => return Err(format!("has `{{{inner}}}`; only numbers take a width")),
    };
    Ok(Piece::Slot(slot, width))
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
