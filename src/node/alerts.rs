//! Alerts from whichever node sees the failure, sent exactly once.
//!
//! Raising: the node that observes an event writes an alert record into the
//! ledger under an id named by the event (`raise`), so every node's page
//! shows the same log and two observers of one event write one alert.
//! Observing: task and job ends come from the worker; this loop watches
//! for nodes lost holding claims, jobs no live node can render, and a low
//! disk.
//!
//! Sending: only nodes with a sink configured (email or webhook) take part.
//! Each claims the undelivered alerts it wants exactly like a task (next
//! epoch, settle window, winning claim), batches the ones it won into
//! digests (`alert::Batcher`: window, hourly budget, backoff), sends, and
//! records `Sent`. A sink that fails is retried with backoff while the
//! claim stays held; a node that dies holding claims loses them with its
//! lease and another node sends. Nothing here blocks rendering.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Inner, Severity, lock};
use crate::alert::{self, AlertKind, Batcher, Sender};
use crate::ledger::{AlertEntry, AlertId, AlertRecord, Claim, JobId, NodeId, Sent};

/// This node's part in sending alerts.
struct Sending {
    sender: Sender,
    email: Option<Batcher>,
    webhook: Option<Batcher>,
    /// Alerts this node claimed: claim, and when (for the settle window).
    claimed: HashMap<AlertId, (Claim, Instant)>,
    /// Alerts won and queued, with the sinks still to deliver them.
    queued: HashMap<AlertId, BTreeSet<&'static str>>,
}

impl Inner {
    /// Write an alert into the ledger and tell the swarm.
    pub(crate) async fn raise(&self, id: AlertId, entry: AlertEntry) {
        let rec = AlertRecord::new(entry);
        let Ok(seq) = self.ledger.apply_alert_local(id, &rec) else {
            return;
        };
        let ledger = self.ledger.clone();
        let _ = tokio::task::spawn_blocking(move || ledger.flush_to(seq)).await;
        if let Some(net) = &self.net {
            net.publish_alert(id, &rec);
        }
    }

    /// An alert entry about this node's doings, now.
    pub(crate) fn entry(&self, kind: AlertKind, message: String) -> AlertEntry {
        AlertEntry {
            time_ms: super::events::now_ms(),
            node: self.id.clone(),
            kind: kind.as_str().to_string(),
            severity: kind.severity().as_str().to_string(),
            node_name: self.cfg.name.clone(),
            job: None,
            job_name: None,
            frames: Vec::new(),
            reason: None,
            log_tail: None,
            message,
        }
    }

    /// Alert claims this node holds, for its heartbeats.
    pub(crate) fn held_alerts(&self) -> Vec<(AlertId, u32)> {
        lock(&self.alert_claims)
            .iter()
            .map(|(id, e)| (*id, *e))
            .collect()
    }
}

/// The least time a claim on an alert settles before the alert is queued.
const ALERT_SETTLE: Duration = Duration::from_secs(1);

/// Watch, log, claim and send until the node stops.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut logged: HashSet<AlertId> = HashSet::new();
    replay_recent(&inner, &mut logged);
    let mut sending = inner
        .cfg
        .alerts
        .as_ref()
        .and_then(|cfg| match Sender::new(cfg) {
            Ok(sender) => Some(Sending {
                email: cfg
                    .email_enabled()
                    .then(|| Batcher::new(cfg.batch_window, cfg.max_mails_per_hour)),
                webhook: cfg
                    .webhook_enabled()
                    .then(|| Batcher::new(cfg.batch_window, u32::MAX)),
                sender,
                claimed: HashMap::new(),
                queued: HashMap::new(),
            }),
            Err(e) => {
                tracing::error!("alerts will not be sent: {e}");
                None
            }
        });
    let mut changes = inner.ledger.subscribe();
    let mut watch = Watch::default();
    loop {
        let wake = sending
            .as_ref()
            .and_then(next_wakeup)
            .unwrap_or(Duration::from_secs(1));
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(wake.min(Duration::from_secs(1))) => {}
        }
        log_new(&inner, &mut logged);
        watch.observe(&inner).await;
        if let Some(s) = sending.as_mut() {
            claim_and_queue(&inner, s).await;
            send_due(&inner, s).await;
        }
    }
}

