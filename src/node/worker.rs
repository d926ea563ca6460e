//! One claimed task, from claim to record: the claim and lease protocol as a
//! node carries it out.
//!
//! 1. Gossip the claim, and make it durable during the settle window (a
//!    node restarted after a crash still knows the claims it made).
//! 2. Wait the settle window (a few gossip round trips, measured), fetching
//!    the scene meanwhile, and one more if another node claimed the task at
//!    the same epoch (a rival that has started wins: see
//!    `TaskState::winning_claim`); if the claim still wins, make the task ready:
//!    the scene fetched and unpacked, its work folder made. A claim made
//!    ahead does this while the render before it still holds the slot, so
//!    the next engine starts the moment the slot frees rather than after a
//!    fetch (seconds or minutes for a large scene).
//! 3. Wait for a free slot, then start only if the claim still wins; a lost
//!    race costs nothing. A claim made at a job's tail for a slot about to
//!    free goes back if the render before it runs long (see `loops.rs`).
//!    Record the start (not waiting for the disk: it is durable with the
//!    next group commit) and run the engine.
//! 4. Record the outcome: a Done with every frame's output blob, a Failed end
//!    with the reason, the log tail and the whole log as a blob, or a
//!    Released end when the render was stopped (lost claim, cancel, shutdown).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::encode::LayoutError;
use super::scenes::SceneInUse;
use super::{Inner, NodeError, Severity, lock};
use crate::alert::AlertKind;
use crate::ledger::AlertId;
use crate::ledger::DEVICE_OPTION;
use crate::ledger::{
    Claim, Done, End, EndKind, JobId, JobRecord, JobStatus, Output, Start, TaskIndex, TaskStatus,
    ops,
};
use crate::render::{
    Device, FailureKind, Frame, Progress, RenderFailure, RenderOutput, RenderRequest,
};

/// A task the scheduler picked, with what the worker needs to run it.
pub(crate) struct Assignment {
    pub job: JobId,
    pub task: TaskIndex,
    pub claim: Claim,
    pub cancel: CancellationToken,
    pub progress: watch::Sender<Progress>,
    pub cancel_reason: Arc<std::sync::Mutex<Option<String>>>,
    /// Set when the engine starts (the scheduler reads it to see which
    /// slots free soon).
    pub began: Arc<std::sync::OnceLock<Instant>>,
    /// A claim made at the tail just before a slot frees goes back if no
    /// slot has freed by then: the render before it ran long, and an idle
    /// node can start the task sooner.
    pub due: Option<Instant>,
}

enum Outcome {
    Rendered(RenderOutput),
    Failed(RenderFailure),
    /// Stopped before or while rendering; does not count as an attempt.
    Released(String),
}

/// Run one task to its end, then free the slot.
pub(crate) async fn run(inner: Arc<Inner>, a: Assignment) {
    if let Err(e) = attempt(&inner, &a).await {
        if matches!(e, NodeError::Ledger(_) | NodeError::Store(_)) {
            // A full disk, most likely: give the task back and claim
            // nothing for a while instead of failing claim after claim.
            pause_claiming(&inner);
            give_back_after_error(&inner, &a, &e);
        }
        inner.events.push(
            Severity::Error,
            "node_error",
            Some(a.job),
            Some(a.task),
            format!("task {} of job {}: {e}", a.task, a.job.short()),
        );
    }
    lock(&inner.running).remove(&(a.job, a.task));
    inner.slot_freed.notify_one();
}

