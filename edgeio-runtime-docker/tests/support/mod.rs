//! Helpers shared by the Docker runtime's tests and its benchmark: a test image built on this
//! machine (no registry can be reached), unique ids, and cleanup that runs even when a test
//! fails.

// each test file uses a different part of this module
#![allow(dead_code)]

use edgeio_core::job::InstanceSpec;
use edgeio_core::model::{InstanceId, JobId, Resources, RuntimeKind};
#[allow(unused_imports)]
pub use edgeio_runtime_docker::testing::{docker, docker_ok, ensure_image, IMAGE};
use edgeio_runtime_docker::{DockerConfig, DockerRuntime};

/// An image that exists nowhere.
pub const MISSING_IMAGE: &str = "edgeio-test/no-such-image:0";
/// The node id the tests' runtimes label their containers with.
pub const NODE: &str = "edgeio-test-node";

/// A fresh id `<prefix>-<8 hex digits>`, unique across parallel test processes.
pub fn unique(prefix: &str) -> String {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &uuid[..8])
}

/// A runtime over the local engine, labelling with [`NODE`].
pub fn runtime() -> DockerRuntime {
    DockerRuntime::new(DockerConfig {
        node_id: Some(NODE.to_string()),
        ..Default::default()
    })
    .expect("the test config is valid")
}

/// A spec of job `job` running the test image with `args`.
pub fn spec(id: &str, job: &JobId, args: &[&str]) -> InstanceSpec {
    InstanceSpec {
        id: InstanceId::new(id).expect("test ids are valid"),
        job: job.clone(),
        image: IMAGE.to_string(),
        kind: RuntimeKind::new(RuntimeKind::DOCKER),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: Default::default(),
        ports: Vec::new(),
        resources: Resources::ZERO,
        labels: Default::default(),
    }
}

/// Prints `ready` and runs until SIGTERM, which ends it at once. (busybox `sleep` as PID 1
/// would ignore SIGTERM and make every graceful stop wait out the grace period; `wait` is
/// interrupted by the trapped signal.)
pub fn long_running(id: &str, job: &JobId) -> InstanceSpec {
    spec(
        id,
        job,
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo ready; while true; do sleep 1 & wait $!; done",
        ],
    )
}

/// Removes, when dropped (also when a test panics), every container of a job and any
/// containers named explicitly.
pub struct Cleanup {
    job: String,
    names: Vec<String>,
}

impl Cleanup {
    /// Cleans up after job `job`.
    pub fn job(job: &JobId) -> Cleanup {
        Cleanup {
            job: job.to_string(),
            names: Vec::new(),
        }
    }

    /// Also removes the container named `name`.
    pub fn name(&mut self, name: impl Into<String>) {
        self.names.push(name.into());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=edgeio.job={}", self.job);
        let out = docker(&["ps", "-aq", "--filter", &filter]);
        let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        ids.extend(self.names.iter().cloned());
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}

/// Containers of job `job` on the engine, running or not.
pub fn containers_of(job: &JobId) -> Vec<String> {
    let filter = format!("label=edgeio.job={job}");
    docker_ok(&["ps", "-aq", "--filter", &filter])
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// True when a container named exactly `name` exists.
pub fn container_exists(name: &str) -> bool {
    docker(&["container", "inspect", name]).status.success()
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}
