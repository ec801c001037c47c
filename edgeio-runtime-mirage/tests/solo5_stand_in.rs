//! The Solo5 path (spawn, console from standard output, exit code passed through, SIGTERM
//! on terminate) with a shell script standing in for `solo5-spt`: Solo5 is not packaged in
//! Debian, so the real tenders are covered by the command-line unit tests only.

mod common;

use common::{event_for, exited, spec, unique_id, TestEnv};
use edgeio_core::runtime::{LogOptions, RunState, Runtime, RuntimeError};
use edgeio_runtime_mirage::image::LABEL_TARGET;
use edgeio_runtime_mirage::{MirageConfig, MirageRuntime};
use futures::StreamExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

/// A stand-in tender: prints its arguments, then follows `behaviour` (`exit:N`, `fail`, `loop`)
/// read from the image file.
fn stand_in(env: &TestEnv) -> PathBuf {
    let path = env.dir.path().join("solo5-spt");
    std::fs::write(
        &path,
        r#"#!/bin/sh
echo "tender args: $*"
image=""
for a in "$@"; do [ -z "$seen" ] || { image="$a"; break; }; [ "$a" = "--" ] && seen=1; done
case "$(cat "$image")" in
  exit:*) b="$(cat "$image")"; exit "${b#exit:}" ;;
  fail) echo "solo5-spt: $image: Invalid or unsupported executable" >&2; exit 1 ;;
  loop) while :; do sleep 0.1; done ;;
esac
"#,
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn runtime(env: &TestEnv) -> MirageRuntime {
    MirageRuntime::new(MirageConfig {
        qemu: "/nonexistent/qemu".into(),
        solo5_hvt: "/nonexistent/solo5-hvt".into(),
        solo5_spt: stand_in(env),
        ..env.config()
    })
    .unwrap()
}

fn image(env: &TestEnv, name: &str, behaviour: &str) -> PathBuf {
    let path = env.dir.path().join(name);
    std::fs::write(&path, behaviour).unwrap();
    path
}

async fn texts(runtime: &MirageRuntime, id: &edgeio_core::model::InstanceId) -> Vec<String> {
    runtime
        .logs(id, LogOptions::default())
        .await
        .unwrap()
        .map(|l| l.unwrap().text)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stand_in_spt_tender_gets_its_command_line_and_passes_the_exit_code_through() {
    let env = TestEnv::new();
    let runtime = runtime(&env);
    let id = unique_id("spt-exit");
    let mut s = spec(&id, &image(&env, "exit.spt", "exit:3"));
    s.labels.insert(LABEL_TARGET.into(), "spt".into());
    s.args = vec!["--hello=world".into()];
    s.resources.memory_bytes = 32 << 20;
    let mut events = runtime.events();
    runtime.deploy(&s).await.expect("deploy");
    let event = event_for(&mut events, &id, exited).await;
    assert_eq!(
        event.state,
        RunState::Exited {
            code: Some(3),
            oom_killed: false
        }
    );
    assert_eq!(
        texts(&runtime, &id).await,
        [format!(
            "tender args: --mem=32 -- {} --hello=world",
            s.image
        )]
    );
    runtime
        .terminate(&id, Duration::from_secs(2))
        .await
        .unwrap();
    env.assert_no_process_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stand_in_tender_that_refuses_the_image_fails_the_deploy_with_its_message() {
    let env = TestEnv::new();
    let runtime = runtime(&env);
    let id = unique_id("spt-fail");
    let mut s = spec(&id, &image(&env, "bad.spt", "fail"));
    s.labels.insert(LABEL_TARGET.into(), "spt".into());
    let err = runtime.deploy(&s).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Invalid { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("Invalid or unsupported executable"),
        "{err}"
    );
    assert!(matches!(
        runtime.status(&id).await,
        Err(RuntimeError::NotFound { .. })
    ));
    env.assert_no_process_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_stand_in_tender_is_stopped_with_sigterm_and_solo5_gets_one_vcpu() {
    let env = TestEnv::new();
    let runtime = runtime(&env);
    let id = unique_id("spt-loop");
    let mut s = spec(&id, &image(&env, "loop.spt", "loop"));
    s.labels.insert(LABEL_TARGET.into(), "spt".into());
    let status = runtime.deploy(&s).await.expect("deploy");
    assert_eq!(status.state, RunState::Running);
    let mut events = runtime.events();
    runtime
        .terminate(&id, Duration::from_secs(5))
        .await
        .unwrap();
    let event = event_for(&mut events, &id, exited).await;
    assert!(
        event.reason.starts_with("terminated (SIGTERM)"),
        "{}",
        event.reason
    );
    env.assert_no_process_left();

    let id = unique_id("spt-cpus");
    let mut two = spec(&id, &image(&env, "loop2.spt", "loop"));
    two.labels.insert(LABEL_TARGET.into(), "spt".into());
    two.resources.cpu_millis = 1500;
    let err = runtime.deploy(&two).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid resources.cpu_millis \"1500\": solo5 tenders run one vCPU: ask for at most 1000 millicores"
    );
}