async fn attempt(inner: &Arc<Inner>, a: &Assignment) -> Result<(), NodeError> {
    let Some(base) = inner
        .ledger
        .read(|jobs| jobs.get(&a.job).map(JobRecord::header))
    else {
        return Ok(());
    };
    // The claim goes out at once and is made durable during the settle
    // window, so the disk costs no latency; it is durable before the engine
    // starts.
    let seq = inner.commit_soon(a.job, ops::claim(&base, a.task, a.claim.clone()))?;
    let ledger = inner.ledger.clone();
    let durable = tokio::task::spawn_blocking(move || ledger.flush_to(seq));
    let settle = inner.settle_window();
    tracing::debug!(job = %a.job.short(), task = a.task, "claimed; settling for {settle:?}");
    // The scene's fetch starts now, not after the settle window: a claim
    // that wins starts that much sooner, and a node whose claim loses has
    // the scene for the job's next task (it can run the job).
    let scene = fetch_scene(inner, &base);
    if !settle.is_zero() {
        wait_unless_cancelled(a, settle).await;
    }
    durable.await.map_err(|_| NodeError::ShuttingDown)??;
    if !settle.is_zero() && inner.claim_rivalled(a.job, a.task, &a.claim) {
        // Another node claimed the task at this epoch, not knowing of this
        // claim. If this claim reached it after its settle window, it has
        // started, and its render is the one kept: its start is on the way,
        // so wait one more window for it rather than render the task twice.
        tracing::debug!(job = %a.job.short(), task = a.task, "a rival claim at this epoch; waiting for its start");
        wait_unless_cancelled(a, settle).await;
    }
    if a.cancel.is_cancelled() || !inner.claim_wins(a.job, a.task, &a.claim) {
        return release_unstarted(inner, &base, a, None).await;
    }
    if inner.sleep.asleep() {
        return release_unstarted(inner, &base, a, Some(fell_asleep(inner))).await;
    }
    let ready = match prepare(inner, &base, a, scene).await {
        Ok(ready) => ready,
        Err(not_yet) => return release_unstarted(inner, &base, a, Some(not_yet)).await,
    };
    // A claim held ahead waits here for the render before it, which may
    // take hours: if the node falls asleep meanwhile it goes back at once.
    let slot = tokio::select! {
        slot = inner.render_slots.clone().acquire_owned() => slot.ok(),
        _ = a.cancel.cancelled() => None,
        _ = inner.sleep.fallen_asleep() => None,
        () = crate::render::until(a.due.map(Into::into)) => None,
    };
    let Some(permit) = slot else {
        let why = if inner.sleep.asleep() {
            Some(fell_asleep(inner))
        } else {
            a.due
                .filter(|&due| Instant::now() >= due)
                .map(|_| "given back: the render before it on this node ran long".to_string())
        };
        return release_unstarted(inner, &base, a, why).await;
    };
    if a.cancel.is_cancelled()
        || !inner.claim_wins(a.job, a.task, &a.claim)
        || !super::loops::still_wanted(inner, a.job)
    {
        return release_unstarted(inner, &base, a, None).await;
    }
    if inner.sleep.asleep() {
        // Claimed ahead while awake: a sleeping node starts nothing.
        return release_unstarted(inner, &base, a, Some(fell_asleep(inner))).await;
    }
    let start = Start {
        epoch: a.claim.epoch,
        node: inner.id.clone(),
    };
    // Announced at once and made durable by the next group commit, without
    // waiting: a start lost in a crash only shows the task as claimed
    // rather than running (the claim itself is already durable).
    inner.commit_start(a.job, ops::start(&base, a.task, start))?;
    tracing::debug!(job = %a.job.short(), task = a.task, "started");
    let began = Instant::now();
    let _ = a.began.set(began);
    inner
        .metrics
        .renders_started
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let gpu = lock(&inner.free_gpus).pop();
    let outcome = render(inner, &base, a, ready, gpu).await;
    if let Some(g) = gpu {
        lock(&inner.free_gpus).push(g);
    }
    // After a render, the engine is done with the slot: the next task
    // (claimed ahead and settled) renders while this one's outputs are
    // stored and recorded. A failure keeps the slot until it is recorded,
    // so the blocklist sees it before this node starts anything else.
    let _slot = (!matches!(outcome, Outcome::Rendered(_))).then_some(permit);
    match &outcome {
        Outcome::Released(_) => {
            inner
                .metrics
                .renders_lost
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Outcome::Rendered(_) => {
            inner.metrics.render_seconds.observe(began.elapsed());
            inner.render_times.note(a.job, began.elapsed());
        }
        Outcome::Failed(_) => inner.metrics.render_seconds.observe(began.elapsed()),
    }
    if let Outcome::Failed(f) = &outcome
        && says_disk_full(&f.reason)
    {
        pause_for_the_disk(inner, a, &f.reason);
    }
    record(inner, &base, a, outcome, began.elapsed()).await
}

/// Waits `window` (a settle window), or until the claim is cancelled.
async fn wait_unless_cancelled(a: &Assignment, window: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(window) => {}
        _ = a.cancel.cancelled() => {}
    }
}

