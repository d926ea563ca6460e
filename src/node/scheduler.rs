//! Which task this node claims next. No node assigns work: each node with a
//! free slot picks for itself, from the same ledger, by the same rules.
//!
//! 1. Runnable jobs only: not paused, cancelled, archived or finished; the
//!    engine is here; the job's requirements are among this node's tags; this
//!    node is not blocklisted for the job (unless no live node that could run
//!    it is free of the blocklist, so a lone node still drives a bad job to
//!    Failed instead of leaving it pending forever).
//! 2. Highest priority first, then oldest submission.
//! 3. Within a job, pending tasks in frame order, preferring those for which
//!    this node ranks first by rendezvous hashing over the live nodes that can
//!    run the job, so concurrent pickers spread out instead of colliding; when
//!    none is left, take the pending task where this node ranks best among the
//!    first few (work stealing, still spread out). A task nobody has claimed
//!    yet is stolen only after a grace of [`STEAL_GRACE_MS`] per rank since
//!    the job's submission, so when a fresh job lands on an idle swarm its
//!    first choice claims it and the rest do not all pile on at once.
//! 4. An encode job waits until its render job is done, and is left to its
//!    submitter while that is alive and has ffmpeg (see `encode.rs`).
//! 5. A first-choice task of a job with plenty of pending work may be
//!    claimed ahead, before a slot is free (see [`Pick::ahead`]); at a
//!    job's tail only a slot about to free claims (the schedule loop
//!    knows when its renders should end).
//!
//! A pure function of the ledger and what this node sees, so it is tested
//! without a network. The one thing it remembers between picks is how far
//! each job's first tasks are done ([`DonePrefix`]): a Done is absorbing
//! and a job never leaves the ledger, so that only grows, and a pick need
//! not pass over every finished task of every job again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use crate::hash::Hash;
use crate::ledger::{
    Control, JobId, JobRecord, Liveness, NodeId, TaskIndex, TaskState, TaskStatus,
};

/// A task to claim, at the epoch that beats every claim so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pick {
    pub job: JobId,
    pub task: TaskIndex,
    pub epoch: u32,
    /// The task may be claimed while every slot is busy, so its claim
    /// settles during the current render and it starts the moment a slot
    /// frees: it is this node's first choice and the job has at least
    /// [`AHEAD_PENDING_PER_NODE`] pending tasks per capable node, so no idle
    /// node is kept waiting for it. At the tail, a task is claimed only
    /// for a slot that should free within the claim's settle window, so it
    /// starts no later than on an idle node.
    pub ahead: bool,
}

/// Pending tasks per capable node below which nothing is claimed ahead.
pub const AHEAD_PENDING_PER_NODE: usize = 2;

/// What a node can run.
#[derive(Clone, Debug, Default)]
pub struct Capability {
    pub engines: BTreeSet<String>,
    pub tags: BTreeSet<String>,
}

impl Capability {
    pub fn can_run(&self, job: &JobRecord) -> bool {
        self.engines.contains(&job.spec.engine) && job.spec.requirements.is_subset(&self.tags)
    }
}

/// This node and the swarm as this node sees it.
pub struct View<'a> {
    pub me: &'a NodeId,
    pub mine: &'a Capability,
    /// Live peers (not this node) and what they can run.
    pub peers: &'a BTreeMap<NodeId, Capability>,
    pub blocklist_after: u32,
    /// Tasks this node is already working on.
    pub busy: &'a HashSet<(JobId, TaskIndex)>,
    /// Jobs left alone for a while: their scene could not be fetched a
    /// moment ago (no peer that holds it is reachable), or this node has
    /// not caught up with the swarm since it started.
    pub waiting: &'a HashSet<JobId>,
    pub live: &'a dyn Liveness,
    /// This node's wall clock, in milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// How far each job's first tasks are done, kept between picks.
    pub done: &'a DonePrefix,
}

/// How many of each job's first tasks are done, as far as this node has
/// looked. Only a lower bound that grows: a task with a Done stays done
/// (`TaskState::status`), and a job is never removed from the ledger (a job
/// submitted again is another job: its id hashes its submission time). A
/// pick starts from here instead of from the job's first task, so a
/// finished job costs a pick one lookup instead of a pass over all its
/// tasks, and a long job's picks stop growing with the tasks done (late in
/// a 10,000-task job on 3 nodes, `pick_in_job` alone was 5.6 % of a node's
/// CPU before this, 0.05 % after).
#[derive(Debug, Default)]
pub struct DonePrefix(Mutex<HashMap<JobId, TaskIndex>>);

