//! The ledger's lattice laws and replica convergence, property-tested.
//!
//! What belongs here: properties of `ledger` that must hold for every input
//! (merge laws on whole records; replicas converging byte for byte under any
//! delivery order with duplicates; persistence preserving records exactly).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use renderswarm::codec;
use renderswarm::hash::Hash;
use renderswarm::ledger::crdt::{Flag, Lww, Max};
use renderswarm::ledger::*;

pub(crate) fn spec(seed: u8) -> JobSpec {
    JobSpec {
        name: format!("job{seed}"),
        scene: Hash::of(&[seed]),
        scene_file: "scene.toml".into(),
        engine: "builtin".into(),
        frames: FrameRange {
            start: 1,
            end: 8,
            step: 1,
        },
        frames_per_task: 2,
        priority: 0,
        output_format: None,
        requirements: BTreeSet::new(),
        max_attempts: 3,
        timeout_secs: None,
        collect_dir: None,
        options: BTreeMap::new(),
        submitter: NodeId::new("n0"),
        submitted_ms: u64::from(seed),
    }
}

fn node() -> impl Strategy<Value = NodeId> {
    (0u8..3).prop_map(|n| NodeId::new(format!("n{n}")))
}

fn stamp() -> impl Strategy<Value = Stamp> {
    (0u64..5, node()).prop_map(|(lamport, node)| Stamp { lamport, node })
}

fn task_state() -> impl Strategy<Value = TaskState> {
    let claim = (1u32..4, 0u64..6, node()).prop_map(|(epoch, lamport, node)| Claim {
        epoch,
        lamport,
        node,
    });
    let start = (1u32..4, node()).prop_map(|(epoch, node)| Start { epoch, node });
    let end =
        (1u32..4, node(), 0u32..2, any::<bool>()).prop_map(|(epoch, node, generation, failed)| {
            End {
                epoch,
                node,
                generation,
                kind: if failed {
                    EndKind::Failed
                } else {
                    EndKind::Released
                },
                reason: "boom".into(),
                log: None,
            }
        });
    let done = (1u32..4, node(), 0u64..6, 0u8..2).prop_map(|(epoch, node, lamport, out)| Done {
        node,
        epoch,
        lamport,
        render_ms: 10,
        ..done_outputs(out)
    });
    (
        prop::collection::btree_set(claim, 0..4),
        prop::collection::btree_set(start, 0..3),
        prop::collection::btree_set(end, 0..3),
        prop::collection::btree_set(done, 0..2),
    )
        .prop_map(|(claims, starts, ends, dones)| TaskState {
            claims: claims.into_iter().collect(),
            starts: starts.into_iter().collect(),
            ends: ends.into_iter().collect(),
            dones: dones.into_iter().collect(),
        })
}

// Outputs are filled in per task by `fix_outputs`, which knows the frames.
fn done_outputs(variant: u8) -> Done {
    Done {
        outputs: renderswarm::ledger::Outputs::from([(
            u32::MAX,
            Output {
                blob: Hash::of(&[variant]),
                ext: "png".into(),
            },
        )]),
        node: NodeId::default(),
        epoch: 0,
        lamport: 0,
        render_ms: 0,
    }
}

fn fix_outputs(rec: &mut JobRecord) {
    for (i, t) in rec.tasks.iter_mut() {
        let frames = rec.spec.task_frames(*i);
        t.dones = std::mem::take(&mut t.dones)
            .into_iter()
            .map(|mut d| {
                let variant = d
                    .outputs
                    .values()
                    .next()
                    .map(|o| o.blob)
                    .unwrap_or_default();
                d.outputs = frames
                    .iter()
                    .map(|f| {
                        (
                            *f,
                            Output {
                                blob: variant,
                                ext: "png".into(),
                            },
                        )
                    })
                    .collect();
                d
            })
            .collect();
    }
}

fn record(seed: u8) -> impl Strategy<Value = JobRecord> {
    (
        (stamp(), any::<bool>())
            .prop_map(|(s, p)| Lww::new(s, if p { Control::Paused } else { Control::Active })),
        (stamp(), -2i32..3).prop_map(|(s, v)| Lww::new(s, v)),
        any::<bool>(),
        any::<bool>(),
        0u32..3,
        prop::collection::btree_map(0u32..4, task_state(), 0..4),
    )
        .prop_map(
            move |(control, priority, cancelled, collected, generation, tasks)| {
                let mut rec = JobRecord::new(spec(seed));
                rec.control = control;
                rec.priority = priority;
                rec.cancelled = Flag(cancelled);
                rec.collected = Flag(collected);
                rec.retry_generation = Max(generation);
                rec.tasks = tasks;
                fix_outputs(&mut rec);
                rec
            },
        )
}

