//! Mail delivery against a real SMTP server on loopback: aiosmtpd, driven
//! by `tests/support/smtp_capture.py`, which records what arrives and can
//! be told to refuse or to require a login. Nothing here mocks SMTP: lettre
//! speaks to a real server.
//!
//! Servers are started on ports chosen by binding 127.0.0.1:0, and tests
//! wait for the server's `LISTENING` line, never for a fixed time. Without
//! Python's aiosmtpd the SMTP tests are skipped with a note, except under
//! CI=true, where they fail: CI must run them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use super::{Alert, AlertConfig, AlertKind, Batcher, SendError, Sender, compose};

const PYTHON: &str = "/usr/bin/python3";
const PW: &str = "pw-Zq8-very-secret";

/// The capture script, shared with the integration tests.
fn capture_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_capture.py")
}

/// Whether the SMTP tests can run here; under CI=true they must.
fn smtp_server_available() -> bool {
    let ok = std::process::Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {PYTHON} cannot import aiosmtpd: install python3-aiosmtpd"
        );
        eprintln!(
            "note: skipping SMTP test: {PYTHON} cannot import aiosmtpd (apt install python3-aiosmtpd)"
        );
    }
    ok
}

pub(super) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

/// A running capture server; killed when dropped.
struct Capture {
    port: u16,
    dir: tempfile::TempDir,
    _child: Child,
}

impl Capture {
    async fn start(port: u16, login: Option<(&str, &str)>) -> Capture {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new(PYTHON);
        cmd.arg(capture_script())
            .args(["--port", &port.to_string()])
            .arg("--out")
            .arg(dir.path().join("mails.jsonl"))
            .arg("--refuse")
            .arg(dir.path().join("refuse"))
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if let Some((user, pw)) = login {
            cmd.env("CAPTURE_AUTH_USER", user)
                .env("CAPTURE_AUTH_PASSWORD", pw);
        }
        let mut child = cmd.spawn().expect("start the SMTP capture server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        tokio::time::timeout(Duration::from_secs(20), reader.read_line(&mut line))
            .await
            .expect("capture server did not start in 20 s")
            .expect("read its stdout");
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("capture server said {line:?}"));
        Capture {
            port,
            dir,
            _child: child,
        }
    }

    fn mails(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.path().join("mails.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("capture JSON"))
            .collect()
    }

    fn refuse_with(&self, reply: &str) {
        std::fs::write(self.dir.path().join("refuse"), reply).expect("write refuse flag");
    }

    fn accept_again(&self) {
        std::fs::remove_file(self.dir.path().join("refuse")).expect("remove refuse flag");
    }
}

fn config(url: &str, password: Option<&str>) -> AlertConfig {
    AlertConfig::from_args(
        Some(url),
        password.map(str::to_owned),
        &[
            "ops@studio.test".to_owned(),
            "Night Shift <night@studio.test>".to_owned(),
        ],
        Some("Render Farm <farm@studio.test>"),
        "info",
        &[],
        10,
        20,
        None,
        Some("http://farm.lan:7878".to_owned()),
    )
    .expect("valid test config")
}

pub(super) fn local(port: u16) -> AlertConfig {
    config(&format!("smtp://127.0.0.1:{port}"), None)
}

pub(super) fn failure(frame: u32) -> Alert {
    Alert::new(
        AlertKind::TaskFailed,
        "render-03",
        1_700_000_000_000 + u64::from(frame),
        "Blender exited with code 1",
    )
    .with_job("shot_010", "ab12cd")
    .with_frames(vec![frame])
    .with_reason(&format!("frame {frame}: exit code 1"))
    .with_log_tail(&format!(
        "Fra:{frame} Mem:120M\nError: CUDA out of memory on frame {frame}"
    ))
}

fn text(v: &serde_json::Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_single_alert_arrives_with_its_details() {
    if !smtp_server_available() {
        return;
    }
    let server = Capture::start(0, None).await;
    let cfg = local(server.port);
    let sender = Sender::new(&cfg).unwrap();
    let alert = failure(12);
    let answer = sender
        .send_email(std::slice::from_ref(&alert))
        .await
        .unwrap();
    assert_eq!(answer.code, 250);
    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(text(m, "mail_from"), "farm@studio.test");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["ops@studio.test", "night@studio.test"])
    );
    let (subject, _) = compose(std::slice::from_ref(&alert), &cfg);
    assert_eq!(text(m, "subject"), subject);
    assert!(
        subject.contains("WARNING") && subject.contains("shot_010") && subject.contains("frame 12")
    );
    assert!(text(m, "from").contains("Render Farm"));
    let raw = text(m, "raw");
    assert!(
        raw.contains("Message-ID: <") && raw.contains("@renderswarm>"),
        "{raw}"
    );
    let body = text(m, "body");
    for want in [
        "node:    render-03",
        "frames:  12",
        "reason:  frame 12: exit code 1",
        "| Error: CUDA out of memory on frame 12",
        "http://farm.lan:7878/#job=ab12cd",
    ] {
        assert!(body.contains(want), "missing {want:?} in\n{body}");
    }
}

