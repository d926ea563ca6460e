//! Tests of the network layer under faults: wrong swarm keys, partitions,
//! cut cables (a proxy that stops forwarding without closing anything), and
//! a node too slow to read its events.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::tests::{
    SYNC, TOPIC, config, connected, disconnected, message, next, pair, spawn, subscribed,
};
use super::*;

/// Waits for `n` `DialFailed` events, failing if a `Connected` comes first;
/// returns their errors.
async fn dial_failures_without_connecting(node: &mut tests::Node, n: usize) -> Vec<String> {
    let mut errors = Vec::new();
    for i in 0..n {
        let error = next(&mut node.events, "DialFailed", |e| match e {
            Event::DialFailed { error, .. } => Some(error),
            Event::Connected(p) => panic!("connected to {p} after {i} dial failures"),
            _ => None,
        })
        .await;
        errors.push(error);
    }
    errors
}

#[tokio::test]
async fn only_nodes_with_the_same_swarm_key_connect() {
    let key = [7u8; 32];
    let mut cfg_a = config();
    cfg_a.psk = Some(key);
    let mut cfg_b = config();
    cfg_b.psk = Some(key);
    let (mut a, b) = pair(cfg_a, cfg_b).await;
    b.client
        .publish(TOPIC, b"private".to_vec())
        .await
        .expect("publish");
    let (source, _, data, _) = message(&mut a).await;
    assert_eq!((source, data.as_slice()), (Some(b.id), &b"private"[..]));

    let mut wrong_key = config();
    wrong_key.psk = Some([8u8; 32]);
    wrong_key.peers = vec![a.addr.clone()];
    let mut wrong = spawn(wrong_key).await;
    let mut no_key = config();
    no_key.peers = vec![a.addr.clone()];
    let mut open = spawn(no_key).await;
    // Each dial fails in the Noise handshake (the prologues differ, so the
    // second message does not authenticate); neither side ever reports the
    // other as connected.
    for node in [&mut wrong, &mut open] {
        let errors = dial_failures_without_connecting(node, 1).await;
        assert!(
            errors[0].contains("swarm keys differ"),
            "the error does not say why: {}",
            errors[0]
        );
    }
    while let Ok(event) = a.events.try_recv() {
        assert!(
            !matches!(event, Event::Connected(_)),
            "a accepted an outsider: {event:?}"
        );
    }
    assert_eq!(a.client.connected_peers().await, vec![b.id]);
    drop(b);
}

#[tokio::test]
async fn blocking_partitions_and_clearing_heals() {
    let (mut a, mut b) = pair(config(), config()).await;
    a.client.set_blocked(vec![b.id]).await;
    disconnected(&mut a, b.id).await;
    disconnected(&mut b, a.id).await;
    // b keeps re-dialling; a refuses each right after the handshake, so b
    // sees short-lived connections while a sees none.
    for _ in 0..2 {
        disconnected(&mut b, a.id).await;
    }
    while let Ok(event) = a.events.try_recv() {
        assert!(
            !matches!(event, Event::Connected(_)),
            "blocked peer got in: {event:?}"
        );
    }
    assert!(a.client.connected_peers().await.is_empty());

    a.client.set_blocked(Vec::new()).await;
    connected(&mut a, b.id).await;
    subscribed(&mut a, b.id).await;
}

/// A TCP relay that can be frozen: it stops moving bytes but keeps every
/// socket open, like a cut cable. New connections are held frozen too.
struct Relay {
    addr: std::net::SocketAddr,
    gate: Arc<Mutex<CancellationToken>>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let gate = Arc::new(Mutex::new(CancellationToken::new()));
        let accept_gate = gate.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let frozen = accept_gate.lock().expect("gate lock").clone();
                tokio::spawn(relay(inbound, target, frozen));
            }
        });
        Self { addr, gate }
    }

    fn freeze(&self) {
        self.gate.lock().expect("gate lock").cancel();
    }

    fn thaw(&self) {
        *self.gate.lock().expect("gate lock") = CancellationToken::new();
    }
}

async fn relay(inbound: TcpStream, target: std::net::SocketAddr, frozen: CancellationToken) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let (mut ri, mut wi) = inbound.into_split();
    let (mut ro, mut wo) = outbound.into_split();
    let pump = async {
        tokio::select! {
            _ = copy(&mut ri, &mut wo) => {},
            _ = copy(&mut ro, &mut wi) => {},
        }
    };
    tokio::select! {
        _ = pump => {}
        // Cut: keep all four halves alive and silent.
        _ = frozen.cancelled() => std::future::pending::<()>().await,
    }
}

async fn copy(from: &mut tokio::net::tcp::OwnedReadHalf, to: &mut tokio::net::tcp::OwnedWriteHalf) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

