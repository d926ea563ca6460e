//! Alert settings: raw CLI values in, one validated [`AlertConfig`] out.
//!
//! Validation happens here, once, so a node refuses to start with a typo in
//! its mail settings instead of failing silently when the first job breaks.
//! Every error names the bad value and says what to write instead, and none
//! contains the SMTP password (see `smtp_url.rs` for how the server URL is
//! read and the password kept out of sight).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use lettre::message::Mailbox;
use reqwest::Url;

use super::smtp_url::{SmtpSettings, redact_url};
use super::{Alert, AlertKind, Severity};

/// The environment variable that holds the SMTP password.
pub const PASSWORD_ENV: &str = "SWARM_SMTP_PASSWORD";
/// Default batching window: a burst of failures within it is one mail.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_secs(30);
/// Default hourly mail budget.
pub const DEFAULT_MAX_MAILS_PER_HOUR: u32 = 20;
/// The longest batching window accepted (a larger number is a unit mistake).
const MAX_BATCH_SECS: u64 = 24 * 3600;

/// Why alert settings were refused. Each message names the bad value and
/// says what to write instead; none ever contains the password.
#[derive(Debug, thiserror::Error)]
pub enum AlertConfigError {
    #[error("unknown alert level '{0}': use one of info, warning, error")]
    Level(String),
    #[error("unknown alert kind '{0}': use one of {kinds}", kinds = kind_list())]
    Kind(String),
    #[error("bad --smtp URL '{url}': {why}")]
    SmtpUrl { url: String, why: String },
    #[error(
        "the --smtp URL '{url}' carries a password: remove it and put the password in \
         {PASSWORD_ENV} or a password file (command-line arguments are visible to every user)"
    )]
    PasswordInUrl { url: String },
    #[error(
        "bad address for {flag} '{value}': {why} (write user@example.com or \"Name <user@example.com>\")"
    )]
    Address {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error("--smtp is set but no --alert-to address: add at least one recipient")]
    MissingTo,
    #[error("--smtp is set but no --alert-from address: add --alert-from farm@your.studio")]
    MissingFrom,
    #[error("{0} is set but --smtp is not: add --smtp URL to send alert mail")]
    EmailWithoutSmtp(&'static str),
    #[error("bad --alert-webhook URL '{url}': {why}")]
    Webhook { url: String, why: String },
    #[error("bad status page URL '{url}': {why}")]
    PageUrl { url: String, why: String },
    #[error(
        "the alert batching window of {0} s is longer than a day: give it in seconds (default 30)"
    )]
    BatchWindow(u64),
    #[error(
        "at most 0 alert mails per hour would hold every alert forever: give at least 1 (default 20)"
    )]
    RateLimit,
    #[error("cannot read the SMTP password file {path}: {why}")]
    PasswordFile { path: String, why: String },
    #[error("cannot set up TLS for SMTP host '{host}': {why}")]
    Tls { host: String, why: String },
    #[error(
        "the alert sender must be created inside a tokio runtime (its mail connection pool runs there)"
    )]
    NoRuntime,
    #[error("cannot build the webhook HTTP client: {0}")]
    HttpClient(String),
}

fn kind_list() -> String {
    let names: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
    names.join(", ")
}

/// Everything about alerting that a node was told.
#[derive(Clone, Debug)]
pub struct AlertConfig {
    pub smtp: Option<SmtpSettings>,
    pub to: Vec<Mailbox>,
    pub from: Option<Mailbox>,
    /// Alerts below this severity are not sent.
    pub level: Severity,
    /// Kinds to send; `None` = all.
    pub kinds: Option<BTreeSet<AlertKind>>,
    pub batch_window: Duration,
    pub max_mails_per_hour: u32,
    pub webhook: Option<Url>,
    /// The status page's address, for links in mail (no trailing slash).
    pub page_url: Option<String>,
}

impl Default for AlertConfig {
    fn default() -> AlertConfig {
        AlertConfig {
            smtp: None,
            to: Vec::new(),
            from: None,
            level: Severity::Warning,
            kinds: None,
            batch_window: DEFAULT_BATCH_WINDOW,
            max_mails_per_hour: DEFAULT_MAX_MAILS_PER_HOUR,
            webhook: None,
            page_url: None,
        }
    }
}

