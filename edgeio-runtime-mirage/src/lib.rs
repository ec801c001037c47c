//! # edgeio-runtime-mirage
//!
//! MirageOS / Solo5 unikernels as edgeio instances: multiboot and Solo5 `virtio` images under
//! `qemu-system-x86_64` (KVM when usable, else software emulation), Solo5 `hvt` and `spt`
//! images under `solo5-hvt` / `solo5-spt`. Mirage `unix`-target images are ordinary
//! executables: deploy them with `image_runtime: native` (this runtime refuses them with
//! [`RuntimeError::Unsupported`] saying so).
//!
//! * **Image kind**: the [`image::LABEL_TARGET`] label of the spec, else inferred from the
//!   file ([`image::detect`]).
//! * **Resources**: `-m` from `memory_bytes` (0 → [`MirageConfig::default_memory_mib`]; more
//!   than the host has → [`RuntimeError::Invalid`]), `-smp` from `cpu_millis` rounded up to
//!   whole cores (at least one; more than the host has → `Invalid`).
//! * **Console**: written to `STATE/instances/ID/console.log`, so it survives a worker restart;
//!   served by [`Runtime::logs`] with `tail` and `follow`.
//! * **Exit codes**: a guest writes its code to qemu's `isa-debug-exit` port; **0 means
//!   success**. The full table is in [`instance`].
//! * **Terminate**: QMP `quit`, then SIGTERM, then SIGKILL once the grace period is over;
//!   the instance's files are removed after it is gone.
//! * **Allow list**: with [`MirageConfig::allow`] set, only the kernels it names boot
//!   ([`allow`]); the reference worker sets it from `--allow-kernel` (nothing by default).
//! * **Adoption**: a new runtime over the same state folder finds the instances an earlier one
//!   started (their `meta.json`, pid and QMP socket) in [`Runtime::list`], reports those that
//!   ended as exited, and can terminate the rest.
//!
//! Not built yet (each refused with [`RuntimeError::Unsupported`]): published ports (they
//! need a tap device or qemu user networking) and environment variables (a unikernel has
//! none: pass boot parameters as args).
//!
//! ```no_run
//! use edgeio_core::job::InstanceSpec;
//! use edgeio_core::model::{InstanceId, JobId, Resources};
//! use edgeio_core::runtime::Runtime;
//! use edgeio_runtime_mirage::{KvmPolicy, MirageConfig, MirageRuntime};
//!
//! # async fn demo() -> Result<(), edgeio_core::runtime::RuntimeError> {
//! let runtime = MirageRuntime::new(MirageConfig {
//!     state_dir: "/var/lib/edgeio/mirage".into(),
//!     kvm: KvmPolicy::Auto,
//!     ..MirageConfig::default()
//! })?;
//! let spec = InstanceSpec {
//!     id: InstanceId::new("hello-0").unwrap(),
//!     job: JobId::new("hello").unwrap(),
//!     image: "/srv/unikernels/hello.virtio".into(),
//!     kind: "mirage".into(),
//!     args: vec!["--hello=world".into()],
//!     env: Default::default(),
//!     ports: vec![],
//!     resources: Resources { memory_bytes: 64 << 20, cpu_millis: 1000, ..Resources::ZERO },
//!     labels: Default::default(),
//! };
//! let status = runtime.deploy(&spec).await?;
//! assert_eq!(status.id, spec.id);
//! # Ok(()) }
//! ```

pub mod allow;
pub mod command;
pub mod image;
pub mod instance;
mod logs;
pub mod probe;
pub mod qmp;
mod supervisor;
#[cfg(feature = "testing")]
pub mod testing;

use async_trait::async_trait;
use edgeio_core::job::InstanceSpec;
use edgeio_core::model::{InstanceId, RuntimeKind};
use edgeio_core::runtime::{
    EventStream, InstanceStatus, LogOptions, LogStream, Runtime, RuntimeError, RuntimeProbe,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Whether qemu uses KVM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvmPolicy {
    /// KVM when the device opens for reading and writing, else software emulation (TCG).
    #[default]
    Auto,
    /// Always KVM; qemu deploys are refused when it is not usable.
    On,
    /// Always software emulation, even where KVM is usable (KVM can be slower to start on
    /// nested-virtualisation hosts: about 12 s against 0.1 s for a tiny kernel, measured).
    Off,
}

/// Options of the unikernel runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MirageConfig {
    /// Where instances keep their files (console, pid, exit, QMP sockets). Must be at most
    /// [`command::max_state_dir_len`] (83) bytes once made absolute, so that socket paths fit
    /// the 108-byte unix limit.
    pub state_dir: PathBuf,
    /// qemu, by name (looked up on `PATH`) or path.
    pub qemu: PathBuf,
    /// `solo5-hvt`, by name or path.
    pub solo5_hvt: PathBuf,
    /// `solo5-spt`, by name or path.
    pub solo5_spt: PathBuf,
    /// Whether qemu uses KVM.
    pub kvm: KvmPolicy,
    /// The KVM device probed for [`KvmPolicy::Auto`] and `solo5-hvt`.
    pub kvm_device: PathBuf,
    /// Guest memory when a job asks for none.
    pub default_memory_mib: u64,
    /// How long a deploy waits for qemu to report the guest running.
    pub start_timeout_ms: u64,
    /// The kernel images deploys may name ([`allow`]). `None` (the default): any file the
    /// runtime can read; `Some(list)`: only those (an empty list allows nothing). The
    /// reference worker always sets a list (`--allow-kernel`, empty unless the operator names
    /// kernels), since anyone who reaches the API could otherwise have qemu read any file.
    pub allow: Option<Vec<PathBuf>>,
}

