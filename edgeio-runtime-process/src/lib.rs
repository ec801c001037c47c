//! # edgeio-runtime-process
//!
//! Native programs as edgeio instances (`image_runtime: native`): the thesis' "no runtime"
//! case, and the default where Docker is absent.
//!
//! * **Allow list**: only programs the worker's operator allowed run
//!   ([`ProcessConfig::allow`], `worker --allow-native PATH,…`; nothing by default). Until
//!   edgeio authenticates its callers, anyone reaching the root API could otherwise run any
//!   command on every worker. Anything else is refused with [`RuntimeError::Invalid`] on
//!   field `image` ([`allow`]).
//! * **Image**: an absolute path or a bare command name looked up on
//!   [`ProcessConfig::path`]; `args` and `env` come from the spec.
//! * **Environment**: minimal. The program gets `PATH` ([`ProcessConfig::path`]) plus the
//!   spec's `env` (which may override `PATH`), nothing of the worker's own environment (no
//!   `HOME`, `USER` …: set them in the job if the program needs them). Its current
//!   directory is `/`, its stdin is `/dev/null`.
//! * **Process group**: each program leads its own group. Terminate sends SIGTERM to the
//!   group, waits up to the grace period, then SIGKILLs the group, and also kills what the
//!   group still holds once its leader ended; the instance's files are removed after.
//! * **Exit**: an end (own or killed) is a [`RuntimeEvent`](edgeio_core::runtime::RuntimeEvent)
//!   with [`RunState::Exited`](edgeio_core::runtime::RunState) at once; a death by signal `n`
//!   reads as code `128 + n` (137 for SIGKILL), as shells report it.
//! * **Logs**: stdout and stderr go to `STATE/instances/ID/stdout.log` and `stderr.log`,
//!   each capped at [`ProcessConfig::log_cap_bytes`] by rotating once to `.1` ([`logs`]);
//!   they survive a worker restart.
//! * **Limits**: memory and CPU through cgroup v2 where the worker may write it, otherwise
//!   not enforced and said so in the probe and every status ([`limits`]).
//! * **Adoption**: a new runtime over the same state folder finds the instances an earlier
//!   one started (their `meta.json`: spec, pid and process start time), reports those that
//!   ended as exited, and can terminate the rest and serve their logs ([`adopt`]).
//!
//! Not built yet (each refused with [`RuntimeError::Unsupported`]): port *mappings* (a
//! native program binds host ports itself, so only unmapped ports are accepted) and GPUs.
//!
//! ```no_run
//! use edgeio_core::job::InstanceSpec;
//! use edgeio_core::model::{InstanceId, JobId, Resources};
//! use edgeio_core::runtime::{RunState, Runtime};
//! use edgeio_runtime_process::{ProcessConfig, ProcessRuntime};
//!
//! # async fn demo() -> Result<(), edgeio_core::runtime::RuntimeError> {
//! let runtime = ProcessRuntime::new(ProcessConfig {
//!     state_dir: "/var/lib/edgeio/process".into(),
//!     allow: vec!["/usr/bin/python3".into()],
//!     ..ProcessConfig::default()
//! })?;
//! let spec = InstanceSpec {
//!     id: InstanceId::new("web-0").unwrap(),
//!     job: JobId::new("web").unwrap(),
//!     image: "python3".into(),
//!     kind: "native".into(),
//!     args: vec!["-m".into(), "http.server".into(), "8080".into()],
//!     env: [("PYTHONUNBUFFERED".to_string(), "1".to_string())].into(),
//!     ports: vec![],
//!     resources: Resources { memory_bytes: 64 << 20, cpu_millis: 500, ..Resources::ZERO },
//!     labels: Default::default(),
//! };
//! let status = runtime.deploy(&spec).await?;
//! assert_eq!(status.state, RunState::Running);
//! runtime.terminate(&spec.id, runtime.default_grace()).await?;
//! # Ok(()) }
//! ```

pub mod adopt;
pub mod allow;
pub mod limits;
pub mod logs;
mod supervisor;

use async_trait::async_trait;
use edgeio_core::job::InstanceSpec;
use edgeio_core::model::{Arch, InstanceId, RuntimeKind};
use edgeio_core::runtime::{
    EventStream, InstanceStatus, LogOptions, LogStream, Runtime, RuntimeError, RuntimeProbe,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use allow::AllowList;
pub use limits::Limits;

/// The `PATH` programs get, and bare command names are looked up on, by default.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Options of the native process runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessConfig {
    /// Where instances keep their files (meta, exit record, pipes, logs).
    pub state_dir: PathBuf,
    /// The programs this worker may run (paths; compared after resolving symlinks).
    /// Empty by default: nothing runs until the operator allows it.
    pub allow: Vec<PathBuf>,
    /// Cap of each log file (stdout and stderr each), in bytes: past it the file is rotated
    /// once to `.1`, so a stream keeps at most twice this on disk. 8 MiB by default.
    pub log_cap_bytes: u64,
    /// The grace period for callers that have none of their own
    /// ([`ProcessRuntime::default_grace`]); [`Runtime::terminate`] uses the one it is given.
    pub default_grace_ms: u64,
    /// The `PATH` of the programs, and where bare command names are looked up.
    pub path: String,
    /// Where the cgroup hierarchy is mounted.
    pub cgroup_root: PathBuf,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            state_dir: PathBuf::from("/var/lib/edgeio/process"),
            allow: Vec::new(),
            log_cap_bytes: 8 << 20,
            default_grace_ms: 10_000,
            path: DEFAULT_PATH.into(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// The native process runtime (kind `native`). Cheap to clone; clones share their
/// instances.
///
/// Dropping the last clone stops supervising (the programs keep running, as they would
/// when a worker restarts); a new runtime over the same state folder adopts them.
#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<supervisor::Inner>,
}

impl std::fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRuntime")
            .field("state_dir", &self.inner.config.state_dir)
            .field("allowed", &self.inner.allow.len())
            .finish_non_exhaustive()
    }
}

