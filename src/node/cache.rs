//! The node's disk stays within `--cache-size`: the store is trimmed by
//! least recent use, and unpacked scenes of jobs that need them no more are
//! removed.
//!
//! What a job still needs is never evicted, whatever the size (DESIGN.md,
//! "blob store"): the scene of a job with tasks left to render (a failed
//! job's too, while "retry failed" can bring it back), every output of a
//! job not yet collected, the frames an open encode job reads, and the logs
//! of jobs not archived. Everything else goes oldest use first once the
//! store is over its size. The rules are a pure function of the ledger,
//! tested without a node.
//!
//! Trimming takes the store's gc lock alone (imports and fetches wait for
//! it), so it runs now and then ([`NodeConfig::cache_every`]), not on every
//! change; and it spares blobs used in the last seconds, so a scene
//! imported for a submission is safe until its job is in the ledger. When
//! the data disk runs low (the `disk_low` check, or a write that failed
//! with ENOSPC) it trims at once, down to what jobs need: a farm on
//! people's workstations gives their disk back first.
//!
//! [`NodeConfig::cache_every`]: super::NodeConfig::cache_every

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Inner, Severity, lock};
use crate::hash::Hash;
use crate::ledger::{JobId, JobRecord};

/// What the ledger still needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Needed {
    /// Blobs the store must keep (with everything they reference).
    pub blobs: HashSet<Hash>,
    /// Scenes a task may still be rendered from (kept unpacked).
    pub scenes: HashSet<Hash>,
}

/// What the jobs in the ledger still need.
pub(crate) fn needed(jobs: &BTreeMap<JobId, JobRecord>) -> Needed {
    let mut needed = Needed::default();
    for rec in jobs.values() {
        if rec.archived.0 {
            continue;
        }
        let logs = rec.tasks.values().flat_map(|t| t.ends.iter());
        needed.blobs.extend(logs.filter_map(|e| e.log));
        if rec.cancelled.0 {
            continue;
        }
        if rec.has_tasks_left() {
            needed.blobs.insert(rec.spec.scene);
            needed.scenes.insert(rec.spec.scene);
            if let Some(parent) = super::encode::parent_of(&rec.spec)
                && let Some(parent) = jobs.get(&parent)
            {
                needed.blobs.extend(parent.output_blobs());
            }
        }
        if !rec.collected.0 {
            needed.blobs.extend(rec.output_blobs());
        }
    }
    needed
}

/// Trim now and then, until shutdown; and at once, down to what jobs
/// need, when the data disk is (nearly) full.
pub(crate) async fn keep_within_size(inner: Arc<Inner>) {
    loop {
        let size = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(inner.cfg.cache_every) => inner.cfg.cache_size,
            _ = inner.trim_now.notified() => 0,
        };
        if let Err(e) = trim(&inner, size).await {
            inner.events.push(
                Severity::Warning,
                "cache",
                None,
                None,
                format!("trimming the cache: {e}"),
            );
        }
    }
}

/// How long a blob just used is spared: longer than a submission takes
/// from its scene's import to its job's record (milliseconds).
const SPARE: Duration = Duration::from_secs(10);

/// One pass: the store, then the unpacked scenes.
async fn trim(inner: &Arc<Inner>, size: u64) -> Result<(), String> {
    let needed = inner.ledger.read(needed);
    let store = inner.store.clone();
    let blobs = needed.blobs;
    // A blob used a moment ago is spared: a submission's scene between its
    // import and its job's record is needed by nothing yet.
    let spare = SPARE.min(inner.cfg.cache_every);
    let spare_since = std::time::SystemTime::now().checked_sub(spare);
    let report = tokio::task::spawn_blocking(move || store.gc_sparing(&blobs, size, spare_since))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    for blob in &report.blobs_evicted {
        inner.forget_blob(*blob);
    }
    inner.scenes.prune(&needed.scenes).await;
    // Counted once the whole pass is over: whoever sees the figures move
    // sees the unpacked scenes pruned too.
    let m = &inner.metrics;
    m.cache_trims.fetch_add(1, Ordering::Relaxed);
    m.cache_bytes.store(report.bytes_kept, Ordering::Relaxed);
    m.cache_bytes_freed
        .fetch_add(report.bytes_freed, Ordering::Relaxed);
    if report.bytes_freed > 0 {
        tracing::info!(
            "cache: evicted {} blob(s), {} chunk(s), {} bytes; {} bytes kept",
            report.blobs_evicted.len(),
            report.chunks_freed,
            report.bytes_freed,
            report.bytes_kept
        );
    }
    if report.bytes_kept > inner.cfg.cache_size {
        tracing::warn!(
            "cache: active jobs and uncollected outputs need {} bytes, over --cache-size {}",
            report.bytes_kept,
            inner.cfg.cache_size
        );
    }
    Ok(())
}

