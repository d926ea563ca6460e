//! Gossip: every byte string is tried as both gossip messages, a ledger
//! delta and a heartbeat, because both topics reach the same node from any
//! peer and one corpus serves both. A decoded delta goes on through what
//! `node::inbound` does before the ledger (authorship, then the record
//! checks, merge and views of `common`); a heartbeat goes into a peer table
//! and out through every query the scheduler and fetcher make of it.

#![no_main]

mod common;

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use renderswarm::ledger::NodeId;
use renderswarm::node::peers::PeerTable;
use renderswarm::node::wire::{self, DeltaMsg};
use renderswarm::node::{check_authorship, peers::Heartbeat};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = wire::decode_delta(data) {
        delta(msg);
    }
    if let Ok(hb) = wire::decode_heartbeat(data) {
        heartbeat(hb);
    }
});

fn delta(msg: DeltaMsg) {
    match msg {
        DeltaMsg::Job { job, record } | DeltaMsg::JobWithManifests { job, record, .. } => {
            // The author is whoever the record's first claim names, so the
            // authorship check passes as often as it fails.
            let author = record
                .tasks
                .values()
                .find_map(|t| t.claims.first().map(|c| c.node.clone()))
                .unwrap_or_else(|| record.control.stamp.node.clone());
            let _ = check_authorship(&record, &author);
            let _ = check_authorship(&record, &NodeId::new("someone else"));
            common::job(job, &record);
        }
        DeltaMsg::Alert { id, record } => common::alert(id, &record),
    }
}

fn heartbeat(hb: Heartbeat) {
    let now = Instant::now();
    let mut peers = PeerTable::new(Duration::from_secs(10));
    let node = hb.node.clone();
    let blob = hb.blobs.first().copied().unwrap_or_default();
    let held = hb.held.first().cloned();
    let alert = hb.alerts.first().copied();
    let mut older = hb.clone();
    older.stamp = older.stamp.saturating_sub(1);
    assert!(peers.heard(hb, now), "a first heartbeat is news");
    peers.heard(older, now);
    let _ = peers.history(&node);
    assert!(peers.is_alive(&node, now));
    let _ = peers.providers(blob, now);
    let _ = peers.capabilities(now);
    let _ = peers.max_rtt(now);
    if let Some(h) = held {
        let claim = renderswarm::ledger::Claim {
            epoch: h.epoch,
            lamport: 0,
            node: node.clone(),
        };
        let _ = peers.claim_holds(h.job, h.task, &claim, now);
    }
    if let Some((id, epoch)) = alert {
        let claim = renderswarm::ledger::Claim {
            epoch,
            lamport: 0,
            node,
        };
        let _ = peers.alert_claim_holds(id, &claim, now);
    }
}