impl DonePrefix {
    /// The first task of `rec` that is not done, looking on from where the
    /// last look stopped; the job's task count when all are done.
    pub fn advance(&self, id: JobId, rec: &JobRecord) -> TaskIndex {
        let n = rec.spec.task_count();
        let mut known = super::lock(&self.0);
        let from = known.entry(id).or_insert(0);
        while *from < n && rec.tasks.get(from).is_some_and(|t| !t.dones.is_empty()) {
            *from += 1;
        }
        *from
    }
}

/// How long, per rank, a node that is not a fresh task's first choice
/// leaves it to those ranked above before stealing it. Long enough for the
/// first choice's claim (tens of milliseconds on a LAN) to reach everyone.
pub const STEAL_GRACE_MS: u64 = 100;

/// Ranks beyond this wait no longer: a swarm of many nodes does not leave
/// a fresh task waiting for seconds when its first choices are busy.
const STEAL_GRACE_RANKS: usize = 10;

/// How many pending tasks work stealing ranks itself over.
const STEAL_WINDOW: usize = 32;

/// The next task this node should claim, if any.
pub fn pick(jobs: &BTreeMap<JobId, JobRecord>, view: &View<'_>) -> Option<Pick> {
    let mut runnable: Vec<(&JobId, &JobRecord)> = jobs
        .iter()
        .filter(|(id, rec)| {
            job_is_open(rec)
                && view.mine.can_run(rec)
                && !view.waiting.contains(id)
                && super::encode::inputs_ready(jobs, rec)
                && !left_to_submitter(rec, view)
        })
        .collect();
    runnable.sort_by_key(|(id, rec)| {
        (
            std::cmp::Reverse(rec.priority.value),
            rec.spec.submitted_ms,
            **id,
        )
    });
    runnable
        .into_iter()
        .filter_map(|(id, rec)| {
            let from = view.done.advance(*id, rec);
            (from < rec.spec.task_count()).then_some((*id, rec, from))
        })
        .filter(|(_, rec, _)| !blocked(rec, view))
        .find_map(|(id, rec, from)| pick_in_job(id, rec, view, from))
}

/// Whether this node should run tasks of `rec` at all: open, runnable
/// here, and not left to others by the blocklist.
pub fn wants(rec: &JobRecord, view: &View<'_>) -> bool {
    job_is_open(rec) && view.mine.can_run(rec) && !blocked(rec, view)
}

fn job_is_open(rec: &JobRecord) -> bool {
    !rec.cancelled.0 && !rec.archived.0 && rec.control.value == Control::Active
}

/// An encode job is the submitter's while it is alive and can run it: it
/// holds the frames already.
fn left_to_submitter(rec: &JobRecord, view: &View<'_>) -> bool {
    rec.spec.engine == crate::render::ENCODE_ENGINE
        && rec.spec.submitter != *view.me
        && view
            .peers
            .get(&rec.spec.submitter)
            .is_some_and(|cap| cap.can_run(rec))
}

/// Whether this node should leave the job to others.
fn blocked(rec: &JobRecord, view: &View<'_>) -> bool {
    if rec.failures_of(view.me) < view.blocklist_after {
        return false;
    }
    let failures = rec.failures_by_node();
    let over = |n: &NodeId| failures.get(n).copied().unwrap_or(0) >= view.blocklist_after;
    view.peers
        .iter()
        .any(|(n, cap)| cap.can_run(rec) && !over(n))
}