/// Why a claim is given back unstarted: the node fell asleep.
fn fell_asleep(inner: &Inner) -> String {
    format!(
        "given back: node {} fell asleep before it started",
        inner.cfg.name
    )
}

/// How long a node that could not write its ledger or store claims nothing.
const STORAGE_PAUSE: Duration = Duration::from_secs(5);

/// Claim nothing for [`STORAGE_PAUSE`] and give the store's cache back at
/// once: this node could not write its data.
fn pause_claiming(inner: &Inner) {
    *lock(&inner.storage_pause) = Some(Instant::now() + STORAGE_PAUSE);
    inner.trim_now.notify_one();
}

/// This node's disk is full, not the task broken: pause claiming, and say
/// so on the page.
fn pause_for_the_disk(inner: &Inner, a: &Assignment, why: &str) {
    pause_claiming(inner);
    inner.events.push(
        Severity::Warning,
        "disk_full",
        Some(a.job),
        Some(a.task),
        format!(
            "this node's disk is full; it claims nothing for {} s and trims its cache: {why}",
            STORAGE_PAUSE.as_secs()
        ),
    );
}

/// Whether an engine's failure reason names a full disk. The render
/// module words its own I/O errors with `io::Error`'s text, which ends in
/// the errno ("os error 28" is ENOSPC, 122 EDQUOT); an engine's own
/// output is text too. The store's errors are typed
/// ([`crate::store::StoreError::is_disk_full`]).
fn says_disk_full(reason: &str) -> bool {
    reason.contains("(os error 28)") || reason.contains("(os error 122)")
}

/// Release a claim whose records could not be written: in memory and to the
/// swarm at once (other nodes take the task), on disk when the disk lets.
fn give_back_after_error(inner: &Arc<Inner>, a: &Assignment, e: &NodeError) {
    let Some(base) = inner
        .ledger
        .read(|jobs| jobs.get(&a.job).map(JobRecord::header))
    else {
        return;
    };
    if !inner.claim_wins(a.job, a.task, &a.claim) {
        return;
    }
    let why = format!("given back: this node cannot write its data ({e})");
    let end = end(inner, &base, a, EndKind::Released, why, None);
    if let Err(e) = inner.commit_soon(a.job, ops::end(&base, a.task, end)) {
        tracing::warn!("releasing task {} of job {}: {e}", a.task, a.job.short());
    }
}

/// A claim given up before its engine started: released if it still wins
/// (shutdown, a claim made ahead that its node no longer wants, a scene no
/// peer could provide yet: `why`), so the task goes back to pending at once
/// instead of when the lease runs out. The work folder a prepared task was
/// given goes too.
async fn release_unstarted(
    inner: &Arc<Inner>,
    base: &JobRecord,
    a: &Assignment,
    why: Option<String>,
) -> Result<(), NodeError> {
    remove_work_dir(inner, base, a).await;
    if !inner.claim_wins(a.job, a.task, &a.claim) {
        return Ok(());
    }
    let why = why
        .or_else(|| lock(&a.cancel_reason).clone())
        .unwrap_or_else(|| "released before it started".into());
    let end = end(inner, base, a, EndKind::Released, why, None);
    inner.commit(a.job, ops::end(base, a.task, end)).await
}

/// A task made ready to start, before it has a slot.
enum Ready {
    /// The engine's request, and the unpacked scene it renders (kept from
    /// pruning until the render ends).
    Engine(Box<RenderRequest>, SceneInUse),
    /// An encode task: its frames are laid out once it has its slot.
    Encode,
    /// The task cannot render here: it fails once started.
    Broken(RenderFailure),
}

/// The fetch of a job's scene, under way in a task of its own (it goes on
/// if the claim that started it is dropped).
type SceneFetch = tokio::task::JoinHandle<Result<(), String>>;

