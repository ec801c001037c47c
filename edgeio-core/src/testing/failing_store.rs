//! [`FailingStore`]: a store whose writes fail on command, to test what an engine does when it
//! cannot persist (a full disk on an edge device) and what it does once the store heals.

use crate::store::{
    KeyValue, LeaseId, Listing, Precondition, Revision, Store, StoreError, WatchStream,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Wraps any store; while its [`FailSwitch`] is set, every write fails with
/// [`StoreError::Unavailable`] naming the key (or lease) and writes nothing.
///
/// Writes are `put`, `compare_and_swap`, `delete`, `put_with_lease` and the lease and
/// election calls that write (`grant_lease`, `keep_alive`, `revoke_lease`, `campaign`), as
/// they all write on a real disk. Reads (`get`, `list`, `watch`, `revision`, `leader`) always
/// pass through, as they do on a full disk. Cleared, the wrapper is the inner store: it passes
/// the store conformance suite.
///
/// ```
/// use edgeio_core::store::{Store, StoreError};
/// use edgeio_core::testing::{FailingStore, MemoryStore};
/// use std::sync::Arc;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = FailingStore::new(Arc::new(MemoryStore::new()));
/// let switch = store.switch();
/// switch.fail();
/// assert!(matches!(store.put("jobs/web", "{}".into()).await, Err(StoreError::Unavailable { .. })));
/// switch.heal();
/// store.put("jobs/web", "{}".into()).await.unwrap();
/// assert_eq!(switch.refused(), 1);
/// # });
/// ```
#[derive(Clone)]
pub struct FailingStore {
    inner: Arc<dyn Store>,
    switch: FailSwitch,
}

/// Turns a [`FailingStore`]'s writes off and on. Cheap to clone; clones share the setting.
#[derive(Clone, Default)]
pub struct FailSwitch {
    state: Arc<SwitchState>,
}

#[derive(Default)]
struct SwitchState {
    failing: AtomicBool,
    refused: AtomicU64,
}

impl FailSwitch {
    /// Every write fails from now on.
    pub fn fail(&self) {
        self.state.failing.store(true, Ordering::SeqCst);
    }

    /// Writes reach the inner store again.
    pub fn heal(&self) {
        self.state.failing.store(false, Ordering::SeqCst);
    }

    /// Whether writes fail now.
    pub fn is_failing(&self) -> bool {
        self.state.failing.load(Ordering::SeqCst)
    }

    /// How many writes were refused so far.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// `Err(Unavailable)` naming `what` while failing (and counts it), `Ok` otherwise.
    fn check(&self, what: impl FnOnce() -> String) -> Result<(), StoreError> {
        if !self.is_failing() {
            return Ok(());
        }
        self.state.refused.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Unavailable {
            reason: format!(
                "write of {} refused: the store is failing on purpose (FailingStore)",
                what()
            ),
        })
    }
}

impl fmt::Debug for FailSwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailSwitch")
            .field("failing", &self.is_failing())
            .field("refused", &self.refused())
            .finish()
    }
}

impl FailingStore {
    /// Wraps `inner`, writes passing until [`FailSwitch::fail`].
    pub fn new(inner: Arc<dyn Store>) -> FailingStore {
        FailingStore {
            inner,
            switch: FailSwitch::default(),
        }
    }

    /// The switch of this store (and of its clones).
    pub fn switch(&self) -> FailSwitch {
        self.switch.clone()
    }

    /// The wrapped store, to look at what really was written.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }
}

impl fmt::Debug for FailingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailingStore")
            .field("backend", &self.inner.backend())
            .field("switch", &self.switch)
            .finish()
    }
}

fn key(key: &str) -> impl FnOnce() -> String + '_ {
    move || format!("key {key:?}")
}

fn lease(lease: LeaseId) -> impl FnOnce() -> String {
    move || format!("lease {lease}")
}

