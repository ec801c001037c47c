//! [`MemoryStore`]: the [`Store`] contract in memory, with watches, leases and election.
//!
//! All state sits behind one mutex that is never held across an `.await`. Every write takes
//! the lock, advances the revision, appends to the kept history and publishes the event on a
//! broadcast channel while still holding it, and [`Store::watch`] copies the history and
//! subscribes under the same lock — so a watcher sees each change exactly once, in order.

use crate::store::backend::{
    check_election, check_key, check_ttl, conflict, lease_not_found, live_changes,
};
use crate::store::{
    KeyValue, LeaseId, Listing, Precondition, Revision, Store, StoreError, WatchEvent, WatchStream,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

/// Change events kept for watch resume by [`MemoryStore::new`].
const DEFAULT_HISTORY: usize = 10_000;
/// Live events a watcher may fall behind by before it is told to re-list.
const DEFAULT_WATCH_BUFFER: usize = 4_096;

/// An in-memory [`Store`] for tests and single-process use; nothing survives the process.
///
/// - One store-wide revision, `0` when empty, `+1` per put, successful compare-and-swap and
///   deletion of an existing key (deleting an absent key writes nothing).
/// - [`Store::watch`] replays the kept history (the last 10,000 change events by default, see
///   [`MemoryStore::with_history`]) and then streams live changes. Asking for history older
///   than that fails **from `watch()` itself** with [`StoreError::Compacted`]. A watcher that
///   falls more than the watch buffer (4,096 events by default, see
///   [`MemoryStore::with_limits`]) behind live writes — counted over all keys, not only its
///   prefix — receives one `Err(Compacted)` item and its stream ends.
/// - Leases: the TTL must be at least 1 s ([`StoreError::Invalid`] below). Expiry runs on a
///   spawned tokio task using `tokio::time`, so tests may pause time; each key bound to the
///   lease is then deleted with its own revision and delete event. An unknown or expired lease
///   is [`StoreError::NotFound`] with key `lease <id>`.
/// - Election follows etcd's recipe: a candidate's key is `<election>/<lease id in hex>`,
///   bound to its lease; the key with the lowest create revision leads. Dropping a `campaign`
///   future leaves the candidate's key in the queue until its lease expires.
///
/// `Clone` shares the same store.
///
/// ```
/// use edgeio_core::store::{Store, WatchEvent};
/// use edgeio_core::testing::MemoryStore;
/// use futures::StreamExt;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let listing = store.list("nodes/").await?;
/// let mut changes = store.watch("nodes/", listing.revision).await?;
/// let rev = store.put("nodes/n1", "up".into()).await?;
/// let Some(Ok(WatchEvent::Put(kv))) = changes.next().await else { panic!("no event") };
/// assert_eq!((kv.key.as_str(), kv.mod_revision), ("nodes/n1", rev));
/// # Ok::<_, edgeio_core::store::StoreError>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

struct State {
    entries: BTreeMap<String, Entry>,
    revision: Revision,
    /// The last `history_len` events, contiguous in revision because every write is one event.
    history: VecDeque<WatchEvent>,
    history_len: usize,
    events: broadcast::Sender<WatchEvent>,
    /// Wakes campaigners after any write.
    changes: watch::Sender<Revision>,
    leases: HashMap<LeaseId, Lease>,
    last_lease: LeaseId,
}

struct Entry {
    kv: KeyValue,
    lease: Option<LeaseId>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

impl MemoryStore {
    /// An empty store keeping 10,000 change events for watch resume.
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_HISTORY, DEFAULT_WATCH_BUFFER)
    }

    /// An empty store keeping the last `events` change events for watch resume (`0` keeps
    /// none: only live watches from the current revision work).
    pub fn with_history(events: usize) -> Self {
        Self::with_limits(events, DEFAULT_WATCH_BUFFER)
    }

    /// An empty store keeping `history` change events, whose live watchers may fall at most
    /// `watch_buffer` events behind (at least 1, rounded up to a power of two) before they are
    /// told to re-list.
    pub fn with_limits(history: usize, watch_buffer: usize) -> Self {
        let (events, _) = broadcast::channel(watch_buffer.max(1));
        let (changes, _) = watch::channel(0);
        let state = State {
            entries: BTreeMap::new(),
            revision: 0,
            history: VecDeque::new(),
            history_len: history,
            events,
            changes,
            leases: HashMap::new(),
            last_lease: 0,
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryStore")
            .field("revision", &state.revision)
            .field("keys", &state.entries.len())
            .field("history_len", &state.history_len)
            .field("leases", &state.leases.len())
            .finish()
    }
}

/// No code panics while holding the lock, but a poisoned mutex must not take every later
/// test down with it.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn keys_under<'a: 'p, 'p>(
    entries: &'a BTreeMap<String, Entry>,
    prefix: &'p str,
) -> impl Iterator<Item = &'a Entry> + 'p {
    entries
        .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(key, _)| key.starts_with(prefix))
        .map(|(_, entry)| entry)
}