/// Start fetching `base`'s scene, unless its engine needs none.
fn fetch_scene(inner: &Arc<Inner>, base: &JobRecord) -> Option<SceneFetch> {
    let spec = &base.spec;
    if spec.engine == crate::render::ENCODE_ENGINE {
        return None;
    }
    let (inner, scene, submitter) = (inner.clone(), spec.scene, spec.submitter.clone());
    Some(tokio::spawn(async move {
        inner
            .ensure_blob(scene, std::slice::from_ref(&submitter))
            .await
    }))
}

/// Make a claimed task ready for its engine: its scene fetched (by `fetch`,
/// under way since the claim) and unpacked, its work folder made. `Err` when it
/// cannot be made ready yet (the scene is not reachable, or the task was
/// cancelled meanwhile): the task goes back, with that reason.
async fn prepare(
    inner: &Arc<Inner>,
    base: &JobRecord,
    a: &Assignment,
    fetch: Option<SceneFetch>,
) -> Result<Ready, String> {
    let spec = &base.spec;
    if spec.engine == crate::render::ENCODE_ENGINE {
        return Ok(Ready::Encode);
    }
    let device = match spec.options.get(DEVICE_OPTION).map(|d| d.parse::<Device>()) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            return Ok(Ready::Broken(failure(
                FailureKind::EngineError,
                e.to_string(),
            )));
        }
    };
    let fetched = match fetch {
        Some(fetch) => fetch
            .await
            .unwrap_or_else(|e| Err(format!("fetching the scene: {e}"))),
        None => Ok(()),
    };
    if let Err(reason) = fetched {
        // Not the task's fault: no attempt is spent. The task goes back to
        // the swarm, and this node leaves the job alone for a while (a node
        // cut off from every holder of the scene would otherwise claim and
        // release the same task in a tight loop).
        lock(&inner.scene_waits).insert(a.job, Instant::now() + SCENE_WAIT);
        return Err(format!("the scene is not here yet: {reason}"));
    }
    // A scene that is here but cannot be unpacked is broken: that fails.
    let scene = match inner.scenes.unpack(&inner.store, spec.scene).await {
        Ok(scene) => scene,
        Err(reason) if a.cancel.is_cancelled() => return Err(reason),
        Err(reason) => return Ok(Ready::Broken(failure(FailureKind::EngineError, reason))),
    };
    let output_dir = inner.work_dir(a.job, a.task, a.claim.epoch).join("out");
    if crate::render::writes_files(&spec.engine)
        && let Err(e) = tokio::fs::create_dir_all(&output_dir).await
    {
        let reason = format!(
            "cannot create the work folder {}: {e}",
            output_dir.display()
        );
        return Ok(Ready::Broken(failure(FailureKind::EngineError, reason)));
    }
    let req = RenderRequest {
        scene: scene.dir.join(&spec.scene_file),
        workdir: scene.dir.clone(),
        frames: spec.task_frames(a.task),
        output_dir,
        output_format: spec.output_format.clone(),
        timeout: spec.timeout_secs.map(|s| Duration::from_secs(u64::from(s))),
        device,
        gpu: None,
    };
    Ok(Ready::Engine(Box::new(req), scene))
}

/// Run a started task's engine.
async fn render(
    inner: &Arc<Inner>,
    base: &JobRecord,
    a: &Assignment,
    ready: Ready,
    gpu: Option<u32>,
) -> Outcome {
    match ready {
        Ready::Engine(mut req, _scene) => {
            req.gpu = gpu;
            run_engine(inner, &base.spec.engine, *req, a).await
        }
        Ready::Encode => encode(inner, base, a).await,
        Ready::Broken(f) => Outcome::Failed(f),
    }
}

