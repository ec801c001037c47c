//! The normalized job: what every engine, scheduler and runtime works from.
//!
//! Descriptors of every API version are parsed into a [`JobSpec`] (see [`super::descriptor`]);
//! nothing downstream sees the version a user wrote.

use crate::model::{Arch, InstanceId, JobId, Labels, Location, Resources, RuntimeKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Descriptor versions edgeio accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApiVersion {
    /// The thesis' format, accepted exactly as written.
    #[serde(rename = "v0.1")]
    V0_1,
    /// The thesis' format plus replicas, ports, env, args, selectors, restart policy and more.
    #[serde(rename = "v1")]
    V1,
}

impl ApiVersion {
    /// Every supported version, as written in descriptors.
    pub const SUPPORTED: &'static [&'static str] = &["v0.1", "v1"];

    /// The version as written in descriptors.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V0_1 => "v0.1",
            ApiVersion::V1 => "v1",
        }
    }
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// A port the instance listens on, optionally published on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// Port inside the instance.
    pub container: u16,
    /// Port on the host; `None` lets the runtime pick one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<u16>,
    /// TCP or UDP.
    #[serde(default)]
    pub protocol: Protocol,
}

/// The most replicas a job may ask for (in its descriptor, or when scaled).
pub const MAX_REPLICAS: u32 = 1000;

/// When a node restarts an instance whose process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartKind {
    /// Never restart; a failure relocates or fails the instance.
    Never,
    /// Restart after a non-zero exit, up to the limit (the default).
    #[default]
    OnFailure,
    /// Restart after any exit, up to the limit.
    Always,
}

/// Restart on the same node up to `limit` times, waiting `backoff_ms` (doubling) in between;
/// past the limit the instance is relocated to another node, past that it is FAILED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// When to restart.
    pub policy: RestartKind,
    /// Restarts on the same node before relocation.
    pub limit: u32,
    /// First backoff in milliseconds; doubles on each restart.
    pub backoff_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            policy: RestartKind::OnFailure,
            limit: 3,
            backoff_ms: 1000,
        }
    }
}

/// The state of another job that lets this one start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DependencyCondition {
    /// The other job runs (the default).
    #[default]
    Running,
    /// The other job exited with code 0.
    Succeeded,
    /// The other job failed.
    Failed,
}

/// "Start me when job `job` is in `condition`."
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dependency {
    /// The other job's name.
    pub job: String,
    /// The state it must reach.
    #[serde(default)]
    pub condition: DependencyCondition,
}

/// A validated, normalized job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The version the descriptor was written in (kept for display only).
    pub api_version: ApiVersion,
    /// The job's name (`job_name`).
    pub name: String,
    /// Image reference (container image, unikernel file, or executable path).
    pub image: String,
    /// Canonical runtime kind (aliases resolved).
    pub runtime: RuntimeKind,
    /// What one instance needs.
    pub resources: Resources,
    /// How many instances.
    pub replicas: u32,
    /// Ports to expose.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Arguments to the image's entry point.
    #[serde(default)]
    pub args: Vec<String>,
    /// Labels a node must carry.
    #[serde(default)]
    pub node_selector: Labels,
    /// Required CPU architecture.
    #[serde(default)]
    pub arch: Option<Arch>,
    /// Preferred location of the cluster (thesis `cluster_location`).
    #[serde(default)]
    pub cluster_location: Option<Location>,
    /// Pinned worker node (thesis `worker_node`), by node id or name.
    #[serde(default)]
    pub worker_node: Option<String>,
    /// Pinned target cluster.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Restart policy on the same node.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Jobs that must reach a state first.
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
    /// Names of jobs to place on the same node.
    #[serde(default)]
    pub affinity: Vec<String>,
    /// Names of jobs never to share a node with.
    #[serde(default)]
    pub anti_affinity: Vec<String>,
}

impl JobSpec {
    /// A minimal spec, handy for tests and examples: one replica, default restart policy.
    pub fn minimal(
        name: impl Into<String>,
        image: impl Into<String>,
        runtime: impl Into<RuntimeKind>,
        resources: Resources,
    ) -> JobSpec {
        JobSpec {
            api_version: ApiVersion::V1,
            name: name.into(),
            image: image.into(),
            runtime: runtime.into(),
            resources,
            replicas: 1,
            ports: Vec::new(),
            env: BTreeMap::new(),
            args: Vec::new(),
            node_selector: Labels::new(),
            arch: None,
            cluster_location: None,
            worker_node: None,
            cluster: None,
            restart: RestartPolicy::default(),
            depends_on: Vec::new(),
            affinity: Vec::new(),
            anti_affinity: Vec::new(),
        }
    }
}

/// What a runtime is asked to run: one instance of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// The instance's id; everything the runtime creates is labelled with it.
    pub id: InstanceId,
    /// The job it belongs to.
    pub job: JobId,
    /// Image reference (container image, unikernel file, executable).
    pub image: String,
    /// The runtime kind that must run it.
    pub kind: RuntimeKind,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Limits to apply.
    #[serde(default)]
    pub resources: Resources,
    /// Extra labels to attach (the runtime adds the instance and job ids itself).
    #[serde(default)]
    pub labels: Labels,
}

impl InstanceSpec {
    /// The spec for one instance of `job`.
    pub fn for_job(id: InstanceId, job_id: JobId, job: &JobSpec) -> InstanceSpec {
        InstanceSpec {
            id,
            job: job_id,
            image: job.image.clone(),
            kind: job.runtime.clone(),
            args: job.args.clone(),
            env: job.env.clone(),
            ports: job.ports.clone(),
            resources: job.resources,
            labels: Labels::new(),
        }
    }
}
