//! What people ask of a node: submit, look, act. The HTTP API is a thin
//! skin over these methods; tests and embedders may call them directly.

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::peers::{HeldTask, NodeLiveness};
use super::views::{JobView, NodeTaskView, NodeView, OutputView, TaskView};
use super::{Inner, Node, NodeError, Severity, SubmitError, SubmitRequest, lock};
use crate::hash::Hash;
use crate::ledger::{
    Control, JobId, JobProgress, JobRecord, JobStatus, Liveness, Lookup, NodeId, NoneHold,
    TaskState, TaskStatus, ops,
};

/// A change a person makes to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pause,
    Resume,
    Cancel,
    /// Give every failed task fresh attempts.
    Retry,
    Priority(i32),
    /// Put a finished job away: out of the job list, the page and the
    /// digests, and nothing of it kept from the cache's eviction.
    Archive,
}

/// Why an action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Lookup(#[from] Lookup),
    #[error("job {name} is {status}: {action} does not apply")]
    NotApplicable {
        name: String,
        status: &'static str,
        action: &'static str,
    },
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// This node, as the API reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub name: String,
    pub version: String,
    pub engines: Vec<crate::render::EngineInfo>,
    pub data_dir: String,
    /// Where it listens for peers, as dialable multiaddrs.
    pub listen: Vec<String>,
    /// One hash over the whole ledger: equal on two nodes exactly when
    /// their ledgers are identical.
    pub ledger_digest: String,
    /// Bad messages and records received from peers and dropped.
    pub bad_input: u64,
    pub cache: CacheInfo,
}

/// The blob store against its size (see `cache.rs`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheInfo {
    /// Bytes of chunks kept at the last trim (0 before the first).
    pub bytes: u64,
    /// `--cache-size`.
    pub size: u64,
    /// Trims so far.
    pub trims: u64,
    /// Bytes evicted so far.
    pub bytes_freed: u64,
}

