//! Archiving finished jobs after a retention time (DESIGN.md, "the
//! ledger"): an archived job leaves the job list, the page and the digests
//! nodes compare, and the cache may evict its frames and logs.
//!
//! There is no manager to decide when, so every node decides alike: a job
//! that is finished (done, failed or cancelled), whose frames the submitter
//! has collected if it was asked to, and that was submitted more than the
//! retention time ago is archived by whichever node looks first. The flag
//! is a lattice, so several nodes archiving one job at once agree. The
//! submitter's clock dates the job; a day's skew does not matter at a
//! retention counted in days. `swarm archive JOB` does it by hand.
//!
//! Alerts leave the ledger the same way, by their own time and a fixed
//! rule every node shares (`ledger/alerts.rs`): this only makes it happen.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::{Inner, Severity};
use crate::ledger::{JobId, JobRecord, JobStatus, ops};

/// How often a node looks for jobs to archive.
const EVERY: Duration = Duration::from_secs(600);

/// Until shutdown: archive what is due, now and then.
pub(crate) async fn archive_when_due(inner: Arc<Inner>) {
    let Some(after) = inner.cfg.archive_after else {
        return;
    };
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        for id in due_now(&inner, after) {
            archive(&inner, id).await;
        }
    }
}

/// Until shutdown: drop the alerts past their time, at start and now and
/// then.
pub(crate) async fn expire_alerts(inner: Arc<Inner>) {
    loop {
        let ledger = inner.ledger.clone();
        match tokio::task::spawn_blocking(move || {
            ledger.expire_alerts(crate::ledger::alerts::now_ms())
        })
        .await
        {
            Ok(Ok(0)) | Err(_) => {}
            Ok(Ok(n)) => tracing::debug!("{n} alerts past their time left the ledger"),
            Ok(Err(e)) => tracing::warn!("dropping old alerts: {e}"),
        }
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

fn due_now(inner: &Inner, after: Duration) -> Vec<JobId> {
    let now = super::events::now_ms();
    inner.with_liveness(|live| {
        inner.ledger.read(|jobs| {
            let statuses: BTreeMap<JobId, JobStatus> = jobs
                .iter()
                .filter(|(_, r)| !r.archived.0)
                .map(|(id, r)| (*id, r.status(*id, live)))
                .collect();
            due(jobs, &statuses, now, after)
        })
    })
}

/// The jobs to archive at `now_ms`, given each unarchived job's status. A
/// render job whose encode job is still to finish is not due: the encode
/// job reads its frames, which leave memory with the archive.
pub(crate) fn due(
    jobs: &BTreeMap<JobId, JobRecord>,
    statuses: &BTreeMap<JobId, JobStatus>,
    now_ms: u64,
    after: Duration,
) -> Vec<JobId> {
    let after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
    let is_final = |id: &JobId| statuses.get(id).is_some_and(|s| s.is_final());
    let read_by_open_encodes: HashSet<JobId> = jobs
        .iter()
        .filter(|(id, r)| !r.archived.0 && !is_final(id))
        .filter_map(|(_, r)| super::encode::parent_of(&r.spec))
        .collect();
    jobs.iter()
        .filter(|(id, r)| {
            !r.archived.0
                && is_final(id)
                && !read_by_open_encodes.contains(id)
                && (r.spec.collect_dir.is_none() || r.collected.0)
                && now_ms.saturating_sub(r.spec.submitted_ms) >= after_ms
        })
        .map(|(id, _)| *id)
        .collect()
}

async fn archive(inner: &Inner, id: JobId) {
    let Some(base) = inner
        .ledger
        .read(|jobs| jobs.get(&id).map(JobRecord::header))
    else {
        return;
    };
    let name = base.spec.name.clone();
    match inner.commit(id, ops::archive(&base)).await {
        Ok(()) => inner.events.push(
            Severity::Info,
            "job_changed",
            Some(id),
            None,
            format!(
                "job {name}: archived on {}, finished and past the retention time",
                inner.cfg.name
            ),
        ),
        Err(e) => inner.events.push(
            Severity::Warning,
            "job_changed",
            Some(id),
            None,
            format!("job {name}: could not archive it: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::crdt::Flag;
    use crate::ledger::types::tests::spec;
    use crate::ledger::{FrameRange, job_id};

    const DAY: u64 = 24 * 3600 * 1000;

    fn job(i: u32, submitted_days_ago: u64, collect: bool, collected: bool) -> (JobId, JobRecord) {
        let mut s = spec(
            FrameRange {
                start: i,
                end: i,
                step: 1,
            },
            1,
        );
        s.submitted_ms = (100 - submitted_days_ago) * DAY;
        s.collect_dir = collect.then(|| "/frames".to_string());
        let id = job_id(&s);
        let mut r = JobRecord::new(s);
        r.collected = Flag(collected);
        (id, r)
    }

    #[test]
    fn only_finished_collected_and_old_enough_jobs_are_due() {
        let now = 100 * DAY;
        let after = Duration::from_secs(30 * 24 * 3600);
        let cases = [
            // (days ago, collect dir, collected, status, archived, due)
            (31, false, false, JobStatus::Done, false, true),
            (31, false, false, JobStatus::Failed, false, true),
            (31, false, false, JobStatus::Cancelled, false, true),
            (30, true, true, JobStatus::Done, false, true),
            (29, false, false, JobStatus::Done, false, false),
            (31, false, false, JobStatus::Running, false, false),
            (31, false, false, JobStatus::Paused, false, false),
            (31, false, false, JobStatus::Pending, false, false),
            (31, true, false, JobStatus::Done, false, false),
            (31, false, false, JobStatus::Done, true, false),
        ];
        let mut jobs = BTreeMap::new();
        let mut statuses = BTreeMap::new();
        let mut want = Vec::new();
        for (i, (ago, collect, collected, status, archived, is_due)) in
            cases.into_iter().enumerate()
        {
            let (id, mut rec) = job(i as u32 + 1, ago, collect, collected);
            rec.archived = Flag(archived);
            statuses.insert(id, status);
            jobs.insert(id, rec);
            if is_due {
                want.push(id);
            }
        }
        want.sort();
        assert_eq!(due(&jobs, &statuses, now, after), want);
        assert!(due(&jobs, &statuses, now, Duration::from_secs(3650 * 24 * 3600)).is_empty());
    }

    #[test]
    fn a_render_job_waits_for_its_encode_job_to_finish() {
        let now = 100 * DAY;
        let after = Duration::from_secs(30 * 24 * 3600);
        let (render, render_rec) = job(1, 31, false, false);
        let encode_spec = crate::node::encode::encode_spec(
            render,
            &render_rec.spec,
            crate::render::Codec::Mp4,
            24,
        );
        let encode = job_id(&encode_spec);
        let jobs = BTreeMap::from([(render, render_rec), (encode, JobRecord::new(encode_spec))]);
        let mut statuses =
            BTreeMap::from([(render, JobStatus::Done), (encode, JobStatus::Pending)]);
        assert!(due(&jobs, &statuses, now, after).is_empty());
        statuses.insert(encode, JobStatus::Done);
        let mut both = vec![render, encode];
        both.sort();
        assert_eq!(due(&jobs, &statuses, now, after), both);
    }
}
