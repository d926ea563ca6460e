//! Keep every finished frame on at least two nodes until its job's outputs
//! are collected.
//!
//! A frame first exists only on the node that rendered it. If that node
//! dies before the submitter collects, the frame would be lost and the
//! task would have to render again — or, if the submitter is gone too,
//! nobody could collect it. So each output of an uncollected job is kept on
//! two *live* nodes: its renderer while alive, the submitter while alive
//! (it fetches the frame to collect it anyway), then the live nodes in
//! rendezvous order on the output's hash. When a keeper dies the next one
//! in that order takes a copy from whoever still has it. Every node computes
//! the same keepers from the same ledger and liveness, so no more than the
//! needed copies are made. The frames one renderer finished since the last
//! look are copied together, in a few requests (`fetch_many.rs`).
//!
//! Scenes are copied too, sooner: every node that can run an open job
//! fetches its scene as soon as it learns of the job, so the engine starts
//! without a transfer on the critical path, and a submitter that dies right
//! after submitting does not take the only copy of the scene with it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Inner, lock};
use crate::hash::Hash;
use crate::ledger::{JobId, NodeId};

/// An output this node should copy, and who rendered it.
struct Copy {
    blob: Hash,
    renderer: NodeId,
}

pub(crate) async fn replicate(inner: Arc<Inner>) {
    tokio::join!(prefetch_scenes(inner.clone()), keep_copies(inner));
}

/// Scenes at once: a job's first claim may come within milliseconds, and a
/// submitter that dies right after submitting must not take the only copy.
async fn prefetch_scenes(inner: Arc<Inner>) {
    let mut changes = inner.ledger.subscribe();
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        for (scene, submitter) in scenes_to_prefetch(&inner) {
            if let Err(e) = inner
                .ensure_blob(scene, std::slice::from_ref(&submitter))
                .await
            {
                tracing::debug!("prefetching scene {}: {e}", scene.short(12));
            }
        }
    }
}

/// Outputs once per burst of changes: a busy farm changes the ledger
/// hundreds of times a second, and these copies are on nobody's critical
/// path.
async fn keep_copies(inner: Arc<Inner>) {
    let mut changes = inner.ledger.subscribe();
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = changes.changed() => {
                tokio::time::sleep(COALESCE).await;
                changes.borrow_and_update();
            }
            // Liveness changes without ledger changes: look again now and then.
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let copies = copies_for_me(&inner)
            .into_iter()
            .map(|c| (c.renderer, c.blob));
        for (renderer, blobs) in super::fetch_many::by_node(copies) {
            if inner.shutdown.is_cancelled() {
                return;
            }
            copy_outputs(&inner, &renderer, blobs).await;
        }
    }
}

/// Copies of outputs one renderer made: all at once from the renderer
/// (`fetch_many.rs`), then any it could not give blob by blob from
/// whoever has them.
async fn copy_outputs(inner: &Arc<Inner>, renderer: &NodeId, blobs: Vec<Hash>) {
    for blob in inner.fetch_many(renderer, blobs).await {
        if inner.shutdown.is_cancelled() {
            return;
        }
        if let Err(e) = inner
            .ensure_blob(blob, std::slice::from_ref(renderer))
            .await
        {
            tracing::debug!("keeping a second copy of output {}: {e}", blob.short(12));
        }
    }
}

/// Scenes of open jobs this node can run and does not hold yet. Runs on
/// every ledger change, so it asks the held set about the few scenes of open
/// jobs rather than copying the set (every frame this node holds is in it),
/// and reads a job's every task (`has_tasks_left`) only when its scene is
/// missing.
fn scenes_to_prefetch(inner: &Inner) -> Vec<(Hash, NodeId)> {
    let engines = inner.engines.names();
    let mut jobs: Vec<(JobId, Hash, NodeId)> = inner.ledger.read(|jobs| {
        jobs.iter()
            .filter(|(_, r)| !r.cancelled.0 && !r.archived.0)
            // An encode job's scene is its render job's, never unpacked.
            .filter(|(_, r)| r.spec.engine != crate::render::ENCODE_ENGINE)
            .filter(|(_, r)| {
                engines.contains(&r.spec.engine) && r.spec.requirements.is_subset(&inner.cfg.tags)
            })
            .map(|(id, r)| (*id, r.spec.scene, r.spec.submitter.clone()))
            .collect()
    });
    jobs.retain(|(_, scene, _)| !held_or_syncing(inner, *scene));
    if jobs.is_empty() {
        return Vec::new();
    }
    inner.ledger.read(|records| {
        jobs.retain(|(id, _, _)| records.get(id).is_some_and(|r| r.has_tasks_left()));
    });
    let mut scenes: Vec<(Hash, NodeId)> = jobs
        .into_iter()
        .map(|(_, scene, submitter)| (scene, submitter))
        .collect();
    scenes.sort();
    scenes.dedup();
    scenes
}

