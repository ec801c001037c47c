//! State changes made outside edgeio arrive on the event stream, pushed by the engine.

mod support;

use edgeio_core::model::{InstanceId, JobId};
use edgeio_core::runtime::{RunState, Runtime, RuntimeError, RuntimeEvent};
use futures::{Stream, StreamExt};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

async fn next_event(
    events: &mut (impl Stream<Item = RuntimeEvent> + Unpin),
    id: &InstanceId,
    want: impl Fn(&RunState) -> bool,
) -> RuntimeEvent {
    tokio::time::timeout(DEADLINE, async {
        while let Some(event) = events.next().await {
            if event.id == *id && want(&event.state) {
                return event;
            }
        }
        panic!("the event stream ended before the event for {id}")
    })
    .await
    .unwrap_or_else(|_| panic!("no matching event for {id} within {DEADLINE:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_killed_from_outside_is_reported_by_the_event_stream() {
    if !edgeio_core::testing::require::docker() {
        return;
    }
    support::ensure_image();
    let job = JobId::new(support::unique("kill")).unwrap();
    let _cleanup = support::Cleanup::job(&job);
    let runtime = support::runtime();
    let spec = support::long_running(&support::unique("kill"), &job);
    let mut events = runtime.events();
    runtime.deploy(&spec).await.unwrap();
    next_event(&mut events, &spec.id, |s| *s == RunState::Running).await;

    support::docker_ok(&["kill", &runtime.container_name(&spec.id)]);
    let exit = next_event(&mut events, &spec.id, |s| {
        matches!(s, RunState::Exited { .. })
    })
    .await;
    assert_eq!(
        exit.state,
        RunState::Exited {
            code: Some(137),
            oom_killed: false
        }
    );
    assert_eq!(exit.reason, "exited with code 137");
    runtime.terminate(&spec.id, Duration::ZERO).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_over_its_memory_limit_is_reported_as_oom_killed() {
    if !edgeio_core::testing::require::docker() {
        return;
    }
    support::ensure_image();
    let job = JobId::new(support::unique("oom")).unwrap();
    let _cleanup = support::Cleanup::job(&job);
    let runtime = support::runtime();
    // one read(2) into a 64 MiB buffer: the kernel faults the pages in during the copy, so
    // the cgroup hits its limit without anything to reclaim and OOM-kills at once. (A
    // process growing its heap step by step, like `head -c 100m /dev/zero | tail`, makes
    // cgroup v1 evict and re-read busybox's own pages first, which took up to 24 s here.)
    let mut spec = support::spec(
        &support::unique("oom"),
        &job,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
    );
    spec.resources.memory_bytes = 16 << 20;
    let mut events = runtime.events();
    runtime.deploy(&spec).await.unwrap();
    let exit = next_event(&mut events, &spec.id, |s| {
        matches!(s, RunState::Exited { .. })
    })
    .await;
    assert!(
        matches!(
            exit.state,
            RunState::Exited {
                oom_killed: true,
                ..
            }
        ),
        "{exit:?}"
    );
    assert!(exit.reason.contains("out of memory"), "{}", exit.reason);
    let status = runtime.status(&spec.id).await.unwrap();
    assert!(
        matches!(
            status.state,
            RunState::Exited {
                oom_killed: true,
                ..
            }
        ),
        "{status:?}"
    );
    runtime.terminate(&spec.id, Duration::ZERO).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_removed_from_outside_is_reported_as_removed() {
    if !edgeio_core::testing::require::docker() {
        return;
    }
    support::ensure_image();
    let job = JobId::new(support::unique("rm")).unwrap();
    let _cleanup = support::Cleanup::job(&job);
    let runtime = support::runtime();
    let spec = support::long_running(&support::unique("rm"), &job);
    let mut events = runtime.events();
    runtime.deploy(&spec).await.unwrap();
    support::docker_ok(&["rm", "-f", &runtime.container_name(&spec.id)]);
    next_event(&mut events, &spec.id, |s| *s == RunState::Removed).await;
    assert!(matches!(
        runtime.status(&spec.id).await,
        Err(RuntimeError::NotFound { .. })
    ));
}
