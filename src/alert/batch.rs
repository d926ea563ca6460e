//! When to send: the batching window, the hourly mail budget and the retry
//! backoff, as a pure state machine with time passed in.
//!
//! Pure so that every rule is tested without clocks or sleeps, and so the
//! node's loop stays simple: `push` what arrives, sleep until
//! `next_wakeup`, send what `due` hands out, and report `sent` or `failed`.
//!
//! The rules:
//! - a batch is due once the window has passed since its first alert; every
//!   alert that arrived meanwhile rides along, so a burst is one digest;
//! - at most `max_per_hour` batches in any rolling hour; while the budget is
//!   spent, alerts wait and all go out together when it frees up;
//! - a failed batch goes back to the front of the queue (in its order) and
//!   waits an exponential backoff, 5 s doubling to 10 min, before the next
//!   try; anything that arrived in the meantime joins it.
//!
//! Nothing is ever dropped: an alert leaves the queue only in a batch, and a
//! batch comes back unless `sent` confirms it. One `Batcher` serves one sink
//! (email or webhook), since each has its own failures and budget.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Alert;

const HOUR: Duration = Duration::from_secs(3600);
/// First retry delay after a failed send; doubles with every failure.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(5);
/// The longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(600);

/// Batching, rate limit and retry policy for one sink; see the module doc.
#[derive(Debug)]
pub struct Batcher {
    window: Duration,
    max_per_hour: usize,
    /// Waiting alerts with the time they may go out (arrival + window; for
    /// a retried batch, its failure time, so `retry_at` alone governs it).
    queue: VecDeque<(Alert, Instant)>,
    /// When recent batches were sent, oldest first (only the last hour kept).
    sent_at: VecDeque<Instant>,
    /// Batches handed out by `due` and not yet reported; they count against
    /// the budget, so concurrent sends cannot overrun it.
    in_flight: usize,
    /// Failures in a row, for the backoff.
    failures: u32,
    retry_at: Option<Instant>,
}

impl Batcher {
    /// `max_per_hour` of 0 is taken as 1: a budget of nothing would hold
    /// alerts forever.
    pub fn new(window: Duration, max_per_hour: u32) -> Batcher {
        Batcher {
            window,
            max_per_hour: usize::try_from(max_per_hour.max(1)).unwrap_or(usize::MAX),
            queue: VecDeque::new(),
            sent_at: VecDeque::new(),
            in_flight: 0,
            failures: 0,
            retry_at: None,
        }
    }

    /// Queue an alert. One already waiting with the same id is not queued
    /// again (the ledger may hand the same alert over twice).
    pub fn push(&mut self, a: Alert, now: Instant) {
        if self.queue.iter().any(|(q, _)| q.id == a.id) {
            return;
        }
        self.queue.push_back((a, now + self.window));
    }

    /// Alerts waiting (including retried ones).
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// The batch to send now, if one is due: the first alert's window has
    /// passed, no backoff is running, and the hourly budget allows. Every
    /// batch handed out must be answered with [`sent`](Self::sent) or
    /// [`failed`](Self::failed).
    pub fn due(&mut self, now: Instant) -> Option<Vec<Alert>> {
        self.forget_old_sends(now);
        let ready_at = self.queue.front()?.1;
        if now < ready_at || self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        if self.sent_at.len() + self.in_flight >= self.max_per_hour {
            return None;
        }
        self.in_flight += 1;
        Some(self.queue.drain(..).map(|(a, _)| a).collect())
    }

