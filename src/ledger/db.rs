//! Persistence: the only file that knows the ledger lives in redb.
//!
//! redb is ACID and crash-safe (a `kill -9` mid-commit leaves the previous
//! commit), with a stable file format; sled, the first sketch's choice, is
//! unmaintained and has open reports of corruption after abrupt stops.
//!
//! Departure from DESIGN.md: a job's header and each of its tasks are
//! separate rows (`jobs`: id -> header, `tasks`: id ++ index -> task) rather
//! than one row per job, so a claim on a 10,000-task job rewrites one small
//! row, not the whole record. The encoded full record (what digests hash) is
//! unchanged; only its storage is split.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::alerts::{AlertId, AlertRecord};
use super::derive::Summary;
use super::types::{JobId, JobRecord, TaskIndex, TaskState};
use crate::codec;
use crate::hash::Hash;

const JOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("jobs");
const TASKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tasks");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const ALERTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("alerts");
/// An archived job's [`Summary`], with the hash of the header row it was
/// derived under: a row whose header has changed since is not used.
const SUMMARIES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("summaries");

/// Largest row we will decode: a header or one task.
const ROW_LIMIT: usize = 16 << 20;

/// redb's page cache. Its default, 1 GiB, lets every page read stay: the
/// unarchived jobs' rows read at start, and after a crash the whole file,
/// which redb reads through to check before it opens. The ledger's records
/// are in memory anyway; the cache only spares re-reading the B-tree pages
/// a commit rewrites.
const CACHE_BYTES: usize = 16 << 20;

/// A storage failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the ledger database {path}: {source}")]
    Open {
        path: String,
        source: redb::DatabaseError,
    },
    #[error("ledger database error while {doing}: {message}")]
    Storage {
        doing: &'static str,
        message: String,
    },
    #[error("the ledger database is closed: the node is shutting down")]
    Closed,
    #[error(
        "ledger row for job {job} does not decode: {source}; the database was written by a newer renderswarm or is damaged"
    )]
    Decode {
        job: String,
        source: codec::CodecError,
    },
}

fn storage<E: std::fmt::Display>(doing: &'static str) -> impl Fn(E) -> DbError {
    move |e| DbError::Storage {
        doing,
        message: e.to_string(),
    }
}

/// Rows to write in one transaction.
#[derive(Default, Debug)]
pub struct Batch {
    /// Encoded headers (records without tasks).
    pub headers: Vec<(JobId, Vec<u8>)>,
    /// Encoded tasks.
    pub tasks: Vec<(JobId, TaskIndex, Vec<u8>)>,
    /// Encoded alert records.
    pub alerts: Vec<(AlertId, Vec<u8>)>,
    /// Encoded summaries of archived jobs (`encode_summary`).
    pub summaries: Vec<(JobId, Vec<u8>)>,
    /// The clock, so a restarted node never reissues a stamp.
    pub clock: u64,
}

/// What a ledger file holds.
pub struct Loaded {
    pub jobs: BTreeMap<JobId, JobRecord>,
    /// The archived jobs' summaries that still match their headers.
    pub summaries: HashMap<JobId, Summary>,
    pub alerts: BTreeMap<AlertId, AlertRecord>,
    pub clock: u64,
}

/// The ledger's database file.
pub struct Db {
    path: PathBuf,
    /// `None` after a failed write: redb refuses every write after an I/O
    /// error (a full disk) until the database is opened again, so the next
    /// write reopens it, and the ledger heals once space returns.
    db: Mutex<Option<Database>>,
    /// Set by [`Db::close`]: nothing opens it again.
    closed: std::sync::atomic::AtomicBool,
}

fn task_key(id: &JobId, index: TaskIndex) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(&id.0.0);
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}

fn parse_task_key(key: &[u8]) -> Option<(JobId, TaskIndex)> {
    let id: [u8; 32] = key.get(..32)?.try_into().ok()?;
    let index: [u8; 4] = key.get(32..36)?.try_into().ok()?;
    Some((JobId(Hash(id)), u32::from_be_bytes(index)))
}

impl Db {
    /// Open (or create) the database at `path`.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let db = Self::create(path)?;
        Ok(Db {
            path: path.to_path_buf(),
            db: Mutex::new(Some(db)),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn create(path: &Path) -> Result<Database, DbError> {
        let shown = path.display().to_string();
        let warned = std::sync::atomic::AtomicBool::new(false);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_repair_callback(move |_| {
                if !warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        path = %shown,
                        "the ledger database was not closed cleanly (a crash, a kill or a power cut): checking it"
                    );
                }
            })
            .create(path)
            .map_err(|source| DbError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let txn = db.begin_write().map_err(storage("creating tables"))?;
        txn.open_table(JOBS).map_err(storage("creating tables"))?;
        txn.open_table(TASKS).map_err(storage("creating tables"))?;
        txn.open_table(META).map_err(storage("creating tables"))?;
        txn.open_table(ALERTS).map_err(storage("creating tables"))?;
        txn.open_table(SUMMARIES)
            .map_err(storage("creating tables"))?;
        txn.commit().map_err(storage("creating tables"))?;
        Ok(db)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Database>> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the open database, opening it again first if a failed
    /// write closed it; a failed `f` closes it (see [`Db::db`]).
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T, DbError>) -> Result<T, DbError> {
        let mut guard = self.lock();
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(DbError::Closed);
        }
        if guard.is_none() {
            *guard = Some(Self::create(&self.path)?);
            tracing::info!(path = %self.path.display(), "ledger database opened again after a failed write");
        }
        let result = f(guard.as_ref().expect("opened above"));
        if result.is_err() {
            *guard = None;
        }
        result
    }

