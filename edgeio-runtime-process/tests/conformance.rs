//! The native process runtime passes the Runtime conformance suite with `/bin/sh` programs.

mod common;

use common::{sh, TestEnv, RUNS_UNTIL_STOPPED};
use edgeio_core::model::InstanceId;
use edgeio_core::testing::conformance::runtime::{run_all, RuntimeFixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_runtime_conforms() {
    let env = TestEnv::new();
    let runtime = env.runtime();
    let id = InstanceId::new(format!("conf-{}", std::process::id())).unwrap();
    let mut cannot_start = sh(&id, "exit 0");
    // allowed is /bin/sh only
    cannot_start.image = "/bin/true".into();
    let fixture = RuntimeFixture {
        runs_until_stopped: sh(&id, RUNS_UNTIL_STOPPED),
        exits_with: sh(&id, "exit 3"),
        exit_code: 3,
        cannot_start,
        log_line: Some("ready".into()),
    };
    run_all(&runtime, &fixture).await;
    let left = env.processes();
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
