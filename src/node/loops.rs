//! The node's background loops. Each waits on events (a ledger change, a
//! freed slot, a tick) and never on a slow consumer, and each ends when the
//! node shuts down.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::net::NetEvents;
use super::peers::{Heartbeat, HeldTask};
use super::scheduler::{self, Capability, Pick};
use super::worker::{self, Assignment};
use super::{Inner, Running, lock};
use crate::ledger::{Claim, JobId};
use crate::render::Progress;

/// Start every loop of a node.
pub(crate) fn spawn_all(inner: &Arc<Inner>, net: Option<NetEvents>) {
    let t = &inner.tracker;
    t.spawn(schedule(inner.clone()));
    t.spawn(flush(inner.clone()));
    sample(inner.clone());
    t.spawn(super::collect::collect(inner.clone()));
    t.spawn(super::alerts::run(inner.clone()));
    t.spawn(remember_held_blobs(inner.clone()));
    t.spawn(super::cache::keep_within_size(inner.clone()));
    t.spawn(super::memory::give_back_when_idle(inner.clone()));
    t.spawn(super::archive::archive_when_due(inner.clone()));
    t.spawn(super::archive::expire_alerts(inner.clone()));
    t.spawn(super::sleep::watch(inner.clone()));
    if let Some((nodes, frames)) = inner.cfg.synthetic {
        t.spawn(super::synthetic::run(inner.clone(), nodes, frames));
    }
    if let Some(events) = net {
        t.spawn(super::inbound::run(inner.clone(), events));
        t.spawn(heartbeat(inner.clone()));
        t.spawn(super::replicate::replicate(inner.clone()));
        if let Some(file) = inner
            .cfg
            .net
            .as_ref()
            .and_then(|n| n.partition_file.clone())
        {
            t.spawn(partition(inner.clone(), file));
        }
        if let Some(file) = inner.cfg.net.as_ref().and_then(|n| n.replay_file.clone()) {
            t.spawn(replay(inner.clone(), file));
        }
    }
}

/// Say what this node is doing, every heartbeat period and whenever a peer
/// newly subscribes.
async fn heartbeat(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.cfg.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = inner.heartbeat_now.notified() => {}
        }
        if let Some(net) = &inner.net {
            net.publish_heartbeat(&inner.heartbeat());
        }
    }
}

