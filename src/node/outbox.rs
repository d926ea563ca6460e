//! What a node gossips, in order, by one task, several deltas of a job per
//! message when they queue up.
//!
//! Every gossip message costs a signature on the sender and a check on each
//! receiver, and a job's delta carries its whole spec. A busy node makes
//! deltas faster than it can publish them (a claim, a start and a done per
//! task, for several tasks), so the task that publishes takes everything
//! queued at that moment and merges the deltas of each job into one record
//! before it publishes: the CRDT merge is a union, so one merged delta says
//! exactly what the pieces said. An idle node publishes each delta alone,
//! at once, with one exception: the start of a task of a job whose renders
//! take this node only milliseconds waits up to [`LINGER`] for what follows
//! it (the done of the task before, which is being stored as the next one
//! starts), so that both go out as one message; anything else queued ends
//! the wait. In the dispatch benchmark that took the messages per task from
//! ~2.2 (a claim, ahead in batches; a start; a done) towards one and a bit.
//!
//! Heartbeats and alerts go out as they came, in their place.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use serde_bytes::ByteBuf;

use super::lock;
use super::wire::{self, DeltaMsg};
use crate::ledger::{Delta, JobId};
use crate::swarm::Client;

/// What the publishing task is given.
pub(super) enum Outgoing {
    /// A job's delta, and the manifests of the outputs its Dones name:
    /// merged with the job's other deltas queued with it.
    Delta(JobId, Box<Delta>, Vec<ByteBuf>),
    /// A task's start, of a job whose renders here are short: a delta that
    /// waits a moment for company (see the module's introduction).
    Start(JobId, Box<Delta>),
    /// Bytes to publish as they are.
    Publish(&'static str, Vec<u8>),
    /// Answered once everything queued before it was handed to the swarm.
    Drained(oneshot::Sender<()>),
}

/// At most this many queued items are taken at once.
const TAKE_AT_ONCE: usize = 512;
/// A merged delta stops growing at this many encoded bytes (well under the
/// gossip limit, so a merge never makes a message receivers refuse).
const MERGED_BYTES: usize = wire::MAX_GOSSIP / 4;
/// How long a short task's start waits for the next delta before it is
/// published alone: the time a node takes to store a tiny render's output
/// and make its done durable, with room.
pub(super) const LINGER: Duration = Duration::from_millis(20);
/// The most ledger messages kept for a replay test.
const MAX_KEPT_FOR_REPLAY: usize = 50_000;

/// Publish what `queue` gives, until it closes. `kept`, when given,
/// receives a copy of every ledger message (tests replay them).
pub(super) async fn run(
    client: Client,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    kept: Option<Arc<Mutex<Vec<Vec<u8>>>>>,
) {
    let mut taken = Vec::new();
    while next_batch(&mut queue, &mut taken, LINGER).await {
        for out in coalesce(std::mem::take(&mut taken)) {
            let (topic, bytes) = match out {
                Ready::Publish(topic, bytes) => (topic, bytes),
                Ready::Drained(ack) => {
                    let _ = ack.send(());
                    continue;
                }
            };
            if let Some(kept) = &kept
                && topic == wire::TOPIC_LEDGER
            {
                let mut kept = lock(kept);
                if kept.len() < MAX_KEPT_FOR_REPLAY {
                    kept.push(bytes.clone());
                }
            }
            if let Err(e) = client.publish(topic, bytes).await {
                tracing::debug!("publishing on {topic}: {e}");
            }
        }
    }
}

/// Takes the next items to publish together into `taken`: all that is
/// queued, and when that ends with a short task's start, whatever comes
/// within `linger` ([`LINGER`]) after it. `false` once the queue is closed
/// and empty.
async fn next_batch(
    queue: &mut mpsc::UnboundedReceiver<Outgoing>,
    taken: &mut Vec<Outgoing>,
    linger: Duration,
) -> bool {
    if queue.recv_many(taken, TAKE_AT_ONCE).await == 0 {
        return false;
    }
    if matches!(taken.last(), Some(Outgoing::Start(..))) {
        // `recv_many` is cancel-safe: a timeout loses nothing.
        let _ = tokio::time::timeout(linger, queue.recv_many(taken, TAKE_AT_ONCE)).await;
    }
    true
}

/// An item ready to hand to the swarm.
pub(super) enum Ready {
    Publish(&'static str, Vec<u8>),
    Drained(oneshot::Sender<()>),
}

/// Merge the deltas of each job in `items` into as few messages as the
/// size cap allows, each at the place of the job's first delta; everything
/// else keeps its order.
pub(super) fn coalesce(items: Vec<Outgoing>) -> Vec<Ready> {
    // Slots in output order; a job's open slot takes its later deltas.
    enum Slot {
        Job(JobId, Box<Delta>, Vec<ByteBuf>, usize),
        Ready(Ready),
    }
    let mut slots: Vec<Slot> = Vec::with_capacity(items.len());
    let mut open: std::collections::HashMap<JobId, usize> = std::collections::HashMap::new();
    for item in items {
        let (job, delta, manifests) = match item {
            Outgoing::Delta(job, delta, manifests) => (job, delta, manifests),
            Outgoing::Start(job, delta) => (job, delta, Vec::new()),
            Outgoing::Publish(topic, bytes) => {
                slots.push(Slot::Ready(Ready::Publish(topic, bytes)));
                continue;
            }
            Outgoing::Drained(ack) => {
                slots.push(Slot::Ready(Ready::Drained(ack)));
                continue;
            }
        };
        let size = encoded_len(job, &delta) + manifests.iter().map(|m| m.len()).sum::<usize>();
        let merged = open.get(&job).is_some_and(|&at| match &mut slots[at] {
            Slot::Job(_, acc, carried, bytes) if *bytes + size <= MERGED_BYTES => {
                let ok = acc.try_merge(&delta).is_ok();
                if ok {
                    *bytes += size;
                    carried.extend(manifests.iter().cloned());
                }
                ok
            }
            _ => false,
        });
        if !merged {
            open.insert(job, slots.len());
            slots.push(Slot::Job(job, delta, manifests, size));
        }
    }
    slots
        .into_iter()
        .map(|slot| match slot {
            Slot::Job(job, record, manifests, _) => {
                let record = *record;
                let msg = if manifests.is_empty() {
                    DeltaMsg::Job { job, record }
                } else {
                    DeltaMsg::JobWithManifests {
                        job,
                        record,
                        manifests,
                    }
                };
                Ready::Publish(wire::TOPIC_LEDGER, wire::encode(&msg))
            }
            Slot::Ready(r) => r,
        })
        .collect()
}

/// The encoded size of one job delta (an upper bound on what it adds to a
/// merged one).
fn encoded_len(job: JobId, delta: &Delta) -> usize {
    postcard::experimental::serialized_size(&(job, delta)).unwrap_or(MERGED_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Claim, FrameRange, JobRecord, NodeId, job_id};

    /// Job `name` of `n` one-frame tasks, each claimed by one node.
    fn job_with_claims(name: &str, n: u32) -> (JobId, JobRecord) {
        let frames = FrameRange {
            start: 1,
            end: n,
            step: 1,
        };
        let mut spec = crate::ledger::types::tests::spec(frames, 1);
        spec.name = name.into();
        let id = job_id(&spec);
        let mut rec = JobRecord::new(spec);
        for t in 0..n {
            rec.tasks.entry(t).or_default().claims.insert(Claim {
                epoch: 1,
                lamport: u64::from(t) + 1,
                node: NodeId::new("me"),
            });
        }
        (id, rec)
    }

    /// One delta per task of `rec`.
    fn split_by_task(rec: &JobRecord) -> Vec<JobRecord> {
        rec.tasks
            .iter()
            .map(|(i, t)| {
                let mut piece = rec.empty_like();
                piece.tasks.insert(*i, t.clone());
                piece
            })
            .collect()
    }

    fn decoded(ready: &Ready) -> Option<(JobId, JobRecord)> {
        match ready {
            Ready::Publish(wire::TOPIC_LEDGER, bytes) => match wire::decode_delta(bytes).ok()? {
                DeltaMsg::Job { job, record } => Some((job, record)),
                DeltaMsg::JobWithManifests { job, record, .. } => Some((job, record)),
                DeltaMsg::Alert { .. } => None,
            },
            _ => None,
        }
    }

    #[test]
    fn deltas_of_one_job_queued_together_go_out_as_one_merged_record() {
        let (id, rec) = job_with_claims("a", 3);
        let pieces: Vec<JobRecord> = split_by_task(&rec);
        assert_eq!(pieces.len(), 3);
        let (other, other_rec) = job_with_claims("b", 1);
        let items = vec![
            Outgoing::Delta(id, Box::new(pieces[0].clone()), Vec::new()),
            Outgoing::Publish(wire::TOPIC_HEARTBEAT, vec![1, 2, 3]),
            Outgoing::Delta(other, Box::new(other_rec.clone()), Vec::new()),
            Outgoing::Delta(id, Box::new(pieces[1].clone()), Vec::new()),
            Outgoing::Delta(id, Box::new(pieces[2].clone()), Vec::new()),
        ];
        let out = coalesce(items);
        assert_eq!(out.len(), 3, "one message per job, and the heartbeat");
        let (first, merged) = decoded(&out[0]).expect("the job's delta comes first");
        assert_eq!(first, id);
        assert_eq!(merged, rec, "the merge says what the pieces said");
        assert!(matches!(&out[1], Ready::Publish(wire::TOPIC_HEARTBEAT, b) if b == &[1, 2, 3]));
        assert_eq!(decoded(&out[2]), Some((other, other_rec)));
    }

    #[test]
    fn a_merged_delta_stops_growing_at_its_size_cap() {
        let (id, rec) = job_with_claims("a", 1);
        let one = encoded_len(id, &rec);
        let n = MERGED_BYTES / one + 5;
        let items = (0..n)
            .map(|_| Outgoing::Delta(id, Box::new(rec.clone()), Vec::new()))
            .collect();
        let out = coalesce(items);
        assert_eq!(out.len(), 2, "{n} deltas of {one} bytes fill two messages");
        for r in &out {
            let Ready::Publish(_, bytes) = r else {
                panic!("a delta was not published")
            };
            assert!(bytes.len() <= MERGED_BYTES + 16);
        }
    }

    #[test]
    fn manifests_ride_with_their_merged_delta() {
        let (id, rec) = job_with_claims("a", 2);
        let pieces = split_by_task(&rec);
        let m = |b: u8| ByteBuf::from(vec![b; 3]);
        let out = coalesce(vec![
            Outgoing::Delta(id, Box::new(pieces[0].clone()), vec![m(1)]),
            Outgoing::Delta(id, Box::new(pieces[1].clone()), vec![m(2)]),
        ]);
        assert_eq!(out.len(), 1);
        let Ready::Publish(wire::TOPIC_LEDGER, bytes) = &out[0] else {
            panic!("not a ledger message")
        };
        match wire::decode_delta(bytes).unwrap() {
            DeltaMsg::JobWithManifests {
                job,
                record,
                manifests,
            } => {
                assert_eq!((job, record), (id, rec));
                assert_eq!(manifests, vec![m(1), m(2)]);
            }
            other => panic!("published as {other:?}"),
        }
    }

    #[test]
    fn drained_is_answered_after_what_was_queued_before_it() {
        let (id, rec) = job_with_claims("a", 1);
        let (tx, _rx) = oneshot::channel();
        let out = coalesce(vec![
            Outgoing::Delta(id, Box::new(rec), Vec::new()),
            Outgoing::Drained(tx),
        ]);
        assert!(decoded(&out[0]).is_some());
        assert!(matches!(out[1], Ready::Drained(_)));
    }

    #[tokio::test]
    async fn a_short_tasks_start_waits_for_what_follows_and_no_longer() {
        let (id, rec) = job_with_claims("a", 2);
        let pieces = split_by_task(&rec);
        let start = |i: usize| Outgoing::Start(id, Box::new(pieces[i].clone()));
        let delta = |i: usize| Outgoing::Delta(id, Box::new(pieces[i].clone()), Vec::new());
        let long = Duration::from_secs(30);
        let (tx, mut queue) = mpsc::unbounded_channel();

        // The done that follows a start joins it, and ends the wait.
        tx.send(start(0)).unwrap();
        let sender = tx.clone();
        let done = delta(1);
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            sender.send(done).unwrap();
        });
        let began = std::time::Instant::now();
        let mut taken = Vec::new();
        assert!(next_batch(&mut queue, &mut taken, long).await);
        later.await.unwrap();
        assert!(began.elapsed() < long / 2, "the delta must end the wait");
        let out = coalesce(std::mem::take(&mut taken));
        assert_eq!(out.len(), 1, "the start and the done go out as one message");
        assert_eq!(decoded(&out[0]), Some((id, rec.clone())));

        // A start alone goes out alone once the wait is over.
        tx.send(start(0)).unwrap();
        let linger = Duration::from_millis(30);
        let began = std::time::Instant::now();
        assert!(next_batch(&mut queue, &mut taken, linger).await);
        assert!(began.elapsed() >= linger);
        assert_eq!(std::mem::take(&mut taken).len(), 1);

        // Anything but a start goes out at once.
        tx.send(delta(1)).unwrap();
        let began = std::time::Instant::now();
        assert!(next_batch(&mut queue, &mut taken, long).await);
        assert!(began.elapsed() < long / 2);
        assert_eq!(std::mem::take(&mut taken).len(), 1);

        drop(tx);
        assert!(!next_batch(&mut queue, &mut taken, long).await, "closed");
    }
}
