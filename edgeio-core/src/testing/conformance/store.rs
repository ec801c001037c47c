//! The [`Store`] conformance suite: one public async function per behaviour, and [`run_all`].
//!
//! Every behaviour writes only under `<ns><behaviour>/` and first deletes what an earlier run
//! left there, so a shared backend (etcd) can run the suite under a fresh prefix per test
//! while other writers are active. For the same reason revisions are checked to grow strictly
//! and to equal the keys' `mod_revision`, never to grow by exactly one. Every wait has a
//! deadline of [`DEADLINE`]; a failure panics with the behaviour's name, what was expected
//! and what was found.
//!
//! A backend's `tests/conformance.rs`:
//!
//! ```no_run
//! use edgeio_core::testing::conformance::store;
//! use edgeio_core::testing::MemoryStore; // your backend instead
//!
//! #[tokio::test]
//! async fn memory_store_passes_the_store_conformance_suite() {
//!     store::run_all(&MemoryStore::new(), "conformance/").await;
//! }
//!
//! // Behaviours that need the store configured small are not part of `run_all`.
//! #[tokio::test]
//! async fn history_beyond_sixteen_events_is_compacted() {
//!     store::compacted_history_is_reported(&MemoryStore::with_history(16), "c/", 16).await;
//! }
//! ```
//!
//! `ns` should end with `/` (it is prepended to the behaviour's name as is).

use crate::store::{KeyValue, Precondition, Revision, Store, StoreError, WatchEvent, WatchStream};
use bytes::Bytes;
use futures::future::{self, Either};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

/// The longest any single step of the suite may wait.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Lease TTL used by the lease and election behaviours: at or above the minimum of every
/// backend we know (etcd rounds shorter TTLs up to about 2 s anyway).
const LEASE_TTL: Duration = Duration::from_secs(2);

/// A lease that must outlive the behaviour using it.
const LONG_LEASE_TTL: Duration = Duration::from_secs(30);

/// How long a campaign must stay pending to count as "waiting".
const QUIET: Duration = Duration::from_millis(500);

/// Runs every behaviour that works on a store with default limits, in order, under `ns`.
pub async fn run_all(store: &dyn Store, ns: &str) {
    put_get_roundtrip(store, ns).await;
    get_missing_is_none(store, ns).await;
    revisions_increase_with_every_write(store, ns).await;
    cas_on_absence(store, ns).await;
    cas_on_revision(store, ns).await;
    cas_conflict_names_both_revisions(store, ns).await;
    cas_exactly_one_winner(store, ns).await;
    delete_returns_revision_and_missing_is_none(store, ns).await;
    list_is_sorted_and_prefix_isolated(store, ns).await;
    list_then_watch_has_no_gap(store, ns).await;
    watch_orders_events_by_revision(store, ns).await;
    watch_resumes_from_revision(store, ns).await;
    watch_is_prefix_isolated(store, ns).await;
    watch_sees_deletes(store, ns).await;
    large_values_round_trip(store, ns).await;
    empty_key_is_invalid(store, ns).await;
    leases_expire_or_are_unsupported(store, ns).await;
    revoked_leases_end_at_once_or_are_unsupported(store, ns).await;
    election_has_one_leader_or_is_unsupported(store, ns).await;
}

// ---------------------------------------------------------------------------------------------
// Helpers: every wait is bounded and every failure names the behaviour.

async fn within<F: Future>(behaviour: &str, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{behaviour}: no answer within {DEADLINE:?} while waiting for {what}"),
    }
}