/// An encode task: the render job's frames laid out in the work folder,
/// then ffmpeg (see `encode.rs`).
async fn encode(inner: &Arc<Inner>, base: &JobRecord, a: &Assignment) -> Outcome {
    let work = inner.work_dir(a.job, a.task, a.claim.epoch);
    let (input_dir, output_dir) = (work.join("in"), work.join("out"));
    if let Err(e) = tokio::fs::create_dir_all(&output_dir).await {
        let reason = format!(
            "cannot create the work folder {}: {e}",
            output_dir.display()
        );
        return Outcome::Failed(failure(FailureKind::EngineError, reason));
    }
    match super::encode::lay_out_inputs(inner, &base.spec, &input_dir).await {
        Ok(()) => {}
        Err(LayoutError::Unreachable(reason)) => {
            lock(&inner.scene_waits).insert(a.job, Instant::now() + SCENE_WAIT);
            return Outcome::Released(format!("the frames are not here yet: {reason}"));
        }
        Err(LayoutError::Broken(reason)) => {
            return Outcome::Failed(failure(FailureKind::EngineError, reason));
        }
    }
    let req = RenderRequest {
        scene: input_dir.join(crate::render::ENCODE_SETTINGS_FILE),
        workdir: input_dir,
        frames: vec![1],
        output_dir,
        output_format: None,
        timeout: None,
        device: None,
        gpu: None,
    };
    run_engine(inner, &base.spec.engine, req, a).await
}

async fn run_engine(
    inner: &Arc<Inner>,
    engine: &str,
    req: RenderRequest,
    a: &Assignment,
) -> Outcome {
    let result = inner
        .engines
        .render(engine, req, a.cancel.clone(), a.progress.clone())
        .await;
    match result {
        Ok(out) => Outcome::Rendered(out),
        Err(f) if f.kind == FailureKind::Cancelled => {
            let why = lock(&a.cancel_reason).clone();
            Outcome::Released(why.unwrap_or_else(|| "stopped".into()))
        }
        Err(f) => Outcome::Failed(f),
    }
}

fn failure(kind: FailureKind, reason: String) -> RenderFailure {
    RenderFailure {
        kind,
        reason,
        log_tail: String::new(),
        log: Vec::new(),
    }
}

async fn record(
    inner: &Arc<Inner>,
    base: &JobRecord,
    a: &Assignment,
    outcome: Outcome,
    took: Duration,
) -> Result<(), NodeError> {
    let outcome = match outcome {
        Outcome::Rendered(out) => match store_outputs(inner, out).await {
            Ok((outputs, manifests)) => {
                for o in outputs.values() {
                    inner.hold_blob(o.blob);
                }
                let done = Done {
                    outputs: outputs.into_iter().collect(),
                    node: inner.id.clone(),
                    epoch: a.claim.epoch,
                    lamport: inner.ledger.clock().tick(),
                    render_ms: took.as_millis() as u64,
                };
                inner
                    .commit_with_manifests(a.job, ops::done(base, a.task, done), manifests)
                    .await?;
                None
            }
            Err(not) => {
                if not.disk_full {
                    pause_for_the_disk(inner, a, &not.reason);
                }
                Some(Outcome::Failed(failure(FailureKind::BadOutput, not.reason)))
            }
        },
        other => Some(other),
    };
    remove_work_dir(inner, base, a).await;
    match outcome {
        None => inner.after_done(a.job).await,
        Some(Outcome::Released(reason)) => {
            let end = end(inner, base, a, EndKind::Released, reason, None);
            inner.commit(a.job, ops::end(base, a.task, end)).await?;
        }
        Some(Outcome::Failed(f)) => {
            let log = store_log(inner, &f.log).await;
            let reason = with_tail(&f.reason, &f.log_tail);
            let end = end(inner, base, a, EndKind::Failed, reason, log);
            inner.commit(a.job, ops::end(base, a.task, end)).await?;
            inner.after_failure(a.job, a.task, a.claim.epoch, &f).await;
        }
        Some(Outcome::Rendered(_)) => {}
    }
    Ok(())
}

/// Removes the task's work folder, which only an engine that writes files
/// was given.
async fn remove_work_dir(inner: &Inner, base: &JobRecord, a: &Assignment) {
    if crate::render::writes_files(&base.spec.engine) {
        let _ = tokio::fs::remove_dir_all(inner.work_dir(a.job, a.task, a.claim.epoch)).await;
    }
}

fn end(
    inner: &Inner,
    base: &JobRecord,
    a: &Assignment,
    kind: EndKind,
    reason: String,
    log: Option<crate::hash::Hash>,
) -> End {
    let generation = inner
        .ledger
        .read(|jobs| jobs.get(&a.job).map(|r| r.retry_generation.0))
        .unwrap_or(base.retry_generation.0);
    End {
        epoch: a.claim.epoch,
        node: inner.id.clone(),
        generation,
        kind,
        reason,
        log,
    }
}

