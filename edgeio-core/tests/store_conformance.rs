//! The memory store against the store conformance suite, plus what only the memory store can
//! promise exactly: `+1` revisions, its history and buffer limits, lease timing under paused
//! time, and sharing across clones and tasks.
#![cfg(feature = "testing")]

use async_trait::async_trait;
use bytes::Bytes;
use edgeio_core::store::{
    Listing, Precondition, Revision, Store, StoreError, WatchEvent, WatchStream,
};
use edgeio_core::testing::conformance::store as suite;
use edgeio_core::testing::{FailingStore, MemoryStore};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

async fn next_event(events: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(DEADLINE, events.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(other) => panic!("expected a watch event, got {other:?}"),
        Err(_) => panic!("no watch event within {DEADLINE:?}"),
    }
}

#[tokio::test]
async fn memory_store_passes_the_store_conformance_suite() {
    let store = MemoryStore::new();
    assert_eq!(store.backend(), "memory");
    suite::run_all(&store, "conformance/").await;
}

#[tokio::test]
async fn failing_store_passes_the_store_conformance_suite_when_not_failing() {
    let store = FailingStore::new(Arc::new(MemoryStore::new()));
    suite::run_all(&store, "failing/").await;
    // Failed and healed again, it is the store it wraps.
    store.switch().fail();
    assert!(store.put("failing/k", "v".into()).await.is_err());
    store.switch().heal();
    suite::run_all(&store, "healed/").await;
    assert_eq!(store.switch().refused(), 1);
}

#[tokio::test(start_paused = true)]
async fn memory_store_passes_the_suite_with_paused_time() {
    suite::run_all(&MemoryStore::new(), "paused/").await;
}

#[tokio::test]
async fn suite_can_run_twice_in_the_same_namespace() {
    let store = MemoryStore::new();
    suite::put_get_roundtrip(&store, "again/").await;
    suite::cas_on_absence(&store, "again/").await;
    suite::put_get_roundtrip(&store, "again/").await;
    suite::cas_on_absence(&store, "again/").await;
}

/// Implements only the required methods, so leases and election are the trait's defaults.
struct WithoutLeases(MemoryStore);

#[async_trait]
impl Store for WithoutLeases {
    fn backend(&self) -> &'static str {
        "memory-without-leases"
    }
    async fn get(&self, key: &str) -> Result<Option<edgeio_core::store::KeyValue>, StoreError> {
        self.0.get(key).await
    }
    async fn put(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        self.0.put(key, value).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        precondition: Precondition,
        value: Bytes,
    ) -> Result<Revision, StoreError> {
        self.0.compare_and_swap(key, precondition, value).await
    }
    async fn delete(&self, key: &str) -> Result<Option<Revision>, StoreError> {
        self.0.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.0.list(prefix).await
    }
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        self.0.watch(prefix, after).await
    }
    async fn revision(&self) -> Result<Revision, StoreError> {
        self.0.revision().await
    }
}

#[tokio::test]
async fn store_without_leases_passes_the_suite_reporting_them_unsupported() {
    suite::run_all(&WithoutLeases(MemoryStore::new()), "no-leases/").await;
}

#[tokio::test]
async fn history_beyond_sixteen_events_is_compacted() {
    suite::compacted_history_is_reported(&MemoryStore::with_history(16), "compaction/", 16).await;
}

#[tokio::test]
async fn watch_from_compacted_revision_fails_at_the_watch_call() {
    let store = MemoryStore::with_history(4);
    for i in 0..10 {
        store.put(&format!("k{i}"), "v".into()).await.unwrap();
    }
    // Events 7..=10 are kept, so watching after 6 works and after 5 does not.
    assert!(store.watch("", 6).await.is_ok());
    match store.watch("", 5).await {
        Err(StoreError::Compacted { requested, oldest }) => assert_eq!((requested, oldest), (5, 7)),
        Err(e) => panic!("expected Compacted {{ requested: 5, oldest: 7 }}, got {e:?}"),
        Ok(_) => panic!("expected Compacted {{ requested: 5, oldest: 7 }}, got a stream"),
    }
}

#[tokio::test]
async fn store_keeping_no_history_watches_only_from_now() {
    let store = MemoryStore::with_history(0);
    let rev = store.put("k", "v".into()).await.unwrap();
    assert!(matches!(
        store.watch("", rev - 1).await,
        Err(StoreError::Compacted { .. })
    ));
    let mut events = store.watch("", rev).await.unwrap();
    let next = store.put("k", "w".into()).await.unwrap();
    assert_eq!(next_event(&mut events).await.revision(), next);
}

