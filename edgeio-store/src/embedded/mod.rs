//! [`EmbeddedStore`]: the [`Store`] contract in one crash-safe file, on [redb].
//!
//! # File layout (format version 1)
//!
//! One redb file with five tables, all written by one transaction per operation:
//!
//! | table | key | value |
//! |---|---|---|
//! | `edgeio_meta` | `format_version`, `revision`, `last_lease` | `u64` |
//! | `edgeio_kv` | the key | create revision, mod revision, lease id, value |
//! | `edgeio_history` | revision | the change event (put with key and value, or delete) |
//! | `edgeio_leases` | lease id | TTL and deadline (ms since the Unix epoch) |
//! | `edgeio_lease_keys` | `<lease id in hex>/<key>` | — (which keys a lease deletes) |
//!
//! The store-wide revision is written in the same transaction as the change it counts, and the
//! transaction commits with [`redb::Durability::Immediate`] (fsync) before the operation
//! returns: an acknowledged write survives a crash. A new file is initialized under a temporary
//! name and linked into place only once its metadata is committed, so a file at the store's
//! path without that metadata is damaged or foreign, never "a store still being created".
//!
//! # Concurrency
//!
//! redb is synchronous; every operation runs on tokio's blocking pool. Writes are queued and
//! committed in groups: whichever write finds no commit under way starts one on the blocking
//! pool, which applies every queued write (up to 1,024) in one transaction, in queue order, and
//! fsyncs once for all of them. A lone writer waits for one fsync; concurrent writers share
//! them (after a group of several, the committer waits up to 200 µs for as many writers to
//! queue again, so that they keep sharing instead of alternating small and large groups). Each write still gets its own revision and event, and a refused write
//! (a CAS conflict, a dead lease) writes nothing and does not disturb the others in its group.
//!
//! The committer holds one mutex across the commit *and* the publication of its events on a
//! broadcast channel; [`Store::watch`] opens its read snapshot and subscribes under the same
//! mutex, so its replay from the file and the live events meet with no gap and no duplicate.
//!
//! # Recovery from I/O failures
//!
//! After one failed write (a full disk, most often on an edge device's SD card) redb answers
//! `PreviousIo` to every later call until the database is closed and opened again. The store
//! does that by itself: a call that meets an I/O failure answers
//! [`StoreError::Unavailable`] (retry later; the write did not happen) and marks the file
//! broken, and the next call reopens it — under the writers' mutex and with the readers
//! held off, at most every [`REOPEN_INTERVAL`] — before it goes on. Once open again, what is
//! held in memory is taken from the file: the revision (with the events of any commit that
//! reached the file although it reported a failure published to watchers) and the leases
//! (a grant, renewal or revocation that failed is as if never asked). So once the disk has
//! room again, writes succeed, and every write acknowledged before the failure is there.

mod codec;

use crate::error::{check_election, check_key, check_ttl, conflict, lease_not_found, other};
use async_trait::async_trait;
use bytes::Bytes;
use codec::{decode_entry, decode_entry_head, decode_event, decode_lease};
use codec::{encode_entry, encode_event, encode_lease};
use codec::{lease_key, lease_prefix, Entry};
use edgeio_core::store::backend::live_changes;
use edgeio_core::store::{
    KeyValue, LeaseId, Listing, Precondition, Revision, Store, StoreError, WatchEvent, WatchStream,
};
use futures::stream::{self, StreamExt};
use redb::{
    Builder, Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    StorageError, Table, TableDefinition, TableHandle, WriteTransaction,
};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::Deref;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;

/// The newest file format this build reads and the one it writes.
pub const FORMAT_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("edgeio_meta");
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("edgeio_kv");
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("edgeio_history");
const LEASES: TableDefinition<i64, &[u8]> = TableDefinition::new("edgeio_leases");
const LEASE_KEYS: TableDefinition<&str, ()> = TableDefinition::new("edgeio_lease_keys");

const META_FORMAT: &str = "format_version";
const META_REVISION: &str = "revision";
const META_LAST_LEASE: &str = "last_lease";

/// Change events kept for watch resume by default.
pub const DEFAULT_HISTORY: usize = 10_000;
/// Live events a watcher may fall behind by default before it is told to re-list.
pub const DEFAULT_WATCH_BUFFER: usize = 4_096;
/// Bytes of file pages cached in memory by default.
pub const DEFAULT_CACHE_SIZE: usize = 64 << 20;
/// The most queued writes one transaction commits.
const MAX_BATCH: usize = 1_024;
/// How long a committer waits for the writers of the previous group to queue again.
const LINGER: Duration = Duration::from_micros(200);
/// The shortest time between two attempts to reopen a file broken by an I/O failure: a reopen
/// reads the whole file (the integrity check), and callers retrying a full disk in a loop
/// must not turn that into a busy loop.
pub const REOPEN_INTERVAL: Duration = Duration::from_millis(250);

/// How an [`EmbeddedStore`] is opened. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Change events kept in the file for watch resume, across reopening (default 10,000;
    /// `0` keeps none, so only watches from the current revision work). Every kept event holds
    /// its value: 10,000 events of 1 MiB are 10 GiB of file.
    pub history: usize,
    /// Live events (over all keys) a watcher may fall behind before it receives one
    /// `Err(Compacted)` and its stream ends (default 4,096; at least 1).
    pub watch_buffer: usize,
    /// Bytes of file pages redb may cache in memory (default 64 MiB).
    pub cache_size: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            history: DEFAULT_HISTORY,
            watch_buffer: DEFAULT_WATCH_BUFFER,
            cache_size: DEFAULT_CACHE_SIZE,
        }
    }
}

impl EmbeddedOptions {
    /// Checks the options; [`EmbeddedStore::open`] calls this first.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.watch_buffer == 0 {
            return Err(StoreError::Invalid {
                field: "watch_buffer",
                value: "0".into(),
                rule: "a watcher needs room for at least 1 event".into(),
            });
        }
        Ok(())
    }
}

