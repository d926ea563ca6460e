//! Sync: every byte string is tried as a sync request (what a peer asks this
//! node) and as a sync reply (what a peer answers it), the two messages of
//! `/renderswarm/sync/1`. Every record either carries goes through the
//! checks, merges and views of `common`, in order into one replica as
//! `node::sync::merge_records` does, and records of the same job are merged
//! pairwise both ways: a batch is where two versions of one job meet.

#![no_main]

mod common;

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use renderswarm::ledger::{AlertId, AlertRecord, JobId, JobRecord, merge_into};
use renderswarm::node::wire::{self, SyncReply, SyncRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = wire::decode_sync_request(data) {
        match req {
            SyncRequest::Digest { jobs, alerts } => {
                // What `diff` does with a digest: compare it with ours.
                let mine: BTreeMap<JobId, _> = BTreeMap::new();
                let _ = jobs
                    .iter()
                    .filter(|(id, h)| mine.get(id) != Some(h))
                    .count();
                let _ = alerts.len();
            }
            SyncRequest::Push { jobs, alerts } => records(&jobs, &alerts),
        }
    }
    if let Ok(reply) = wire::decode_sync_reply(data) {
        if let SyncReply::Diff { jobs, alerts, .. } = reply {
            records(&jobs, &alerts);
        }
    }
});

fn records(jobs: &[(JobId, JobRecord)], alerts: &[(AlertId, AlertRecord)]) {
    let mut replica = BTreeMap::new();
    let mut checked: BTreeMap<JobId, Vec<&JobRecord>> = BTreeMap::new();
    for (claimed, rec) in jobs {
        if let Some(id) = common::job(*claimed, rec) {
            merge_into(&mut replica, id, rec).expect("one id, one spec");
            checked.entry(id).or_default().push(rec);
        }
    }
    for same_job in checked.values() {
        for (i, a) in same_job.iter().enumerate() {
            for b in &same_job[i + 1..] {
                common::merge_pair(a, b);
            }
        }
    }
    for (id, rec) in alerts {
        common::alert(*id, rec);
    }
}
