//! What the node does with a decoded record, minus disk and network: the
//! checks, the merge and the derived views, shared by the gossip and sync
//! targets because both hand records to the same `Ledger::apply_remote`.
//!
//! A record's id is the hash of its spec, which no fuzzer can forge, so the
//! record is checked twice: under the id it came with (what the node does),
//! then under the id of its own spec (what a hostile peer that hashes its
//! hostile spec honestly gets through). Only the second lets the fuzzer reach
//! the per-task checks, the merge and the views.
//!
//! Laws asserted where they are cheap: a checked record re-encodes to itself,
//! merging is idempotent and commutative, and two replicas that merged the
//! same records in either order hash alike (what sync compares).

use std::collections::BTreeMap;

use renderswarm::codec;
use renderswarm::ledger::crdt::Crdt;
use renderswarm::ledger::{
    self, AlertId, AlertRecord, AllLive, JobId, JobRecord, alerts, merge_into, validate,
};

/// Tasks above this are not walked for the derived views: `progress` is
/// linear in the task count (up to a million), which would turn every large
/// but valid job into a slow input without exercising anything new.
const MAX_TASKS_VIEWED: u32 = 4096;

/// Check, merge and view one job record received under `claimed`.
/// Returns the id the record is checked under, if it passed.
pub fn job(claimed: JobId, rec: &JobRecord) -> Option<JobId> {
    let _ = validate::check_record(claimed, rec);
    let id = ledger::job_id(&rec.spec);
    validate::check_record(id, rec).ok()?;

    let bytes = codec::encode(rec);
    let back: JobRecord = codec::decode(&bytes, usize::MAX).expect("a checked record re-decodes");
    assert_eq!(&back, rec, "a checked record re-encodes to itself");

    // Idempotent: a second delivery of the same record changes nothing.
    let mut jobs = BTreeMap::new();
    let base = JobRecord::new(rec.spec.clone());
    merge_into(&mut jobs, id, &base).expect("same spec");
    merge_into(&mut jobs, id, rec).expect("same spec");
    let again = merge_into(&mut jobs, id, rec).expect("same spec");
    assert!(!again.any(), "merging a record twice changed it: {again:?}");

    // Commutative: base ⊔ rec == rec ⊔ base, byte for byte.
    let mut other = rec.clone();
    other.try_merge(&base).expect("same spec");
    let merged = &jobs[&id];
    assert_eq!(&other, merged, "merge is not commutative");
    assert_eq!(ledger::record_hash(&other), ledger::record_hash(merged));
    assert!(merged.max_lamport() >= rec.max_lamport());

    view(id, merged);
    Some(id)
}

/// The derived views every page and scheduler decision reads.
fn view(id: JobId, rec: &JobRecord) {
    let count = rec.spec.task_count();
    if count > MAX_TASKS_VIEWED {
        return;
    }
    let p = rec.progress(id, &AllLive);
    assert_eq!(
        p.tasks_pending + p.tasks_running + p.tasks_done + p.tasks_failed,
        count
    );
    assert!(p.frames_done <= p.frames_total);
    let _ = rec.status_of(&p);
    let _ = rec.failures_by_node();
    for (&i, t) in &rec.tasks {
        let _ = t.winning_claim();
        let _ = t.winning_done();
        let _ = t.next_epoch();
        let _ = t.failures(rec.retry_generation.0);
        let _ = t.last_failure();
        for c in &t.claims {
            let _ = t.end_of(c);
        }
        let frames = rec.spec.task_frames(i);
        for f in frames {
            assert_eq!(rec.spec.task_of_frame(f), Some(i), "frame {f} of task {i}");
        }
    }
}

/// Merge two checked records of the same job both ways: a join must not
/// depend on which replica held which.
#[allow(dead_code)] // the sync target's; gossip carries one record
pub fn merge_pair(a: &JobRecord, b: &JobRecord) {
    let (mut ab, mut ba) = (a.clone(), b.clone());
    let (Ok(_), Ok(_)) = (ab.try_merge(b), ba.try_merge(a)) else {
        return;
    };
    assert_eq!(ab, ba, "merge is not commutative");
    assert!(!ab.try_merge(a).expect("same spec").any(), "not absorbing");
}

/// Check and merge one alert record.
pub fn alert(_id: AlertId, rec: &AlertRecord) {
    if alerts::check_alert(rec).is_err() {
        return;
    }
    let mut mine = rec.empty_like();
    mine.merge(rec);
    assert!(
        !mine.clone().merge(rec),
        "merging an alert twice changed it"
    );
    let mut other = rec.clone();
    other.merge(&rec.empty_like());
    assert_eq!(mine, other, "alert merge is not commutative");
    let _ = mine.winning_claim();
    let _ = mine.next_epoch();
    let _ = mine.delivered();
}