impl Node {
    /// Check and add a job.
    pub async fn submit(&self, req: SubmitRequest) -> Result<JobId, SubmitError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(SubmitError {
                field: "",
                message: "the node is shutting down".into(),
                internal: true,
            });
        }
        self.inner.submit(req).await
    }

    /// A job id or unique prefix.
    pub fn resolve(&self, reference: &str) -> Result<JobId, Lookup> {
        self.inner.ledger.resolve(reference)
    }

    /// Every job not archived, newest first.
    pub fn jobs(&self, with_tasks: bool) -> Vec<JobView> {
        self.jobs_where(with_tasks, false)
    }

    /// Every job, archived ones too, newest first.
    pub fn all_jobs(&self, with_tasks: bool) -> Vec<JobView> {
        self.jobs_where(with_tasks, true)
    }

    fn jobs_where(&self, with_tasks: bool, archived_too: bool) -> Vec<JobView> {
        let mut ids: Vec<(u64, JobId)> = self.inner.ledger.read(|jobs| {
            jobs.iter()
                .filter(|(_, r)| archived_too || !r.archived.0)
                .map(|(id, r)| (r.spec.submitted_ms, *id))
                .collect()
        });
        ids.sort_by(|a, b| b.cmp(a));
        ids.into_iter()
            .filter_map(|(_, id)| self.job(id, with_tasks))
            .collect()
    }

    /// One job.
    pub fn job(&self, id: JobId, with_tasks: bool) -> Option<JobView> {
        if !with_tasks && let Some(view) = self.archived_view(id) {
            return Some(view);
        }
        let inner = &self.inner;
        let progress = self.local_progress();
        let archived = self.archived_record(id);
        inner
            .with_liveness(|live| self.job_with(id, archived.as_ref(), with_tasks, live, &progress))
    }

    fn job_with(
        &self,
        id: JobId,
        archived: Option<&JobRecord>,
        with_tasks: bool,
        live: &NodeLiveness<'_>,
        progress: &std::collections::HashMap<(JobId, u32), f32>,
    ) -> Option<JobView> {
        let inner = &self.inner;
        let (peers, now) = (live.peers, live.now);
        let remote = |job: JobId, task: u32| {
            peers.alive(now).find_map(|p| {
                p.heartbeat
                    .held
                    .iter()
                    .find(|h| h.job == job && h.task == task)
                    .map(|h| h.progress)
            })
        };
        // The nodes that take work now, for the estimate of time left.
        let awake = peers
            .alive(now)
            .filter(|p| p.heartbeat.asleep.is_none())
            .count();
        let live_nodes = (awake + usize::from(!inner.sleep.asleep())) as u64;
        self.with_job(id, archived, |rec| {
            let live = judged(rec, live);
            let p = rec.progress(id, live);
            let mut view = job_view(id, rec, &p, rec.status_of(&p), live_nodes);
            let open = matches!(view.status, JobStatus::Pending | JobStatus::Running);
            if open && p.tasks_running == 0 && p.tasks_pending > 0 {
                view.waiting = self.why_no_node_takes(rec, peers, now);
            }
            if with_tasks {
                let name_of = |n: &crate::ledger::NodeId| {
                    if *n == inner.id {
                        Some(inner.cfg.name.clone())
                    } else {
                        peers.get(n).map(|p| p.heartbeat.name.clone())
                    }
                };
                let progress_of = |task: u32| {
                    progress
                        .get(&(id, task))
                        .copied()
                        .or_else(|| remote(id, task))
                };
                view.tasks = Some(task_views(id, rec, live, &name_of, &progress_of));
            }
            view
        })
    }

    /// An archived job without its tasks: its header and the summary the
    /// ledger keeps of it, so a list of a year's archives reads no task.
    /// `None` for any other job.
    fn archived_view(&self, id: JobId) -> Option<JobView> {
        let ledger = &self.inner.ledger;
        let summary = logged(ledger.summary(id), || {
            format!("the summary of job {}", id.short())
        })?;
        let header = ledger.read(|jobs| jobs.get(&id).map(JobRecord::header))?;
        Some(job_view(id, &header, &summary.progress, summary.status, 0))
    }

    /// An archived job's whole record, read back from the ledger file
    /// before the peer table is locked (`with_liveness`): reading a long
    /// job's tasks takes a while. `None` for any other job.
    fn archived_record(&self, id: JobId) -> Option<JobRecord> {
        let ledger = &self.inner.ledger;
        let archived = ledger.read(|jobs| jobs.get(&id).is_some_and(|r| r.archived.0));
        archived
            .then(|| self.read_job(id, JobRecord::clone))
            .flatten()
    }

    /// `f` of the job: of `archived` if read already, else as `read_job`.
    fn with_job<R>(
        &self,
        id: JobId,
        archived: Option<&JobRecord>,
        f: impl FnOnce(&JobRecord) -> R,
    ) -> Option<R> {
        match archived {
            Some(rec) => Some(f(rec)),
            None => self.read_job(id, f),
        }
    }

    /// Reads one job with all its tasks (an archived job's from the ledger
    /// file); a file that cannot be read is logged and reads as no job.
    fn read_job<R>(&self, id: JobId, f: impl FnOnce(&JobRecord) -> R) -> Option<R> {
        logged(self.inner.ledger.read_job(id, f), || {
            format!("job {}", id.short())
        })
    }

    /// Why no node will take a job's pending tasks now, if none will: every
    /// live node that can run it is asleep, or none can.
    fn why_no_node_takes(
        &self,
        rec: &JobRecord,
        peers: &super::peers::PeerTable,
        now: Instant,
    ) -> Option<String> {
        let inner = &self.inner;
        let me = inner
            .capability()
            .can_run(rec)
            .then(|| inner.sleep.asleep());
        let others = peers
            .capabilities(now)
            .into_iter()
            .filter(|(n, cap)| *n != inner.id && cap.can_run(rec))
            .map(|(n, _)| peers.is_asleep(&n));
        // Whether each node that can run the job is asleep.
        let capable: Vec<bool> = me.into_iter().chain(others).collect();
        if capable.contains(&false) {
            return None;
        }
        let asleep = capable.len();
        Some(match asleep {
            0 => "no live node can run it (engine or tags missing)".to_string(),
            1 => "the one node that can run it is asleep".to_string(),
            n => format!("all {n} nodes that can run it are asleep"),
        })
    }

    /// Every task's state in one character each (see [`super::views::GridView`]).
    pub fn grid(&self, id: JobId) -> Option<super::views::GridView> {
        let archived = self.archived_record(id);
        self.inner.with_liveness(|live| {
            self.with_job(id, archived.as_ref(), |rec| {
                let live = judged(rec, live);
                let empty = TaskState::default();
                let states = (0..rec.spec.task_count())
                    .map(|i| {
                        let t = rec.tasks.get(&i).unwrap_or(&empty);
                        let status = t.status(rec, id, i, live);
                        match status {
                            TaskStatus::Pending => 'p',
                            TaskStatus::Running => 'r',
                            TaskStatus::Failed => 'f',
                            TaskStatus::Done if t.wasted(status) > 0 => 'w',
                            TaskStatus::Done => 'd',
                        }
                    })
                    .collect();
                let f = rec.spec.frames;
                super::views::GridView {
                    id: id.to_string(),
                    frames_per_task: rec.spec.frames_per_task,
                    task_count: rec.spec.task_count(),
                    frames: [f.start, f.end, f.step],
                    states,
                }
            })
        })
    }

    fn local_progress(&self) -> std::collections::HashMap<(JobId, u32), f32> {
        lock(&self.inner.running)
            .iter()
            .map(|(k, r)| (*k, r.progress.borrow().fraction))
            .collect()
    }

    /// Pause, resume, cancel, retry, re-prioritise or archive a job.
    pub async fn act(&self, id: JobId, action: Action) -> Result<(), ActionError> {
        let inner = &self.inner;
        let (base, status) = inner
            .with_liveness(|live| {
                inner
                    .ledger
                    .read(|jobs| jobs.get(&id).map(|r| (r.header(), r.status(id, live))))
            })
            .ok_or_else(|| Lookup::NotFound(id.to_string()))?;
        let refuse = |action: &'static str| ActionError::NotApplicable {
            name: base.spec.name.clone(),
            status: status.as_str(),
            action,
        };
        if base.archived.0 {
            // Its status is not derived here: its tasks are not in memory.
            return match action {
                Action::Archive => Ok(()),
                _ => Err(refuse_archived(&base, action_name(action))),
            };
        }
        let delta = match action {
            Action::Pause | Action::Resume if status.is_final() => {
                return Err(refuse(action_name(action)));
            }
            Action::Cancel if status == JobStatus::Cancelled => return Err(refuse("cancel")),
            Action::Cancel if status == JobStatus::Done => return Err(refuse("cancel")),
            Action::Retry if status == JobStatus::Cancelled => return Err(refuse("retry")),
            Action::Archive if !status.is_final() => return Err(refuse("archive")),
            Action::Pause => ops::control(&base, inner.ledger.stamp(), Control::Paused),
            Action::Resume => ops::control(&base, inner.ledger.stamp(), Control::Active),
            Action::Cancel => ops::cancel(&base),
            Action::Retry => ops::retry(&base),
            Action::Priority(p) => ops::priority(&base, inner.ledger.stamp(), p),
            Action::Archive => ops::archive(&base),
        };
        inner.commit(id, delta).await?;
        if matches!(action, Action::Cancel) {
            self.cancel_encodes_of(id).await?;
        }
        inner.events.push(
            Severity::Info,
            "job_changed",
            Some(id),
            None,
            format!(
                "job {}: {} on {}",
                base.spec.name,
                action_name(action),
                inner.cfg.name
            ),
        );
        Ok(())
    }

    /// A cancelled render job takes its encode job with it.
    async fn cancel_encodes_of(&self, id: JobId) -> Result<(), NodeError> {
        let children: Vec<(JobId, JobRecord)> = self.inner.ledger.read(|jobs| {
            jobs.iter()
                .filter(|(_, r)| super::encode::parent_of(&r.spec) == Some(id) && !r.cancelled.0)
                .map(|(c, r)| (*c, r.header()))
                .collect()
        });
        for (child, base) in children {
            self.inner.commit(child, ops::cancel(&base)).await?;
        }
        Ok(())
    }

    /// The output of `frame` of job `id`, if the frame is done.
    pub fn output(&self, id: JobId, frame: u32) -> Option<crate::ledger::Output> {
        let task = self
            .inner
            .ledger
            .read(|jobs| jobs.get(&id)?.spec.task_of_frame(frame))?;
        self.task(id, task)?
            .winning_done()?
            .outputs
            .get(&frame)
            .cloned()
    }

    /// The log blob of the last failed attempt of task `task` of job `id`,
    /// if it left one.
    pub fn failure_log(&self, id: JobId, task: u32) -> Option<crate::hash::Hash> {
        self.task(id, task)?.last_failure()?.log
    }

    /// One task of a job (of an archived job, its row alone is read from
    /// the ledger file); a file that cannot be read is logged and reads as
    /// no task.
    fn task(&self, id: JobId, task: u32) -> Option<TaskState> {
        logged(self.inner.ledger.task(id, task), || {
            format!("task {task} of job {}", id.short())
        })
    }

    /// Whether this node serves and uses the bench protocol.
    pub fn bench_enabled(&self) -> bool {
        self.inner
            .cfg
            .net
            .as_ref()
            .is_some_and(|n| n.bench_protocol)
    }

    /// Benchmarks only: pull `bytes` of nothing from `peer` over the bench
    /// protocol, in replies as large as chunks and as many in flight as a
    /// chunk fetch uses, and say how long it took: the transfer baseline.
    pub async fn bench_raw(
        &self,
        peer: &str,
        bytes: u64,
    ) -> Result<std::time::Duration, NodeError> {
        use futures::StreamExt;
        let (Some(net), true) = (&self.inner.net, self.bench_enabled()) else {
            return Err(NodeError::Net(
                "this node was not started with --test-bench-protocol".into(),
            ));
        };
        let peer: libp2p::PeerId = peer
            .parse()
            .map_err(|e| NodeError::Net(format!("`{peer}` is not a peer id: {e}")))?;
        let step = super::wire::MAX_BENCH_REPLY as u64;
        let sizes: Vec<u32> = (0..bytes.div_ceil(step))
            .map(|i| (bytes - i * step).min(step) as u32)
            .collect();
        let started = Instant::now();
        let mut replies = futures::stream::iter(sizes)
            .map(|n| {
                net.client
                    .request(peer, super::wire::PROTO_BENCH, n.to_le_bytes().to_vec())
            })
            .buffer_unordered(super::fetch::IN_FLIGHT);
        while let Some(reply) = replies.next().await {
            reply.map_err(|e| NodeError::Net(e.to_string()))?;
        }
        Ok(started.elapsed())
    }

    /// Make `blob` complete in this node's store (fetching it from peers).
    pub async fn ensure_blob(&self, blob: Hash) -> Result<(), String> {
        self.inner.ensure_blob(blob, &[]).await
    }

    /// Put this node to sleep by hand: it takes no new tasks and gives
    /// back those it claimed but has not started. Its renders under way
    /// finish, or with `now` stop and go back to the swarm at once (a
    /// render stopped so costs its task no attempt). Returns this node's
    /// view.
    pub fn sleep(&self, now: bool) -> Result<NodeView, super::sleep::SleepError> {
        let inner = &self.inner;
        inner.sleep.set(true)?;
        if now {
            inner.stop_renders(&format!("node {} was put to sleep", inner.cfg.name));
        }
        Ok(self.self_view(&self.job_names()))
    }

    /// Wake this node by hand: it takes tasks again (until its schedule,
    /// if it has one, next says otherwise).
    pub fn wake(&self) -> Result<NodeView, super::sleep::SleepError> {
        self.inner.sleep.set(false)?;
        Ok(self.self_view(&self.job_names()))
    }

    /// This node.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.inner.id.to_string(),
            name: self.inner.cfg.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            engines: self.inner.engines.describe(),
            data_dir: self.inner.cfg.data_dir.display().to_string(),
            listen: lock(&self.inner.listen_addrs).clone(),
            ledger_digest: self.inner.ledger.root_digest().to_string(),
            bad_input: self.bad_input_count(),
            cache: self.cache_info(),
        }
    }

    /// The blob store's size and trims, as `info` gives them.
    pub fn cache_info(&self) -> CacheInfo {
        let m = &self.inner.metrics;
        CacheInfo {
            bytes: m.cache_bytes.load(Ordering::Relaxed),
            size: self.inner.cfg.cache_size,
            trims: m.cache_trims.load(Ordering::Relaxed),
            bytes_freed: m.cache_bytes_freed.load(Ordering::Relaxed),
        }
    }

    /// The swarm's alerts, newest first.
    pub fn alerts(&self) -> Vec<super::views::AlertView> {
        let mut out: Vec<super::views::AlertView> = self.inner.ledger.read_alerts(|alerts| {
            alerts
                .iter()
                .map(|(id, r)| {
                    let e = &r.entry.0;
                    super::views::AlertView {
                        id: id.to_string(),
                        kind: e.kind.clone(),
                        severity: e.severity.clone(),
                        time_ms: e.time_ms,
                        node_name: e.node_name.clone(),
                        job: e.job.map(|j| j.to_string()),
                        job_name: e.job_name.clone(),
                        frames: e.frames.clone(),
                        message: e.message.clone(),
                        reason: e.reason.clone(),
                        delivered: r.delivered(),
                        sent_by: r.sent.first().map(|s| s.node.to_string()),
                        claimed_by: r.winning_claim().map(|c| c.node.to_string()),
                    }
                })
                .collect()
        });
        out.sort_by_key(|a| std::cmp::Reverse(a.time_ms));
        out
    }

    /// Every node this node knows, itself first, each with its telemetry
    /// history when `history`.
    pub fn nodes_with(&self, history: bool) -> Vec<NodeView> {
        let mut nodes = self.nodes();
        if history {
            let peers = lock(&self.inner.peers);
            for n in &mut nodes {
                n.history = if n.me {
                    lock(&self.inner.telemetry).samples()
                } else {
                    peers.history(&crate::ledger::NodeId::new(n.id.clone()))
                };
            }
        }
        nodes
    }

    /// Every node this node knows, itself first.
    pub fn nodes(&self) -> Vec<NodeView> {
        let inner = &self.inner;
        let names = self.job_names();
        let mut out = vec![self.self_view(&names)];
        let now = Instant::now();
        let peers = lock(&inner.peers);
        let mut others: Vec<NodeView> = peers
            .all()
            .filter(|p| p.heartbeat.node != inner.id)
            .map(|p| {
                let rtt = peers.rtt(&p.heartbeat.node);
                let held =
                    |h: &HeldTask| inner.still_held(&p.heartbeat.node, h.job, h.task, h.epoch);
                peer_view(p, rtt, now, &names, inner.cfg.lease, &held, &|j, t| {
                    inner.task_frames(j, t)
                })
            })
            .collect();
        drop(peers);
        self.add_started_tasks(&mut others, &names);
        others.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        out.extend(others);
        out
    }

    /// Adds to each live peer shown with nothing to render the tasks the
    /// ledger shows it rendering. A peer's finished task leaves its view as
    /// soon as its Done arrives (`holds`), while the task it started next,
    /// whose Start came in the same message, would wait for the peer's next
    /// heartbeat: a busy node was shown idle for up to a second between two
    /// renders. The ledger is read only when some peer looks idle.
    fn add_started_tasks(
        &self,
        views: &mut [NodeView],
        names: &std::collections::HashMap<JobId, String>,
    ) {
        let idle: std::collections::HashSet<NodeId> = views
            .iter()
            .filter(|v| v.alive && v.tasks.is_empty())
            .map(|v| NodeId::new(v.id.clone()))
            .collect();
        if idle.is_empty() {
            return;
        }
        let mut started = self.inner.ledger.read(|jobs| started_by(jobs, &idle));
        for v in views.iter_mut() {
            let Some(tasks) = started.remove(v.id.as_str()) else {
                continue;
            };
            v.tasks = tasks
                .into_iter()
                .map(|(job, task, frames)| node_task_view(names, job, task, frames, 0.0))
                .collect();
            v.state = node_state(true, true, v.asleep.is_some()).to_string();
        }
    }

    fn job_names(&self) -> std::collections::HashMap<JobId, String> {
        self.inner.ledger.read(|jobs| {
            jobs.iter()
                .map(|(id, r)| (*id, r.spec.name.clone()))
                .collect()
        })
    }

    fn self_view(&self, names: &std::collections::HashMap<JobId, String>) -> NodeView {
        let inner = &self.inner;
        // Read out of the running list first: the ledger is read with no
        // other lock held.
        let running: Vec<(JobId, u32, u32, f32)> = lock(&inner.running)
            .iter()
            .map(|((job, task), r)| (*job, *task, r.epoch, r.progress.borrow().fraction))
            .collect();
        let tasks: Vec<NodeTaskView> = running
            .into_iter()
            .filter(|&(job, task, epoch, _)| inner.still_held(&inner.id, job, task, epoch))
            .map(|(job, task, _, progress)| {
                node_task_view(names, job, task, inner.task_frames(job, task), progress)
            })
            .collect();
        let t = self.telemetry();
        let asleep = inner.sleep.why_asleep();
        NodeView {
            id: inner.id.to_string(),
            name: inner.cfg.name.clone(),
            me: true,
            alive: true,
            state: node_state(true, !tasks.is_empty(), asleep.is_some()).to_string(),
            asleep,
            last_seen_ms: 0,
            slots: inner.cfg.slots as u32,
            tasks,
            engines: inner.engines.names(),
            tags: inner.cfg.tags.iter().cloned().collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            web: None,
            cpu: t.cpu,
            memory: t.memory_used,
            memory_total: t.memory_total,
            rtt_ms: None,
            telemetry: t,
            history: Vec::new(),
        }
    }
}