impl Inner {
    /// This node's heartbeat, stamped after every claim it made so far.
    pub(crate) fn heartbeat(&self) -> Heartbeat {
        let held = lock(&self.running)
            .iter()
            .map(|((job, task), r)| {
                let p = r.progress.borrow();
                HeldTask {
                    job: *job,
                    task: *task,
                    epoch: r.epoch,
                    progress: p.fraction,
                    frame: p.frame,
                }
            })
            .collect();
        Heartbeat {
            node: self.id.clone(),
            name: self.cfg.name.clone(),
            stamp: self.ledger.clock().tick(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            slots: self.cfg.slots as u32,
            held,
            engines: self.engines.names(),
            tags: self.cfg.tags.iter().cloned().collect(),
            telemetry: lock(&self.telemetry).latest.clone(),
            blobs: lock(&self.held_blobs).iter().rev().copied().collect(),
            fetching: lock(&self.fetches_shared).iter().copied().collect(),
            web: None,
            addrs: lock(&self.listen_addrs).iter().take(8).cloned().collect(),
            alerts: self.held_alerts(),
            sent_ms: super::events::now_ms(),
            asleep: self.sleep.why_asleep(),
        }
    }
}

/// At start, find the blobs of open jobs this node already holds, so its
/// heartbeats advertise them.
async fn remember_held_blobs(inner: Arc<Inner>) {
    let candidates: Vec<crate::hash::Hash> = inner.ledger.read(|jobs| {
        jobs.values()
            .filter(|r| !r.archived.0 && !r.collected.0)
            .flat_map(|r| std::iter::once(r.spec.scene).chain(r.output_blobs()))
            .collect()
    });
    let store = inner.store.clone();
    let held = tokio::task::spawn_blocking(move || {
        candidates
            .into_iter()
            .filter(|b| store.has_blob(*b))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for b in held {
        inner.hold_blob(b);
    }
}

/// Tests only: cut traffic with the peers listed in `file`, as it changes.
async fn partition(inner: Arc<Inner>, file: std::path::PathBuf) {
    let Some(net) = &inner.net else { return };
    let mut current: Vec<libp2p::PeerId> = Vec::new();
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let text = tokio::fs::read_to_string(&file).await.unwrap_or_default();
        let wanted: Vec<libp2p::PeerId> =
            text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if wanted != current {
            tracing::info!("partition: blocking {} peer(s)", wanted.len());
            net.client.set_blocked(wanted.clone()).await;
            current = wanted;
        }
    }
}

/// Tests only: when `file` appears, publish every ledger message again
/// (a replay, as a peer cut off for longer than gossipsub's duplicate cache
/// might deliver), then write how many to `file` + `.done`.
async fn replay(inner: Arc<Inner>, file: std::path::PathBuf) {
    let Some(net) = &inner.net else { return };
    let mut done = file.clone().into_os_string();
    done.push(".done");
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        if tokio::fs::remove_file(&file).await.is_err() {
            continue;
        }
        let n = net.replay_published().await;
        tracing::info!("replay: published {n} ledger message(s) again");
        let tmp = file.with_extension("tmp");
        if tokio::fs::write(&tmp, n.to_string()).await.is_ok() {
            let _ = tokio::fs::rename(&tmp, &done).await;
        }
    }
}

/// Claim work whenever a slot is free; stop renders that must stop.
/// Claims held beyond the slots: each waits for a slot with its settle
/// window already behind it, so a busy node goes from one render to the
/// next without the claim's round trips in between. One for long renders;
/// more for short ones (see [`claims_ahead`]), up to this.
const MAX_CLAIMS_AHEAD: usize = 8;

async fn schedule(inner: Arc<Inner>) {
    let mut changes = inner.ledger.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut look_again: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = changes.changed() => {}
            _ = inner.slot_freed.notified() => {}
            _ = tick.tick() => {}
            () = crate::render::until(look_again.map(Into::into)) => {}
        }
        look_again = None;
        watchdog(&inner);
        if storage_paused(&inner) || inner.sleep.asleep() {
            continue;
        }
        while !inner.shutdown.is_cancelled() {
            let held = lock(&inner.running).len();
            // Every slot busy and as many claims ahead as any job allows:
            // no pick could be taken, so none is made (a pick reads every
            // task of the job, and a busy swarm changes the ledger hundreds
            // of times a second: in the dispatch benchmark, 9 of 10 picks
            // were thrown away here).
            if held >= inner.cfg.slots + most_ahead(&inner) {
                break;
            }
            let Some(pick) = next_pick(&inner) else { break };
            let mut due = None;
            if held >= inner.cfg.slots {
                if pick.ahead {
                    if held >= inner.cfg.slots + claims_ahead(&inner, pick.job) {
                        break;
                    }
                } else {
                    // The tail: only a slot about to free claims, so its
                    // claim settles while the render before it ends.
                    let soon = freeing_soon(&inner, Instant::now());
                    if held >= inner.cfg.slots + soon.count {
                        look_again = soon.next;
                        break;
                    }
                    due = soon.due;
                }
            }
            launch(&inner, pick, due);
        }
    }
}

/// The renders of this node that should end within a settle window.
#[derive(Debug, Default, PartialEq)]
struct FreeingSoon {
    /// How many.
    count: usize,
    /// When a claim made now for such a slot gives up: the render before
    /// it ran long, and an idle node should have the task.
    due: Option<Instant>,
    /// When the next of the others should be that close to its end.
    next: Option<Instant>,
}

/// Which of this node's renders should end within a settle window, from
/// when each began and how long this node's renders of its job take.
fn freeing_soon(inner: &Inner, now: Instant) -> FreeingSoon {
    let settle = inner.settle_window();
    let renders: Vec<_> = lock(&inner.running)
        .iter()
        .filter_map(|((job, _), r)| Some((*r.began.get()?, inner.render_times.of(*job)?)))
        .collect();
    freeing_soon_of(&renders, settle, now)
}