    /// Closes the database cleanly, so that the next open need not check
    /// every page of it; later reads and writes fail with [`DbError::Closed`].
    pub fn close(&self) -> Result<(), DbError> {
        let mut guard = self.lock();
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        match guard.take() {
            Some(db) => db.close().map_err(storage("closing")),
            None => Ok(()),
        }
    }

    /// Every record and the persisted clock.
    pub fn load(&self) -> Result<Loaded, DbError> {
        self.with_db(Self::load_from)
    }

    fn load_from(db: &Database) -> Result<Loaded, DbError> {
        let txn = db.begin_read().map_err(storage("reading"))?;
        let jobs = txn.open_table(JOBS).map_err(storage("reading jobs"))?;
        let mut out = BTreeMap::new();
        for row in jobs.iter().map_err(storage("reading jobs"))? {
            let (k, v) = row.map_err(storage("reading jobs"))?;
            let id = JobId(Hash(*k.value()));
            let rec: JobRecord =
                codec::decode(v.value(), ROW_LIMIT).map_err(|source| DbError::Decode {
                    job: id.to_string(),
                    source,
                })?;
            out.insert(id, rec);
        }
        let tasks = txn.open_table(TASKS).map_err(storage("reading tasks"))?;
        // An archived job's tasks stay on disk, not even read (`tasks_of`).
        for (id, rec) in out.iter_mut().filter(|(_, r)| !r.archived.0) {
            rec.tasks = Self::tasks_in(&tasks, id)?;
        }
        let summaries = Self::summaries_in(&txn, &out)?;
        let clock = Self::meta_u64(&txn)?;
        let mut alerts = BTreeMap::new();
        let table = txn.open_table(ALERTS).map_err(storage("reading alerts"))?;
        for row in table.iter().map_err(storage("reading alerts"))? {
            let (k, v) = row.map_err(storage("reading alerts"))?;
            let id = AlertId(Hash(*k.value()));
            let rec: AlertRecord =
                codec::decode(v.value(), ROW_LIMIT).map_err(|source| DbError::Decode {
                    job: format!("alert {id}"),
                    source,
                })?;
            alerts.insert(id, rec);
        }
        Ok(Loaded {
            jobs: out,
            summaries,
            alerts,
            clock,
        })
    }

    /// The summaries of the archived jobs in `jobs` whose rows were
    /// written under their present headers. A row that does not decode or
    /// no longer matches is left out: a summary is derived, and is derived
    /// again when asked for.
    fn summaries_in(
        txn: &redb::ReadTransaction,
        jobs: &BTreeMap<JobId, JobRecord>,
    ) -> Result<HashMap<JobId, Summary>, DbError> {
        let table = txn
            .open_table(SUMMARIES)
            .map_err(storage("reading summaries"))?;
        let mut out = HashMap::new();
        for (id, rec) in jobs.iter().filter(|(_, r)| r.archived.0) {
            let row = table.get(&id.0.0).map_err(storage("reading a summary"))?;
            let Some(row) = row else { continue };
            let decoded = codec::decode::<(Hash, Summary)>(row.value(), ROW_LIMIT);
            if let Ok((under, summary)) = decoded
                && under == Hash::of(&encode_header(rec))
            {
                out.insert(*id, summary);
            }
        }
        Ok(out)
    }