/// The latest alerts go into the event log at start, so a restarted node's
/// page shows the recent history.
fn replay_recent(inner: &Inner, logged: &mut HashSet<AlertId>) {
    let mut all: Vec<(AlertId, AlertEntry)> = inner
        .ledger
        .read_alerts(|a| a.iter().map(|(id, r)| (*id, r.entry.0.clone())).collect());
    all.sort_by_key(|(_, e)| e.time_ms);
    let skip = all.len().saturating_sub(200);
    for (i, (id, e)) in all.into_iter().enumerate() {
        logged.insert(id);
        if i >= skip {
            push_event(inner, &e);
        }
    }
}

fn log_new(inner: &Inner, logged: &mut HashSet<AlertId>) {
    let mut fresh: Vec<(AlertId, AlertEntry)> = inner.ledger.read_alerts(|a| {
        // Alerts past their time leave the ledger; their ids go too.
        if logged.len() > a.len() {
            logged.retain(|id| a.contains_key(id));
        }
        a.iter()
            .filter(|(id, _)| !logged.contains(id))
            .map(|(id, r)| (*id, r.entry.0.clone()))
            .collect()
    });
    fresh.sort_by_key(|(_, e)| e.time_ms);
    for (id, e) in fresh {
        logged.insert(id);
        push_event(inner, &e);
    }
}

fn push_event(inner: &Inner, e: &AlertEntry) {
    let severity = match e.severity.as_str() {
        "error" => Severity::Error,
        "warning" => Severity::Warning,
        _ => Severity::Info,
    };
    inner
        .events
        .push(severity, &e.kind, e.job, None, e.message.clone());
}

/// The alert a sink gets.
fn to_alert(id: AlertId, e: &AlertEntry) -> Option<alert::Alert> {
    let kind = AlertKind::parse(&e.kind).ok()?;
    Some(alert::Alert {
        id: id.0.short(32),
        kind,
        severity: alert::Severity::parse(&e.severity).unwrap_or(kind.severity()),
        time_ms: e.time_ms,
        node: e.node_name.clone(),
        job: e.job_name.clone(),
        job_id: e.job.map(|j| j.to_string()),
        frames: e.frames.clone(),
        reason: e.reason.clone(),
        log_tail: e.log_tail.clone(),
        message: e.message.clone(),
    })
}

/// Claim undelivered alerts this node wants; queue those it won.
async fn claim_and_queue(inner: &Arc<Inner>, s: &mut Sending) {
    let Some(cfg) = inner.cfg.alerts.as_ref() else {
        return;
    };
    // Sending is not urgent, and a duplicate mail is worse than a late one:
    // wait well past any gossip delay before taking a claim as won.
    let settle = inner.settle_window().max(ALERT_SETTLE);
    let now = Instant::now();
    let open: Vec<(AlertId, AlertRecord)> = inner.ledger.read_alerts(|a| {
        a.iter()
            .filter(|(_, r)| !r.delivered())
            .map(|(id, r)| (*id, r.clone()))
            .collect()
    });
    for (id, rec) in open {
        let Some(alert) = to_alert(id, &rec.entry.0) else {
            continue;
        };
        if !cfg.wants(&alert) || s.queued.contains_key(&id) {
            continue;
        }
        let winner = rec.winning_claim().cloned();
        match (&winner, s.claimed.get(&id)) {
            (Some(w), Some((mine, at))) if w == mine => {
                if now.saturating_duration_since(*at) >= settle {
                    queue(s, id, alert, now);
                }
            }
            (Some(w), _) if inner.alert_claim_holds(id, w, now) => {
                forget(inner, s, id);
            }
            _ => claim(inner, s, id, &rec).await,
        }
    }
}

fn queue(s: &mut Sending, id: AlertId, alert: alert::Alert, now: Instant) {
    let mut sinks = BTreeSet::new();
    if let Some(b) = s.email.as_mut() {
        b.push(alert.clone(), now);
        sinks.insert("email");
    }
    if let Some(b) = s.webhook.as_mut() {
        b.push(alert, now);
        sinks.insert("webhook");
    }
    s.queued.insert(id, sinks);
}

fn forget(inner: &Inner, s: &mut Sending, id: AlertId) {
    s.claimed.remove(&id);
    lock(&inner.alert_claims).remove(&id);
}

async fn claim(inner: &Arc<Inner>, s: &mut Sending, id: AlertId, rec: &AlertRecord) {
    let claim = Claim {
        epoch: rec.next_epoch(),
        lamport: inner.ledger.clock().tick(),
        node: inner.id.clone(),
    };
    lock(&inner.alert_claims).insert(id, claim.epoch);
    s.claimed.insert(id, (claim.clone(), Instant::now()));
    let mut delta = rec.empty_like();
    delta.claims.insert(claim);
    commit_alert(inner, id, &delta).await;
}

