//! # edgeio-runtime-docker
//!
//! Docker containers for edgeio through the engine's API ([`bollard`]): CPU and memory
//! limits, published ports, logs, an event stream fed by the engine's events API, and
//! adoption of surviving containers after a worker restart.
//!
//! [`DockerRuntime`] implements [`edgeio_core::runtime::Runtime`] and passes its conformance
//! suite on Docker 20.10 (API 1.41, cgroup v1). Every container it starts is named
//! `<name_prefix><instance id>` and labelled `edgeio.instance`, `edgeio.job` and, when the
//! config names one, `edgeio.node`; a container without those labels is never stopped,
//! removed or listed.
//!
//! ```no_run
//! use edgeio_core::job::InstanceSpec;
//! use edgeio_core::model::{InstanceId, JobId, Resources};
//! use edgeio_core::runtime::Runtime;
//! use edgeio_runtime_docker::{DockerConfig, DockerRuntime};
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), edgeio_core::runtime::RuntimeError> {
//! let docker = DockerRuntime::connect(DockerConfig {
//!     node_id: Some("e580".into()),
//!     ..Default::default()
//! })
//! .await?;
//! let spec = InstanceSpec {
//!     id: InstanceId::new("web-0").unwrap(),
//!     job: JobId::new("web").unwrap(),
//!     image: "nginx:1.27".into(),
//!     kind: "docker".into(),
//!     args: vec![],
//!     env: Default::default(),
//!     ports: vec![],
//!     resources: Resources { cpu_millis: 500, memory_bytes: 64 << 20, ..Resources::ZERO },
//!     labels: Default::default(),
//! };
//! let status = docker.deploy(&spec).await?; // container `edgeio-web-0`, running
//! docker.terminate(&status.id, Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Not done yet: the worker that enables this runtime when the engine answers and selects it
//! for `image_runtime: docker` lands with the three-tiers issue.

mod clock;
mod config;
mod containers;
mod deploy;
mod engine;
mod errors;
mod events;
mod logs;
mod probe;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{DockerConfig, DEFAULT_HOST, LABEL_NODE};
pub use containers::MIN_MEMORY_BYTES;

use async_trait::async_trait;
use edgeio_core::job::InstanceSpec;
use edgeio_core::model::{InstanceId, RuntimeKind};
use edgeio_core::runtime::{
    EventStream, InstanceStatus, LogOptions, LogStream, Runtime, RuntimeError, RuntimeEvent,
    RuntimeProbe,
};
use engine::Engine;
use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::BroadcastStream;
use tracing::{error, warn};

/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_BUFFER: usize = 1024;

/// Runs edgeio instances as Docker containers. Cheap to clone; clones share one connection
/// and one event reader.
#[derive(Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    config: DockerConfig,
    engine: Arc<Engine>,
    events: broadcast::Sender<RuntimeEvent>,
    pump: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let pump = self.pump.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(handle) = pump.take() {
            handle.abort();
        }
    }
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("host", &self.inner.engine.host())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl DockerRuntime {
    /// A runtime for the engine the config names, without contacting it: a host without
    /// Docker still gets a runtime, whose [`Runtime::probe`] reports it unavailable and whose
    /// other calls answer [`RuntimeError::Unavailable`] until the engine answers.
    ///
    /// Refuses an invalid config with [`RuntimeError::Invalid`].
    pub fn new(config: DockerConfig) -> Result<DockerRuntime, RuntimeError> {
        config.validate()?;
        Ok(DockerRuntime {
            inner: Arc::new(Inner {
                engine: Arc::new(Engine::new(&config)),
                config,
                events: broadcast::channel(EVENT_BUFFER).0,
                pump: Mutex::new(None),
            }),
        })
    }

    /// [`DockerRuntime::new`], then connects and agrees on an API version;
    /// [`RuntimeError::Unavailable`] when the engine does not answer.
    pub async fn connect(config: DockerConfig) -> Result<DockerRuntime, RuntimeError> {
        let runtime = DockerRuntime::new(config)?;
        runtime.inner.engine.docker().await?;
        Ok(runtime)
    }

    /// The config it runs with.
    pub fn config(&self) -> &DockerConfig {
        &self.inner.config
    }

    /// The engine address it talks to.
    pub fn host(&self) -> &str {
        self.inner.engine.host()
    }

    /// The name of the container that runs instance `id` (`edgeio-<id>` by default).
    pub fn container_name(&self, id: &InstanceId) -> String {
        format!("{}{id}", self.inner.config.name_prefix)
    }

    /// Starts the event reader unless it runs; it needs a tokio runtime, which `events()`
    /// callers are in.
    fn ensure_pump(&self) {
        let mut pump = self.inner.pump.lock().unwrap_or_else(|p| p.into_inner());
        if pump.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                if pump.is_some() {
                    warn!(
                        "docker event reader had stopped (its tokio runtime ended); restarting it"
                    );
                }
                *pump = Some(handle.spawn(events::pump(
                    self.inner.engine.clone(),
                    self.inner.config.node_id.clone(),
                    self.inner.events.clone(),
                    std::time::Instant::now(),
                )));
            }
            Err(_) => error!("DockerRuntime::events called outside a tokio runtime: no events"),
        }
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::new(RuntimeKind::DOCKER)
    }

    /// Never an error: an absent or unusable engine is `available: false` with the reason.
    async fn probe(&self) -> Result<RuntimeProbe, RuntimeError> {
        Ok(probe::probe(&self.inner.engine).await)
    }

    async fn deploy(&self, spec: &InstanceSpec) -> Result<InstanceStatus, RuntimeError> {
        let docker = self.inner.engine.docker().await?;
        let ctx = deploy::Ctx {
            docker: &docker,
            host: self.host(),
            config: &self.inner.config,
            name: self.container_name(&spec.id),
        };
        deploy::deploy(&ctx, spec).await
    }

    /// Stops with SIGTERM, waits `grace` (rounded up to whole seconds, as Docker counts it),
    /// then kills and removes; a zero grace removes at once, as `docker rm -f` does.
    async fn terminate(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        let docker = self.inner.engine.docker().await?;
        deploy::terminate(&docker, self.host(), &self.container_name(id), id, grace).await
    }

    async fn status(&self, id: &InstanceId) -> Result<InstanceStatus, RuntimeError> {
        let docker = self.inner.engine.docker().await?;
        deploy::status(&docker, self.host(), &self.container_name(id), id).await
    }

    /// Every container labelled `edgeio.instance` (and, with a `node_id`, this node's),
    /// running or exited.
    async fn list(&self) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let docker = self.inner.engine.docker().await?;
        deploy::list(&docker, self.host(), &self.inner.config).await
    }

    /// Stdout and stderr, line by line; with `follow`, the stream ends when the container
    /// stops.
    async fn logs(&self, id: &InstanceId, options: LogOptions) -> Result<LogStream, RuntimeError> {
        let docker = self.inner.engine.docker().await?;
        let name = self.container_name(id);
        let info = deploy::inspect_owned(&docker, self.host(), &name, id).await?;
        let container = info.id.unwrap_or(name);
        Ok(logs::stream(&docker, self.host(), &container, id, options))
    }

    /// Must be called inside a tokio runtime (it starts the event reader on first use).
    fn events(&self) -> EventStream {
        let rx = self.inner.events.subscribe();
        self.ensure_pump();
        BroadcastStream::new(rx)
            .filter_map(|item| {
                futures::future::ready(match item {
                    Ok(event) => Some(event),
                    Err(e) => {
                        warn!(error = %e, "a slow docker event subscriber missed events");
                        None
                    }
                })
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nowhere() -> DockerConfig {
        DockerConfig {
            host: Some("unix:///nonexistent/edgeio-test/docker.sock".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_host_without_docker_probes_unavailable_instead_of_failing() {
        let runtime = DockerRuntime::new(nowhere()).unwrap();
        let probe = runtime.probe().await.unwrap();
        assert!(!probe.available);
        assert_eq!(probe.kind.as_str(), "docker");
        assert!(
            probe
                .detail
                .contains("/nonexistent/edgeio-test/docker.sock"),
            "{}",
            probe.detail
        );
    }

    #[tokio::test]
    async fn calls_without_an_engine_are_unavailable() {
        let runtime = DockerRuntime::new(nowhere()).unwrap();
        let id = InstanceId::new("web-0").unwrap();
        assert!(matches!(
            runtime.status(&id).await,
            Err(RuntimeError::Unavailable { .. })
        ));
        assert!(matches!(
            DockerRuntime::connect(nowhere()).await,
            Err(RuntimeError::Unavailable { .. })
        ));
    }

    #[test]
    fn container_names_carry_the_prefix() {
        let runtime = DockerRuntime::new(nowhere()).unwrap();
        let id = InstanceId::new("web-0").unwrap();
        assert_eq!(runtime.container_name(&id), "edgeio-web-0");
    }
}
