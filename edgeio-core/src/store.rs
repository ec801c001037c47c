//! The `Store` trait family: a key-value contract with revisions, as in etcd.
//!
//! One store-wide revision grows by one with every write; each key carries the revision of
//! its last change. [`Store::list`] returns the revision it read at, and
//! [`Store::watch`] streams every change *after* a revision, so list-then-watch has no gap.
//! History a store no longer keeps answers [`StoreError::Compacted`]: re-list, never guess.
//! Leases and leader election are optional; a backend without them returns
//! [`StoreError::Unsupported`] from the default methods.
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use edgeio_core::store::{Precondition, Store, StoreExt};
//! use edgeio_core::testing::MemoryStore;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let rev = store.put_json("jobs/web", &serde_json::json!({"replicas": 2})).await?;
//! // Only the writer that read revision `rev` may update it.
//! store.compare_and_swap("jobs/web", Precondition::Revision(rev), "{}".into()).await?;
//! assert!(store.compare_and_swap("jobs/web", Precondition::Revision(rev), "{}".into()).await.is_err());
//! # Ok::<_, edgeio_core::store::StoreError>(()) }).unwrap();
//! # }
//! ```

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{de::DeserializeOwned, Serialize};
use std::time::Duration;

/// A store-wide revision. `0` means "before any write".
pub type Revision = u64;

/// A lease id.
pub type LeaseId = i64;

/// A key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Bytes,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the key's last change.
    pub mod_revision: Revision,
}

/// What compare-and-swap compares against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// The key must not exist.
    Absent,
    /// The key's last change must be at this revision.
    Revision(Revision),
}

/// A prefix listing and the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The store revision the listing reflects; watch from here to miss nothing.
    pub revision: Revision,
    /// Keys under the prefix, in key order.
    pub items: Vec<KeyValue>,
}

/// One change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or changed.
    Put(KeyValue),
    /// A key was deleted at `revision`.
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }

    /// The key changed.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

/// Changes in revision order; ends with `Err(Compacted)` if the watcher fell too far behind.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

/// Errors of the store family. Variants say what the caller can do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key does not exist.
    #[error("key {key:?} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// The key exists and the write required it absent.
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// A compare-and-swap precondition failed: re-read and retry.
    #[error("key {key:?} changed: expected {expected}, found {found}")]
    Conflict {
        /// The key.
        key: String,
        /// What the caller expected (`revision 7`, `absent`).
        expected: String,
        /// What the store holds (`revision 9`, `absent`).
        found: String,
    },
    /// The history asked for is gone, or the watcher fell behind: list again, then watch.
    #[error("revision {requested} is compacted (oldest kept: {oldest}); list again and watch from the listing")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still kept.
        oldest: Revision,
    },
    /// The backend lacks this optional capability.
    #[error("{operation} is not supported by the {backend} store")]
    Unsupported {
        /// The operation.
        operation: &'static str,
        /// The backend's name.
        backend: &'static str,
    },
    /// The backend cannot be reached now: retry later.
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The request is invalid (empty key, bad TTL …).
    #[error("invalid {field} {value:?}: {rule}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
        /// The rule broken.
        rule: String,
    },
    /// Anything else, with its cause.
    #[error("store error: {source}")]
    Other {
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A backend-neutral key-value store with revisions, watches and optional leases.
///
/// Implementations pass [`crate::testing::conformance::store::run_all`] (feature `testing`).
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait Store: Send + Sync {
    /// The backend's name, for messages (`memory`, `redb`, `etcd`).
    fn backend(&self) -> &'static str;

    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Writes one key unconditionally; returns the new store revision.
    async fn put(&self, key: &str, value: Bytes) -> Result<Revision, StoreError>;

    /// Writes one key if `precondition` holds; [`StoreError::Conflict`] otherwise.
    async fn compare_and_swap(
        &self,
        key: &str,
        precondition: Precondition,
        value: Bytes,
    ) -> Result<Revision, StoreError>;

    /// Deletes one key; returns the deletion's revision, or `None` when the key did not exist
    /// (which writes nothing and does not advance the revision).
    async fn delete(&self, key: &str) -> Result<Option<Revision>, StoreError>;

    /// All keys under `prefix` and the revision read at.
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError>;

    /// Every change under `prefix` with a revision greater than `after`, in order, then live.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// The current store revision.
    async fn revision(&self) -> Result<Revision, StoreError>;

    /// Grants a lease that expires after `ttl` unless kept alive. Optional.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let _ = ttl;
        Err(StoreError::Unsupported {
            operation: "grant_lease",
            backend: self.backend(),
        })
    }

    /// Renews a lease. Optional.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let _ = lease;
        Err(StoreError::Unsupported {
            operation: "keep_alive",
            backend: self.backend(),
        })
    }

    /// Ends `lease` now: its keys are deleted, each with its delete event, as when it expires
    /// (a clean stop hands a leadership over at once instead of after the TTL). An unknown or
    /// expired lease is [`StoreError::NotFound`]. Optional.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let _ = lease;
        Err(StoreError::Unsupported {
            operation: "revoke_lease",
            backend: self.backend(),
        })
    }

    /// Writes a key that is deleted when `lease` expires. Optional.
    async fn put_with_lease(
        &self,
        key: &str,
        value: Bytes,
        lease: LeaseId,
    ) -> Result<Revision, StoreError> {
        let _ = (key, value, lease);
        Err(StoreError::Unsupported {
            operation: "put_with_lease",
            backend: self.backend(),
        })
    }

    /// Waits until `candidate` leads `election` (held while `lease` lives). Optional.
    async fn campaign(
        &self,
        election: &str,
        candidate: &str,
        lease: LeaseId,
    ) -> Result<(), StoreError> {
        let _ = (election, candidate, lease);
        Err(StoreError::Unsupported {
            operation: "campaign",
            backend: self.backend(),
        })
    }

    /// The current leader of `election`, if any. Optional.
    async fn leader(&self, election: &str) -> Result<Option<String>, StoreError> {
        let _ = election;
        Err(StoreError::Unsupported {
            operation: "leader",
            backend: self.backend(),
        })
    }
}

