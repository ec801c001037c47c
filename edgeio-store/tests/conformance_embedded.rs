//! The embedded store against the store conformance suite, plus what only a file can promise:
//! history and leases across reopening, and clear refusals of damaged or foreign files.

use bytes::Bytes;
use edgeio_core::store::{Precondition, Revision, Store, StoreError, WatchEvent, WatchStream};
use edgeio_core::testing::conformance::store as suite;
use edgeio_store::embedded::FORMAT_VERSION;
use edgeio_store::{EmbeddedOptions, EmbeddedStore};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

fn file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("store.redb")
}

async fn open_at(path: &Path, options: EmbeddedOptions) -> EmbeddedStore {
    EmbeddedStore::open(path, options)
        .await
        .unwrap_or_else(|e| panic!("cannot open {path:?}: {e}"))
}

async fn open(dir: &tempfile::TempDir, options: EmbeddedOptions) -> EmbeddedStore {
    open_at(&file(dir), options).await
}

fn history(events: usize) -> EmbeddedOptions {
    EmbeddedOptions {
        history: events,
        ..EmbeddedOptions::default()
    }
}

async fn next_event(events: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(DEADLINE, events.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(other) => panic!("expected a watch event, got {other:?}"),
        Err(_) => panic!("no watch event within {DEADLINE:?}"),
    }
}

/// Opening must fail with `Invalid { field: "store file" }` naming the file and `words`.
async fn refused(path: &Path, words: &[&str]) -> String {
    match EmbeddedStore::open(path, EmbeddedOptions::default()).await {
        Ok(store) => panic!("{path:?} opened as {store:?}; it must be refused"),
        Err(
            err @ StoreError::Invalid {
                field: "store file",
                ..
            },
        ) => {
            let message = err.to_string();
            assert!(
                message.contains(&path.display().to_string()),
                "the error must name the file: {message}"
            );
            for word in words {
                assert!(
                    message.contains(word),
                    "the error must say {word:?}: {message}"
                );
            }
            message
        }
        Err(other) => {
            panic!("{path:?}: expected Invalid {{ field: \"store file\" }}, got {other:?}")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The suite.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_store_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, EmbeddedOptions::default()).await;
    assert_eq!(store.backend(), "redb");
    suite::run_all(&store, "conformance/").await;
}

#[tokio::test]
async fn suite_passes_again_on_the_reopened_file() {
    let dir = tempfile::tempdir().unwrap();
    suite::put_get_roundtrip(&open(&dir, EmbeddedOptions::default()).await, "again/").await;
    let store = open(&dir, EmbeddedOptions::default()).await;
    suite::put_get_roundtrip(&store, "again/").await;
    suite::watch_orders_events_by_revision(&store, "again/").await;
}

#[tokio::test]
async fn history_beyond_sixteen_events_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    suite::compacted_history_is_reported(&open(&dir, history(16)).await, "compaction/", 16).await;
}

#[tokio::test]
async fn lagging_watcher_is_told_to_relist() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        watch_buffer: 8,
        ..EmbeddedOptions::default()
    };
    assert!(
        suite::slow_watcher_is_told_to_relist(&open(&dir, options).await, "lag/", 100).await,
        "a watcher 100 events behind an 8-event buffer must get Compacted"
    );
}

#[tokio::test]
async fn watcher_within_its_buffer_sees_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, EmbeddedOptions::default()).await;
    assert!(
        !suite::slow_watcher_is_told_to_relist(&store, "no-lag/", 100).await,
        "a watcher 100 events behind a 4,096-event buffer must not be told to re-list"
    );
}

// ---------------------------------------------------------------------------------------------
// Exact revisions and history, which only a store with no other writers can promise.

#[tokio::test]
async fn watch_from_compacted_revision_fails_at_the_watch_call() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, history(4)).await;
    for i in 0..10 {
        assert_eq!(
            store.put(&format!("k{i}"), "v".into()).await.unwrap(),
            i + 1
        );
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
async fn history_and_revision_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut written: Vec<Revision> = Vec::new();
    {
        let store = open(&dir, EmbeddedOptions::default()).await;
        for i in 0..20 {
            written.push(
                store
                    .put(&format!("h/{i:02}"), format!("v{i}").into())
                    .await
                    .unwrap(),
            );
        }
        written.push(store.delete("h/03").await.unwrap().unwrap());
    }
    let store = open(&dir, EmbeddedOptions::default()).await;
    assert_eq!(
        store.revision().await.unwrap(),
        21,
        "the revision is persisted"
    );
    let mut events = store.watch("h/", 0).await.unwrap();
    for (i, rev) in written.iter().enumerate() {
        let event = next_event(&mut events).await;
        assert_eq!(event.revision(), *rev, "event {i} replayed from the file");
    }
    let live = store.put("h/live", "live".into()).await.unwrap();
    assert_eq!(live, 22, "revisions continue after reopening");
    assert_eq!(
        next_event(&mut events).await.revision(),
        live,
        "then live events follow"
    );

    // Reopened with a shorter history, the file keeps only the newest events.
    drop((events, store));
    let store = open(&dir, history(5)).await;
    assert!(
        store.watch("h/", 17).await.is_ok(),
        "events 18..=22 are kept"
    );
    match store.watch("h/", 16).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (16, 18))
        }
        Err(e) => panic!("expected Compacted {{ requested: 16, oldest: 18 }}, got {e:?}"),
        Ok(_) => panic!("expected Compacted {{ requested: 16, oldest: 18 }}, got a stream"),
    }
    let listing = store.list("h/").await.unwrap();
    assert_eq!(
        (listing.revision, listing.items.len()),
        (22, 20),
        "trimming the history keeps every key"
    );
}

