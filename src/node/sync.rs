//! Anti-entropy: what guarantees convergence when gossip does not.
//!
//! On every new connection, and every few seconds with a random peer, a
//! node sends its digest (a hash per job record); the peer answers with its
//! records of the jobs that differ or that the asker lacks, and the ids of
//! the jobs it lacks or holds differently; the asker merges and pushes
//! those. Both sides end holding the join of both records, so a node that
//! joined late, restarted, or sat on the other side of a partition converges.
//! Large answers come in batches (`more`), so no message exceeds its limit.
//! Archived jobs are left out of digests; a job the asker lists as open
//! that is archived here is sent whole, so the archive reaches a node that
//! was away when it was gossiped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use libp2p::PeerId;

use super::wire::{self, ChunkReplyWriter, SyncReply, SyncRequest};
use super::{Inner, lock};
use crate::hash::Hash;
use crate::ledger::{AlertId, AlertRecord, JobId, JobRecord};

/// Rounds of one sync before giving up until the next.
const MAX_ROUNDS: usize = 64;

/// Sync with one random connected peer.
pub(crate) fn sync_with_random_peer(inner: &Arc<Inner>) {
    let peers: Vec<PeerId> = lock(&inner.connected).iter().copied().collect();
    if peers.is_empty() {
        return;
    }
    let pick = (super::events::now_ms() as usize) % peers.len();
    let peer = peers[pick];
    let inner = inner.clone();
    inner
        .tracker
        .clone()
        .spawn(async move { sync_with(&inner, peer).await });
}

/// Exchange digests and records with `peer` until both hold the same.
pub(crate) async fn sync_with(inner: &Arc<Inner>, peer: PeerId) {
    let Some(net) = &inner.net else { return };
    for _ in 0..MAX_ROUNDS {
        let request = wire::encode(&SyncRequest::Digest {
            jobs: inner.ledger.digest(),
            alerts: inner.ledger.alert_digest(),
        });
        let reply = match net.client.request(peer, wire::PROTO_SYNC, request).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%peer, "sync: {e}");
                return;
            }
        };
        inner
            .metrics
            .syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let reply = match wire::decode_sync_reply(&reply) {
            Ok(SyncReply::Diff {
                jobs,
                alerts,
                want_jobs,
                want_alerts,
                more,
            }) => (jobs, alerts, want_jobs, want_alerts, more),
            Ok(SyncReply::Ack) => {
                inner.caught_up();
                return;
            }
            Err(e) => {
                inner.bad_peer(peer, &format!("sync reply: {e}"));
                return;
            }
        };
        let (jobs, alerts, want_jobs, want_alerts, more) = reply;
        merge_records(inner, peer, jobs, alerts).await;
        push(inner, peer, &want_jobs, &want_alerts).await;
        if !more {
            inner.caught_up();
            return;
        }
    }
}

/// Merge records a peer sent, each checked; bad ones are counted and dropped.
async fn merge_records(
    inner: &Arc<Inner>,
    peer: PeerId,
    jobs: Vec<(JobId, JobRecord)>,
    alerts: Vec<(AlertId, AlertRecord)>,
) {
    for (id, mut rec) in jobs {
        // An archived job's Dones are its history, taken as they are: its
        // frames are free to leave every cache once it is archived, and a
        // Done dropped here for want of its manifest would never come back
        // (the job's tasks are frozen), so this node would show it with
        // fewer frames done than every other node.
        if !rec.archived.0 {
            super::fetch::verify_dones(inner, &[peer], &mut rec, &[]).await;
        }
        if let Err(e) = inner.ledger.apply_remote(id, &rec) {
            inner.bad_peer(peer, &format!("sync record for job {}: {e}", id.short()));
        }
    }
    for (id, rec) in alerts {
        if let Err(e) = inner.ledger.apply_alert_remote(id, &rec) {
            inner.bad_peer(peer, &format!("sync record for alert {id}: {e}"));
        }
    }
}

/// Send the records `peer` asked for, in batches under the size limit.
async fn push(inner: &Arc<Inner>, peer: PeerId, want: &[JobId], want_alerts: &[AlertId]) {
    let Some(net) = &inner.net else { return };
    let mut rest: Vec<JobId> = want.to_vec();
    let mut alerts = alert_records(inner, want_alerts);
    while !rest.is_empty() || !alerts.is_empty() {
        let (jobs, left) = batch_records(inner, &rest);
        rest = left;
        let msg = wire::encode(&SyncRequest::Push {
            jobs,
            alerts: std::mem::take(&mut alerts),
        });
        if let Err(e) = net.client.request(peer, wire::PROTO_SYNC, msg).await {
            tracing::debug!(%peer, "sync push: {e}");
            return;
        }
    }
}

