//! The I/O side: one mail through lettre's pooled async SMTP transport, one
//! POST to the webhook, one test mail for `swarm alert test`.
//!
//! Every call is bounded: connecting 10 s, a whole send 30 s. (lettre's
//! async transport applies its `timeout` to the TCP connect only, not to
//! each command, so a server that accepts and then stalls is caught by the
//! whole-send limit alone.) A dead or hung mail server therefore costs a
//! caller at most half a minute and never blocks rendering. A
//! failure is returned, not retried here: the caller owns the retry loop
//! and takes its backoff from `Batcher::failed`. Errors say what to check:
//! host and port for a connection failure, the TLS mode for a handshake
//! failure, the credentials for a refused login. The password is scrubbed
//! from every error text, and the webhook URL (whose path often carries a
//! token) is shown as its origin only.

use std::fmt;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::config::{AlertConfig, AlertConfigError};
use super::send_error::{SendError, smtp_error, webhook_error};
use super::smtp_url::{SmtpSettings, TlsMode};
use super::{Alert, compose};

/// Limit on the TCP connect (lettre's `timeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit on one whole send (connect, login, mail, answer).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest piece of a webhook's error answer kept in a message.
const WEBHOOK_BODY_SHOWN: usize = 300;

/// The SMTP server's final answer to a mail, e.g. `250 2.0.0 Ok: queued`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpAnswer {
    pub code: u16,
    pub text: String,
}