#[tokio::test]
async fn store_keeping_no_history_watches_only_from_now() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, history(0)).await;
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
async fn put_many_gives_each_key_its_own_revision_in_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, EmbeddedOptions::default()).await;
    let mut events = store.watch("b/", 0).await.unwrap();
    let items: Vec<(String, Bytes)> = (0..5)
        .map(|i| (format!("b/{i}"), Bytes::from(format!("v{i}"))))
        .collect();
    assert_eq!(store.put_many(items).await.unwrap(), 5);
    for rev in 1..=5 {
        assert_eq!(next_event(&mut events).await.revision(), rev);
    }
    let refused = store
        .put_many(vec![
            ("b/ok".into(), "v".into()),
            (String::new(), "v".into()),
        ])
        .await;
    assert!(matches!(
        refused,
        Err(StoreError::Invalid { field: "key", .. })
    ));
    assert_eq!(store.get("b/ok").await.unwrap(), None, "all or nothing");
    assert_eq!(store.put_many(Vec::new()).await.unwrap(), 5);
}

// ---------------------------------------------------------------------------------------------
// Sharing across tasks.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_from_many_spawned_tasks_has_one_winner_per_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, EmbeddedOptions::default()).await;
    let mut rev = store.put("contested", "0".into()).await.unwrap();
    for round in 0..4 {
        let tasks: Vec<_> = (0..16)
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
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, EmbeddedOptions::default()).await;
    let mut events = store.watch("jobs/", 0).await.unwrap();
    let watcher = tokio::spawn(async move {
        let mut revisions = Vec::new();
        while revisions.len() < 80 {
            revisions.push(next_event(&mut events).await.revision());
        }
        revisions
    });
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..20 {
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
    let mut listed: Vec<Revision> = store
        .list("jobs/")
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| kv.mod_revision)
        .collect();
    listed.sort_unstable();
    assert_eq!(seen, listed, "exactly the writes under jobs/");
}

#[tokio::test]
async fn watch_ends_when_the_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, EmbeddedOptions::default()).await;
    let mut events = store.watch("", 0).await.unwrap();
    drop(store);
    let end = tokio::time::timeout(DEADLINE, events.next()).await.unwrap();
    assert!(end.is_none(), "got {end:?}");
}