fn freeing_soon_of(renders: &[(Instant, Duration)], settle: Duration, now: Instant) -> FreeingSoon {
    let mut soon = FreeingSoon::default();
    for &(began, takes) in renders {
        let ends = began + takes;
        if ends + settle < now {
            // Running long: no telling when it ends. (Counting it would
            // claim and give back the same task again and again.)
            continue;
        }
        if ends <= now + settle {
            soon.count += 1;
            // Late by a settle window, or a tenth of the render for long
            // ones (renders of one job vary), and the claim goes back.
            let due = ends.max(now) + settle + (takes / 10).max(settle);
            soon.due = Some(soon.due.map_or(due, |d: Instant| d.min(due)));
        } else {
            let at = ends - settle;
            soon.next = Some(soon.next.map_or(at, |n: Instant| n.min(at)));
        }
    }
    soon
}

/// How many claims beyond its slots this node holds for `job`. Each claim
/// is a signed gossip message that every peer checks and merges, and claims
/// made at once leave in one message; so for a job of short tasks a node
/// claims several ahead, as many as it renders in one settle window. At
/// the tail, a node then holds at most that much work
/// that an idle one cannot take. One for a job this node has not rendered
/// yet, or whose renders outlast that.
fn claims_ahead(inner: &Inner, job: JobId) -> usize {
    ahead_for(inner.settle_window(), inner.render_times.of(job))
}

/// The most claims ahead any job allows now: an upper bound of
/// [`claims_ahead`] over every job, so a node holding this many beyond its
/// slots need not look for work.
fn most_ahead(inner: &Inner) -> usize {
    most_ahead_of(inner.settle_window(), inner.render_times.all())
}

fn most_ahead_of(settle: Duration, renders: Vec<Duration>) -> usize {
    renders
        .into_iter()
        .map(|t| ahead_for(settle, Some(t)))
        .chain([ahead_for(settle, None)])
        .max()
        .unwrap_or(1)
}

fn ahead_for(settle: Duration, render: Option<Duration>) -> usize {
    let Some(render) = render else {
        return 1;
    };
    let window = settle.as_micros();
    let render = render.as_micros().max(1);
    usize::try_from(window / render)
        .unwrap_or(MAX_CLAIMS_AHEAD)
        .clamp(1, MAX_CLAIMS_AHEAD)
}

/// How long this node's recent renders of each job took, smoothed.
/// Bounded: when full, it starts over (jobs are few at a time).
#[derive(Default)]
pub(crate) struct RenderTimes(std::sync::Mutex<HashMap<JobId, Duration>>);

/// Jobs [`RenderTimes`] remembers at most.
const RENDER_TIMES_KEPT: usize = 64;

impl RenderTimes {
    pub(crate) fn note(&self, job: JobId, took: Duration) {
        let mut times = lock(&self.0);
        if times.len() >= RENDER_TIMES_KEPT && !times.contains_key(&job) {
            times.clear();
        }
        times
            .entry(job)
            .and_modify(|t| *t = (*t * 3 + took) / 4)
            .or_insert(took);
    }

    pub(crate) fn of(&self, job: JobId) -> Option<Duration> {
        lock(&self.0).get(&job).copied()
    }

    /// Every job's smoothed render time.
    fn all(&self) -> Vec<Duration> {
        lock(&self.0).values().copied().collect()
    }
}

/// Whether claiming waits for the disk (see `Inner::storage_pause`).
fn storage_paused(inner: &Inner) -> bool {
    let mut pause = lock(&inner.storage_pause);
    match *pause {
        Some(until) if until > std::time::Instant::now() => true,
        Some(_) => {
            *pause = None;
            false
        }
        None => false,
    }
}

fn next_pick(inner: &Inner) -> Option<Pick> {
    with_view(inner, |view| {
        inner.ledger.read(|jobs| scheduler::pick(jobs, view))
    })
}

/// Whether the scheduler would still hand this node work from `job`: a
/// claim made ahead checks again before it starts, since the job may have
/// been paused, or this node blocklisted, while it waited.
pub(crate) fn still_wanted(inner: &Inner, job: JobId) -> bool {
    with_view(inner, |view| {
        inner.ledger.read(|jobs| {
            jobs.get(&job)
                .is_some_and(|rec| scheduler::wants(rec, view))
        })
    })
}

impl Inner {
    /// What this node can run: its engines and tags.
    pub(crate) fn capability(&self) -> Capability {
        Capability {
            engines: self.engines.names().into_iter().collect(),
            tags: self.cfg.tags.clone(),
        }
    }
}