impl AlertConfig {
    /// Validate the raw CLI values. `kinds` entries may hold several names
    /// separated by commas; an empty list means every kind.
    #[allow(clippy::too_many_arguments)]
    pub fn from_args(
        smtp_url: Option<&str>,
        password: Option<String>,
        to: &[String],
        from: Option<&str>,
        level: &str,
        kinds: &[String],
        batch_secs: u64,
        max_per_hour: u32,
        webhook: Option<&str>,
        page_url: Option<String>,
    ) -> Result<AlertConfig, AlertConfigError> {
        let smtp = smtp_url
            .map(|u| SmtpSettings::parse(u, password))
            .transpose()?;
        let to = to
            .iter()
            .map(|v| parse_mailbox("--alert-to", v))
            .collect::<Result<Vec<_>, _>>()?;
        let from = from.map(|v| parse_mailbox("--alert-from", v)).transpose()?;
        if smtp.is_some() {
            if to.is_empty() {
                return Err(AlertConfigError::MissingTo);
            }
            if from.is_none() {
                return Err(AlertConfigError::MissingFrom);
            }
        } else if !to.is_empty() {
            return Err(AlertConfigError::EmailWithoutSmtp("--alert-to"));
        } else if from.is_some() {
            return Err(AlertConfigError::EmailWithoutSmtp("--alert-from"));
        }
        if batch_secs > MAX_BATCH_SECS {
            return Err(AlertConfigError::BatchWindow(batch_secs));
        }
        if max_per_hour == 0 {
            return Err(AlertConfigError::RateLimit);
        }
        Ok(AlertConfig {
            smtp,
            to,
            from,
            level: Severity::parse(level)?,
            kinds: parse_kinds(kinds)?,
            batch_window: Duration::from_secs(batch_secs),
            max_mails_per_hour: max_per_hour,
            webhook: webhook.map(parse_webhook).transpose()?,
            page_url: page_url.map(|u| parse_page_url(&u)).transpose()?,
        })
    }

    /// Whether this alert passes the level and kind filters.
    pub fn wants(&self, a: &Alert) -> bool {
        a.severity >= self.level && self.kinds.as_ref().is_none_or(|k| k.contains(&a.kind))
    }

    /// Whether mail can be sent (server, recipients and sender all set).
    pub fn email_enabled(&self) -> bool {
        self.smtp.is_some() && !self.to.is_empty() && self.from.is_some()
    }

    pub fn webhook_enabled(&self) -> bool {
        self.webhook.is_some()
    }
}

/// The SMTP password: from `file` when given (trailing newline removed),
/// else from `SWARM_SMTP_PASSWORD`; `None` when neither is set.
pub fn read_password(file: Option<&Path>) -> Result<Option<String>, AlertConfigError> {
    let Some(path) = file else {
        return Ok(std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()));
    };
    let bad = |why: String| AlertConfigError::PasswordFile {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let pw = text.strip_suffix('\n').unwrap_or(&text);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    if pw.is_empty() {
        return Err(bad("the file is empty; write the password in it".to_owned()));
    }
    Ok(Some(pw.to_owned()))
}

fn parse_mailbox(flag: &'static str, value: &str) -> Result<Mailbox, AlertConfigError> {
    value
        .trim()
        .parse::<Mailbox>()
        .map_err(|e| AlertConfigError::Address {
            flag,
            value: value.to_owned(),
            why: e.to_string(),
        })
}

fn parse_kinds(kinds: &[String]) -> Result<Option<BTreeSet<AlertKind>>, AlertConfigError> {
    let mut set = BTreeSet::new();
    for name in kinds
        .iter()
        .flat_map(|k| k.split(','))
        .filter(|k| !k.trim().is_empty())
    {
        set.insert(AlertKind::parse(name)?);
    }
    Ok((!set.is_empty()).then_some(set))
}

fn parse_webhook(raw: &str) -> Result<Url, AlertConfigError> {
    let bad = |why: &str| AlertConfigError::Webhook {
        url: redact_url(raw),
        why: why.to_owned(),
    };
    let url =
        Url::parse(raw.trim()).map_err(|e| bad(&format!("{e} (write http://host:port/path)")))?;
    match url.scheme() {
        "http" if url.host().is_some() => Ok(url),
        "http" => Err(bad("no host")),
        "https" => Err(bad(
            "this build posts webhooks over plain http only: point it at an http:// bridge on your \
             network (or build with reqwest's rustls feature)",
        )),
        s => Err(bad(&format!("unknown scheme '{s}': use http://"))),
    }
}