/// Alerts per sync message; the rest comes in the next round.
const ALERTS_PER_MESSAGE: usize = 2000;

fn alert_records(inner: &Inner, ids: &[AlertId]) -> Vec<(AlertId, AlertRecord)> {
    inner.ledger.read_alerts(|alerts| {
        ids.iter()
            .take(ALERTS_PER_MESSAGE)
            .filter_map(|id| alerts.get(id).map(|r| (*id, r.clone())))
            .collect()
    })
}

/// As many of `ids`' records as fit in one message, and the ids left over.
fn batch_records(inner: &Inner, ids: &[JobId]) -> (Vec<(JobId, JobRecord)>, Vec<JobId>) {
    inner.ledger.read(|jobs| {
        let mut batch = Vec::new();
        let mut size = 0;
        let mut left = Vec::new();
        for id in ids {
            let Some(rec) = jobs.get(id) else { continue };
            let len = crate::codec::encode(rec).len();
            if !batch.is_empty() && size + len > wire::SYNC_BATCH_BYTES {
                left.push(*id);
                continue;
            }
            size += len;
            batch.push((*id, rec.clone()));
        }
        (batch, left)
    })
}

/// Answer a request from `from`; `None` drops it (the asker sees a failure).
pub(crate) async fn serve(
    inner: &Arc<Inner>,
    from: PeerId,
    protocol: &str,
    data: &[u8],
) -> Option<Vec<u8>> {
    match protocol {
        wire::PROTO_SYNC => serve_sync(inner, from, data).await,
        wire::PROTO_CHUNK => serve_chunks(inner, from, data).await,
        wire::PROTO_HAVE => super::have::serve(inner, from, data),
        wire::PROTO_BENCH => serve_bench(data),
        _ => None,
    }
}

/// `N` (u32, little-endian) zero bytes, at most [`wire::MAX_BENCH_REPLY`].
fn serve_bench(data: &[u8]) -> Option<Vec<u8>> {
    let n = u32::from_le_bytes(data.try_into().ok()?) as usize;
    (n <= wire::MAX_BENCH_REPLY).then(|| vec![0; n])
}

async fn serve_sync(inner: &Arc<Inner>, from: PeerId, data: &[u8]) -> Option<Vec<u8>> {
    let req = match wire::decode_sync_request(data) {
        Ok(r) => r,
        Err(e) => {
            inner.bad_peer(from, &format!("sync request: {e}"));
            return None;
        }
    };
    let reply = match req {
        SyncRequest::Digest { jobs, alerts } => {
            let mut reply = diff(inner, &jobs, &alerts);
            archives_they_missed(inner, &jobs, &mut reply).await;
            reply
        }
        SyncRequest::Push { jobs, alerts } => {
            merge_records(inner, from, jobs, alerts).await;
            SyncReply::Ack
        }
    };
    Some(wire::encode(&reply))
}

/// My records that differ from `theirs`, and the ids I want from them.
fn diff(
    inner: &Inner,
    theirs: &BTreeMap<JobId, Hash>,
    their_alerts: &BTreeMap<AlertId, Hash>,
) -> SyncReply {
    let mine = inner.ledger.digest();
    let send: Vec<JobId> = mine
        .iter()
        .filter(|(id, h)| theirs.get(id) != Some(h))
        .map(|(id, _)| *id)
        .collect();
    let (jobs, left) = batch_records(inner, &send);
    let archived_here = |id: &JobId| {
        inner
            .ledger
            .read(|jobs| jobs.get(id).is_some_and(|r| r.archived.0))
    };
    let want_jobs: Vec<JobId> = theirs
        .iter()
        .filter(|(id, h)| mine.get(id) != Some(h) && !archived_here(id))
        .map(|(id, _)| *id)
        .collect();
    let my_alerts = inner.ledger.alert_digest();
    let send_alerts: Vec<AlertId> = my_alerts
        .iter()
        .filter(|(id, h)| their_alerts.get(id) != Some(h))
        .map(|(id, _)| *id)
        .collect();
    let want_alerts: Vec<AlertId> = their_alerts
        .iter()
        .filter(|(id, h)| my_alerts.get(id) != Some(h))
        .map(|(id, _)| *id)
        .collect();
    let alerts = alert_records(inner, &send_alerts);
    let more = !left.is_empty() || send_alerts.len() > alerts.len();
    SyncReply::Diff {
        jobs,
        alerts,
        want_jobs,
        want_alerts,
        more,
    }
}