/// A [`Store`] in one redb file: ACID, crash-safe, no server to run.
///
/// - Revisions, compare-and-swap, watches and leases behave as the memory store's (see
///   `edgeio_core::testing::MemoryStore`): `+1` per put, successful CAS and deletion of an
///   existing key; a watch from before the kept history fails from `watch()` with
///   [`StoreError::Compacted`]; a watcher more than [`EmbeddedOptions::watch_buffer`] events
///   behind gets one `Err(Compacted)` and its stream ends.
/// - The kept history ([`EmbeddedOptions::history`]) lives in the file, so a process that
///   restarts can resume its watches from where it stopped.
/// - Leases: TTL at least 1 s; expiry deletes each bound key with its own revision. Deadlines
///   are stored as wall-clock time, so a lease whose deadline passed while the file was closed
///   is revoked when it is opened again, and a live one keeps its remaining time.
/// - Election follows the memory store's and etcd's recipe: a candidate's key is
///   `<election>/<lease id in hex>`, bound to its lease; the lowest create revision leads.
/// - One process opens a file at a time (redb locks it); a second open answers
///   [`StoreError::Unavailable`].
///
/// `Clone` shares the same open store. Dropping the last clone closes the file and ends open
/// watches.
///
/// ```
/// use edgeio_store::{EmbeddedOptions, EmbeddedStore};
/// use edgeio_core::store::{Precondition, Store};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let store = EmbeddedStore::open(dir.path().join("root.redb"), EmbeddedOptions::default()).await?;
/// let rev = store.put("jobs/web", "v1".into()).await?;
/// store.compare_and_swap("jobs/web", Precondition::Revision(rev), "v2".into()).await?;
/// drop(store);
/// // Reopened, the write is there.
/// let store = EmbeddedStore::open(dir.path().join("root.redb"), EmbeddedOptions::default()).await?;
/// assert_eq!(store.get("jobs/web").await?.unwrap().value, "v2");
/// # Ok::<_, edgeio_core::store::StoreError>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The open file; `None` after a reopen failed, until the next attempt. Reads and commits
    /// hold it shared for as long as their transaction lives; only a reopen takes it alone.
    db: RwLock<Option<Database>>,
    /// An I/O failure was met: the file must be reopened before its next use.
    broken: AtomicBool,
    /// When a broken file may be reopened next ([`REOPEN_INTERVAL`]).
    next_reopen: Mutex<std::time::Instant>,
    /// To reopen the file as it was opened.
    options: EmbeddedOptions,
    /// Itself, for the lease expiry tasks a reopen starts.
    me: Weak<Inner>,
    /// The runtime the store was opened on, for those tasks (a reopen runs on its blocking pool).
    runtime: tokio::runtime::Handle,
    path: PathBuf,
    history: u64,
    /// Mirrors the committed `revision` meta value, for a lock-free [`Store::revision`].
    revision: AtomicU64,
    shared: Mutex<Shared>,
    queue: Mutex<Queue>,
    /// Signalled when a write is queued.
    queued: Condvar,
}

/// Called once per write with its group's fate: committed (`Ok`) or abandoned (`Err`, why).
type Reply = Box<dyn FnOnce(Result<(), &Failure>) + Send>;

/// Why a group of writes was abandoned.
#[derive(Debug, Clone)]
struct Failure {
    reason: String,
    /// An I/O failure: the writes may succeed once retried ([`StoreError::Unavailable`]).
    retry: bool,
}

impl Failure {
    fn of(e: &StoreError) -> Failure {
        Failure {
            reason: reason(e),
            retry: matches!(e, StoreError::Unavailable { .. }),
        }
    }

    fn error(&self) -> StoreError {
        if self.retry {
            StoreError::Unavailable {
                reason: self.reason.clone(),
            }
        } else {
            other(self.reason.clone())
        }
    }
}

/// One queued write. It runs against its group's transaction, or is called with `None` when
/// the group failed before reaching it; either way it returns its [`Reply`].
type Job =
    Box<dyn for<'a, 'b, 't> FnOnce(Option<(&'a mut Shared, &'b mut Writer<'t>)>) -> Reply + Send>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// A committer is draining the queue; new writes only join it.
    committing: bool,
    /// How many writes the last group committed.
    last_group: usize,
}

struct Shared {
    events: broadcast::Sender<WatchEvent>,
    /// Wakes campaigners after any write.
    changes: watch::Sender<Revision>,
    leases: HashMap<LeaseId, LiveLease>,
}

struct LiveLease {
    ttl: Duration,
    deadline: Instant,
}

impl EmbeddedStore {
    /// Opens the store file at `path`, creating it (and nothing else: the directory must exist)
    /// when there is none.
    ///
    /// Errors: an empty path or bad options are [`StoreError::Invalid`]; a file written by a
    /// newer format version, an empty, truncated, damaged or foreign file are
    /// [`StoreError::Invalid`] naming the file and what is wrong with it; a file open elsewhere
    /// is [`StoreError::Unavailable`]. Opening reads and checks the whole file (redb's integrity
    /// check), so it takes time in proportion to the file's size.
    pub async fn open(
        path: impl Into<PathBuf>,
        options: EmbeddedOptions,
    ) -> Result<Self, StoreError> {
        let path = path.into();
        if path.as_os_str().is_empty() {
            return Err(StoreError::Invalid {
                field: "path",
                value: String::new(),
                rule: "the store file's path must not be empty".into(),
            });
        }
        options.validate()?;
        let runtime = tokio::runtime::Handle::current();
        let (inner, leases) = blocking(move || {
            let inner = open_file(path, options, runtime)?;
            let leases = inner.startup()?;
            Ok((inner, leases))
        })
        .await?;
        for (lease, deadline) in leases {
            spawn_expiry(Arc::downgrade(&inner), lease, deadline);
        }
        tracing::debug!(
            path = %inner.path.display(),
            revision = inner.revision.load(Ordering::SeqCst),
            "embedded store opened"
        );
        Ok(Self { inner })
    }

    /// The store file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Writes several keys in one transaction and one fsync; each key gets its own revision,
    /// in the order given, and watchers see one put event per key. Returns the last revision
    /// (the current one when `items` is empty). All or nothing: an empty key refuses the batch.
    pub async fn put_many(&self, items: Vec<(String, Bytes)>) -> Result<Revision, StoreError> {
        for (key, _) in &items {
            check_key(key)?;
        }
        self.submit(move |_, w| {
            for (key, value) in &items {
                w.put(key, value, 0)?;
            }
            Ok(Ok(w.revision))
        })
        .await
    }

    /// Queues a write and waits for its group's commit. `op` answers `Err` for a failure of
    /// the file (which abandons the whole group) and `Ok(Err(..))` for a refusal that wrote
    /// nothing (a CAS conflict, a dead lease). A group abandoned for an I/O failure answers
    /// each of its writes [`StoreError::Unavailable`].
    async fn submit<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Shared, &mut Writer<'_>) -> Result<Result<T, StoreError>, StoreError>
            + Send
            + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |group| {
            let outcome = group.map(|(shared, writer)| {
                op(shared, writer).inspect_err(|fatal| writer.poisoned = Some(Failure::of(fatal)))
            });
            Box::new(move |committed: Result<(), &Failure>| {
                let reply = match (outcome, committed) {
                    (Some(Ok(Err(refused))), _) => Err(refused),
                    (Some(Err(fatal)), _) => Err(fatal),
                    (Some(Ok(Ok(value))), Ok(())) => Ok(value),
                    (_, Err(why)) => Err(why.error()),
                    (None, Ok(())) => Err(other("the write was skipped".into())),
                };
                // The caller may have stopped waiting; the write stands regardless.
                let _ = answer.send(reply);
            })
        });
        let start = {
            let mut queue = self.inner.queue();
            queue.jobs.push_back(job);
            !std::mem::replace(&mut queue.committing, true)
        };
        self.inner.queued.notify_one();
        if start {
            let inner = Arc::downgrade(&self.inner);
            tokio::task::spawn_blocking(move || drain(&inner));
        }
        answered.await.unwrap_or_else(|_| {
            Err(other(format!(
                "store file {:?}: the committer stopped before answering",
                shown(&self.inner.path)
            )))
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || f(&inner)).await
    }
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .field("revision", &self.inner.revision.load(Ordering::SeqCst))
            .field("history", &self.inner.history)
            .finish()
    }
}