async fn commit_alert(inner: &Inner, id: AlertId, delta: &AlertRecord) {
    let Ok(seq) = inner.ledger.apply_alert_local(id, delta) else {
        return;
    };
    let ledger = inner.ledger.clone();
    let _ = tokio::task::spawn_blocking(move || ledger.flush_to(seq)).await;
    if let Some(net) = &inner.net {
        net.publish_alert(id, delta);
    }
}

fn next_wakeup(s: &Sending) -> Option<Duration> {
    let now = Instant::now();
    [s.email.as_ref(), s.webhook.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|b| b.next_wakeup(now))
        .min()
        .map(|t| t.saturating_duration_since(now))
}

/// Send what is due on each sink; record `Sent` once every sink delivered.
async fn send_due(inner: &Arc<Inner>, s: &mut Sending) {
    for sink in ["email", "webhook"] {
        let now = Instant::now();
        let batch = match sink {
            "email" => s.email.as_mut().and_then(|b| b.due(now)),
            _ => s.webhook.as_mut().and_then(|b| b.due(now)),
        };
        let Some(batch) = batch else { continue };
        // Right before sending, drop alerts whose claim another node won
        // meanwhile: that node sends them.
        let batch = still_mine(inner, s, batch);
        if batch.is_empty() {
            continue;
        }
        let result = match sink {
            "email" => s.sender.send_email(&batch).await.map(|a| a.to_string()),
            _ => s
                .sender
                .send_webhook(&batch)
                .await
                .map(|code| format!("HTTP {code}")),
        };
        let b = if sink == "email" {
            s.email.as_mut()
        } else {
            s.webhook.as_mut()
        };
        let Some(b) = b else { continue };
        match result {
            Ok(answer) => {
                b.sent(Instant::now());
                tracing::info!("sent {} alert(s) by {sink}: {answer}", batch.len());
                for a in &batch {
                    delivered(inner, s, a, sink).await;
                }
            }
            Err(e) => {
                tracing::warn!(
                    "sending {} alert(s) by {sink} failed (will retry): {e}",
                    batch.len()
                );
                b.failed(batch, Instant::now());
            }
        }
    }
}

/// The alerts of `batch` whose winning claim is still this node's.
fn still_mine(inner: &Inner, s: &mut Sending, batch: Vec<alert::Alert>) -> Vec<alert::Alert> {
    let lost: Vec<AlertId> = s
        .claimed
        .iter()
        .filter(|(id, (mine, _))| {
            inner
                .ledger
                .read_alerts(|a| a.get(id).and_then(|r| r.winning_claim().cloned()))
                .as_ref()
                != Some(mine)
        })
        .map(|(id, _)| *id)
        .collect();
    for id in &lost {
        s.queued.remove(id);
        forget(inner, s, *id);
    }
    let lost: HashSet<String> = lost.iter().map(|id| id.0.short(32)).collect();
    batch
        .into_iter()
        .filter(|a| !lost.contains(&a.id))
        .collect()
}

/// One sink delivered `a`; when all have, record that it was sent.
async fn delivered(inner: &Arc<Inner>, s: &mut Sending, a: &alert::Alert, sink: &'static str) {
    let Some(id) = s.queued.keys().find(|id| id.0.short(32) == a.id).copied() else {
        return;
    };
    let Some(sinks) = s.queued.get_mut(&id) else {
        return;
    };
    sinks.remove(sink);
    if !sinks.is_empty() {
        return;
    }
    s.queued.remove(&id);
    let Some((claim, _)) = s.claimed.remove(&id) else {
        return;
    };
    lock(&inner.alert_claims).remove(&id);
    let Some(base) = inner
        .ledger
        .read_alerts(|al| al.get(&id).map(AlertRecord::empty_like))
    else {
        return;
    };
    let mut delta = base;
    delta.sent.insert(Sent {
        epoch: claim.epoch,
        node: inner.id.clone(),
        lamport: inner.ledger.clock().tick(),
    });
    commit_alert(inner, id, &delta).await;
}

/// What the loop watches for besides the ledger.
#[derive(Default)]
struct Watch {
    alive: HashSet<NodeId>,
    last_disk_check: Option<Instant>,
}