async fn must<T>(
    behaviour: &str,
    what: &str,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> T {
    match within(behaviour, what, fut).await {
        Ok(value) => value,
        Err(e) => panic!("{behaviour}: {what} failed: {e}"),
    }
}

async fn refused<T: Debug>(
    behaviour: &str,
    what: &str,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> StoreError {
    match within(behaviour, what, fut).await {
        Ok(value) => panic!("{behaviour}: {what} must fail, but it returned {value:?}"),
        Err(e) => e,
    }
}

async fn must_get(store: &dyn Store, behaviour: &str, key: &str) -> KeyValue {
    must(behaviour, &format!("get {key:?}"), store.get(key))
        .await
        .unwrap_or_else(|| panic!("{behaviour}: get {key:?} found nothing, expected the key"))
}

async fn next_event(behaviour: &str, events: &mut WatchStream, what: &str) -> WatchEvent {
    match within(behaviour, what, events.next()).await {
        Some(Ok(event)) => event,
        Some(Err(e)) => panic!("{behaviour}: the watch failed while waiting for {what}: {e}"),
        None => panic!("{behaviour}: the watch ended while waiting for {what}"),
    }
}

/// Reads `expected.len()` events and compares them one by one.
async fn expect_events(
    behaviour: &str,
    events: &mut WatchStream,
    watcher: &str,
    expected: &[WatchEvent],
) {
    for (i, want) in expected.iter().enumerate() {
        let what = format!(
            "event {} of {} on {watcher} ({})",
            i + 1,
            expected.len(),
            describe(want)
        );
        let got = next_event(behaviour, events, &what).await;
        assert_eq!(
            &got,
            want,
            "{behaviour}: {watcher} delivered {} where {} was expected",
            describe(&got),
            describe(want)
        );
    }
}

fn describe(event: &WatchEvent) -> String {
    match event {
        WatchEvent::Put(kv) => format!("put {:?} at revision {}", kv.key, kv.mod_revision),
        WatchEvent::Delete { key, revision } => format!("delete {key:?} at revision {revision}"),
    }
}

fn put_event(
    key: &str,
    value: &Bytes,
    create_revision: Revision,
    mod_revision: Revision,
) -> WatchEvent {
    WatchEvent::Put(KeyValue {
        key: key.to_owned(),
        value: value.clone(),
        create_revision,
        mod_revision,
    })
}

fn delete_event(key: &str, revision: Revision) -> WatchEvent {
    WatchEvent::Delete {
        key: key.to_owned(),
        revision,
    }
}

/// The behaviour's prefix, emptied of what an earlier run left behind.
async fn fresh(store: &dyn Store, ns: &str, behaviour: &str) -> String {
    let prefix = format!("{ns}{behaviour}/");
    let listing = must(
        behaviour,
        &format!("list {prefix:?} to clear it"),
        store.list(&prefix),
    )
    .await;
    for kv in listing.items {
        must(
            behaviour,
            &format!("delete leftover {:?}", kv.key),
            store.delete(&kv.key),
        )
        .await;
    }
    prefix
}

fn assert_conflict(behaviour: &str, err: &StoreError, key: &str, expected: &str, found: &str) {
    match err {
        StoreError::Conflict {
            key: k,
            expected: e,
            found: f,
        } => {
            assert_eq!(k, key, "{behaviour}: the conflict must name the key");
            assert_eq!(e, expected, "{behaviour}: the conflict's `expected` for {key:?}");
            assert_eq!(f, found, "{behaviour}: the conflict's `found` for {key:?}");
        }
        other => panic!(
            "{behaviour}: expected Conflict {{ key: {key:?}, expected: {expected:?}, found: {found:?} }}, got {other:?}"
        ),
    }
}

fn assert_unsupported(behaviour: &str, what: &str, err: &StoreError) {
    assert!(
        matches!(err, StoreError::Unsupported { .. }),
        "{behaviour}: grant_lease is unsupported, so {what} must be Unsupported too, got {err:?}"
    );
}

fn assert_lease_not_found(behaviour: &str, what: &str, err: &StoreError) {
    assert!(
        matches!(err, StoreError::NotFound { .. }),
        "{behaviour}: {what} with an expired lease must be NotFound, got {err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Key-value basics.

/// `get` returns what `put` wrote, bytes exactly, with create and mod revision; a second put
/// keeps the create revision and moves the mod revision.
pub async fn put_get_roundtrip(store: &dyn Store, ns: &str) {
    const B: &str = "put_get_roundtrip";
    let p = fresh(store, ns, B).await;
    let key = format!("{p}key");
    // Not UTF-8 on purpose: values are bytes.
    let value = Bytes::from_static(&[0, 159, 146, 150, 255, b'x']);
    let rev = must(B, "first put", store.put(&key, value.clone())).await;
    assert_eq!(
        must_get(store, B, &key).await,
        KeyValue {
            key: key.clone(),
            value,
            create_revision: rev,
            mod_revision: rev,
        },
        "{B}: get after the first put must return its bytes, with both revisions = the put's revision"
    );
    let second = Bytes::from_static(b"second");
    let rev2 = must(B, "second put", store.put(&key, second.clone())).await;
    assert!(
        rev2 > rev,
        "{B}: the second put's revision {rev2} must exceed the first's {rev}"
    );
    assert_eq!(
        must_get(store, B, &key).await,
        KeyValue {
            key: key.clone(),
            value: second,
            create_revision: rev,
            mod_revision: rev2,
        },
        "{B}: after an update the create revision stays, the mod revision moves"
    );
    let now = must(B, "revision", store.revision()).await;
    assert!(
        now >= rev2,
        "{B}: the store revision {now} is behind the last put's {rev2}"
    );
}

/// `get` of a key never written is `Ok(None)`, not an error.
pub async fn get_missing_is_none(store: &dyn Store, ns: &str) {
    const B: &str = "get_missing_is_none";
    let p = fresh(store, ns, B).await;
    let found = must(B, "get of a missing key", store.get(&format!("{p}missing"))).await;
    assert_eq!(found, None, "{B}: a key never written must read as None");
}

/// Put, successful CAS and delete each return a revision greater than every earlier one,
/// equal to the key's `mod_revision`; a no-op delete and a failed CAS return no revision.
pub async fn revisions_increase_with_every_write(store: &dyn Store, ns: &str) {
    const B: &str = "revisions_increase_with_every_write";
    let p = fresh(store, ns, B).await;
    let (k1, k2) = (format!("{p}one"), format!("{p}two"));
    let r0 = must(B, "revision before writing", store.revision()).await;
    let r1 = must(B, "put one", store.put(&k1, "1".into())).await;
    assert!(
        r1 > r0,
        "{B}: put returned {r1}, not above the earlier store revision {r0}"
    );
    let r2 = must(B, "put two", store.put(&k2, "2".into())).await;
    assert!(r2 > r1, "{B}: the second put returned {r2}, not above {r1}");
    let r3 = must(
        B,
        "cas one",
        store.compare_and_swap(&k1, Precondition::Revision(r1), "1b".into()),
    )
    .await;
    assert!(r3 > r2, "{B}: the cas returned {r3}, not above {r2}");
    let r4 = must(B, "delete two", store.delete(&k2))
        .await
        .unwrap_or_else(|| panic!("{B}: deleting an existing key returned None"));
    assert!(r4 > r3, "{B}: the delete returned {r4}, not above {r3}");
    let noop = must(B, "delete two again", store.delete(&k2)).await;
    assert_eq!(noop, None, "{B}: deleting an absent key must write nothing");
    refused(
        B,
        "a stale cas",
        store.compare_and_swap(&k1, Precondition::Revision(r1), "x".into()),
    )
    .await;
    let kv = must_get(store, B, &k1).await;
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (r1, r3),
        "{B}: `one` must carry (create, mod) = (put, cas) revisions"
    );
    let r5 = must(B, "put two after its deletion", store.put(&k2, "2b".into())).await;
    assert!(
        r5 > r4,
        "{B}: the put after the delete returned {r5}, not above {r4}"
    );
    let kv = must_get(store, B, &k2).await;
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (r5, r5),
        "{B}: a key re-created after deletion starts a new create revision"
    );
    let now = must(B, "revision after writing", store.revision()).await;
    assert!(
        now >= r5,
        "{B}: the store revision {now} is behind the last write's {r5}"
    );
}

/// `Precondition::Absent` creates a missing key once; on an existing key it conflicts.
pub async fn cas_on_absence(store: &dyn Store, ns: &str) {
    const B: &str = "cas_on_absence";
    let p = fresh(store, ns, B).await;
    let key = format!("{p}key");
    let rev = must(
        B,
        "cas on absence of a new key",
        store.compare_and_swap(&key, Precondition::Absent, "first".into()),
    )
    .await;
    let kv = must_get(store, B, &key).await;
    assert_eq!(
        (kv.value.as_ref(), kv.create_revision, kv.mod_revision),
        (&b"first"[..], rev, rev),
        "{B}: the created key must hold the value at the cas's revision"
    );
    let err = refused(
        B,
        "cas on absence of an existing key",
        store.compare_and_swap(&key, Precondition::Absent, "second".into()),
    )
    .await;
    assert_conflict(B, &err, &key, "absent", &format!("revision {rev}"));
    let kv = must_get(store, B, &key).await;
    assert_eq!(
        kv.value.as_ref(),
        b"first",
        "{B}: a failed cas must not write"
    );
    must(B, "delete", store.delete(&key)).await;
    must(
        B,
        "cas on absence after deletion",
        store.compare_and_swap(&key, Precondition::Absent, "again".into()),
    )
    .await;
}

/// `Precondition::Revision(r)` writes only while the key's mod revision is `r`.
pub async fn cas_on_revision(store: &dyn Store, ns: &str) {
    const B: &str = "cas_on_revision";
    let p = fresh(store, ns, B).await;
    let key = format!("{p}key");
    let r1 = must(B, "put", store.put(&key, "v1".into())).await;
    let r2 = must(
        B,
        "cas on the current revision",
        store.compare_and_swap(&key, Precondition::Revision(r1), "v2".into()),
    )
    .await;
    assert!(
        r2 > r1,
        "{B}: the cas returned {r2}, not above the put's {r1}"
    );
    let kv = must_get(store, B, &key).await;
    assert_eq!(
        (kv.value.as_ref(), kv.create_revision, kv.mod_revision),
        (&b"v2"[..], r1, r2),
        "{B}: after the cas the key holds its value, created at the put, modified at the cas"
    );
    let err = refused(
        B,
        "cas on a stale revision",
        store.compare_and_swap(&key, Precondition::Revision(r1), "v3".into()),
    )
    .await;
    assert!(
        matches!(err, StoreError::Conflict { .. }),
        "{B}: a stale cas must be Conflict, got {err:?}"
    );
    assert_eq!(
        must_get(store, B, &key).await.value.as_ref(),
        b"v2",
        "{B}: a failed cas must not write"
    );
    must(B, "delete", store.delete(&key)).await;
    let err = refused(
        B,
        "cas on a revision of a deleted key",
        store.compare_and_swap(&key, Precondition::Revision(r2), "v4".into()),
    )
    .await;
    assert!(
        matches!(err, StoreError::Conflict { .. }),
        "{B}: a cas on a deleted key must be Conflict, got {err:?}"
    );
    assert_eq!(
        must(B, "get after the refused cas", store.get(&key)).await,
        None,
        "{B}: a cas refused on a deleted key must not create it"
    );
}

/// A conflict names the key, what the caller expected and what the store holds, as
/// `revision N` or `absent`, and its message shows both.
pub async fn cas_conflict_names_both_revisions(store: &dyn Store, ns: &str) {
    const B: &str = "cas_conflict_names_both_revisions";
    let p = fresh(store, ns, B).await;
    let key = format!("{p}key");
    let r1 = must(B, "first put", store.put(&key, "1".into())).await;
    let r2 = must(B, "second put", store.put(&key, "2".into())).await;
    let err = refused(
        B,
        "cas on the older revision",
        store.compare_and_swap(&key, Precondition::Revision(r1), "3".into()),
    )
    .await;
    assert_conflict(
        B,
        &err,
        &key,
        &format!("revision {r1}"),
        &format!("revision {r2}"),
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("revision {r1}")) && message.contains(&format!("revision {r2}")),
        "{B}: the message must show both revisions, got {message:?}"
    );
    let err = refused(
        B,
        "cas on absence of an existing key",
        store.compare_and_swap(&key, Precondition::Absent, "3".into()),
    )
    .await;
    assert_conflict(B, &err, &key, "absent", &format!("revision {r2}"));
    let missing = format!("{p}missing");
    let err = refused(
        B,
        "cas on a revision of a missing key",
        store.compare_and_swap(&missing, Precondition::Revision(r2), "3".into()),
    )
    .await;
    assert_conflict(B, &err, &missing, &format!("revision {r2}"), "absent");
}

/// Many concurrent CAS on the same precondition: exactly one wins, the others conflict.
pub async fn cas_exactly_one_winner(store: &dyn Store, ns: &str) {
    const B: &str = "cas_exactly_one_winner";
    const CONTENDERS: usize = 32;
    const ROUNDS: usize = 4;
    let p = fresh(store, ns, B).await;
    let key = format!("{p}contested");
    let mut precondition = Precondition::Absent;
    for round in 0..=ROUNDS {
        let attempts = (0..CONTENDERS).map(|i| {
            let key = &key;
            async move {
                let value = Bytes::from(format!("round {round} contender {i}"));
                (
                    value.clone(),
                    store.compare_and_swap(key, precondition, value).await,
                )
            }
        });
        let results = within(
            B,
            &format!("{CONTENDERS} racing cas in round {round}"),
            future::join_all(attempts),
        )
        .await;
        let mut winners = Vec::new();
        for (value, result) in results {
            match result {
                Ok(rev) => winners.push((value, rev)),
                Err(StoreError::Conflict { expected, .. }) => assert_eq!(
                    expected,
                    match precondition {
                        Precondition::Absent => "absent".to_owned(),
                        Precondition::Revision(r) => format!("revision {r}"),
                    },
                    "{B}: round {round}: a loser's conflict must name the contested precondition"
                ),
                Err(e) => {
                    panic!("{B}: round {round}: a cas failed with {e:?}, expected Ok or Conflict")
                }
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "{B}: round {round} on {precondition:?}: {} of {CONTENDERS} cas succeeded, exactly one must",
            winners.len()
        );
        let (value, rev) = winners.remove(0);
        let kv = must_get(store, B, &key).await;
        assert_eq!(
            (&kv.value, kv.mod_revision),
            (&value, rev),
            "{B}: round {round}: the key must hold the winner's value at the winner's revision"
        );
        precondition = Precondition::Revision(rev);
    }
}

/// Deleting an existing key returns the deletion's revision and the key reads as missing;
/// deleting a missing key is `Ok(None)`.
pub async fn delete_returns_revision_and_missing_is_none(store: &dyn Store, ns: &str) {
    const B: &str = "delete_returns_revision_and_missing_is_none";
    let p = fresh(store, ns, B).await;
    let key = format!("{p}key");
    let put = must(B, "put", store.put(&key, "v".into())).await;
    let deleted = must(B, "delete of an existing key", store.delete(&key)).await;
    match deleted {
        Some(rev) => assert!(
            rev > put,
            "{B}: the delete returned {rev}, not above the put's {put}"
        ),
        None => panic!("{B}: deleting an existing key returned None, expected its revision"),
    }
    assert_eq!(
        must(B, "get after delete", store.get(&key)).await,
        None,
        "{B}: a deleted key must read as None"
    );
    assert_eq!(
        must(B, "second delete", store.delete(&key)).await,
        None,
        "{B}: deleting an already deleted key must return None"
    );
    assert_eq!(
        must(
            B,
            "delete of a never written key",
            store.delete(&format!("{p}never"))
        )
        .await,
        None,
        "{B}: deleting a never written key must return None"
    );
    let listing = must(B, "list after delete", store.list(&p)).await;
    assert!(
        listing.items.is_empty(),
        "{B}: a deleted key must not be listed, found {:?}",
        listing.items
    );
}

// ---------------------------------------------------------------------------------------------
// Listing.

/// `list(prefix)` returns exactly the keys starting with `prefix`, in key order, and the
/// revision it read at; `ns/a/` does not include `ns/ab` or `ns/a`.
pub async fn list_is_sorted_and_prefix_isolated(store: &dyn Store, ns: &str) {
    const B: &str = "list_is_sorted_and_prefix_isolated";
    let p = fresh(store, ns, B).await;
    let mut written = BTreeMap::new();
    for name in ["a/2", "ab", "a/10", "a", "a/1", "b/1", "a/1/deep", "a0"] {
        let key = format!("{p}{name}");
        let rev = must(
            B,
            &format!("put {key:?}"),
            store.put(&key, Bytes::from(name.to_owned())),
        )
        .await;
        written.insert(key, rev);
    }
    let last = written.values().copied().max().unwrap_or_default();

    let under_a = format!("{p}a/");
    let listing = must(B, "list a/", store.list(&under_a)).await;
    let keys: Vec<&str> = listing.items.iter().map(|kv| kv.key.as_str()).collect();
    let expected: Vec<String> = ["a/1", "a/1/deep", "a/10", "a/2"]
        .iter()
        .map(|n| format!("{p}{n}"))
        .collect();
    assert_eq!(
        keys, expected,
        "{B}: list {under_a:?} must return exactly its keys, in key order"
    );
    for kv in &listing.items {
        assert_eq!(
            Some(&kv.mod_revision),
            written.get(&kv.key),
            "{B}: listed {:?} must carry the revision its put returned",
            kv.key
        );
        assert_eq!(
            kv.value.as_ref(),
            &kv.key.as_bytes()[p.len()..],
            "{B}: listed {:?} has the wrong value",
            kv.key
        );
    }
    assert!(
        listing.revision >= last,
        "{B}: the listing's revision {} is behind the last write's {last}",
        listing.revision
    );

    let all = must(B, "list of the whole prefix", store.list(&p)).await;
    let keys: Vec<&String> = all.items.iter().map(|kv| &kv.key).collect();
    let expected: Vec<&String> = written.keys().collect();
    assert_eq!(
        keys, expected,
        "{B}: list {p:?} must return every key once, in key order"
    );

    let none = must(
        B,
        "list of an empty prefix",
        store.list(&format!("{p}none/")),
    )
    .await;
    assert!(
        none.items.is_empty(),
        "{B}: a prefix without keys must list nothing, found {:?}",
        none.items
    );
    assert!(
        none.revision >= last,
        "{B}: an empty listing still reports the store revision; {} is behind {last}",
        none.revision
    );
}

/// Watching from a listing's revision delivers exactly the changes made after the listing,
/// so listing + events = the current state.
pub async fn list_then_watch_has_no_gap(store: &dyn Store, ns: &str) {
    const B: &str = "list_then_watch_has_no_gap";
    let p = fresh(store, ns, B).await;
    let (k1, k2, k3, k4) = (
        format!("{p}1"),
        format!("{p}2"),
        format!("{p}3"),
        format!("{p}4"),
    );
    for key in [&k1, &k2, &k3] {
        must(
            B,
            &format!("put {key:?} before listing"),
            store.put(key, "before".into()),
        )
        .await;
    }
    let listing = must(B, "list", store.list(&p)).await;
    assert_eq!(
        listing.items.len(),
        3,
        "{B}: the listing must hold the three keys written before it"
    );
    for kv in &listing.items {
        assert!(
            kv.mod_revision <= listing.revision,
            "{B}: listed {:?} changed at {} after the listing's revision {}",
            kv.key,
            kv.mod_revision,
            listing.revision
        );
    }
    let after = Bytes::from_static(b"after");
    let r4 = must(
        B,
        "put a new key after listing",
        store.put(&k4, after.clone()),
    )
    .await;
    let r1 = must(
        B,
        "update a listed key after listing",
        store.put(&k1, after.clone()),
    )
    .await;
    let r2 = must(B, "delete a listed key after listing", store.delete(&k2))
        .await
        .unwrap_or_else(|| panic!("{B}: deleting a listed key returned None"));
    let created_1 = listing.items[0].create_revision;

    let mut events = must(
        B,
        "watch from the listing's revision",
        store.watch(&p, listing.revision),
    )
    .await;
    let expected = [
        put_event(&k4, &after, r4, r4),
        put_event(&k1, &after, created_1, r1),
        delete_event(&k2, r2),
    ];
    expect_events(B, &mut events, "the watch from the listing", &expected).await;

    let mut state: BTreeMap<String, KeyValue> = listing
        .items
        .into_iter()
        .map(|kv| (kv.key.clone(), kv))
        .collect();
    for event in expected {
        match event {
            WatchEvent::Put(kv) => state.insert(kv.key.clone(), kv),
            WatchEvent::Delete { key, .. } => state.remove(&key),
        };
    }
    let now = must(B, "list again", store.list(&p)).await;
    assert_eq!(
        now.items,
        state.into_values().collect::<Vec<_>>(),
        "{B}: the listing plus the watched changes must equal a new listing"
    );
}

// ---------------------------------------------------------------------------------------------
// Watch.

/// Puts, CAS and deletes on several keys arrive in revision order with their revisions, both
/// live (watch opened before the writes) and replayed (opened after them).
pub async fn watch_orders_events_by_revision(store: &dyn Store, ns: &str) {
    const B: &str = "watch_orders_events_by_revision";
    let p = fresh(store, ns, B).await;
    let start = must(B, "revision before writing", store.revision()).await;
    let mut live = must(B, "watch before writing", store.watch(&p, start)).await;
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    let v = |s: &'static str| Bytes::from_static(s.as_bytes());
    let mut expected = Vec::new();
    let ra = must(B, "put a", store.put(&a, v("a1"))).await;
    expected.push(put_event(&a, &v("a1"), ra, ra));
    let rb = must(B, "put b", store.put(&b, v("b1"))).await;
    expected.push(put_event(&b, &v("b1"), rb, rb));
    let ra2 = must(
        B,
        "cas a",
        store.compare_and_swap(&a, Precondition::Revision(ra), v("a2")),
    )
    .await;
    expected.push(put_event(&a, &v("a2"), ra, ra2));
    let rb2 = must(B, "delete b", store.delete(&b))
        .await
        .unwrap_or_else(|| panic!("{B}: delete b returned None"));
    expected.push(delete_event(&b, rb2));
    let rc = must(B, "put c", store.put(&c, v("c1"))).await;
    expected.push(put_event(&c, &v("c1"), rc, rc));
    let ra3 = must(B, "put a again", store.put(&a, v("a3"))).await;
    expected.push(put_event(&a, &v("a3"), ra, ra3));
    let rc2 = must(B, "delete c", store.delete(&c))
        .await
        .unwrap_or_else(|| panic!("{B}: delete c returned None"));
    expected.push(delete_event(&c, rc2));
    for pair in expected.windows(2) {
        assert!(
            pair[0].revision() < pair[1].revision(),
            "{B}: write revisions must grow strictly: {} then {}",
            describe(&pair[0]),
            describe(&pair[1])
        );
    }
    expect_events(B, &mut live, "the live watch", &expected).await;
    let mut replay = must(B, "watch after writing", store.watch(&p, start)).await;
    expect_events(B, &mut replay, "the replaying watch", &expected).await;
}

/// A watch from revision `r` starts with the first change after `r` — not at or before it —
/// and continues live.
pub async fn watch_resumes_from_revision(store: &dyn Store, ns: &str) {
    const B: &str = "watch_resumes_from_revision";
    let p = fresh(store, ns, B).await;
    let mut writes = Vec::new();
    for i in 0..10 {
        let key = format!("{p}k{i}");
        let value = Bytes::from(format!("v{i}"));
        let rev = must(B, &format!("put {key:?}"), store.put(&key, value.clone())).await;
        writes.push(put_event(&key, &value, rev, rev));
    }
    let mut middle = must(
        B,
        "watch after the fifth write",
        store.watch(&p, writes[4].revision()),
    )
    .await;
    let mut end = must(
        B,
        "watch after the last write",
        store.watch(&p, writes[9].revision()),
    )
    .await;
    let key = format!("{p}live");
    let value = Bytes::from_static(b"live");
    let rev = must(
        B,
        "put after opening the watches",
        store.put(&key, value.clone()),
    )
    .await;
    let live = put_event(&key, &value, rev, rev);
    let mut expected = writes[5..].to_vec();
    expected.push(live.clone());
    expect_events(B, &mut middle, "the watch from the fifth write", &expected).await;
    expect_events(B, &mut end, "the watch from the last write", &[live]).await;
}

/// A watch on `ns/a/` sees neither `ns/ab`, `ns/a` nor `ns/b/…`.
pub async fn watch_is_prefix_isolated(store: &dyn Store, ns: &str) {
    const B: &str = "watch_is_prefix_isolated";
    let p = fresh(store, ns, B).await;
    let start = must(B, "revision", store.revision()).await;
    let mut under_a = must(B, "watch a/", store.watch(&format!("{p}a/"), start)).await;
    let mut under_b = must(B, "watch b/", store.watch(&format!("{p}b/"), start)).await;
    for name in ["ab", "a", "b/a/x", "a0", "c/a/"] {
        must(
            B,
            &format!("put {name}"),
            store.put(&format!("{p}{name}"), "outside".into()),
        )
        .await;
    }
    let key = format!("{p}a/inside");
    let value = Bytes::from_static(b"inside");
    let rev = must(B, "put a/inside", store.put(&key, value.clone())).await;
    let marker = format!("{p}b/marker");
    let marker_rev = must(B, "put b/marker", store.put(&marker, "marker".into())).await;
    expect_events(
        B,
        &mut under_a,
        "the watch on a/",
        &[put_event(&key, &value, rev, rev)],
    )
    .await;
    let first = next_event(B, &mut under_b, "b/a/x on the watch on b/").await;
    assert_eq!(
        first.key(),
        format!("{p}b/a/x"),
        "{B}: the watch on b/ delivered {}",
        describe(&first)
    );
    let second = next_event(B, &mut under_b, "b/marker on the watch on b/").await;
    assert_eq!(
        (second.key(), second.revision()),
        (marker.as_str(), marker_rev),
        "{B}: the watch on b/ delivered {} where only b/marker could come next",
        describe(&second)
    );
}

/// Deleting a watched key delivers a delete event at the deletion's revision; deleting an
/// absent key delivers nothing.
pub async fn watch_sees_deletes(store: &dyn Store, ns: &str) {
    const B: &str = "watch_sees_deletes";
    let p = fresh(store, ns, B).await;
    let key = format!("{p}key");
    let put = must(B, "put", store.put(&key, "v".into())).await;
    let mut events = must(B, "watch", store.watch(&p, put)).await;
    let deleted = must(B, "delete", store.delete(&key))
        .await
        .unwrap_or_else(|| panic!("{B}: deleting an existing key returned None"));
    must(B, "delete again", store.delete(&key)).await;
    must(
        B,
        "delete of a never written key",
        store.delete(&format!("{p}never")),
    )
    .await;
    let marker = format!("{p}marker");
    let value = Bytes::from_static(b"m");
    let marker_rev = must(B, "put marker", store.put(&marker, value.clone())).await;
    expect_events(
        B,
        &mut events,
        "the watch",
        &[
            delete_event(&key, deleted),
            put_event(&marker, &value, marker_rev, marker_rev),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Values and errors.

/// A 1 MiB value comes back byte for byte from get, list and watch.
pub async fn large_values_round_trip(store: &dyn Store, ns: &str) {
    const B: &str = "large_values_round_trip";
    const SIZE: usize = 1 << 20;
    let p = fresh(store, ns, B).await;
    let key = format!("{p}large");
    // 251 is prime, so the pattern does not line up with any page or chunk size.
    let value: Bytes = (0..SIZE)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let start = must(B, "revision", store.revision()).await;
    let mut events = must(B, "watch", store.watch(&p, start)).await;
    let rev = must(B, "put of 1 MiB", store.put(&key, value.clone())).await;
    let same = |got: &Bytes| got.len() == value.len() && *got == value;
    let kv = must_get(store, B, &key).await;
    assert!(
        same(&kv.value),
        "{B}: get returned {} bytes differing from the {SIZE} written",
        kv.value.len()
    );
    assert_eq!(kv.mod_revision, rev, "{B}: the large key's mod revision");
    let listing = must(B, "list", store.list(&p)).await;
    assert!(
        listing.items.len() == 1 && same(&listing.items[0].value),
        "{B}: list must return the one large value intact"
    );
    match next_event(B, &mut events, "the large put").await {
        WatchEvent::Put(kv) => {
            assert!(
                same(&kv.value),
                "{B}: the watch delivered {} bytes differing from the {SIZE} written",
                kv.value.len()
            );
            assert_eq!(
                kv.mod_revision, rev,
                "{B}: the watched large put's revision"
            );
        }
        other => panic!(
            "{B}: expected the large put, the watch delivered {}",
            describe(&other)
        ),
    }
}

/// Every key operation refuses the empty key with `Invalid { field: "key" }`.
pub async fn empty_key_is_invalid(store: &dyn Store, ns: &str) {
    const B: &str = "empty_key_is_invalid";
    fresh(store, ns, B).await;
    let errors = [
        (
            "get",
            refused(B, "get of the empty key", store.get("")).await,
        ),
        (
            "put",
            refused(B, "put of the empty key", store.put("", "v".into())).await,
        ),
        (
            "compare_and_swap",
            refused(
                B,
                "cas of the empty key",
                store.compare_and_swap("", Precondition::Absent, "v".into()),
            )
            .await,
        ),
        (
            "delete",
            refused(B, "delete of the empty key", store.delete("")).await,
        ),
    ];
    for (operation, err) in errors {
        assert!(
            matches!(err, StoreError::Invalid { field: "key", .. }),
            "{B}: {operation} with an empty key must be Invalid {{ field: \"key\" }}, got {err:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Optional capabilities.

/// If `grant_lease` is `Unsupported`, so are the other lease and election methods. Otherwise a
/// key put with a lease is deleted — with a delete event — once the lease expires, a key
/// without the lease survives, and the dead lease is `NotFound`.
pub async fn leases_expire_or_are_unsupported(store: &dyn Store, ns: &str) {
    const B: &str = "leases_expire_or_are_unsupported";
    let p = fresh(store, ns, B).await;
    let leased = format!("{p}leased");
    let lease = match within(B, "grant_lease", store.grant_lease(LEASE_TTL)).await {
        Ok(lease) => lease,
        Err(StoreError::Unsupported { .. }) => {
            let err = refused(B, "keep_alive", store.keep_alive(1)).await;
            assert_unsupported(B, "keep_alive", &err);
            let err = refused(
                B,
                "put_with_lease",
                store.put_with_lease(&leased, "v".into(), 1),
            )
            .await;
            assert_unsupported(B, "put_with_lease", &err);
            let election = format!("{p}election");
            let err = refused(B, "campaign", store.campaign(&election, "me", 1)).await;
            assert_unsupported(B, "campaign", &err);
            let err = refused(B, "leader", store.leader(&election)).await;
            assert_unsupported(B, "leader", &err);
            return;
        }
        Err(e) => panic!("{B}: grant_lease({LEASE_TTL:?}) failed: {e:?}"),
    };
    let value = Bytes::from_static(b"leased");
    let rev = must(
        B,
        "put_with_lease",
        store.put_with_lease(&leased, value.clone(), lease),
    )
    .await;
    let kv = must_get(store, B, &leased).await;
    assert_eq!(
        (&kv.value, kv.mod_revision),
        (&value, rev),
        "{B}: the leased key right after its put"
    );
    must(B, "keep_alive of a live lease", store.keep_alive(lease)).await;
    let mut events = must(B, "watch", store.watch(&p, rev)).await;
    let plain = format!("{p}plain");
    let plain_rev = must(B, "put without lease", store.put(&plain, "plain".into())).await;

    let first = next_event(B, &mut events, "the put without lease").await;
    assert_eq!(
        (first.key(), first.revision()),
        (plain.as_str(), plain_rev),
        "{B}: expected the put without lease first, got {}",
        describe(&first)
    );
    // Lease expiry may take a while beyond the TTL (etcd checks leases periodically).
    match next_event(
        B,
        &mut events,
        "the leased key's deletion after the lease expired",
    )
    .await
    {
        WatchEvent::Delete { key, revision } => {
            assert_eq!(key, leased, "{B}: the expired lease deleted the wrong key");
            assert!(
                revision > plain_rev,
                "{B}: the expiry's delete revision {revision} is not above {plain_rev}"
            );
        }
        other => panic!(
            "{B}: expected the leased key's deletion, got {}",
            describe(&other)
        ),
    }
    assert_eq!(
        must(B, "get of the expired key", store.get(&leased)).await,
        None,
        "{B}: the leased key must be gone"
    );
    assert!(
        must(B, "get of the key without lease", store.get(&plain))
            .await
            .is_some(),
        "{B}: a key without the lease must survive its expiry"
    );
    let err = refused(B, "keep_alive of an expired lease", store.keep_alive(lease)).await;
    assert_lease_not_found(B, "keep_alive", &err);
    let err = refused(
        B,
        "put_with_lease on an expired lease",
        store.put_with_lease(&leased, value, lease),
    )
    .await;
    assert_lease_not_found(B, "put_with_lease", &err);
}

/// If leases are `Unsupported`, so is revoking one. Otherwise revoking a live lease deletes its
/// keys at once, each with a delete event, leaves other keys alone, and makes the lease
/// `NotFound` (a second revoke included).
pub async fn revoked_leases_end_at_once_or_are_unsupported(store: &dyn Store, ns: &str) {
    const B: &str = "revoked_leases_end_at_once_or_are_unsupported";
    let p = fresh(store, ns, B).await;
    let lease = match within(B, "grant_lease", store.grant_lease(LONG_LEASE_TTL)).await {
        Ok(lease) => lease,
        Err(StoreError::Unsupported { .. }) => {
            let err = refused(B, "revoke_lease", store.revoke_lease(1)).await;
            assert_unsupported(B, "revoke_lease", &err);
            return;
        }
        Err(e) => panic!("{B}: grant_lease({LONG_LEASE_TTL:?}) failed: {e:?}"),
    };
    let (a, b, plain) = (format!("{p}a"), format!("{p}b"), format!("{p}plain"));
    must(
        B,
        "put_with_lease a",
        store.put_with_lease(&a, "a".into(), lease),
    )
    .await;
    let rev = must(
        B,
        "put_with_lease b",
        store.put_with_lease(&b, "b".into(), lease),
    )
    .await;
    must(B, "put without lease", store.put(&plain, "plain".into())).await;
    let mut events = must(B, "watch", store.watch(&p, rev)).await;
    let _plain_put = next_event(B, &mut events, "the put without lease").await;
    must(B, "revoke_lease", store.revoke_lease(lease)).await;
    // no waiting for a TTL: both keys are gone when revoke_lease returns
    assert_eq!(
        must(B, "get a", store.get(&a)).await,
        None,
        "{B}: a after revoke"
    );
    assert_eq!(
        must(B, "get b", store.get(&b)).await,
        None,
        "{B}: b after revoke"
    );
    assert!(
        must(B, "get plain", store.get(&plain)).await.is_some(),
        "{B}: a key without the lease must survive its revocation"
    );
    let mut deleted = Vec::new();
    for n in 0..2 {
        match next_event(B, &mut events, &format!("delete {n} of the revocation")).await {
            WatchEvent::Delete { key, .. } => deleted.push(key),
            other => panic!("{B}: expected a delete, got {}", describe(&other)),
        }
    }
    deleted.sort();
    assert_eq!(deleted, [a, b], "{B}: the revocation's deletes");
    let err = refused(B, "a second revoke", store.revoke_lease(lease)).await;
    assert_lease_not_found(B, "revoke_lease", &err);
    let err = refused(B, "keep_alive of a revoked lease", store.keep_alive(lease)).await;
    assert_lease_not_found(B, "keep_alive", &err);
}

/// If leases are `Unsupported`, so is election. Otherwise one candidate leads while its lease
/// lives, the others wait, and exactly one of them takes over when the lease expires.
pub async fn election_has_one_leader_or_is_unsupported(store: &dyn Store, ns: &str) {
    const B: &str = "election_has_one_leader_or_is_unsupported";
    let p = fresh(store, ns, B).await;
    let election = format!("{p}election");
    let lease_a = match within(B, "grant_lease", store.grant_lease(LEASE_TTL)).await {
        Ok(lease) => lease,
        Err(StoreError::Unsupported { .. }) => {
            let err = refused(B, "campaign", store.campaign(&election, "a", 1)).await;
            assert_unsupported(B, "campaign", &err);
            let err = refused(B, "leader", store.leader(&election)).await;
            assert_unsupported(B, "leader", &err);
            return;
        }
        Err(e) => panic!("{B}: grant_lease({LEASE_TTL:?}) failed: {e:?}"),
    };
    let leader = || async { must(B, "leader", store.leader(&election)).await };
    assert_eq!(
        leader().await,
        None,
        "{B}: an election nobody ran for has no leader"
    );

    must(
        B,
        "campaign of a, alone",
        store.campaign(&election, "a", lease_a),
    )
    .await;
    assert_eq!(
        leader().await.as_deref(),
        Some("a"),
        "{B}: a won alone, so a leads"
    );

    let lease_b = must(B, "grant lease for b", store.grant_lease(LONG_LEASE_TTL)).await;
    let lease_c = must(B, "grant lease for c", store.grant_lease(LONG_LEASE_TTL)).await;
    let mut b = pin!(store.campaign(&election, "b", lease_b));
    let mut c = pin!(store.campaign(&election, "c", lease_c));
    // Renewed once more so that a surely leads through the quiet period even on a slow
    // machine; after that nobody renews it.
    must(B, "keep_alive of a's lease", store.keep_alive(lease_a)).await;
    // Both must still be waiting after a while.
    let quiet = pin!(tokio::time::sleep(QUIET));
    match future::select(future::select(b.as_mut(), c.as_mut()), quiet).await {
        Either::Left((Either::Left((result, _)), _)) => {
            panic!("{B}: b's campaign returned {result:?} while a leads")
        }
        Either::Left((Either::Right((result, _)), _)) => {
            panic!("{B}: c's campaign returned {result:?} while a leads")
        }
        Either::Right(((), _)) => {}
    }
    assert_eq!(
        leader().await.as_deref(),
        Some("a"),
        "{B}: a must lead while b and c wait"
    );

    // a stops renewing; exactly one of b and c takes over.
    let (winner, loser) = match within(
        B,
        "b or c to win after a's lease expired",
        future::select(b.as_mut(), c.as_mut()),
    )
    .await
    {
        Either::Left((result, loser)) => {
            result.unwrap_or_else(|e| panic!("{B}: b's campaign failed: {e:?}"));
            ("b", loser)
        }
        Either::Right((result, loser)) => {
            result.unwrap_or_else(|e| panic!("{B}: c's campaign failed: {e:?}"));
            ("c", loser)
        }
    };
    assert_eq!(
        leader().await.as_deref(),
        Some(winner),
        "{B}: {winner} won the campaign, so it leads"
    );
    if let Ok(result) = tokio::time::timeout(QUIET, loser).await {
        panic!("{B}: {winner} leads, yet the other campaign also returned {result:?}");
    }
    let err = refused(
        B,
        "campaign with a's expired lease",
        store.campaign(&election, "a", lease_a),
    )
    .await;
    assert_lease_not_found(B, "campaign", &err);
}

// ---------------------------------------------------------------------------------------------
// Behaviours that need a store configured small; not part of `run_all`.

/// For a store keeping at most `history_len` change events (and no other writers): a watch
/// from before that history fails with `Compacted { requested, oldest }` — from `watch()` or
/// as the stream's first and last item — and a watch from `oldest - 1` works.
pub async fn compacted_history_is_reported(store: &dyn Store, ns: &str, history_len: usize) {
    const B: &str = "compacted_history_is_reported";
    let p = fresh(store, ns, B).await;
    let mut revisions = Vec::new();
    for i in 0..history_len * 2 + 4 {
        let rev = must(
            B,
            &format!("put {i}"),
            store.put(&format!("{p}k{i:05}"), "v".into()),
        )
        .await;
        revisions.push(rev);
    }
    let after = revisions[0] - 1;
    let (requested, oldest) = match within(
        B,
        "watch from before the kept history",
        store.watch(&p, after),
    )
    .await
    {
        Err(StoreError::Compacted { requested, oldest }) => (requested, oldest),
        Err(e) => {
            panic!("{B}: a watch from compacted revision {after} must be Compacted, got {e:?}")
        }
        Ok(mut events) => {
            let first = within(B, "the compacted watch's first item", events.next()).await;
            let found = match first {
                Some(Err(StoreError::Compacted { requested, oldest })) => (requested, oldest),
                other => panic!(
                    "{B}: a watch from compacted revision {after} must start with \
                     Err(Compacted), got {other:?}"
                ),
            };
            let rest = within(B, "the compacted watch to end", events.next()).await;
            assert!(
                rest.is_none(),
                "{B}: the watch must end after Compacted, got {rest:?}"
            );
            found
        }
    };
    assert_eq!(
        requested, after,
        "{B}: Compacted must report the revision asked for"
    );
    assert!(
        oldest > after + 1,
        "{B}: Compacted reports oldest kept {oldest}, yet revision {after} would still be resumable"
    );
    let last = *revisions.last().unwrap_or(&after);
    assert!(
        oldest <= last,
        "{B}: oldest kept {oldest} is past the last write {last}"
    );

    let mut events = must(
        B,
        "watch from the oldest kept revision",
        store.watch(&p, oldest - 1),
    )
    .await;
    let first = next_event(B, &mut events, "the oldest kept event").await;
    assert!(
        first.revision() >= oldest,
        "{B}: the watch from {} delivered {}, older than the oldest kept {oldest}",
        oldest - 1,
        describe(&first)
    );
    let mut previous = first.revision();
    while previous < last {
        let event = next_event(
            B,
            &mut events,
            &format!("the kept events up to revision {last}"),
        )
        .await;
        assert!(
            event.revision() > previous,
            "{B}: {} came after revision {previous}",
            describe(&event)
        );
        previous = event.revision();
    }
}

/// Opens a watch, makes `writes` puts without reading it, then reads. The watcher must get
/// every change in order, or a gap-free part of them followed by one `Err(Compacted)` and the
/// end of the stream; after that a re-list and a watch from the listing see new writes.
///
/// Returns whether the watcher was told to re-list, so a test of a backend whose watch buffer
/// is known to be smaller than `writes` can assert that it was.
pub async fn slow_watcher_is_told_to_relist(store: &dyn Store, ns: &str, writes: usize) -> bool {
    const B: &str = "slow_watcher_is_told_to_relist";
    let p = fresh(store, ns, B).await;
    let start = must(B, "revision", store.revision()).await;
    let mut events = must(B, "watch", store.watch(&p, start)).await;
    let mut revisions = Vec::new();
    for i in 0..writes {
        let rev = must(
            B,
            &format!("put {i}"),
            store.put(&format!("{p}k{i:06}"), "v".into()),
        )
        .await;
        revisions.push(rev);
    }
    let mut delivered = 0;
    let mut told = false;
    while delivered < writes {
        let what = format!("event {} of {writes}", delivered + 1);
        match within(B, &what, events.next()).await {
            Some(Ok(event)) => {
                assert_eq!(
                    event.revision(),
                    revisions[delivered],
                    "{B}: {what} has a gap: got {} instead of revision {}",
                    describe(&event),
                    revisions[delivered]
                );
                delivered += 1;
            }
            Some(Err(StoreError::Compacted { requested, .. })) => {
                let seen = if delivered == 0 {
                    start
                } else {
                    revisions[delivered - 1]
                };
                assert!(
                    requested >= seen && requested < revisions[delivered],
                    "{B}: after {delivered} events Compacted must ask to resume between \
                     revision {seen} and {}, asked {requested}",
                    revisions[delivered]
                );
                let rest = within(B, "the lagging watch to end", events.next()).await;
                assert!(
                    rest.is_none(),
                    "{B}: the watch must end after Compacted, got {rest:?}"
                );
                told = true;
                break;
            }
            Some(Err(e)) => {
                panic!("{B}: {what} failed with {e:?}; only Compacted may end a lagging watch")
            }
            None => panic!("{B}: the watch ended silently after {delivered} of {writes} events"),
        }
    }

    let listing = must(B, "re-list", store.list(&p)).await;
    assert_eq!(
        listing.items.len(),
        writes,
        "{B}: the re-list must hold every write"
    );
    let mut fresh_events = must(
        B,
        "watch from the re-list",
        store.watch(&p, listing.revision),
    )
    .await;
    let key = format!("{p}after-relist");
    let value = Bytes::from_static(b"after");
    let rev = must(B, "put after the re-list", store.put(&key, value.clone())).await;
    expect_events(
        B,
        &mut fresh_events,
        "the watch from the re-list",
        &[put_event(&key, &value, rev, rev)],
    )
    .await;
    told
}