    /// The tasks of job `id` as written: for an archived job, whose tasks
    /// are not kept in memory.
    pub fn tasks_of(&self, id: &JobId) -> Result<BTreeMap<TaskIndex, TaskState>, DbError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage("reading tasks"))?;
            let tasks = txn.open_table(TASKS).map_err(storage("reading tasks"))?;
            Self::tasks_in(&tasks, id)
        })
    }

    /// One task of job `id` as written: for an archived job.
    pub fn task(&self, id: &JobId, index: TaskIndex) -> Result<Option<TaskState>, DbError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage("reading a task"))?;
            let tasks = txn.open_table(TASKS).map_err(storage("reading a task"))?;
            let row = tasks
                .get(task_key(id, index).as_slice())
                .map_err(storage("reading a task"))?;
            row.map(|r| decode_task(id, r.value())).transpose()
        })
    }

    fn tasks_in(
        tasks: &redb::ReadOnlyTable<&[u8], &[u8]>,
        id: &JobId,
    ) -> Result<BTreeMap<TaskIndex, TaskState>, DbError> {
        let (first, last) = (task_key(id, 0), task_key(id, TaskIndex::MAX));
        let rows = tasks
            .range(first.as_slice()..=last.as_slice())
            .map_err(storage("reading tasks"))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (k, v) = row.map_err(storage("reading tasks"))?;
            if let Some((_, index)) = parse_task_key(k.value()) {
                out.insert(index, decode_task(id, v.value())?);
            }
        }
        Ok(out)
    }

    fn meta_u64(txn: &redb::ReadTransaction) -> Result<u64, DbError> {
        let meta = txn.open_table(META).map_err(storage("reading meta"))?;
        let v = meta.get("clock").map_err(storage("reading the clock"))?;
        Ok(v.and_then(|g| g.value().try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Write a batch in one durable transaction.
    pub fn write(&self, batch: &Batch) -> Result<(), DbError> {
        self.with_db(|db| Self::write_to(db, batch))
    }

    fn write_to(db: &Database, batch: &Batch) -> Result<(), DbError> {
        let txn = db.begin_write().map_err(storage("writing"))?;
        {
            let mut jobs = txn.open_table(JOBS).map_err(storage("writing jobs"))?;
            for (id, bytes) in &batch.headers {
                jobs.insert(&id.0.0, bytes.as_slice())
                    .map_err(storage("writing a job"))?;
            }
            let mut tasks = txn.open_table(TASKS).map_err(storage("writing tasks"))?;
            for (id, index, bytes) in &batch.tasks {
                tasks
                    .insert(task_key(id, *index).as_slice(), bytes.as_slice())
                    .map_err(storage("writing a task"))?;
            }
            let mut alerts = txn.open_table(ALERTS).map_err(storage("writing alerts"))?;
            for (id, bytes) in &batch.alerts {
                alerts
                    .insert(&id.0.0, bytes.as_slice())
                    .map_err(storage("writing an alert"))?;
            }
            let mut summaries = txn
                .open_table(SUMMARIES)
                .map_err(storage("writing summaries"))?;
            for (id, bytes) in &batch.summaries {
                summaries
                    .insert(&id.0.0, bytes.as_slice())
                    .map_err(storage("writing a summary"))?;
            }
            let mut meta = txn.open_table(META).map_err(storage("writing meta"))?;
            meta.insert("clock", batch.clock.to_be_bytes().as_slice())
                .map_err(storage("writing the clock"))?;
        }
        txn.commit().map_err(storage("committing"))
    }

    /// Deletes the alert rows `expired` says are past their time, in one
    /// transaction (none when there are none).
    pub fn remove_alerts(&self, expired: impl Fn(&AlertRecord) -> bool) -> Result<usize, DbError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(storage("removing alerts"))?;
            let removed = {
                let mut table = txn.open_table(ALERTS).map_err(storage("removing alerts"))?;
                let mut gone = Vec::new();
                for row in table.iter().map_err(storage("reading alerts"))? {
                    let (k, v) = row.map_err(storage("reading alerts"))?;
                    // A row that does not decode is left for `load` to report.
                    let rec = codec::decode::<AlertRecord>(v.value(), ROW_LIMIT);
                    if rec.is_ok_and(|r| expired(&r)) {
                        gone.push(*k.value());
                    }
                }
                for key in &gone {
                    table.remove(key).map_err(storage("removing an alert"))?;
                }
                gone.len()
            };
            if removed == 0 {
                txn.abort().map_err(storage("removing alerts"))?;
            } else {
                txn.commit().map_err(storage("removing alerts"))?;
            }
            Ok(removed)
        })
    }

    /// A node-local setting (its key, its name).
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, DbError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage("reading meta"))?;
            let meta = txn.open_table(META).map_err(storage("reading meta"))?;
            let v = meta.get(key).map_err(storage("reading meta"))?;
            Ok(v.map(|g| g.value().to_vec()))
        })
    }

    /// Store a node-local setting.
    pub fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), DbError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(storage("writing meta"))?;
            {
                let mut meta = txn.open_table(META).map_err(storage("writing meta"))?;
                meta.insert(key, value).map_err(storage("writing meta"))?;
            }
            txn.commit().map_err(storage("committing meta"))
        })
    }
}

pub(super) fn decode_task(id: &JobId, bytes: &[u8]) -> Result<TaskState, DbError> {
    codec::decode(bytes, ROW_LIMIT).map_err(|source| DbError::Decode {
        job: id.to_string(),
        source,
    })
}

/// A record's header: everything but its tasks.
pub fn encode_header(rec: &JobRecord) -> Vec<u8> {
    codec::encode(&rec.header())
}

/// An archived job's summary row, tied to the header row `header` it was
/// derived under.
pub fn encode_summary(header: &[u8], summary: &Summary) -> Vec<u8> {
    codec::encode(&(Hash::of(header), summary))
}
