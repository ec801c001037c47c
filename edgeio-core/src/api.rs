//! What the root engine offers its users, as plain Rust: the [`RootApi`] trait, the views it
//! answers with and its error enum.
//!
//! The REST router (in `edgeio-transport-ws`) is a thin layer that maps HTTP onto this trait
//! and [`ApiError`] onto status codes; a program embedding edgeio calls the trait directly.
//! Keeping it a trait lets the router be tested against a fake and lets integrators put
//! their own layers (auth, audit, rate limits) around the engine's handle.

use crate::job::{FieldError, JobSpec};
use crate::model::InstanceId;
use crate::model::{Capabilities, JobId, Labels, Location, Resources};
use crate::scheduler::Unschedulable;
use crate::state::{ClusterState, HistoryEntry, InstanceState, JobState, NodeState};
use crate::wire::ClusterAggregate;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

/// One instance of a job, as users see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    /// The instance.
    pub id: InstanceId,
    /// The node running it, once placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The cluster that reported it (a spread job has instances on several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Its state now.
    pub state: InstanceState,
    /// Exit code of its last exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Every state it went through, with time and reason.
    pub history: Vec<HistoryEntry<InstanceState>>,
}

/// A job as users see it: state, history, where it runs, its instances and, when it could
/// not be placed, the scheduler's explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    /// The job's id.
    pub id: JobId,
    /// Its `job_name`.
    pub name: String,
    /// Its state now.
    pub state: JobState,
    /// Every state it went through, with time (unix ms) and reason.
    pub history: Vec<HistoryEntry<JobState>>,
    /// The cluster it was given to, once scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// When no one cluster could take all its replicas: each cluster holding some, and how
    /// many (`cluster` is then the first of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartView>,
    /// Its instances (one per replica, plus ones being replaced).
    #[serde(default)]
    pub instances: Vec<InstanceView>,
    /// Why it could not be placed, per tier and filter (the last attempt's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unschedulable: Vec<Unschedulable>,
    /// The normalized spec it was submitted with.
    pub spec: JobSpec,
}

/// One cluster's share of a job spread over several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartView {
    /// The cluster.
    pub cluster: String,
    /// How many of the job's replicas it runs.
    pub replicas: u32,
}

/// A cluster as users see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The cluster's id.
    pub id: String,
    /// Its configured name.
    pub name: String,
    /// ACTIVE or INACTIVE.
    pub state: ClusterState,
    /// Every state it went through.
    pub history: Vec<HistoryEntry<ClusterState>>,
    /// Where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Its labels.
    #[serde(default)]
    pub labels: Labels,
    /// Its last aggregate, once one arrived: counts, sums, a summary of its nodes' labels
    /// and a filter of their ids, of bounded size (its nodes are listed under
    /// `/clusters/{id}/nodes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<ClusterAggregate>,
    /// When the root last heard from it (unix ms).
    pub last_seen_ms: u64,
}

/// A worker node as its cluster reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// The node's id.
    pub id: String,
    /// Its name (host name or `--name`).
    pub name: String,
    /// READY or LOST.
    pub state: NodeState,
    /// What it registered with.
    pub capabilities: Capabilities,
    /// Resources not in use, as of its last status.
    pub free: Resources,
    /// Resources in all.
    pub total: Resources,
    /// How many instances it runs.
    pub instances: usize,
    /// How busy its host is, as of its last status (when the worker measures it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::wire::HostUsage>,
    /// When the cluster last heard from it (unix ms).
    pub last_seen_ms: u64,
}

/// Which logs to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogsQuery {
    /// Only the last `tail` lines; all kept lines when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<usize>,
    /// Keep the stream open and send new lines as they are written.
    #[serde(default)]
    pub follow: bool,
}

/// Errors of the user-facing API. The REST router maps each variant onto one status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request breaks rules (HTTP 400); every problem is listed with field, value and rule.
    #[error("{message}")]
    Invalid {
        /// One line for people.
        message: String,
        /// Each problem.
        details: Vec<FieldError>,
    },
    /// No such object (HTTP 404).
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// `job`, `cluster`, `node`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The request clashes with what exists (HTTP 409), e.g. a second live job of one name.
    #[error("{message}")]
    Conflict {
        /// What clashes with what.
        message: String,
        /// The field and value at fault.
        details: Vec<FieldError>,
    },
    /// This engine or a component it needs cannot do it (HTTP 501).
    #[error("{what} is not supported: {reason}")]
    Unsupported {
        /// The operation.
        what: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// The answer needs a part that cannot be reached now (HTTP 503): retry later.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// What cannot be reached.
        reason: String,
    },
}