#[tokio::test]
async fn lagging_watcher_is_told_to_relist() {
    let store = MemoryStore::with_limits(10_000, 8);
    assert!(
        suite::slow_watcher_is_told_to_relist(&store, "lag/", 100).await,
        "a watcher 100 events behind an 8-event buffer must get Compacted"
    );
}

#[tokio::test]
async fn watcher_within_its_buffer_sees_every_change() {
    assert!(
        !suite::slow_watcher_is_told_to_relist(&MemoryStore::new(), "no-lag/", 100).await,
        "a watcher 100 events behind a 4,096-event buffer must not be told to re-list"
    );
}

#[tokio::test]
async fn lagging_watcher_learns_where_history_resumes() {
    let store = MemoryStore::with_limits(10_000, 4);
    let mut events = store.watch("", 0).await.unwrap();
    for i in 0..20 {
        store.put(&format!("k{i}"), "v".into()).await.unwrap();
    }
    // The buffer keeps revisions 17..=20; the watcher had seen none.
    match events.next().await {
        Some(Err(StoreError::Compacted { requested, oldest })) => {
            assert_eq!((requested, oldest), (0, 17));
            // The kept history still covers it, so resuming works without a re-list here.
            assert!(store.watch("", requested).await.is_ok());
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(
        events.next().await.is_none(),
        "the stream ends after Compacted"
    );
}

#[tokio::test]
async fn revisions_advance_by_exactly_one_per_write() {
    let store = MemoryStore::new();
    assert_eq!(store.revision().await.unwrap(), 0, "an empty store is at 0");
    assert_eq!(store.put("a", "1".into()).await.unwrap(), 1);
    assert_eq!(store.put("b", "1".into()).await.unwrap(), 2);
    assert_eq!(
        store
            .compare_and_swap("a", Precondition::Revision(1), "2".into())
            .await
            .unwrap(),
        3
    );
    assert!(store
        .compare_and_swap("a", Precondition::Revision(1), "x".into())
        .await
        .is_err());
    assert!(store
        .compare_and_swap("b", Precondition::Absent, "x".into())
        .await
        .is_err());
    assert_eq!(
        store.revision().await.unwrap(),
        3,
        "failed cas writes nothing"
    );
    assert_eq!(store.delete("b").await.unwrap(), Some(4));
    assert_eq!(store.delete("b").await.unwrap(), None);
    assert_eq!(store.delete("never").await.unwrap(), None);
    assert_eq!(
        store.revision().await.unwrap(),
        4,
        "no-op deletes write nothing"
    );
    assert_eq!(
        store
            .compare_and_swap("b", Precondition::Absent, "2".into())
            .await
            .unwrap(),
        5
    );
    assert_eq!(store.list("").await.unwrap().revision, 5);
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        store.revision().await.unwrap(),
        5,
        "granting a lease writes nothing"
    );
    assert_eq!(
        store.put_with_lease("c", "1".into(), lease).await.unwrap(),
        6
    );
}

#[tokio::test]
async fn clones_share_one_store() {
    let store = MemoryStore::default();
    let clone = store.clone();
    let rev = clone.put("shared", "yes".into()).await.unwrap();
    let kv = store
        .get("shared")
        .await
        .unwrap()
        .expect("the clone's write");
    assert_eq!((kv.value.as_ref(), kv.mod_revision), (&b"yes"[..], rev));
    assert!(format!("{store:?}").contains("revision: 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_from_many_spawned_tasks_has_one_winner_per_revision() {
    let store = MemoryStore::new();
    let mut rev = store.put("contested", "0".into()).await.unwrap();
    for round in 0..8 {
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .compare_and_swap(
                            "contested",
                            Precondition::Revision(rev),
                            format!("{round}/{i}").into(),
                        )
                        .await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(new) => winners.push(new),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("round {round}: unexpected {e:?}"),
            }
        }
        assert_eq!(winners, vec![rev + 1], "round {round}: exactly one winner");
        rev += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_in_another_task_sees_every_write_in_order() {
    let store = MemoryStore::new();
    let mut events = store.watch("jobs/", 0).await.unwrap();
    let watcher = tokio::spawn(async move {
        let mut revisions = Vec::new();
        while revisions.len() < 200 {
            revisions.push(next_event(&mut events).await.revision());
        }
        revisions
    });
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    store
                        .put(&format!("jobs/{w}/{i}"), "v".into())
                        .await
                        .unwrap();
                    store
                        .put(&format!("other/{w}/{i}"), "v".into())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let seen = watcher.await.unwrap();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in revision order");
    let listed: Vec<Revision> = {
        let mut revs: Vec<_> = store
            .list("jobs/")
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|kv| kv.mod_revision)
            .collect();
        revs.sort_unstable();
        revs
    };
    assert_eq!(seen, listed, "exactly the writes under jobs/");
}

#[tokio::test]
async fn watch_ends_when_the_store_is_dropped() {
    let store = MemoryStore::new();
    let mut events = store.watch("", 0).await.unwrap();
    drop(store);
    assert!(events.next().await.is_none());
}

#[tokio::test]
async fn lease_below_one_second_is_invalid() {
    let store = MemoryStore::new();
    match store.grant_lease(Duration::from_millis(999)).await {
        Err(StoreError::Invalid { field: "ttl", .. }) => {}
        other => panic!("expected Invalid {{ field: \"ttl\" }}, got {other:?}"),
    }
    assert!(store.grant_lease(Duration::from_secs(1)).await.is_ok());
}

#[tokio::test]
async fn unknown_lease_is_not_found() {
    let store = MemoryStore::new();
    for result in [
        store.keep_alive(42).await.map(|_| 0),
        store.put_with_lease("k", "v".into(), 42).await,
        store.campaign("e", "me", 42).await.map(|_| 0),
    ] {
        match result {
            Err(StoreError::NotFound { key }) => assert_eq!(key, "lease 42"),
            other => panic!("expected NotFound {{ key: \"lease 42\" }}, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn leased_key_lives_until_its_ttl_and_keep_alive_extends_it() {
    let store = MemoryStore::new();
    let lease = store.grant_lease(Duration::from_secs(10)).await.unwrap();
    store.put_with_lease("k", "v".into(), lease).await.unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(store.get("k").await.unwrap().is_some(), "alive at 9 s");
    store.keep_alive(lease).await.unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(
        store.get("k").await.unwrap().is_some(),
        "alive 9 s after the renewal"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        store.get("k").await.unwrap().is_none(),
        "gone 11 s after the renewal"
    );
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn lease_expiry_deletes_each_key_with_its_own_revision() {
    let store = MemoryStore::new();
    let lease = store.grant_lease(Duration::from_secs(5)).await.unwrap();
    store
        .put_with_lease("l/a", "v".into(), lease)
        .await
        .unwrap();
    let last = store
        .put_with_lease("l/b", "v".into(), lease)
        .await
        .unwrap();
    let mut events = store.watch("l/", last).await.unwrap();
    let first = next_event(&mut events).await;
    let second = next_event(&mut events).await;
    assert_eq!(
        (first, second),
        (
            WatchEvent::Delete {
                key: "l/a".into(),
                revision: last + 1
            },
            WatchEvent::Delete {
                key: "l/b".into(),
                revision: last + 2
            }
        )
    );
}

#[tokio::test(start_paused = true)]
async fn plain_put_unbinds_a_key_from_its_lease() {
    let store = MemoryStore::new();
    let lease = store.grant_lease(Duration::from_secs(5)).await.unwrap();
    store
        .put_with_lease("k", "leased".into(), lease)
        .await
        .unwrap();
    store.put("k", "plain".into()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let kv = store
        .get("k")
        .await
        .unwrap()
        .expect("a key unbound from the lease survives it");
    assert_eq!(kv.value.as_ref(), b"plain");
}

#[tokio::test(start_paused = true)]
async fn election_passes_to_the_next_candidate_in_campaign_order() {
    let store = MemoryStore::new();
    let first = store.grant_lease(Duration::from_secs(5)).await.unwrap();
    let second = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let third = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    store.campaign("e", "first", first).await.unwrap();
    // Campaigning again with the same lease keeps the candidate's place.
    store.campaign("e", "first", first).await.unwrap();
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move { store.campaign("e", "second", second).await })
    };
    tokio::task::yield_now().await;
    let later = {
        let store = store.clone();
        tokio::spawn(async move { store.campaign("e", "third", third).await })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(store.leader("e").await.unwrap().as_deref(), Some("first"));
    assert!(!waiting.is_finished() && !later.is_finished());
    waiting.await.unwrap().unwrap();
    assert_eq!(store.leader("e").await.unwrap().as_deref(), Some("second"));
    assert!(!later.is_finished());
    let keys: Vec<String> = store
        .list("e/")
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, vec![format!("e/{second:x}"), format!("e/{third:x}")]);
}