fn join(a: &JobRecord, b: &JobRecord) -> JobRecord {
    let mut out = a.clone();
    out.try_merge(b).expect("same spec");
    out
}

fn bytes(r: &JobRecord) -> Vec<u8> {
    codec::encode(r)
}

proptest! {
    #[test]
    fn merge_is_commutative(a in record(1), b in record(1)) {
        prop_assert_eq!(bytes(&join(&a, &b)), bytes(&join(&b, &a)));
    }

    #[test]
    fn merge_is_associative(a in record(1), b in record(1), c in record(1)) {
        prop_assert_eq!(bytes(&join(&join(&a, &b), &c)), bytes(&join(&a, &join(&b, &c))));
    }

    #[test]
    fn merge_is_idempotent(a in record(1), b in record(1)) {
        prop_assert_eq!(bytes(&join(&a, &a)), bytes(&a));
        let ab = join(&a, &b);
        let mut again = ab.clone();
        let touched = again.try_merge(&b).expect("same spec");
        prop_assert!(!touched.any(), "re-merging reports no change");
        prop_assert_eq!(bytes(&again), bytes(&ab));
    }

    /// N replicas receive every delta (of two jobs), each in its own random
    /// order, with random duplicates and random extra subsets in between:
    /// they end byte-identical.
    #[test]
    fn replicas_converge(
        deltas in prop::collection::vec((0u8..2).prop_flat_map(|s| record(s).prop_map(move |r| (s, r))), 1..12),
        orders in prop::collection::vec((Just(()), any::<u64>()), 2..6),
        dup_seed in any::<u64>(),
    ) {
        let deltas: Vec<(JobId, JobRecord)> = deltas.into_iter().map(|(_, r)| (job_id(&r.spec), r)).collect();
        let mut replicas = Vec::new();
        for (k, (_, seed)) in orders.iter().enumerate() {
            let mut sequence: Vec<usize> = (0..deltas.len()).collect();
            shuffle(&mut sequence, *seed);
            // Duplicates, and a random subset delivered early.
            let mut rng = dup_seed ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let extra: Vec<usize> = (0..deltas.len()).filter(|_| next(&mut rng).is_multiple_of(3)).collect();
            let mut all = extra.clone();
            all.extend(sequence);
            all.extend(extra);
            let mut jobs = BTreeMap::new();
            for i in all {
                let (id, rec) = &deltas[i];
                merge_into(&mut jobs, *id, rec).expect("specs agree");
            }
            replicas.push(codec::encode(&jobs));
        }
        for r in &replicas[1..] {
            prop_assert_eq!(r, &replicas[0]);
        }
    }

    /// Derived status never goes backwards from Done under further merges.
    #[test]
    fn done_absorbs(a in record(1), b in record(1)) {
        let id = job_id(&a.spec);
        let ab = join(&a, &b);
        for (i, st) in a.task_statuses(id, &AllLive).iter().enumerate() {
            if *st == TaskStatus::Done {
                prop_assert_eq!(ab.task_statuses(id, &AllLive)[i], TaskStatus::Done);
            }
        }
    }
}

fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn shuffle(v: &mut [usize], seed: u64) {
    let mut s = seed;
    for i in (1..v.len()).rev() {
        let j = (next(&mut s) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Records survive a flush and a reopen exactly, and the clock does not go back.
#[test]
fn persistence_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let me = NodeId::new("n0");
    let ledger = Ledger::open(&path, me.clone()).unwrap();
    let (id, rec) = ledger.submit(spec(7)).unwrap();
    let claim = Claim {
        epoch: 1,
        lamport: ledger.clock().tick(),
        node: me.clone(),
    };
    let seq = ledger.apply_local(id, &ops::claim(&rec, 2, claim)).unwrap();
    ledger.flush_to(seq).unwrap();
    let stamp = ledger.stamp();
    ledger
        .apply_local(id, &ops::control(&rec, stamp, Control::Paused))
        .unwrap();
    ledger.flush().unwrap();
    let digest = ledger.root_digest();
    let clock = ledger.clock().now();
    drop(ledger);

    let again = Ledger::open(&path, me).unwrap();
    assert_eq!(again.root_digest(), digest);
    assert!(again.clock().now() >= clock);
    let rec = again.job(id).unwrap().unwrap();
    assert_eq!(rec.control.value, Control::Paused);
    assert_eq!(rec.tasks[&2].claims.len(), 1);
}

/// A claim and a done for every task of `rec`'s job, made on `ledger`.
pub(crate) fn render_all(ledger: &Ledger, id: JobId, rec: &JobRecord) {
    let me = ledger.node().clone();
    for task in 0..rec.spec.task_count() {
        let claim = Claim {
            epoch: 1,
            lamport: ledger.clock().tick(),
            node: me.clone(),
        };
        ledger
            .apply_local(id, &ops::claim(rec, task, claim))
            .unwrap();
        let frames = rec.spec.task_frames(task);
        let outputs = frames.iter().map(|f| {
            let blob = Hash::of(&f.to_be_bytes());
            (
                *f,
                Output {
                    blob,
                    ext: "png".into(),
                },
            )
        });
        let done = Done {
            outputs: outputs.collect(),
            node: me.clone(),
            epoch: 1,
            lamport: ledger.clock().tick(),
            render_ms: 10,
        };
        ledger.apply_local(id, &ops::done(rec, task, done)).unwrap();
    }
}

fn tasks_in_memory(ledger: &Ledger, id: JobId) -> usize {
    ledger.read(|jobs| jobs[&id].tasks.len())
}

/// An archived job keeps its header in memory and its tasks in the file,
/// whole, whether they were flushed before the archive or not, and a
/// reopened ledger leaves them there too.
#[test]
fn an_archived_job_keeps_its_tasks_on_disk_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let me = NodeId::new("n0");
    let ledger = Ledger::open(&path, me.clone()).unwrap();
    let (id, rec) = ledger.submit(spec(3)).unwrap();
    render_all(&ledger, id, &rec);
    ledger.flush().unwrap();
    // The last task's rows are still unflushed when the archive comes.
    let late = Claim {
        epoch: 2,
        lamport: ledger.clock().tick(),
        node: me.clone(),
    };
    ledger.apply_local(id, &ops::claim(&rec, 3, late)).unwrap();
    let whole = ledger.job(id).unwrap().unwrap();
    assert_eq!(whole.tasks.len(), 4);
    assert_eq!(tasks_in_memory(&ledger, id), 4);

    ledger.apply_local(id, &ops::archive(&rec)).unwrap();
    assert_eq!(tasks_in_memory(&ledger, id), 0, "tasks left memory");
    let mut want = whole.clone();
    want.archived = Flag(true);
    assert_eq!(ledger.job(id).unwrap().unwrap(), want, "before the flush");
    ledger.flush().unwrap();
    assert_eq!(ledger.job(id).unwrap().unwrap(), want, "after the flush");
    let digest = ledger.root_digest();
    drop(ledger);

    let again = Ledger::open(&path, me).unwrap();
    assert_eq!(tasks_in_memory(&again, id), 0, "not loaded");
    assert_eq!(again.job(id).unwrap().unwrap(), want, "reopened");
    assert_eq!(again.root_digest(), digest);
    assert_eq!(
        again.read_job(id, |r| r.tasks[&3].claims.len()).unwrap(),
        Some(2)
    );
}

/// Deletes every task row of job `id` from a closed ledger file, as if
/// they could not be read: what still answers did not read them.
fn delete_task_rows(path: &std::path::Path, id: JobId) {
    let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("tasks");
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut tasks = txn.open_table(table).unwrap();
        let first = [id.0.0.as_slice(), &[0; 4]].concat();
        let last = [id.0.0.as_slice(), &[0xff; 4]].concat();
        tasks
            .retain_in(first.as_slice()..=last.as_slice(), |_, _| false)
            .unwrap();
    }
    txn.commit().unwrap();
}