impl Watch {
    async fn observe(&mut self, inner: &Arc<Inner>) {
        let now = Instant::now();
        let alive: HashSet<NodeId> = lock(&inner.peers)
            .alive(now)
            .map(|p| p.heartbeat.node.clone())
            .collect();
        for lost in self.alive.difference(&alive) {
            node_lost(inner, lost).await;
        }
        self.alive = alive;
        if self
            .last_disk_check
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(10))
        {
            self.last_disk_check = Some(now);
            disk_low(inner).await;
            engine_missing(inner).await;
        }
    }
}

/// A peer's lease ran out while it held claims on unfinished tasks.
async fn node_lost(inner: &Arc<Inner>, lost: &NodeId) {
    let held: Vec<(JobId, String, Vec<u32>, u64)> = inner.ledger.read(|jobs| {
        let mut out = Vec::new();
        for (id, rec) in jobs {
            if rec.cancelled.0 {
                continue;
            }
            for (i, t) in &rec.tasks {
                if let Some(c) = t.winning_claim()
                    && &c.node == lost
                    && t.dones.is_empty()
                    && t.end_of(c).is_none()
                {
                    out.push((
                        *id,
                        rec.spec.name.clone(),
                        rec.spec.task_frames(*i),
                        c.lamport,
                    ));
                }
            }
        }
        out
    });
    let Some(last) = held.iter().map(|h| h.3).max() else {
        return;
    };
    let name = lock(&inner.peers)
        .get(lost)
        .map(|p| p.heartbeat.name.clone())
        .unwrap_or_else(|| lost.short().to_string());
    let frames: Vec<u32> = held.iter().flat_map(|h| h.2.iter().copied()).collect();
    let id = AlertId::of(
        "node_lost",
        &[lost.as_str().as_bytes(), &last.to_le_bytes()],
    );
    let mut e = inner.entry(
        AlertKind::NodeLost,
        format!(
            "node {name} vanished while rendering {} task(s); they will be rendered again",
            held.len()
        ),
    );
    e.frames = frames;
    if let [(job, job_name, ..)] = held.as_slice() {
        e.job = Some(*job);
        e.job_name = Some(job_name.clone());
    }
    e.reason = Some(format!(
        "no heartbeat from {name} for {:.0} s",
        inner.cfg.lease.as_secs_f64()
    ));
    inner.raise(id, e).await;
}

/// This node's disk is nearly full: under 5 GiB or 5 % free.
async fn disk_low(inner: &Arc<Inner>) {
    let t = lock(&inner.telemetry).latest.clone();
    if t.disk_total == 0 || (t.disk_free >= 5 << 30 && t.disk_free * 20 >= t.disk_total) {
        return;
    }
    // The store gives back what no job needs before anyone is told.
    inner.trim_now.notify_one();
    let hour = super::events::now_ms() / 3_600_000;
    let id = AlertId::of(
        "disk_low",
        &[inner.id.as_str().as_bytes(), &hour.to_le_bytes()],
    );
    if inner.ledger.read_alerts(|a| a.contains_key(&id)) {
        return;
    }
    let free = t.disk_free as f64 / (1u64 << 30) as f64;
    let e = inner.entry(
        AlertKind::DiskLow,
        format!(
            "node {} has {free:.1} GiB free on its data disk",
            inner.cfg.name
        ),
    );
    inner.raise(id, e).await;
}

/// An open job that no live node can render (engine or tags missing).
async fn engine_missing(inner: &Arc<Inner>) {
    if inner.started.elapsed() < inner.cfg.lease * 3 {
        return;
    }
    let now = Instant::now();
    let mut caps = lock(&inner.peers).capabilities(now);
    caps.insert(inner.id.clone(), inner.capability());
    let stuck: Vec<(JobId, String, String)> = inner.ledger.read(|jobs| {
        jobs.iter()
            .filter(|(_, r)| !r.cancelled.0 && !r.archived.0 && r.has_tasks_left())
            .filter(|(_, r)| !caps.values().any(|cap| cap.can_run(r)))
            .map(|(id, r)| (*id, r.spec.name.clone(), r.spec.engine.clone()))
            .collect()
    });
    for (job, name, engine) in stuck {
        let id = AlertId::of("engine_missing", &[&job.0.0]);
        if inner.ledger.read_alerts(|a| a.contains_key(&id)) {
            continue;
        }
        let mut e = inner.entry(
            AlertKind::EngineMissing,
            format!("job {name} needs engine `{engine}`, which no live node has"),
        );
        e.job = Some(job);
        e.job_name = Some(name);
        inner.raise(id, e).await;
    }
}