/// Runs redb's synchronous work on the blocking pool. A panic there is a bug of ours or of
/// redb; it is answered as an error rather than taking the caller's task down.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(other(format!("embedded store task failed: {e}"))),
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Opening: create atomically, refuse what is not a healthy store of a format we read.

fn shown(path: &Path) -> String {
    path.display().to_string()
}

fn damaged(path: &Path, detail: impl fmt::Display) -> StoreError {
    StoreError::Invalid {
        field: "store file",
        value: shown(path),
        rule: format!(
            "it is damaged or not an edgeio store ({detail}); restore it from a backup, or move it \
             away to start an empty store"
        ),
    }
}

fn builder(options: &EmbeddedOptions) -> Builder {
    let mut builder = Builder::new();
    // A plain open trusts the file and may panic on one damaged outside redb; the check turns
    // that into an error at the cost of reading the file once.
    builder
        .set_check_integrity_on_open(true)
        .set_cache_size(options.cache_size);
    builder
}

fn open_file(
    path: PathBuf,
    options: EmbeddedOptions,
    runtime: tokio::runtime::Handle,
) -> Result<Arc<Inner>, StoreError> {
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_file(&path, &options)?,
        Err(e) => {
            return Err(other(format!(
                "cannot read store file {:?}: {e}",
                shown(&path)
            )))
        }
        Ok(meta) if meta.is_dir() => {
            return Err(StoreError::Invalid {
                field: "store file",
                value: shown(&path),
                rule: "it is a directory; name a file inside it".into(),
            })
        }
        Ok(meta) if meta.len() == 0 => return Err(damaged(&path, "the file is empty, 0 bytes")),
        Ok(_) => {}
    }
    let db = open_db(&path, &options)?;
    let revision = check_layout(&db, &path)?;
    let (events, _) = broadcast::channel(options.watch_buffer);
    let (changes, _) = watch::channel(revision);
    Ok(Arc::new_cyclic(|me| Inner {
        db: RwLock::new(Some(db)),
        broken: AtomicBool::new(false),
        next_reopen: Mutex::new(std::time::Instant::now()),
        me: me.clone(),
        runtime,
        path,
        history: options.history as u64,
        revision: AtomicU64::new(revision),
        shared: Mutex::new(Shared {
            events,
            changes,
            leases: HashMap::new(),
        }),
        queue: Mutex::new(Queue::default()),
        queued: Condvar::new(),
        options,
    }))
}

/// Writes a new store under a temporary name, then links it to `path`: a crash leaves either
/// no file or a complete empty store there, and a concurrent creator's file is never replaced.
fn create_file(path: &Path, options: &EmbeddedOptions) -> Result<(), StoreError> {
    let name = path
        .file_name()
        .ok_or_else(|| StoreError::Invalid {
            field: "store file",
            value: shown(path),
            rule: "the path must end in a file name".into(),
        })?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{name}.creating-{}", std::process::id()));
    let cannot = |what: &str, e: &dyn fmt::Display| {
        other(format!(
            "cannot create store file {:?}: {what}: {e}",
            shown(path)
        ))
    };
    // A leftover from a crash during an earlier creation by a process with our pid.
    let _ = std::fs::remove_file(&tmp);
    let initialized = (|| -> Result<(), StoreError> {
        let db = builder(options)
            .create(&tmp)
            .map_err(|e| cannot("create the file", &e))?;
        let txn = db
            .begin_write()
            .map_err(|e| cannot("begin its first transaction", &e))?;
        {
            let opened = (|| -> Result<(), redb::Error> {
                let mut meta = txn.open_table(META)?;
                meta.insert(META_FORMAT, FORMAT_VERSION)?;
                meta.insert(META_REVISION, 0)?;
                meta.insert(META_LAST_LEASE, 0)?;
                txn.open_table(KV)?;
                txn.open_table(HISTORY)?;
                txn.open_table(LEASES)?;
                txn.open_table(LEASE_KEYS)?;
                Ok(())
            })();
            opened.map_err(|e| cannot("write its tables", &e))?;
        }
        txn.commit().map_err(|e| cannot("commit its tables", &e))?;
        db.close().map_err(|e| cannot("close it", &e))
    })();
    if let Err(e) = initialized {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let linked = match std::fs::hard_link(&tmp, path) {
        // Another process created the store first: open theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        // Some filesystems have no hard links; the rename is atomic too, only not exclusive.
        Err(_) => std::fs::rename(&tmp, path),
        Ok(()) => Ok(()),
    };
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(|e| cannot("move it into place", &e))?;
    // The directory entry must reach the disk too, or a crash could lose the whole file.
    if let Err(e) = std::fs::File::open(&dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot fsync the store's directory");
    }
    tracing::info!(path = %path.display(), "created a new embedded store");
    Ok(())
}

fn open_db(path: &Path, options: &EmbeddedOptions) -> Result<Database, StoreError> {
    let opened = panic::catch_unwind(AssertUnwindSafe(|| builder(options).open(path)));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(open_error(path, e)),
        Err(payload) => Err(damaged(
            path,
            format!(
                "the storage engine failed reading it: {}",
                panic_message(payload.as_ref())
            ),
        )),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

fn open_error(path: &Path, e: DatabaseError) -> StoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::Unavailable {
                reason: format!(
                    "store file {:?} is open in another process or another store of this \
                     process; close that one first",
                    shown(path)
                ),
            }
        }
        DatabaseError::UpgradeRequired(version) => StoreError::Invalid {
            field: "store file",
            value: shown(path),
            rule: format!(
                "its redb file format is version {version}, which this build of redb cannot \
                 open; open it with the edgeio release that wrote it"
            ),
        },
        DatabaseError::Storage(StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            other(format!("cannot open store file {:?}: {io}", shown(path)))
        }
        other => damaged(path, other),
    }
}

