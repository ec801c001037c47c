//! The native process runtime with real OS processes: the allow list, exits seen from
//! outside, process groups, capped logs, adoption by a fresh runtime, tail and follow.

mod common;

use common::*;
use edgeio_core::runtime::{
    LogOptions, LogSource, RunState, Runtime, RuntimeError, LABEL_INSTANCE, LABEL_JOB,
};
use edgeio_runtime_process::allow::NOT_ALLOWED;
use edgeio_runtime_process::{ProcessConfig, ProcessRuntime};
use futures::StreamExt;
use std::path::PathBuf;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_not_allowed_is_refused_and_nothing_starts() {
    let env = TestEnv::new();
    let runtime = ProcessRuntime::new(ProcessConfig {
        allow: vec![],
        ..env.config()
    })
    .unwrap();
    let id = unique_id("denied");
    for image in ["/bin/sh", "sh"] {
        let mut spec = sh(&id, "touch /tmp/edgeio-should-not-exist; sleep 100");
        spec.image = image.into();
        match runtime.deploy(&spec).await {
            Err(RuntimeError::Invalid { field, value, rule }) => {
                assert_eq!(field, "image");
                assert_eq!(value, image);
                assert_eq!(rule, NOT_ALLOWED);
            }
            other => panic!("deploy of {image} gave {other:?}"),
        }
    }
    assert!(matches!(
        runtime.status(&id).await,
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(runtime.list().await.unwrap().is_empty());
    assert!(!env.instance_dir(&id).exists(), "no folder is created");
    assert!(env.processes().is_empty(), "no process is started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_from_outside_is_an_exit_event_with_code_137() {
    let env = TestEnv::new();
    let runtime = env.runtime();
    let id = unique_id("killed");
    let mut events = runtime.events();
    runtime.deploy(&sh(&id, RUNS_UNTIL_STOPPED)).await.unwrap();
    let pid = recorded_pid(&env, &id);
    kill9(pid);
    let event = event_for(&mut events, &id, exited).await;
    assert_eq!(
        event.state,
        RunState::Exited {
            code: Some(137),
            oom_killed: false
        }
    );
    assert!(
        event.reason.contains("killed by signal 9 (SIGKILL)"),
        "{}",
        event.reason
    );
    let status = runtime.status(&id).await.unwrap();
    assert_eq!(status.state, event.state);
    runtime
        .terminate(&id, Duration::from_secs(1))
        .await
        .unwrap();
}

/// Starts a shell that leaves a `sleep 1000` in the background and prints its pid.
async fn deploy_with_grandchild(
    runtime: &ProcessRuntime,
    env: &TestEnv,
    id: &edgeio_core::model::InstanceId,
    trap: &str,
) -> (u32, u32) {
    let script = format!(
        "sleep 1000 & echo grandchild $!; trap {trap} TERM; echo ready; while :; do sleep 0.1; done"
    );
    runtime.deploy(&sh(id, &script)).await.unwrap();
    let line = wait_log_line(runtime, id, |l| l.starts_with("grandchild ")).await;
    wait_log_line(runtime, id, |l| l == "ready").await;
    let grandchild: u32 = line["grandchild ".len()..].parse().unwrap();
    let leader = recorded_pid(env, id);
    assert!(pid_alive(leader) && pid_alive(grandchild));
    (leader, grandchild)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_kills_the_whole_process_group_and_removes_the_files() {
    let env = TestEnv::new();
    let runtime = env.runtime();
    let id = unique_id("group");
    let (leader, grandchild) = deploy_with_grandchild(&runtime, &env, &id, r#""exit 0""#).await;
    let mut events = runtime.events();
    runtime
        .terminate(&id, Duration::from_secs(5))
        .await
        .unwrap();
    wait_gone(leader).await;
    wait_gone(grandchild).await;
    let event = event_for(&mut events, &id, exited).await;
    assert!(
        event
            .reason
            .starts_with("terminated (SIGTERM to its process group)"),
        "{}",
        event.reason
    );
    event_for(&mut events, &id, |s| *s == RunState::Removed).await;
    assert!(
        !env.instance_dir(&id).exists(),
        "the instance's files are removed"
    );
    assert!(matches!(
        runtime.terminate(&id, Duration::ZERO).await,
        Err(RuntimeError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_ignoring_sigterm_is_killed_with_its_group_after_the_grace_period() {
    let env = TestEnv::new();
    let runtime = env.runtime();
    let id = unique_id("stubborn");
    let (leader, grandchild) = deploy_with_grandchild(&runtime, &env, &id, r#""""#).await;
    let mut events = runtime.events();
    let started = std::time::Instant::now();
    runtime
        .terminate(&id, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the grace period is waited"
    );
    wait_gone(leader).await;
    wait_gone(grandchild).await;
    let event = event_for(&mut events, &id, exited).await;
    assert_eq!(
        event.state,
        RunState::Exited {
            code: Some(137),
            oom_killed: false
        }
    );
    assert!(
        event
            .reason
            .contains("SIGKILL to its process group after the grace period"),
        "{}",
        event.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_program_keeps_its_log_files_bounded() {
    let env = TestEnv::new();
    let cap = 4096;
    let runtime = ProcessRuntime::new(ProcessConfig {
        log_cap_bytes: cap,
        ..env.config()
    })
    .unwrap();
    let id = unique_id("chatty");
    let mut events = runtime.events();
    // about 120 KiB, thirty times the cap
    let script = r#"i=0; while [ $i -lt 3000 ]; do echo "line $i of a chatty program"; i=$((i+1)); done; echo last"#;
    runtime.deploy(&sh(&id, script)).await.unwrap();
    let event = event_for(&mut events, &id, exited).await;
    assert_eq!(
        event.state,
        RunState::Exited {
            code: Some(0),
            oom_killed: false
        }
    );
    let dir = env.instance_dir(&id);
    for name in ["stdout.log", "stdout.log.1"] {
        let len = std::fs::metadata(dir.join(name)).unwrap().len();
        assert!(
            len <= cap,
            "{name} holds {len} bytes, over the cap of {cap}"
        );
        assert!(len > 0, "{name} is empty");
    }
    assert_eq!(log_texts(&runtime, &id, Some(1)).await, ["last"]);
    let all = log_texts(&runtime, &id, None).await;
    assert!(
        all.len() < 300,
        "only about two caps' worth is kept: {} lines",
        all.len()
    );
    runtime
        .terminate(&id, Duration::from_secs(1))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_runtime_adopts_a_running_process_serves_its_logs_and_terminates_it() {
    let env = TestEnv::new();
    let id = unique_id("adopted");
    let script = r#"echo ready; trap "exit 0" TERM; while :; do echo tick; sleep 0.1; done"#;
    let pid = {
        let first = env.runtime();
        first.deploy(&sh(&id, script)).await.unwrap();
        wait_log_line(&first, &id, |l| l == "ready").await;
        recorded_pid(&env, &id)
        // the first runtime is dropped here, as a worker restart would
    };
    assert!(pid_alive(pid), "the program outlives its runtime");

    let second = env.runtime();
    let listed = second.list().await.unwrap();
    let found = listed
        .iter()
        .find(|s| s.id == id)
        .expect("the instance is listed");
    assert_eq!(found.state, RunState::Running);
    assert_eq!(
        found.labels.get(LABEL_INSTANCE).map(String::as_str),
        Some(id.as_str())
    );
    assert_eq!(
        found.labels.get(LABEL_JOB).map(String::as_str),
        Some("process-test")
    );
    assert!(
        found.detail.contains(&format!("pid {pid}")),
        "{}",
        found.detail
    );

    // the output written before the restart is there, and new output keeps coming
    let mut follow = second
        .logs(
            &id,
            LogOptions {
                tail: None,
                follow: true,
            },
        )
        .await
        .unwrap();
    let mut seen_ready = false;
    let mut ticks_after_ready = 0;
    tokio::time::timeout(DEADLINE, async {
        while let Some(line) = follow.next().await {
            match line.unwrap().text.as_str() {
                "ready" => seen_ready = true,
                "tick" if seen_ready => ticks_after_ready += 1,
                _ => {}
            }
            if ticks_after_ready > 30 {
                break;
            }
        }
    })
    .await
    .expect("ticks keep coming after the adoption");
    drop(follow);

    let mut events = second.events();
    second.terminate(&id, Duration::from_secs(5)).await.unwrap();
    wait_gone(pid).await;
    event_for(&mut events, &id, |s| *s == RunState::Removed).await;
    assert!(second.list().await.unwrap().iter().all(|s| s.id != id));
    assert!(!env.instance_dir(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_ended_while_no_runtime_watched_is_listed_as_exited_without_a_code() {
    let env = TestEnv::new();
    let id = unique_id("orphan");
    let pid = {
        let first = env.runtime();
        first.deploy(&sh(&id, RUNS_UNTIL_STOPPED)).await.unwrap();
        recorded_pid(&env, &id)
    };
    kill9(pid);
    wait_gone(pid).await;
    let second = env.runtime();
    let status = second.status(&id).await.unwrap();
    assert_eq!(
        status.state,
        RunState::Exited {
            code: None,
            oom_killed: false
        }
    );
    assert!(
        status.detail.contains("its exit code is unknown"),
        "{}",
        status.detail
    );
    second.terminate(&id, Duration::from_secs(1)).await.unwrap();
    assert!(!env.instance_dir(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_tail_and_follow_until_the_program_ends() {
    let env = TestEnv::new();
    let runtime = env.runtime();
    let id = unique_id("logs");
    let script = "echo one; echo oops >&2; echo two; sleep 0.3; echo three; printf unfinished";
    let mut follow = {
        runtime.deploy(&sh(&id, script)).await.unwrap();
        runtime
            .logs(
                &id,
                LogOptions {
                    tail: None,
                    follow: true,
                },
            )
            .await
            .unwrap()
    };
    let followed: Vec<(LogSource, String)> = tokio::time::timeout(DEADLINE, async {
        let mut lines = Vec::new();
        while let Some(line) = follow.next().await {
            let line = line.unwrap();
            lines.push((line.source, line.text));
        }
        lines
    })
    .await
    .expect("follow ends once the program has ended");
    let stdout: Vec<&str> = followed
        .iter()
        .filter(|(s, _)| *s == LogSource::Stdout)
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(stdout, ["one", "two", "three", "unfinished"]);
    assert!(
        followed.contains(&(LogSource::Stderr, "oops".into())),
        "{followed:?}"
    );

    // after the end, stdout comes first, then stderr
    assert_eq!(
        log_texts(&runtime, &id, None).await,
        ["one", "two", "three", "unfinished", "oops"]
    );
    assert_eq!(
        log_texts(&runtime, &id, Some(2)).await,
        ["unfinished", "oops"]
    );
    runtime
        .terminate(&id, Duration::from_secs(1))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn args_and_env_reach_the_program_in_a_minimal_environment() {
    let env = TestEnv::new();
    let runtime = env.runtime();
    let id = unique_id("env");
    let mut spec = sh(
        &id,
        r#"echo "$GREETING $1"; echo "home=${HOME:-unset}"; echo "path=$PATH""#,
    );
    spec.args.extend(["sh".to_string(), "world".to_string()]);
    spec.env.insert("GREETING".into(), "hello".into());
    let mut events = runtime.events();
    runtime.deploy(&spec).await.unwrap();
    event_for(&mut events, &id, exited).await;
    assert_eq!(
        log_texts(&runtime, &id, None).await,
        [
            "hello world".to_string(),
            "home=unset".into(),
            format!("path={}", edgeio_runtime_process::DEFAULT_PATH)
        ]
    );
    runtime
        .terminate(&id, Duration::from_secs(1))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_command_name_resolves_on_path_and_the_status_tells_about_limits() {
    let env = TestEnv::new();
    let runtime = env.runtime();
    let id = unique_id("bare");
    let mut spec = sh(&id, RUNS_UNTIL_STOPPED);
    spec.image = "sh".into();
    spec.resources.memory_bytes = 64 << 20;
    let status = runtime.deploy(&spec).await.unwrap();
    assert_eq!(status.state, RunState::Running);
    let sh = std::fs::canonicalize(PathBuf::from("/bin/sh")).unwrap();
    assert!(
        status.detail.starts_with(&sh.display().to_string()),
        "{}",
        status.detail
    );
    if !runtime.limits().enforced() {
        assert!(
            status.detail.contains("limits not enforced: "),
            "{}",
            status.detail
        );
    }
    runtime
        .terminate(&id, Duration::from_secs(1))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_after_the_leader_exited_kills_what_it_left_in_its_group() {
    let env = TestEnv::new();
    let runtime = env.runtime();
    let id = unique_id("leftover");
    let mut events = runtime.events();
    runtime
        .deploy(&sh(&id, "sleep 1000 & echo grandchild $!; exit 0"))
        .await
        .unwrap();
    event_for(&mut events, &id, exited).await;
    let line = wait_log_line(&runtime, &id, |l| l.starts_with("grandchild ")).await;
    let grandchild: u32 = line["grandchild ".len()..].parse().unwrap();
    assert!(
        pid_alive(grandchild),
        "the background child outlives its leader"
    );
    runtime
        .terminate(&id, Duration::from_secs(1))
        .await
        .unwrap();
    wait_gone(grandchild).await;
    assert!(!env.instance_dir(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_this_runtime_cannot_honour_are_refused_before_anything_starts() {
    let env = TestEnv::new();
    let runtime = env.runtime();
    let id = unique_id("unsupported");
    let mut docker = sh(&id, RUNS_UNTIL_STOPPED);
    docker.kind = "docker".into();
    let mut mapped = sh(&id, RUNS_UNTIL_STOPPED);
    mapped.ports = vec![serde_json::from_str(r#"{"container": 80, "host": 8080}"#).unwrap()];
    let mut gpu = sh(&id, RUNS_UNTIL_STOPPED);
    gpu.resources.gpus = 1;
    for spec in [docker, mapped, gpu] {
        let result = runtime.deploy(&spec).await;
        assert!(
            matches!(result, Err(RuntimeError::Unsupported { .. })),
            "{result:?}"
        );
    }
    assert!(!env.instance_dir(&id).exists());
    assert!(env.processes().is_empty());
    // an unmapped port is fine: the program binds it itself
    let mut unmapped = sh(&id, RUNS_UNTIL_STOPPED);
    unmapped.ports = vec![serde_json::from_str(r#"{"container": 8080}"#).unwrap()];
    runtime.deploy(&unmapped).await.unwrap();
    runtime
        .terminate(&id, Duration::from_secs(1))
        .await
        .unwrap();
}
