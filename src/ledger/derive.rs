//! What a record means: task and job states derived from the grow-only sets.
//!
//! Nothing here is stored. Two replicas with the same record derive the same
//! answers, except where liveness enters: whether a claim's owner still
//! holds its lease is judged by each observer on its own clock, so the
//! caller passes a [`Liveness`] and the ledger stays free of time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{Claim, Done, End, EndKind, JobId, JobRecord, NodeId, TaskIndex, TaskState};

/// The state of one task.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Pending,
    Running,
    Done,
    Failed,
}

/// The state of a whole job.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Pending,
    Running,
    Paused,
    Done,
    Failed,
    Cancelled,
}

impl JobStatus {
    /// Done, Failed and Cancelled jobs get no more work.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Paused => "paused",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// Whether a claim's owner still holds its lease, as this observer sees it.
pub trait Liveness {
    fn holds(&self, job: JobId, task: TaskIndex, claim: &Claim) -> bool;
}

/// Every claim holds: for views that do not judge leases (tests, digests).
pub struct AllLive;

impl Liveness for AllLive {
    fn holds(&self, _: JobId, _: TaskIndex, _: &Claim) -> bool {
        true
    }
}

/// No claim holds: an archived job's view, where nothing runs any more
/// (a task claimed but never ended reads as pending, on every node alike).
pub struct NoneHold;

impl Liveness for NoneHold {
    fn holds(&self, _: JobId, _: TaskIndex, _: &Claim) -> bool {
        false
    }
}

impl TaskState {
    /// The claim that wins: the highest epoch; within it a claim whose
    /// owner has started its render beats one whose owner has not, and
    /// otherwise the earliest `(lamport, node)` wins. Claims sort by
    /// `(epoch, lamport, node)`, so it is the first started claim of the
    /// last epoch, or its first claim.
    ///
    /// Two claims share an epoch only when neither owner knew of the other
    /// claim when it made its own. If the one that sorts last has started
    /// (the other claim reached it after its settle window), the render
    /// under way is kept and the other owner, who has not started, gives
    /// way (`node/worker.rs` waits for such a start when it sees a rival):
    /// without this both rendered the task, and one render was thrown away.
    pub fn winning_claim(&self) -> Option<&Claim> {
        let top = self.claims.last()?.epoch;
        let mut at_top = self.claims.iter().filter(|c| c.epoch == top);
        let first = at_top.clone().next();
        at_top.find(|c| self.started(c)).or(first)
    }

    /// Whether the owner of `claim` recorded a start under it.
    pub fn started(&self, claim: &Claim) -> bool {
        self.starts
            .iter()
            .any(|s| s.epoch == claim.epoch && s.node == claim.node)
    }

    /// Whether another node claimed the task at the epoch of `claim`.
    pub fn rivalled(&self, claim: &Claim) -> bool {
        self.claims
            .iter()
            .any(|c| c.epoch == claim.epoch && c.node != claim.node)
    }

    /// The result: among several Dones (duplicate renders), the smallest.
    pub fn winning_done(&self) -> Option<&Done> {
        self.dones.first()
    }

    /// How the attempt of `claim` ended, if it did.
    pub fn end_of(&self, claim: &Claim) -> Option<&End> {
        self.end_at(claim.epoch, &claim.node)
    }

    /// How `node`'s attempt under its claim of `epoch` ended, if it did.
    pub fn end_at(&self, epoch: u32, node: &NodeId) -> Option<&End> {
        self.ends
            .iter()
            .find(|e| e.epoch == epoch && &e.node == node)
    }

    /// The epoch a new claim must carry to beat every claim so far.
    pub fn next_epoch(&self) -> u32 {
        self.claims.last().map_or(1, |c| c.epoch.saturating_add(1))
    }

    /// Failed attempts in `generation`, each attempt counted once.
    pub fn failures(&self, generation: u32) -> u32 {
        let mut seen: Vec<(u32, &NodeId)> = self
            .ends
            .iter()
            .filter(|e| e.kind == EndKind::Failed && e.generation == generation)
            .map(|e| (e.epoch, &e.node))
            .collect();
        seen.dedup();
        u32::try_from(seen.len()).unwrap_or(u32::MAX)
    }