/// Checks that the file holds an edgeio store of a format this build reads; returns its
/// revision.
fn check_layout(db: &Database, path: &Path) -> Result<Revision, StoreError> {
    let bad = |e: &dyn fmt::Display| damaged(path, e);
    let txn = db.begin_read().map_err(|e| bad(&e))?;
    let tables: Vec<String> = txn
        .list_tables()
        .map_err(|e| bad(&e))?
        .map(|t| t.name().to_owned())
        .collect();
    if !tables.iter().any(|t| t == META.name()) {
        return Err(damaged(
            path,
            format!(
                "a redb file without the {} table, holding tables {tables:?}",
                META.name()
            ),
        ));
    }
    let meta = txn.open_table(META).map_err(|e| bad(&e))?;
    let read = |name: &str| -> Result<Option<u64>, StoreError> {
        Ok(meta.get(name).map_err(|e| bad(&e))?.map(|v| v.value()))
    };
    let format = read(META_FORMAT)?.ok_or_else(|| damaged(path, "no format version"))?;
    if format > FORMAT_VERSION {
        return Err(StoreError::Invalid {
            field: "store file",
            value: shown(path),
            rule: format!(
                "it has format version {format}, newer than version {FORMAT_VERSION} that this \
                 edgeio reads; open it with a newer edgeio"
            ),
        });
    }
    if format == 0 {
        return Err(damaged(path, "format version 0"));
    }
    for table in [KV.name(), HISTORY.name(), LEASES.name(), LEASE_KEYS.name()] {
        if !tables.iter().any(|t| t == table) {
            return Err(damaged(path, format!("the {table} table is missing")));
        }
    }
    let revision = read(META_REVISION)?.ok_or_else(|| damaged(path, "no revision"))?;
    let history = txn.open_table(HISTORY).map_err(|e| bad(&e))?;
    if let Some((last, _)) = history.last().map_err(|e| bad(&e))? {
        if last.value() != revision {
            return Err(damaged(
                path,
                format!(
                    "its history ends at revision {} but the store is at revision {revision}",
                    last.value()
                ),
            ));
        }
    }
    Ok(revision)
}

// ---------------------------------------------------------------------------------------------
// Writing: one transaction per operation, its events published after the commit.

/// The tables of one write transaction and what it changed.
struct Writer<'t> {
    inner: &'t Inner,
    meta: Table<'t, &'static str, u64>,
    kv: Table<'t, &'static str, &'static [u8]>,
    history: Table<'t, u64, &'static [u8]>,
    leases: Table<'t, i64, &'static [u8]>,
    lease_keys: Table<'t, &'static str, ()>,
    history_len: u64,
    revision: Revision,
    last_lease: LeaseId,
    events: Vec<WatchEvent>,
    /// Anything to commit: events, or lease records that change no revision.
    dirty: bool,
    /// Why the group's transaction must be abandoned (a write failed half way).
    poisoned: Option<Failure>,
}

impl<'t> Writer<'t> {
    fn open(txn: &'t WriteTransaction, inner: &'t Inner) -> Result<Self, StoreError> {
        let fail = |e: redb::TableError| inner.failed("open a table", e);
        let meta = txn.open_table(META).map_err(fail)?;
        let revision = meta_value(&meta, META_REVISION, inner)?;
        let last_lease = meta_value(&meta, META_LAST_LEASE, inner)? as LeaseId;
        Ok(Self {
            inner,
            meta,
            kv: txn.open_table(KV).map_err(fail)?,
            history: txn.open_table(HISTORY).map_err(fail)?,
            leases: txn.open_table(LEASES).map_err(fail)?,
            lease_keys: txn.open_table(LEASE_KEYS).map_err(fail)?,
            history_len: inner.history,
            revision,
            last_lease,
            events: Vec::new(),
            dirty: false,
            poisoned: None,
        })
    }

    fn failed(&self, what: &str, e: impl Into<redb::Error>) -> StoreError {
        self.inner.failed(what, e)
    }

    fn entry(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let found = self
            .kv
            .get(key)
            .map_err(|e| self.inner.failed("read a key", e))?;
        match found {
            None => Ok(None),
            Some(raw) => decode_entry(raw.value())
                .map(Some)
                .map_err(|e| damaged(&self.inner.path, e)),
        }
    }

    /// A key's (create revision, mod revision, lease), without copying its value.
    fn head(&self, key: &str) -> Result<Option<(Revision, Revision, LeaseId)>, StoreError> {
        let found = self
            .kv
            .get(key)
            .map_err(|e| self.inner.failed("read a key", e))?;
        match found {
            None => Ok(None),
            Some(raw) => decode_entry_head(raw.value())
                .map(Some)
                .map_err(|e| damaged(&self.inner.path, e)),
        }
    }

    /// Writes `key`, bound to `lease` (`0`: none; as in etcd a plain write unbinds the key).
    fn put(&mut self, key: &str, value: &Bytes, lease: LeaseId) -> Result<Revision, StoreError> {
        let old = self.head(key)?;
        let revision = self.revision + 1;
        let (create_revision, old_lease) =
            old.map_or((revision, 0), |(create, _, lease)| (create, lease));
        if old_lease != lease {
            if old_lease != 0 {
                self.lease_keys
                    .remove(lease_key(old_lease, key).as_str())
                    .map_err(|e| self.inner.failed("unbind a key from its lease", e))?;
            }
            if lease != 0 {
                self.lease_keys
                    .insert(lease_key(lease, key).as_str(), ())
                    .map_err(|e| self.inner.failed("bind a key to its lease", e))?;
            }
        }
        let record = encode_entry(create_revision, revision, lease, value);
        self.kv
            .insert(key, record.as_slice())
            .map_err(|e| self.inner.failed("write a key", e))?;
        self.revision = revision;
        self.record(WatchEvent::Put(KeyValue {
            key: key.to_owned(),
            value: value.clone(),
            create_revision,
            mod_revision: revision,
        }))?;
        Ok(revision)
    }

    fn remove(&mut self, key: &str) -> Result<Option<Revision>, StoreError> {
        let Some((_, _, old_lease)) = self.head(key)? else {
            return Ok(None);
        };
        self.kv
            .remove(key)
            .map_err(|e| self.inner.failed("delete a key", e))?;
        if old_lease != 0 {
            self.lease_keys
                .remove(lease_key(old_lease, key).as_str())
                .map_err(|e| self.inner.failed("unbind a key from its lease", e))?;
        }
        self.revision += 1;
        self.record(WatchEvent::Delete {
            key: key.to_owned(),
            revision: self.revision,
        })?;
        Ok(Some(self.revision))
    }

    fn record(&mut self, event: WatchEvent) -> Result<(), StoreError> {
        self.dirty = true;
        if self.history_len > 0 {
            let revision = event.revision();
            self.history
                .insert(revision, encode_event(&event).as_slice())
                .map_err(|e| self.inner.failed("append to the history", e))?;
            // Every write is one event, so the kept window stays contiguous by dropping one.
            if revision > self.history_len {
                self.history
                    .remove(revision - self.history_len)
                    .map_err(|e| self.inner.failed("trim the history", e))?;
            }
        }
        self.events.push(event);
        Ok(())
    }