impl Default for MirageConfig {
    fn default() -> Self {
        MirageConfig {
            state_dir: PathBuf::from("/var/lib/edgeio/mirage"),
            qemu: PathBuf::from("qemu-system-x86_64"),
            solo5_hvt: PathBuf::from("solo5-hvt"),
            solo5_spt: PathBuf::from("solo5-spt"),
            kvm: KvmPolicy::Auto,
            kvm_device: PathBuf::from("/dev/kvm"),
            default_memory_mib: 64,
            start_timeout_ms: 30_000,
            allow: None,
        }
    }
}

impl MirageConfig {
    /// [`MirageConfig::start_timeout_ms`] as a duration.
    pub fn start_timeout(&self) -> Duration {
        Duration::from_millis(self.start_timeout_ms)
    }
}

/// The unikernel runtime (kind `mirage`). Cheap to clone; clones share their instances.
///
/// Dropping the last clone stops supervising (the unikernels keep running, as they would
/// when a worker restarts); a new runtime over the same state folder adopts them.
#[derive(Clone)]
pub struct MirageRuntime {
    inner: Arc<supervisor::Inner>,
}

impl std::fmt::Debug for MirageRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirageRuntime")
            .field("state_dir", &self.inner.config.state_dir)
            .finish_non_exhaustive()
    }
}

impl MirageRuntime {
    /// A runtime over `config.state_dir`, which is created if missing and made absolute.
    ///
    /// Fails with [`RuntimeError::Invalid`] (field `state_dir`) when the folder cannot be
    /// created or is too long for its QMP socket paths. Finding tenders is left to
    /// [`Runtime::probe`] and each deploy, so a runtime exists (and reports itself
    /// unavailable) on a host with none.
    pub fn new(config: MirageConfig) -> Result<MirageRuntime, RuntimeError> {
        Ok(MirageRuntime {
            inner: Arc::new(supervisor::Inner::new(config)?),
        })
    }

    /// The configuration in force (with the state folder made absolute).
    pub fn config(&self) -> &MirageConfig {
        &self.inner.config
    }
}

#[async_trait]
impl Runtime for MirageRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::new(RuntimeKind::MIRAGE)
    }

    async fn probe(&self) -> Result<RuntimeProbe, RuntimeError> {
        let mut probe = probe::HostProbe::run(&self.inner.config)
            .await
            .to_runtime_probe();
        if let Some(allowed) = &self.inner.config.allow {
            let n = allowed.len();
            probe.detail.push_str(&format!(
                "; {n} kernel{} allowed",
                if n == 1 { "" } else { "s" }
            ));
            if n == 0 {
                probe
                    .detail
                    .push_str(" (start the worker with --allow-kernel <path>)");
            }
        }
        Ok(probe)
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
        self.inner.logs(id, options).await
    }

    fn events(&self) -> EventStream {
        self.inner.events()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_reads_from_partial_json_with_defaults() {
        let config: MirageConfig =
            serde_json::from_str(r#"{"state_dir": "/tmp/m", "kvm": "off"}"#).unwrap();
        assert_eq!(config.state_dir, PathBuf::from("/tmp/m"));
        assert_eq!(config.kvm, KvmPolicy::Off);
        assert_eq!(config.default_memory_mib, 64);
        assert_eq!(config.qemu, PathBuf::from("qemu-system-x86_64"));
        assert!(serde_json::from_str::<MirageConfig>(r#"{"kvm": "maybe"}"#).is_err());
        assert!(serde_json::from_str::<MirageConfig>(r#"{"stat_dir": "/x"}"#).is_err());
    }

    #[test]
    fn a_state_dir_too_long_for_socket_paths_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let long = base.path().join("x".repeat(100));
        let err = MirageRuntime::new(MirageConfig {
            state_dir: long,
            ..MirageConfig::default()
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("invalid state_dir"), "{text}");
        assert!(
            text.contains("must be at most 83 bytes so that QMP socket paths fit the 108-byte unix socket limit"),
            "{text}"
        );
    }

    #[test]
    fn a_new_runtime_makes_its_state_folder_absolute() {
        let base = tempfile::tempdir().unwrap();
        let runtime = MirageRuntime::new(MirageConfig {
            state_dir: base.path().join("state"),
            ..MirageConfig::default()
        })
        .unwrap();
        assert!(runtime.config().state_dir.is_absolute());
        assert!(runtime.config().state_dir.join("instances").is_dir());
        assert_eq!(runtime.kind().as_str(), "mirage");
    }
}