/// The task to claim in one job, looking from task `from` (those before it
/// are done).
fn pick_in_job(id: JobId, rec: &JobRecord, view: &View<'_>, from: TaskIndex) -> Option<Pick> {
    let mut candidates: Vec<&NodeId> = view
        .peers
        .iter()
        .filter(|(_, cap)| cap.can_run(rec))
        .map(|(n, _)| n)
        .collect();
    candidates.push(view.me);
    let empty = TaskState::default();
    let pending = (from..rec.spec.task_count()).filter_map(|i| {
        if view.busy.contains(&(id, i)) {
            return None;
        }
        let t = rec.tasks.get(&i).unwrap_or(&empty);
        (t.status(rec, id, i, view.live) == TaskStatus::Pending).then_some((i, t))
    });
    let plenty = AHEAD_PENDING_PER_NODE * candidates.len();
    let mut window = Vec::new();
    let mut first_choice = None;
    let mut seen = 0;
    for (i, t) in pending {
        seen += 1;
        if first_choice.is_none() {
            let rank = rank_of(view.me, id, i, &candidates);
            if rank == 0 {
                first_choice = Some(Pick {
                    job: id,
                    task: i,
                    epoch: t.next_epoch(),
                    ahead: false,
                });
            } else if window.len() < STEAL_WINDOW && !in_grace(rec, t, rank, view.now_ms) {
                window.push((rank, i, t.next_epoch()));
            }
        }
        if first_choice.is_some() && seen >= plenty {
            break;
        }
    }
    if let Some(mut pick) = first_choice {
        pick.ahead = seen >= plenty;
        return Some(pick);
    }
    window.into_iter().min().map(|(_, task, epoch)| Pick {
        job: id,
        task,
        epoch,
        ahead: false,
    })
}

/// Whether a task nobody has claimed is still left to the nodes ranked
/// above `rank`. A submission time in the future (the submitter's clock is
/// ahead of ours) gives no grace: a skewed clock must not hold work back.
fn in_grace(rec: &JobRecord, t: &TaskState, rank: usize, now_ms: u64) -> bool {
    if !t.claims.is_empty() {
        return false;
    }
    let grace = STEAL_GRACE_MS * rank.min(STEAL_GRACE_RANKS) as u64;
    let submitted = rec.spec.submitted_ms;
    submitted <= now_ms && now_ms < submitted.saturating_add(grace)
}

