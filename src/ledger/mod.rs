//! The ledger: what is true about every job, replicated on every node with
//! no manager.
//!
//! A map `JobId -> JobRecord` whose every field is a join-semilattice
//! (`crdt.rs`, `merge.rs`), so any two nodes that have seen the same deltas
//! hold byte-identical records whatever the order, duplication or delay.
//! What a record *means* (task and job states, progress, wasted renders,
//! blocklists) is derived, never stored (`derive.rs`). Local changes are
//! small records themselves (`ops.rs`). Records from the network are checked
//! (`validate.rs`) before they are merged.
//!
//! [`Ledger`] is the shared handle a node holds: the records in memory
//! behind a mutex held only for merges and reads, and a redb file behind
//! them (`db.rs`, the only file that knows redb). Merging marks rows dirty;
//! [`Ledger::flush`] writes every dirty row in one transaction, so a burst
//! of deltas costs one fsync (group commit). A node flushes its *own*
//! changes before gossiping them, so a node that crashes right after
//! announcing a claim still knows it made it.
//!
//! An archived job keeps only its header in memory: its tasks, a kilobyte
//! or so each, stay in the file, read back when someone looks at the job
//! (`Ledger::read_job`), and a summary of them (`Summary`: counts and
//! status) kept beside the header, so a list of a year's archives reads no
//! task. A node that runs for a year would otherwise hold every task it
//! ever rendered. Its tasks are frozen there: a task delta
//! that arrives after the archive (a late claim or end from a node that was
//! away) changes nothing, since archived jobs are finished and no longer
//! synced; the header still merges, so the flag reaches every node (one
//! that was away hears of it when its digest lists the job as open: the
//! node it syncs with sends the whole record, `node/sync.rs`).

pub mod alerts;
mod clock;
pub mod crdt;
mod db;
pub mod derive;
mod merge;
pub mod ops;
pub mod types;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

pub use alerts::{AlertEntry, AlertId, AlertRecord, Sent};
pub use clock::Clock;
pub use db::DbError;
pub use derive::{AllLive, JobProgress, JobStatus, Liveness, NoneHold, Summary, TaskStatus};
pub use merge::{SpecConflict, Touched, merge_into};
pub use ops::Delta;
pub use types::*;
pub use validate::Invalid;

use crate::codec;
use crate::hash::Hash;

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("invalid record: {0}")]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Conflict(#[from] SpecConflict),
}

/// Why a job reference did not name exactly one job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lookup {
    #[error("no job matches `{0}`; `swarm jobs` lists the jobs")]
    NotFound(String),
    #[error("`{prefix}` matches {} jobs ({}); give more of the id", .matches.len(), .matches.join(", "))]
    Ambiguous {
        prefix: String,
        matches: Vec<String>,
    },
}

/// A job's id: the hash of its spec's canonical encoding.
pub fn job_id(spec: &JobSpec) -> JobId {
    JobId(Hash::of(&codec::encode(spec)))
}

/// The hash of a record's canonical encoding: equal on two nodes exactly
/// when they hold the same record.
pub fn record_hash(rec: &JobRecord) -> Hash {
    Hash::of(&codec::encode(rec))
}

#[derive(Default)]
struct Dirty {
    header: bool,
    tasks: BTreeSet<TaskIndex>,
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<JobId, JobRecord>,
    dirty: BTreeMap<JobId, Dirty>,
    alerts: BTreeMap<AlertId, AlertRecord>,
    dirty_alerts: BTreeSet<AlertId>,
    /// Bumped by every change; what `flush` has made durable is `persisted`.
    seq: u64,
    /// Record hashes, dropped when a record changes.
    hashes: HashMap<JobId, Hash>,
    /// Alert record hashes, likewise: every sync sends one per alert.
    alert_hashes: HashMap<AlertId, Hash>,
    /// The latest changes, for listeners that want to know which jobs moved.
    recent: std::collections::VecDeque<(u64, JobId)>,
    /// Task rows of jobs archived since the last flush, encoded as their
    /// tasks left memory.
    shelved: Vec<(JobId, TaskIndex, Vec<u8>)>,
    /// Archived jobs' summaries, written with their headers; one whose
    /// header changed is dropped and derived again when asked for.
    summaries: HashMap<JobId, Summary>,
}

/// Changes remembered for [`Ledger::changed_since`].
const RECENT: usize = 8192;

