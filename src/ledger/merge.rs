//! Merging whole records: each field by its own lattice.
//!
//! A record is a product of lattices, so its merge is the field-wise merge
//! and inherits the laws. The one thing that is not a lattice is the spec:
//! it is immutable and names the record, so two records with different specs
//! must never meet. [`JobRecord::try_merge`] refuses that case instead of
//! picking one. The merge reports which parts changed, so persistence
//! rewrites only those rows.

use super::crdt::Crdt;
use std::collections::BTreeMap;

use super::types::{JobId, JobRecord, TaskIndex, TaskState};

impl Crdt for TaskState {
    fn merge(&mut self, other: &Self) -> bool {
        let mut changed = self.claims.merge(&other.claims);
        changed |= self.starts.merge(&other.starts);
        changed |= self.ends.merge(&other.ends);
        changed |= self.dones.merge(&other.dones);
        changed
    }
}

/// Two records under one job id that disagree on the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("two records of job `{job}` carry different specs")]
pub struct SpecConflict {
    pub job: String,
}

/// Which parts of a record a merge changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    pub header: bool,
    pub tasks: Vec<TaskIndex>,
}

impl Touched {
    pub fn any(&self) -> bool {
        self.header || !self.tasks.is_empty()
    }
}

/// Merge record `rec` of job `id` into a map of records: the whole of a
/// replica's merge, kept pure so laws and convergence can be tested on it.
pub fn merge_into(
    jobs: &mut BTreeMap<JobId, JobRecord>,
    id: JobId,
    rec: &JobRecord,
) -> Result<Touched, SpecConflict> {
    match jobs.get_mut(&id) {
        Some(mine) => mine.try_merge(rec),
        None => {
            jobs.insert(id, rec.clone());
            Ok(Touched {
                header: true,
                tasks: rec.tasks.keys().copied().collect(),
            })
        }
    }
}

impl JobRecord {
    /// Merge `other` into `self`, reporting what changed.
    pub fn try_merge(&mut self, other: &JobRecord) -> Result<Touched, SpecConflict> {
        if self.spec != other.spec {
            return Err(SpecConflict {
                job: self.spec.name.clone(),
            });
        }
        let mut header = self.control.merge(&other.control);
        header |= self.priority.merge(&other.priority);
        header |= self.cancelled.merge(&other.cancelled);
        header |= self.archived.merge(&other.archived);
        header |= self.collected.merge(&other.collected);
        header |= self.retry_generation.merge(&other.retry_generation);
        let mut tasks = Vec::new();
        for (&i, theirs) in &other.tasks {
            let changed = match self.tasks.get_mut(&i) {
                Some(mine) => mine.merge(theirs),
                None => {
                    self.tasks.insert(i, theirs.clone());
                    true
                }
            };
            if changed {
                tasks.push(i);
            }
        }
        Ok(Touched { header, tasks })
    }

    /// The greatest Lamport stamp the record carries.
    pub fn max_lamport(&self) -> u64 {
        let tasks = self.tasks.values().flat_map(|t| {
            let claims = t.claims.iter().map(|c| c.lamport);
            claims.chain(t.dones.iter().map(|d| d.lamport))
        });
        tasks
            .chain([self.control.stamp.lamport, self.priority.stamp.lamport])
            .max()
            .unwrap_or(0)
    }
}