/// Archived records per sync reply, at most (each is read from the file).
const ARCHIVES_PER_REPLY: usize = 16;

/// Adds to `reply` the whole records of jobs the asker lists as open
/// (`theirs`) that are archived here. Archived jobs leave the digests, so
/// a node that was away when a job was archived would otherwise never
/// hear of it: it would keep the job open with the tasks it last saw, and
/// claim and render again those it thought pending. The record goes with
/// its tasks (read back from the file) and is merged before the flag
/// freezes them, so the asker freezes the swarm's tasks, not its own stale
/// ones. A few per reply, within the batch size; `more` brings the rest.
async fn archives_they_missed(
    inner: &Arc<Inner>,
    theirs: &BTreeMap<JobId, Hash>,
    reply: &mut SyncReply,
) {
    let SyncReply::Diff { jobs, more, .. } = reply else {
        return;
    };
    let missed: Vec<JobId> = inner.ledger.read(|all| {
        theirs
            .keys()
            .filter(|id| all.get(id).is_some_and(|r| r.archived.0))
            .copied()
            .collect()
    });
    if missed.is_empty() {
        return;
    }
    let ledger = inner.ledger.clone();
    let Ok((records, left)) =
        tokio::task::spawn_blocking(move || read_archived(&ledger, &missed)).await
    else {
        return;
    };
    jobs.extend(records);
    *more |= left;
}