    /// Deletes the lease's keys, in key order, each with its own revision, then the lease.
    fn revoke(&mut self, lease: LeaseId) -> Result<(), StoreError> {
        let prefix = lease_prefix(lease);
        let mut keys = Vec::new();
        let range = self
            .lease_keys
            .range::<&str>(prefix.as_str()..)
            .map_err(|e| self.inner.failed("read a lease's keys", e))?;
        for item in range {
            let (bound, _) = item.map_err(|e| self.inner.failed("read a lease's keys", e))?;
            match bound.value().strip_prefix(prefix.as_str()) {
                Some(key) => keys.push(key.to_owned()),
                None => break,
            }
        }
        for key in keys {
            self.remove(&key)?;
        }
        self.leases
            .remove(lease)
            .map_err(|e| self.inner.failed("delete a lease", e))?;
        self.dirty = true;
        Ok(())
    }

    fn save_lease(
        &mut self,
        lease: LeaseId,
        ttl: Duration,
        deadline: SystemTime,
    ) -> Result<(), StoreError> {
        let record = encode_lease(millis(ttl), unix_ms(deadline));
        self.leases
            .insert(lease, record.as_slice())
            .map_err(|e| self.inner.failed("write a lease", e))?;
        self.dirty = true;
        Ok(())
    }

    /// Writes the counters back; called once, after the operation.
    fn finish(&mut self) -> Result<(), StoreError> {
        if !self.dirty {
            return Ok(());
        }
        self.meta
            .insert(META_REVISION, self.revision)
            .map_err(|e| self.inner.failed("write the revision", e))?;
        self.meta
            .insert(META_LAST_LEASE, self.last_lease as u64)
            .map_err(|e| self.inner.failed("write the lease counter", e))?;
        Ok(())
    }
}

/// The committer: commits queued writes in groups until the queue is empty.
///
/// It holds the store only while committing and lets go before answering, so that a caller
/// who drops the store after its last write really closes the file: reopening it at once
/// must not find it still open.
fn drain(inner: &Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let jobs: Vec<Job> = {
            let mut queue = strong.queue();
            // Writers answered together come back together, a moment apart: waiting briefly
            // for as many as the last group held lets them share one fsync instead of
            // alternating small and large groups. A lone writer (a group of one) never waits.
            if queue.last_group > 1 {
                let deadline = std::time::Instant::now() + LINGER;
                while queue.jobs.len() < queue.last_group {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    queue = match strong.queued.wait_timeout(queue, left) {
                        Ok((queue, _)) => queue,
                        Err(poisoned) => poisoned.into_inner().0,
                    };
                }
            }
            if queue.jobs.is_empty() {
                queue.committing = false;
                queue.last_group = 0;
                return;
            }
            let take = queue.jobs.len().min(MAX_BATCH);
            queue.last_group = take;
            queue.jobs.drain(..take).collect()
        };
        let mut jobs = jobs.into_iter();
        let mut replies: Vec<Reply> = Vec::with_capacity(jobs.len());
        // A panic here (a bug, or redb meeting a damaged page) must not leave `committing`
        // set with nobody committing: every later write would wait forever.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let mut shared = strong.lock();
            strong.commit_group(&mut shared, &mut jobs, &mut replies)
        }))
        .unwrap_or_else(|payload| {
            Err(Failure {
                reason: format!(
                    "store file {:?}: the storage engine failed: {}",
                    shown(&strong.path),
                    panic_message(payload.as_ref())
                ),
                retry: false,
            })
        });
        if let Err(why) = &outcome {
            tracing::warn!(path = %strong.path.display(), error = %why.reason, retry = why.retry, "a group of writes failed");
        }
        drop(strong);
        // Writes the failed group never reached share its failure.
        replies.extend(jobs.map(|job| job(None)));
        for reply in replies {
            reply(outcome.as_ref().map(|_| ()));
        }
    }
}

/// An error's own words, without the `store error:` of [`StoreError::Other`]'s message (or
/// the `store unavailable:` of [`StoreError::Unavailable`]'s).
fn reason(e: &StoreError) -> String {
    match e {
        StoreError::Other { source } => source.to_string(),
        StoreError::Unavailable { reason } => reason.clone(),
        other => other.to_string(),
    }
}

/// Checks, inside a group, that `lease` lives: answers its TTL, or `NotFound` for an unknown
/// lease. One found past its deadline is revoked in the group rather than waiting for its
/// expiry task, so no caller can use a dead lease.
fn check_lease(
    shared: &mut Shared,
    w: &mut Writer<'_>,
    lease: LeaseId,
) -> Result<Result<Duration, StoreError>, StoreError> {
    let Some((ttl, deadline)) = shared.leases.get(&lease).map(|l| (l.ttl, l.deadline)) else {
        return Ok(Err(lease_not_found(lease)));
    };
    if deadline <= Instant::now() {
        w.revoke(lease)?;
        shared.leases.remove(&lease);
        return Ok(Err(lease_not_found(lease)));
    }
    Ok(Ok(ttl))
}

/// Whether redb failed for the file's I/O (a full disk …) rather than for what it holds:
/// such a failure passes once the file is reopened and the disk works again.
fn is_io(e: &redb::Error) -> bool {
    matches!(
        e,
        redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed
    )
}

fn meta_value(
    meta: &impl ReadableTable<&'static str, u64>,
    name: &str,
    inner: &Inner,
) -> Result<u64, StoreError> {
    match meta.get(name) {
        Ok(Some(v)) => Ok(v.value()),
        Ok(None) => Err(damaged(&inner.path, format!("no {name} in its metadata"))),
        Err(e) => Err(inner.failed("read the metadata", e)),
    }
}

/// A read transaction with the file held open under it.
struct Snapshot<'a> {
    // Dropped first: the transaction ends before the file may be reopened.
    txn: ReadTransaction,
    _db: RwLockReadGuard<'a, Option<Database>>,
}

impl Deref for Snapshot<'_> {
    type Target = ReadTransaction;

    fn deref(&self) -> &ReadTransaction {
        &self.txn
    }
}

impl Inner {
    /// No code panics while holding the lock, but a poisoned mutex must not take every later
    /// operation down with it.
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The error for a failed redb call. An I/O failure marks the file broken, to be reopened
    /// before its next use, and is [`StoreError::Unavailable`]: the caller may retry.
    fn failed(&self, what: &str, e: impl Into<redb::Error>) -> StoreError {
        let e: redb::Error = e.into();
        let message = format!("store file {:?}: cannot {what}: {e}", shown(&self.path));
        if is_io(&e) {
            if !self.broken.swap(true, Ordering::SeqCst) {
                tracing::warn!(path = %self.path.display(), error = %e, "I/O failure; the store file will be reopened");
            }
            StoreError::Unavailable {
                reason: format!("{message}; retry later (the file is reopened on the next call)"),
            }
        } else {
            other(message)
        }
    }

