//! Specs that cannot run are refused with a clear error, and nothing is left behind.

mod support;

use edgeio_core::job::{PortMapping, Protocol};
use edgeio_core::model::JobId;
use edgeio_core::runtime::{Runtime, RuntimeError};
use edgeio_runtime_docker::MIN_MEMORY_BYTES;
use std::time::Duration;

fn port(host: u16) -> PortMapping {
    PortMapping {
        container: 8080,
        host: Some(host),
        protocol: Protocol::Tcp,
    }
}

#[tokio::test]
async fn an_unknown_image_is_invalid_names_the_image_and_leaves_nothing() {
    if !edgeio_core::testing::require::docker() {
        return;
    }
    let job = JobId::new(support::unique("noimg")).unwrap();
    let _cleanup = support::Cleanup::job(&job);
    let runtime = support::runtime();
    let mut spec = support::spec(&support::unique("noimg"), &job, &["true"]);
    spec.image = support::MISSING_IMAGE.to_string();
    let err = runtime.deploy(&spec).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Invalid { field, value, .. }
            if field == "image" && value == support::MISSING_IMAGE),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(support::MISSING_IMAGE), "{text}");
    assert!(text.contains("not present on this docker engine"), "{text}");
    assert!(!support::container_exists(
        &runtime.container_name(&spec.id)
    ));
}

#[tokio::test]
async fn a_host_port_in_use_is_invalid_and_leaves_nothing() {
    if !edgeio_core::testing::require::docker() {
        return;
    }
    support::ensure_image();
    let job = JobId::new(support::unique("busy")).unwrap();
    let _cleanup = support::Cleanup::job(&job);
    let runtime = support::runtime();
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let mut spec = support::long_running(&support::unique("busy"), &job);
    spec.ports = vec![port(busy)];
    let err = runtime.deploy(&spec).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Invalid { field, value, rule }
            if field == "ports[0].host" && *value == busy.to_string() && rule.contains("in use")),
        "{err:?}"
    );
    assert!(!support::container_exists(
        &runtime.container_name(&spec.id)
    ));
    assert!(support::containers_of(&job).is_empty());
    drop(taken);
}

#[tokio::test]
async fn port_zero_is_invalid_before_anything_is_created() {
    if !edgeio_core::testing::require::docker() {
        return;
    }
    let job = JobId::new(support::unique("zero")).unwrap();
    let _cleanup = support::Cleanup::job(&job);
    let runtime = support::runtime();
    let mut spec = support::long_running(&support::unique("zero"), &job);
    spec.ports = vec![port(0)];
    let err = runtime.deploy(&spec).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid ports[0].host \"0\": must be a port number from 1 to 65535, or absent to let \
         docker pick a free one"
    );
    spec.ports = vec![PortMapping {
        container: 0,
        host: None,
        protocol: Protocol::Udp,
    }];
    let err = runtime.deploy(&spec).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Invalid { field, .. } if field == "ports[0].container"),
        "{err:?}"
    );
    assert!(support::containers_of(&job).is_empty());
}

#[tokio::test]
async fn memory_below_the_engine_minimum_is_invalid_and_leaves_nothing() {
    if !edgeio_core::testing::require::docker() {
        return;
    }
    support::ensure_image();
    let job = JobId::new(support::unique("mem")).unwrap();
    let _cleanup = support::Cleanup::job(&job);
    let runtime = support::runtime();
    let mut spec = support::long_running(&support::unique("mem"), &job);
    spec.resources.memory_bytes = 4 << 20;
    let err = runtime.deploy(&spec).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Invalid { field, value, rule }
            if field == "resources.memory_bytes" && value == "4194304" && rule.contains("6 MiB")),
        "{err:?}"
    );
    assert!(support::containers_of(&job).is_empty());

    // the minimum itself is accepted by the engine
    spec.resources.memory_bytes = MIN_MEMORY_BYTES;
    runtime.deploy(&spec).await.unwrap();
    runtime.terminate(&spec.id, Duration::ZERO).await.unwrap();
}

#[tokio::test]
async fn a_name_clash_with_a_foreign_container_is_already_exists_and_leaves_it_untouched() {
    if !edgeio_core::testing::require::docker() {
        return;
    }
    support::ensure_image();
    let job = JobId::new(support::unique("clash")).unwrap();
    let mut cleanup = support::Cleanup::job(&job);
    let runtime = support::runtime();
    let spec = support::long_running(&support::unique("clash"), &job);
    let name = runtime.container_name(&spec.id);
    cleanup.name(name.clone());
    let foreign =
        support::docker_ok(&["run", "-d", "--name", &name, support::IMAGE, "sleep", "300"]);

    let err = runtime.deploy(&spec).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::AlreadyExists { id, detail }
            if *id == spec.id.as_str() && detail.contains("edgeio did not create")
                && detail.contains(&name)),
        "{err:?}"
    );
    // edgeio neither sees nor touches it
    assert!(matches!(
        runtime.status(&spec.id).await,
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(matches!(
        runtime.terminate(&spec.id, Duration::ZERO).await,
        Err(RuntimeError::NotFound { .. })
    ));
    let still = support::docker_ok(&["inspect", "--format", "{{.Id}} {{.State.Running}}", &name]);
    assert_eq!(still, format!("{foreign} true"));
    assert!(support::containers_of(&job).is_empty());
}
