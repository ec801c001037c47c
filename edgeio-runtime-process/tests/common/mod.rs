//! Shared by the process tests: a runtime over a fresh state folder, specs, bounded waits,
//! and a guard that kills any process a failed test left behind.

#![allow(dead_code)]

use edgeio_core::job::InstanceSpec;
use edgeio_core::model::{InstanceId, JobId, Resources};
use edgeio_core::runtime::{LogOptions, RunState, Runtime, RuntimeEvent};
use edgeio_runtime_process::{ProcessConfig, ProcessRuntime};
use futures::{Stream, StreamExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Prints `ready`, then runs until SIGTERM.
pub const RUNS_UNTIL_STOPPED: &str =
    r#"echo ready; trap "exit 0" TERM; while :; do sleep 0.1; done"#;

/// Every wait of these tests is bounded by this.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A fresh state folder; on drop, kills every process whose stdout or stderr is one of the
/// folder's pipes (the programs the tests started and whatever they spawned).
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv {
            dir: tempfile::Builder::new()
                .prefix("edgeio-process")
                .tempdir()
                .expect("a temp folder"),
        }
    }

    pub fn state(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap()
    }

    /// `/bin/sh` allowed; limits left to the host.
    pub fn config(&self) -> ProcessConfig {
        ProcessConfig {
            state_dir: self.state(),
            allow: vec![PathBuf::from("/bin/sh")],
            ..ProcessConfig::default()
        }
    }

    pub fn runtime(&self) -> ProcessRuntime {
        ProcessRuntime::new(self.config()).expect("a runtime over the test folder")
    }

    pub fn instance_dir(&self, id: &InstanceId) -> PathBuf {
        self.state().join("instances").join(id.as_str())
    }

    /// Live processes writing to this folder's pipes.
    pub fn processes(&self) -> Vec<u32> {
        processes_writing_into(&self.state())
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for pid in self.processes() {
            kill9(pid);
        }
    }
}

/// SIGKILL to one process.
pub fn kill9(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Pids of live processes whose stdout or stderr points into `dir`.
pub fn processes_writing_into(dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && pid_alive(pid))
        .filter(|pid| {
            [1, 2].iter().any(|fd| {
                std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                    .is_ok_and(|target| target.starts_with(dir))
            })
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

/// Waits up to 10 s for `pid` to be gone.
pub async fn wait_gone(pid: u32) {
    let start = Instant::now();
    while pid_alive(pid) {
        assert!(
            start.elapsed() < DEADLINE,
            "pid {pid} still alive after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
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

/// A native spec running `/bin/sh -c script`.
pub fn sh(id: &InstanceId, script: &str) -> InstanceSpec {
    InstanceSpec {
        id: id.clone(),
        job: JobId::new("process-test").unwrap(),
        image: "/bin/sh".into(),
        kind: "native".into(),
        args: vec!["-c".into(), script.into()],
        env: Default::default(),
        ports: vec![],
        resources: Resources::ZERO,
        labels: Default::default(),
    }
}

/// The pid the runtime recorded for an instance (its `meta.json`).
pub fn recorded_pid(env: &TestEnv, id: &InstanceId) -> u32 {
    let text = std::fs::read_to_string(env.instance_dir(id).join("meta.json")).unwrap();
    let meta: edgeio_runtime_process::adopt::Meta = serde_json::from_str(&text).unwrap();
    meta.pid.expect("a started instance has a pid")
}

/// The next event for `id` whose state matches, within 10 s.
pub async fn event_for(
    events: &mut (impl Stream<Item = RuntimeEvent> + Unpin),
    id: &InstanceId,
    want: impl Fn(&RunState) -> bool,
) -> RuntimeEvent {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let event = events.next().await.expect("the event stream stays open");
            if event.id == *id && want(&event.state) {
                return event;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no matching event for {id} within {DEADLINE:?}"))
}

pub fn exited(state: &RunState) -> bool {
    matches!(state, RunState::Exited { .. })
}

/// The texts of the log so far (no follow).
pub async fn log_texts(runtime: &dyn Runtime, id: &InstanceId, tail: Option<usize>) -> Vec<String> {
    runtime
        .logs(
            id,
            LogOptions {
                tail,
                follow: false,
            },
        )
        .await
        .expect("logs")
        .map(|l| l.expect("a log line").text)
        .collect()
        .await
}

/// Waits up to 10 s for a log line satisfying `want`, and returns it.
pub async fn wait_log_line(
    runtime: &dyn Runtime,
    id: &InstanceId,
    want: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let lines = log_texts(runtime, id, None).await;
        if let Some(line) = lines.iter().find(|l| want(l)) {
            return line.clone();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no matching log line for {id} within {DEADLINE:?}: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
