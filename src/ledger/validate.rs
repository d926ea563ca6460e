//! Invariants every record must hold before it is merged.
//!
//! Records arrive from other nodes, which may be buggy, old or hostile.
//! A record that breaks an invariant is refused whole (the caller counts
//! it and penalises the sender); nothing from it reaches the ledger. The
//! same checks guard a spec built from a user's submission, so a bad frame
//! range is refused with the same words wherever it comes from.

use std::path::{Component, Path};

use super::types::{JobId, JobRecord, JobSpec, TaskState};
use crate::hash::Hash;

/// Frames one job may hold.
pub const MAX_FRAMES: u64 = 1_000_000;
/// Lamport stamps above this are forged: honest clocks never get near it,
/// and refusing them keeps a hostile peer from exhausting everyone's clock.
pub const MAX_LAMPORT: u64 = 1 << 53;
/// Epochs above this are forged.
pub const MAX_EPOCH: u32 = 1_000_000;
/// Entries in one task's set.
pub const MAX_SET: usize = 10_000;
/// Bytes of a reason, a name, a path.
pub const MAX_TEXT: usize = 4096;
/// Attempts a job may allow per task.
pub const MAX_ATTEMPTS: u32 = 100;

/// What is wrong with a record or a spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the spec hashes to {actual}, not to the job id {claimed}")]
    IdMismatch { claimed: Hash, actual: Hash },
    #[error(
        "frame range {0} holds no frames: the end must not be before the start, and the step must be at least 1"
    )]
    EmptyRange(String),
    #[error("frame range {range} holds {count} frames; a job may hold at most {MAX_FRAMES}")]
    TooManyFrames { range: String, count: u64 },
    #[error("frames per task must be at least 1")]
    ZeroFramesPerTask,
    #[error("max attempts must be between 1 and {MAX_ATTEMPTS}, not {0}")]
    Attempts(u32),
    #[error("{field} is too long ({len} bytes; at most {MAX_TEXT})")]
    TooLong { field: &'static str, len: usize },
    #[error("{field} must not be empty")]
    EmptyField { field: &'static str },
    #[error("scene file `{0}` must be a relative path inside the bundle (no `..`, no leading `/`)")]
    UnsafePath(String),
    #[error("task {task} is outside the job's {count} tasks")]
    TaskOutOfRange { task: u32, count: u32 },
    #[error("task {task} holds {len} entries in one set (at most {MAX_SET})")]
    SetTooLarge { task: u32, len: usize },
    #[error("task {task}: {what}")]
    BadEntry { task: u32, what: String },
    #[error("stamp {0} is beyond any honest clock")]
    Stamp(u64),
}

/// Check a spec: the rules a user's submission and a peer's record share.
pub fn check_spec(spec: &JobSpec) -> Result<(), Invalid> {
    let range = spec.frames.to_string();
    let count = spec.frames.count();
    if count == 0 {
        return Err(Invalid::EmptyRange(range));
    }
    if count > MAX_FRAMES {
        return Err(Invalid::TooManyFrames { range, count });
    }
    if spec.frames_per_task == 0 {
        return Err(Invalid::ZeroFramesPerTask);
    }
    if spec.max_attempts == 0 || spec.max_attempts > MAX_ATTEMPTS {
        return Err(Invalid::Attempts(spec.max_attempts));
    }
    text("name", &spec.name, false)?;
    text("engine", &spec.engine, true)?;
    text("scene file", &spec.scene_file, true)?;
    text("submitter", spec.submitter.as_str(), true)?;
    if let Some(f) = &spec.output_format {
        text("output format", f, true)?;
    }
    if let Some(d) = &spec.collect_dir {
        text("collect dir", d, true)?;
    }
    for (k, v) in &spec.options {
        text("option name", k, true)?;
        text("option value", v, false)?;
    }
    for r in &spec.requirements {
        text("requirement", r, true)?;
    }
    if spec.options.len() > 64 || spec.requirements.len() > 64 {
        return Err(Invalid::TooLong {
            field: "options or requirements",
            len: 65,
        });
    }
    if !is_safe_relative(&spec.scene_file) {
        return Err(Invalid::UnsafePath(spec.scene_file.clone()));
    }
    Ok(())
}

/// Check a record received under `id`.
pub fn check_record(id: JobId, rec: &JobRecord) -> Result<(), Invalid> {
    let actual = super::job_id(&rec.spec);
    if actual != id {
        return Err(Invalid::IdMismatch {
            claimed: id.0,
            actual: actual.0,
        });
    }
    check_spec(&rec.spec)?;
    for stamp in [rec.control.stamp.lamport, rec.priority.stamp.lamport] {
        if stamp > MAX_LAMPORT {
            return Err(Invalid::Stamp(stamp));
        }
    }
    if u64::from(rec.retry_generation.0) > u64::from(MAX_EPOCH) {
        return Err(Invalid::Stamp(u64::from(rec.retry_generation.0)));
    }
    let count = rec.spec.task_count();
    for (&task, state) in &rec.tasks {
        if task >= count {
            return Err(Invalid::TaskOutOfRange { task, count });
        }
        check_task(&rec.spec, task, state)?;
    }
    Ok(())
}

fn check_task(spec: &JobSpec, task: u32, t: &TaskState) -> Result<(), Invalid> {
    let bad = |what: String| Invalid::BadEntry { task, what };
    for len in [t.claims.len(), t.starts.len(), t.ends.len(), t.dones.len()] {
        if len > MAX_SET {
            return Err(Invalid::SetTooLarge { task, len });
        }
    }
    for c in &t.claims {
        if c.epoch == 0 || c.epoch > MAX_EPOCH || c.lamport > MAX_LAMPORT {
            return Err(bad(format!(
                "claim with epoch {} and stamp {}",
                c.epoch, c.lamport
            )));
        }
    }
    for e in &t.ends {
        if e.reason.len() > MAX_TEXT * 4 {
            return Err(bad(format!("end reason of {} bytes", e.reason.len())));
        }
    }
    let frames = spec.task_frames(task);
    for d in &t.dones {
        if d.lamport > MAX_LAMPORT || !d.outputs.keys().copied().eq(frames.iter().copied()) {
            return Err(bad(format!(
                "done by {} does not name exactly the task's frames",
                d.node
            )));
        }
        if let Some(o) = d.outputs.values().find(|o| !is_extension(&o.ext)) {
            return Err(bad(format!(
                "output extension `{}` is not a file extension",
                o.ext
            )));
        }
    }
    Ok(())
}

fn text(field: &'static str, s: &str, required: bool) -> Result<(), Invalid> {
    if required && s.is_empty() {
        return Err(Invalid::EmptyField { field });
    }
    if s.len() > MAX_TEXT {
        return Err(Invalid::TooLong {
            field,
            len: s.len(),
        });
    }
    Ok(())
}

/// A short alphanumeric file extension.
pub fn is_extension(ext: &str) -> bool {
    !ext.is_empty() && ext.len() <= 16 && ext.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A path that stays inside the directory it is joined to.
pub fn is_safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\0')
        && !p.contains('\\')
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_paths() {
        for ok in ["a.blend", "shots/a.blend", "tex/ü.png"] {
            assert!(is_safe_relative(ok), "{ok}");
        }
        for bad in [
            "",
            "../a",
            "/etc/passwd",
            "a/../../b",
            "a\\b",
            "a\0b",
            "./a",
        ] {
            assert!(!is_safe_relative(bad), "{bad:?}");
        }
    }
}
