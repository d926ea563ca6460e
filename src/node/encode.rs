//! Movies: `submit --encode mp4|prores` adds, next to the render job, an
//! encode job that turns its frames into one movie once they are all in.
//!
//! Why a job of its own rather than a step of the submitter: it is created
//! at submission, so it is in every ledger before anything renders; it is
//! claimed, leased, retried, reported and collected like any other job, so
//! a submitter that is gone by the time the frames are in leaves it to any
//! node with ffmpeg, with no new protocol. Its spec names the render job
//! (`encode_of`), the codec and the frame rate; its "scene" is the render
//! job's scene (no new blob: the encode never unpacks it), its one task
//! renders "frame" 1, the movie. The scheduler holds it back until every
//! task of the render job is done, and leaves it to the submitter while the
//! submitter is alive and has ffmpeg (it has collected the frames already).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::Inner;
use crate::ledger::{
    ENCODE_CODEC_OPTION, ENCODE_FPS_OPTION, ENCODE_OF_OPTION, FrameRange, JobId, JobRecord,
    JobSpec, NodeId, Output,
};
use crate::render::{Codec, ENCODE_ENGINE, ENCODE_SETTINGS_FILE, EncodeSettings};

/// The encode job of the render job `parent`.
pub(crate) fn encode_spec(parent: JobId, spec: &JobSpec, codec: Codec, fps: u32) -> JobSpec {
    let options = BTreeMap::from([
        (ENCODE_OF_OPTION.to_string(), parent.to_string()),
        (ENCODE_CODEC_OPTION.to_string(), codec.as_str().to_string()),
        (ENCODE_FPS_OPTION.to_string(), fps.to_string()),
    ]);
    JobSpec {
        name: format!("{} ({})", spec.name, codec.as_str()),
        scene: spec.scene,
        scene_file: spec.scene_file.clone(),
        engine: ENCODE_ENGINE.to_string(),
        frames: FrameRange {
            start: 1,
            end: 1,
            step: 1,
        },
        frames_per_task: 1,
        priority: spec.priority,
        output_format: None,
        requirements: Default::default(),
        max_attempts: spec.max_attempts,
        timeout_secs: None,
        collect_dir: spec.collect_dir.clone(),
        options,
        submitter: spec.submitter.clone(),
        submitted_ms: spec.submitted_ms.saturating_add(1),
    }
}

/// The render job an encode job encodes, when `spec` is one.
pub(crate) fn parent_of(spec: &JobSpec) -> Option<JobId> {
    if spec.engine != ENCODE_ENGINE {
        return None;
    }
    spec.options.get(ENCODE_OF_OPTION)?.parse().ok()
}

/// Whether `rec` may run now: not an encode job, or one whose render job
/// has every task done.
pub(crate) fn inputs_ready(jobs: &BTreeMap<JobId, JobRecord>, rec: &JobRecord) -> bool {
    if rec.spec.engine != ENCODE_ENGINE {
        return true;
    }
    parent_of(&rec.spec)
        .and_then(|p| jobs.get(&p))
        .is_some_and(all_done)
}

fn all_done(rec: &JobRecord) -> bool {
    (0..rec.spec.task_count()).all(|i| {
        rec.tasks
            .get(&i)
            .is_some_and(|t| t.winning_done().is_some())
    })
}

/// The settings an encode job's spec carries.
pub(crate) fn settings(spec: &JobSpec) -> Result<EncodeSettings, String> {
    let codec: Codec = spec
        .options
        .get(ENCODE_CODEC_OPTION)
        .ok_or("the encode job names no codec")?
        .parse()?;
    let fps: u32 = spec
        .options
        .get(ENCODE_FPS_OPTION)
        .and_then(|f| f.parse().ok())
        .ok_or("the encode job names no frame rate")?;
    Ok(EncodeSettings { codec, fps })
}