impl Inner {
    /// `blob` is no longer in the store: stop advertising it.
    pub(crate) fn forget_blob(&self, blob: Hash) {
        lock(&self.complete_blobs).remove(&blob);
        lock(&self.held_blobs).retain(|h| *h != blob);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::crdt::Flag;
    use crate::ledger::{Done, End, EndKind, FrameRange, JobSpec, NodeId, Output};

    fn job(name: &str, frames: u32) -> (JobId, JobRecord) {
        let range = FrameRange {
            start: 1,
            end: frames,
            step: 1,
        };
        let spec = JobSpec {
            name: name.into(),
            scene: Hash::of(name.as_bytes()),
            ..crate::ledger::types::tests::spec(range, 1)
        };
        (crate::ledger::job_id(&spec), JobRecord::new(spec))
    }

    fn done(rec: &mut JobRecord, task: u32) -> Hash {
        let blob = Hash::of(format!("{}-{task}", rec.spec.name).as_bytes());
        let out = Output {
            blob,
            ext: "png".into(),
        };
        rec.tasks.entry(task).or_default().dones.insert(Done {
            outputs: crate::ledger::Outputs::from([(task + 1, out)]),
            node: NodeId::new("a"),
            epoch: 1,
            lamport: 1,
            render_ms: 1,
        });
        blob
    }

    fn failed(rec: &mut JobRecord, task: u32) -> Hash {
        let log = Hash::of(format!("log {}-{task}", rec.spec.name).as_bytes());
        rec.tasks.entry(task).or_default().ends.insert(End {
            epoch: 1,
            node: NodeId::new("a"),
            generation: 0,
            kind: EndKind::Failed,
            reason: "x".into(),
            log: Some(log),
        });
        log
    }

    #[test]
    fn a_running_job_needs_its_scene_outputs_and_logs() {
        let (id, mut rec) = job("running", 3);
        let out = done(&mut rec, 0);
        let log = failed(&mut rec, 1);
        let scene = rec.spec.scene;
        let n = needed(&BTreeMap::from([(id, rec)]));
        assert_eq!(n.blobs, HashSet::from([scene, out, log]));
        assert_eq!(n.scenes, HashSet::from([scene]));
    }

    #[test]
    fn a_finished_job_needs_its_outputs_until_collected_and_its_logs_until_archived() {
        let (id, mut rec) = job("finished", 2);
        let outs = [done(&mut rec, 0), done(&mut rec, 1)];
        let log = failed(&mut rec, 1);
        let n = needed(&BTreeMap::from([(id, rec.clone())]));
        assert_eq!(n.blobs, HashSet::from([outs[0], outs[1], log]));
        assert!(n.scenes.is_empty(), "no task is left to render");

        rec.collected = Flag(true);
        let n = needed(&BTreeMap::from([(id, rec.clone())]));
        assert_eq!(n.blobs, HashSet::from([log]));

        rec.archived = Flag(true);
        assert_eq!(needed(&BTreeMap::from([(id, rec)])), Needed::default());
    }

    #[test]
    fn a_failed_job_keeps_its_scene_for_a_retry_and_a_cancelled_one_does_not() {
        let (id, mut rec) = job("failed", 2);
        done(&mut rec, 0);
        failed(&mut rec, 1);
        let scene = rec.spec.scene;
        let n = needed(&BTreeMap::from([(id, rec.clone())]));
        assert!(n.scenes.contains(&scene) && n.blobs.contains(&scene));
        rec.cancelled = Flag(true);
        let n = needed(&BTreeMap::from([(id, rec)]));
        assert!(!n.blobs.contains(&scene) && n.scenes.is_empty());
    }

    #[test]
    fn an_open_encode_job_needs_its_render_jobs_frames_even_once_collected() {
        let (parent, mut render) = job("render", 2);
        let frames = [done(&mut render, 0), done(&mut render, 1)];
        render.collected = Flag(true);
        let spec = super::super::encode::encode_spec(
            parent,
            &render.spec,
            crate::render::Codec::Prores,
            24,
        );
        let encode = JobRecord::new(spec);
        let encode_id = crate::ledger::job_id(&encode.spec);
        let jobs = BTreeMap::from([(parent, render), (encode_id, encode)]);
        let n = needed(&jobs);
        assert!(frames.iter().all(|f| n.blobs.contains(f)));
    }
}