/// An archived job's summary (what a list of jobs shows: its counts and
/// status) is taken as its tasks leave memory and kept in the file beside
/// its header, so a reopened ledger lists it without reading a task; a
/// header that changes after the archive (a cancel from a node that had
/// not heard of it) makes the summary be derived again, never reused.
#[test]
fn an_archived_jobs_summary_is_kept_beside_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let me = NodeId::new("n0");
    let ledger = Ledger::open(&path, me.clone()).unwrap();
    let (id, rec) = ledger.submit(spec(5)).unwrap();
    render_all(&ledger, id, &rec);
    assert_eq!(ledger.summary(id).unwrap(), None, "not archived");
    let whole = ledger.job(id).unwrap().unwrap();
    ledger.apply_local(id, &ops::archive(&rec)).unwrap();
    let summary = ledger.summary(id).unwrap().unwrap();
    assert_eq!(summary, whole.summary(id));
    assert_eq!(summary.status, JobStatus::Done);
    assert_eq!(
        (summary.progress.tasks_done, summary.progress.frames_done),
        (4, 8)
    );
    ledger.close().unwrap();
    drop(ledger);

    delete_task_rows(&path, id);
    let again = Ledger::open(&path, me.clone()).unwrap();
    assert!(
        again.job(id).unwrap().unwrap().tasks.is_empty(),
        "rows gone"
    );
    assert_eq!(again.summary(id).unwrap(), Some(summary.clone()), "kept");

    // A cancel merged after the archive: the kept row no longer matches.
    again.apply_remote(id, &ops::cancel(&rec)).unwrap();
    again.close().unwrap();
    drop(again);
    let third = Ledger::open(&path, me).unwrap();
    let derived = third.summary(id).unwrap().unwrap();
    assert_eq!(derived.status, JobStatus::Cancelled, "derived again");
    assert_eq!(derived.progress.tasks_pending, 4, "from the rows left");
}

/// The root digest keeps each record's hash until the record changes: after
/// every change it equals the digest of a replica that never cached one.
#[test]
fn the_root_digest_follows_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let a = Ledger::open(&dir.path().join("a.redb"), NodeId::new("n0")).unwrap();
    let (id, rec) = a.submit(spec(6)).unwrap();
    let mut seen = vec![a.root_digest()];
    let archive = || {
        a.apply_local(id, &ops::archive(&rec)).unwrap();
    };
    let steps: [&dyn Fn(); 2] = [&|| render_all(&a, id, &rec), &archive];
    for (n, step) in steps.iter().enumerate() {
        step();
        let digest = a.root_digest();
        assert!(
            !seen.contains(&digest),
            "step {n} left the digest as it was"
        );
        seen.push(digest);
        let fresh =
            Ledger::open(&dir.path().join(format!("b{n}.redb")), NodeId::new("n1")).unwrap();
        fresh
            .apply_remote(id, &a.job(id).unwrap().unwrap())
            .unwrap();
        assert_eq!(fresh.root_digest(), digest, "step {n}");
    }
}

/// A task delta for an archived job changes nothing, in memory or in the
/// file; the archive itself reaches a replica that still holds the tasks,
/// which then agrees with the first on the ledger's digest.
#[test]
fn an_archived_job_takes_no_task_deltas_and_replicas_agree() {
    let dir = tempfile::tempdir().unwrap();
    let a = Ledger::open(&dir.path().join("a.redb"), NodeId::new("n0")).unwrap();
    let b = Ledger::open(&dir.path().join("b.redb"), NodeId::new("n1")).unwrap();
    let (id, rec) = a.submit(spec(4)).unwrap();
    render_all(&a, id, &rec);
    let whole = a.job(id).unwrap().unwrap();
    assert!(b.apply_remote(id, &whole).unwrap());
    let archive = ops::archive(&rec);
    a.apply_local(id, &archive).unwrap();
    a.flush().unwrap();
    let before = a.job(id).unwrap().unwrap();

    let mut stray = rec.empty_like();
    stray.tasks.insert(
        1,
        TaskState {
            claims: [Claim {
                epoch: 9,
                lamport: 99,
                node: NodeId::new("n2"),
            }]
            .into_iter()
            .collect(),
            ..TaskState::default()
        },
    );
    assert!(
        !a.apply_remote(id, &stray).unwrap(),
        "a stray claim changed the job"
    );
    a.flush().unwrap();
    assert_eq!(a.job(id).unwrap().unwrap(), before);
    assert_eq!(tasks_in_memory(&a, id), 0);

    assert!(b.apply_remote(id, &archive).unwrap());
    b.flush().unwrap();
    assert_eq!(tasks_in_memory(&b, id), 0);
    assert_eq!(b.job(id).unwrap().unwrap(), before);
    assert_eq!(a.root_digest(), b.root_digest());
}