    /// When `due` may next return a batch, if nothing else changes; `None`
    /// when nothing waits, or when only a send in flight can free the budget
    /// (its `sent`/`failed` call is the next event).
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let mut at = self.queue.front()?.1;
        if let Some(r) = self.retry_at {
            at = at.max(r);
        }
        let recent: Vec<Instant> = self
            .sent_at
            .iter()
            .copied()
            .filter(|&t| now < t + HOUR)
            .collect();
        let used = recent.len() + self.in_flight;
        if used >= self.max_per_hour {
            // The budget frees when enough recent sends age out of the hour.
            let must_expire = used - self.max_per_hour;
            at = at.max(*recent.get(must_expire)? + HOUR);
        }
        Some(at)
    }

    /// The last batch from `due` was delivered.
    pub fn sent(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.sent_at.push_back(now);
        self.failures = 0;
        self.retry_at = None;
    }

    /// The batch could not be delivered: put it back at the front, in its
    /// order, and hold everything for the next backoff step.
    pub fn failed(&mut self, batch: Vec<Alert>, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + Batcher::backoff(self.failures));
        for a in batch.into_iter().rev() {
            if !self.queue.iter().any(|(q, _)| q.id == a.id) {
                self.queue.push_front((a, now));
            }
        }
    }

    /// The wait after `failures` failures in a row: 5 s, 10 s, 20 s, ...
    /// up to 10 min.
    pub fn backoff(failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        (BACKOFF_FIRST * (1u32 << doublings)).min(BACKOFF_MAX)
    }

    fn forget_old_sends(&mut self, now: Instant) {
        while self.sent_at.front().is_some_and(|&t| now >= t + HOUR) {
            self.sent_at.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::AlertKind;
    use super::*;

    fn alert(n: u32) -> Alert {
        Alert::new(
            AlertKind::TaskFailed,
            "n1",
            u64::from(n),
            &format!("frame {n} failed"),
        )
        .with_frames(vec![n])
    }

    fn frames(batch: &[Alert]) -> Vec<u32> {
        batch.iter().flat_map(|a| a.frames.clone()).collect()
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_within_the_window_is_one_batch() {
        let t0 = Instant::now();
        let mut b = Batcher::new(30 * S, 20);
        assert_eq!(b.next_wakeup(t0), None);
        b.push(alert(1), t0);
        b.push(alert(2), t0 + 5 * S);
        b.push(alert(3), t0 + 29 * S);
        assert_eq!(b.next_wakeup(t0 + 29 * S), Some(t0 + 30 * S));
        assert_eq!(b.due(t0 + 29 * S), None);
        let batch = b.due(t0 + 30 * S).unwrap();
        assert_eq!(frames(&batch), vec![1, 2, 3]);
        assert_eq!(b.pending(), 0);
        b.sent(t0 + 31 * S);
        // The next alert opens a new window.
        b.push(alert(4), t0 + 40 * S);
        assert_eq!(b.next_wakeup(t0 + 40 * S), Some(t0 + 70 * S));
    }

    #[test]
    fn a_zero_window_sends_at_once() {
        let t0 = Instant::now();
        let mut b = Batcher::new(Duration::ZERO, 20);
        b.push(alert(1), t0);
        assert_eq!(frames(&b.due(t0).unwrap()), vec![1]);
    }

    #[test]
    fn the_hourly_budget_holds_alerts_and_merges_them() {
        let t0 = Instant::now();
        let mut b = Batcher::new(10 * S, 2);
        for (i, t) in [(1, 0), (2, 100)] {
            b.push(alert(i), t0 + t * S);
            let batch = b.due(t0 + (t + 10) * S).unwrap();
            assert_eq!(frames(&batch), vec![i]);
            b.sent(t0 + (t + 11) * S);
        }
        // Budget spent: later alerts wait, however long their windows are past.
        b.push(alert(3), t0 + 200 * S);
        b.push(alert(4), t0 + 1000 * S);
        assert_eq!(b.due(t0 + 2000 * S), None);
        // The first send (at 11 s) ages out of the hour at 3611 s.
        assert_eq!(b.next_wakeup(t0 + 2000 * S), Some(t0 + 3611 * S));
        assert_eq!(b.due(t0 + 3610 * S), None);
        b.push(alert(5), t0 + 3605 * S);
        let batch = b.due(t0 + 3611 * S).unwrap();
        assert_eq!(
            frames(&batch),
            vec![3, 4, 5],
            "held alerts merge into one digest"
        );
    }

    #[test]
    fn a_send_in_flight_counts_against_the_budget() {
        let t0 = Instant::now();
        let mut b = Batcher::new(Duration::ZERO, 1);
        b.push(alert(1), t0);
        let first = b.due(t0).unwrap();
        b.push(alert(2), t0 + S);
        assert_eq!(b.due(t0 + S), None);
        assert_eq!(
            b.next_wakeup(t0 + S),
            None,
            "only the send's outcome can free the budget"
        );
        b.failed(first, t0 + 2 * S);
        let retry = b.due(t0 + 7 * S).unwrap();
        assert_eq!(frames(&retry), vec![1, 2]);
    }

    #[test]
    fn failures_back_off_exponentially_and_keep_order() {
        let t0 = Instant::now();
        let mut b = Batcher::new(S, 100);
        b.push(alert(1), t0);
        b.push(alert(2), t0);
        let mut now = t0 + S;
        let mut waits = Vec::new();
        for _ in 0..9 {
            let batch = b.due(now).unwrap();
            assert_eq!(frames(&batch), vec![1, 2]);
            b.failed(batch, now);
            let next = b.next_wakeup(now).unwrap();
            assert_eq!(b.due(next - Duration::from_millis(1)), None);
            waits.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(waits, vec![5, 10, 20, 40, 80, 160, 320, 600, 600]);
        // What arrives during a backoff joins the retry.
        let batch = b.due(now).unwrap();
        b.push(alert(3), now);
        b.failed(batch, now);
        now += 600 * S;
        let batch = b.due(now).unwrap();
        assert_eq!(frames(&batch), vec![1, 2, 3]);
        // A success resets the backoff to its first step.
        b.sent(now);
        b.push(alert(4), now);
        let batch = b.due(now + S).unwrap();
        b.failed(batch, now + S);
        assert_eq!(b.next_wakeup(now + S), Some(now + 6 * S));
        assert_eq!(Batcher::backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn the_same_alert_is_queued_once() {
        let t0 = Instant::now();
        let mut b = Batcher::new(S, 10);
        b.push(alert(1), t0);
        b.push(alert(1), t0);
        let batch = b.due(t0 + S).unwrap();
        b.push(alert(1), t0 + S);
        b.failed(batch, t0 + S);
        assert_eq!(b.pending(), 1);
    }

    /// A long run with a tight budget and random failures: every alert is
    /// delivered exactly once, and no rolling hour holds more than the budget.
    #[test]
    fn nothing_is_ever_dropped_or_sent_twice() {
        let t0 = Instant::now();
        let mut b = Batcher::new(30 * S, 3);
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut delivered, mut sends) = (Vec::new(), Vec::new());
        let mut now = t0;
        for i in 0..500 {
            now += Duration::from_secs(next() % 120);
            b.push(alert(i), now);
            while let Some(batch) = b.due(now) {
                if next() % 4 == 0 {
                    b.failed(batch, now);
                } else {
                    delivered.extend(frames(&batch));
                    sends.push(now);
                    b.sent(now);
                }
            }
        }
        while let Some(wake) = b.next_wakeup(now) {
            now = now.max(wake);
            let batch = b.due(now).unwrap();
            delivered.extend(frames(&batch));
            sends.push(now);
            b.sent(now);
        }
        assert_eq!(delivered, (0..500).collect::<Vec<_>>());
        for (i, t) in sends.iter().enumerate() {
            let in_hour = sends[i..].iter().filter(|&&s| s < *t + HOUR).count();
            assert!(in_hour <= 3, "{in_hour} sends within an hour of send {i}");
        }
    }
}
