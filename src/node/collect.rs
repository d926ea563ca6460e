//! The submitter collects: finished frames are written where `submit --out`
//! asked, on the submitting node's disk, as `frame_0001.png` (four digits,
//! like Blender's `####`; the extension is the output's), and an encode
//! job's movie as `movie.mp4` (or `.mov`).
//!
//! Collection is driven by the ledger alone, so a submitter that was killed
//! mid-job and restarted simply collects everything when it comes back.
//! Each file is written atomically; when every frame is written the job is
//! marked collected, which also tells the swarm the outputs may be evicted.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Inner, Severity};
use crate::ledger::{JobId, Output, ops};

/// A frame to write.
struct Pending {
    job: JobId,
    /// The node that rendered it, asked first.
    node: crate::ledger::NodeId,
    dir: PathBuf,
    frame: u32,
    output: Output,
    /// The file's name in `dir`.
    file: String,
}

pub(crate) async fn collect(inner: Arc<Inner>) {
    let mut changes = inner.ledger.subscribe();
    let mut written: HashMap<JobId, HashSet<u32>> = HashMap::new();
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = changes.changed() => {}
            // Retry frames whose blobs were not reachable yet.
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let pending = pending(&inner, &written);
        fetch_together(&inner, &pending).await;
        for p in pending {
            match write_frame(&inner, &p).await {
                Ok(()) => {
                    written.entry(p.job).or_default().insert(p.frame);
                }
                Err(e) => {
                    tracing::warn!("collecting frame {} of job {}: {e}", p.frame, p.job.short())
                }
            }
        }
        finish(&inner, &mut written).await;
    }
}

/// Whether this node really submitted `job`: a peer could forge a record
/// naming this node as the submitter, with a folder of its choosing.
fn submitted_here(inner: &Inner, job: &JobId) -> bool {
    super::DataDirs::of(&inner.cfg.data_dir)
        .submitted
        .join(job.to_string())
        .exists()
}

/// Done frames of this node's jobs not written yet.
fn pending(inner: &Inner, written: &HashMap<JobId, HashSet<u32>>) -> Vec<Pending> {
    inner.ledger.read(|jobs| {
        let mut out = Vec::new();
        for (id, rec) in jobs {
            let Some(dir) = &rec.spec.collect_dir else {
                continue;
            };
            if rec.spec.submitter != inner.id || rec.collected.0 || rec.cancelled.0 {
                continue;
            }
            if !submitted_here(inner, id) {
                continue;
            }
            let done = written.get(id);
            for t in rec.tasks.values() {
                let Some(d) = t.winning_done() else { continue };
                for (frame, output) in &d.outputs {
                    if done.is_none_or(|w| !w.contains(frame)) {
                        out.push(Pending {
                            job: *id,
                            node: d.node.clone(),
                            dir: PathBuf::from(dir),
                            frame: *frame,
                            output: output.clone(),
                            file: collected_name(&rec.spec.engine, *frame, &output.ext),
                        });
                    }
                }
            }
        }
        out
    })
}

/// The name a collected frame gets.
pub fn frame_file_name(frame: u32, ext: &str) -> String {
    format!("frame_{frame:04}.{ext}")
}

/// The name a collected output gets: an encode job's one output is the
/// movie, `movie.mp4` or `movie.mov` next to the frames.
pub fn collected_name(engine: &str, frame: u32, ext: &str) -> String {
    if engine == crate::render::ENCODE_ENGINE {
        format!("movie.{ext}")
    } else {
        frame_file_name(frame, ext)
    }
}

/// Fetches the frames each renderer made in a few requests rather than two
/// per frame (`fetch_many.rs`); `write_frame` fetches what this missed.
async fn fetch_together(inner: &Arc<Inner>, pending: &[Pending]) {
    let elsewhere = pending
        .iter()
        .filter(|p| p.node != inner.id)
        .map(|p| (p.node.clone(), p.output.blob));
    for (node, blobs) in super::fetch_many::by_node(elsewhere) {
        inner.fetch_many(&node, blobs).await;
    }
}

async fn write_frame(inner: &Arc<Inner>, p: &Pending) -> Result<(), String> {
    inner
        .ensure_blob(p.output.blob, std::slice::from_ref(&p.node))
        .await?;
    let store = inner.store.clone();
    let dest = p.dir.join(&p.file);
    let (dir, blob) = (p.dir.clone(), p.output.blob);
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        store.export_file(blob, &dest).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Mark jobs whose every frame is written.
async fn finish(inner: &Inner, written: &mut HashMap<JobId, HashSet<u32>>) {
    let complete: Vec<(JobId, String, Option<String>)> = inner.ledger.read(|jobs| {
        written
            .iter()
            .filter_map(|(id, frames)| {
                let rec = jobs.get(id)?;
                let all = rec.spec.frames.count() == frames.len() as u64;
                (all && !rec.collected.0)
                    .then(|| (*id, rec.spec.name.clone(), rec.spec.collect_dir.clone()))
            })
            .collect()
    });
    for (id, name, dir) in complete {
        let Some(base) = inner.ledger.read(|jobs| jobs.get(&id).map(|r| r.header())) else {
            continue;
        };
        match inner.commit(id, ops::collected(&base)).await {
            Ok(()) => {
                written.remove(&id);
                let dir = dir
                    .as_deref()
                    .map(Path::new)
                    .map(|d| d.display().to_string())
                    .unwrap_or_default();
                inner.events.push(
                    Severity::Info,
                    "outputs_collected",
                    Some(id),
                    None,
                    format!("job {name}: every frame written to {dir}"),
                );
            }
            Err(e) => tracing::warn!("marking job {} collected: {e}", id.short()),
        }
    }
}