    /// The newest failure: what the page and `swarm job` show.
    pub fn last_failure(&self) -> Option<&End> {
        self.ends
            .iter()
            .filter(|e| e.kind == EndKind::Failed)
            .max_by_key(|e| e.epoch)
    }

    /// The task's state under the job's limits and this observer's liveness.
    pub fn status(
        &self,
        job: &JobRecord,
        id: JobId,
        index: TaskIndex,
        live: &dyn Liveness,
    ) -> TaskStatus {
        if !self.dones.is_empty() {
            return TaskStatus::Done;
        }
        if self.failures(job.retry_generation.0) >= job.spec.max_attempts {
            return TaskStatus::Failed;
        }
        match self.winning_claim() {
            Some(c) if self.end_of(c).is_none() && live.holds(id, index, c) => TaskStatus::Running,
            _ => TaskStatus::Pending,
        }
    }

    /// Renders whose time was thrown away: a start that neither produced the
    /// result nor failed (a duplicate render, a lost race, a killed node).
    /// A render still under way is not counted.
    pub fn wasted(&self, status: TaskStatus) -> u32 {
        let result = self.winning_done().map(|d| (d.epoch, &d.node));
        let running = match status {
            TaskStatus::Running => self.winning_claim().map(|c| (c.epoch, &c.node)),
            _ => None,
        };
        let wasted = self.starts.iter().filter(|s| {
            let key = Some((s.epoch, &s.node));
            let failed = self
                .ends
                .iter()
                .any(|e| e.kind == EndKind::Failed && e.epoch == s.epoch && e.node == s.node);
            key != result && key != running && !failed
        });
        u32::try_from(wasted.count()).unwrap_or(u32::MAX)
    }
}

/// What a list of jobs shows of an archived job: kept beside its header
/// (`Ledger::summary`), so that listing archived jobs reads none of their
/// tasks from the file. Derived with [`NoneHold`], so every node derives
/// the same from the same record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub progress: JobProgress,
    pub status: JobStatus,
}

/// Counts over a job's tasks, and the job's status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    pub tasks_total: u32,
    pub tasks_pending: u32,
    pub tasks_running: u32,
    pub tasks_done: u32,
    pub tasks_failed: u32,
    pub frames_total: u64,
    pub frames_done: u64,
    pub renders_started: u32,
    pub renders_wasted: u32,
    /// Sum of the winning renders' times, for the mean and the ETA.
    pub render_ms_done: u64,
}

impl JobRecord {
    /// Every task's status, in task order.
    pub fn task_statuses(&self, id: JobId, live: &dyn Liveness) -> Vec<TaskStatus> {
        let empty = TaskState::default();
        (0..self.spec.task_count())
            .map(|i| {
                self.tasks
                    .get(&i)
                    .unwrap_or(&empty)
                    .status(self, id, i, live)
            })
            .collect()
    }

    /// Counts over the tasks.
    pub fn progress(&self, id: JobId, live: &dyn Liveness) -> JobProgress {
        let mut p = JobProgress {
            tasks_total: self.spec.task_count(),
            frames_total: self.spec.frames.count(),
            ..JobProgress::default()
        };
        let empty = TaskState::default();
        for i in 0..p.tasks_total {
            let t = self.tasks.get(&i).unwrap_or(&empty);
            let status = t.status(self, id, i, live);
            match status {
                TaskStatus::Pending => p.tasks_pending += 1,
                TaskStatus::Running => p.tasks_running += 1,
                TaskStatus::Failed => p.tasks_failed += 1,
                TaskStatus::Done => {
                    p.tasks_done += 1;
                    p.frames_done += self.spec.task_frame_count(i);
                    // A peer says how long its render took: any u64.
                    let ms = t.winning_done().map_or(0, |d| d.render_ms);
                    p.render_ms_done = p.render_ms_done.saturating_add(ms);
                }
            }
            // Up to 10,000 starts on each of up to a million tasks.
            let starts = u32::try_from(t.starts.len()).unwrap_or(u32::MAX);
            p.renders_started = p.renders_started.saturating_add(starts);
            p.renders_wasted = p.renders_wasted.saturating_add(t.wasted(status));
        }
        p
    }