impl State {
    /// The revision of the oldest kept event; `after` must be at least this minus one.
    fn oldest_kept(&self) -> Revision {
        self.history
            .front()
            .map_or(self.revision + 1, WatchEvent::revision)
    }

    fn record(&mut self, event: WatchEvent) {
        if self.history_len > 0 {
            if self.history.len() >= self.history_len {
                self.history.pop_front();
            }
            self.history.push_back(event.clone());
        }
        // An error only means that nobody watches right now.
        let _ = self.events.send(event);
        self.changes.send_replace(self.revision);
    }

    fn write(&mut self, key: &str, value: Bytes, lease: Option<LeaseId>) -> Revision {
        self.revision += 1;
        let revision = self.revision;
        let (create_revision, old_lease) = match self.entries.get(key) {
            Some(entry) => (entry.kv.create_revision, entry.lease),
            None => (revision, None),
        };
        // As in etcd, a write without a lease unbinds the key from its former lease.
        if old_lease != lease {
            if let Some(old) = old_lease.and_then(|id| self.leases.get_mut(&id)) {
                old.keys.remove(key);
            }
            if let Some(new) = lease.and_then(|id| self.leases.get_mut(&id)) {
                new.keys.insert(key.to_owned());
            }
        }
        let kv = KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: revision,
        };
        self.entries.insert(
            key.to_owned(),
            Entry {
                kv: kv.clone(),
                lease,
            },
        );
        self.record(WatchEvent::Put(kv));
        revision
    }

    fn remove(&mut self, key: &str) -> Option<Revision> {
        let entry = self.entries.remove(key)?;
        if let Some(lease) = entry.lease.and_then(|id| self.leases.get_mut(&id)) {
            lease.keys.remove(key);
        }
        self.revision += 1;
        self.record(WatchEvent::Delete {
            key: key.to_owned(),
            revision: self.revision,
        });
        Some(self.revision)
    }

    fn revoke(&mut self, lease: LeaseId) {
        if let Some(lease) = self.leases.remove(&lease) {
            for key in lease.keys {
                self.remove(&key);
            }
        }
    }

    /// Checks that `lease` lives; one found past its deadline is revoked now rather than
    /// waiting for its expiry task, so no caller can use a dead lease.
    fn live_lease(&mut self, lease: LeaseId) -> Result<&mut Lease, StoreError> {
        let deadline = match self.leases.get(&lease) {
            Some(found) => found.deadline,
            None => return Err(lease_not_found(lease)),
        };
        if deadline <= Instant::now() {
            self.revoke(lease);
            return Err(lease_not_found(lease));
        }
        self.leases
            .get_mut(&lease)
            .ok_or_else(|| lease_not_found(lease))
    }

    fn leader(&self, election: &str) -> Option<&Entry> {
        let prefix = format!("{election}/");
        keys_under(&self.entries, &prefix).min_by_key(|entry| entry.kv.create_revision)
    }

    fn leader_key(&self, election: &str) -> Option<String> {
        self.leader(election).map(|entry| entry.kv.key.clone())
    }
}

/// Sleeps until the lease's deadline, again after each keep-alive, and revokes it when due.
/// Holds only a weak reference so that dropping the store is not delayed by open leases.
fn spawn_expiry(state: Weak<Mutex<State>>, lease: LeaseId, first_deadline: Instant) {
    tokio::spawn(async move {
        let mut deadline = first_deadline;
        loop {
            tokio::time::sleep_until(deadline).await;
            match expire_or_reschedule(&state, lease) {
                Some(later) => deadline = later,
                None => return,
            }
        }
    });
}

