//! Shared by the qemu tests: the test kernels (the crate's `testing` feature), a runtime
//! over a fresh state folder, and a guard that kills any tender left behind.

#![allow(dead_code)]

use edgeio_core::job::InstanceSpec;
use edgeio_core::model::{InstanceId, JobId, Resources};
use edgeio_core::runtime::{RunState, RuntimeEvent};
use edgeio_runtime_mirage::{KvmPolicy, MirageConfig, MirageRuntime};
use futures::{Stream, StreamExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // each test file uses its part
pub use edgeio_runtime_mirage::testing::{Kernel, HELLO};

/// The kernel's ELF file, built once into the target's test folder (shared by the test
/// processes: see `edgeio_runtime_mirage::testing::build_kernel`).
pub fn kernel(kernel: Kernel) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernels");
    edgeio_runtime_mirage::testing::kernel(kernel, &dir)
}

/// A fresh, short state folder with a runtime over it; on drop, kills every process whose
/// command line names the folder (a failed test leaves no qemu behind).
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv {
            dir: tempfile::Builder::new()
                .prefix("em")
                .tempdir()
                .expect("a temp folder"),
        }
    }

    /// The config the tests use: software emulation, since KVM here takes seconds to start.
    pub fn config(&self) -> MirageConfig {
        MirageConfig {
            state_dir: self.state(),
            kvm: KvmPolicy::Off,
            ..MirageConfig::default()
        }
    }

    pub fn state(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap()
    }

    pub fn runtime(&self) -> MirageRuntime {
        MirageRuntime::new(self.config()).expect("a runtime over the test folder")
    }

    /// Live processes (not zombies) started for this folder.
    pub fn processes(&self) -> Vec<u32> {
        processes_mentioning(&self.state())
    }

    /// Waits up to 10 s for no process of this folder to be left.
    pub fn assert_no_process_left(&self) {
        let start = Instant::now();
        loop {
            let left = self.processes();
            if left.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "processes left behind after 10 s: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for pid in self.processes() {
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// Pids of running processes whose command line mentions `needle`; zombies have no command
/// line, so they do not count.
pub fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

/// True while `pid` is a live process (a zombie has ended).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A unique instance id with `prefix`.
pub fn unique_id(prefix: &str) -> InstanceId {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    InstanceId::new(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
    .unwrap()
}

/// A mirage spec for `image`.
pub fn spec(id: &InstanceId, image: &Path) -> InstanceSpec {
    InstanceSpec {
        id: id.clone(),
        job: JobId::new("mirage-test").unwrap(),
        image: image.to_string_lossy().into_owned(),
        kind: "mirage".into(),
        args: vec![],
        env: Default::default(),
        ports: vec![],
        resources: Resources::ZERO,
        labels: Default::default(),
    }
}

/// The next event for `id` whose state matches, within 10 s.
pub async fn event_for(
    events: &mut (impl Stream<Item = RuntimeEvent> + Unpin),
    id: &InstanceId,
    want: impl Fn(&RunState) -> bool,
) -> RuntimeEvent {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.next().await.expect("the event stream stays open");
            if event.id == *id && want(&event.state) {
                return event;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no matching event for {id} within 10 s"))
}

pub fn exited(state: &RunState) -> bool {
    matches!(state, RunState::Exited { .. })
}