/// The shared ledger of one node.
pub struct Ledger {
    node: NodeId,
    clock: Clock,
    state: Mutex<State>,
    db: Db,
    flush_lock: Mutex<()>,
    persisted: AtomicU64,
    changes: watch::Sender<u64>,
}

use db::{Batch, Db};

impl Ledger {
    /// Open the ledger file at `path` for node `node`.
    pub fn open(path: &Path, node: NodeId) -> Result<Ledger, LedgerError> {
        let db = Db::open(path)?;
        let loaded = db.load()?;
        let clock = Clock::new(loaded.clock);
        for rec in loaded.jobs.values() {
            clock.observe(rec.max_lamport());
        }
        let state = State {
            jobs: loaded.jobs,
            summaries: loaded.summaries,
            alerts: unexpired(loaded.alerts, alerts::now_ms()),
            ..State::default()
        };
        Ok(Ledger {
            node,
            clock,
            state: Mutex::new(state),
            db,
            flush_lock: Mutex::new(()),
            persisted: AtomicU64::new(0),
            changes: watch::channel(0).0,
        })
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A fresh stamp for a local change.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            lamport: self.clock.tick(),
            node: self.node.clone(),
        }
    }

    /// Wakes on every change; the value is the change counter.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-merged record
        // (merges only add), so a poisoned lock is still sound to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read the records.
    pub fn read<R>(&self, f: impl FnOnce(&BTreeMap<JobId, JobRecord>) -> R) -> R {
        f(&self.lock().jobs)
    }

    /// Read one record with all its tasks, an archived job's read back
    /// from the file; `None` if the job is unknown.
    pub fn read_job<R>(
        &self,
        id: JobId,
        f: impl FnOnce(&JobRecord) -> R,
    ) -> Result<Option<R>, LedgerError> {
        let (mut full, shelved) = {
            let state = self.lock();
            let Some(rec) = state.jobs.get(&id) else {
                return Ok(None);
            };
            if !rec.archived.0 {
                return Ok(Some(f(rec)));
            }
            let shelved: Vec<(TaskIndex, Vec<u8>)> = state
                .shelved
                .iter()
                .filter(|(job, _, _)| *job == id)
                .map(|(_, index, bytes)| (*index, bytes.clone()))
                .collect();
            (rec.clone(), shelved)
        };
        full.tasks = self.db.tasks_of(&id)?;
        // Rows not flushed yet are newer than the file's.
        for (index, bytes) in shelved {
            full.tasks.insert(index, db::decode_task(&id, &bytes)?);
        }
        Ok(Some(f(&full)))
    }

    /// A copy of task `index` of job `id`, `None` if either is unknown:
    /// an archived job's task is read from the file alone, not with all of
    /// its job's.
    pub fn task(&self, id: JobId, index: TaskIndex) -> Result<Option<TaskState>, LedgerError> {
        {
            let state = self.lock();
            let Some(rec) = state.jobs.get(&id) else {
                return Ok(None);
            };
            if !rec.archived.0 {
                return Ok(rec.tasks.get(&index).cloned());
            }
            // Rows not flushed yet are newer than the file's.
            let mut newest_first = state.shelved.iter().rev();
            if let Some((_, _, bytes)) = newest_first.find(|(j, i, _)| *j == id && *i == index) {
                return Ok(Some(db::decode_task(&id, bytes)?));
            }
        }
        Ok(self.db.task(&id, index)?)
    }

    /// What a list shows of an archived job (see [`Summary`]), without
    /// reading its tasks once it has been derived; `None` for any job not
    /// archived.
    pub fn summary(&self, id: JobId) -> Result<Option<Summary>, LedgerError> {
        {
            let state = self.lock();
            if !state.jobs.get(&id).is_some_and(|r| r.archived.0) {
                return Ok(None);
            }
            if let Some(s) = state.summaries.get(&id) {
                return Ok(Some(s.clone()));
            }
        }
        // Archived before summaries were kept, or its header changed since.
        let Some((header, summary)) = self.read_job(id, |rec| (rec.header(), rec.summary(id)))?
        else {
            return Ok(None);
        };
        let mut state = self.lock();
        if state.jobs.get(&id).is_some_and(|r| r.header() == header) {
            state.summaries.insert(id, summary.clone());
            // Written with the header at the next flush.
            state.dirty.entry(id).or_default().header = true;
        }
        Ok(Some(summary))
    }

    /// A copy of one record with all its tasks (see [`Ledger::read_job`]).
    pub fn job(&self, id: JobId) -> Result<Option<JobRecord>, LedgerError> {
        self.read_job(id, JobRecord::clone)
    }

    /// Resolve a job id or a unique prefix of one.
    pub fn resolve(&self, reference: &str) -> Result<JobId, Lookup> {
        let prefix = reference.trim().to_ascii_lowercase();
        let state = self.lock();
        let matches: Vec<JobId> = state
            .jobs
            .keys()
            .filter(|id| !prefix.is_empty() && id.to_string().starts_with(&prefix))
            .copied()
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(Lookup::NotFound(reference.to_string())),
            many => Err(Lookup::Ambiguous {
                prefix: reference.to_string(),
                matches: many.iter().take(5).map(|id| id.short()).collect(),
            }),
        }
    }

    /// Add a new job; returns its id and the delta to gossip.
    pub fn submit(&self, spec: JobSpec) -> Result<(JobId, Delta), LedgerError> {
        validate::check_spec(&spec)?;
        let id = job_id(&spec);
        let delta = JobRecord::new(spec);
        self.merge_checked(id, &delta)?;
        Ok((id, delta))
    }

    /// Merge a delta made on this node. Returns the change counter to pass
    /// to [`Ledger::flush_to`] before gossiping the delta.
    pub fn apply_local(&self, id: JobId, delta: &Delta) -> Result<u64, LedgerError> {
        self.merge_checked(id, delta)?;
        Ok(self.lock().seq)
    }

    /// Merge a record or delta from another node, after checking it.
    /// Returns whether anything changed.
    pub fn apply_remote(&self, id: JobId, rec: &JobRecord) -> Result<bool, LedgerError> {
        validate::check_record(id, rec)?;
        self.merge_checked(id, rec)
    }

    fn merge_checked(&self, id: JobId, rec: &JobRecord) -> Result<bool, LedgerError> {
        let mut state = self.lock();
        let archived = state.jobs.get(&id).is_some_and(|r| r.archived.0);
        let header;
        // An archived job's tasks are frozen (see the module's opening).
        let rec = if archived && !rec.tasks.is_empty() {
            header = rec.header();
            &header
        } else {
            rec
        };
        let touched = merge::merge_into(&mut state.jobs, id, rec)?;
        if !touched.any() {
            return Ok(false);
        }
        self.clock.observe(rec.max_lamport());
        let dirty = state.dirty.entry(id).or_default();
        dirty.header |= touched.header;
        dirty.tasks.extend(touched.tasks);
        if archived && touched.header {
            state.summaries.remove(&id);
        }
        shelve_if_archived(&mut state, id);
        state.hashes.remove(&id);
        state.seq += 1;
        let seq = state.seq;
        if state.recent.len() == RECENT {
            state.recent.pop_front();
        }
        state.recent.push_back((seq, id));
        drop(state);
        self.changes.send_replace(seq);
        Ok(true)
    }

    /// Merge an alert record made on this node; returns the change counter.
    pub fn apply_alert_local(&self, id: AlertId, rec: &AlertRecord) -> Result<u64, LedgerError> {
        self.merge_alert(id, rec);
        Ok(self.lock().seq)
    }

    /// Merge an alert record from another node, after checking it.
    pub fn apply_alert_remote(&self, id: AlertId, rec: &AlertRecord) -> Result<bool, LedgerError> {
        alerts::check_alert(rec)?;
        Ok(self.merge_alert(id, rec))
    }

    fn merge_alert(&self, id: AlertId, rec: &AlertRecord) -> bool {
        use crdt::Crdt;
        if rec.expired_at(alerts::now_ms()) {
            return false;
        }
        let mut state = self.lock();
        let changed = match state.alerts.get_mut(&id) {
            Some(mine) => mine.merge(rec),
            None => {
                state.alerts.insert(id, rec.clone());
                true
            }
        };
        if !changed {
            return false;
        }
        for c in &rec.claims {
            self.clock.observe(c.lamport);
        }
        state.alert_hashes.remove(&id);
        state.dirty_alerts.insert(id);
        state.seq += 1;
        let seq = state.seq;
        drop(state);
        self.changes.send_replace(seq);
        true
    }

    /// Read the alerts.
    pub fn read_alerts<R>(&self, f: impl FnOnce(&BTreeMap<AlertId, AlertRecord>) -> R) -> R {
        f(&self.lock().alerts)
    }

    /// Per-alert record hashes of the alerts sync offers now.
    pub fn alert_digest(&self) -> BTreeMap<AlertId, Hash> {
        let now = alerts::now_ms();
        let mut state = self.lock();
        let State {
            alerts,
            alert_hashes,
            ..
        } = &mut *state;
        alerts
            .iter()
            .filter(|(_, r)| r.offered_at(now))
            .map(|(id, r)| {
                (
                    *id,
                    *alert_hashes.entry(*id).or_insert_with(|| alert_hash(r)),
                )
            })
            .collect()
    }

    /// Drops the alerts past their time at `now` (ms since the Unix epoch;
    /// see `alerts.rs`) from memory and from the file; returns how many
    /// left memory.
    pub fn expire_alerts(&self, now: u64) -> Result<usize, LedgerError> {
        let gone = {
            let mut state = self.lock();
            let before = state.alerts.len();
            state.alerts.retain(|_, r| !r.expired_at(now));
            let State {
                alerts,
                dirty_alerts,
                alert_hashes,
                ..
            } = &mut *state;
            dirty_alerts.retain(|id| alerts.contains_key(id));
            alert_hashes.retain(|id, _| alerts.contains_key(id));
            before - state.alerts.len()
        };
        // The file may hold more: alerts that expired while the node was
        // down were never loaded.
        self.db.remove_alerts(|r| r.expired_at(now))?;
        Ok(gone)
    }

    /// Make every change so far durable, in one transaction.
    pub fn flush(&self) -> Result<(), LedgerError> {
        let _one_at_a_time = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (batch, seq, dirty, dirty_alerts, shelved) = {
            let mut state = self.lock();
            let dirty = std::mem::take(&mut state.dirty);
            let dirty_alerts = std::mem::take(&mut state.dirty_alerts);
            let mut batch = encode_batch(&state, &dirty, self.clock.now());
            // Shelved rows stay where `read_job` finds them until written.
            let shelved = state.shelved.len();
            batch.tasks.extend(state.shelved.iter().cloned());
            batch.alerts = dirty_alerts
                .iter()
                .filter_map(|id| state.alerts.get(id).map(|r| (*id, codec::encode(r))))
                .collect();
            (batch, state.seq, dirty, dirty_alerts, shelved)
        };
        if batch.headers.is_empty() && batch.tasks.is_empty() && batch.alerts.is_empty() {
            self.persisted.fetch_max(seq, Ordering::SeqCst);
            return Ok(());
        }
        if let Err(e) = self.db.write(&batch) {
            // Keep the rows dirty so the next flush tries again.
            let mut state = self.lock();
            // A job archived meanwhile has no tasks in memory to encode
            // again: its rows of this batch are shelved, ahead of those
            // its archive shelved (which are newer).
            let mut rows = batch.tasks;
            rows.truncate(rows.len() - shelved);
            rows.retain(|(id, _, _)| state.jobs.get(id).is_some_and(|r| r.archived.0));
            state.shelved.splice(0..0, rows);
            for (id, d) in dirty {
                let mine = state.dirty.entry(id).or_default();
                mine.header |= d.header;
                mine.tasks.extend(d.tasks);
            }
            state.dirty_alerts.extend(dirty_alerts);
            return Err(e.into());
        }
        // Later archives only append.
        self.lock().shelved.drain(..shelved);
        self.persisted.fetch_max(seq, Ordering::SeqCst);
        Ok(())
    }

    /// Flush, then close the file cleanly: a node that stops closes its
    /// ledger so that its next start need not check every page of it.
    /// Changes after this stay in memory only; flushes fail.
    pub fn close(&self) -> Result<(), LedgerError> {
        self.flush()?;
        let _one_at_a_time = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.db.close()?)
    }

    /// Flush unless change `seq` is already durable.
    pub fn flush_to(&self, seq: u64) -> Result<(), LedgerError> {
        if self.persisted.load(Ordering::SeqCst) >= seq {
            return Ok(());
        }
        self.flush()
    }

    /// The jobs changed after change `seq`, and the latest change counter;
    /// `None` when `seq` is too old to answer exactly (treat every job as
    /// changed).
    pub fn changed_since(&self, seq: u64) -> (Option<BTreeSet<JobId>>, u64) {
        let state = self.lock();
        let oldest = state
            .recent
            .front()
            .map_or(state.seq, |(s, _)| s.saturating_sub(1));
        if seq >= state.seq {
            return (Some(BTreeSet::new()), state.seq);
        }
        if seq < oldest {
            return (None, state.seq);
        }
        let ids = state
            .recent
            .iter()
            .filter(|(s, _)| *s > seq)
            .map(|(_, id)| *id)
            .collect();
        (Some(ids), state.seq)
    }

    /// Whether changes are waiting for a flush.
    pub fn has_dirty(&self) -> bool {
        let state = self.lock();
        !state.dirty.is_empty() || !state.dirty_alerts.is_empty()
    }

    /// Per-job record hashes of the jobs this node offers in sync
    /// (everything not archived).
    pub fn digest(&self) -> BTreeMap<JobId, Hash> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut out = BTreeMap::new();
        for (id, rec) in &state.jobs {
            if rec.archived.0 {
                continue;
            }
            let h = *state.hashes.entry(*id).or_insert_with(|| record_hash(rec));
            out.insert(*id, h);
        }
        out
    }

    /// One hash over every record, archived ones included: equal on two
    /// nodes exactly when their ledgers are identical.
    pub fn root_digest(&self) -> Hash {
        // Hashed after the lock is let go.
        let (all, alerts) = {
            let mut state = self.lock();
            let State {
                jobs,
                hashes,
                alerts,
                alert_hashes,
                ..
            } = &mut *state;
            // Cached as `digest` caches them (archived records too: `/node`
            // asks for this, and a year's archives are thousands of records).
            let all: Vec<(JobId, Hash)> = jobs
                .iter()
                .map(|(id, rec)| (*id, *hashes.entry(*id).or_insert_with(|| record_hash(rec))))
                .collect();
            let alerts: Vec<(AlertId, Hash)> = alerts
                .iter()
                .map(|(id, r)| {
                    (
                        *id,
                        *alert_hashes.entry(*id).or_insert_with(|| alert_hash(r)),
                    )
                })
                .collect();
            (all, alerts)
        };
        Hash::of(&codec::encode(&(all, alerts)))
    }

    /// Node-local settings stored beside the ledger (the node's key).
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        Ok(self.db.meta_get(key)?)
    }

    pub fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), LedgerError> {
        Ok(self.db.meta_put(key, value)?)
    }
}