/// Every frame of the render job in frame order: its output and renderer.
fn frames_of(rec: &JobRecord) -> Vec<(u32, Output, NodeId)> {
    let mut out = Vec::new();
    for t in rec.tasks.values() {
        if let Some(d) = t.winning_done() {
            for (frame, o) in &d.outputs {
                out.push((*frame, o.clone(), d.node.clone()));
            }
        }
    }
    out.sort_by_key(|(f, _, _)| *f);
    out
}

/// Lays out the render job's frames as `000001.EXT`, ... and the settings
/// file in `dir`, fetching frames this node does not hold. An `Err` means a
/// frame could not be fetched (no holder reachable): not the task's fault.
pub(crate) async fn lay_out_inputs(
    inner: &Arc<Inner>,
    encode: &JobSpec,
    dir: &Path,
) -> Result<(), LayoutError> {
    let settings = settings(encode).map_err(LayoutError::Broken)?;
    let parent = parent_of(encode)
        .ok_or_else(|| LayoutError::Broken("the encode job names no render job".into()))?;
    let frames = inner
        .ledger
        .read_job(parent, frames_of)
        .map_err(|e| LayoutError::Broken(format!("render job {}: {e}", parent.short())))?
        .ok_or_else(|| LayoutError::Broken(format!("render job {} is unknown", parent.short())))?;
    std::fs::create_dir_all(dir).map_err(|e| LayoutError::Broken(e.to_string()))?;
    let text = toml::to_string(&settings).map_err(|e| LayoutError::Broken(e.to_string()))?;
    std::fs::write(dir.join(ENCODE_SETTINGS_FILE), text)
        .map_err(|e| LayoutError::Broken(format!("cannot write the settings: {e}")))?;
    for (seq, (frame, output, node)) in frames.iter().enumerate() {
        inner
            .ensure_blob(output.blob, std::slice::from_ref(node))
            .await
            .map_err(|e| LayoutError::Unreachable(format!("frame {frame}: {e}")))?;
        let dest = dir.join(format!("{:06}.{}", seq + 1, output.ext));
        let (store, blob) = (inner.store.clone(), output.blob);
        tokio::task::spawn_blocking(move || store.export_file(blob, &dest))
            .await
            .map_err(|e| LayoutError::Broken(e.to_string()))?
            .map_err(|e| LayoutError::Broken(format!("frame {frame}: {e}")))?;
    }
    Ok(())
}

/// Why an encode task's inputs are not laid out.
#[derive(Debug)]
pub(crate) enum LayoutError {
    /// A frame is on no reachable node for now.
    Unreachable(String),
    /// The job or this node's disk is at fault.
    Broken(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encode_job_follows_its_render_job_and_carries_its_settings() {
        let frames = FrameRange {
            start: 1,
            end: 4,
            step: 1,
        };
        let parent_spec = JobSpec {
            name: "shot".into(),
            priority: 5,
            collect_dir: Some("/out".into()),
            ..crate::ledger::types::tests::spec(frames, 1)
        };
        let parent = crate::ledger::job_id(&parent_spec);
        let spec = encode_spec(parent, &parent_spec, Codec::Prores, 30);
        assert_eq!(spec.name, "shot (prores)");
        assert_eq!(spec.engine, ENCODE_ENGINE);
        assert_eq!(spec.task_count(), 1);
        assert_eq!(
            (spec.priority, spec.collect_dir.as_deref()),
            (5, Some("/out"))
        );
        assert!(
            spec.submitted_ms > parent_spec.submitted_ms,
            "sorts after its render job"
        );
        assert_eq!(
            settings(&spec),
            Ok(EncodeSettings {
                codec: Codec::Prores,
                fps: 30
            })
        );
        let mut jobs = BTreeMap::new();
        let rec = JobRecord::new(spec.clone());
        assert!(!inputs_ready(&jobs, &rec), "render job unknown: not ready");
        jobs.insert(parent, JobRecord::new(parent_spec));
        assert!(!inputs_ready(&jobs, &rec), "nothing rendered yet");
        assert_eq!(parent_of(&rec.spec), Some(parent));
    }
}
