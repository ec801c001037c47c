//! What a worker reports about itself at registration: hardware, runtimes, labels, location.

use super::{Arch, Labels, Location, RuntimeKind};
use serde::{Deserialize, Serialize};

/// One installed runtime and its version, as probed by the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// The runtime kind (`docker`, `native`, `mirage`, or one an integrator registered).
    pub kind: RuntimeKind,
    /// Version string as the runtime reports it; empty when unknown.
    #[serde(default)]
    pub version: String,
}

/// A worker's hardware and software, sent with its registration request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// CPU architecture.
    pub arch: Arch,
    /// Logical cores.
    pub cores: u32,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Total disk in bytes (of the data folder's file system).
    pub disk_bytes: u64,
    /// Whole GPUs.
    #[serde(default)]
    pub gpus: u32,
    /// Runtimes that answered their probe.
    #[serde(default)]
    pub runtimes: Vec<RuntimeInfo>,
    /// Free-form labels (`zone: a`, `camera: "true"`), matched by `node_selector`.
    #[serde(default)]
    pub labels: Labels,
    /// Where the node is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}