impl ProcessRuntime {
    /// A runtime over `config.state_dir`, which is created if missing and made absolute.
    /// Looks once at the cgroup hierarchy to decide whether limits are enforced.
    ///
    /// Fails with [`RuntimeError::Invalid`] when the state folder cannot be created or
    /// `log_cap_bytes` is 0.
    pub fn new(config: ProcessConfig) -> Result<ProcessRuntime, RuntimeError> {
        Ok(ProcessRuntime {
            inner: Arc::new(supervisor::Inner::new(config)?),
        })
    }

    /// The configuration in force (with the state folder made absolute).
    pub fn config(&self) -> &ProcessConfig {
        &self.inner.config
    }

    /// The allowed programs.
    pub fn allowed(&self) -> &AllowList {
        &self.inner.allow
    }

    /// Whether limits are enforced, and why not.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// [`ProcessConfig::default_grace_ms`] as a duration.
    pub fn default_grace(&self) -> Duration {
        Duration::from_millis(self.inner.config.default_grace_ms)
    }
}

/// The kernel release, which is this runtime's version.
fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::new(RuntimeKind::NATIVE)
    }

    async fn probe(&self) -> Result<RuntimeProbe, RuntimeError> {
        let linux = cfg!(target_os = "linux");
        let n = self.inner.allow.len();
        let mut detail = format!(
            "{}; {n} program{} allowed",
            self.inner.limits.detail(),
            if n == 1 { "" } else { "s" }
        );
        if n == 0 {
            detail.push_str(" (start the worker with --allow-native <path>)");
        }
        if !linux {
            detail =
                format!("processes are supervised through /proc, which only Linux has; {detail}");
        }
        Ok(RuntimeProbe {
            kind: self.kind(),
            available: linux,
            version: kernel_release(),
            architectures: vec![Arch::host()],
            detail,
        })
    }

    async fn deploy(&self, spec: &InstanceSpec) -> Result<InstanceStatus, RuntimeError> {
        self.inner.deploy(spec).await
    }

    async fn terminate(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        self.inner.terminate(id, grace).await
    }

    async fn status(&self, id: &InstanceId) -> Result<InstanceStatus, RuntimeError> {
        self.inner.status(id)
    }

    async fn list(&self) -> Result<Vec<InstanceStatus>, RuntimeError> {
        self.inner.list()
    }

    async fn logs(&self, id: &InstanceId, options: LogOptions) -> Result<LogStream, RuntimeError> {
        self.inner.logs(id, options)
    }

    fn events(&self) -> EventStream {
        self.inner.events()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_reads_from_partial_json_with_defaults_and_allows_nothing() {
        let config: ProcessConfig =
            serde_json::from_str(r#"{"state_dir": "/tmp/p", "log_cap_bytes": 1024}"#).unwrap();
        assert_eq!(config.state_dir, PathBuf::from("/tmp/p"));
        assert_eq!(config.log_cap_bytes, 1024);
        assert!(config.allow.is_empty());
        assert_eq!(config.path, DEFAULT_PATH);
        assert_eq!(ProcessConfig::default().log_cap_bytes, 8 << 20);
        assert!(serde_json::from_str::<ProcessConfig>(r#"{"alow": ["/bin/sh"]}"#).is_err());
    }

    #[test]
    fn a_zero_log_cap_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let err = ProcessRuntime::new(ProcessConfig {
            state_dir: base.path().join("state"),
            log_cap_bytes: 0,
            ..ProcessConfig::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid log_cap_bytes \"0\": must be at least 1 byte (8 MiB by default)"
        );
    }

    #[tokio::test]
    async fn the_probe_names_the_kernel_the_limits_and_the_allowed_count() {
        let base = tempfile::tempdir().unwrap();
        let runtime = ProcessRuntime::new(ProcessConfig {
            state_dir: base.path().join("state"),
            // a folder that is no cgroup hierarchy: limits are not enforced
            cgroup_root: base.path().to_path_buf(),
            ..ProcessConfig::default()
        })
        .unwrap();
        assert!(runtime.config().state_dir.join("instances").is_dir());
        let probe = runtime.probe().await.unwrap();
        assert_eq!(probe.kind.as_str(), "native");
        assert!(probe.available);
        assert_eq!(probe.version, kernel_release());
        assert_eq!(probe.architectures, vec![Arch::host()]);
        assert!(
            probe.detail.starts_with("limits not enforced: "),
            "{}",
            probe.detail
        );
        assert!(
            probe
                .detail
                .contains("0 programs allowed (start the worker with --allow-native <path>)"),
            "{}",
            probe.detail
        );
    }

    #[test]
    fn decode_exit_reports_signals_as_128_plus_n() {
        use std::os::unix::process::ExitStatusExt;
        let killed = std::process::ExitStatus::from_raw(9);
        assert_eq!(supervisor::decode_exit(killed).0, Some(137));
        let exited = std::process::ExitStatus::from_raw(3 << 8);
        assert_eq!(
            supervisor::decode_exit(exited),
            (Some(3), "exited with code 3".to_string())
        );
    }
}
