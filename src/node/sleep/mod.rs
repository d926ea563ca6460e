//! A node that sleeps takes no new tasks. It still serves its blobs, syncs
//! its ledger, sends alerts and shows its page; renders under way finish
//! (or, asked to sleep *now*, stop and go back to the swarm without
//! costing an attempt), and tasks it had claimed but not started go back
//! at once.
//!
//! Why it exists: many nodes are people's workstations. Their owners want
//! the machine back while they work, without stopping the node, which
//! would also stop it serving the frames and scenes only it holds. Two
//! ways, like Flamenco's workers:
//! - by hand: `swarm sleep`, `swarm wake`, or the button on the page;
//! - by a weekly schedule in local time (`--sleep-schedule
//!   "mon-fri 09:00-18:00"`, see `schedule.rs`).
//!
//! A word by hand holds until the schedule next changes (then the schedule
//! rules again), or until the next word when there is no schedule. It is
//! kept in `sleep.json` in the data directory, so a node put to sleep stays
//! asleep through a restart.
//!
//! Peers learn it from the heartbeat (`Heartbeat::asleep`) and leave a
//! sleeping node out of their picks' rendezvous ranking, so fresh tasks do
//! not wait for a node that will not claim them.

mod schedule;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

pub use schedule::{ScheduleError, SleepSchedule, WeekMinute};

use super::events::Severity;
use super::{Inner, lock};

/// The file in the data directory that keeps the word given by hand.
pub const SLEEP_FILE: &str = "sleep.json";

/// How often the watcher looks at the schedule.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// What someone asked by hand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ByHand {
    asleep: bool,
    /// When it was asked, ms since the Unix epoch.
    at_ms: u64,
    /// Unix seconds when the schedule next changes after it was asked: the
    /// word holds until then. `None`: until the next word.
    until_s: Option<i64>,
}

/// Whether this node sleeps, by hand or by its schedule.
pub struct Sleep {
    schedule: Option<SleepSchedule>,
    by_hand: Mutex<Option<ByHand>>,
    file: PathBuf,
    /// Someone said sleep or wake: the watcher tells the swarm at once.
    changed: Notify,
    /// Whether the node sleeps, as the watcher last saw it: claims waiting
    /// for a slot are given back the moment it falls asleep.
    state: watch::Sender<bool>,
}

/// Why the word could not be kept.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct SleepError {
    path: PathBuf,
    source: std::io::Error,
}

