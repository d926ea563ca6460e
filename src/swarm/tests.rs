//! End-to-end tests of the network layer: real swarms on 127.0.0.1, ports
//! chosen by the OS, every wait bounded and driven by events.
//!
//! The helpers here are shared with `tests_faults` and `tests_bench`.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;

/// Generous: the test machines are small and shared.
pub(super) const WAIT: Duration = Duration::from_secs(30);

pub(super) const TOPIC: &str = "renderswarm/test/v1";

pub(super) const SYNC: ProtocolSpec = ProtocolSpec {
    name: "/renderswarm/sync/1",
    max_request: 64 * 1024,
    max_response: 64 * 1024,
    timeout: Duration::from_secs(10),
};

/// One running node and its event stream.
pub(super) struct Node {
    pub(super) client: Client,
    pub(super) events: mpsc::Receiver<Event>,
    pub(super) id: PeerId,
    /// Its listen address, with `/p2p/<id>`.
    pub(super) addr: Multiaddr,
    pub(super) stop: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A config listening on 127.0.0.1 with one topic and the sync protocol.
pub(super) fn config() -> SwarmConfig {
    let mut cfg = SwarmConfig::new(Keypair::generate_ed25519());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
    cfg.topics = vec![TOPIC.to_owned()];
    cfg.protocols = vec![SYNC];
    cfg
}

/// Logs to the test's output when `RUST_LOG` is set (e.g. `renderswarm=debug`).
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Starts a node and waits until it listens.
pub(super) async fn spawn(cfg: SwarmConfig) -> Node {
    init_tracing();
    let stop = CancellationToken::new();
    let (client, mut events) = start(cfg, stop.clone()).expect("swarm starts");
    let id = client.local_peer_id();
    let listening = next(&mut events, "Listening", |e| match e {
        Event::Listening(a) => Some(a),
        _ => None,
    })
    .await;
    let addr = listening.with(libp2p::multiaddr::Protocol::P2p(id));
    Node {
        client,
        events,
        id,
        addr,
        stop,
    }
}

/// Waits for the first event `pick` accepts; fails the test after [`WAIT`].
pub(super) async fn next<T>(
    events: &mut mpsc::Receiver<Event>,
    what: &str,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => {
                if let Some(found) = pick(event) {
                    return found;
                }
            }
            Ok(None) => panic!("event channel closed while waiting for {what}"),
            Err(_) => panic!("no {what} within {WAIT:?}"),
        }
    }
}

pub(super) async fn connected(node: &mut Node, peer: PeerId) {
    next(&mut node.events, "Connected", |e| {
        matches!(e, Event::Connected(p) if p == peer).then_some(())
    })
    .await
}

pub(super) async fn disconnected(node: &mut Node, peer: PeerId) {
    next(&mut node.events, "Disconnected", |e| {
        matches!(e, Event::Disconnected(p) if p == peer).then_some(())
    })
    .await
}

pub(super) async fn subscribed(node: &mut Node, peer: PeerId) {
    next(&mut node.events, "Subscribed", |e| {
        matches!(&e, Event::Subscribed { peer: p, topic } if *p == peer && topic == TOPIC)
            .then_some(())
    })
    .await
}

/// The next gossip message: (author, forwarder, data, handle).
pub(super) async fn message(node: &mut Node) -> (Option<PeerId>, PeerId, Vec<u8>, MessageHandle) {
    next(&mut node.events, "gossip Message", |e| match e {
        Event::Message {
            source,
            from,
            topic,
            data,
            handle,
        } if topic == TOPIC => Some((source, from, data, handle)),
        _ => None,
    })
    .await
}

/// Starts `a` and a `b` that dials it, and waits until each has the other's
/// subscription.
pub(super) async fn pair(cfg_a: SwarmConfig, mut cfg_b: SwarmConfig) -> (Node, Node) {
    let mut a = spawn(cfg_a).await;
    cfg_b.peers = vec![a.addr.clone()];
    let mut b = spawn(cfg_b).await;
    subscribed(&mut a, b.id).await;
    subscribed(&mut b, a.id).await;
    (a, b)
}

