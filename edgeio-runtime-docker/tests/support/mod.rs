//! Helpers shared by the Docker runtime's tests and its benchmark: a test image built on this
//! machine (no registry can be reached), unique ids, and cleanup that runs even when a test
//! fails.

// each test file uses a different part of this module
#![allow(dead_code)]

use edgeio_core::job::InstanceSpec;
use edgeio_core::model::{InstanceId, JobId, Resources, RuntimeKind};
use edgeio_runtime_docker::{DockerConfig, DockerRuntime};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The test image: Debian's busybox-static and its applets, imported from a tarball.
pub const IMAGE: &str = "edgeio-test/busybox:1";
/// An image that exists nowhere.
pub const MISSING_IMAGE: &str = "edgeio-test/no-such-image:0";
/// The node id the tests' runtimes label their containers with.
pub const NODE: &str = "edgeio-test-node";

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "ash", "sleep", "echo", "cat", "head", "tail", "nc", "httpd", "true", "false", "ls",
    "printf", "yes", "dd", "kill", "mkdir", "wc",
];
const LOCK: &str = "/tmp/edgeio-test-image.lock";

/// Runs `docker args…` and returns its output (panics if the CLI cannot be run at all).
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e}"))
}

/// `docker args…` must succeed; returns its trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn image_exists() -> bool {
    docker(&["image", "inspect", IMAGE]).status.success()
}

/// Builds the test image once per process; parallel test processes serialize on a file lock
/// and re-check the tag under it, so the image is imported once and none is left dangling.
pub fn ensure_image() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = READY.get_or_init(build_image) {
        panic!("cannot build the test image {IMAGE}: {e}");
    }
}

fn build_image() -> Result<(), String> {
    if image_exists() {
        return Ok(());
    }
    if !Path::new(BUSYBOX).is_file() {
        return Err(format!(
            "{BUSYBOX} is missing: install Debian's busybox-static (scripts/test does)"
        ));
    }
    let root = std::env::temp_dir().join(format!("edgeio-test-rootfs-{}", std::process::id()));
    let built = make_rootfs(&root).and_then(|()| import_locked(&root));
    let _ = std::fs::remove_dir_all(&root);
    built
}

fn make_rootfs(root: &Path) -> Result<(), String> {
    let io = |e: std::io::Error| format!("building the root filesystem in {}: {e}", root.display());
    let _ = std::fs::remove_dir_all(root);
    for dir in ["bin", "tmp", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(dir)).map_err(io)?;
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).map_err(io)?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).map_err(io)?;
    }
    Ok(())
}

fn import_locked(root: &Path) -> Result<(), String> {
    let script = r#"docker image inspect "$1" >/dev/null 2>&1 && exit 0
tar -C "$2" -c . | docker import --change 'CMD ["sh"]' - "$1" >/dev/null"#;
    let out = Command::new("flock")
        .args([LOCK, "sh", "-c", script, "sh", IMAGE])
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run flock (util-linux): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

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