impl Sleep {
    /// The schedule, and the word given by hand before a restart (a file
    /// that does not read is reported and ignored: the node wakes).
    pub fn open(data_dir: &std::path::Path, schedule: Option<SleepSchedule>) -> Sleep {
        let file = data_dir.join(SLEEP_FILE);
        let by_hand = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .inspect_err(|e| {
                    tracing::warn!("ignoring {}: {e}; the node is awake", file.display())
                })
                .ok(),
            Err(_) => None,
        };
        Sleep {
            schedule,
            by_hand: Mutex::new(by_hand),
            file,
            changed: Notify::new(),
            state: watch::Sender::new(false),
        }
    }

    /// Resolves once the node is asleep (at once if it is).
    pub async fn fallen_asleep(&self) {
        let mut rx = self.state.subscribe();
        loop {
            if rx.wait_for(|asleep| *asleep).await.is_err() {
                return std::future::pending().await;
            }
            // The watcher may not have seen a wake by hand yet.
            if self.asleep() {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    pub fn schedule(&self) -> Option<&SleepSchedule> {
        self.schedule.as_ref()
    }

    /// The word given by hand, while it holds at `now_s`.
    fn hand(&self, now_s: i64) -> Option<ByHand> {
        lock(&self.by_hand)
            .clone()
            .filter(|h| h.until_s.is_none_or(|u| now_s < u))
    }

    /// Whether the node takes no new tasks now. Cheap: the scheduler asks
    /// before every pick.
    pub fn asleep(&self) -> bool {
        self.asleep_at(now_s())
    }

    fn asleep_at(&self, now_s: i64) -> bool {
        match self.hand(now_s) {
            Some(h) => h.asleep,
            None => self
                .schedule
                .as_ref()
                .is_some_and(|s| s.asleep_at(WeekMinute::local(now_s))),
        }
    }

    /// Why the node sleeps, in words for people; `None` when it is awake.
    pub fn why_asleep(&self) -> Option<String> {
        self.why_asleep_at(now_s())
    }

    fn why_asleep_at(&self, now_s: i64) -> Option<String> {
        if let Some(h) = self.hand(now_s) {
            return h.asleep.then(|| "by hand".to_string());
        }
        let s = self.schedule.as_ref()?;
        let at = WeekMinute::local(now_s);
        if !s.asleep_at(at) {
            return None;
        }
        Some(match s.next_change(at) {
            Some((_, wakes)) => format!("by its schedule until {wakes}"),
            None => "by its schedule".to_string(),
        })
    }

    /// Put the node to sleep, or wake it, by hand; kept on disk first.
    pub fn set(&self, asleep: bool) -> Result<(), SleepError> {
        let now = now_s();
        let until_s = self.schedule.as_ref().and_then(|s| {
            let (minutes, _) = s.next_change(WeekMinute::local(now))?;
            Some(now - now.rem_euclid(60) + i64::from(minutes) * 60)
        });
        let word = ByHand {
            asleep,
            at_ms: super::events::now_ms(),
            until_s,
        };
        self.keep(Some(&word))?;
        *lock(&self.by_hand) = Some(word);
        self.changed.notify_one();
        Ok(())
    }

    /// Write the word (or remove it) where a restart finds it.
    fn keep(&self, word: Option<&ByHand>) -> Result<(), SleepError> {
        let err = |source| SleepError {
            path: self.file.clone(),
            source,
        };
        let Some(word) = word else {
            return match std::fs::remove_file(&self.file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(e)),
                _ => Ok(()),
            };
        };
        let tmp = self.file.with_extension("json.tmp");
        let bytes = serde_json::to_vec(word).unwrap_or_default();
        std::fs::write(&tmp, bytes).map_err(err)?;
        std::fs::rename(&tmp, &self.file).map_err(err)
    }

    /// Look again at the word and the schedule: tell waiters, forget a
    /// word whose time has passed. Returns why the node sleeps now.
    fn refresh(&self, now_s: i64) -> Option<String> {
        self.forget_lapsed(now_s);
        let why = self.why_asleep_at(now_s);
        self.state.send_if_modified(|asleep| {
            let changed = *asleep != why.is_some();
            *asleep = why.is_some();
            changed
        });
        why
    }

    /// Forget a word whose time has passed (the schedule rules again).
    fn forget_lapsed(&self, now_s: i64) {
        let mut hand = lock(&self.by_hand);
        if hand
            .as_ref()
            .is_some_and(|h| h.until_s.is_some_and(|u| now_s >= u))
        {
            *hand = None;
            drop(hand);
            if let Err(e) = self.keep(None) {
                tracing::warn!("{e}");
            }
        }
    }
}

fn now_s() -> i64 {
    (super::events::now_ms() / 1000) as i64
}

/// Tell the page and the swarm whenever the node falls asleep or wakes,
/// and wake the scheduler when it does.
pub(crate) async fn watch(inner: Arc<Inner>) {
    let mut was: Option<Option<String>> = None;
    loop {
        let why = inner.sleep.refresh(now_s());
        if was.as_ref() != Some(&why) {
            if was.is_some() || why.is_some() {
                say(&inner, why.as_deref());
            }
            inner.heartbeat_now.notify_one();
            inner.slot_freed.notify_one();
            was = Some(why);
        }
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = inner.sleep.changed.notified() => {}
            _ = tokio::time::sleep(WATCH_EVERY) => {}
        }
    }
}

