//! The fake runtime passes the runtime conformance suite, and its test controls work.
#![cfg(feature = "testing")]

use edgeio_core::model::InstanceId;
use edgeio_core::runtime::{RunState, Runtime};
use edgeio_core::testing::conformance::runtime::{run_all, RuntimeFixture};
use edgeio_core::testing::FakeRuntime;
use futures::StreamExt;
use std::time::Duration;

fn fixture(runtime: &FakeRuntime) -> RuntimeFixture {
    let mut runs = runtime.spec("conf", "fake:run");
    runs.args = vec!["ready".into()];
    RuntimeFixture {
        runs_until_stopped: runs,
        exits_with: runtime.spec("conf", "fake:exit:3"),
        exit_code: 3,
        cannot_start: runtime.spec("conf", "fake:fail"),
        log_line: Some("ready".into()),
    }
}

#[tokio::test]
async fn fake_runtime_conforms() {
    let runtime = FakeRuntime::new();
    run_all(&runtime, &fixture(&runtime)).await;
}

#[tokio::test]
async fn oom_kill_and_external_removal_are_events() {
    let runtime = FakeRuntime::new();
    let mut events = runtime.events();
    let spec = runtime.spec("victim", "fake:run");
    runtime.deploy(&spec).await.unwrap();
    runtime.oom_kill(&spec.id).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("event within 5 s")
            .expect("stream open");
        seen.push(e.state);
    }
    assert_eq!(
        seen[1],
        RunState::Exited {
            code: Some(137),
            oom_killed: true
        }
    );
    runtime.remove_externally(&spec.id).unwrap();
    let e = events.next().await.unwrap();
    assert_eq!(e.state, RunState::Removed);
    assert!(runtime.status(&spec.id).await.is_err());
}

#[tokio::test]
async fn an_unavailable_fake_refuses_deploys_and_says_so() {
    let runtime = FakeRuntime::new();
    runtime.set_available(false);
    let probe = runtime.probe().await.unwrap();
    assert!(!probe.available);
    let err = runtime
        .deploy(&runtime.spec("x", "fake:run"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unavailable"), "{err}");
    assert_eq!(runtime.deploy_count(), 0);
}

#[tokio::test]
async fn a_spec_of_another_kind_is_unsupported() {
    let runtime = FakeRuntime::new();
    let mut spec = runtime.spec("x", "fake:run");
    spec.kind = "docker".into();
    let err = runtime.deploy(&spec).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "image_runtime docker is not supported by the native runtime"
    );
    assert!(runtime
        .status(&InstanceId::new("x").unwrap())
        .await
        .is_err());
}