impl ApiError {
    /// A stable code a program can match (`invalid`, `not_found`, `conflict`, `unsupported`,
    /// `unavailable`), as in the REST error body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } => "invalid",
            ApiError::NotFound { .. } => "not_found",
            ApiError::Conflict { .. } => "conflict",
            ApiError::Unsupported { .. } => "unsupported",
            ApiError::Unavailable { .. } => "unavailable",
        }
    }

    /// The field-level problems, empty where the error is not about fields.
    pub fn details(&self) -> &[FieldError] {
        match self {
            ApiError::Invalid { details, .. } | ApiError::Conflict { details, .. } => details,
            _ => &[],
        }
    }
}

/// Log bytes of a job's instances, as a stream (it ends unless `follow` was asked for).
pub type LogStream = BoxStream<'static, Result<Bytes, ApiError>>;

/// What the root orchestrator offers users. Implemented by the root engine's handle.
#[async_trait]
pub trait RootApi: Send + Sync {
    /// Accepts a job (already parsed and validated) and answers at once with its view in
    /// REQUESTED; scheduling continues in the background. [`ApiError::Conflict`] when a job
    /// of the same name is alive (not TERMINATED, FAILED).
    async fn submit(&self, spec: JobSpec) -> Result<JobView, ApiError>;

    /// Every job, terminated ones included, oldest first.
    async fn jobs(&self) -> Result<Vec<JobView>, ApiError>;

    /// One job.
    async fn job(&self, id: &str) -> Result<JobView, ApiError>;

    /// Starts terminating a job; it stays visible as TERMINATED afterwards.
    async fn terminate(&self, id: &str) -> Result<JobView, ApiError>;

    /// Every cluster that ever registered.
    async fn clusters(&self) -> Result<Vec<ClusterView>, ApiError>;

    /// One cluster.
    async fn cluster(&self, id: &str) -> Result<ClusterView, ApiError>;

    /// The nodes of a cluster, asked of the cluster over its link.
    async fn nodes(&self, cluster: &str) -> Result<Vec<NodeView>, ApiError>;

    /// The logs of a job's instances, fetched from their workers through their cluster.
    async fn logs(&self, job: &str, query: LogsQuery) -> Result<LogStream, ApiError>;

    /// Changes a job's number of replicas (1 ..= [`MAX_REPLICAS`](crate::job::MAX_REPLICAS)):
    /// the job goes SCALING; its cluster places the missing ones (all or none) or terminates
    /// the newest beyond the count; RUNNING again once the count runs. Replicas its cluster
    /// has no room for go to another cluster (the job is then spread, see
    /// [`JobView::parts`]); when no cluster has room, the old count stays, with the reason in
    /// the history. A spread job shrinks from its newest part.
    async fn scale(&self, job: &str, replicas: u32) -> Result<JobView, ApiError> {
        let _ = (job, replicas);
        Err(ApiError::Unsupported {
            what: "scale".into(),
            reason: "this API implementation does not scale jobs".into(),
        })
    }

    /// Moves a RUNNING job (or one of its instances) make-before-break: to a node (of its
    /// cluster or another), to another cluster, or anywhere else. The job goes MIGRATING;
    /// the old instance is terminated once the new one runs; RUNNING again after. A move
    /// that cannot be made leaves the job where it ran, with the reason in the history.
    /// A job spread over several clusters moves one part at a time: the part of the named
    /// instance (or of the named node's cluster), inside its cluster or as a whole to a
    /// cluster holding no part of the job; the other parts stay where they run.
    async fn migrate(
        &self,
        job: &str,
        target: crate::wire::MigrateTarget,
        instance: Option<crate::model::InstanceId>,
    ) -> Result<JobView, ApiError> {
        let _ = (job, target, instance);
        Err(ApiError::Unsupported {
            what: "migrate".into(),
            reason: "this API implementation does not migrate jobs".into(),
        })
    }
}
