//! The `Runtime` trait family: what runs instances on a worker (containers, unikernels, processes).
//!
//! Everything a runtime starts is labelled with the edgeio instance id, so that after a worker
//! restart [`Runtime::list`] finds and adopts what survived instead of starting it twice.
//! State changes arrive on [`Runtime::events`] as they happen, not on a polling tick.
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use edgeio_core::runtime::{Runtime, RunState};
//! use edgeio_core::testing::FakeRuntime;
//! use edgeio_core::job::InstanceSpec;
//! use edgeio_core::model::{InstanceId, JobId, Resources};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let runtime = FakeRuntime::new();
//! let spec = InstanceSpec {
//!     id: InstanceId::new("web-0").unwrap(),
//!     job: JobId::new("web").unwrap(),
//!     image: "fake:run".into(),
//!     kind: "native".into(),
//!     args: vec![],
//!     env: Default::default(),
//!     ports: vec![],
//!     resources: Resources::ZERO,
//!     labels: Default::default(),
//! };
//! let status = runtime.deploy(&spec).await.unwrap();
//! assert!(matches!(status.state, RunState::Running));
//! # });
//! # }
//! ```

use crate::job::InstanceSpec;
use crate::model::{Arch, InstanceId, Labels, RuntimeKind};
use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a probe found about a runtime on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeProbe {
    /// The runtime kind.
    pub kind: RuntimeKind,
    /// Whether it can run anything now.
    pub available: bool,
    /// Its version, when known.
    pub version: Option<String>,
    /// Architectures it can run.
    pub architectures: Vec<Arch>,
    /// Why it is unavailable, or notes (`cgroup v2`, `kvm: no`).
    pub detail: String,
}

/// The state of an instance as its runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunState {
    /// Created, not yet running.
    Starting,
    /// Running.
    Running,
    /// Ended on its own or was stopped.
    Exited {
        /// Exit code, when the runtime knows it.
        code: Option<i32>,
        /// Killed for exceeding its memory limit.
        oom_killed: bool,
    },
    /// Removed from outside edgeio (e.g. `docker rm -f`).
    Removed,
}

/// An instance as its runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// The instance.
    pub id: InstanceId,
    /// The runtime kind running it.
    pub kind: RuntimeKind,
    /// Its state.
    pub state: RunState,
    /// The labels it carries (includes the instance and job ids).
    pub labels: Labels,
    /// Runtime-specific detail for people (container id, pid, image digest).
    pub detail: String,
}

/// A state change pushed by the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeEvent {
    /// The instance.
    pub id: InstanceId,
    /// Its new state.
    pub state: RunState,
    /// Why, for people.
    pub reason: String,
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A serial console (unikernels).
    Console,
}

/// One line of an instance's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Where it came from.
    pub source: LogSource,
    /// The text, without the trailing newline.
    pub text: String,
}

/// How much of the log to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogOptions {
    /// Only the last N lines; all when `None`.
    pub tail: Option<usize>,
    /// Keep the stream open and follow new lines until the instance ends.
    pub follow: bool,
}

/// A stream of log lines.
pub type LogStream = BoxStream<'static, Result<LogLine, RuntimeError>>;

/// A stream of runtime events.
pub type EventStream = BoxStream<'static, RuntimeEvent>;

/// Errors of the runtime family.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// No such instance.
    #[error("instance {id:?} not found")]
    NotFound {
        /// The instance.
        id: String,
    },
    /// An instance with this id (or a clashing name) exists.
    #[error("instance {id:?} already exists{}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
    AlreadyExists {
        /// The instance.
        id: String,
        /// What clashes.
        detail: String,
    },
    /// The instance is in a state that forbids the operation.
    #[error("instance {id:?}: {reason}")]
    Conflict {
        /// The instance.
        id: String,
        /// Why.
        reason: String,
    },
    /// This runtime cannot do that (wrong kind, missing tender, unfinished feature).
    #[error("{what} is not supported by the {runtime} runtime{}", if .reason.is_empty() { String::new() } else { format!(": {}", .reason) })]
    Unsupported {
        /// The runtime kind.
        runtime: String,
        /// The operation or input.
        what: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// The engine behind the runtime does not answer: retry later.
    #[error("{runtime} runtime unavailable: {reason}")]
    Unavailable {
        /// The runtime kind.
        runtime: String,
        /// Why.
        reason: String,
    },
    /// The spec cannot run (unknown image, bad port, limit below the minimum …).
    #[error("invalid {field} {value:?}: {rule}")]
    Invalid {
        /// The field of the spec.
        field: String,
        /// The value.
        value: String,
        /// The rule broken, or the engine's explanation.
        rule: String,
    },
    /// Anything else, with its cause.
    #[error("runtime error: {source}")]
    Other {
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Runs instances of one kind on this host.
///
/// Implementations pass [`crate::testing::conformance::runtime::run_all`] (feature `testing`).
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait Runtime: Send + Sync {
    /// The kind this runtime runs (`docker`, `native`, `mirage` …).
    fn kind(&self) -> RuntimeKind;

    /// Whether the runtime is usable here, its version and what it can run.
    async fn probe(&self) -> Result<RuntimeProbe, RuntimeError>;

    /// Creates and starts an instance; [`RuntimeError::AlreadyExists`] when the id is taken.
    async fn deploy(&self, spec: &InstanceSpec) -> Result<InstanceStatus, RuntimeError>;

    /// Stops an instance (a grace period, then a kill) and removes it.
    async fn terminate(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError>;

    /// The current state of one instance.
    async fn status(&self, id: &InstanceId) -> Result<InstanceStatus, RuntimeError>;

    /// Every instance this runtime started that still exists (running or exited), so a
    /// restarted worker adopts them.
    async fn list(&self) -> Result<Vec<InstanceStatus>, RuntimeError>;

    /// An instance's output.
    async fn logs(&self, id: &InstanceId, options: LogOptions) -> Result<LogStream, RuntimeError>;

    /// State changes from now on (every subscriber sees every event).
    fn events(&self) -> EventStream;
}

/// Label every runtime puts on what it starts: the edgeio instance id.
pub const LABEL_INSTANCE: &str = "edgeio.instance";
/// Label with the edgeio job id.
pub const LABEL_JOB: &str = "edgeio.job";

/// The labels a runtime attaches to an instance: the spec's own plus the instance and job ids.
pub fn instance_labels(spec: &InstanceSpec) -> Labels {
    let mut labels = spec.labels.clone();
    labels.insert(LABEL_INSTANCE.to_string(), spec.id.to_string());
    labels.insert(LABEL_JOB.to_string(), spec.job.to_string());
    labels
}
