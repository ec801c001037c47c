//! Conformance suite for [`Runtime`] implementations.
//!
//! A backend's `tests/conformance.rs` supplies three specs of its own — one that runs until
//! stopped (and prints `log_line`), one that exits with `exit_code`, one that cannot start —
//! and calls [`run_all`]:
//!
//! ```ignore
//! #[tokio::test]
//! async fn docker_runtime_conforms() {
//!     let runtime = DockerRuntime::connect(Default::default()).await.unwrap();
//!     let fixture = RuntimeFixture { runs_until_stopped, exits_with, exit_code: 3, cannot_start,
//!                                    log_line: Some("ready".into()) };
//!     edgeio_core::testing::conformance::runtime::run_all(&runtime, &fixture).await;
//! }
//! ```
//!
//! Each behaviour derives fresh instance ids from the fixture's (`<id>-<behaviour>`), so the
//! behaviours do not see each other's instances. Every wait has a 10 s deadline.

use crate::job::InstanceSpec;
use crate::model::InstanceId;
use crate::runtime::{
    InstanceStatus, LogOptions, RunState, Runtime, RuntimeError, RuntimeEvent, LABEL_INSTANCE,
    LABEL_JOB,
};
use futures::{Stream, StreamExt};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(2);

/// The specs a runtime under test provides.
#[derive(Debug, Clone)]
pub struct RuntimeFixture {
    /// Runs until terminated; prints `log_line` (if given) soon after start.
    pub runs_until_stopped: InstanceSpec,
    /// Exits on its own with `exit_code`.
    pub exits_with: InstanceSpec,
    /// The code `exits_with` exits with (non-zero, so it reads as a failure).
    pub exit_code: i32,
    /// Cannot start (e.g. an image that does not exist).
    pub cannot_start: InstanceSpec,
    /// A line `runs_until_stopped` prints, if the runtime captures output.
    pub log_line: Option<String>,
}

/// Runs every behaviour.
pub async fn run_all(runtime: &dyn Runtime, fixture: &RuntimeFixture) {
    probe_reports_its_kind(runtime).await;
    deploy_then_status_is_running(runtime, fixture).await;
    deploy_of_a_taken_id_is_already_exists(runtime, fixture).await;
    list_finds_deployed_instances_by_label(runtime, fixture).await;
    terminate_removes_the_instance_and_reports_it(runtime, fixture).await;
    unknown_ids_are_not_found(runtime).await;
    exit_code_arrives_as_an_event(runtime, fixture).await;
    failed_start_is_an_error_and_leaves_nothing(runtime, fixture).await;
    logs_show_the_output(runtime, fixture).await;
    every_subscriber_sees_every_event(runtime, fixture).await;
}

/// A copy of `spec` with the instance id `<id>-<suffix>`.
pub fn with_suffix(spec: &InstanceSpec, suffix: &str) -> InstanceSpec {
    let mut spec = spec.clone();
    let mut id = format!("{}-{suffix}", spec.id);
    id.truncate(crate::model::MAX_ID_LEN);
    spec.id = InstanceId::new(id).expect("fixture ids plus a suffix stay valid ids");
    spec
}

async fn cleanup(runtime: &dyn Runtime, id: &InstanceId) {
    let _ = runtime.terminate(id, GRACE).await;
}