fn alert_hash(rec: &AlertRecord) -> Hash {
    Hash::of(&codec::encode(rec))
}

fn unexpired(
    mut all: BTreeMap<AlertId, AlertRecord>,
    now_ms: u64,
) -> BTreeMap<AlertId, AlertRecord> {
    all.retain(|_, r| !r.expired_at(now_ms));
    all
}

/// Moves an archived job's tasks out of memory, its summary taken first:
/// the ones not written yet go to `shelved` for the next flush, the rest
/// are in the file already.
fn shelve_if_archived(state: &mut State, id: JobId) {
    let Some(rec) = state.jobs.get_mut(&id) else {
        return;
    };
    if !rec.archived.0 || rec.tasks.is_empty() {
        return;
    }
    state.summaries.insert(id, rec.summary(id));
    let tasks = std::mem::take(&mut rec.tasks);
    if let Some(dirty) = state.dirty.get_mut(&id) {
        for i in std::mem::take(&mut dirty.tasks) {
            if let Some(t) = tasks.get(&i) {
                state.shelved.push((id, i, codec::encode(t)));
            }
        }
    }
}

fn encode_batch(state: &State, dirty: &BTreeMap<JobId, Dirty>, clock: u64) -> Batch {
    let mut batch = Batch {
        clock,
        ..Batch::default()
    };
    for (id, d) in dirty {
        let Some(rec) = state.jobs.get(id) else {
            continue;
        };
        if d.header {
            let header = db::encode_header(rec);
            if let Some(summary) = state.summaries.get(id).filter(|_| rec.archived.0) {
                batch
                    .summaries
                    .push((*id, db::encode_summary(&header, summary)));
            }
            batch.headers.push((*id, header));
        }
        for i in &d.tasks {
            if let Some(t) = rec.tasks.get(i) {
                batch.tasks.push((*id, *i, codec::encode(t)));
            }
        }
    }
    batch
}