#[tokio::test]
async fn a_burst_of_five_failures_is_one_digest_mail() {
    if !smtp_server_available() {
        return;
    }
    let server = Capture::start(0, None).await;
    let sender = Sender::new(&local(server.port)).unwrap();
    let t0 = Instant::now();
    let mut batcher = Batcher::new(Duration::from_secs(30), 20);
    for f in 1..=5 {
        batcher.push(failure(f), t0 + Duration::from_secs(u64::from(f)));
    }
    assert!(batcher.due(t0 + Duration::from_secs(30)).is_none());
    // The window runs from the first alert, at 1 s.
    let batch = batcher
        .due(t0 + Duration::from_secs(31))
        .expect("due after the window");
    sender.send_email(&batch).await.unwrap();
    batcher.sent(t0 + Duration::from_secs(31));
    let mails = server.mails();
    assert_eq!(mails.len(), 1, "one digest, not five mails");
    assert!(
        text(&mails[0], "subject")
            .starts_with("[renderswarm WARNING] 5 alerts: 5 task failed (job shot_010)")
    );
    let body = text(&mails[0], "body");
    for f in 1..=5 {
        assert!(
            body.contains(&format!("CUDA out of memory on frame {f}")),
            "frame {f} missing:\n{body}"
        );
    }
}

#[tokio::test]
async fn the_rate_limit_holds_alerts_and_merges_them_into_the_next_digest() {
    if !smtp_server_available() {
        return;
    }
    let server = Capture::start(0, None).await;
    let sender = Sender::new(&local(server.port)).unwrap();
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    let mut batcher = Batcher::new(10 * s, 1);
    batcher.push(failure(1), t0);
    let first = batcher.due(t0 + 10 * s).unwrap();
    sender.send_email(&first).await.unwrap();
    batcher.sent(t0 + 10 * s);
    for (f, at) in [(2, 60), (3, 600), (4, 3000)] {
        batcher.push(failure(f), t0 + at * s);
        assert!(
            batcher.due(t0 + (at + 10) * s).is_none(),
            "frame {f} must wait for the budget"
        );
    }
    assert_eq!(server.mails().len(), 1);
    let wake = batcher.next_wakeup(t0 + 3010 * s).unwrap();
    assert_eq!(
        wake,
        t0 + 3610 * s,
        "the budget frees an hour after the first mail"
    );
    let held = batcher.due(wake).unwrap();
    sender.send_email(&held).await.unwrap();
    batcher.sent(wake);
    let mails = server.mails();
    assert_eq!(mails.len(), 2);
    assert!(text(&mails[1], "subject").contains("3 alerts: 3 task failed"));
    let body = text(&mails[1], "body");
    for f in 2..=4 {
        assert!(
            body.contains(&format!("frames:  {f}\n")),
            "frame {f} missing:\n{body}"
        );
    }
}

#[tokio::test]
async fn a_dead_server_fails_fast_and_a_retry_succeeds_once_it_is_up() {
    if !smtp_server_available() {
        return;
    }
    let port = free_port();
    let sender = Sender::new(&local(port)).unwrap();
    let mut batcher = Batcher::new(Duration::ZERO, 20);
    let t0 = Instant::now();
    batcher.push(failure(7), t0);
    let batch = batcher.due(t0).unwrap();
    let started = Instant::now();
    let err = sender.send_email(&batch).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a refused connection took {took:?}"
    );
    let SendError::Connect(msg) = &err else {
        panic!("expected Connect, got {err:?}")
    };
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("check the host and port"),
        "{msg}"
    );
    assert!(err.is_transient());
    batcher.failed(batch, t0);
    assert!(
        batcher.due(t0 + Duration::from_secs(4)).is_none(),
        "backoff holds the retry"
    );

    let server = Capture::start(port, None).await;
    let retry = batcher
        .due(t0 + Duration::from_secs(5))
        .expect("due after the first backoff step");
    sender.send_email(&retry).await.unwrap();
    batcher.sent(t0 + Duration::from_secs(5));
    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    assert!(text(&mails[0], "body").contains("frame 7: exit code 1"));
}

