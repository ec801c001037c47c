//! The probe of a real engine.

mod support;

use edgeio_core::model::Arch;
use edgeio_core::runtime::Runtime;

#[tokio::test]
async fn probe_reports_engine_version_architecture_and_cgroup_version() {
    if !edgeio_core::testing::require::docker() {
        return;
    }
    let probe = support::runtime().probe().await.unwrap();
    assert!(probe.available, "{}", probe.detail);
    assert!(probe.version.is_some());
    assert!(probe.architectures.contains(&Arch::host()), "{probe:?}");
    assert!(probe.detail.contains("cgroup v"), "{}", probe.detail);
    assert!(probe.detail.contains("api 1."), "{}", probe.detail);
}