/// Whether `blob` is held here, or fetched with its sync under way.
pub(super) fn held_or_syncing(inner: &Inner, blob: Hash) -> bool {
    let held = lock(&inner.complete_blobs).contains(&blob);
    held || lock(&inner.syncing).contains_key(&blob)
}

/// Blobs held here, and those fetched whose sync is under way (nothing
/// left to fetch; see `Inner::sync_then_hold`).
fn here_or_syncing(inner: &Inner) -> Complete {
    let mut here = lock(&inner.complete_blobs).clone();
    here.extend(lock(&inner.syncing).keys().copied());
    here
}

fn copies_for_me(inner: &Inner) -> Vec<Copy> {
    let complete = here_or_syncing(inner);
    let now = Instant::now();
    let live: Vec<NodeId> = {
        let peers = lock(&inner.peers);
        let mut v: Vec<NodeId> = peers.alive(now).map(|p| p.heartbeat.node.clone()).collect();
        v.push(inner.id.clone());
        v
    };
    inner.ledger.read(|jobs| {
        let mut out = Vec::new();
        for rec in jobs.values() {
            if rec.collected.0 || rec.cancelled.0 || rec.archived.0 {
                continue;
            }
            let submitter_alive = live.contains(&rec.spec.submitter);
            for t in rec.tasks.values() {
                let Some(d) = t.winning_done() else { continue };
                if d.node == inner.id {
                    continue;
                }
                for o in d.outputs.values() {
                    if complete.contains(&o.blob) {
                        continue;
                    }
                    let submitter = submitter_alive.then_some(&rec.spec.submitter);
                    if keepers(o.blob, &d.node, submitter, &live).contains(&&inner.id) {
                        out.push(Copy {
                            blob: o.blob,
                            renderer: d.node.clone(),
                        });
                    }
                }
            }
        }
        out
    })
}

/// How many live nodes keep each uncollected output.
const COPIES: usize = 2;

/// How long the loop lets ledger changes pile up before it looks.
const COALESCE: Duration = Duration::from_millis(200);

/// The live nodes that keep `blob`: its renderer and the submitter while
/// alive, then the others by rendezvous rank.
fn keepers<'a>(
    blob: Hash,
    renderer: &'a NodeId,
    submitter: Option<&'a NodeId>,
    live: &'a [NodeId],
) -> Vec<&'a NodeId> {
    // The common case, decided without hashing: both first keepers live.
    if let Some(s) = submitter
        && s != renderer
        && live.contains(renderer)
    {
        return vec![renderer, s];
    }
    let rank = |n: &NodeId| {
        let mut h = blake3::Hasher::new();
        h.update(&blob.0);
        h.update(n.as_str().as_bytes());
        Hash::from(h.finalize())
    };
    let mut rest: Vec<&NodeId> = live.iter().collect();
    rest.sort_by_key(|n| std::cmp::Reverse(rank(n)));
    let first = [Some(renderer).filter(|r| live.contains(r)), submitter];
    let mut out: Vec<&NodeId> = Vec::new();
    for n in first.into_iter().flatten().chain(rest) {
        if out.len() == COPIES {
            break;
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// Blobs this node holds completely.
pub type Complete = HashSet<Hash>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_live_nodes_keep_each_output_whoever_dies() {
        let live: Vec<NodeId> = (0..5).map(|i| NodeId::new(format!("n{i}"))).collect();
        for i in 0..50u8 {
            let blob = Hash::of(&[i]);
            let renderer = &live[(i % 5) as usize];
            let k = keepers(blob, renderer, None, &live);
            assert_eq!(k.len(), 2);
            assert_eq!(k[0], renderer, "the renderer keeps its output while alive");
            let mut shuffled = live.clone();
            shuffled.reverse();
            assert_eq!(
                keepers(blob, renderer, None, &shuffled),
                k,
                "order-independent"
            );
            // The renderer dies: two others keep it.
            let others: Vec<NodeId> = live.iter().filter(|n| *n != renderer).cloned().collect();
            let k = keepers(blob, renderer, None, &others);
            assert_eq!(k.len(), 2);
            assert!(!k.contains(&renderer));
        }
        let submitter = &live[3];
        assert_eq!(
            keepers(Hash::of(b"x"), &live[0], Some(submitter), &live),
            vec![&live[0], submitter]
        );
        assert_eq!(
            keepers(Hash::of(b"x"), &live[0], None, &live[..1]),
            vec![&live[0]]
        );
    }
}