impl Inner {
    /// Whether `node` still holds `task` of `job` under its claim of
    /// `epoch`, as far as the ledger knows. A heartbeat says what its node
    /// holds up to a heartbeat late, and a node's own list keeps a task
    /// until its outcome is written; the Done or End reaches the ledger
    /// first. A task of a job the ledger does not know yet is taken on the
    /// heartbeat's word.
    pub(crate) fn still_held(&self, node: &NodeId, job: JobId, task: u32, epoch: u32) -> bool {
        self.ledger
            .read(|jobs| jobs.get(&job).is_none_or(|r| holds(r, task, epoch, node)))
    }

    pub fn task_frames(&self, job: JobId, task: u32) -> Vec<u32> {
        self.ledger
            .read(|jobs| jobs.get(&job).map(|r| r.spec.task_frames(task)))
            .unwrap_or_default()
    }
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Pause => "pause",
        Action::Resume => "resume",
        Action::Cancel => "cancel",
        Action::Retry => "retry",
        Action::Priority(_) => "priority",
        Action::Archive => "archive",
    }
}

/// An archived job takes no more actions but archive (which changes nothing).
fn refuse_archived(base: &JobRecord, action: &'static str) -> ActionError {
    ActionError::NotApplicable {
        name: base.spec.name.clone(),
        status: "archived",
        action,
    }
}