/// The reason, then the log's last lines, bounded.
fn with_tail(reason: &str, tail: &str) -> String {
    const MAX_TAIL: usize = 6000;
    if tail.trim().is_empty() {
        return reason.to_string();
    }
    let mut start = tail.len().saturating_sub(MAX_TAIL);
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    format!("{reason}\n--- log tail ---\n{}", &tail[start..])
}

/// The outputs, stored, and their manifests (gossiped with the Done).
type Stored = (std::collections::BTreeMap<u32, Output>, Vec<Vec<u8>>);

/// Why a render's outputs were not stored.
struct NotStored {
    reason: String,
    /// The disk is full: this node's trouble, not the render's.
    disk_full: bool,
}

async fn store_outputs(inner: &Arc<Inner>, out: RenderOutput) -> Result<Stored, NotStored> {
    let store = inner.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut outputs = std::collections::BTreeMap::new();
        let mut manifests = Vec::new();
        for (frame, output) in out.frames {
            let cannot = |e: crate::store::StoreError| NotStored {
                reason: format!("cannot store the output of frame {frame}: {e}"),
                disk_full: e.is_disk_full(),
            };
            let blob = match &output {
                Frame::File(path) => store.import_file(path),
                Frame::Png(png) => store.import_bytes(png),
            }
            .map_err(cannot)?;
            manifests.push(store.read_chunk(blob).map_err(cannot)?);
            let ext = output.ext();
            outputs.insert(frame, Output { blob, ext });
        }
        Ok((outputs, manifests))
    })
    .await
    .map_err(|e| NotStored {
        reason: e.to_string(),
        disk_full: false,
    })?
}

async fn store_log(inner: &Arc<Inner>, log: &[u8]) -> Option<crate::hash::Hash> {
    if log.is_empty() {
        return None;
    }
    let store = inner.store.clone();
    let log = log.to_vec();
    tokio::task::spawn_blocking(move || store.import_bytes(&log).ok())
        .await
        .ok()
        .flatten()
}

/// How long a node leaves a job alone after failing to fetch its scene.
const SCENE_WAIT: Duration = Duration::from_secs(2);

/// The shortest and longest settle windows.
const SETTLE_FLOOR: Duration = Duration::from_millis(20);
const SETTLE_CEILING: Duration = Duration::from_secs(1);

impl Inner {
    /// How long a fresh claim waits before its engine starts: long enough
    /// for a concurrent claim to arrive. Twice the slowest measured round
    /// trip plus processing time, but never under 20 ms: a ping's round trip
    /// is measured every few seconds, while a busy machine can hold a gossip
    /// message for tens of milliseconds (seen as wasted renders with the
    /// 5 ms floor this had before). Nothing when this node is alone.
    pub fn settle_window(&self) -> Duration {
        if self.net.is_none() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let peers = lock(&self.peers);
        let alone = peers.alive(now).next().is_none() && lock(&self.connected).is_empty();
        if alone {
            return Duration::ZERO;
        }
        match peers.max_rtt(now) {
            Some(rtt) => (rtt * 2 + Duration::from_millis(5)).clamp(SETTLE_FLOOR, SETTLE_CEILING),
            None => Duration::from_millis(50),
        }
    }

    /// Whether another node claimed the task at the epoch of `claim`.
    pub fn claim_rivalled(&self, job: JobId, task: TaskIndex, claim: &Claim) -> bool {
        self.ledger.read(|jobs| {
            jobs.get(&job)
                .and_then(|rec| rec.tasks.get(&task))
                .is_some_and(|t| t.rivalled(claim))
        })
    }

    /// Whether `claim` is still the task's winning claim and the task is open.
    pub fn claim_wins(&self, job: JobId, task: TaskIndex, claim: &Claim) -> bool {
        self.ledger.read(|jobs| {
            let Some(rec) = jobs.get(&job) else {
                return false;
            };
            let Some(t) = rec.tasks.get(&task) else {
                return false;
            };
            !rec.cancelled.0 && t.dones.is_empty() && t.winning_claim() == Some(claim)
        })
    }