    /// The job's status given its task counts.
    pub fn status_of(&self, p: &JobProgress) -> JobStatus {
        if self.cancelled.0 {
            JobStatus::Cancelled
        } else if p.tasks_done == p.tasks_total {
            JobStatus::Done
        } else if p.tasks_done + p.tasks_failed == p.tasks_total {
            JobStatus::Failed
        } else if self.control.value == super::types::Control::Paused {
            JobStatus::Paused
        } else if self.tasks.is_empty() {
            JobStatus::Pending
        } else {
            JobStatus::Running
        }
    }

    /// The counts and status of an archived job (see [`Summary`]).
    pub fn summary(&self, id: JobId) -> Summary {
        let progress = self.progress(id, &NoneHold);
        Summary {
            status: self.status_of(&progress),
            progress,
        }
    }

    /// The job's status.
    pub fn status(&self, id: JobId, live: &dyn Liveness) -> JobStatus {
        self.status_of(&self.progress(id, live))
    }

    /// Whether some task has no Done yet (whatever else happened to it).
    pub fn has_tasks_left(&self) -> bool {
        self.tasks.values().filter(|t| !t.dones.is_empty()).count()
            < self.spec.task_count() as usize
    }

    /// The blob of every output any Done names.
    pub fn output_blobs(&self) -> impl Iterator<Item = crate::hash::Hash> + '_ {
        self.tasks
            .values()
            .flat_map(|t| t.dones.iter())
            .flat_map(|d| d.outputs.values().map(|o| o.blob))
    }

    /// Failed attempts per node in the current generation: a node at or over
    /// the blocklist threshold stops claiming the job.
    pub fn failures_by_node(&self) -> BTreeMap<&NodeId, u32> {
        let mut out = BTreeMap::new();
        for e in self.current_failures() {
            *out.entry(&e.node).or_insert(0) += 1;
        }
        out
    }

    /// [`Self::failures_by_node`] of `node` alone, without the map: the
    /// scheduler asks it of itself on every pick, and only a node over the
    /// threshold needs the others' counts.
    pub fn failures_of(&self, node: &NodeId) -> u32 {
        let n = self.current_failures().filter(|e| e.node == *node).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn current_failures(&self) -> impl Iterator<Item = &End> {
        let generation = self.retry_generation.0;
        self.tasks
            .values()
            .flat_map(|t| t.ends.iter())
            .filter(move |e| e.kind == EndKind::Failed && e.generation == generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash;
    use crate::ledger::types::tests::spec;
    use crate::ledger::{AllLive, FrameRange, Outputs, Start};

    fn claim(node: &str, lamport: u64) -> Claim {
        Claim {
            epoch: 1,
            lamport,
            node: NodeId::new(node),
        }
    }

    #[test]
    fn a_started_claim_beats_an_unstarted_rival_at_its_epoch() {
        let mut t = TaskState::default();
        t.claims.insert(claim("a", 5));
        t.claims.insert(claim("b", 7));
        assert_eq!(t.winning_claim(), Some(&claim("a", 5)));
        assert!(t.rivalled(&claim("a", 5)));
        // b started before a's claim reached it: b's render is kept.
        t.starts.insert(Start {
            epoch: 1,
            node: NodeId::new("b"),
        });
        assert_eq!(t.winning_claim(), Some(&claim("b", 7)));
        // Both started: the order decides, as before.
        t.starts.insert(Start {
            epoch: 1,
            node: NodeId::new("a"),
        });
        assert_eq!(t.winning_claim(), Some(&claim("a", 5)));
        // A later epoch beats every claim before it, started or not.
        t.claims.insert(Claim {
            epoch: 2,
            lamport: 9,
            node: NodeId::new("c"),
        });
        assert_eq!(t.winning_claim().map(|c| c.epoch), Some(2));
        assert!(!t.rivalled(t.winning_claim().unwrap()));
    }

    #[test]
    fn render_times_a_peer_claims_do_not_overflow_the_progress() {
        let mut rec = JobRecord::new(spec(
            FrameRange {
                start: 1,
                end: 2,
                step: 1,
            },
            1,
        ));
        for task in 0..2 {
            let done = Done {
                outputs: Outputs::new(),
                node: NodeId::new("peer"),
                epoch: 1,
                lamport: 1,
                render_ms: u64::MAX,
            };
            rec.tasks.entry(task).or_default().dones.insert(done);
        }
        let p = rec.progress(JobId(Hash::of(b"job")), &AllLive);
        assert_eq!(p.tasks_done, 2);
        assert_eq!(p.render_ms_done, u64::MAX);
    }
}
