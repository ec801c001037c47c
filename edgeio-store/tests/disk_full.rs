//! The embedded store on a disk that fills up and empties again, for real: an 8 MiB tmpfs
//! (mounting needs root; without it the test prints why it skipped, through
//! `edgeio_core::testing::require` under the name `tmpfs`).
//!
//! redb answers `PreviousIo` to every call after one failed write until the file is reopened;
//! the store must reopen it by itself, answer `Unavailable` meanwhile, and lose nothing it
//! acknowledged.

use bytes::Bytes;
use edgeio_core::store::{Store, StoreError, WatchEvent};
use edgeio_core::testing::require;
use edgeio_store::{EmbeddedOptions, EmbeddedStore};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::time::Instant;

/// How long the store may take to accept writes again once the disk has room.
const RECOVERY: Duration = Duration::from_secs(20);

/// A tmpfs mounted on a fresh temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file there (a failed assertion left the store open):
            // detach it so the temporary directory can go.
            let lazy = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
            if !lazy.is_ok_and(|s| s.success()) {
                eprintln!("cannot unmount the tmpfs at {:?}", self.dir.path());
            }
        }
    }
}

/// Writes a file until the disk is full; answers how many bytes fit.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("cannot create the filler file");
    let chunk = vec![0xa5u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling {path:?} failed with {e} rather than a full disk"),
        }
    }
    // Whatever is still buffered must reach the disk's pages too (tmpfs: it already has).
    if let Err(e) = file.sync_all() {
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
    }
    written
}

async fn put_until_accepted(store: &EmbeddedStore, key: &str, value: Bytes) -> u64 {
    let deadline = Instant::now() + RECOVERY;
    loop {
        match store.put(key, value.clone()).await {
            Ok(revision) => return revision,
            Err(StoreError::Unavailable { reason }) if Instant::now() < deadline => {
                tracing::debug!(reason, "still unavailable");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{key:?} still refused {RECOVERY:?} after space returned: {e}"),
        }
    }
}

async fn assert_holds(store: &EmbeddedStore, acked: &BTreeMap<String, Bytes>, when: &str) {
    for (key, value) in acked {
        let found = store
            .get(key)
            .await
            .unwrap_or_else(|e| panic!("{when}: reading {key:?} failed: {e}"))
            .unwrap_or_else(|| panic!("{when}: acknowledged key {key:?} is gone"));
        assert_eq!(&found.value, value, "{when}: {key:?} changed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_writes_unavailable_and_the_store_recovers_when_space_returns() {
    let mut disk = None;
    if !require::require("tmpfs", || {
        disk = Some(Tmpfs::mount("8m")?);
        Ok(())
    }) {
        return;
    }
    let disk = disk.expect("mounted");
    let path: PathBuf = disk.path().join("store.redb");
    let options = EmbeddedOptions {
        history: 1_000,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(&path, options.clone()).await.unwrap();

    let mut acked = BTreeMap::new();
    for i in 0..20 {
        let (key, value) = (format!("jobs/{i:02}"), Bytes::from(format!("job {i}")));
        store.put(&key, value.clone()).await.unwrap();
        acked.insert(key, value);
    }
    let lease = store.grant_lease(Duration::from_secs(300)).await.unwrap();
    store
        .put_with_lease("leased/k", "held".into(), lease)
        .await
        .unwrap();
    acked.insert("leased/k".into(), "held".into());
    let mut watch = store
        .watch("after/", store.revision().await.unwrap())
        .await
        .unwrap();

    let filler = disk.path().join("filler");
    let filled = fill(&filler);
    assert!(filled > 0, "the filler found no room at all");

    // Large values need pages the file does not have yet, and the disk has none to give.
    let big = Bytes::from(vec![7u8; 256 << 10]);
    let mut refusal = None;
    for i in 0..64 {
        let key = format!("big/{i:02}");
        match store.put(&key, big.clone()).await {
            // Fitted in room the file already had: acknowledged, so it must survive too.
            Ok(_) => {
                acked.insert(key, big.clone());
            }
            Err(StoreError::Unavailable { reason }) => {
                refusal = Some(reason);
                break;
            }
            Err(e) => panic!("a write on a full disk failed with {e:?}, not Unavailable"),
        }
    }
    let reason = refusal.expect("no write failed on a full disk");
    assert!(
        reason.contains(&path.display().to_string()),
        "the refusal names the file: {reason}"
    );
    assert!(!reason.contains("store unavailable"), "said once: {reason}");
    // Still full: a write is refused again (redb would say PreviousIo; the store reopens the
    // file, or says it will), never with another error and never acknowledged while no page
    // is free.
    match store.put("big/again", big.clone()).await {
        Err(StoreError::Unavailable { .. }) => {}
        other => panic!("a second write on the full disk gave {other:?}, not Unavailable"),
    }

    std::fs::remove_file(&filler).unwrap();
    let revision = put_until_accepted(&store, "after/1", "back".into()).await;
    acked.insert("after/1".into(), "back".into());
    assert_holds(&store, &acked, "after recovery").await;
    assert_eq!(store.revision().await.unwrap(), revision);
    assert_eq!(store.list("").await.unwrap().revision, revision);
    // A watch opened before the failure goes on with the next write.
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Some(Ok(WatchEvent::Put(kv)))) => {
            assert_eq!((kv.key.as_str(), kv.mod_revision), ("after/1", revision))
        }
        other => panic!("the watch did not see the write after recovery: {other:?}"),
    }
    // The lease granted before the failure lives on.
    store.keep_alive(lease).await.unwrap();

    // And the file itself holds it all.
    drop(watch);
    drop(store);
    let store = EmbeddedStore::open(&path, options).await.unwrap();
    assert_holds(&store, &acked, "reopened").await;
    assert_eq!(store.revision().await.unwrap(), revision);
    drop(store);
    drop(disk);
}