    pub fn work_dir(&self, job: JobId, task: TaskIndex, epoch: u32) -> std::path::PathBuf {
        super::DataDirs::of(&self.cfg.data_dir)
            .work
            .join(format!("{}-{task}-{epoch}", job.short()))
    }

    /// Make `blob` complete in the local store, fetching what is missing
    /// from peers (`hints` are asked first). A blob whose fetch is under way
    /// is waited for even when its chunks are all here: the fetch is still
    /// moving the scene it unpacked into place, and a render that unpacked
    /// it again meanwhile would read the whole scene back for nothing.
    pub async fn ensure_blob(
        self: &Arc<Self>,
        blob: crate::hash::Hash,
        hints: &[crate::ledger::NodeId],
    ) -> Result<(), String> {
        let store = self.store.clone();
        let complete = tokio::task::spawn_blocking(move || store.has_blob(blob))
            .await
            .unwrap_or(false);
        if complete && !self.fetching(blob) {
            self.hold_blob(blob);
            return Ok(());
        }
        if self.net.is_none() {
            return Err(format!("blob {} is not on this node", blob.short(12)));
        }
        self.fetch_blob(blob, hints).await
    }

    fn job_status(&self, job: JobId) -> Option<(String, JobStatus)> {
        self.with_liveness(|live| {
            self.ledger.read(|jobs| {
                jobs.get(&job)
                    .map(|r| (r.spec.name.clone(), r.status(job, live)))
            })
        })
    }

    /// The last task of a job finished here: raise `job_finished`.
    async fn after_done(&self, job: JobId) {
        // The job's status derives every task's; most Dones leave a task
        // without one, found at once from the end (tasks finish roughly in
        // order), so a 2,000-task job does not cost 2,000 derivations a task.
        let all_done = self.ledger.read(|jobs| {
            jobs.get(&job).is_some_and(|r| {
                (0..r.spec.task_count())
                    .rev()
                    .all(|i| r.tasks.get(&i).is_some_and(|t| !t.dones.is_empty()))
            })
        });
        if !all_done {
            return;
        }
        if let Some((name, JobStatus::Done)) = self.job_status(job) {
            let mut e = self.entry(AlertKind::JobFinished, format!("job {name} finished"));
            e.job = Some(job);
            e.job_name = Some(name);
            self.raise(AlertId::of("job_finished", &[&job.0.0]), e)
                .await;
        }
    }

    /// A task failed here: raise `task_failed`, and `job_failed` when that
    /// was the job's last chance.
    async fn after_failure(&self, job: JobId, task: TaskIndex, epoch: u32, f: &RenderFailure) {
        let first_line = f.reason.lines().next().unwrap_or(&f.reason).to_string();
        let facts = self.ledger.read(|jobs| {
            jobs.get(&job).and_then(|r| {
                let t = r.tasks.get(&task)?;
                let live = crate::ledger::AllLive;
                let final_ = t.status(r, job, task, &live) == TaskStatus::Failed;
                let frames = r.spec.task_frames(task);
                Some((
                    final_,
                    t.failures(r.retry_generation.0),
                    r.spec.max_attempts,
                    r.spec.name.clone(),
                    frames,
                    r.retry_generation.0,
                ))
            })
        });
        let Some((final_, failures, max, name, frames, generation)) = facts else {
            return;
        };
        let message = format!(
            "job {name}: frames {} failed on {} (attempt {failures} of {max}): {first_line}",
            frames_label(&frames),
            self.cfg.name
        );
        let mut e = self.entry(AlertKind::TaskFailed, message);
        e.job = Some(job);
        e.job_name = Some(name.clone());
        e.frames = frames;
        e.reason = Some(first_line);
        e.log_tail = (!f.log_tail.is_empty()).then(|| f.log_tail.clone());
        let id = AlertId::of(
            "task_failed",
            &[
                &job.0.0,
                &task.to_le_bytes(),
                &epoch.to_le_bytes(),
                self.id.as_str().as_bytes(),
            ],
        );
        self.raise(id, e.clone()).await;
        if final_ {
            self.job_failed_if_so(job, generation, e.reason, e.log_tail)
                .await;
        }
    }