#[tokio::test]
async fn two_nodes_connect_gossip_and_answer_requests() {
    let mut a = spawn(config()).await;
    let mut cfg_b = config();
    // Without /p2p/: the peer id is learned on first contact.
    let bare: Multiaddr = a
        .addr
        .iter()
        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        .collect();
    cfg_b.peers = vec![bare];
    let mut b = spawn(cfg_b).await;
    connected(&mut a, b.id).await;
    connected(&mut b, a.id).await;
    subscribed(&mut a, b.id).await;
    subscribed(&mut b, a.id).await;

    b.client
        .publish(TOPIC, b"hello".to_vec())
        .await
        .expect("publish");
    let (source, from, data, handle) = message(&mut a).await;
    assert_eq!(source, Some(b.id), "signed author");
    assert_eq!(from, b.id);
    assert_eq!(data, b"hello");
    a.client.report(handle, Verdict::Accept);

    let ask = a.client.request(b.id, SYNC.name, b"digest?".to_vec());
    let answer = async {
        let (from, data, channel) = next(&mut b.events, "Request", |e| match e {
            Event::Request {
                from,
                protocol,
                data,
                channel,
            } if protocol == SYNC.name => Some((from, data, channel)),
            _ => None,
        })
        .await;
        assert_eq!(from, a.id);
        assert_eq!(data, b"digest?");
        b.client.respond(channel, b"digest!".to_vec());
    };
    let (response, ()) = tokio::join!(ask, answer);
    assert_eq!(response.expect("response"), b"digest!");

    assert_eq!(a.client.connected_peers().await, vec![b.id]);
    assert!(!a.client.listen_addrs().await.is_empty());
    let (sa, sb) = (a.client.stats().snapshot(), b.client.stats().snapshot());
    assert!(sa.bytes_in > 0 && sa.bytes_out > 0, "{sa:?}");
    assert!(sb.bytes_in > 0 && sb.bytes_out > 0, "{sb:?}");
    assert_eq!((sb.gossip_out, sa.gossip_in), (1, 1));
    assert_eq!((sa.requests_out, sb.requests_in), (1, 1));
    assert_eq!(sa.connections, 1);
}

#[tokio::test]
async fn byte_counters_grow_with_traffic() {
    let (a, mut b) = pair(config(), config()).await;
    let before = (a.client.stats().snapshot(), b.client.stats().snapshot());
    a.client
        .publish(TOPIC, vec![42; 10_000])
        .await
        .expect("publish");
    let (_, _, data, _) = message(&mut b).await;
    assert_eq!(data.len(), 10_000);
    let after = (a.client.stats().snapshot(), b.client.stats().snapshot());
    assert!(
        after.0.bytes_out >= before.0.bytes_out + 10_000,
        "{after:?}"
    );
    assert!(after.1.bytes_in >= before.1.bytes_in + 10_000, "{after:?}");
}

#[tokio::test]
async fn publishing_with_nobody_subscribed_is_ok_and_counted() {
    let lonely = spawn(config()).await;
    lonely
        .client
        .publish(TOPIC, b"anyone?".to_vec())
        .await
        .expect("not an error");
    let stats = lonely.client.stats().snapshot();
    assert_eq!((stats.gossip_unsent, stats.gossip_out), (1, 0));
    let too_big = vec![0; lonely_limit() + 1];
    let err = lonely
        .client
        .publish(TOPIC, too_big)
        .await
        .expect_err("over max_gossip_bytes");
    assert!(matches!(err, NetError::TooLarge { .. }), "{err}");
}

fn lonely_limit() -> usize {
    config().max_gossip_bytes
}