fn say(inner: &Inner, why: Option<&str>) {
    let name = &inner.cfg.name;
    let (kind, message) = match why {
        Some(why) => (
            "node_asleep",
            format!("node {name} is asleep {why}: it takes no new tasks"),
        ),
        None => (
            "node_awake",
            format!("node {name} is awake: it takes tasks"),
        ),
    };
    tracing::info!("{message}");
    inner.events.push(Severity::Info, kind, None, None, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleep_in(dir: &std::path::Path, schedule: Option<&str>) -> Sleep {
        Sleep::open(dir, schedule.map(|s| SleepSchedule::parse(s).unwrap()))
    }

    #[test]
    fn a_word_by_hand_survives_a_restart_and_wake_undoes_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = sleep_in(dir.path(), None);
        assert!(!s.asleep());
        s.set(true).unwrap();
        assert!(s.asleep());
        assert_eq!(s.why_asleep().as_deref(), Some("by hand"));
        let again = sleep_in(dir.path(), None);
        assert!(again.asleep(), "the word was kept on disk");
        again.set(false).unwrap();
        assert!(!sleep_in(dir.path(), None).asleep());
    }

    #[test]
    fn a_word_by_hand_holds_until_the_schedule_changes() {
        let dir = tempfile::tempdir().unwrap();
        // Asleep all week: waking by hand holds until the next word.
        let always = sleep_in(dir.path(), Some("daily"));
        assert_eq!(always.why_asleep().as_deref(), Some("by its schedule"));
        always.set(false).unwrap();
        assert!(!always.asleep());
        assert_eq!(lock(&always.by_hand).as_ref().unwrap().until_s, None);

        // A schedule that changes: the word lapses at the change.
        let dir = tempfile::tempdir().unwrap();
        let now = now_s();
        let at = WeekMinute::local(now);
        let next = (at.minute + 90) % (24 * 60);
        let text = format!(
            "{:02}:{:02}-{:02}:{:02}",
            next / 60,
            next % 60,
            (next + 60) % (24 * 60) / 60,
            (next + 60) % 60
        );
        let s = sleep_in(dir.path(), Some(&text));
        assert!(!s.asleep_at(now), "{text} does not cover now");
        s.set(true).unwrap();
        let until = lock(&s.by_hand).as_ref().unwrap().until_s.unwrap();
        let wanted = now - now.rem_euclid(60) + 90 * 60;
        assert!(
            (until - wanted).abs() <= 3600,
            "{until} vs {wanted} (DST aside)"
        );
        assert!(s.asleep_at(until - 1));
        assert!(s.hand(until - 1).is_some_and(|h| h.asleep));
        // At the change the word lapses and the schedule rules.
        assert!(s.hand(until).is_none());
        s.forget_lapsed(until);
        assert!(lock(&s.by_hand).is_none());
        assert!(!dir.path().join(SLEEP_FILE).exists());
    }

    #[tokio::test]
    async fn a_claim_waiting_for_a_slot_hears_at_once_that_the_node_fell_asleep() {
        let dir = tempfile::tempdir().unwrap();
        let s = sleep_in(dir.path(), None);
        let soon = Duration::from_millis(50);
        s.refresh(now_s());
        assert!(tokio::time::timeout(soon, s.fallen_asleep()).await.is_err());
        s.set(true).unwrap();
        s.refresh(now_s());
        tokio::time::timeout(Duration::from_secs(5), s.fallen_asleep())
            .await
            .expect("the waiter hears the node fell asleep");
        // Woken by hand, before the watcher looks again: the stale state
        // does not give claims back.
        s.set(false).unwrap();
        assert!(tokio::time::timeout(soon, s.fallen_asleep()).await.is_err());
    }

    #[test]
    fn a_file_that_does_not_read_leaves_the_node_awake() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SLEEP_FILE), b"{not json").unwrap();
        assert!(!sleep_in(dir.path(), None).asleep());
    }
}