    /// The job has failed for good: raise `job_failed` (once per retry
    /// generation: every node that raises it raises the same alert).
    async fn job_failed_if_so(
        &self,
        job: JobId,
        generation: u32,
        reason: Option<String>,
        log_tail: Option<String>,
    ) {
        let Some((name, JobStatus::Failed)) = self.job_status(job) else {
            return;
        };
        let failed: Vec<u32> = self.ledger.read(|jobs| failed_frames(jobs.get(&job)));
        let mut e = self.entry(
            AlertKind::JobFailed,
            format!(
                "job {name} failed: {} frame(s) could not be rendered",
                failed.len()
            ),
        );
        e.job = Some(job);
        e.job_name = Some(name);
        e.frames = failed;
        e.reason = reason;
        e.log_tail = log_tail;
        self.raise(
            AlertId::of("job_failed", &[&job.0.0, &generation.to_le_bytes()]),
            e,
        )
        .await;
    }

    /// A peer's task ended or finished. When tasks end on several nodes at
    /// once, each node's own check after its end can run before the others'
    /// ends reach it, and none sees the job finish or fail. So a node that
    /// ended a task of the job itself checks again as the peers' ends
    /// arrive by gossip (not by sync, which also brings old news: a job
    /// long over must not be announced again); the job's alerts have one
    /// id whoever raises them.
    pub(crate) async fn after_peer_end(&self, job: JobId) {
        // Some((the generation's first failure reason, generation)) when the
        // job is settled and this node took part in it.
        let ended = self.ledger.read(|jobs| {
            let r = jobs.get(&job)?;
            let live = crate::ledger::AllLive;
            // From the end: most ends leave a later task open, found at once.
            let settled = (0..r.spec.task_count()).rev().all(|i| {
                r.tasks.get(&i).is_some_and(|t| {
                    matches!(
                        t.status(r, job, i, &live),
                        TaskStatus::Done | TaskStatus::Failed
                    )
                })
            });
            let mine = |n: &crate::ledger::NodeId| *n == self.id;
            let took_part = || {
                r.tasks.values().any(|t| {
                    t.ends.iter().any(|e| mine(&e.node)) || t.dones.iter().any(|d| mine(&d.node))
                })
            };
            if !settled || !took_part() {
                return None;
            }
            let generation = r.retry_generation.0;
            let reason = r
                .tasks
                .values()
                .flat_map(|t| t.ends.iter())
                .filter(|e| e.kind == crate::ledger::EndKind::Failed && e.generation == generation)
                .map(|e| e.reason.lines().next().unwrap_or_default().to_string())
                .next();
            Some((reason, generation))
        });
        let Some((reason, generation)) = ended else {
            return;
        };
        self.after_done(job).await;
        self.job_failed_if_so(job, generation, reason, None).await;
    }
}

/// Frames of the job's failed tasks.
fn failed_frames(rec: Option<&JobRecord>) -> Vec<u32> {
    let Some(rec) = rec else { return Vec::new() };
    let id = crate::ledger::job_id(&rec.spec);
    rec.tasks
        .iter()
        .filter(|(i, t)| t.status(rec, id, **i, &crate::ledger::AllLive) == TaskStatus::Failed)
        .flat_map(|(i, _)| rec.spec.task_frames(*i))
        .collect()
}

/// `7` or `1-4` for a task's frames.
fn frames_label(frames: &[u32]) -> String {
    match frames {
        [] => "-".into(),
        [one] => one.to_string(),
        [first, .., last] => format!("{first}-{last}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_with_enospc_or_edquot_says_the_disk_is_full() {
        let io = |kind| std::io::Error::from(kind).to_string();
        assert!(says_disk_full(&format!(
            "writing frame 3: {}",
            std::io::Error::from_raw_os_error(libc::ENOSPC)
        )));
        assert!(says_disk_full(&format!(
            "writing frame 3: {}",
            std::io::Error::from_raw_os_error(libc::EDQUOT)
        )));
        assert!(!says_disk_full(&io(std::io::ErrorKind::PermissionDenied)));
        assert!(!says_disk_full("exit code 28"));
    }
}