#[tokio::test]
async fn a_message_crosses_a_three_node_line() {
    // a <-> b <-> c; a and c never connect, so b must forward.
    let mut a = spawn(config()).await;
    let mut cfg_b = config();
    cfg_b.peers = vec![a.addr.clone()];
    let mut b = spawn(cfg_b).await;
    let mut cfg_c = config();
    cfg_c.peers = vec![b.addr.clone()];
    let mut c = spawn(cfg_c).await;
    subscribed(&mut a, b.id).await;
    subscribed(&mut c, b.id).await;
    // b must see both subscriptions before a publishes.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let peer = next(&mut b.events, "Subscribed at b", |e| match e {
            Event::Subscribed { peer, .. } => Some(peer),
            _ => None,
        })
        .await;
        if !seen.contains(&peer) {
            seen.push(peer);
        }
    }

    a.client
        .publish(TOPIC, b"from a".to_vec())
        .await
        .expect("publish");
    let (source, from, _, handle) = message(&mut b).await;
    assert_eq!((source, from), (Some(a.id), a.id));
    b.client.report(handle, Verdict::Accept); // only accepted messages are forwarded
    let (source, from, data, _) = message(&mut c).await;
    assert_eq!(source, Some(a.id), "author is a");
    assert_eq!(from, b.id, "forwarded by b");
    assert_eq!(data, b"from a");
    assert!(!c.client.connected_peers().await.contains(&a.id));
}

#[tokio::test]
async fn oversized_requests_and_responses_fail() {
    const LIMITS: &str = "/renderswarm/limits/1";
    let spec = |max_request, max_response| ProtocolSpec {
        name: LIMITS,
        max_request,
        max_response,
        timeout: Duration::from_secs(10),
    };
    let mut cfg_a = config();
    cfg_a.protocols = vec![spec(1 << 20, 1024)];
    let mut cfg_b = config();
    cfg_b.protocols = vec![spec(1024, 1 << 20)];
    let (a, mut b) = pair(cfg_a, cfg_b).await;

    // Over our own limit: refused before anything is sent.
    let err = a.client.request(b.id, LIMITS, vec![0; (1 << 20) + 1]).await;
    assert!(matches!(err, Err(NetError::TooLarge { .. })), "{err:?}");

    // Within ours, over b's: b's codec refuses it; b's node never sees it.
    let err = a.client.request(b.id, LIMITS, vec![1; 10_000]).await;
    assert!(matches!(err, Err(NetError::Request { .. })), "{err:?}");
    let probe = a.client.request(b.id, LIMITS, b"probe".to_vec());
    let answer = async {
        let (data, channel) = next(&mut b.events, "Request", |e| match e {
            Event::Request { data, channel, .. } => Some((data, channel)),
            _ => None,
        })
        .await;
        assert_eq!(
            data, b"probe",
            "the oversized request must never reach the node"
        );
        // Over a's response limit: a's codec refuses it.
        b.client.respond(channel, vec![2; 10_000]);
    };
    let (response, ()) = tokio::join!(probe, answer);
    match response {
        Err(NetError::Request {
            failure: RequestFailure::Stream(reason),
            ..
        }) => assert!(reason.contains("exceeds the limit of 1024"), "{reason}"),
        other => panic!("expected an oversized-response failure, got {other:?}"),
    }
    assert_eq!(a.client.stats().snapshot().request_failures, 2);
}

#[tokio::test]
async fn rejected_messages_sink_the_senders_score() {
    let (a, mut b) = pair(config(), config()).await;
    a.client
        .publish(TOPIC, b"meh".to_vec())
        .await
        .expect("publish");
    let (_, from, _, handle) = message(&mut b).await;
    b.client.report(handle, Verdict::Ignore);
    let score = b.client.peer_score(from).await.expect("a has a score");
    assert!(score >= 0.0, "Ignore must not penalise: {score}");

    let mut scores = Vec::new();
    for i in 0..3u8 {
        a.client
            .publish(TOPIC, vec![b'x', i])
            .await
            .expect("publish");
        let (_, from, _, handle) = message(&mut b).await;
        b.client.report(handle, Verdict::Reject);
        scores.push(b.client.peer_score(from).await.expect("score"));
    }
    assert!(scores[0] < 0.0, "one reject lowers the score: {scores:?}");
    assert!(scores[0] > scores[1] && scores[1] > scores[2], "{scores:?}");
    assert!(scores[2] < -80.0, "three rejects graylist: {scores:?}");
}

