//! Alerts across a swarm, with a real SMTP server (aiosmtpd, run by
//! Debian's /usr/bin/python3) and a real HTTP receiver: exactly one mail per
//! alert whichever nodes could send, digests, a server that is down, a
//! sender that dies, webhooks, `swarm alert test`.
//!
//! What belongs here: alert delivery as a studio meets it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use renderswarm::ledger::JobStatus;
use renderswarm::node::views::AlertView;
use serde_json::Value;

use crate::harness::*;

const PYTHON: &str = "/usr/bin/python3";

/// A real SMTP server that records every mail it accepts.
struct Smtp {
    child: Child,
    port: u16,
    out: PathBuf,
    refuse: PathBuf,
    _dir: tempfile::TempDir,
}

impl Smtp {
    /// Start one on `port` (0: any free port); `None` (skip) when aiosmtpd
    /// is missing outside CI, a failure under `CI=true`.
    fn start(port: u16) -> Option<Smtp> {
        let ok = Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but {PYTHON} cannot import aiosmtpd (apt-get install python3-aiosmtpd)"
            );
            eprintln!("note: aiosmtpd missing; skipping an SMTP test");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        Some(Smtp::start_in(dir, port))
    }

    fn start_in(dir: tempfile::TempDir, port: u16) -> Smtp {
        let out = dir.path().join("mails.jsonl");
        let refuse = dir.path().join("refuse");
        let mut child = Command::new(PYTHON)
            .arg(repo().join("tests/support/smtp_capture.py"))
            .args(["--port", &port.to_string(), "--out"])
            .arg(&out)
            .arg("--refuse")
            .arg(&refuse)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .expect("the SMTP server says where it listens");
        Smtp {
            child,
            port,
            out,
            refuse,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn mails(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start again on the same port, keeping what arrived.
    fn restart(&mut self) {
        self.stop();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        *self = Smtp::start_in(dir, self.port);
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}

fn mail_args(smtp: &Smtp, batch: &str) -> Vec<String> {
    [
        "--smtp",
        &smtp.url(),
        "--alert-to",
        "td@studio.test",
        "--alert-from",
        "farm@studio.test",
        "--alert-batch",
        batch,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

const FAILING: &str = "bad=sh -c 'echo Error: license server down >&2; exit 3'";

fn alerts(node: &NodeProc) -> Vec<AlertView> {
    serde_json::from_value(get_json(&format!("{}/api/v1/alerts", node.api))).unwrap()
}

/// Wait until every alert of at least warning severity is delivered.
fn wait_delivered(node: &NodeProc, at_least: usize) -> Vec<AlertView> {
    wait_for("the alerts are delivered", || {
        let a: Vec<AlertView> = alerts(node)
            .into_iter()
            .filter(|a| a.severity != "info")
            .collect();
        (a.len() >= at_least && a.iter().all(|a| a.delivered)).then_some(a)
    })
    .unwrap_or_else(|| panic!("not delivered: {:#?}\n{}", alerts(node), node.log_text()))
}

/// How many mails mention each alert's message: must be exactly one.
fn assert_each_mailed_once(smtp: &Smtp, alerts: &[AlertView]) {
    let mails = smtp.mails();
    for a in alerts {
        let n = mails
            .iter()
            .filter(|m| m["body"].as_str().unwrap_or("").contains(&a.message))
            .count();
        assert_eq!(n, 1, "alert `{}` was mailed {n} times", a.message);
    }
}

#[test]
fn exactly_one_mail_per_alert_across_the_swarm_batched_into_a_digest() {
    let Some(smtp) = Smtp::start(0) else { return };
    let mail = mail_args(&smtp, "3");
    let mut with_mail: Vec<&str> = mail.iter().map(String::as_str).collect();
    with_mail.extend(["--engine-command", FAILING]);
    let a = NodeProc::start(&with_mail);
    let mut args_b = with_mail.clone();
    args_b.extend(["--peer", a.addr()]);
    let b = NodeProc::start(&args_b);
    let c = NodeProc::start(&["--engine-command", FAILING, "--peer", a.addr()]);
    a.wait_alive(3);
    let orbit = example("orbit.toml");
    let job = c.submit(&[
        orbit.to_str().unwrap(),
        "--frames",
        "1-3",
        "--engine",
        "bad",
        "--max-attempts",
        "1",
        "--name",
        "shot_010",
    ]);
    c.wait_job(&job.id, "the job fails", |j| j.status == JobStatus::Failed);
    let delivered = wait_delivered(&c, 4);
    let kinds: Vec<&str> = delivered.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "task_failed").count(),
        3,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"job_failed"));
    assert_each_mailed_once(&smtp, &delivered);
    let mails = smtp.mails();
    println!("{} alerts in {} mail(s)", delivered.len(), mails.len());
    assert!(
        mails.len() < delivered.len(),
        "a burst of failures is batched into a digest: {} mails for {} alerts",
        mails.len(),
        delivered.len()
    );
    let senders: std::collections::BTreeSet<_> =
        delivered.iter().filter_map(|a| a.sent_by.clone()).collect();
    assert!(
        senders.iter().all(|s| *s == a.id || *s == b.id),
        "only nodes with email send"
    );
    // The content: severity, job and what happened in the subject; node,
    // frames, reason, log tail and the page link in the body.
    let all: String = mails
        .iter()
        .map(|m| format!("{}\n{}\n", m["subject"], m["body"]))
        .collect();
    assert!(
        mails
            .iter()
            .any(|m| m["subject"].as_str().unwrap().contains("ERROR")),
        "{all}"
    );
    assert!(all.contains("shot_010"), "{all}");
    assert!(
        all.contains("license server down"),
        "the reason and log tail: {all}"
    );
    assert!(
        all.contains("http://127.0.0.1:"),
        "a link to the status page: {all}"
    );
    assert_eq!(mails[0]["rcpt_tos"][0], "td@studio.test");
}

#[test]
fn a_mail_server_that_was_down_gets_the_alert_once_it_is_back() {
    let Some(mut smtp) = Smtp::start(0) else {
        return;
    };
    smtp.stop();
    let mail = mail_args(&smtp, "1");
    let mut args: Vec<&str> = mail.iter().map(String::as_str).collect();
    args.extend(["--engine-command", FAILING]);
    let node = NodeProc::start(&args);
    let orbit = example("orbit.toml");
    let job = node.submit(&[
        orbit.to_str().unwrap(),
        "--frames",
        "1",
        "--engine",
        "bad",
        "--max-attempts",
        "1",
    ]);
    node.wait_job(&job.id, "the job fails", |j| j.status == JobStatus::Failed);
    wait_for("a send fails while the server is down", || {
        node.log_text()
            .contains("failed (will retry)")
            .then_some(())
    })
    .expect("the node tried and will retry");
    // The node keeps rendering meanwhile.
    let ok = node.submit(&[orbit.to_str().unwrap(), "--frames", "1"]);
    node.wait_job(&ok.id, "rendering goes on", |j| j.status == JobStatus::Done);
    smtp.restart();
    let delivered = wait_delivered(&node, 2);
    assert_each_mailed_once(&smtp, &delivered);
}

#[test]
fn when_the_node_holding_an_alert_dies_another_sends_it_once() {
    let Some(smtp) = Smtp::start(0) else { return };
    // The server refuses for now, so the winner keeps the alert pending.
    std::fs::write(&smtp.refuse, "451 4.3.0 Try again later").unwrap();
    let mail = mail_args(&smtp, "1");
    let mut args: Vec<&str> = mail.iter().map(String::as_str).collect();
    args.extend(["--engine-command", FAILING]);
    let first = NodeProc::start(&args);
    let peer = first.addr().to_string();
    let mut args_b = args.clone();
    args_b.extend(["--peer", &peer]);
    let mut nodes = [first, NodeProc::start(&args_b)];
    nodes[0].wait_alive(2);
    let orbit = example("orbit.toml");
    let job = nodes[0].submit(&[
        orbit.to_str().unwrap(),
        "--frames",
        "1",
        "--engine",
        "bad",
        "--max-attempts",
        "1",
    ]);
    nodes[0].wait_job(&job.id, "the job fails", |j| j.status == JobStatus::Failed);
    let holder = wait_for("someone holds the job_failed alert", || {
        alerts(&nodes[0])
            .into_iter()
            .find(|a| a.kind == "job_failed")
            .and_then(|a| a.claimed_by)
    })
    .unwrap();
    let (dead, alive) = if holder == nodes[0].id {
        (0, 1)
    } else {
        (1, 0)
    };
    wait_for("the holder tried and was refused", || {
        nodes[dead]
            .log_text()
            .contains("failed (will retry)")
            .then_some(())
    })
    .expect("a refused send");
    nodes[dead].kill9();
    std::fs::remove_file(&smtp.refuse).unwrap();
    let delivered = wait_delivered(&nodes[alive], 2);
    for a in &delivered {
        assert_eq!(
            a.sent_by.as_deref(),
            Some(nodes[alive].id.as_str()),
            "the survivor sent {}",
            a.kind
        );
    }
    assert_each_mailed_once(&smtp, &delivered);
}

#[test]
fn a_webhook_receives_the_alerts_as_json() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/farm", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = tx.send(read_request(&mut s));
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    let node = NodeProc::start(&[
        "--alert-webhook",
        &url,
        "--alert-batch",
        "1",
        "--engine-command",
        FAILING,
    ]);
    let orbit = example("orbit.toml");
    node.submit(&[
        orbit.to_str().unwrap(),
        "--frames",
        "1",
        "--engine",
        "bad",
        "--max-attempts",
        "1",
    ]);
    let (head, body) = rx.recv_timeout(DEADLINE).expect("the webhook is called");
    assert!(head.starts_with("POST /hooks/farm"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let alerts: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert!(
        alerts
            .iter()
            .any(|a| a["kind"] == "task_failed" && a["severity"] == "warning"),
        "{body}"
    );
}

/// One HTTP request: head, then a body of content-length bytes.
fn read_request(s: &mut std::net::TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = s.read_exact(&mut body);
    (head, String::from_utf8_lossy(&body).to_string())
}

#[test]
fn alert_test_prints_the_servers_answer() {
    let Some(smtp) = Smtp::start(0) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(swarm_bin())
        .args([
            "alert",
            "test",
            "--smtp",
            &smtp.url(),
            "--alert-to",
            "td@studio.test",
            "--alert-from",
            "farm@studio.test",
            "--data",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("250"), "{stdout}");
    assert_eq!(smtp.mails().len(), 1);
    // Settings that cannot work are refused, naming the value.
    let out = Command::new(swarm_bin())
        .args(["alert", "test", "--smtp", "ftp://x", "--data"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ftp://x"));
}
