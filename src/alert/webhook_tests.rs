//! Webhook delivery against a real HTTP receiver on loopback: a tokio
//! listener that reads one request and answers with a chosen status.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::smtp_tests::{failure, free_port, local};
use super::{Alert, AlertConfig, SendError, Sender};

/// Reads one HTTP request, answers with `status`, returns the request body.
async fn receive_one(listener: TcpListener, status: &'static str) -> (String, Vec<u8>) {
    let (mut sock, _) = listener.accept().await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the headers ended");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the body ended");
        buf.extend_from_slice(&chunk[..n]);
    }
    let reply =
        format!("HTTP/1.1 {status}\r\ncontent-length: 7\r\nconnection: close\r\n\r\nthanks!");
    sock.write_all(reply.as_bytes()).await.unwrap();
    (head, buf[head_end..head_end + len].to_vec())
}

fn webhook_config(url: &str) -> AlertConfig {
    AlertConfig::from_args(
        None,
        None,
        &[],
        None,
        "warning",
        &[],
        30,
        20,
        Some(url),
        None,
    )
    .unwrap()
}

#[tokio::test]
async fn the_webhook_receives_the_alerts_as_a_json_array() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = tokio::spawn(receive_one(listener, "200 OK"));
    let sender = Sender::new(&webhook_config(&format!(
        "http://127.0.0.1:{port}/hooks/t0ken"
    )))
    .unwrap();
    let alerts = vec![failure(1), failure(2)];
    assert_eq!(sender.send_webhook(&alerts).await.unwrap(), 200);
    let (head, body) = receiver.await.unwrap();
    assert!(head.starts_with("POST /hooks/t0ken HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let got: Vec<Alert> = serde_json::from_slice(&body).unwrap();
    assert_eq!(got, alerts);
    let raw: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(raw[0]["kind"], "task_failed");
    assert_eq!(raw[0]["severity"], "warning");
}

#[tokio::test]
async fn webhook_failures_carry_the_status_and_hide_the_path() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = tokio::spawn(receive_one(listener, "500 Internal Server Error"));
    let sender = Sender::new(&webhook_config(&format!(
        "http://127.0.0.1:{port}/hooks/s3cr3t-token"
    )))
    .unwrap();
    let err = sender.send_webhook(&[failure(1)]).await.unwrap_err();
    receiver.await.unwrap();
    assert!(
        matches!(
            &err,
            SendError::Webhook {
                status: Some(500),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("answered 500: thanks!"), "{err}");
    assert!(err.is_transient());

    let dead = free_port();
    let sender = Sender::new(&webhook_config(&format!(
        "http://127.0.0.1:{dead}/hooks/s3cr3t-token"
    )))
    .unwrap();
    let err = sender.send_webhook(&[failure(1)]).await.unwrap_err();
    assert!(
        matches!(&err, SendError::Webhook { status: None, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("cannot connect to http://127.0.0.1:{dead}")),
        "{msg}"
    );
    assert!(!msg.contains("s3cr3t"), "{msg}");
}

#[tokio::test]
async fn nothing_configured_or_nothing_to_send_is_an_error_not_a_hang() {
    let sender = Sender::new(&AlertConfig::default()).unwrap();
    assert!(matches!(
        sender.send_email(&[failure(1)]).await,
        Err(SendError::NotConfigured(_))
    ));
    assert!(matches!(
        sender.send_webhook(&[failure(1)]).await,
        Err(SendError::NotConfigured(_))
    ));
    let sender = Sender::new(&local(free_port())).unwrap();
    assert!(matches!(
        sender.send_email(&[]).await,
        Err(SendError::NoAlerts)
    ));
}