#[tokio::test]
async fn close_stops_the_loop_and_the_peer_sees_it() {
    let (mut a, b) = pair(config(), config()).await;
    b.client.close().await;
    disconnected(&mut a, b.id).await;
    assert!(matches!(
        b.client.publish(TOPIC, vec![1]).await,
        Err(NetError::Closed)
    ));
    assert!(b.client.connected_peers().await.is_empty());
}

#[tokio::test]
async fn bad_configs_are_refused_with_a_reason() {
    let mut cfg = config();
    cfg.protocols = vec![ProtocolSpec {
        name: "no-slash",
        ..SYNC
    }];
    let err = start(cfg, CancellationToken::new()).err().expect("refused");
    assert!(err.to_string().contains("must start with '/'"), "{err}");

    let mut cfg = config();
    cfg.protocols = vec![SYNC, SYNC];
    assert!(matches!(
        start(cfg, CancellationToken::new()),
        Err(SwarmError::DuplicateProtocol { .. })
    ));

    let mut cfg = config();
    cfg.ping_interval = Duration::ZERO;
    assert!(matches!(
        start(cfg, CancellationToken::new()),
        Err(SwarmError::ZeroPingInterval)
    ));

    let mut cfg = config();
    cfg.listen = vec![
        "/ip4/127.0.0.1/udp/0/quic-v1"
            .parse()
            .expect("valid multiaddr"),
    ];
    assert!(matches!(
        start(cfg, CancellationToken::new()),
        Err(SwarmError::Listen { .. })
    ));
}

#[tokio::test]
#[ignore = "needs a multicast-capable non-loopback interface (mDNS ignores loopback)"]
async fn mdns_finds_and_dials_peers_on_the_lan() {
    // A fresh swarm key keeps these nodes from joining any other farm on the LAN.
    let random = Keypair::generate_ed25519().public().encode_protobuf();
    let mut key = [0u8; 32];
    key.copy_from_slice(&random[random.len() - 32..]);
    let lan = || {
        let mut cfg = config();
        cfg.listen = vec!["/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr")];
        cfg.mdns = true;
        cfg.mdns_interval = Duration::from_secs(1);
        cfg.psk = Some(key);
        cfg
    };
    let mut a = spawn(lan()).await;
    let mut b = spawn(lan()).await;
    connected(&mut a, b.id).await;
    connected(&mut b, a.id).await;
}

#[tokio::test]
async fn dial_waits_for_the_outcome_and_disconnect_is_undone_by_the_redial() {
    let mut a = spawn(config()).await;
    let mut b = spawn(config()).await;
    a.client.dial(b.addr.clone()).await.expect("dial b");
    assert_eq!(a.client.connected_peers().await, vec![b.id]);
    connected(&mut b, a.id).await;

    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let nowhere: Multiaddr = format!("/ip4/127.0.0.1/tcp/{closed_port}")
        .parse()
        .expect("valid multiaddr");
    let err = a
        .client
        .dial(nowhere)
        .await
        .expect_err("nobody listens there");
    assert!(matches!(err, NetError::Dial { .. }), "{err}");

    // c has a among its configured peers: after a disconnect it comes back by itself.
    let mut cfg_c = config();
    cfg_c.peers = vec![a.addr.clone()];
    let mut c = spawn(cfg_c).await;
    connected(&mut a, c.id).await;
    a.client.disconnect(c.id).await;
    disconnected(&mut c, a.id).await;
    connected(&mut c, a.id).await;
}