fn expire_or_reschedule(state: &Weak<Mutex<State>>, lease: LeaseId) -> Option<Instant> {
    let state = state.upgrade()?;
    let mut state = lock(&state);
    let deadline = state.leases.get(&lease)?.deadline;
    if deadline > Instant::now() {
        return Some(deadline);
    }
    state.revoke(lease);
    None
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        Ok(self.lock().entries.get(key).map(|entry| entry.kv.clone()))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        check_key(key)?;
        Ok(self.lock().write(key, value, None))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        precondition: Precondition,
        value: Bytes,
    ) -> Result<Revision, StoreError> {
        check_key(key)?;
        let mut state = self.lock();
        let current = state.entries.get(key).map(|entry| entry.kv.mod_revision);
        let holds = match precondition {
            Precondition::Absent => current.is_none(),
            Precondition::Revision(expected) => current == Some(expected),
        };
        if !holds {
            return Err(conflict(key, precondition, current));
        }
        Ok(state.write(key, value, None))
    }

    async fn delete(&self, key: &str) -> Result<Option<Revision>, StoreError> {
        check_key(key)?;
        Ok(self.lock().remove(key))
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let state = self.lock();
        Ok(Listing {
            revision: state.revision,
            items: keys_under(&state.entries, prefix)
                .map(|entry| entry.kv.clone())
                .collect(),
        })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let (backlog, live) = {
            let state = self.lock();
            let oldest = state.oldest_kept();
            if after.saturating_add(1) < oldest {
                return Err(StoreError::Compacted {
                    requested: after,
                    oldest,
                });
            }
            let skip = usize::try_from(after.saturating_add(1) - oldest).unwrap_or(usize::MAX);
            let backlog: Vec<Result<WatchEvent, StoreError>> = state
                .history
                .iter()
                .skip(skip)
                .filter(|event| event.key().starts_with(prefix))
                .cloned()
                .map(Ok)
                .collect();
            let live = live_changes(
                state.events.subscribe(),
                prefix.to_owned(),
                after,
                state.revision + 1,
            );
            (backlog, live)
        };
        Ok(stream::iter(backlog).chain(live).boxed())
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock().revision)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        check_ttl(ttl)?;
        let deadline = Instant::now()
            .checked_add(ttl)
            .ok_or_else(|| StoreError::Invalid {
                field: "ttl",
                value: format!("{ttl:?}"),
                rule: "the lease's deadline must be representable".into(),
            })?;
        let lease = {
            let mut state = self.lock();
            state.last_lease += 1;
            let lease = state.last_lease;
            state.leases.insert(
                lease,
                Lease {
                    ttl,
                    deadline,
                    keys: BTreeSet::new(),
                },
            );
            lease
        };
        spawn_expiry(Arc::downgrade(&self.state), lease, deadline);
        Ok(lease)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut state = self.lock();
        let found = state.live_lease(lease)?;
        // Keeps the old deadline rather than panic should the clock be near its end.
        found.deadline = Instant::now()
            .checked_add(found.ttl)
            .unwrap_or(found.deadline);
        Ok(())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.live_lease(lease)?;
        state.revoke(lease);
        Ok(())
    }

    async fn put_with_lease(
        &self,
        key: &str,
        value: Bytes,
        lease: LeaseId,
    ) -> Result<Revision, StoreError> {
        check_key(key)?;
        let mut state = self.lock();
        state.live_lease(lease)?;
        Ok(state.write(key, value, Some(lease)))
    }

    async fn campaign(
        &self,
        election: &str,
        candidate: &str,
        lease: LeaseId,
    ) -> Result<(), StoreError> {
        check_election(election)?;
        let key = format!("{election}/{lease:x}");
        let mut changes = {
            let mut state = self.lock();
            state.live_lease(lease)?;
            let queued = state
                .entries
                .get(&key)
                .is_some_and(|entry| entry.kv.value == candidate.as_bytes());
            // Re-campaigning with the same lease keeps the candidate's place in the queue.
            if !queued {
                state.write(
                    &key,
                    Bytes::copy_from_slice(candidate.as_bytes()),
                    Some(lease),
                );
            }
            state.changes.subscribe()
        };
        loop {
            {
                let state = self.lock();
                if !state.entries.contains_key(&key) {
                    return Err(lease_not_found(lease));
                }
                if state.leader_key(election).as_deref() == Some(key.as_str()) {
                    return Ok(());
                }
                // Marked under the lock: any write after this check wakes us below.
                changes.borrow_and_update();
            }
            if changes.changed().await.is_err() {
                return Err(StoreError::Unavailable {
                    reason: "the memory store was dropped during a campaign".into(),
                });
            }
        }
    }

    async fn leader(&self, election: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .leader(election)
            .map(|entry| String::from_utf8_lossy(&entry.kv.value).into_owned()))
    }
}
