//! Measurements, not checks: throughput of one request-response stream and
//! gossip latency between two local nodes. Ignored by default; run with
//! `cargo test --release -- --ignored --nocapture swarm::tests_bench`.

use std::time::{Duration, Instant};

use super::tests::{TOPIC, config, message, next, pair};
use super::*;

const CHUNK: ProtocolSpec = ProtocolSpec {
    name: "/renderswarm/chunk/1",
    max_request: 1024,
    max_response: 4 * 1024 * 1024 + 1024,
    timeout: Duration::from_secs(60),
};

const CHUNK_BYTES: usize = 4 * 1024 * 1024;
const TOTAL_BYTES: usize = 256 * 1024 * 1024;

async fn throughput(psk: Option<[u8; 32]>) {
    let mut cfg_a = config();
    cfg_a.protocols = vec![CHUNK];
    cfg_a.psk = psk;
    let mut cfg_b = config();
    cfg_b.protocols = vec![CHUNK];
    cfg_b.psk = psk;
    let (a, mut b) = pair(cfg_a, cfg_b).await;
    let server_id = b.id;
    let chunk = vec![0xA5u8; CHUNK_BYTES];
    let server = b.client.clone();
    let serve = async move {
        for _ in 0..TOTAL_BYTES / CHUNK_BYTES {
            let channel = next(&mut b.events, "chunk Request", |e| match e {
                Event::Request { channel, .. } => Some(channel),
                _ => None,
            })
            .await;
            server.respond(channel, chunk.clone());
        }
        b
    };
    let fetch = async {
        let bytes_before = a.client.stats().snapshot().bytes_in;
        let started = Instant::now();
        let mut received = 0;
        for i in 0..TOTAL_BYTES / CHUNK_BYTES {
            let response = a
                .client
                .request(server_id, CHUNK.name, format!("chunk {i}").into_bytes())
                .await
                .expect("chunk");
            received += response.len();
        }
        let elapsed = started.elapsed();
        let wire = a.client.stats().snapshot().bytes_in - bytes_before;
        (received, elapsed, wire)
    };
    let (_b, (received, elapsed, wire)) = tokio::join!(serve, fetch);
    assert_eq!(received, TOTAL_BYTES);
    let mib_s = received as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64();
    println!(
        "throughput (psk: {}): {} MiB in {elapsed:.2?} = {mib_s:.0} MiB/s; wire bytes / payload = {:.4}",
        psk.is_some(),
        received >> 20,
        wire as f64 / received as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release"]
async fn request_response_throughput() {
    throughput(None).await;
    throughput(Some([3u8; 32])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release"]
async fn gossip_latency_median() {
    let (a, mut b) = pair(config(), config()).await;
    let mut samples = Vec::with_capacity(200);
    for i in 0..200u32 {
        let started = Instant::now();
        a.client
            .publish(TOPIC, i.to_be_bytes().to_vec())
            .await
            .expect("publish");
        let (_, _, data, handle) = message(&mut b).await;
        samples.push(started.elapsed());
        assert_eq!(data, i.to_be_bytes());
        b.client.report(handle, Verdict::Accept);
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    let p90 = samples[samples.len() * 9 / 10];
    println!(
        "gossip publish->receive over {} messages: median {median:?}, p90 {p90:?}, max {:?}",
        samples.len(),
        samples[samples.len() - 1]
    );
}