/// The scheduler's view of this node and the swarm.
fn with_view<T>(inner: &Inner, f: impl FnOnce(&scheduler::View<'_>) -> T) -> T {
    let mine = inner.capability();
    inner.with_liveness(|live| {
        let busy: HashSet<_> = live.mine.iter().map(|(j, t, _)| (*j, *t)).collect();
        let waiting = inner.jobs_left_alone();
        let caps: BTreeMap<_, _> = live
            .peers
            .capabilities(live.now)
            .into_iter()
            // A sleeping peer claims nothing: ranking it first for a task
            // would only make the task wait out the steal grace.
            .filter(|(n, _)| *n != inner.id && !live.peers.is_asleep(n))
            .collect();
        let view = scheduler::View {
            me: &inner.id,
            mine: &mine,
            peers: &caps,
            blocklist_after: inner.cfg.blocklist_after,
            busy: &busy,
            waiting: &waiting,
            live,
            now_ms: super::events::now_ms(),
            done: &inner.done_prefix,
        };
        f(&view)
    })
}

fn launch(inner: &Arc<Inner>, pick: Pick, due: Option<Instant>) {
    let claim = Claim {
        epoch: pick.epoch,
        lamport: inner.ledger.clock().tick(),
        node: inner.id.clone(),
    };
    let cancel = inner.shutdown.child_token();
    let (progress, progress_rx) = watch::channel(Progress::default());
    let cancel_reason = Arc::new(std::sync::Mutex::new(None));
    let began = Arc::new(std::sync::OnceLock::new());
    lock(&inner.running).insert(
        (pick.job, pick.task),
        Running {
            epoch: pick.epoch,
            lamport: claim.lamport,
            progress: progress_rx,
            cancel: cancel.clone(),
            cancel_reason: cancel_reason.clone(),
            began: began.clone(),
        },
    );
    let a = Assignment {
        job: pick.job,
        task: pick.task,
        claim,
        cancel,
        progress,
        cancel_reason,
        began,
        due,
    };
    inner.tracker.spawn(worker::run(inner.clone(), a));
}

/// Stop renders whose claim lost, whose task another node finished, or
/// whose job was cancelled.
fn watchdog(inner: &Inner) {
    let running: Vec<_> = lock(&inner.running)
        .iter()
        .map(|((j, t), r)| {
            (
                *j,
                *t,
                r.epoch,
                r.lamport,
                r.cancel.clone(),
                r.cancel_reason.clone(),
            )
        })
        .collect();
    if running.is_empty() {
        return;
    }
    let verdicts: Vec<Option<String>> = inner.ledger.read(|jobs| {
        running
            .iter()
            .map(|(job, task, epoch, lamport, _, _)| {
                let rec = jobs.get(job)?;
                if rec.cancelled.0 {
                    return Some("the job was cancelled".to_string());
                }
                let t = rec.tasks.get(task)?;
                if t.dones.iter().any(|d| d.node != inner.id) {
                    return Some("another node finished the task".to_string());
                }
                let mine = Claim {
                    epoch: *epoch,
                    lamport: *lamport,
                    node: inner.id.clone(),
                };
                match t.winning_claim() {
                    Some(w) if *w != mine && t.claims.contains(&mine) => {
                        Some(format!("lost the claim to node {}", w.node.short()))
                    }
                    _ => None,
                }
            })
            .collect()
    });
    for ((.., cancel, reason), verdict) in running.iter().zip(verdicts) {
        if let Some(why) = verdict
            && !cancel.is_cancelled()
        {
            *lock(reason) = Some(why);
            cancel.cancel();
        }
    }
}

/// Make merged changes durable in batches (group commit).
async fn flush(inner: Arc<Inner>) {
    let mut changes = inner.ledger.subscribe();
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
        // Let a burst gather, then write it in one transaction.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ledger = inner.ledger.clone();
        match tokio::task::spawn_blocking(move || ledger.flush()).await {
            Ok(Err(e)) => {
                tracing::error!("ledger flush failed (will retry): {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(_) => return,
            Ok(Ok(())) => {}
        }
    }
}

/// Sample the hardware every heartbeat period, on a thread of its own (the
/// sampler is not `Send`).
fn sample(inner: Arc<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("telemetry".into())
        .spawn(move || {
            let mut sampler = crate::telemetry::Sampler::new(&inner.cfg.data_dir);
            while !inner.shutdown.is_cancelled() {
                let t = sampler.sample();
                lock(&inner.telemetry).push(super::events::now_ms(), t);
                std::thread::sleep(inner.cfg.heartbeat.min(Duration::from_secs(1)));
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the telemetry thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_renders_are_claimed_several_ahead_and_long_ones_one() {
        let ms = Duration::from_millis;
        assert_eq!(ahead_for(ms(20), None), 1, "not rendered here yet");
        assert_eq!(ahead_for(ms(20), Some(ms(200))), 1);
        assert_eq!(ahead_for(ms(20), Some(ms(5))), 4);
        assert_eq!(
            ahead_for(ms(200), Some(ms(200))),
            1,
            "a busy swarm's long renders"
        );
        assert_eq!(ahead_for(ms(20), Some(ms(1))), MAX_CLAIMS_AHEAD);
        assert_eq!(ahead_for(ms(20), Some(Duration::ZERO)), MAX_CLAIMS_AHEAD);
        assert_eq!(ahead_for(Duration::ZERO, Some(ms(1))), 1, "alone");
    }

    #[test]
    fn the_bound_on_claims_ahead_covers_every_job() {
        let ms = Duration::from_millis;
        assert_eq!(most_ahead_of(ms(20), vec![]), 1, "nothing rendered yet");
        assert_eq!(most_ahead_of(ms(20), vec![ms(200), ms(5), ms(10)]), 4);
        let times = RenderTimes::default();
        let job = |i: u8| JobId(crate::hash::Hash::of(&[i]));
        times.note(job(0), ms(200));
        times.note(job(1), ms(2));
        for j in [job(0), job(1), job(2)] {
            let this_job = ahead_for(ms(20), times.of(j));
            assert!(this_job <= most_ahead_of(ms(20), times.all()));
        }
    }

    #[test]
    fn render_times_are_smoothed_and_bounded() {
        let times = RenderTimes::default();
        let job = |i: u8| JobId(crate::hash::Hash::of(&[i]));
        times.note(job(0), Duration::from_millis(100));
        times.note(job(0), Duration::from_millis(20));
        assert_eq!(times.of(job(0)), Some(Duration::from_millis(80)));
        for i in 1..=RENDER_TIMES_KEPT as u8 {
            times.note(job(i), Duration::from_millis(1));
        }
        assert!(lock(&times.0).len() <= RENDER_TIMES_KEPT);
        assert_eq!(times.of(job(0)), None, "started over when full");
    }

    #[test]
    fn only_a_render_ending_within_the_settle_window_frees_its_slot_soon() {
        let ms = Duration::from_millis;
        let now = Instant::now();
        let settle = ms(25);
        // Began 190 ms ago, takes 200: ends in 10 ms, inside the window.
        let ending = (now - ms(190), ms(200));
        // Began 100 ms ago: ends in 100 ms, enters the window in 75.
        let midway = (now - ms(100), ms(200));
        let soon = freeing_soon_of(&[ending, midway], settle, now);
        assert_eq!(soon.count, 1);
        assert_eq!(soon.next, Some(now + ms(75)));
        // Ends in 10 ms; late by a settle window past the claim's own
        // settling, the claim goes back.
        assert_eq!(soon.due, Some(now + ms(10) + settle + settle));
        let long = (now - ms(59_990), ms(60_000));
        let soon = freeing_soon_of(&[long], settle, now);
        assert_eq!(
            soon.due,
            Some(now + ms(10) + settle + ms(6_000)),
            "a tenth of a long render"
        );
        let just_late = (now - ms(210), ms(200));
        let soon = freeing_soon_of(&[just_late], settle, now);
        assert_eq!(
            soon.due,
            Some(now + settle + settle),
            "counted from now once late"
        );
        // Late by more than a settle window: running long, not counted,
        // so a claim given back for it is not made again.
        let running_long = (now - ms(300), ms(200));
        let soon = freeing_soon_of(&[running_long], settle, now);
        assert_eq!(soon, FreeingSoon::default());
        assert_eq!(freeing_soon_of(&[], settle, now), FreeingSoon::default());
    }
}