#[async_trait]
impl Store for FailingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }

    async fn put(&self, k: &str, value: Bytes) -> Result<Revision, StoreError> {
        self.switch.check(key(k))?;
        self.inner.put(k, value).await
    }

    async fn compare_and_swap(
        &self,
        k: &str,
        precondition: Precondition,
        value: Bytes,
    ) -> Result<Revision, StoreError> {
        self.switch.check(key(k))?;
        self.inner.compare_and_swap(k, precondition, value).await
    }

    async fn delete(&self, k: &str) -> Result<Option<Revision>, StoreError> {
        self.switch.check(key(k))?;
        self.inner.delete(k).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.inner.list(prefix).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, after).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.switch.check(|| format!("a new lease of {ttl:?}"))?;
        self.inner.grant_lease(ttl).await
    }

    async fn keep_alive(&self, id: LeaseId) -> Result<(), StoreError> {
        self.switch.check(lease(id))?;
        self.inner.keep_alive(id).await
    }

    async fn revoke_lease(&self, id: LeaseId) -> Result<(), StoreError> {
        self.switch.check(lease(id))?;
        self.inner.revoke_lease(id).await
    }

    async fn put_with_lease(
        &self,
        k: &str,
        value: Bytes,
        id: LeaseId,
    ) -> Result<Revision, StoreError> {
        self.switch.check(key(k))?;
        self.inner.put_with_lease(k, value, id).await
    }

    async fn campaign(
        &self,
        election: &str,
        candidate: &str,
        id: LeaseId,
    ) -> Result<(), StoreError> {
        self.switch
            .check(|| format!("candidate {candidate:?} of election {election:?}"))?;
        self.inner.campaign(election, candidate, id).await
    }

    async fn leader(&self, election: &str) -> Result<Option<String>, StoreError> {
        self.inner.leader(election).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemoryStore;
    use futures::StreamExt;

    fn failing() -> (FailingStore, FailSwitch) {
        let store = FailingStore::new(Arc::new(MemoryStore::new()));
        let switch = store.switch();
        (store, switch)
    }

    fn assert_refused<T: fmt::Debug>(result: Result<T, StoreError>, naming: &str) {
        match result {
            Err(StoreError::Unavailable { reason }) => {
                assert!(reason.contains(naming), "{reason:?} names {naming:?}")
            }
            other => panic!("expected Unavailable naming {naming:?}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn every_write_is_refused_naming_its_key_while_failing() {
        let (store, switch) = failing();
        let rev = store.put("jobs/web", "v1".into()).await.unwrap();
        let lease_id = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        switch.fail();
        assert_refused(store.put("jobs/web", "v2".into()).await, "\"jobs/web\"");
        assert_refused(
            store
                .compare_and_swap("jobs/web", Precondition::Revision(rev), "v2".into())
                .await,
            "\"jobs/web\"",
        );
        assert_refused(store.delete("jobs/web").await, "\"jobs/web\"");
        assert_refused(
            store.put_with_lease("l/k", "v".into(), lease_id).await,
            "\"l/k\"",
        );
        assert_refused(store.grant_lease(Duration::from_secs(5)).await, "lease");
        assert_refused(
            store.keep_alive(lease_id).await,
            &format!("lease {lease_id}"),
        );
        assert_refused(
            store.revoke_lease(lease_id).await,
            &format!("lease {lease_id}"),
        );
        assert_refused(store.campaign("e", "me", lease_id).await, "\"me\"");
        assert_eq!(switch.refused(), 8);
    }

    #[tokio::test]
    async fn a_refused_write_changes_nothing_and_reads_pass() {
        let (store, switch) = failing();
        let rev = store.put("jobs/web", "v1".into()).await.unwrap();
        let mut events = store.watch("jobs/", rev).await.unwrap();
        switch.fail();
        assert!(store.put("jobs/web", "v2".into()).await.is_err());
        assert!(store.put("jobs/db", "v1".into()).await.is_err());
        // Reads while failing see the store as it was.
        assert_eq!(store.revision().await.unwrap(), rev);
        assert_eq!(
            store.get("jobs/web").await.unwrap().unwrap().value,
            Bytes::from("v1")
        );
        assert_eq!(store.list("jobs/").await.unwrap().items.len(), 1);
        assert_eq!(store.inner().revision().await.unwrap(), rev);
        switch.heal();
        let next = store.put("jobs/db", "v1".into()).await.unwrap();
        // The watcher's next event is the write after healing: nothing leaked before it.
        match events.next().await {
            Some(Ok(event)) => {
                assert_eq!((event.key(), event.revision()), ("jobs/db", next));
            }
            other => panic!("expected the write after healing, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn healed_writes_pass_and_clones_share_the_switch() {
        let (store, switch) = failing();
        let clone = store.clone();
        switch.fail();
        assert!(clone.put("k", "v".into()).await.is_err());
        assert!(store.switch().is_failing());
        store.switch().heal();
        assert!(!switch.is_failing());
        clone.put("k", "v".into()).await.unwrap();
        assert_eq!(switch.refused(), 1);
        assert_eq!(store.backend(), "memory");
    }
}
