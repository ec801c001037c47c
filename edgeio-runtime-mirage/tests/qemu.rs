//! The unikernel runtime with real qemu and the test kernels of `tests/kernels/`.
//!
//! Every test uses a state folder of its own and ids unique to its process, and its
//! `TestEnv` kills whatever it started if the test fails half-way.

mod common;

use common::{event_for, exited, kernel, pid_alive, spec, unique_id, Kernel, TestEnv, HELLO};
use edgeio_core::model::InstanceId;
use edgeio_core::runtime::{LogOptions, RunState, Runtime, RuntimeError, LABEL_INSTANCE};
use edgeio_runtime_mirage::image::LABEL_TARGET;
use edgeio_runtime_mirage::{KvmPolicy, MirageConfig, MirageRuntime};
use futures::StreamExt;
use std::path::Path;
use std::time::{Duration, Instant};

const GRACE: Duration = Duration::from_secs(5);

async fn log_texts(runtime: &MirageRuntime, id: &InstanceId) -> Vec<String> {
    runtime
        .logs(id, LogOptions::default())
        .await
        .expect("logs")
        .map(|l| l.expect("a log line").text)
        .collect()
        .await
}

/// Waits up to 10 s for `HELLO` in the instance's log.
async fn wait_for_hello(runtime: &MirageRuntime, id: &InstanceId) {
    let start = Instant::now();
    loop {
        let lines = log_texts(runtime, id).await;
        if lines.iter().any(|l| l == HELLO) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{HELLO:?} not in the log of {id} within 10 s: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts a deploy failed, and that nothing is left: no status, no process, no folder.
async fn assert_refused_and_nothing_left(
    env: &TestEnv,
    runtime: &MirageRuntime,
    id: &InstanceId,
    result: Result<edgeio_core::runtime::InstanceStatus, RuntimeError>,
) -> RuntimeError {
    let err = match result {
        Err(e) => e,
        Ok(status) => panic!("deploy of {id} succeeded: {status:?}"),
    };
    assert!(
        matches!(runtime.status(id).await, Err(RuntimeError::NotFound { .. })),
        "status of a refused instance"
    );
    assert!(
        !env.state().join("instances").join(id.as_str()).exists(),
        "the refused instance's folder is left"
    );
    env.assert_no_process_left();
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exit_kernel_prints_its_line_and_reports_its_code() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    let env = TestEnv::new();
    let runtime = env.runtime();
    let id = unique_id("exit5");
    let mut events = runtime.events();
    runtime
        .deploy(&spec(&id, &kernel(Kernel::Exit(5))))
        .await
        .expect("deploy");
    let event = event_for(&mut events, &id, exited).await;
    assert_eq!(
        event.state,
        RunState::Exited {
            code: Some(5),
            oom_killed: false
        }
    );
    assert!(event.reason.contains("isa-debug-exit"), "{}", event.reason);
    assert_eq!(log_texts(&runtime, &id).await, [HELLO]);
    let status = runtime.status(&id).await.unwrap();
    assert_eq!(
        status.state,
        RunState::Exited {
            code: Some(5),
            oom_killed: false
        }
    );
    assert!(status.detail.contains("(tcg)"), "{}", status.detail);
    runtime.terminate(&id, GRACE).await.expect("terminate");
    assert!(!env.state().join("instances").join(id.as_str()).exists());
    env.assert_no_process_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_writes_zero_reports_success() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    let env = TestEnv::new();
    let runtime = env.runtime();
    let id = unique_id("exit0");
    let mut events = runtime.events();
    runtime
        .deploy(&spec(&id, &kernel(Kernel::Exit(0))))
        .await
        .expect("deploy");
    let event = event_for(&mut events, &id, exited).await;
    assert_eq!(
        event.state,
        RunState::Exited {
            code: Some(0),
            oom_killed: false
        },
        "guest 0 -> qemu status 1 -> reported 0: {}",
        event.reason
    );
    runtime.terminate(&id, GRACE).await.expect("terminate");
    env.assert_no_process_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_looping_kernel_is_terminated_through_qmp_and_no_qemu_is_left() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    let env = TestEnv::new();
    let runtime = env.runtime();
    let id = unique_id("loop");
    let status = runtime
        .deploy(&spec(&id, &kernel(Kernel::Loop)))
        .await
        .expect("deploy");
    assert_eq!(status.state, RunState::Running);
    wait_for_hello(&runtime, &id).await;
    let pids = env.processes();
    assert_eq!(pids.len(), 1, "one qemu for the instance: {pids:?}");
    let pid = pids[0];
    assert!(
        status.detail.contains(&format!("pid {pid}")),
        "{}",
        status.detail
    );

    let mut events = runtime.events();
    let begun = Instant::now();
    runtime
        .terminate(&id, Duration::from_secs(10))
        .await
        .expect("terminate");
    let event = event_for(&mut events, &id, exited).await;
    assert!(
        event.reason.contains("terminated (quit over QMP)"),
        "not stopped by QMP: {}",
        event.reason
    );
    // QMP answered at once: no grace period was waited out
    assert!(
        begun.elapsed() < Duration::from_secs(5),
        "{:?}",
        begun.elapsed()
    );
    let removed = event_for(&mut events, &id, |s| *s == RunState::Removed).await;
    assert_eq!(removed.reason, "removed after terminate");

    let start = Instant::now();
    while pid_alive(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "qemu pid {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.assert_no_process_left();
    assert!(matches!(
        runtime.status(&id).await,
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(!env.state().join("instances").join(id.as_str()).exists());
    let sockets: Vec<_> = std::fs::read_dir(env.state().join("q")).unwrap().collect();
    assert!(sockets.is_empty(), "QMP socket left: {sockets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_allow_list_only_the_listed_kernel_boots_through_a_link_too() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    let env = TestEnv::new();
    let allowed = kernel(Kernel::Exit(4));
    let runtime = MirageRuntime::new(MirageConfig {
        allow: Some(vec![allowed.clone()]),
        ..env.config()
    })
    .unwrap();
    // a kernel like any other, but not listed: refused before it is read
    let id = unique_id("unlisted");
    let result = runtime.deploy(&spec(&id, &kernel(Kernel::Loop))).await;
    let err = assert_refused_and_nothing_left(&env, &runtime, &id, result).await;
    assert!(
        err.to_string()
            .ends_with("not allowed on this worker: start the worker with --allow-kernel <path>"),
        "{err}"
    );
    // the listed one, named through a symlink, boots
    let link = env.dir.path().join("link.elf");
    std::os::unix::fs::symlink(&allowed, &link).unwrap();
    let id = unique_id("listed");
    let mut events = runtime.events();
    runtime.deploy(&spec(&id, &link)).await.expect("deploy");
    let event = event_for(&mut events, &id, exited).await;
    assert_eq!(
        event.state,
        RunState::Exited {
            code: Some(4),
            oom_killed: false
        }
    );
    runtime.terminate(&id, GRACE).await.expect("terminate");
    env.assert_no_process_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_runtime_adopts_a_running_unikernel_and_terminates_it() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    let env = TestEnv::new();
    let id = unique_id("adopt");
    let mut with_labels = spec(&id, &kernel(Kernel::Loop));
    with_labels.labels.insert("team".into(), "edge".into());
    {
        let first = env.runtime();
        first.deploy(&with_labels).await.expect("deploy");
        wait_for_hello(&first, &id).await;
        // the first runtime goes away as a restarted worker's would; qemu keeps running
    }
    let pids = env.processes();
    assert_eq!(pids.len(), 1, "qemu survives its runtime: {pids:?}");

    let second = env.runtime();
    let listed = second.list().await.expect("list");
    let found = listed
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("{id} not adopted: {listed:?}"));
    assert_eq!(found.state, RunState::Running);
    assert_eq!(
        found.labels.get(LABEL_INSTANCE).map(String::as_str),
        Some(id.as_str())
    );
    assert_eq!(found.labels.get("team").map(String::as_str), Some("edge"));
    assert!(found.detail.contains("adopted"), "{}", found.detail);
    // the console file outlived the first runtime
    assert_eq!(log_texts(&second, &id).await, [HELLO]);
    let again = second.deploy(&with_labels).await;
    assert!(
        matches!(again, Err(RuntimeError::AlreadyExists { .. })),
        "{again:?}"
    );

    let mut events = second.events();
    second.terminate(&id, GRACE).await.expect("terminate");
    let event = event_for(&mut events, &id, exited).await;
    assert!(event.reason.contains("adopted"), "{}", event.reason);
    env.assert_no_process_left();
    assert!(second.list().await.unwrap().iter().all(|s| s.id != id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_runtime_reports_unikernels_that_ended_as_exited() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    let env = TestEnv::new();
    let exits = unique_id("ended");
    let killed = unique_id("killed");
    {
        let first = env.runtime();
        let mut events = first.events();
        first
            .deploy(&spec(&exits, &kernel(Kernel::Exit(4))))
            .await
            .expect("deploy");
        event_for(&mut events, &exits, exited).await;
        first
            .deploy(&spec(&killed, &kernel(Kernel::Loop)))
            .await
            .expect("deploy");
    }
    // the looping one dies while no runtime watches it
    let pids = env.processes();
    for &pid in &pids {
        let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    }
    env.assert_no_process_left();
    // an exiting process loses its command line before it is a zombie: wait for the end
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&pid| pid_alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "{pids:?} still alive after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let second = env.runtime();
    let listed = second.list().await.expect("list");
    let state_of = |id: &InstanceId| {
        listed
            .iter()
            .find(|s| s.id == *id)
            .map(|s| s.state.clone())
            .unwrap_or_else(|| panic!("{id} not listed: {listed:?}"))
    };
    assert_eq!(
        state_of(&exits),
        RunState::Exited {
            code: Some(4),
            oom_killed: false
        },
        "the exit recorded by the first runtime is kept"
    );
    assert_eq!(
        state_of(&killed),
        RunState::Exited {
            code: None,
            oom_killed: false
        },
        "an unwatched end has no known code"
    );
    second.terminate(&exits, GRACE).await.expect("terminate");
    second.terminate(&killed, GRACE).await.expect("terminate");
    assert!(second.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_invalid_and_starts_nothing() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    let env = TestEnv::new();
    let runtime = env.runtime();
    let id = unique_id("missing");
    let result = runtime
        .deploy(&spec(&id, Path::new("/nonexistent/edgeio/kernel.elf")))
        .await;
    let err = assert_refused_and_nothing_left(&env, &runtime, &id, result).await;
    assert_eq!(
        err.to_string(),
        "invalid image \"/nonexistent/edgeio/kernel.elf\": no such file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_are_not_kernels_are_invalid_and_start_nothing() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    let env = TestEnv::new();
    let runtime = env.runtime();

    let text = env.dir.path().join("notes.txt");
    std::fs::write(&text, "not a kernel\n").unwrap();
    let id = unique_id("text");
    let result = runtime.deploy(&spec(&id, &text)).await;
    let err = assert_refused_and_nothing_left(&env, &runtime, &id, result).await;
    assert!(matches!(err, RuntimeError::Invalid { .. }), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("not a kernel: not an ELF file, and no multiboot header in its first 8 KiB"),
        "{err}"
    );

    let headless = kernel(Kernel::NoHeader);
    let id = unique_id("noheader");
    let result = runtime.deploy(&spec(&id, &headless)).await;
    let err = assert_refused_and_nothing_left(&env, &runtime, &id, result).await;
    assert!(
        err.to_string()
            .contains("not a kernel: an ELF file without a multiboot header"),
        "{err}"
    );

    // told it is a virtio image, the runtime lets qemu try, and qemu's refusal is the error
    let id = unique_id("forced");
    let mut forced = spec(&id, &headless);
    forced.labels.insert(LABEL_TARGET.into(), "virtio".into());
    let result = runtime.deploy(&forced).await;
    let err = assert_refused_and_nothing_left(&env, &runtime, &id, result).await;
    assert!(
        err.to_string()
            .contains("qemu-system-x86_64 could not start it: qemu failed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_target_executable_is_refused_with_a_pointer_to_native() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    let env = TestEnv::new();
    let runtime = env.runtime();
    // a dynamically linked program: what a Mirage unix build is
    let program = std::fs::canonicalize("/bin/true").unwrap();
    let id = unique_id("unix");
    let result = runtime.deploy(&spec(&id, &program)).await;
    let err = assert_refused_and_nothing_left(&env, &runtime, &id, result).await;
    assert!(matches!(err, RuntimeError::Unsupported { .. }), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("it is an ordinary program: deploy it with image_runtime: native"),
        "{err}"
    );

    let id = unique_id("unixlabel");
    let mut labelled = spec(&id, &kernel(Kernel::Loop));
    labelled.labels.insert(LABEL_TARGET.into(), "unix".into());
    let result = runtime.deploy(&labelled).await;
    let err = assert_refused_and_nothing_left(&env, &runtime, &id, result).await;
    assert!(err.to_string().contains("image_runtime: native"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_memory_gets_the_default_and_more_than_the_host_has_is_invalid() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    let env = TestEnv::new();
    let runtime = env.runtime();

    let id = unique_id("mem0");
    let status = runtime
        .deploy(&spec(&id, &kernel(Kernel::Loop)))
        .await
        .expect("memory 0 takes the default");
    assert!(
        status.detail.contains("64 MiB, 1 vCPU"),
        "{}",
        status.detail
    );
    let pid = env.processes()[0];
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = String::from_utf8_lossy(&cmdline)
        .split('\0')
        .map(String::from)
        .collect();
    assert!(
        args.windows(4).any(|w| w == ["-m", "64M", "-smp", "1"]),
        "qemu's command line: {args:?}"
    );
    runtime.terminate(&id, GRACE).await.expect("terminate");
    env.assert_no_process_left();

    let id = unique_id("memhuge");
    let mut huge = spec(&id, &kernel(Kernel::Loop));
    let host = edgeio_runtime_mirage::probe::host_memory_bytes().unwrap();
    huge.resources.memory_bytes = host + (1 << 30);
    let result = runtime.deploy(&huge).await;
    let err = assert_refused_and_nothing_left(&env, &runtime, &id, result).await;
    assert!(
        err.to_string()
            .starts_with("invalid resources.memory_bytes"),
        "{err}"
    );
    assert!(
        err.to_string().contains("more than the host's memory"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_environment_and_other_kinds_are_refused_as_unsupported() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    let env = TestEnv::new();
    let runtime = env.runtime();
    let image = kernel(Kernel::Loop);

    let id = unique_id("ports");
    let mut ports = spec(&id, &image);
    ports.ports.push(edgeio_core::job::PortMapping {
        container: 80,
        host: None,
        protocol: Default::default(),
    });
    let result = runtime.deploy(&ports).await;
    let err = assert_refused_and_nothing_left(&env, &runtime, &id, result).await;
    assert!(
        err.to_string()
            .starts_with("published ports is not supported"),
        "{err}"
    );

    let id = unique_id("env");
    let mut with_env = spec(&id, &image);
    with_env.env.insert("A".into(), "b".into());
    let result = runtime.deploy(&with_env).await;
    let err = assert_refused_and_nothing_left(&env, &runtime, &id, result).await;
    assert!(
        err.to_string().contains("pass boot parameters as args"),
        "{err}"
    );

    let id = unique_id("docker");
    let mut docker = spec(&id, &image);
    docker.kind = "docker".into();
    let result = runtime.deploy(&docker).await;
    let err = assert_refused_and_nothing_left(&env, &runtime, &id, result).await;
    assert_eq!(
        err.to_string(),
        "image_runtime docker is not supported by the mirage runtime"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_solo5_image_without_its_tender_is_refused_naming_the_tender() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    let env = TestEnv::new();
    let runtime = MirageRuntime::new(MirageConfig {
        solo5_hvt: "/nonexistent/solo5-hvt".into(),
        solo5_spt: "/nonexistent/solo5-spt".into(),
        ..env.config()
    })
    .unwrap();
    for target in ["hvt", "spt"] {
        let id = unique_id(target);
        let mut solo5 = spec(&id, &kernel(Kernel::Loop));
        solo5.labels.insert(LABEL_TARGET.into(), target.into());
        let result = runtime.deploy(&solo5).await;
        let err = assert_refused_and_nothing_left(&env, &runtime, &id, result).await;
        assert!(matches!(err, RuntimeError::Unsupported { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&format!(
                "/nonexistent/solo5-{target} not found or not executable"
            )),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qemu_that_is_not_up_in_time_is_killed_and_the_deploy_fails() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    let env = TestEnv::new();
    // no qemu answers QMP within a millisecond of being spawned
    let runtime = MirageRuntime::new(MirageConfig {
        start_timeout_ms: 1,
        ..env.config()
    })
    .unwrap();
    let id = unique_id("slow");
    let result = runtime.deploy(&spec(&id, &kernel(Kernel::Loop))).await;
    let err = assert_refused_and_nothing_left(&env, &runtime, &id, result).await;
    assert!(matches!(err, RuntimeError::Unavailable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("did not report instance")
            && err.to_string().contains("it was killed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_finds_qemu_and_says_how_it_runs_guests() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    let env = TestEnv::new();
    let probe = env.runtime().probe().await.unwrap();
    assert!(probe.available, "{}", probe.detail);
    assert_eq!(probe.kind.as_str(), "mirage");
    let version = probe.version.unwrap_or_default();
    assert!(version.starts_with("qemu-system-x86_64 "), "{version}");
    assert!(probe.detail.contains("kvm:"), "{}", probe.detail);
}

// needs nothing installed: it is about nothing being installed
#[tokio::test]
async fn a_runtime_without_tenders_is_unavailable_and_refuses_deploys_saying_why() {
    let env = TestEnv::new();
    let runtime = MirageRuntime::new(MirageConfig {
        qemu: "/nonexistent/qemu-system-x86_64".into(),
        solo5_hvt: "/nonexistent/solo5-hvt".into(),
        solo5_spt: "/nonexistent/solo5-spt".into(),
        ..env.config()
    })
    .unwrap();
    let probe = runtime.probe().await.unwrap();
    assert!(!probe.available);
    assert!(
        probe.detail.starts_with("no usable unikernel tender: /nonexistent/qemu-system-x86_64 not found or not executable"),
        "{}",
        probe.detail
    );
    let id = unique_id("none");
    let result = runtime
        .deploy(&spec(&id, Path::new("/nonexistent/kernel.elf")))
        .await;
    let err = assert_refused_and_nothing_left(&env, &runtime, &id, result).await;
    assert!(matches!(err, RuntimeError::Unavailable { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(
            "mirage runtime unavailable: no usable unikernel tender: /nonexistent/qemu-system-x86_64 not found"
        ),
        "{err}"
    );
}

// KVM is usable on these machines but took about 12 s to boot this kernel (nested
// virtualisation), against 0.1 s under TCG; the deadlines below are generous for that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kvm_forced_on_the_exit_kernel_reports_its_code() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    if let Err(why) = edgeio_runtime_mirage::probe::kvm_usable(Path::new("/dev/kvm")) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let env = TestEnv::new();
    let runtime = MirageRuntime::new(MirageConfig {
        kvm: KvmPolicy::On,
        start_timeout_ms: 120_000,
        ..env.config()
    })
    .unwrap();
    let id = unique_id("kvm");
    let mut events = runtime.events();
    let begun = Instant::now();
    runtime
        .deploy(&spec(&id, &kernel(Kernel::Exit(6))))
        .await
        .expect("deploy");
    let event = tokio::time::timeout(Duration::from_secs(150), async {
        loop {
            let e = events.next().await.unwrap();
            if e.id == id && exited(&e.state) {
                return e;
            }
        }
    })
    .await
    .expect("exit within 150 s");
    eprintln!("kvm: exited after {:?}", begun.elapsed());
    assert_eq!(
        event.state,
        RunState::Exited {
            code: Some(6),
            oom_killed: false
        }
    );
    assert_eq!(log_texts(&runtime, &id).await, [HELLO]);
    let status = runtime.status(&id).await.unwrap();
    assert!(
        status.detail.contains("under qemu-system-x86_64 (kvm)"),
        "{}",
        status.detail
    );
    runtime.terminate(&id, GRACE).await.unwrap();
    env.assert_no_process_left();
}