async fn wait_status(
    behaviour: &str,
    runtime: &dyn Runtime,
    id: &InstanceId,
    want: impl Fn(&RunState) -> bool,
) -> InstanceStatus {
    let start = tokio::time::Instant::now();
    loop {
        let status = runtime.status(id).await;
        match status {
            Ok(s) if want(&s.state) => return s,
            other if start.elapsed() > DEADLINE => {
                panic!("{behaviour}: instance {id} did not reach the expected state in {DEADLINE:?}; last: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn wait_event(
    behaviour: &str,
    events: &mut (impl Stream<Item = RuntimeEvent> + Unpin),
    id: &InstanceId,
    want: impl Fn(&RunState) -> bool,
) -> RuntimeEvent {
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(event) = events.next().await {
            if event.id == *id && want(&event.state) {
                return Some(event);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(event)) => event,
        Ok(None) => panic!("{behaviour}: the event stream ended before the event for {id}"),
        Err(_) => panic!("{behaviour}: no matching event for {id} within {DEADLINE:?}"),
    }
}

/// `probe` answers with the runtime's own kind and says it is available.
pub async fn probe_reports_its_kind(runtime: &dyn Runtime) {
    let probe = runtime
        .probe()
        .await
        .unwrap_or_else(|e| panic!("probe_reports_its_kind: probe failed: {e}"));
    assert_eq!(probe.kind, runtime.kind(), "probe_reports_its_kind: kind");
    assert!(
        probe.available,
        "probe_reports_its_kind: runtime under test reports unavailable: {}",
        probe.detail
    );
}

/// A deployed instance reaches `Running`.
pub async fn deploy_then_status_is_running(runtime: &dyn Runtime, fixture: &RuntimeFixture) {
    let spec = with_suffix(&fixture.runs_until_stopped, "run");
    let status = runtime
        .deploy(&spec)
        .await
        .unwrap_or_else(|e| panic!("deploy_then_status_is_running: deploy failed: {e}"));
    assert_eq!(status.id, spec.id, "deploy_then_status_is_running: id");
    assert_eq!(
        status.kind,
        runtime.kind(),
        "deploy_then_status_is_running: kind"
    );
    wait_status("deploy_then_status_is_running", runtime, &spec.id, |s| {
        *s == RunState::Running
    })
    .await;
    cleanup(runtime, &spec.id).await;
}

/// Deploying an id that exists is `AlreadyExists` and leaves the first instance running.
pub async fn deploy_of_a_taken_id_is_already_exists(
    runtime: &dyn Runtime,
    fixture: &RuntimeFixture,
) {
    let spec = with_suffix(&fixture.runs_until_stopped, "twice");
    runtime.deploy(&spec).await.unwrap_or_else(|e| {
        panic!("deploy_of_a_taken_id_is_already_exists: first deploy failed: {e}")
    });
    let second = runtime.deploy(&spec).await;
    assert!(
        matches!(second, Err(RuntimeError::AlreadyExists { .. })),
        "deploy_of_a_taken_id_is_already_exists: second deploy gave {second:?}"
    );
    wait_status(
        "deploy_of_a_taken_id_is_already_exists",
        runtime,
        &spec.id,
        |s| *s == RunState::Running,
    )
    .await;
    cleanup(runtime, &spec.id).await;
}

/// `list` finds what was deployed, labelled with the instance and job ids (adoption).
pub async fn list_finds_deployed_instances_by_label(
    runtime: &dyn Runtime,
    fixture: &RuntimeFixture,
) {
    let spec = with_suffix(&fixture.runs_until_stopped, "list");
    runtime
        .deploy(&spec)
        .await
        .unwrap_or_else(|e| panic!("list_finds_deployed_instances_by_label: deploy: {e}"));
    let listed = runtime
        .list()
        .await
        .unwrap_or_else(|e| panic!("list_finds_deployed_instances_by_label: list: {e}"));
    let found = listed.iter().find(|s| s.id == spec.id).unwrap_or_else(|| {
        panic!(
            "list_finds_deployed_instances_by_label: {} not in list",
            spec.id
        )
    });
    assert_eq!(
        found.labels.get(LABEL_INSTANCE).map(String::as_str),
        Some(spec.id.as_str()),
        "list_finds_deployed_instances_by_label: instance label"
    );
    assert_eq!(
        found.labels.get(LABEL_JOB).map(String::as_str),
        Some(spec.job.as_str()),
        "list_finds_deployed_instances_by_label: job label"
    );
    cleanup(runtime, &spec.id).await;
}

/// `terminate` removes the instance (status `NotFound`, gone from `list`) and emits an event.
pub async fn terminate_removes_the_instance_and_reports_it(
    runtime: &dyn Runtime,
    fixture: &RuntimeFixture,
) {
    const B: &str = "terminate_removes_the_instance_and_reports_it";
    let spec = with_suffix(&fixture.runs_until_stopped, "term");
    let mut events = runtime.events();
    runtime
        .deploy(&spec)
        .await
        .unwrap_or_else(|e| panic!("{B}: deploy: {e}"));
    wait_status(B, runtime, &spec.id, |s| *s == RunState::Running).await;
    runtime
        .terminate(&spec.id, GRACE)
        .await
        .unwrap_or_else(|e| panic!("{B}: terminate: {e}"));
    wait_event(B, &mut events, &spec.id, |s| {
        matches!(s, RunState::Exited { .. } | RunState::Removed)
    })
    .await;
    let status = runtime.status(&spec.id).await;
    assert!(
        matches!(status, Err(RuntimeError::NotFound { .. })),
        "{B}: status after terminate gave {status:?}"
    );
    let listed = runtime
        .list()
        .await
        .unwrap_or_else(|e| panic!("{B}: list: {e}"));
    assert!(
        listed.iter().all(|s| s.id != spec.id),
        "{B}: terminated instance still listed"
    );
}

/// Status, terminate and logs of an id the runtime never saw are `NotFound`.
pub async fn unknown_ids_are_not_found(runtime: &dyn Runtime) {
    const B: &str = "unknown_ids_are_not_found";
    let id = InstanceId::random();
    let status = runtime.status(&id).await;
    assert!(
        matches!(status, Err(RuntimeError::NotFound { .. })),
        "{B}: status gave {status:?}"
    );
    let term = runtime.terminate(&id, GRACE).await;
    assert!(
        matches!(term, Err(RuntimeError::NotFound { .. })),
        "{B}: terminate gave {term:?}"
    );
    let logs = runtime.logs(&id, LogOptions::default()).await;
    assert!(
        matches!(logs, Err(RuntimeError::NotFound { .. })),
        "{B}: logs gave {:?}",
        logs.err()
    );
}

/// An instance that exits on its own is reported by the event stream with its exit code,
/// and its status then shows it.
pub async fn exit_code_arrives_as_an_event(runtime: &dyn Runtime, fixture: &RuntimeFixture) {
    const B: &str = "exit_code_arrives_as_an_event";
    let spec = with_suffix(&fixture.exits_with, "exit");
    let want = fixture.exit_code;
    let mut events = runtime.events();
    runtime
        .deploy(&spec)
        .await
        .unwrap_or_else(|e| panic!("{B}: deploy: {e}"));
    let event = wait_event(B, &mut events, &spec.id, |s| {
        matches!(s, RunState::Exited { .. })
    })
    .await;
    assert_eq!(
        event.state,
        RunState::Exited {
            code: Some(want),
            oom_killed: false
        },
        "{B}: exit event"
    );
    let status = runtime.status(&spec.id).await;
    assert!(
        matches!(&status, Ok(s) if matches!(s.state, RunState::Exited { code: Some(c), .. } if c == want)),
        "{B}: status after exit gave {status:?}"
    );
    cleanup(runtime, &spec.id).await;
}

/// A spec that cannot start is an error, and nothing is left behind under its id.
pub async fn failed_start_is_an_error_and_leaves_nothing(
    runtime: &dyn Runtime,
    fixture: &RuntimeFixture,
) {
    const B: &str = "failed_start_is_an_error_and_leaves_nothing";
    let spec = with_suffix(&fixture.cannot_start, "nostart");
    let result = runtime.deploy(&spec).await;
    let err = match result {
        Err(e) => e,
        Ok(s) => {
            cleanup(runtime, &spec.id).await;
            panic!("{B}: deploy of a spec that cannot start succeeded: {s:?}")
        }
    };
    assert!(!err.to_string().is_empty(), "{B}: empty error text");
    let status = runtime.status(&spec.id).await;
    assert!(
        matches!(status, Err(RuntimeError::NotFound { .. })),
        "{B}: something was left behind: {status:?}"
    );
}

/// The output of an instance appears in `logs`, with `tail` and with `follow`.
pub async fn logs_show_the_output(runtime: &dyn Runtime, fixture: &RuntimeFixture) {
    const B: &str = "logs_show_the_output";
    let Some(line) = fixture.log_line.clone() else {
        return;
    };
    let spec = with_suffix(&fixture.runs_until_stopped, "logs");
    runtime
        .deploy(&spec)
        .await
        .unwrap_or_else(|e| panic!("{B}: deploy: {e}"));
    let start = tokio::time::Instant::now();
    loop {
        let stream = runtime
            .logs(&spec.id, LogOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{B}: logs: {e}"));
        let lines: Vec<_> = stream.collect().await;
        if lines
            .iter()
            .any(|l| matches!(l, Ok(l) if l.text.contains(&line)))
        {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{B}: {line:?} not in the log within {DEADLINE:?}: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tail: Vec<_> = runtime
        .logs(
            &spec.id,
            LogOptions {
                tail: Some(1),
                follow: false,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{B}: logs tail: {e}"))
        .collect()
        .await;
    assert!(tail.len() <= 1, "{B}: tail 1 returned {} lines", tail.len());
    let mut follow = runtime
        .logs(
            &spec.id,
            LogOptions {
                tail: None,
                follow: true,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{B}: logs follow: {e}"));
    let first = tokio::time::timeout(DEADLINE, async {
        while let Some(item) = follow.next().await {
            if matches!(&item, Ok(l) if l.text.contains(&line)) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(first, Ok(true), "{B}: follow did not yield {line:?}");
    drop(follow);
    cleanup(runtime, &spec.id).await;
}

/// Two subscribers both see an instance's exit.
pub async fn every_subscriber_sees_every_event(runtime: &dyn Runtime, fixture: &RuntimeFixture) {
    const B: &str = "every_subscriber_sees_every_event";
    let spec = with_suffix(&fixture.exits_with, "subs");
    let mut one = runtime.events();
    let mut two = runtime.events();
    runtime
        .deploy(&spec)
        .await
        .unwrap_or_else(|e| panic!("{B}: deploy: {e}"));
    let exited = |s: &RunState| matches!(s, RunState::Exited { .. });
    wait_event(B, &mut one, &spec.id, exited).await;
    wait_event(B, &mut two, &spec.id, exited).await;
    cleanup(runtime, &spec.id).await;
}
