//! The Runtime conformance suite of edgeio-core against a real Docker Engine.

mod support;

use edgeio_core::model::JobId;
use edgeio_core::testing::conformance::runtime::{run_all, RuntimeFixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_runtime_conforms() {
    if !edgeio_core::testing::require::docker() {
        return;
    }
    support::ensure_image();
    let job = JobId::new(support::unique("conf")).unwrap();
    let _cleanup = support::Cleanup::job(&job);
    let mut cannot_start = support::spec(&support::unique("conf-bad"), &job, &["true"]);
    cannot_start.image = support::MISSING_IMAGE.to_string();
    let fixture = RuntimeFixture {
        runs_until_stopped: support::long_running(&support::unique("conf-run"), &job),
        exits_with: support::spec(
            &support::unique("conf-exit"),
            &job,
            &["sh", "-c", "echo bye; exit 3"],
        ),
        exit_code: 3,
        cannot_start,
        log_line: Some("ready".to_string()),
    };
    run_all(&support::runtime(), &fixture).await;
    assert!(
        support::containers_of(&job).is_empty(),
        "the suite left containers behind"
    );
}