/// Where `me` ranks for a task among `nodes` by rendezvous (highest random
/// weight) hashing: 0 is first choice.
pub fn rank_of(me: &NodeId, job: JobId, task: TaskIndex, nodes: &[&NodeId]) -> usize {
    let score = |n: &NodeId| {
        let mut h = blake3::Hasher::new();
        h.update(&job.0.0);
        h.update(&task.to_le_bytes());
        h.update(n.as_str().as_bytes());
        Hash::from(h.finalize())
    };
    let mine = score(me);
    nodes
        .iter()
        .filter(|n| **n != me && score(n) > mine)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::crdt::Lww;
    use crate::ledger::{AllLive, Claim, End, EndKind, FrameRange, JobSpec, Stamp};

    fn job(priority: i32, submitted_ms: u64, frames: u32) -> (JobId, JobRecord) {
        let spec = JobSpec {
            name: "j".into(),
            scene: Hash::of(b"s"),
            scene_file: "s.toml".into(),
            engine: "builtin".into(),
            frames: FrameRange {
                start: 1,
                end: frames,
                step: 1,
            },
            frames_per_task: 1,
            priority,
            output_format: None,
            requirements: BTreeSet::new(),
            max_attempts: 3,
            timeout_secs: None,
            collect_dir: None,
            options: BTreeMap::new(),
            submitter: NodeId::new("a"),
            submitted_ms,
        };
        (crate::ledger::job_id(&spec), JobRecord::new(spec))
    }

    fn cap() -> Capability {
        Capability {
            engines: ["builtin".to_string()].into(),
            tags: BTreeSet::new(),
        }
    }

    fn view<'a>(
        me: &'a NodeId,
        mine: &'a Capability,
        peers: &'a BTreeMap<NodeId, Capability>,
        busy: &'a HashSet<(JobId, TaskIndex)>,
    ) -> View<'a> {
        View {
            me,
            mine,
            peers,
            blocklist_after: 2,
            busy,
            waiting: &NO_JOBS,
            live: &AllLive,
            now_ms: u64::MAX,
            // A fresh one per view: tests in parallel build jobs with the
            // same ids and different tasks done.
            done: Box::leak(Box::default()),
        }
    }

    static NO_JOBS: std::sync::LazyLock<HashSet<JobId>> = std::sync::LazyLock::new(HashSet::new);

    #[test]
    fn priority_then_age() {
        let (old, old_rec) = job(0, 1, 1);
        let (new_hi, hi_rec) = job(5, 9, 1);
        let jobs = BTreeMap::from([(old, old_rec), (new_hi, hi_rec)]);
        let (me, mine, peers, busy) = (NodeId::new("a"), cap(), BTreeMap::new(), HashSet::new());
        let p = pick(&jobs, &view(&me, &mine, &peers, &busy)).unwrap();
        assert_eq!(p.job, new_hi);
    }

    #[test]
    fn concurrent_pickers_spread_out() {
        let (id, rec) = job(0, 1, 64);
        let jobs = BTreeMap::from([(id, rec)]);
        let names: Vec<NodeId> = (0..4).map(|i| NodeId::new(format!("n{i}"))).collect();
        let mut picks = HashSet::new();
        for me in &names {
            let peers: BTreeMap<NodeId, Capability> = names
                .iter()
                .filter(|n| *n != me)
                .map(|n| (n.clone(), cap()))
                .collect();
            let (mine, busy) = (cap(), HashSet::new());
            picks.insert(pick(&jobs, &view(me, &mine, &peers, &busy)).unwrap().task);
        }
        assert_eq!(
            picks.len(),
            4,
            "four nodes picking at once choose four different tasks"
        );
    }

    #[test]
    fn claimed_and_done_tasks_are_skipped_and_epochs_advance() {
        let (id, mut rec) = job(0, 1, 2);
        let other = NodeId::new("b");
        rec.tasks.entry(0).or_default().claims.insert(Claim {
            epoch: 1,
            lamport: 1,
            node: other.clone(),
        });
        let jobs = BTreeMap::from([(id, rec.clone())]);
        let (me, mine, peers, busy) = (NodeId::new("a"), cap(), BTreeMap::new(), HashSet::new());
        let p = pick(&jobs, &view(&me, &mine, &peers, &busy)).unwrap();
        assert_eq!((p.task, p.epoch), (1, 1), "task 0 is held by a live claim");

        // The claim failed: task 0 is pending again, at epoch 2.
        rec.tasks.entry(0).or_default().ends.insert(End {
            epoch: 1,
            node: other,
            generation: 0,
            kind: EndKind::Failed,
            reason: "x".into(),
            log: None,
        });
        let jobs = BTreeMap::from([(id, rec)]);
        let p = pick(&jobs, &view(&me, &mine, &peers, &busy)).unwrap();
        assert_eq!((p.task, p.epoch), (0, 2));
    }

    fn done_by(node: &NodeId) -> crate::ledger::Done {
        crate::ledger::Done {
            outputs: crate::ledger::Outputs::new(),
            node: node.clone(),
            epoch: 1,
            lamport: 1,
            render_ms: 0,
        }
    }

    #[test]
    fn picks_start_after_the_done_prefix_and_skip_finished_jobs() {
        let other = NodeId::new("b");
        // Tasks 0, 1 and 3 of 5 done: the prefix is 2, and task 3 being done
        // does not move it past the pending task 2.
        let (id, mut rec) = job(0, 1, 5);
        for i in [0, 1, 3] {
            rec.tasks
                .entry(i)
                .or_default()
                .dones
                .insert(done_by(&other));
        }
        // A finished job of a higher priority: never the pick.
        let (finished, mut fin) = job(9, 1, 3);
        for i in 0..3 {
            fin.tasks
                .entry(i)
                .or_default()
                .dones
                .insert(done_by(&other));
        }
        let jobs = BTreeMap::from([(id, rec.clone()), (finished, fin.clone())]);
        let (me, mine, peers, busy) = (NodeId::new("a"), cap(), BTreeMap::new(), HashSet::new());
        let done = DonePrefix::default();
        let v = View {
            done: &done,
            ..view(&me, &mine, &peers, &busy)
        };
        let p = pick(&jobs, &v).unwrap();
        assert_eq!((p.job, p.task), (id, 2));
        assert_eq!(done.advance(id, &rec), 2);
        assert_eq!(done.advance(finished, &fin), 3, "all three tasks done");

        // Task 2 done: the next pick is task 4, and the prefix passes 3.
        rec.tasks
            .entry(2)
            .or_default()
            .dones
            .insert(done_by(&other));
        let jobs = BTreeMap::from([(id, rec.clone()), (finished, fin)]);
        let p = pick(&jobs, &v).unwrap();
        assert_eq!((p.job, p.task), (id, 4));
        assert_eq!(done.advance(id, &rec), 4);
        // A claim is not a done: the prefix stays before a claimed task.
        rec.tasks.entry(4).or_default().claims.insert(Claim {
            epoch: 1,
            lamport: 2,
            node: other.clone(),
        });
        assert_eq!(done.advance(id, &rec), 4);
        let jobs = BTreeMap::from([(id, rec)]);
        assert_eq!(pick(&jobs, &v), None, "task 4 is held by a live claim");
    }

    #[test]
    fn paused_and_foreign_engine_jobs_are_not_picked() {
        let (id, mut rec) = job(0, 1, 1);
        rec.control = Lww::new(
            Stamp {
                lamport: 1,
                node: NodeId::new("a"),
            },
            Control::Paused,
        );
        let jobs = BTreeMap::from([(id, rec)]);
        let (me, mine, peers, busy) = (NodeId::new("a"), cap(), BTreeMap::new(), HashSet::new());
        assert!(pick(&jobs, &view(&me, &mine, &peers, &busy)).is_none());
        let (id, mut rec) = job(0, 1, 1);
        rec.spec.engine = "blender".into();
        let jobs = BTreeMap::from([(id, rec)]);
        assert!(pick(&jobs, &view(&me, &mine, &peers, &busy)).is_none());
    }

    #[test]
    fn blocklisted_node_leaves_the_job_to_others_but_not_to_nobody() {
        let (id, mut rec) = job(0, 1, 4);
        let me = NodeId::new("a");
        for (task, epoch) in [(0, 1), (1, 1)] {
            rec.tasks.entry(task).or_default().ends.insert(End {
                epoch,
                node: me.clone(),
                generation: 0,
                kind: EndKind::Failed,
                reason: "x".into(),
                log: None,
            });
        }
        assert_eq!(rec.failures_of(&me), 2);
        assert_eq!(rec.failures_of(&NodeId::new("b")), 0);
        assert_eq!(rec.failures_by_node().get(&me), Some(&2));
        let mut retried = rec.clone();
        retried.retry_generation.0 += 1;
        assert_eq!(
            retried.failures_of(&me),
            0,
            "a retry starts the count again"
        );
        let jobs = BTreeMap::from([(id, rec)]);
        let (mine, busy) = (cap(), HashSet::new());
        let peers = BTreeMap::from([(NodeId::new("b"), cap())]);
        assert!(
            pick(&jobs, &view(&me, &mine, &peers, &busy)).is_none(),
            "b can take it"
        );
        let alone = BTreeMap::new();
        assert!(
            pick(&jobs, &view(&me, &mine, &alone, &busy)).is_some(),
            "nobody else can"
        );
    }

    #[test]
    fn a_fresh_task_is_left_to_its_first_choice_for_a_grace_per_rank() {
        let submitted = 1_000_000;
        let (id, rec) = job(0, submitted, 1);
        let names: Vec<NodeId> = (0..4).map(|i| NodeId::new(format!("n{i}"))).collect();
        let refs: Vec<&NodeId> = names.iter().collect();
        let busy = HashSet::new();
        let picks_at = |rec: &JobRecord, me: &NodeId, now_ms: u64| {
            let peers: BTreeMap<NodeId, Capability> = names
                .iter()
                .filter(|n| *n != me)
                .map(|n| (n.clone(), cap()))
                .collect();
            let mine = cap();
            let mut v = view(me, &mine, &peers, &busy);
            v.now_ms = now_ms;
            let jobs = BTreeMap::from([(id, rec.clone())]);
            pick(&jobs, &v).is_some()
        };
        for me in &names {
            let rank = rank_of(me, id, 0, &refs) as u64;
            let due = submitted + rank * STEAL_GRACE_MS;
            assert!(
                picks_at(&rec, me, due),
                "rank {rank} steals once its grace is over"
            );
            if rank > 0 {
                assert!(!picks_at(&rec, me, due - 1), "rank {rank} waits its grace");
                assert!(
                    picks_at(&rec, me, submitted - 5_000),
                    "a submission in the future (skewed clock) gives no grace"
                );
            }
        }

        // A task whose claim failed is pending again and stolen at once.
        let mut retried = rec.clone();
        let first = names
            .iter()
            .find(|n| rank_of(n, id, 0, &refs) == 0)
            .unwrap();
        let t = retried.tasks.entry(0).or_default();
        t.claims.insert(Claim {
            epoch: 1,
            lamport: 1,
            node: first.clone(),
        });
        t.ends.insert(End {
            epoch: 1,
            node: first.clone(),
            generation: 0,
            kind: EndKind::Failed,
            reason: "x".into(),
            log: None,
        });
        for me in names.iter().filter(|n| *n != first) {
            assert!(
                picks_at(&retried, me, submitted + 1),
                "no grace for a retry"
            );
        }
    }
}