/// A read of the ledger file that failed, logged; it reads as nothing.
fn logged<T>(
    read: Result<Option<T>, crate::ledger::LedgerError>,
    what: impl FnOnce() -> String,
) -> Option<T> {
    read.unwrap_or_else(|e| {
        tracing::warn!("reading {}: {e}", what());
        None
    })
}

/// Whose leases count in a view of `rec`: none in an archived job's, where
/// nothing runs any more (as in its [`crate::ledger::Summary`]).
fn judged<'a>(rec: &JobRecord, live: &'a dyn Liveness) -> &'a dyn Liveness {
    if rec.archived.0 { &NoneHold } else { live }
}

fn job_view(
    id: JobId,
    rec: &JobRecord,
    p: &JobProgress,
    status: JobStatus,
    live_nodes: u64,
) -> JobView {
    let mean = (p.tasks_done > 0).then(|| p.render_ms_done / u64::from(p.tasks_done));
    let remaining = u64::from(p.tasks_pending + p.tasks_running);
    let eta_secs = match (status, mean) {
        (JobStatus::Running | JobStatus::Pending, Some(m)) => {
            Some(remaining * m / live_nodes.max(1) / 1000)
        }
        _ => None,
    };
    JobView {
        id: id.to_string(),
        name: rec.spec.name.clone(),
        status,
        engine: rec.spec.engine.clone(),
        scene_file: rec.spec.scene_file.clone(),
        frames: rec.spec.frames.to_string(),
        frames_per_task: rec.spec.frames_per_task,
        priority: rec.priority.value,
        max_attempts: rec.spec.max_attempts,
        submitter: rec.spec.submitter.to_string(),
        submitted_ms: rec.spec.submitted_ms,
        frames_total: p.frames_total,
        frames_done: p.frames_done,
        tasks_total: p.tasks_total,
        tasks_pending: p.tasks_pending,
        tasks_running: p.tasks_running,
        tasks_done: p.tasks_done,
        tasks_failed: p.tasks_failed,
        renders_started: p.renders_started,
        renders_wasted: p.renders_wasted,
        mean_render_ms: mean,
        eta_secs,
        waiting: None,
        collect_dir: rec.spec.collect_dir.clone(),
        collected: rec.collected.0,
        archived: rec.archived.0,
        requirements: rec.spec.requirements.iter().cloned().collect(),
        options: rec.spec.options.clone(),
        tasks: None,
    }
}