/// Conveniences built only on [`Store`]'s methods.
#[async_trait]
pub trait StoreExt: Store {
    /// Reads and deserializes a JSON value.
    async fn get_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, Revision)>, StoreError> {
        match self.get(key).await? {
            None => Ok(None),
            Some(kv) => {
                let value = serde_json::from_slice(&kv.value).map_err(|e| StoreError::Other {
                    source: format!("key {key:?} does not hold the expected JSON: {e}").into(),
                })?;
                Ok(Some((value, kv.mod_revision)))
            }
        }
    }

    /// Serializes to JSON and writes.
    async fn put_json<T: Serialize + Sync>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<Revision, StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Other {
            source: Box::new(e),
        })?;
        self.put(key, bytes.into()).await
    }

    /// Serializes to JSON and writes if `precondition` holds.
    async fn cas_json<T: Serialize + Sync>(
        &self,
        key: &str,
        precondition: Precondition,
        value: &T,
    ) -> Result<Revision, StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Other {
            source: Box::new(e),
        })?;
        self.compare_and_swap(key, precondition, bytes.into()).await
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// Pieces every backend shares, so that they refuse the same inputs with the same words and
/// fan live changes out to watchers the same way.
pub mod backend {
    use super::{LeaseId, Precondition, Revision, StoreError, WatchEvent};
    use futures::stream::{self, Stream};
    use std::time::Duration;
    use tokio::sync::broadcast;

    /// The shortest lease a backend grants (etcd rounds shorter ones up anyway).
    pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

    /// Refuses the empty key.
    pub fn check_key(key: &str) -> Result<(), StoreError> {
        if key.is_empty() {
            return Err(StoreError::Invalid {
                field: "key",
                value: String::new(),
                rule: "a key must not be empty".into(),
            });
        }
        Ok(())
    }

    /// Refuses the empty election name.
    pub fn check_election(election: &str) -> Result<(), StoreError> {
        if election.is_empty() {
            return Err(StoreError::Invalid {
                field: "election",
                value: String::new(),
                rule: "an election name must not be empty".into(),
            });
        }
        Ok(())
    }

    /// Refuses a lease shorter than [`MIN_LEASE_TTL`].
    pub fn check_ttl(ttl: Duration) -> Result<(), StoreError> {
        if ttl < MIN_LEASE_TTL {
            return Err(StoreError::Invalid {
                field: "ttl",
                value: format!("{ttl:?}"),
                rule: format!("a lease lives at least {MIN_LEASE_TTL:?}"),
            });
        }
        Ok(())
    }

    /// The error for a lease that does not exist (or expired).
    pub fn lease_not_found(lease: LeaseId) -> StoreError {
        StoreError::NotFound {
            key: format!("lease {lease}"),
        }
    }

    /// The [`StoreError::Conflict`] of a failed compare-and-swap, in its usual words
    /// (`revision 7`, `absent`).
    pub fn conflict(
        key: &str,
        precondition: Precondition,
        current: Option<Revision>,
    ) -> StoreError {
        let words = |rev: Option<Revision>| {
            rev.map_or_else(|| "absent".to_string(), |rev| format!("revision {rev}"))
        };
        StoreError::Conflict {
            key: key.to_owned(),
            expected: words(match precondition {
                Precondition::Absent => None,
                Precondition::Revision(rev) => Some(rev),
            }),
            found: words(current),
        }
    }

    /// The live half of a watch over a broadcast of every change in revision order: yields the
    /// changes under `prefix` with a revision above `after`; a receiver that falls behind gets
    /// one [`StoreError::Compacted`] and the stream ends (never a silent gap). `next` is the
    /// revision of the first change the receiver will see (the store revision at subscription
    /// plus one); subscribe under the same lock that read the backlog.
    pub fn live_changes(
        events: broadcast::Receiver<WatchEvent>,
        prefix: String,
        after: Revision,
        next: Revision,
    ) -> impl Stream<Item = Result<WatchEvent, StoreError>> + Send + 'static {
        let live = Live {
            events,
            prefix,
            after,
            next,
            ended: false,
        };
        stream::unfold(live, Live::next_item)
    }

    struct Live {
        events: broadcast::Receiver<WatchEvent>,
        prefix: String,
        after: Revision,
        // the revision of the next event the channel must deliver (events are contiguous)
        next: Revision,
        ended: bool,
    }

    impl Live {
        async fn next_item(mut self) -> Option<(Result<WatchEvent, StoreError>, Self)> {
            if self.ended {
                return None;
            }
            loop {
                match self.events.recv().await {
                    Ok(event) => {
                        self.next = event.revision() + 1;
                        if event.revision() > self.after && event.key().starts_with(&self.prefix) {
                            return Some((Ok(event), self));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        self.ended = true;
                        let seen = self.next - 1;
                        let error = StoreError::Compacted {
                            requested: seen.max(self.after),
                            oldest: self.next + skipped,
                        };
                        tracing::debug!(
                            prefix = %self.prefix,
                            skipped,
                            "watcher fell behind; told to re-list"
                        );
                        return Some((Err(error), self));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    }
}
