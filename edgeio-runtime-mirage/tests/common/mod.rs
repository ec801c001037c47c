//! Shared by the qemu tests: the test kernels (assembled once per test process), a runtime
//! over a fresh state folder, and a guard that kills any tender left behind.

#![allow(dead_code)]

use edgeio_core::job::InstanceSpec;
use edgeio_core::model::{InstanceId, JobId, Resources};
use edgeio_core::runtime::{RunState, RuntimeEvent};
use edgeio_runtime_mirage::{KvmPolicy, MirageConfig, MirageRuntime};
use futures::{Stream, StreamExt};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The line every test kernel prints on COM1.
pub const HELLO: &str = "edgeio test kernel: hello from COM1";

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kernels/hello.S");

/// A variant of `tests/kernels/hello.S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Prints, then exits through isa-debug-exit with this code.
    Exit(u8),
    /// Prints, then halts forever (until QMP quit or a signal).
    Loop,
    /// The exit kernel without its multiboot header: an ELF that is not a kernel.
    NoHeader,
}

impl Kernel {
    fn defsym(self) -> String {
        match self {
            Kernel::Exit(code) => format!("CODE={code}"),
            Kernel::Loop => "LOOP=1".into(),
            Kernel::NoHeader => "NOHEADER=1".into(),
        }
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (binutils is needed to build the test kernels): {e}")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The kernel's ELF file, assembled with `as --32` and linked with `ld -m elf_i386` at 1 MiB
/// into the target's test folder. Each variant is built once per process; parallel test
/// processes build into folders of their own and rename the result into place atomically.
pub fn kernel(kernel: Kernel) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let defsym = kernel.defsym();
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.get(&defsym) {
        return path.clone();
    }
    let source = std::fs::read(SOURCE).expect("the test kernel's source");
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&source, &defsym).hash(&mut hasher);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernels");
    std::fs::create_dir_all(&dir).unwrap();
    let name = defsym.replace('=', "-").to_lowercase();
    let out = dir.join(format!("hello-{name}-{:016x}.elf", hasher.finish()));
    if !out.exists() {
        let work = dir.join(format!(
            "build-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&work).unwrap();
        let object = work.join("kernel.o");
        let elf = work.join("kernel.elf");
        let (o, e) = (object.to_str().unwrap(), elf.to_str().unwrap());
        run("as", &["--32", "--defsym", &defsym, SOURCE, "-o", o]);
        run(
            "ld",
            &[
                "-m", "elf_i386", "-Ttext", "0x100000", "-e", "_start", "-o", e, o,
            ],
        );
        std::fs::rename(&elf, &out).unwrap();
        let _ = std::fs::remove_dir_all(&work);
    }
    built.insert(defsym, out.clone());
    out
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
