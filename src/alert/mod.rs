//! Alerts: events a studio wants to hear about, and the sending side that
//! tells them — email through lettre (async, rustls) and a JSON webhook.
//!
//! Shape, and why:
//! - [`Alert`] is plain data with serde, so the node can keep alerts as
//!   ledger entries (claimed like tasks, so exactly one node sends each) and
//!   the webhook can post them as they are. Its severity is stored, not
//!   derived, so a later change of defaults does not rewrite history.
//! - [`AlertConfig`] is built in one place from the raw CLI values
//!   ([`AlertConfig::from_args`]) and validated there: every bad value is
//!   named in its error before a node starts, not at 3 a.m. when the first
//!   job fails. The SMTP password only ever lives in a [`Secret`], whose
//!   `Debug` and `Display` print `***`.
//! - [`Batcher`] is pure (time is passed in): the batching window that turns
//!   a burst of failures into one digest mail, the hourly mail budget, and
//!   the retry backoff. Alerts are never dropped: held ones wait and are
//!   merged into the next digest.
//! - [`compose`] is pure too: subject and plain-text body.
//! - [`Sender`] does the I/O, with timeouts everywhere (connect 10 s, a
//!   whole send 30 s), so nothing it does can block rendering; it reports
//!   failures as [`SendError`]s that say what to check, and leaves retrying
//!   to the caller ([`Batcher::failed`] holds the backoff policy).
//!
//! A node's loop, per sink: `if cfg.wants(&a) { batcher.push(a, now) }`;
//! sleep until `batcher.next_wakeup(now)` (or the next alert); for each
//! `batcher.due(now)`, `sender.send_email(&batch)` in a spawned task, then
//! `batcher.sent(now)` or `batcher.failed(batch, now)`.
//!
//! Files: `mod.rs` the alert types; `config.rs` settings and their
//! validation; `smtp_url.rs` the `--smtp` URL and the password; `batch.rs`
//! when to send; `compose.rs` what a mail says; `send.rs` sending;
//! `send_error.rs` what went wrong and what to check. Tests against a real
//! SMTP server and HTTP receiver: `smtp_tests.rs`, `webhook_tests.rs`.

mod batch;
mod compose;
mod config;
mod send;
mod send_error;
#[cfg(test)]
mod smtp_tests;
mod smtp_url;
#[cfg(test)]
mod webhook_tests;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use batch::Batcher;
pub use compose::{compose, format_frames};
pub use config::{
    AlertConfig, AlertConfigError, DEFAULT_BATCH_WINDOW, DEFAULT_MAX_MAILS_PER_HOUR, PASSWORD_ENV,
    read_password,
};
pub use send::{CONNECT_TIMEOUT, SEND_TIMEOUT, Sender, SmtpAnswer};
pub use send_error::SendError;
pub use smtp_url::{Secret, SmtpSettings, TlsMode};

/// How much an alert matters. Ordered: `Info < Warning < Error`, so a
/// threshold is a plain comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    /// The lowercase name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    /// Parse `info`, `warning` (or `warn`) or `error`, any case.
    pub fn parse(s: &str) -> Result<Severity, AlertConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "info" => Ok(Severity::Info),
            "warning" | "warn" => Ok(Severity::Warning),
            "error" => Ok(Severity::Error),
            _ => Err(AlertConfigError::Level(s.to_owned())),
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = AlertConfigError;
    fn from_str(s: &str) -> Result<Severity, AlertConfigError> {
        Severity::parse(s)
    }
}

/// What happened. Each kind has a fixed default severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A task attempt failed (it may be retried).
    TaskFailed,
    /// A job cannot finish: a task ran out of attempts.
    JobFailed,
    /// Every frame of a job is done.
    JobFinished,
    /// A node vanished while holding claims.
    NodeLost,
    /// A job names an engine that no live node has.
    EngineMissing,
    /// A node's cache or work disk is nearly full.
    DiskLow,
    /// A node joined the swarm.
    NodeJoined,
    /// A node left the swarm cleanly.
    NodeLeft,
}

