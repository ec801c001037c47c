//! The etcd store against the store conformance suite, on a real etcd that the tests start
//! (free loopback ports, temporary data directory, killed by pid when done), plus what is
//! specific to etcd: prefixes, etcd's own compaction, batches, and an etcd that goes away.
//!
//! Each test first asks `require::etcd()`: without etcd it is skipped with a printed reason,
//! or fails when `EDGEIO_REQUIRE` names etcd (as in CI). Built with the features `etcd` and
//! `testing` (`required-features` in Cargo.toml; CI builds with `--all-features`).

mod support;

use async_trait::async_trait;
use bytes::Bytes;
use edgeio_core::store::{
    KeyValue, LeaseId, Listing, Precondition, Revision, Store, StoreError, WatchEvent, WatchStream,
};
use edgeio_core::testing::conformance::store as suite;
use edgeio_core::testing::require;
use edgeio_store::{EtcdOptions, EtcdStore, StoreConfig};
use futures::StreamExt;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

async fn connect(endpoint: &str, prefix: &str) -> EtcdStore {
    EtcdStore::connect(EtcdOptions::new([endpoint]).with_prefix(prefix))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test etcd at {endpoint}: {e}"))
}

async fn next_item(events: &mut WatchStream) -> Option<Result<WatchEvent, StoreError>> {
    tokio::time::timeout(DEADLINE, events.next())
        .await
        .unwrap_or_else(|_| panic!("no watch item within {DEADLINE:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_passes_the_store_conformance_suite() {
    if !require::etcd() {
        return;
    }
    let etcd = support::shared();
    let store = connect(&etcd.endpoint, &support::fresh_prefix("suite")).await;
    assert_eq!(store.backend(), "etcd");
    suite::run_all(&store, "conformance/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_opened_from_config_passes_the_suite_twice_in_one_namespace() {
    if !require::etcd() {
        return;
    }
    let etcd = support::shared();
    let config = StoreConfig::etcd([etcd.endpoint.as_str()], support::fresh_prefix("config"));
    let store = config.open().await.unwrap();
    suite::put_get_roundtrip(store.as_ref(), "again/").await;
    suite::cas_on_absence(store.as_ref(), "again/").await;
    suite::put_get_roundtrip(store.as_ref(), "again/").await;
    suite::cas_on_absence(store.as_ref(), "again/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_on_etcd_misses_nothing() {
    if !require::etcd() {
        return;
    }
    let etcd = support::shared();
    let store = connect(&etcd.endpoint, &support::fresh_prefix("slow")).await;
    let told = suite::slow_watcher_is_told_to_relist(&store, "slow/", 300).await;
    assert!(
        !told,
        "etcd keeps uncompacted events for a slow watcher; it must not be told to re-list"
    );
}

/// The etcd store, compacting etcd's history after every put so that only the last `keep`
/// revisions stay watchable — what `--auto-compaction-*` does, made immediate for the test.
struct Compacting {
    store: EtcdStore,
    keep: u64,
}

#[async_trait]
impl Store for Compacting {
    fn backend(&self) -> &'static str {
        "etcd-compacting"
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.store.get(key).await
    }
    async fn put(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        let rev = self.store.put(key, value).await?;
        if rev > self.keep {
            self.store.compact(rev - self.keep + 1).await?;
        }
        Ok(rev)
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        precondition: Precondition,
        value: Bytes,
    ) -> Result<Revision, StoreError> {
        self.store.compare_and_swap(key, precondition, value).await
    }
    async fn delete(&self, key: &str) -> Result<Option<Revision>, StoreError> {
        self.store.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.store.list(prefix).await
    }
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        self.store.watch(prefix, after).await
    }
    async fn revision(&self) -> Result<Revision, StoreError> {
        self.store.revision().await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.store.grant_lease(ttl).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_compacted_by_etcd_is_reported() {
    if !require::etcd() {
        return;
    }
    // Its own etcd: compaction is etcd-wide and would break other tests' watches.
    let etcd = support::EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let store = Compacting {
        store: connect(&etcd.endpoint, &support::fresh_prefix("compaction")).await,
        keep: 16,
    };
    suite::compacted_history_is_reported(&store, "compaction/", 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_isolate_stores_sharing_one_etcd() {
    if !require::etcd() {
        return;
    }
    let etcd = support::shared();
    let base = support::fresh_prefix("isolation");
    let a = connect(&etcd.endpoint, &format!("{base}a/")).await;
    let b = connect(&etcd.endpoint, &format!("{base}b/")).await;
    let start = a.revision().await.unwrap();
    let mut a_events = a.watch("", start).await.unwrap();
    let rev_b = b.put("k", "b".into()).await.unwrap();
    let rev_a = a.put("k", "a".into()).await.unwrap();
    assert!(rev_a > rev_b, "one etcd, one revision sequence");
    assert_eq!(a.get("k").await.unwrap().unwrap().value.as_ref(), b"a");
    assert_eq!(b.get("k").await.unwrap().unwrap().value.as_ref(), b"b");
    let listing = a.list("").await.unwrap();
    assert_eq!(
        listing
            .items
            .iter()
            .map(|kv| kv.key.as_str())
            .collect::<Vec<_>>(),
        ["k"],
        "a lists only its own keys, without its prefix"
    );
    match next_item(&mut a_events).await {
        Some(Ok(WatchEvent::Put(kv))) => {
            assert_eq!((kv.key.as_str(), kv.mod_revision), ("k", rev_a))
        }
        other => panic!("a's watch must see only a's put, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_many_writes_a_batch_at_one_revision() {
    if !require::etcd() {
        return;
    }
    let etcd = support::shared();
    let store = connect(&etcd.endpoint, &support::fresh_prefix("batch")).await;
    let start = store.revision().await.unwrap();
    let mut events = store.watch("", start).await.unwrap();
    let items: Vec<(String, Bytes)> = (0..10)
        .map(|i| (format!("b/{i}"), Bytes::from(format!("v{i}"))))
        .collect();
    let rev = store.put_many(items).await.unwrap();
    for i in 0..10 {
        match next_item(&mut events).await {
            Some(Ok(WatchEvent::Put(kv))) => {
                assert_eq!((kv.key, kv.mod_revision), (format!("b/{i}"), rev));
            }
            other => panic!("expected the batch's put {i}, got {other:?}"),
        }
    }
    assert!(matches!(
        store.put_many(vec![(String::new(), "v".into())]).await,
        Err(StoreError::Invalid { field: "key", .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_that_goes_away_is_unavailable_within_the_timeout() {
    if !require::etcd() {
        return;
    }
    let mut etcd = support::EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let options = EtcdOptions::new([etcd.endpoint.as_str()])
        .with_prefix(support::fresh_prefix("gone"))
        .with_timeout(Duration::from_secs(2));
    let store = EtcdStore::connect(options).await.unwrap();
    let rev = store.put("k", "v".into()).await.unwrap();
    let mut events = store.watch("", rev).await.unwrap();
    etcd.kill();

    let started = Instant::now();
    match store.put("k", "w".into()).await {
        Err(StoreError::Unavailable { reason }) => {
            assert!(reason.contains(&etcd.endpoint), "{reason}")
        }
        other => panic!("a put to a dead etcd must be Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "Unavailable took {:?}",
        started.elapsed()
    );
    match next_item(&mut events).await {
        Some(Err(StoreError::Unavailable { .. })) => {}
        other => panic!("the watch must end with Unavailable, got {other:?}"),
    }
    assert!(next_item(&mut events).await.is_none(), "and then end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_pages_through_many_keys_at_one_revision() {
    if !require::etcd() {
        return;
    }
    let etcd = support::shared();
    let store = connect(&etcd.endpoint, &support::fresh_prefix("pages")).await;
    for batch in 0..3 {
        let items: Vec<(String, Bytes)> = (0..100)
            .map(|i| {
                (
                    format!("many/{:03}", batch * 100 + i),
                    Bytes::from_static(b"v"),
                )
            })
            .collect();
        store.put_many(items).await.unwrap();
    }
    let listing = store.list("many/").await.unwrap();
    let keys: Vec<String> = listing.items.iter().map(|kv| kv.key.clone()).collect();
    let expected: Vec<String> = (0..300).map(|i| format!("many/{i:03}")).collect();
    assert_eq!(keys, expected, "every key once, in key order, across pages");
    assert!(listing
        .items
        .iter()
        .all(|kv| kv.mod_revision <= listing.revision));
}