fn alert_at(time_ms: u64, what: &str) -> (AlertId, AlertRecord) {
    let entry = AlertEntry {
        time_ms,
        node: NodeId::new("n1"),
        kind: "task_failed".into(),
        severity: "warning".into(),
        node_name: "n1".into(),
        job: None,
        job_name: None,
        frames: vec![1],
        reason: Some(what.into()),
        log_tail: Some("the log's last lines\n".repeat(50)),
        message: what.into(),
    };
    (
        AlertId::of("task_failed", &[what.as_bytes()]),
        AlertRecord::new(entry),
    )
}

/// Alerts are offered in sync for 30 days after they happened, taken from a
/// peer for a day more, then dropped from memory and from the file.
#[test]
fn alerts_leave_the_ledger_after_their_time() {
    use renderswarm::ledger::alerts::{ALERT_GRACE_MS, ALERT_KEEP_MS, now_ms};
    const HOUR: u64 = 3600 * 1000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let ledger = Ledger::open(&path, NodeId::new("n0")).unwrap();
    let now = now_ms();
    let (fresh, fresh_rec) = alert_at(now, "fresh");
    let (late, late_rec) = alert_at(now - ALERT_KEEP_MS - HOUR, "in the grace day");
    let (gone, gone_rec) = alert_at(now - ALERT_KEEP_MS - ALERT_GRACE_MS - HOUR, "gone");
    assert!(ledger.apply_alert_remote(fresh, &fresh_rec).unwrap());
    assert!(ledger.apply_alert_remote(late, &late_rec).unwrap());
    assert!(
        !ledger.apply_alert_remote(gone, &gone_rec).unwrap(),
        "taken after its time"
    );
    let held = |l: &Ledger| l.read_alerts(|a| a.keys().copied().collect::<BTreeSet<_>>());
    assert_eq!(held(&ledger), BTreeSet::from([fresh, late]));
    let offered: BTreeSet<AlertId> = ledger.alert_digest().into_keys().collect();
    assert_eq!(
        offered,
        BTreeSet::from([fresh]),
        "sync offers only the fresh one"
    );
    ledger.flush().unwrap();

    // A day later by this clock the late one is past its grace day.
    assert_eq!(ledger.expire_alerts(now + ALERT_GRACE_MS).unwrap(), 1);
    assert_eq!(held(&ledger), BTreeSet::from([fresh]));
    // Its row went too: a reopened ledger (now) would still keep it.
    drop(ledger);
    let again = Ledger::open(&path, NodeId::new("n0")).unwrap();
    assert_eq!(held(&again), BTreeSet::from([fresh]));
    // And the fresh one, when its time comes.
    assert_eq!(
        again
            .expire_alerts(now + ALERT_KEEP_MS + ALERT_GRACE_MS + HOUR)
            .unwrap(),
        1
    );
    drop(again);
    let empty = Ledger::open(&path, NodeId::new("n0")).unwrap();
    assert!(held(&empty).is_empty());
}

/// The alert digest's hashes (cached between syncs) follow every change of
/// the record: a stale one would make sync think two nodes agree.
#[test]
fn an_alerts_digest_entry_follows_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("l.redb"), NodeId::new("n0")).unwrap();
    let (id, rec) = alert_at(renderswarm::ledger::alerts::now_ms(), "one");
    ledger.apply_alert_remote(id, &rec).unwrap();
    let hash_now = |l: &Ledger| l.read_alerts(|a| Hash::of(&codec::encode(&a[&id])));
    let first = ledger.alert_digest()[&id];
    assert_eq!(first, hash_now(&ledger));
    let mut sent = rec.empty_like();
    sent.sent.insert(Sent {
        epoch: 1,
        node: NodeId::new("n1"),
        lamport: 7,
    });
    assert!(ledger.apply_alert_remote(id, &sent).unwrap());
    let second = ledger.alert_digest()[&id];
    assert_ne!(second, first);
    assert_eq!(second, hash_now(&ledger));
}

/// A record whose spec does not hash to its id is refused, and nothing of it is kept.
#[test]
fn forged_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("l.redb"), NodeId::new("n0")).unwrap();
    let rec = JobRecord::new(spec(1));
    let wrong = job_id(&spec(2));
    let err = ledger.apply_remote(wrong, &rec).unwrap_err();
    assert!(err.to_string().contains("hashes to"), "{err}");
    assert!(ledger.job(wrong).unwrap().is_none());
}
