//! What can go wrong when sending, sorted by what the user must check.
//!
//! lettre's errors tell a response code, a timeout, a TLS failure, a client
//! or a connection problem apart, but their texts are terse ("Connection
//! error: Connection error: received corrupt message of type
//! InvalidContentType" for `smtps://` spoken to a plain-text port). This file
//! turns them into [`SendError`]s whose messages name the server and say
//! what to check: host and port, the TLS mode, the credentials, the
//! addresses. The password is scrubbed from every text.

use std::time::Duration;

use lettre::transport::smtp;

use super::send::{CONNECT_TIMEOUT, SEND_TIMEOUT};
use super::smtp_url::{SmtpSettings, TlsMode};

/// Why a send failed. The texts name the server and say what to check.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The server could not be reached, or the connection broke.
    #[error("{0}")]
    Connect(String),
    /// The server answered with a 4xx (try later) or 5xx (refused) code.
    #[error("the SMTP server refused the mail: {code} {text}; {hint}", hint = refused_hint(*code))]
    Refused { code: u16, text: String },
    #[error(
        "the SMTP server did not answer in time (limits: connect {}s, whole send {}s): \
         check the host, the port and the TLS mode in --smtp (smtps:// spoken to a STARTTLS port, \
         or the other way round, often just hangs) and any firewall in between",
        CONNECT_TIMEOUT.as_secs(), SEND_TIMEOUT.as_secs()
    )]
    Timeout,
    /// The TLS handshake failed, or STARTTLS was required and not offered.
    #[error("{0}")]
    Tls(String),
    /// The server spoke, but not in a way that allows sending.
    #[error("{0}")]
    Protocol(String),
    #[error("webhook: {message}")]
    Webhook {
        status: Option<u16>,
        message: String,
    },
    #[error("{0} is not configured on this node")]
    NotConfigured(&'static str),
    #[error("no alerts to send")]
    NoAlerts,
    #[error("cannot build the alert mail: {0}")]
    Message(String),
}

impl SendError {
    /// Whether trying again later may work without changing any setting.
    pub fn is_transient(&self) -> bool {
        match self {
            SendError::Connect(_) | SendError::Timeout => true,
            SendError::Refused { code, .. } => (400..500).contains(code),
            SendError::Webhook { status, .. } => status.is_none_or(|s| s == 429 || s >= 500),
            SendError::Tls(_)
            | SendError::Protocol(_)
            | SendError::NotConfigured(_)
            | SendError::NoAlerts
            | SendError::Message(_) => false,
        }
    }
}

fn refused_hint(code: u16) -> &'static str {
    match code {
        530 | 534 | 535 | 538 => {
            "check the user in --smtp and the password in SWARM_SMTP_PASSWORD or the password file"
        }
        550..=553 => {
            "check the --alert-to and --alert-from addresses, and that this server relays for them"
        }
        400..=499 => "a temporary refusal: the mail will be retried",
        _ => "check the --smtp settings with `swarm alert test`",
    }
}

/// Sort a lettre error into what the user must check.
pub(super) fn smtp_error(e: &smtp::Error, s: &SmtpSettings) -> SendError {
    let scrub = |text: String| match &s.password {
        Some(pw) if !pw.expose().is_empty() => text.replace(pw.expose(), "***"),
        _ => text,
    };
    let detail = scrub(chain(e));
    let server = format!("{}:{} ({})", s.host, s.port, s.tls.describe());
    if let Some(code) = e.status() {
        let text = std::error::Error::source(e)
            .map(|m| m.to_string())
            .unwrap_or_default();
        return SendError::Refused {
            code: u16::from(code),
            text: scrub(text),
        };
    }
    if e.is_timeout() {
        return SendError::Timeout;
    }
    if e.is_tls() || (s.tls != TlsMode::None && looks_like_tls(e, &detail)) {
        return SendError::Tls(format!(
            "TLS with the SMTP server {server} failed: {detail}; check the TLS mode in --smtp: \
             smtps:// for implicit TLS (usually port 465), smtp://...?tls=required for STARTTLS \
             (usually 587), plain smtp:// only for a local relay"
        ));
    }
    if e.is_client() || e.is_response() {
        let hint = if detail.contains("authentication mechanism") {
            "the server offers no login method lettre knows (PLAIN, LOGIN) on this connection; many \
             offer one only after STARTTLS (?tls=required)"
        } else {
            "check that the host and port in --smtp belong to a mail server and the TLS mode matches"
        };
        return SendError::Protocol(format!("SMTP with {server} failed: {detail}; {hint}"));
    }
    SendError::Connect(format!(
        "cannot talk to the SMTP server {server}: {detail}; check the host and port in --smtp and \
         that the mail server is running and reachable from this node"
    ))
}

/// A webhook POST that got no answer. reqwest's texts carry the URL, whose
/// path often holds a token; only the origin is shown.
pub(super) fn webhook_error(e: reqwest::Error, origin: &str, limit: Duration) -> SendError {
    let (timed_out, connect) = (e.is_timeout(), e.is_connect());
    let detail = chain(&e.without_url());
    let message = if timed_out {
        format!("{origin} did not answer within {}s", limit.as_secs())
    } else if connect {
        format!(
            "cannot connect to {origin}: {detail}; check the address and that the receiver runs"
        )
    } else {
        format!("posting to {origin} failed: {detail}")
    };
    SendError::Webhook {
        status: None,
        message,
    }
}

/// Whether a connection error came from TLS: lettre files handshake
/// failures under "connection error", so look at what the chain says, once
/// the TCP connect itself is known to have worked.
fn looks_like_tls(e: &smtp::Error, detail: &str) -> bool {
    use std::io::ErrorKind as K;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::AddrNotAvailable
            )
        {
            return false;
        }
        source = s.source();
    }
    let d = detail.to_ascii_lowercase();
    [
        "starttls",
        "tls",
        "certificate",
        "handshake",
        "corrupt message",
        "invalidcontenttype",
        "alert",
    ]
    .iter()
    .any(|w| d.contains(w))
}

/// An error and its sources, `: `-joined, without repeats (lettre's
/// Display already includes its source, and it nests its own errors:
/// "Connection error: Connection error: ...").
fn chain(e: &dyn std::error::Error) -> String {
    let mut full = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !full.contains(&text) {
            full.push_str(": ");
            full.push_str(&text);
        }
        source = s.source();
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in full.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_to_check() {
        let auth = SendError::Refused {
            code: 535,
            text: "5.7.8 bad credentials".to_owned(),
        }
        .to_string();
        assert!(
            auth.contains("535 5.7.8 bad credentials") && auth.contains("SWARM_SMTP_PASSWORD"),
            "{auth}"
        );
        let rcpt = SendError::Refused {
            code: 550,
            text: "no such user".to_owned(),
        }
        .to_string();
        assert!(rcpt.contains("--alert-to"), "{rcpt}");
        let later = SendError::Refused {
            code: 451,
            text: "busy".to_owned(),
        };
        assert!(later.is_transient() && later.to_string().contains("retried"));
        assert!(
            !SendError::Refused {
                code: 550,
                text: String::new()
            }
            .is_transient()
        );
        assert!(SendError::Timeout.to_string().contains("TLS mode"));
        assert!(
            SendError::Webhook {
                status: Some(503),
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !SendError::Webhook {
                status: Some(404),
                message: String::new()
            }
            .is_transient()
        );
    }

    #[test]
    fn error_chains_drop_repeats() {
        let io = std::io::Error::other("Connection error: Connection error: corrupt message");
        assert_eq!(chain(&io), "Connection error: corrupt message");
    }
}