fn task_views(
    id: JobId,
    rec: &JobRecord,
    live: &dyn Liveness,
    name_of: &dyn Fn(&crate::ledger::NodeId) -> Option<String>,
    progress_of: &dyn Fn(u32) -> Option<f32>,
) -> Vec<TaskView> {
    let empty = TaskState::default();
    (0..rec.spec.task_count())
        .map(|i| {
            let t = rec.tasks.get(&i).unwrap_or(&empty);
            let status = t.status(rec, id, i, live);
            let done = t.winning_done();
            let node = done.map(|d| &d.node).or(t.winning_claim().map(|c| &c.node));
            let failure = t.last_failure();
            TaskView {
                index: i,
                frames: rec.spec.task_frames(i),
                status,
                node: node.map(|n| n.to_string()),
                node_name: node.and_then(name_of),
                attempts: t.starts.len() as u32,
                failures: t.failures(rec.retry_generation.0),
                progress: (status == TaskStatus::Running)
                    .then(|| progress_of(i))
                    .flatten(),
                reason: failure.map(|e| e.reason.clone()),
                log: failure.and_then(|e| e.log).map(|h| h.to_string()),
                render_ms: done.map(|d| d.render_ms),
                outputs: done
                    .map(|d| {
                        d.outputs
                            .iter()
                            .map(|(f, o)| {
                                (
                                    *f,
                                    OutputView {
                                        blob: o.blob.to_string(),
                                        ext: o.ext.clone(),
                                    },
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// Whether the ledger's record `rec` leaves `task` held by `node` under
/// its claim of `epoch`: not done, that attempt not ended, the job not
/// archived (an archived job is finished; its tasks are not in memory).
fn holds(rec: &JobRecord, task: u32, epoch: u32, node: &NodeId) -> bool {
    if rec.archived.0 {
        return false;
    }
    rec.tasks
        .get(&task)
        .is_none_or(|t| t.dones.is_empty() && t.end_at(epoch, node).is_none())
}

/// The tasks of open jobs that the ledger shows one of `nodes` rendering:
/// its claim wins, it recorded a start under it, and no end or done came
/// since. Keyed by node id, each with its job, task and frames.
fn started_by(
    jobs: &std::collections::BTreeMap<JobId, JobRecord>,
    nodes: &std::collections::HashSet<NodeId>,
) -> std::collections::HashMap<String, Vec<(JobId, u32, Vec<u32>)>> {
    let mut out: std::collections::HashMap<String, Vec<(JobId, u32, Vec<u32>)>> =
        std::collections::HashMap::new();
    for (id, rec) in jobs {
        if rec.archived.0 || rec.cancelled.0 {
            continue;
        }
        for (&task, t) in &rec.tasks {
            let Some(c) = t.winning_claim() else {
                continue;
            };
            let rendering =
                nodes.contains(&c.node) && t.started(c) && holds(rec, task, c.epoch, &c.node);
            if rendering {
                out.entry(c.node.to_string()).or_default().push((
                    *id,
                    task,
                    rec.spec.task_frames(task),
                ));
            }
        }
    }
    out
}

/// A task a node renders, as its view shows it.
fn node_task_view(
    names: &std::collections::HashMap<JobId, String>,
    job: JobId,
    task: u32,
    frames: Vec<u32>,
    progress: f32,
) -> NodeTaskView {
    NodeTaskView {
        job: job.to_string(),
        job_name: names.get(&job).cloned().unwrap_or_default(),
        task,
        frames,
        progress,
    }
}

/// A node's state in one word, as the page filters by it.
fn node_state(alive: bool, rendering: bool, asleep: bool) -> &'static str {
    match (alive, rendering, asleep) {
        (false, _, _) => "offline",
        (true, true, _) => "rendering",
        (true, false, true) => "asleep",
        (true, false, false) => "idle",
    }
}

/// A peer as the API reports it.
fn peer_view(
    p: &super::peers::Peer,
    rtt: Option<std::time::Duration>,
    now: Instant,
    names: &std::collections::HashMap<JobId, String>,
    lease: std::time::Duration,
    still_held: &dyn Fn(&HeldTask) -> bool,
    frames: &dyn Fn(JobId, u32) -> Vec<u32>,
) -> NodeView {
    let hb = &p.heartbeat;
    let since = now.saturating_duration_since(p.seen);
    let alive = since <= lease;
    let tasks: Vec<NodeTaskView> = hb
        .held
        .iter()
        .filter(|h| still_held(h))
        .map(|h| node_task_view(names, h.job, h.task, frames(h.job, h.task), h.progress))
        .collect();
    let state = node_state(alive, !tasks.is_empty(), hb.asleep.is_some());
    NodeView {
        id: hb.node.to_string(),
        name: hb.name.clone(),
        me: false,
        alive,
        state: state.to_string(),
        asleep: hb.asleep.clone().filter(|_| alive),
        last_seen_ms: since.as_millis() as u64,
        slots: hb.slots,
        tasks: if alive { tasks } else { Vec::new() },
        engines: hb.engines.clone(),
        tags: hb.tags.clone(),
        version: hb.version.clone(),
        web: hb.web.clone(),
        cpu: hb.telemetry.cpu,
        memory: hb.telemetry.memory_used,
        memory_total: hb.telemetry.memory_total,
        rtt_ms: rtt.map(|r| r.as_secs_f64() * 1000.0),
        telemetry: hb.telemetry.clone(),
        history: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::ledger::types::tests::spec;
    use crate::ledger::{Claim, Done, End, EndKind, FrameRange, Start};

    /// The tasks the API shows `peer` rendering when its latest heartbeat
    /// says it holds tasks 0, 1 and 2 of `job` (epoch 1) and the ledger
    /// holds `rec`.
    fn shown(rec: &JobRecord, job: JobId, peer: &NodeId) -> Vec<u32> {
        let held: Vec<_> = (0..3).map(|t| (job, t, 1)).collect();
        let mut table = super::super::peers::PeerTable::new(Duration::from_secs(3));
        let now = Instant::now();
        table.heard(super::super::peers::tests::hb(peer.as_str(), 1, &held), now);
        let p = table.get(peer).expect("heard");
        let still = |h: &HeldTask| holds(rec, h.task, h.epoch, peer);
        let view = peer_view(
            p,
            None,
            now,
            &HashMap::new(),
            Duration::from_secs(3),
            &still,
            &|_, _| vec![],
        );
        assert_eq!(
            view.state,
            if view.tasks.is_empty() {
                "idle"
            } else {
                "rendering"
            }
        );
        view.tasks.iter().map(|t| t.task).collect()
    }

    #[test]
    fn a_peers_finished_tasks_leave_its_view_before_its_next_heartbeat() {
        let peer = NodeId::new("peer");
        let frames = FrameRange {
            start: 1,
            end: 3,
            step: 1,
        };
        let mut rec = JobRecord::new(spec(frames, 1));
        let job = JobId(Hash::of(b"job"));
        for task in 0..3 {
            let t = rec.tasks.entry(task).or_default();
            t.claims.insert(Claim {
                epoch: 1,
                lamport: 1,
                node: peer.clone(),
            });
            t.starts.insert(Start {
                epoch: 1,
                node: peer.clone(),
            });
        }
        assert_eq!(shown(&rec, job, &peer), vec![0, 1, 2], "all three held");
        rec.tasks.entry(0).or_default().dones.insert(Done {
            outputs: Default::default(),
            node: peer.clone(),
            epoch: 1,
            lamport: 2,
            render_ms: 1,
        });
        let end = |node: &NodeId, epoch| End {
            epoch,
            node: node.clone(),
            generation: 0,
            kind: EndKind::Failed,
            reason: "r".into(),
            log: None,
        };
        // Another node's end, or this one's of another attempt, changes nothing.
        let t1 = rec.tasks.entry(1).or_default();
        t1.ends.insert(end(&NodeId::new("other"), 1));
        t1.ends.insert(end(&peer, 2));
        assert_eq!(shown(&rec, job, &peer), vec![1, 2], "task 0 is done");
        rec.tasks.entry(1).or_default().ends.insert(end(&peer, 1));
        assert_eq!(
            shown(&rec, job, &peer),
            vec![2],
            "its attempt at task 1 ended"
        );
        rec.archived.0 = true;
        assert_eq!(
            shown(&rec, job, &peer),
            Vec::<u32>::new(),
            "nothing runs in an archived job"
        );
    }

    /// What the ledger shows `peer` rendering, as the view adds it to a peer
    /// whose heartbeat lists nothing still held.
    fn started(rec: &JobRecord, job: JobId, peer: &NodeId) -> Vec<u32> {
        let jobs = std::collections::BTreeMap::from([(job, rec.clone())]);
        let nodes = std::collections::HashSet::from([peer.clone()]);
        let mut found = started_by(&jobs, &nodes);
        found
            .remove(peer.as_str())
            .unwrap_or_default()
            .into_iter()
            .map(|(j, task, frames)| {
                assert_eq!((j, frames), (job, rec.spec.task_frames(task)));
                task
            })
            .collect()
    }

    #[test]
    fn a_task_a_peer_started_shows_before_its_next_heartbeat_lists_it() {
        let (peer, other) = (NodeId::new("peer"), NodeId::new("other"));
        let frames = FrameRange {
            start: 1,
            end: 4,
            step: 1,
        };
        let mut rec = JobRecord::new(spec(frames, 1));
        let job = JobId(Hash::of(b"job"));
        let claim = |node: &NodeId, epoch| Claim {
            epoch,
            lamport: u64::from(epoch),
            node: node.clone(),
        };
        let start = |node: &NodeId, epoch| Start {
            epoch,
            node: node.clone(),
        };
        // Task 0: claimed, not started (a claim settling or held ahead).
        rec.tasks
            .entry(0)
            .or_default()
            .claims
            .insert(claim(&peer, 1));
        // Task 1: started, its render under way.
        let t = rec.tasks.entry(1).or_default();
        t.claims.insert(claim(&peer, 1));
        t.starts.insert(start(&peer, 1));
        // Task 2: started by the other node.
        let t = rec.tasks.entry(2).or_default();
        t.claims.insert(claim(&other, 1));
        t.starts.insert(start(&other, 1));
        // Task 3: the peer's start, then another node's claim at a later epoch.
        let t = rec.tasks.entry(3).or_default();
        t.claims.insert(claim(&peer, 1));
        t.starts.insert(start(&peer, 1));
        t.claims.insert(claim(&other, 2));
        assert_eq!(started(&rec, job, &peer), vec![1]);
        rec.tasks.entry(1).or_default().dones.insert(Done {
            outputs: Default::default(),
            node: peer.clone(),
            epoch: 1,
            lamport: 3,
            render_ms: 1,
        });
        assert_eq!(
            started(&rec, job, &peer),
            Vec::<u32>::new(),
            "task 1 is done"
        );
        let t = rec.tasks.entry(0).or_default();
        t.starts.insert(start(&peer, 1));
        assert_eq!(started(&rec, job, &peer), vec![0], "task 0 started next");
        rec.tasks.entry(0).or_default().ends.insert(End {
            epoch: 1,
            node: peer.clone(),
            generation: 0,
            kind: EndKind::Failed,
            reason: "r".into(),
            log: None,
        });
        assert_eq!(started(&rec, job, &peer), Vec::<u32>::new(), "and failed");
        let t = rec.tasks.entry(0).or_default();
        t.claims.insert(claim(&peer, 2));
        t.starts.insert(start(&peer, 2));
        rec.cancelled.0 = true;
        assert_eq!(
            started(&rec, job, &peer),
            Vec::<u32>::new(),
            "a cancelled job's renders are being stopped"
        );
    }
}