impl AlertKind {
    /// Every kind, in declaration order (for help texts and error messages).
    pub const ALL: [AlertKind; 8] = [
        AlertKind::TaskFailed,
        AlertKind::JobFailed,
        AlertKind::JobFinished,
        AlertKind::NodeLost,
        AlertKind::EngineMissing,
        AlertKind::DiskLow,
        AlertKind::NodeJoined,
        AlertKind::NodeLeft,
    ];

    /// The severity an alert of this kind carries.
    pub fn severity(self) -> Severity {
        match self {
            AlertKind::JobFailed => Severity::Error,
            AlertKind::TaskFailed
            | AlertKind::NodeLost
            | AlertKind::EngineMissing
            | AlertKind::DiskLow => Severity::Warning,
            AlertKind::JobFinished | AlertKind::NodeJoined | AlertKind::NodeLeft => Severity::Info,
        }
    }

    /// The snake_case name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::TaskFailed => "task_failed",
            AlertKind::JobFailed => "job_failed",
            AlertKind::JobFinished => "job_finished",
            AlertKind::NodeLost => "node_lost",
            AlertKind::EngineMissing => "engine_missing",
            AlertKind::DiskLow => "disk_low",
            AlertKind::NodeJoined => "node_joined",
            AlertKind::NodeLeft => "node_left",
        }
    }

    /// Words for people: `task failed`, `node lost`.
    pub fn title(self) -> &'static str {
        match self {
            AlertKind::TaskFailed => "task failed",
            AlertKind::JobFailed => "job failed",
            AlertKind::JobFinished => "job finished",
            AlertKind::NodeLost => "node lost",
            AlertKind::EngineMissing => "engine missing",
            AlertKind::DiskLow => "disk low",
            AlertKind::NodeJoined => "node joined",
            AlertKind::NodeLeft => "node left",
        }
    }

    /// Parse a kind name; `task_failed`, `task-failed` and `TASK_FAILED` are
    /// all accepted.
    pub fn parse(s: &str) -> Result<AlertKind, AlertConfigError> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        AlertKind::ALL
            .into_iter()
            .find(|k| k.as_str() == wanted)
            .ok_or_else(|| AlertConfigError::Kind(s.to_owned()))
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AlertKind {
    type Err = AlertConfigError;
    fn from_str(s: &str) -> Result<AlertKind, AlertConfigError> {
        AlertKind::parse(s)
    }
}

/// One thing that happened, as seen by one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id, lowercase hex; see [`Alert::stable_id`].
    pub id: String,
    pub kind: AlertKind,
    pub severity: Severity,
    /// When it happened, Unix milliseconds (UTC).
    pub time_ms: u64,
    /// Name of the node that saw it.
    pub node: String,
    /// The job's name, for people.
    pub job: Option<String>,
    /// The job's id (hex), for links to the status page.
    pub job_id: Option<String>,
    pub frames: Vec<u32>,
    pub reason: Option<String>,
    /// The last lines of the engine's log, when a render failed.
    pub log_tail: Option<String>,
    /// One line saying what happened.
    pub message: String,
}

impl Alert {
    /// A new alert with the kind's default severity and a stable id;
    /// add details with the `with_*` methods (each recomputes the id).
    pub fn new(kind: AlertKind, node: &str, time_ms: u64, message: &str) -> Alert {
        let mut a = Alert {
            id: String::new(),
            kind,
            severity: kind.severity(),
            time_ms,
            node: node.to_owned(),
            job: None,
            job_id: None,
            frames: Vec::new(),
            reason: None,
            log_tail: None,
            message: message.to_owned(),
        };
        a.id = a.stable_id();
        a
    }

    /// Attach the job's name and id.
    pub fn with_job(mut self, name: &str, job_id: &str) -> Alert {
        self.job = Some(name.to_owned());
        self.job_id = Some(job_id.to_owned());
        self.id = self.stable_id();
        self
    }

    /// Attach the frames concerned.
    pub fn with_frames(mut self, frames: Vec<u32>) -> Alert {
        self.frames = frames;
        self.id = self.stable_id();
        self
    }

    /// Attach the reason (e.g. "exit code 1").
    pub fn with_reason(mut self, reason: &str) -> Alert {
        self.reason = Some(reason.to_owned());
        self.id = self.stable_id();
        self
    }