fn parse_page_url(raw: &str) -> Result<String, AlertConfigError> {
    let url = Url::parse(raw.trim()).map_err(|e| AlertConfigError::PageUrl {
        url: raw.to_owned(),
        why: format!("{e} (write http://host:7878)"),
    })?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(
        smtp: Option<&str>,
        to: &[&str],
        from: Option<&str>,
    ) -> Result<AlertConfig, AlertConfigError> {
        let to: Vec<String> = to.iter().map(|s| s.to_string()).collect();
        AlertConfig::from_args(smtp, None, &to, from, "warning", &[], 30, 20, None, None)
    }

    #[test]
    fn a_full_email_setup_is_accepted() {
        let to = vec![
            "ops@studio.test".to_owned(),
            "Night Shift <night@studio.test>".to_owned(),
        ];
        let kinds = vec!["task_failed,job-failed".to_owned(), "node_lost".to_owned()];
        let cfg = AlertConfig::from_args(
            Some("smtp://mail.studio.test:2525"),
            None,
            &to,
            Some("Farm <farm@studio.test>"),
            "info",
            &kinds,
            10,
            5,
            Some("http://127.0.0.1:9000/hook"),
            Some("http://farm.studio.test:7878/".to_owned()),
        )
        .unwrap();
        assert!(cfg.email_enabled() && cfg.webhook_enabled());
        assert_eq!(cfg.to.len(), 2);
        assert_eq!(cfg.to[1].email.to_string(), "night@studio.test");
        assert_eq!(cfg.level, Severity::Info);
        let k = cfg.kinds.as_ref().unwrap();
        assert_eq!(k.len(), 3);
        assert!(k.contains(&AlertKind::JobFailed));
        assert_eq!(cfg.batch_window, Duration::from_secs(10));
        assert_eq!(cfg.max_mails_per_hour, 5);
        assert_eq!(
            cfg.page_url.as_deref(),
            Some("http://farm.studio.test:7878")
        );
        let smtp = cfg.smtp.unwrap();
        assert_eq!((smtp.host.as_str(), smtp.port), ("mail.studio.test", 2525));
    }

    #[test]
    fn nothing_set_means_nothing_sent() {
        let cfg = args(None, &[], None).unwrap();
        assert!(!cfg.email_enabled() && !cfg.webhook_enabled());
        assert!(cfg.kinds.is_none());
    }

    #[test]
    fn bad_values_are_named_in_errors() {
        let e = args(Some("smtp://h"), &["not an address"], Some("f@x.test"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--alert-to") && e.contains("'not an address'"),
            "{e}"
        );
        let e = args(Some("smtp://h"), &["a@x.test"], Some("farm@"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--alert-from") && e.contains("'farm@'"), "{e}");
        let e = args(Some("smtp://h"), &[], Some("f@x.test")).unwrap_err();
        assert!(matches!(e, AlertConfigError::MissingTo), "{e}");
        let e = args(Some("smtp://h"), &["a@x.test"], None).unwrap_err();
        assert!(matches!(e, AlertConfigError::MissingFrom), "{e}");
        let e = args(None, &["a@x.test"], None).unwrap_err().to_string();
        assert!(e.contains("--alert-to") && e.contains("--smtp"), "{e}");
        let no = |level: &str,
                  kinds: &[&str],
                  batch: u64,
                  rate: u32,
                  hook: Option<&str>,
                  page: Option<&str>| {
            let kinds: Vec<String> = kinds.iter().map(|s| s.to_string()).collect();
            AlertConfig::from_args(
                None,
                None,
                &[],
                None,
                level,
                &kinds,
                batch,
                rate,
                hook,
                page.map(String::from),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(no("loud", &[], 30, 20, None, None).contains("'loud'"));
        let e = no("info", &["task_failed,disk_full"], 30, 20, None, None);
        assert!(e.contains("'disk_full'") && e.contains("disk_low"), "{e}");
        assert!(no("info", &[], 30_000_000, 20, None, None).contains("30000000"));
        assert!(no("info", &[], 30, 0, None, None).contains("at least 1"));
        let e = no("info", &[], 30, 20, Some("https://hooks.chat.test/x"), None);
        assert!(
            e.contains("https://hooks.chat.test/x") && e.contains("http://"),
            "{e}"
        );
        let e = no("info", &[], 30, 20, Some("ftp://h/x"), None);
        assert!(e.contains("'ftp'"), "{e}");
        let e = no("info", &[], 30, 20, None, Some("not a url"));
        assert!(e.contains("'not a url'"), "{e}");
    }

    #[test]
    fn filters_by_level_and_kind() {
        let mut cfg = args(None, &[], None).unwrap();
        let failed = Alert::new(AlertKind::TaskFailed, "n", 0, "");
        let joined = Alert::new(AlertKind::NodeJoined, "n", 0, "");
        let job_failed = Alert::new(AlertKind::JobFailed, "n", 0, "");
        assert!(cfg.wants(&failed) && cfg.wants(&job_failed) && !cfg.wants(&joined));
        cfg.level = Severity::Info;
        assert!(cfg.wants(&joined));
        cfg.kinds = Some([AlertKind::JobFailed].into());
        assert!(!cfg.wants(&failed) && !cfg.wants(&joined) && cfg.wants(&job_failed));
        cfg.level = Severity::Error;
        assert!(cfg.wants(&job_failed));
    }

    #[test]
    fn password_file_is_read_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret pass\r\n").unwrap();
        assert_eq!(
            read_password(Some(&p)).unwrap().as_deref(),
            Some("s3cret pass")
        );
        std::fs::write(&p, "\n").unwrap();
        assert!(
            read_password(Some(&p))
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let missing = dir.path().join("nope");
        let e = read_password(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