/// The records of archived jobs `ids`, as many as fit in one reply, and
/// whether some were left for the next.
fn read_archived(ledger: &crate::ledger::Ledger, ids: &[JobId]) -> (Vec<(JobId, JobRecord)>, bool) {
    let mut out = Vec::new();
    let mut size = 0;
    for id in ids {
        if out.len() == ARCHIVES_PER_REPLY || size >= wire::SYNC_BATCH_BYTES {
            return (out, true);
        }
        match ledger.read_job(*id, |r| (crate::codec::encode(r).len(), r.clone())) {
            Ok(Some((len, rec))) => {
                size += len;
                out.push((*id, rec));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("reading archived job {} for a sync: {e}", id.short()),
        }
    }
    (out, false)
}

async fn serve_chunks(inner: &Arc<Inner>, from: PeerId, data: &[u8]) -> Option<Vec<u8>> {
    let req = match wire::decode_chunk_request(data) {
        Ok(r) => r,
        Err(e) => {
            inner.bad_peer(from, &format!("chunk request: {e}"));
            return None;
        }
    };
    let withheld = withhold(inner, &req.hashes);
    if withheld.contains(&true) {
        // With the fetch's trace (`SWARM_LOG=renderswarm::node::fetch=trace`).
        let n = withheld.iter().filter(|w| **w).count();
        tracing::trace!(target: "renderswarm::node::fetch", %from, n, "withheld");
    }
    let store = inner.store.clone();
    let (reply, sent) = tokio::task::spawn_blocking(move || {
        let mut budget = wire::CHUNK_REPLY_BUDGET;
        let lens: Vec<Option<usize>> = req
            .hashes
            .iter()
            .zip(withheld)
            .map(|(h, w)| (!w).then(|| store.chunk_len(*h)).flatten())
            .map(|l| l.map(|l| l as usize))
            .collect();
        // Room for what is here, not the whole budget: most replies carry a
        // chunk or two, or manifests, or nothing.
        let here: usize = lens.iter().flatten().sum();
        let mut reply = ChunkReplyWriter::new(req.hashes.len(), here.min(budget));
        for (h, len) in req.hashes.iter().zip(lens) {
            match len {
                Some(len) if len <= budget => {
                    if reply
                        .chunk(len, |buf| store.append_chunk(*h, buf, len))
                        .is_ok()
                    {
                        budget -= len;
                    }
                }
                // Full: the rest are asked for again.
                Some(_) => {
                    budget = 0;
                    reply.none();
                }
                None => reply.none(),
            }
        }
        (reply.finish(), wire::CHUNK_REPLY_BUDGET - budget)
    })
    .await
    .ok()?;
    inner
        .metrics
        .chunk_bytes_served
        .fetch_add(sent as u64, std::sync::atomic::Ordering::Relaxed);
    Some(reply)
}

/// Peers a chunk of a blob this node is still fetching is served to.
const SERVE_WHILE_FETCHING: u32 = 2;

/// Which of `hashes` to answer "not here" for: chunks of a blob this node
/// is still fetching that it has served to [`SERVE_WHILE_FETCHING`] peers
/// already. Those peers serve the others, as a tree: otherwise the first
/// fetcher to take a chunk from the holders serves it to every other
/// fetcher, and the one that took the most (fetchers' shares vary by 2x)
/// is the farm's bottleneck.
fn withhold(inner: &Inner, hashes: &[Hash]) -> Vec<bool> {
    let coming = |c: &HashMap<Hash, u32>| -> Vec<bool> {
        hashes.iter().map(|h| c.contains_key(h)).collect()
    };
    let was_coming = coming(&lock(&inner.chunks_coming));
    if !was_coming.contains(&true) {
        return was_coming;
    }
    // Looked up without the locks: a file's metadata each.
    let here: Vec<bool> = hashes
        .iter()
        .zip(was_coming)
        .map(|(h, c)| c && inner.store.chunk_len(*h).is_some())
        .collect();
    // In the order `Coming::drop` takes them; a fetch that ended meanwhile
    // leaves no count behind.
    let still_coming = lock(&inner.chunks_coming);
    let mut served = lock(&inner.served_while_fetching);
    let countable: Vec<bool> = coming(&still_coming)
        .into_iter()
        .zip(here)
        .map(|(c, h)| c && h)
        .collect();
    count_serving(&mut served, hashes, &countable)
}

/// [`withhold`]'s rule: each of `hashes` that is `countable` (here, and
/// of a fetch under way) is counted in `served` as it is asked for, and
/// withheld past the limit.
fn count_serving(
    served: &mut HashMap<Hash, u32>,
    hashes: &[Hash],
    countable: &[bool],
) -> Vec<bool> {
    hashes
        .iter()
        .zip(countable)
        .map(|(h, &c)| {
            if !c {
                return false;
            }
            let n = served.entry(*h).or_default();
            *n += 1;
            *n > SERVE_WHILE_FETCHING
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::types::tests::spec;
    use crate::ledger::{Claim, FrameRange, Ledger, NodeId, ops};

    /// Archived records go a few per reply, each with its tasks read back
    /// from the file, and the reply says when more are left.
    #[test]
    fn archived_records_go_whole_a_few_per_reply() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("ledger.redb"), NodeId::new("a")).unwrap();
        let frames = FrameRange {
            start: 1,
            end: 2,
            step: 1,
        };
        let ids: Vec<JobId> = (0..ARCHIVES_PER_REPLY + 2)
            .map(|i| {
                let mut s = spec(frames, 1);
                s.name = format!("job {i}");
                let (id, mut rec) = ledger.submit(s).unwrap();
                rec.tasks.entry(1).or_default().claims.insert(Claim {
                    epoch: 1,
                    lamport: 1,
                    node: NodeId::new("a"),
                });
                ledger.apply_local(id, &rec).unwrap();
                ledger.apply_local(id, &ops::archive(&rec)).unwrap();
                id
            })
            .collect();
        ledger.flush().unwrap();
        assert!(ledger.read(|jobs| jobs.values().all(|r| r.archived.0 && r.tasks.is_empty())));
        let (first, more) = read_archived(&ledger, &ids);
        assert_eq!((first.len(), more), (ARCHIVES_PER_REPLY, true));
        assert!(
            first
                .iter()
                .all(|(_, r)| r.archived.0 && r.tasks.len() == 1),
            "whole records"
        );
        let (rest, more) = read_archived(&ledger, &ids[ARCHIVES_PER_REPLY..]);
        assert_eq!((rest.len(), more), (2, false));
    }

    #[test]
    fn a_chunk_still_being_fetched_is_served_to_two_peers_then_withheld() {
        let [fetching, other] = [b"a", b"b"].map(|b| Hash::of(b));
        let mut served = HashMap::new();
        let ask = [fetching, other];
        // `other` is not here yet, or of no fetch under way: not counted.
        let countable = [true, false];
        let withheld: Vec<Vec<bool>> = (0..4)
            .map(|_| count_serving(&mut served, &ask, &countable))
            .collect();
        assert_eq!(withheld[0], [false, false]);
        assert_eq!(withheld[1], [false, false]);
        assert_eq!(withheld[2], [true, false]);
        assert_eq!(withheld[3], [true, false]);
        assert_eq!(served.get(&other), None);
    }
}