fn socket_addr(addr: &Multiaddr) -> std::net::SocketAddr {
    use libp2p::multiaddr::Protocol;
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(a),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    std::net::SocketAddr::from((ip.expect("ip4 address"), port.expect("tcp port")))
}

#[tokio::test]
async fn a_silent_connection_is_closed_by_ping_and_redialled() {
    let interval = Duration::from_millis(300);
    let mut cfg_a = config();
    cfg_a.ping_interval = interval;
    let mut a = spawn(cfg_a).await;
    let relay = Relay::start(socket_addr(&a.addr)).await;
    let mut cfg_b = config();
    cfg_b.ping_interval = interval;
    cfg_b.peers = vec![
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", relay.addr.port(), a.id)
            .parse()
            .expect("valid multiaddr"),
    ];
    let mut b = spawn(cfg_b).await;
    connected(&mut a, b.id).await;
    connected(&mut b, a.id).await;

    relay.freeze();
    let cut = Instant::now();
    disconnected(&mut b, a.id).await;
    disconnected(&mut a, b.id).await;
    let noticed = cut.elapsed();
    // Three silent intervals plus a watchdog tick, with room for a slow machine;
    // without the watchdog this would take minutes.
    assert!(
        noticed < interval * 20,
        "took {noticed:?} to notice the cut"
    );

    relay.thaw();
    connected(&mut b, a.id).await;
    connected(&mut a, b.id).await;
}

/// B holds on to a dead connection (its watchdog is slower) while A, whose
/// watchdog closed it, dials again: gossipsub on B sends no subscriptions on
/// a second connection, so A never learns them and would never publish to B
/// again. The subscription check must notice and reconnect.
#[tokio::test]
async fn a_peer_reconnected_without_its_subscriptions_gets_them_again() {
    let mut cfg_b = config();
    cfg_b.ping_interval = Duration::from_secs(2);
    let mut b = spawn(cfg_b).await;
    let relay = Relay::start(socket_addr(&b.addr)).await;
    let mut cfg_a = config();
    cfg_a.ping_interval = Duration::from_millis(300);
    cfg_a.peers = vec![
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", relay.addr.port(), b.id)
            .parse()
            .expect("valid multiaddr"),
    ];
    let mut a = spawn(cfg_a).await;
    subscribed(&mut a, b.id).await;
    subscribed(&mut b, a.id).await;

    relay.freeze();
    disconnected(&mut a, b.id).await;
    relay.thaw();
    connected(&mut a, b.id).await;
    // B still holds the frozen connection for a few seconds more.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    let heard = loop {
        assert!(
            Instant::now() < deadline,
            "B never heard A again after the reconnection"
        );
        let _ = a.client.publish(TOPIC, b"after the cut".to_vec()).await;
        let wait = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(wait);
        let got = loop {
            tokio::select! {
                _ = &mut wait => break false,
                e = b.events.recv() => match e {
                    Some(Event::Message { data, .. }) if data == b"after the cut" => break true,
                    Some(_) => {}
                    None => panic!("B's events ended"),
                },
            }
        };
        if got {
            break started.elapsed();
        }
    };
    eprintln!("B heard A {heard:?} after the reconnection");
}

#[tokio::test]
async fn a_node_that_does_not_read_loses_gossip_and_requests_not_the_swarm() {
    const SENT: usize = 2000;
    let (mut a, b) = pair(config(), config()).await;
    // a's node stops reading; b floods it.
    for i in 0..SENT {
        let data = u32::try_from(i).expect("small").to_be_bytes().to_vec();
        b.client.publish(TOPIC, data).await.expect("publish");
    }
    // The request cannot be delivered to a's full channel, so it fails fast
    // (its response channel is dropped) instead of waiting for the timeout.
    let started = Instant::now();
    let err = b.client.request(a.id, SYNC.name, b"hi".to_vec()).await;
    assert!(matches!(err, Err(NetError::Request { .. })), "{err:?}");
    assert!(started.elapsed() < SYNC.timeout, "dropped, not timed out");

    let stats = a.client.stats().snapshot();
    assert_eq!(stats.requests_dropped, 1, "{stats:?}");
    assert!(stats.gossip_dropped > 0, "{stats:?}");
    let mut delivered = 0;
    while let Ok(event) = a.events.try_recv() {
        if let Event::Message { handle, .. } = event {
            delivered += 1;
            a.client.report(handle, Verdict::Accept);
        }
    }
    let stats = a.client.stats().snapshot();
    assert_eq!(
        stats.gossip_in,
        delivered + stats.gossip_dropped,
        "{stats:?}"
    );
    // The swarm itself is fine: the connection is still up.
    assert_eq!(a.client.connected_peers().await, vec![b.id]);
}
