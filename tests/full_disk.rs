//! A cluster whose data folder fills up, over real processes: its store lives on an 8 MiB
//! tmpfs (mounting needs root; without it the test prints why it skipped, under the name
//! `tmpfs`). While the disk is full nothing starts — the cluster answers the root's deploy
//! "not now" and the root keeps the job with it; once space returns the job runs once; after
//! a SIGKILL and a restart of the cluster nothing is lost or doubled.
#![cfg(all(feature = "roles", feature = "testing"))]

mod support;

use edgeio::state::{InstanceState, JobState};
use edgeio::testing::require;
use edgeio::transport_mqtt::testing::free_port;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{
    cluster_args, job, processes_running, ready_nodes, root_args, root_client, serves, until,
    worker_args, Proc,
};

/// A tmpfs mounted on `dir`, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // a process still holds a file there: detach it so the directory can go
            let lazy = Command::new("umount").arg("-l").arg(&self.dir).status();
            if !lazy.is_ok_and(|s| s.success()) {
                eprintln!("cannot unmount the tmpfs at {:?}", self.dir);
            }
        }
    }
}

/// Writes a file until the disk is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("the filler file");
    let chunk = vec![0x5au8; 64 << 10];
    loop {
        match file.write(&chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return,
            Err(e) => panic!("filling {path:?} failed with {e}, not a full disk"),
        }
    }
}

/// A marker no other test's `sleep` uses, so `pgrep` counts this test's processes only.
fn marker() -> String {
    format!("{}", 9_000_000 + std::process::id() % 1_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_a_full_disk_starts_nothing_until_space_returns_and_loses_nothing_to_a_kill() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = dir.path();
    // the cluster's data folder (`--data DIR/cluster-1`) is the tmpfs
    let mut disk = None;
    if !require::require("tmpfs", || {
        disk = Some(Tmpfs::mount(&d.join("cluster-1"), "8m")?);
        Ok(())
    }) {
        return;
    }
    let _disk = disk.expect("mounted");

    let (root_port, cluster_port) = (free_port(), free_port());
    let mut procs = vec![Proc::start(
        "root",
        "root",
        &root_args(d, root_port, &[]),
        d,
    )];
    let client = root_client(d, root_port, &mut procs).await;
    let cluster = cluster_args(d, "cluster-1", root_port, cluster_port, free_port(), &[]);
    procs.push(Proc::start("cluster-1", "cluster", &cluster, d));
    serves(d, cluster_port, &mut procs).await;
    procs.push(Proc::start(
        "w1",
        "worker",
        &worker_args(d, "w1", cluster_port, "cluster-1"),
        d,
    ));
    ready_nodes(&client, &mut procs, &["cluster-1"], 1).await;

    let filler = d.join("cluster-1").join("filler");
    fill(&filler);
    let marker = marker();
    let pattern = format!("sleep {marker}");
    // two environment values of 100 kB (each under Linux's 128 kB for one string): its
    // record needs pages the store file does not have, so it cannot fit in what redb frees
    // and reuses, and the first write of it meets the full disk
    let pad = "p".repeat(100_000);
    let descriptor = job(
        "on-full-disk",
        &marker,
        &format!("env:\n  PAD_A: \"{pad}\"\n  PAD_B: \"{pad}\""),
    );
    let view = client
        .submit(descriptor.into_bytes(), "application/yaml")
        .await
        .unwrap();
    let id = view.id.to_string();

    // full: the deploy is answered "not now", again and again; nothing starts
    until(
        "the cluster failing to store the job",
        &mut procs,
        async || procs_log_says(d, "cluster-1", "cannot persist").then_some(()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = client.job(&id).await.unwrap();
    assert_eq!(
        waiting.state,
        JobState::ScheduledCluster,
        "kept with its cluster, neither refused nor run: {waiting:#?}\n--- cluster ---\n{}",
        log_of(d, "cluster-1")
    );
    assert!(
        processes_running(&pattern).is_empty(),
        "a job started that its cluster could not store"
    );

    // space returns: the re-sent deploy is stored, acked, and the job runs once
    std::fs::remove_file(&filler).unwrap();
    until("the job RUNNING", &mut procs, async || {
        (client.job(&id).await.ok()?.state == JobState::Running).then_some(())
    })
    .await;
    assert_eq!(processes_running(&pattern).len(), 1, "started once");

    // SIGKILL the cluster and start it again on the same data: nothing is lost or doubled —
    // the job and its instance come back from the store, one copy runs, and the restarted
    // cluster keeps the stored instance (it takes a RUNNING instance for gone only once its
    // node's statuses leave it out for three intervals; before that wait it replaced it at
    // the node's first status in about every other run)
    let at = procs
        .iter()
        .position(|p| p.name == "cluster-1")
        .expect("started");
    procs[at].kill();
    procs.remove(at);
    procs.push(Proc::start("cluster-1 again", "cluster", &cluster, d));
    serves(d, cluster_port, &mut procs).await;
    ready_nodes(&client, &mut procs, &["cluster-1"], 1).await;
    until("the job RUNNING on one copy", &mut procs, async || {
        let job = client.job(&id).await.ok()?;
        let live = job
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count();
        (job.state == JobState::Running && live == 1 && processes_running(&pattern).len() == 1)
            .then_some(())
    })
    .await;
    // and it stays so
    tokio::time::sleep(Duration::from_secs(2)).await;
    let job = client.job(&id).await.unwrap();
    assert_eq!(job.state, JobState::Running, "{job:#?}");
    assert_eq!(processes_running(&pattern).len(), 1, "one copy runs");
    assert_eq!(
        job.instances.len(),
        1,
        "the stored instance is kept: {job:#?}"
    );

    client.terminate(&id).await.unwrap();
    until("no process left", &mut procs, async || {
        processes_running(&pattern).is_empty().then_some(())
    })
    .await;
    // the processes hold files on the tmpfs: they go before it is unmounted
    drop(procs);
}

/// The log of the process named `name` (in `dir`).
fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// Whether the log of the process named `name` (in `dir`) contains `text`.
fn procs_log_says(dir: &Path, name: &str, text: &str) -> bool {
    log_of(dir, name).contains(text)
}