impl fmt::Display for SmtpAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Sends alerts as configured: holds the pooled SMTP transport and the HTTP
/// client. Create it inside a tokio runtime (lettre's pool runs a task).
pub struct Sender {
    cfg: AlertConfig,
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
    http: reqwest::Client,
    send_timeout: Duration,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Sender {
    pub fn new(cfg: &AlertConfig) -> Result<Sender, AlertConfigError> {
        Sender::with_timeouts(cfg, CONNECT_TIMEOUT, SEND_TIMEOUT)
    }

    /// As [`Sender::new`], with other limits (tests use short ones).
    pub fn with_timeouts(
        cfg: &AlertConfig,
        connect: Duration,
        send: Duration,
    ) -> Result<Sender, AlertConfigError> {
        let smtp = match &cfg.smtp {
            Some(s) => {
                tokio::runtime::Handle::try_current().map_err(|_| AlertConfigError::NoRuntime)?;
                Some(transport(s, connect)?)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(connect)
            .timeout(send)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("renderswarm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AlertConfigError::HttpClient(e.to_string()))?;
        Ok(Sender {
            cfg: cfg.clone(),
            smtp,
            http,
            send_timeout: send,
        })
    }

    pub fn config(&self) -> &AlertConfig {
        &self.cfg
    }

    /// Send one mail about `alerts`: the alert itself, or a digest.
    pub async fn send_email(&self, alerts: &[Alert]) -> Result<SmtpAnswer, SendError> {
        if alerts.is_empty() {
            return Err(SendError::NoAlerts);
        }
        let (subject, body) = compose(alerts, &self.cfg);
        let answer = self
            .send_mail(subject, body, Some(message_id(alerts)))
            .await?;
        tracing::info!(alerts = alerts.len(), answer = %answer, "alert mail sent");
        Ok(answer)
    }

    /// Send a test mail with this node's settings; returns the server's
    /// answer for `swarm alert test` to print.
    pub async fn send_test(&self, node_name: &str) -> Result<SmtpAnswer, SendError> {
        let subject = format!("[renderswarm] test mail from node {node_name}");
        self.send_mail(subject, self.test_body(node_name), None)
            .await
    }

    /// POST `alerts` as a JSON array; returns the HTTP status.
    pub async fn send_webhook(&self, alerts: &[Alert]) -> Result<u16, SendError> {
        let url = self
            .cfg
            .webhook
            .as_ref()
            .ok_or(SendError::NotConfigured("--alert-webhook"))?;
        if alerts.is_empty() {
            return Err(SendError::NoAlerts);
        }
        let origin = url.origin().ascii_serialization();
        let resp = self
            .http
            .post(url.clone())
            .json(alerts)
            .send()
            .await
            .map_err(|e| webhook_error(e, &origin, self.send_timeout))?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            tracing::info!(alerts = alerts.len(), status, webhook = %origin, "alerts posted");
            return Ok(status);
        }
        let body = resp.text().await.unwrap_or_default();
        let shown: String = body.chars().take(WEBHOOK_BODY_SHOWN).collect();
        Err(SendError::Webhook {
            status: Some(status),
            message: format!("{origin} answered {status}: {}", shown.trim()),
        })
    }

    async fn send_mail(
        &self,
        subject: String,
        body: String,
        message_id: Option<String>,
    ) -> Result<SmtpAnswer, SendError> {
        let (Some(transport), Some(settings)) = (&self.smtp, &self.cfg.smtp) else {
            return Err(SendError::NotConfigured("alert email (--smtp)"));
        };
        let from = self
            .cfg
            .from
            .clone()
            .ok_or(SendError::NotConfigured("--alert-from"))?;
        if self.cfg.to.is_empty() {
            return Err(SendError::NotConfigured("--alert-to"));
        }
        let mut builder = Message::builder()
            .from(from)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .message_id(message_id);
        for to in &self.cfg.to {
            builder = builder.to(to.clone());
        }
        let message = builder
            .body(body)
            .map_err(|e| SendError::Message(e.to_string()))?;
        let result = tokio::time::timeout(self.send_timeout, transport.send(message)).await;
        match result {
            Err(_) => Err(SendError::Timeout),
            Ok(Err(e)) => {
                let err = smtp_error(&e, settings);
                tracing::debug!(server = %settings, error = %err, "alert mail not sent");
                Err(err)
            }
            Ok(Ok(resp)) => Ok(SmtpAnswer {
                code: u16::from(resp.code()),
                text: resp.message().collect::<Vec<_>>().join("\n"),
            }),
        }
    }

    fn test_body(&self, node_name: &str) -> String {
        let c = &self.cfg;
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(", ")
            }
        };
        let kinds = c.kinds.as_ref().map_or("all".to_owned(), |k| {
            list(k.iter().map(|k| k.to_string()).collect())
        });
        let server = c.smtp.as_ref().map_or("-".to_owned(), |s| s.to_string());
        let webhook = c
            .webhook
            .as_ref()
            .map_or("-".to_owned(), |u| u.origin().ascii_serialization());
        format!(
            "This is a test of the alert mail settings of renderswarm node {node_name}.\n\
             If you can read it, alerts from this node will reach you.\n\n\
             \x20 server:   {server}\n\
             \x20 from:     {}\n\
             \x20 to:       {}\n\
             \x20 level:    {} and above\n\
             \x20 kinds:    {kinds}\n\
             \x20 batching: {} s window, at most {} mails per hour\n\
             \x20 webhook:  {webhook}\n\
             \x20 page:     {}\n",
            c.from.as_ref().map_or("-".to_owned(), |f| f.to_string()),
            list(c.to.iter().map(|t| t.to_string()).collect()),
            c.level,
            c.batch_window.as_secs(),
            c.max_mails_per_hour,
            c.page_url.as_deref().unwrap_or("-"),
        )
    }
}

/// `<hash of the alert ids@renderswarm>`: a batch re-sent after an
/// ambiguous failure (the server took it, the answer was lost) carries the
/// same Message-ID, so mail systems can drop the duplicate.
fn message_id(alerts: &[Alert]) -> String {
    let mut ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    ids.sort_unstable();
    let hash = blake3::hash(ids.join(",").as_bytes());
    format!("<{}@renderswarm>", hex::encode(&hash.as_bytes()[..16]))
}

/// lettre's pooled transport for these settings, with the connect limit.
fn transport(
    s: &SmtpSettings,
    connect: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, AlertConfigError> {
    let params = || {
        TlsParameters::new(s.host.clone()).map_err(|e| AlertConfigError::Tls {
            host: s.host.clone(),
            why: e.to_string(),
        })
    };
    let tls = match s.tls {
        TlsMode::None => Tls::None,
        TlsMode::Opportunistic => Tls::Opportunistic(params()?),
        TlsMode::Required => Tls::Required(params()?),
        TlsMode::Wrapper => Tls::Wrapper(params()?),
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
        .port(s.port)
        .tls(tls)
        .timeout(Some(connect))
        .pool_config(
            PoolConfig::new()
                .max_size(2)
                .idle_timeout(Duration::from_secs(60)),
        );
    if let (Some(user), Some(pw)) = (&s.user, &s.password) {
        b = b.credentials(Credentials::new(user.clone(), pw.expose().to_owned()));
    }
    if let Some(name) = &s.hello_name {
        b = b.hello_name(ClientId::Domain(name.clone()));
    }
    Ok(b.build())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_follow_the_alerts_not_their_order() {
        use super::super::AlertKind;
        let a = Alert::new(AlertKind::TaskFailed, "n", 1, "a");
        let b = Alert::new(AlertKind::TaskFailed, "n", 2, "b");
        let ab = message_id(&[a.clone(), b.clone()]);
        assert_eq!(ab, message_id(&[b, a.clone()]));
        assert_ne!(ab, message_id(&[a]));
        assert!(
            ab.starts_with('<') && ab.ends_with("@renderswarm>") && ab.len() == 46,
            "{ab}"
        );
    }

    #[test]
    fn a_sender_needs_a_runtime_only_for_mail() {
        let mut cfg = AlertConfig::default();
        assert!(
            Sender::new(&cfg).is_ok(),
            "webhook-only senders need no runtime"
        );
        cfg.smtp = Some(SmtpSettings::parse("smtp://127.0.0.1:25", None).unwrap());
        assert!(matches!(
            Sender::new(&cfg),
            Err(AlertConfigError::NoRuntime)
        ));
    }
}
