//! Local changes, each expressed as a delta: the smallest record that,
//! merged into the ledger, makes the change.
//!
//! A delta is a `JobRecord` itself (spec plus only the touched parts), so
//! it merges, validates, persists and travels exactly like a full record,
//! and a node that missed the job's submission learns the whole spec from
//! any delta. One shape, no separate operation log to keep in step.

use super::crdt::{Flag, Lww, Max};
use super::types::{Claim, Control, Done, End, JobRecord, Stamp, Start, TaskIndex, TaskState};

/// One change to one job, ready to merge and gossip.
pub type Delta = JobRecord;

fn with_task(base: &JobRecord, task: TaskIndex, f: impl FnOnce(&mut TaskState)) -> Delta {
    let mut d = base.empty_like();
    let mut t = TaskState::default();
    f(&mut t);
    d.tasks.insert(task, t);
    d
}

/// "I am rendering this task."
pub fn claim(base: &JobRecord, task: TaskIndex, claim: Claim) -> Delta {
    with_task(base, task, |t| {
        t.claims.insert(claim);
    })
}

/// The claim's engine started.
pub fn start(base: &JobRecord, task: TaskIndex, start: Start) -> Delta {
    with_task(base, task, |t| {
        t.starts.insert(start);
    })
}

/// An attempt ended without output.
pub fn end(base: &JobRecord, task: TaskIndex, end: End) -> Delta {
    with_task(base, task, |t| {
        t.ends.insert(end);
    })
}

/// The task is finished.
pub fn done(base: &JobRecord, task: TaskIndex, done: Done) -> Delta {
    with_task(base, task, |t| {
        t.dones.insert(done);
    })
}

/// Pause or resume.
pub fn control(base: &JobRecord, stamp: Stamp, value: Control) -> Delta {
    let mut d = base.empty_like();
    d.control = Lww::new(stamp, value);
    d
}

/// Set the priority.
pub fn priority(base: &JobRecord, stamp: Stamp, value: i32) -> Delta {
    let mut d = base.empty_like();
    d.priority = Lww::new(stamp, value);
    d
}

/// Cancel, for good.
pub fn cancel(base: &JobRecord) -> Delta {
    let mut d = base.empty_like();
    d.cancelled = Flag(true);
    d
}

/// Give every failed task fresh attempts.
pub fn retry(base: &JobRecord) -> Delta {
    let mut d = base.empty_like();
    d.retry_generation = Max(base.retry_generation.0.saturating_add(1));
    d
}

/// The submitter collected every output.
pub fn collected(base: &JobRecord) -> Delta {
    let mut d = base.empty_like();
    d.collected = Flag(true);
    d
}

/// Finished and old: stop offering it in digests.
pub fn archive(base: &JobRecord) -> Delta {
    let mut d = base.empty_like();
    d.archived = Flag(true);
    d
}