    /// Attach the tail of the engine's log (not part of the id).
    pub fn with_log_tail(mut self, tail: &str) -> Alert {
        self.log_tail = Some(tail.to_owned());
        self
    }

    /// blake3 over what identifies the event (kind, node, time, job id,
    /// frames, reason), first 16 bytes as hex. The same event described by
    /// the same node gets the same id, so a re-sent alert can be recognised.
    pub fn stable_id(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b"renderswarm/alert/v1");
        h.update(self.kind.as_str().as_bytes());
        for field in [Some(&self.node), self.job_id.as_ref(), self.reason.as_ref()] {
            let bytes = field.map_or(&b""[..], |s| s.as_bytes());
            h.update(&[u8::from(field.is_some())]);
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        h.update(&self.time_ms.to_le_bytes());
        h.update(&(self.frames.len() as u64).to_le_bytes());
        for f in &self.frames {
            h.update(&f.to_le_bytes());
        }
        hex::encode(&h.finalize().as_bytes()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_orders_and_parses() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Error);
        assert_eq!(Severity::parse("WARNING").unwrap(), Severity::Warning);
        assert_eq!(Severity::parse("warn").unwrap(), Severity::Warning);
        assert_eq!(" error ".parse::<Severity>().unwrap(), Severity::Error);
        let e = Severity::parse("critical").unwrap_err().to_string();
        assert!(
            e.contains("critical") && e.contains("info, warning, error"),
            "{e}"
        );
    }

    #[test]
    fn kinds_round_trip_names_and_serde() {
        for k in AlertKind::ALL {
            assert_eq!(AlertKind::parse(k.as_str()).unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        assert_eq!(AlertKind::parse("Node-Lost").unwrap(), AlertKind::NodeLost);
        let e = AlertKind::parse("frame_failed").unwrap_err().to_string();
        assert!(
            e.contains("frame_failed") && e.contains("task_failed"),
            "{e}"
        );
        assert_eq!(
            serde_json::to_string(&Severity::Warning).unwrap(),
            "\"warning\""
        );
    }

    #[test]
    fn kind_severities_follow_the_issue() {
        use AlertKind::*;
        assert_eq!(JobFailed.severity(), Severity::Error);
        for k in [TaskFailed, NodeLost, EngineMissing, DiskLow] {
            assert_eq!(k.severity(), Severity::Warning, "{k}");
        }
        for k in [JobFinished, NodeJoined, NodeLeft] {
            assert_eq!(k.severity(), Severity::Info, "{k}");
        }
    }

    #[test]
    fn ids_are_stable_and_tell_events_apart() {
        let a = Alert::new(AlertKind::TaskFailed, "n1", 1000, "x")
            .with_job("shot", "ab")
            .with_frames(vec![3]);
        let b = Alert::new(AlertKind::TaskFailed, "n1", 1000, "other words")
            .with_job("shot", "ab")
            .with_frames(vec![3]);
        assert_eq!(a.id, b.id, "the message is not part of the identity");
        assert_eq!(a.id.len(), 32);
        assert!(a.id.bytes().all(|c| c.is_ascii_hexdigit()));
        let c = a.clone().with_frames(vec![4]);
        assert_ne!(a.id, c.id);
        let d = Alert::new(AlertKind::TaskFailed, "n1", 1001, "x")
            .with_job("shot", "ab")
            .with_frames(vec![3]);
        assert_ne!(a.id, d.id);
        // A field's bytes cannot leak into its neighbour's.
        let e = Alert::new(AlertKind::DiskLow, "ab", 0, "");
        let f = Alert::new(AlertKind::DiskLow, "a", 0, "").with_reason("b");
        assert_ne!(e.id, f.id);
    }

    #[test]
    fn alert_json_round_trips() {
        let a = Alert::new(AlertKind::JobFailed, "n1", 5, "job failed")
            .with_job("shot", "ab")
            .with_frames(vec![1, 2])
            .with_reason("3 attempts")
            .with_log_tail("Error: x");
        let json = serde_json::to_string(&a).unwrap();
        assert!(
            json.contains("\"kind\":\"job_failed\"") && json.contains("\"severity\":\"error\"")
        );
        let back: Alert = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
    }
}
