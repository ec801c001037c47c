//! A fresh runtime over the same engine (as after a worker restart) adopts what is there.

mod support;

use edgeio_core::model::JobId;
use edgeio_core::runtime::{RunState, Runtime, LABEL_INSTANCE, LABEL_JOB};
use edgeio_runtime_docker::LABEL_NODE;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_runtime_adopts_running_and_exited_containers_through_list() {
    if !edgeio_core::testing::require::docker() {
        return;
    }
    support::ensure_image();
    let job = JobId::new(support::unique("adopt")).unwrap();
    let _cleanup = support::Cleanup::job(&job);
    let running = support::long_running(&support::unique("adopt-run"), &job);
    let exited = support::spec(
        &support::unique("adopt-exit"),
        &job,
        &["sh", "-c", "exit 3"],
    );
    {
        let before = support::runtime();
        before.deploy(&running).await.unwrap();
        before.deploy(&exited).await.unwrap();
        // the worker "restarts": this runtime object and its event reader go away
    }

    let after = support::runtime();
    let start = Instant::now();
    let listed = loop {
        let listed: Vec<_> = after
            .list()
            .await
            .unwrap()
            .into_iter()
            .filter(|s| s.labels.get(LABEL_JOB) == Some(&job.to_string()))
            .collect();
        let exit_seen = listed
            .iter()
            .any(|s| s.id == exited.id && matches!(s.state, RunState::Exited { .. }));
        if exit_seen || start.elapsed() > Duration::from_secs(10) {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(listed.len(), 2, "{listed:?}");
    let run = listed.iter().find(|s| s.id == running.id).unwrap();
    assert_eq!(run.state, RunState::Running);
    assert_eq!(run.labels[LABEL_INSTANCE], running.id.as_str());
    assert_eq!(run.labels[LABEL_NODE], support::NODE);
    let exit = listed.iter().find(|s| s.id == exited.id).unwrap();
    assert_eq!(
        exit.state,
        RunState::Exited {
            code: Some(3),
            oom_killed: false
        }
    );

    // adopted, not started again: still exactly the two containers
    assert_eq!(support::containers_of(&job).len(), 2);
    after
        .terminate(&running.id, Duration::from_secs(5))
        .await
        .unwrap();
    after.terminate(&exited.id, Duration::ZERO).await.unwrap();
    assert!(support::containers_of(&job).is_empty());
}