    fn db(&self) -> RwLockReadGuard<'_, Option<Database>> {
        self.db.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file, or why it is not open (a reopen failed; the next call tries again).
    fn open_db<'a>(
        &self,
        db: &'a RwLockReadGuard<'_, Option<Database>>,
    ) -> Result<&'a Database, StoreError> {
        db.as_ref().ok_or_else(|| StoreError::Unavailable {
            reason: format!(
                "store file {:?} is closed after an I/O failure and could not be reopened yet; \
                 retry later",
                shown(&self.path)
            ),
        })
    }

    /// Reopens the file when an I/O failure broke it; takes the writers' lock for that.
    fn recover(&self) -> Result<(), StoreError> {
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut shared = self.lock();
        self.recover_locked(&mut shared)
    }

    /// Reopens the file when an I/O failure broke it, then takes the revision and the leases
    /// from it. Callers hold the writers' lock; readers are held off while the file is swapped.
    fn recover_locked(&self, shared: &mut Shared) -> Result<(), StoreError> {
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        {
            let mut next = self
                .next_reopen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = std::time::Instant::now();
            if now < *next {
                return Err(StoreError::Unavailable {
                    reason: format!(
                        "store file {:?} failed on I/O and is reopened at most every {REOPEN_INTERVAL:?}; \
                         retry later",
                        shown(&self.path)
                    ),
                });
            }
            *next = now + REOPEN_INTERVAL;
        }
        {
            let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(old) = db.take() {
                // redb cannot close a failed file cleanly; what counts is that it lets go.
                if let Err(e) = old.close() {
                    tracing::debug!(path = %self.path.display(), error = %e, "closing the failed store file");
                }
            }
            let reopened = open_db(&self.path, &self.options)
                .and_then(|db| check_layout(&db, &self.path).map(|_| db));
            match reopened {
                Ok(reopened) => *db = Some(reopened),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot reopen the store file yet");
                    return Err(StoreError::Unavailable {
                        reason: format!(
                            "store file {:?} failed on I/O and cannot be reopened yet ({}); retry later",
                            shown(&self.path),
                            reason(&e)
                        ),
                    });
                }
            }
            self.broken.store(false, Ordering::SeqCst);
        }
        self.resync(shared)?;
        tracing::info!(
            path = %self.path.display(),
            revision = self.revision.load(Ordering::SeqCst),
            "store file reopened after an I/O failure"
        );
        Ok(())
    }

    /// Takes the revision and the leases from the file just reopened: a commit that reported
    /// a failure may have reached the file anyway (its events are published now), and lease
    /// changes made in memory by writes that failed are undone.
    fn resync(&self, shared: &mut Shared) -> Result<(), StoreError> {
        let txn = self.snapshot()?;
        let on_disk = self.revision_in(&txn)?;
        let published = self.revision.load(Ordering::SeqCst);
        if on_disk > published {
            let history = txn
                .open_table(HISTORY)
                .map_err(|e| self.failed("open the history", e))?;
            let mut events = Vec::new();
            for item in history
                .range(published + 1..)
                .map_err(|e| self.failed("read the history", e))?
            {
                let (rev, raw) = item.map_err(|e| self.failed("read the history", e))?;
                events.push(
                    decode_event(rev.value(), raw.value()).map_err(|e| damaged(&self.path, e))?,
                );
            }
            tracing::warn!(
                published,
                on_disk,
                "writes reported as failed reached the store file; publishing them"
            );
            self.publish(shared, on_disk, events);
        } else if on_disk < published {
            // Cannot happen with durable commits; the file is the truth either way.
            tracing::error!(
                published,
                on_disk,
                "the reopened store file is behind the revision published"
            );
            self.revision.store(on_disk, Ordering::SeqCst);
        }

        let now = SystemTime::now();
        let clock = Instant::now();
        let leases = txn
            .open_table(LEASES)
            .map_err(|e| self.failed("open the leases", e))?;
        let mut kept = HashMap::new();
        let mut new = Vec::new();
        for item in leases
            .iter()
            .map_err(|e| self.failed("read the leases", e))?
        {
            let (id, record) = item.map_err(|e| self.failed("read the leases", e))?;
            let (ttl, deadline) =
                decode_lease(id.value(), record.value()).map_err(|e| damaged(&self.path, e))?;
            let deadline = clock + Duration::from_millis(deadline.saturating_sub(unix_ms(now)));
            if !shared.leases.contains_key(&id.value()) {
                new.push((id.value(), deadline));
            }
            kept.insert(
                id.value(),
                LiveLease {
                    ttl: Duration::from_millis(ttl),
                    deadline,
                },
            );
        }
        shared.leases = kept;
        // Leases known before keep their expiry tasks, which read the deadline from the map;
        // one whose revocation failed needs a task again.
        let _runtime = self.runtime.enter();
        for (lease, deadline) in new {
            spawn_expiry(self.me.clone(), lease, deadline);
        }
        Ok(())
    }

    /// Runs `f` in one write transaction and, if it changed anything, commits it durably and
    /// publishes its events. Callers hold the lock (`shared`) so that no watcher can subscribe
    /// between the commit and the publication.
    fn commit<T>(
        &self,
        shared: &mut Shared,
        f: impl FnOnce(&mut Writer<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.recover_locked(shared)?;
        let db = self.db();
        let mut txn = self
            .open_db(&db)?
            .begin_write()
            .map_err(|e| self.failed("begin a write", e))?;
        // redb's default, set anyway: an acknowledged write must be on disk.
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.failed("request a durable commit", e))?;
        let (out, revision, events, dirty) = {
            let mut writer = Writer::open(&txn, self)?;
            let out = f(&mut writer)?;
            writer.finish()?;
            (out, writer.revision, writer.events, writer.dirty)
        };
        if !dirty {
            txn.abort()
                .map_err(|e| self.failed("end a read-only write", e))?;
            return Ok(out);
        }
        txn.commit().map_err(|e| self.failed("commit", e))?;
        self.publish(shared, revision, events);
        Ok(out)
    }

    fn publish(&self, shared: &mut Shared, revision: Revision, events: Vec<WatchEvent>) {
        self.revision.store(revision, Ordering::SeqCst);
        if !events.is_empty() {
            for event in events {
                // An error only means that nobody watches right now.
                let _ = shared.events.send(event);
            }
            shared.changes.send_replace(revision);
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `jobs` in one transaction and commits it durably; on a failure the transaction is
    /// abandoned and nothing of the group is written.
    fn commit_group(
        &self,
        shared: &mut Shared,
        jobs: &mut impl Iterator<Item = Job>,
        replies: &mut Vec<Reply>,
    ) -> Result<(), Failure> {
        let why = |e: StoreError| Failure::of(&e);
        self.recover_locked(shared).map_err(why)?;
        let db = self.db();
        let mut txn = self
            .open_db(&db)
            .map_err(why)?
            .begin_write()
            .map_err(|e| why(self.failed("begin a write", e)))?;
        // redb's default, set anyway: an acknowledged write must be on disk.
        txn.set_durability(Durability::Immediate)
            .map_err(|e| why(self.failed("request a durable commit", e)))?;
        let (revision, events, dirty) = {
            let mut writer = Writer::open(&txn, self).map_err(why)?;
            for job in jobs.by_ref() {
                replies.push(job(Some((&mut *shared, &mut writer))));
                if let Some(poisoned) = writer.poisoned.take() {
                    return Err(poisoned);
                }
            }
            writer.finish().map_err(why)?;
            (writer.revision, writer.events, writer.dirty)
        };
        if !dirty {
            return txn
                .abort()
                .map_err(|e| why(self.failed("end a read-only write", e)));
        }
        txn.commit().map_err(|e| why(self.failed("commit", e)))?;
        self.publish(shared, revision, events);
        Ok(())
    }

    /// Trims the history to the configured length and revokes leases whose deadline passed
    /// while the file was closed; returns the live leases' deadlines for their expiry tasks.
    fn startup(&self) -> Result<Vec<(LeaseId, Instant)>, StoreError> {
        let now = SystemTime::now();
        let mut stored = Vec::new();
        {
            let txn = self.read()?;
            let leases = txn
                .open_table(LEASES)
                .map_err(|e| self.failed("open the leases", e))?;
            for item in leases
                .iter()
                .map_err(|e| self.failed("read the leases", e))?
            {
                let (id, record) = item.map_err(|e| self.failed("read the leases", e))?;
                let (ttl, deadline) =
                    decode_lease(id.value(), record.value()).map_err(|e| damaged(&self.path, e))?;
                stored.push((id.value(), ttl, deadline));
            }
        }
        let revision = self.revision.load(Ordering::SeqCst);
        let keep_from = revision.saturating_sub(self.history).saturating_add(1);
        let mut shared = self.lock();
        let mut live = Vec::new();
        let expired: Vec<LeaseId> = stored
            .iter()
            .filter(|(_, _, deadline)| *deadline <= unix_ms(now))
            .map(|(id, ..)| *id)
            .collect();
        self.commit(&mut shared, |w| {
            let first = w
                .history
                .first()
                .map_err(|e| w.failed("read the history", e))?
                .map(|(rev, _)| rev.value());
            if first.is_some_and(|first| first < keep_from) {
                w.history
                    .retain_in(..keep_from, |_, _| false)
                    .map_err(|e| w.failed("trim the history", e))?;
                w.dirty = true;
            }
            for lease in &expired {
                tracing::info!(
                    lease,
                    "revoking a lease that expired while the store was closed"
                );
                w.revoke(*lease)?;
            }
            Ok(())
        })?;
        let clock = Instant::now();
        for (id, ttl, deadline) in stored {
            if expired.contains(&id) {
                continue;
            }
            let left = Duration::from_millis(deadline.saturating_sub(unix_ms(now)));
            let deadline = clock + left;
            shared.leases.insert(
                id,
                LiveLease {
                    ttl: Duration::from_millis(ttl),
                    deadline,
                },
            );
            live.push((id, deadline));
        }
        Ok(live)
    }

    /// A read transaction, the file reopened first if an I/O failure broke it.
    fn read(&self) -> Result<Snapshot<'_>, StoreError> {
        self.recover()?;
        self.snapshot()
    }

    /// A read transaction on the file as it is (callers holding the writers' lock).
    fn snapshot(&self) -> Result<Snapshot<'_>, StoreError> {
        let db = self.db();
        let txn = self
            .open_db(&db)?
            .begin_read()
            .map_err(|e| self.failed("begin a read", e))?;
        Ok(Snapshot { txn, _db: db })
    }

    fn get_in(&self, txn: &ReadTransaction, key: &str) -> Result<Option<Entry>, StoreError> {
        let kv = txn
            .open_table(KV)
            .map_err(|e| self.failed("open the keys", e))?;
        let found = kv.get(key).map_err(|e| self.failed("read a key", e))?;
        match found {
            None => Ok(None),
            Some(raw) => decode_entry(raw.value())
                .map(Some)
                .map_err(|e| damaged(&self.path, e)),
        }
    }

    fn scan(&self, txn: &ReadTransaction, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let kv = txn
            .open_table(KV)
            .map_err(|e| self.failed("open the keys", e))?;
        let mut items = Vec::new();
        for item in kv
            .range::<&str>(prefix..)
            .map_err(|e| self.failed("list keys", e))?
        {
            let (key, raw) = item.map_err(|e| self.failed("list keys", e))?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            let entry = decode_entry(raw.value()).map_err(|e| damaged(&self.path, e))?;
            items.push(entry.into_key_value(key));
        }
        Ok(items)
    }

    fn revision_in(&self, txn: &ReadTransaction) -> Result<Revision, StoreError> {
        let meta = txn
            .open_table(META)
            .map_err(|e| self.failed("open the metadata", e))?;
        meta_value(&meta, META_REVISION, self)
    }

    fn expire_or_reschedule(&self, lease: LeaseId) -> Result<Option<Instant>, StoreError> {
        let mut shared = self.lock();
        let Some(deadline) = shared.leases.get(&lease).map(|l| l.deadline) else {
            return Ok(None);
        };
        if deadline > Instant::now() {
            return Ok(Some(deadline));
        }
        self.commit(&mut shared, |w| w.revoke(lease))?;
        shared.leases.remove(&lease);
        tracing::debug!(lease, "lease expired");
        Ok(None)
    }

    /// The leader's key and value: the lowest create revision under `<election>/`.
    fn leader_in(
        &self,
        txn: &ReadTransaction,
        election: &str,
    ) -> Result<Option<KeyValue>, StoreError> {
        Ok(self
            .scan(txn, &format!("{election}/"))?
            .into_iter()
            .min_by_key(|kv| kv.create_revision))
    }
}