#[tokio::test]
async fn a_file_open_in_one_store_is_unavailable_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(&dir, EmbeddedOptions::default()).await;
    match EmbeddedStore::open(file(&dir), EmbeddedOptions::default()).await {
        Err(StoreError::Unavailable { reason }) => {
            assert!(
                reason.contains("store.redb") && reason.contains("open"),
                "{reason}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Leases across reopening.

#[tokio::test]
async fn a_live_lease_survives_reopening_and_an_expired_one_is_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let (long, short, last) = {
        let store = open(&dir, EmbeddedOptions::default()).await;
        let long = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        let short = store.grant_lease(Duration::from_secs(1)).await.unwrap();
        store
            .put_with_lease("l/long", "v".into(), long)
            .await
            .unwrap();
        store
            .put_with_lease("l/short", "v".into(), short)
            .await
            .unwrap();
        let last = store.revision().await.unwrap();
        (long, short, last)
    };
    // The short lease's deadline passes while the file is closed.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let store = open(&dir, EmbeddedOptions::default()).await;
    assert!(
        store.get("l/long").await.unwrap().is_some(),
        "the live lease's key stays"
    );
    assert_eq!(
        store.get("l/short").await.unwrap(),
        None,
        "the expired lease's key is gone"
    );
    let mut events = store.watch("l/", last).await.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        WatchEvent::Delete {
            key: "l/short".into(),
            revision: last + 1
        },
        "the reaping is an ordinary delete event"
    );
    store.keep_alive(long).await.unwrap();
    assert!(matches!(
        store.keep_alive(short).await,
        Err(StoreError::NotFound { .. })
    ));
    // Lease ids are not reused after reopening.
    let next = store.grant_lease(Duration::from_secs(5)).await.unwrap();
    assert!(next > long.max(short), "lease {next} reuses an older id");
}

#[tokio::test]
async fn lease_below_one_second_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, EmbeddedOptions::default()).await;
    match store.grant_lease(Duration::from_millis(999)).await {
        Err(StoreError::Invalid { field: "ttl", .. }) => {}
        other => panic!("expected Invalid {{ field: \"ttl\" }}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Files that are not healthy stores of our format.

fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

async fn filled_store(dir: &tempfile::TempDir) -> PathBuf {
    let store = open(dir, EmbeddedOptions::default()).await;
    for i in 0..200 {
        store
            .put(
                &format!("k/{i:03}"),
                Bytes::from(pseudo_random(1_000, i + 1)),
            )
            .await
            .unwrap();
    }
    file(dir)
}

#[tokio::test]
async fn a_file_of_random_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(file(&dir), pseudo_random(64 << 10, 42)).unwrap();
    refused(&file(&dir), &["damaged or not an edgeio store"]).await;
}

#[tokio::test]
async fn a_truncated_file_is_refused_never_read_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = filled_store(&dir).await;
    let whole = std::fs::read(&path).unwrap();
    for len in [
        0,
        100,
        4_096,
        whole.len() / 3,
        whole.len() / 2,
        whole.len() - 4_096,
    ] {
        std::fs::write(&path, &whole[..len]).unwrap();
        refused(&path, &["damaged"]).await;
    }
}

#[tokio::test]
async fn a_file_with_flipped_bytes_is_refused_or_read_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = filled_store(&dir).await;
    let whole = std::fs::read(&path).unwrap();
    let mut refusals = 0;
    for step in 1..8 {
        let mut damaged = whole.clone();
        let at = whole.len() * step / 8;
        for byte in &mut damaged[at..at + 64] {
            *byte = !*byte;
        }
        std::fs::write(&path, &damaged).unwrap();
        match EmbeddedStore::open(&path, EmbeddedOptions::default()).await {
            // Damage to a page no tree uses is harmless; then every key must be there.
            Ok(store) => assert_eq!(store.list("k/").await.unwrap().items.len(), 200),
            Err(StoreError::Invalid {
                field: "store file",
                ..
            }) => refusals += 1,
            Err(other) => panic!("flipped bytes at {at}: expected Invalid, got {other:?}"),
        }
    }
    assert!(refusals > 0, "no flipped region was noticed");
}

#[tokio::test]
async fn a_file_of_a_newer_format_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir, EmbeddedOptions::default()).await);
    {
        // What a future edgeio would have written: the documented meta table, version + 1.
        let db = redb::Database::open(file(&dir)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("edgeio_meta");
            let mut table = txn.open_table(meta).unwrap();
            table.insert("format_version", FORMAT_VERSION + 1).unwrap();
        }
        txn.commit().unwrap();
    }
    refused(
        &file(&dir),
        &[
            &format!("format version {}", FORMAT_VERSION + 1),
            &format!("version {FORMAT_VERSION} that this edgeio reads"),
            "newer edgeio",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_foreign_redb_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = redb::Database::create(file(&dir)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let other: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("theirs");
            txn.open_table(other).unwrap().insert("a", "b").unwrap();
        }
        txn.commit().unwrap();
    }
    refused(&file(&dir), &["edgeio_meta", "theirs"]).await;
}

#[tokio::test]
async fn bad_paths_and_options_are_refused_with_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(PathBuf, EmbeddedOptions, &str)> = vec![
        (
            PathBuf::new(),
            EmbeddedOptions::default(),
            "must not be empty",
        ),
        (
            dir.path().to_path_buf(),
            EmbeddedOptions::default(),
            "is a directory",
        ),
        (
            file(&dir),
            EmbeddedOptions {
                watch_buffer: 0,
                ..EmbeddedOptions::default()
            },
            "at least 1 event",
        ),
    ];
    for (path, options, rule) in cases {
        match EmbeddedStore::open(&path, options).await {
            Err(err @ StoreError::Invalid { .. }) => {
                assert!(err.to_string().contains(rule), "{path:?}: {err}")
            }
            other => panic!("{path:?}: expected Invalid saying {rule:?}, got {other:?}"),
        }
    }
    let missing = dir.path().join("no-such-dir").join("store.redb");
    let err = EmbeddedStore::open(&missing, EmbeddedOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no-such-dir") && err.to_string().contains("cannot create"),
        "{err}"
    );
    assert!(!missing.exists());
}