#[tokio::test]
async fn a_temporary_refusal_is_reported_with_its_code() {
    if !smtp_server_available() {
        return;
    }
    let server = Capture::start(0, None).await;
    let sender = Sender::new(&local(server.port)).unwrap();
    server.refuse_with("451 4.3.0 Mailbox busy, try later");
    let err = sender.send_email(&[failure(1)]).await.unwrap_err();
    match &err {
        SendError::Refused { code, text } => {
            assert_eq!(*code, 451);
            assert!(text.contains("Mailbox busy, try later"), "{text}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert!(err.is_transient() && err.to_string().contains("451"));
    server.refuse_with("550 5.1.1 No such user here");
    let err = sender.send_email(&[failure(1)]).await.unwrap_err();
    assert!(
        matches!(err, SendError::Refused { code: 550, .. }),
        "{err:?}"
    );
    assert!(!err.is_transient() && err.to_string().contains("--alert-to"));
    server.accept_again();
    sender.send_email(&[failure(1)]).await.unwrap();
    assert_eq!(server.mails().len(), 1);
}

#[tokio::test]
async fn the_test_mail_returns_the_servers_answer() {
    if !smtp_server_available() {
        return;
    }
    let server = Capture::start(0, None).await;
    let sender = Sender::new(&local(server.port)).unwrap();
    let answer = sender.send_test("render-01").await.unwrap();
    assert_eq!(answer.code, 250);
    assert_eq!(answer.text, "2.0.0 Ok: captured as 1");
    assert_eq!(answer.to_string(), "250 2.0.0 Ok: captured as 1");
    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        text(&mails[0], "subject"),
        "[renderswarm] test mail from node render-01"
    );
    let body = text(&mails[0], "body");
    assert!(
        body.contains(&format!("server:   smtp://127.0.0.1:{}", server.port)),
        "{body}"
    );
    assert!(body.contains("level:    info and above"), "{body}");
}

#[tokio::test]
async fn the_login_uses_the_password_and_no_message_shows_it() {
    if !smtp_server_available() {
        return;
    }
    let server = Capture::start(0, Some(("farm", PW))).await;
    let url = format!("smtp://farm@127.0.0.1:{}", server.port);
    let cfg = config(&url, Some(PW));
    let sender = Sender::new(&cfg).unwrap();
    sender
        .send_email(&[failure(1)])
        .await
        .expect("login with the right password");
    assert_eq!(server.mails().len(), 1);

    let wrong = format!("{PW}-wrong");
    let bad = Sender::new(&config(&url, Some(&wrong))).unwrap();
    let err = bad.send_email(&[failure(2)]).await.unwrap_err();
    assert!(
        matches!(err, SendError::Refused { code: 535, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("SWARM_SMTP_PASSWORD"), "{err}");

    let dead = Sender::new(&config(
        &format!("smtp://farm@127.0.0.1:{}", free_port()),
        Some(PW),
    ))
    .unwrap();
    let down = dead.send_email(&[failure(3)]).await.unwrap_err();
    for shown in [
        format!("{cfg:?}"),
        format!("{sender:?}"),
        format!("{}", cfg.smtp.as_ref().unwrap()),
        format!("{err} {err:?}"),
        format!("{down} {down:?}"),
    ] {
        assert!(!shown.contains(PW), "password shown in: {shown}");
    }
    assert_eq!(server.mails().len(), 1);
}

#[tokio::test]
async fn a_wrong_tls_mode_is_named_in_the_error() {
    if !smtp_server_available() {
        return;
    }
    let server = Capture::start(0, None).await;
    let starttls = Sender::new(&config(
        &format!("smtp://127.0.0.1:{}?tls=required", server.port),
        None,
    ))
    .unwrap();
    let err = starttls.send_email(&[failure(1)]).await.unwrap_err();
    let SendError::Tls(msg) = &err else {
        panic!("expected Tls, got {err:?}")
    };
    assert!(
        msg.contains("STARTTLS") && msg.contains("smtps://"),
        "{msg}"
    );

    let implicit =
        Sender::new(&config(&format!("smtps://127.0.0.1:{}", server.port), None)).unwrap();
    let err = implicit.send_email(&[failure(1)]).await.unwrap_err();
    let SendError::Tls(msg) = &err else {
        panic!("expected Tls, got {err:?}")
    };
    assert!(
        msg.contains("implicit TLS") && msg.contains("check the TLS mode"),
        "{msg}"
    );
    assert!(server.mails().is_empty());
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and say nothing: no SMTP greeting ever comes.
    let hold = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
        drop(sock);
    });
    let cfg = local(port);
    // lettre bounds only the TCP connect; the whole-send limit catches this.
    let sender =
        Sender::with_timeouts(&cfg, Duration::from_millis(300), Duration::from_millis(800))
            .unwrap();
    let started = Instant::now();
    let err = sender.send_email(&[failure(1)]).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, SendError::Timeout), "{err:?}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "{took:?}"
    );
    hold.abort();
}