/// Sleeps until the lease's deadline, again after each keep-alive, and revokes it when due.
/// Holds only a weak reference so that dropping the store is not delayed by open leases.
fn spawn_expiry(inner: Weak<Inner>, lease: LeaseId, first_deadline: Instant) {
    tokio::spawn(async move {
        let mut deadline = first_deadline;
        loop {
            tokio::time::sleep_until(deadline).await;
            let Some(strong) = inner.upgrade() else {
                return;
            };
            match blocking(move || strong.expire_or_reschedule(lease)).await {
                Ok(Some(later)) => deadline = later,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(lease, error = %e, "cannot revoke an expired lease; retrying in 1 s");
                    deadline = Instant::now() + Duration::from_secs(1);
                }
            }
        }
    });
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "redb"
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        self.run(move |inner| {
            let txn = inner.read()?;
            Ok(inner.get_in(&txn, &key)?.map(|e| e.into_key_value(&key)))
        })
        .await
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        self.submit(move |_, w| Ok(Ok(w.put(&key, &value, 0)?)))
            .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        precondition: Precondition,
        value: Bytes,
    ) -> Result<Revision, StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        self.submit(move |_, w| {
            let current = w.head(&key)?.map(|(_, modified, _)| modified);
            let holds = match precondition {
                Precondition::Absent => current.is_none(),
                Precondition::Revision(expected) => current == Some(expected),
            };
            if !holds {
                return Ok(Err(conflict(&key, precondition, current)));
            }
            Ok(Ok(w.put(&key, &value, 0)?))
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<Option<Revision>, StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        self.submit(move |_, w| Ok(Ok(w.remove(&key)?))).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let prefix = prefix.to_owned();
        self.run(move |inner| {
            let txn = inner.read()?;
            Ok(Listing {
                revision: inner.revision_in(&txn)?,
                items: inner.scan(&txn, &prefix)?,
            })
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let prefix = prefix.to_owned();
        let (backlog, live) = self
            .run(move |inner| {
                // The snapshot and the subscription are taken together under the writers'
                // lock: the snapshot holds every event published before, the receiver every
                // event published after.
                inner.recover()?;
                let (txn, events) = {
                    let shared = inner.lock();
                    (inner.snapshot()?, shared.events.subscribe())
                };
                let revision = inner.revision_in(&txn)?;
                let history = txn
                    .open_table(HISTORY)
                    .map_err(|e| inner.failed("open the history", e))?;
                let oldest = history
                    .first()
                    .map_err(|e| inner.failed("read the history", e))?
                    .map_or(revision + 1, |(rev, _)| rev.value());
                if after.saturating_add(1) < oldest {
                    return Err(StoreError::Compacted {
                        requested: after,
                        oldest,
                    });
                }
                let mut backlog = Vec::new();
                for item in history
                    .range(after.saturating_add(1)..)
                    .map_err(|e| inner.failed("read the history", e))?
                {
                    let (rev, raw) = item.map_err(|e| inner.failed("read the history", e))?;
                    let event = decode_event(rev.value(), raw.value())
                        .map_err(|e| damaged(&inner.path, e))?;
                    if event.key().starts_with(&prefix) {
                        backlog.push(Ok(event));
                    }
                }
                let live = live_changes(events, prefix, after, revision + 1);
                Ok((backlog, live))
            })
            .await?;
        Ok(stream::iter(backlog).chain(live).boxed())
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.revision.load(Ordering::SeqCst))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        check_ttl(ttl)?;
        let invalid = || StoreError::Invalid {
            field: "ttl",
            value: format!("{ttl:?}"),
            rule: "the lease's deadline must be representable".into(),
        };
        let deadline = Instant::now().checked_add(ttl).ok_or_else(invalid)?;
        let wall_deadline = SystemTime::now().checked_add(ttl).ok_or_else(invalid)?;
        let lease = self
            .submit(move |shared, w| {
                w.last_lease += 1;
                let lease = w.last_lease;
                w.save_lease(lease, ttl, wall_deadline)?;
                shared.leases.insert(lease, LiveLease { ttl, deadline });
                Ok(Ok(lease))
            })
            .await?;
        spawn_expiry(Arc::downgrade(&self.inner), lease, deadline);
        Ok(lease)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.submit(move |shared, w| {
            let ttl = match check_lease(shared, w, lease)? {
                Ok(ttl) => ttl,
                Err(refused) => return Ok(Err(refused)),
            };
            // Keeps the old deadline rather than panic should the clock be near its end.
            let (Some(deadline), Some(wall_deadline)) = (
                Instant::now().checked_add(ttl),
                SystemTime::now().checked_add(ttl),
            ) else {
                return Ok(Ok(()));
            };
            w.save_lease(lease, ttl, wall_deadline)?;
            if let Some(found) = shared.leases.get_mut(&lease) {
                found.deadline = deadline;
            }
            Ok(Ok(()))
        })
        .await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.submit(move |shared, w| {
            if let Err(refused) = check_lease(shared, w, lease)? {
                return Ok(Err(refused));
            }
            w.revoke(lease)?;
            shared.leases.remove(&lease);
            Ok(Ok(()))
        })
        .await
    }

    async fn put_with_lease(
        &self,
        key: &str,
        value: Bytes,
        lease: LeaseId,
    ) -> Result<Revision, StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        self.submit(move |shared, w| {
            if let Err(refused) = check_lease(shared, w, lease)? {
                return Ok(Err(refused));
            }
            Ok(Ok(w.put(&key, &value, lease)?))
        })
        .await
    }

    async fn campaign(
        &self,
        election: &str,
        candidate: &str,
        lease: LeaseId,
    ) -> Result<(), StoreError> {
        check_election(election)?;
        let key = format!("{election}/{lease:x}");
        let election = election.to_owned();
        let value = Bytes::copy_from_slice(candidate.as_bytes());
        let mut changes = {
            let (key, value) = (key.clone(), value.clone());
            self.submit(move |shared, w| {
                if let Err(refused) = check_lease(shared, w, lease)? {
                    return Ok(Err(refused));
                }
                // Re-campaigning with the same lease keeps the candidate's place in the queue.
                if w.entry(&key)?.is_none_or(|entry| entry.value != value) {
                    w.put(&key, &value, lease)?;
                }
                Ok(Ok(shared.changes.subscribe()))
            })
            .await?
        };
        loop {
            // Marked before reading: a write committed after the read below wakes us.
            changes.borrow_and_update();
            let (key, election) = (key.clone(), election.clone());
            let (present, leads) = self
                .run(move |inner| {
                    let txn = inner.read()?;
                    let present = inner.get_in(&txn, &key)?.is_some();
                    let leads = inner
                        .leader_in(&txn, &election)?
                        .is_some_and(|kv| kv.key == key);
                    Ok((present, leads))
                })
                .await?;
            if !present {
                return Err(lease_not_found(lease));
            }
            if leads {
                return Ok(());
            }
            if changes.changed().await.is_err() {
                return Err(StoreError::Unavailable {
                    reason: "the embedded store was closed during a campaign".into(),
                });
            }
        }
    }

    async fn leader(&self, election: &str) -> Result<Option<String>, StoreError> {
        let election = election.to_owned();
        self.run(move |inner| {
            let txn = inner.read()?;
            Ok(inner
                .leader_in(&txn, &election)?
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
        })
        .await
    }
}
