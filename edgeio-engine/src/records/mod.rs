//! What the root and cluster engines keep in their [`Store`](edgeio_core::store::Store): one JSON
//! record per cluster, node and job, under `clusters/`, `nodes/` and `jobs/`.
//!
//! Records hold [`Lifecycle`]s, so every state change is checked against the one table in
//! [`edgeio_core::state`] and kept with its time and reason. A report that skipped states (an
//! event may report RUNNING for an instance the engine still knows as PENDING) is caught up
//! through the declared catch-up table ([`Lifecycle::reconcile`]), never a search; a refused
//! change is noted in [`Refusals`].

use edgeio_core::api::{ClusterView, NodeView};
use edgeio_core::clock::Context;
use edgeio_core::model::{Candidate, Capabilities, InstanceId, JobId, Labels, Location, Resources};
use edgeio_core::state::{ClusterState, InstanceState, Lifecycle, NodeState, TransitionError};
use edgeio_core::wire::ClusterAggregate;
use serde::{Deserialize, Serialize};
use std::time::Duration;

mod implied;
mod job;

pub use job::{AtCluster, AtRoot, ClusterJob, JobRecord, Migration, Part, RootJob, JOB_FORMAT};

/// Key prefix of cluster records.
pub const CLUSTERS: &str = "clusters/";
/// Key prefix of node records.
pub const NODES: &str = "nodes/";
/// Key prefix of job records.
pub const JOBS: &str = "jobs/";

/// Refused state changes: each is logged with the ids of what it concerned and counted, and
/// the code that asked says what the engine does instead. A refusal is not a failure of the
/// engine: late, duplicate and post-termination events are refused by design. The count is
/// what a test or the simulator checks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refusals {
    count: u64,
}

impl Refusals {
    /// How many state changes were refused so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// `Some` of a change that was made; `None`, noted as a refusal (see [`Refusals::note`]),
    /// when it was refused.
    pub fn check<T>(
        &mut self,
        made: Result<T, TransitionError>,
        job: &str,
        instance: Option<&InstanceId>,
        instead: &str,
    ) -> Option<T> {
        made.map_err(|e| self.note(job, instance, &e, instead)).ok()
    }

    /// Records one refusal of a change of `job` (and `instance`), and what happens `instead`.
    pub fn note(
        &mut self,
        job: &str,
        instance: Option<&InstanceId>,
        error: &TransitionError,
        instead: &str,
    ) {
        self.count += 1;
        match instance {
            Some(instance) => {
                tracing::info!(job, %instance, %error, instead, "state change refused")
            }
            None => tracing::info!(job, %error, instead, "state change refused"),
        }
    }
}

/// A worker node, as its cluster keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What it registered with.
    pub capabilities: Capabilities,
    /// READY / LOST, with history.
    pub lifecycle: Lifecycle<NodeState>,
    /// Free resources as of its last status.
    pub free: Resources,
    /// Resources in all.
    pub total: Resources,
    /// Instances it reported running.
    pub instances: usize,
    /// Its host's CPU and memory use as of its last status.
    #[serde(default)]
    pub usage: Option<edgeio_core::wire::HostUsage>,
    /// When the cluster last heard from it (unix ms).
    pub last_seen_ms: u64,
}

impl NodeRecord {
    /// The node's resources in all, from its capabilities.
    pub fn total_of(capabilities: &Capabilities) -> Resources {
        Resources {
            cpu_millis: u64::from(capabilities.cores) * 1000,
            memory_bytes: capabilities.memory_bytes,
            disk_bytes: capabilities.disk_bytes,
            gpus: capabilities.gpus,
        }
    }

    /// The node as the scheduler sees it, `now_ms` telling the age of its data.
    pub fn candidate(&self, now_ms: u64) -> Candidate {
        let mut c = Candidate::new(self.id.clone(), self.total);
        c.free = self.free;
        c.labels = self.capabilities.labels.clone();
        c.location = self.capabilities.location.clone();
        c.architectures = vec![self.capabilities.arch.clone()];
        c.runtimes = self
            .capabilities
            .runtimes
            .iter()
            .map(|r| r.kind.clone())
            .collect();
        c.data_age = Duration::from_millis(now_ms.saturating_sub(self.last_seen_ms));
        c
    }

    /// The user's view.
    pub fn view(&self) -> NodeView {
        NodeView {
            id: self.id.clone(),
            name: self.name.clone(),
            state: self.lifecycle.state(),
            capabilities: self.capabilities.clone(),
            free: self.free,
            total: self.total,
            instances: self.instances,
            usage: self.usage,
            last_seen_ms: self.last_seen_ms,
        }
    }
}

/// A cluster, as the root keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The cluster's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Where it is.
    pub location: Option<Location>,
    /// Its labels.
    pub labels: Labels,
    /// ACTIVE / INACTIVE, with history.
    pub lifecycle: Lifecycle<ClusterState>,
    /// Its last aggregate.
    pub aggregate: Option<ClusterAggregate>,
    /// When the root last heard from it (unix ms).
    pub last_seen_ms: u64,
}

impl ClusterRecord {
    /// The cluster as the root scheduler sees it, when it has reported an aggregate: its free
    /// resources are those of its emptiest node, since one instance needs one node that fits;
    /// its labels are its own plus the pairs of `selector` that some READY node may carry by
    /// its aggregate's label summary (all of them when it sent none). The summary is per key,
    /// so the cluster may pass where no single node matches every pair: it then refuses the
    /// deploy and the job goes on to the next cluster.
    pub fn candidate(&self, now_ms: u64, selector: &Labels) -> Option<Candidate> {
        let agg = self.aggregate.as_ref()?;
        let mut c = Candidate::new(self.id.clone(), agg.total);
        c.free = agg.largest_free;
        c.labels = self.labels.clone();
        c.labels.extend(agg.labels.clone());
        for (k, v) in selector {
            let maybe = agg
                .node_label_summary
                .as_ref()
                .is_none_or(|s| s.may_have(k, v));
            if maybe {
                c.labels.insert(k.clone(), v.clone());
            }
        }
        c.location = self.location.clone().or_else(|| agg.location.clone());
        c.architectures = agg.architectures.clone();
        c.runtimes = agg.runtimes.clone();
        c.data_age = Duration::from_millis(now_ms.saturating_sub(self.last_seen_ms));
        Some(c)
    }

    /// Whether its last aggregate says it may have a READY node `node` (its Bloom filter:
    /// false for certain, true maybe; true when the cluster sends no filter, as older ones
    /// do, so a pin reaches them and a refusal sends it on).
    pub fn may_have_node(&self, node: &str) -> bool {
        self.aggregate
            .as_ref()
            .is_some_and(|a| a.node_filter.as_ref().is_none_or(|f| f.may_contain(node)))
    }

    /// The user's view.
    pub fn view(&self) -> ClusterView {
        ClusterView {
            id: self.id.clone(),
            name: self.name.clone(),
            state: self.lifecycle.state(),
            history: self.lifecycle.history().to_vec(),
            location: self.location.clone(),
            labels: self.labels.clone(),
            aggregate: self.aggregate.clone(),
            last_seen_ms: self.last_seen_ms,
        }
    }
}

/// One instance of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The instance.
    pub id: InstanceId,
    /// The node it was placed on.
    pub node: Option<String>,
    /// Its lifecycle.
    pub lifecycle: Lifecycle<InstanceState>,
    /// Exit code of its last exit.
    pub exit_code: Option<i32>,
    /// The instance it takes over from (a migration): that one is terminated once this one
    /// runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<InstanceId>,
    /// At the root: the cluster that reported it (a job spread over clusters has instances
    /// on several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

impl InstanceRecord {
    /// Whether it is over (nothing of it runs any more, nor will).
    pub fn is_over(&self) -> bool {
        matches!(
            self.lifecycle.state(),
            InstanceState::Terminated | InstanceState::Failed | InstanceState::Exited
        )
    }

    /// Whether it counts towards its job's replicas: not over, and neither lost with its
    /// node nor being stopped.
    pub fn counts_as_replica(&self) -> bool {
        !self.is_over()
            && !matches!(
                self.lifecycle.state(),
                InstanceState::Lost | InstanceState::Terminating
            )
    }
}

/// Reads every record under `prefix`. An unreadable one is skipped with a warning naming its
/// key: one damaged record must not keep an engine from starting with all the others. So is a
/// record written in a newer format than this version knows ([`JOB_FORMAT`]): read with
/// today's types it could lose what the newer version stored, and writing it back would.
pub async fn load<T: serde::de::DeserializeOwned>(
    store: &dyn edgeio_core::store::Store,
    prefix: &str,
) -> Result<Vec<T>, edgeio_core::store::StoreError> {
    let mut records = Vec::new();
    for kv in store.list(prefix).await?.items {
        match decode::<T>(&kv.value) {
            Ok(record) => records.push(record),
            Err(e) => tracing::warn!(key = %kv.key, error = %e, "skipping an unreadable record"),
        }
    }
    Ok(records)
}

/// Decodes one stored record, refusing one of a newer format than [`JOB_FORMAT`].
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    /// The one field every format has where it has one.
    #[derive(Deserialize)]
    struct Format {
        #[serde(default)]
        format: u32,
    }
    let format = serde_json::from_slice::<Format>(bytes)
        .map_err(|e| e.to_string())?
        .format;
    if format > JOB_FORMAT {
        return Err(format!(
            "format: {format} is newer than this version reads (at most {JOB_FORMAT}); upgrade edgeio"
        ));
    }
    serde_json::from_slice::<T>(bytes).map_err(|e| e.to_string())
}

/// A readable, unique-enough id for a new job: its name and eight hex digits drawn from `cx`.
pub fn new_job_id(name: &str, cx: &Context) -> JobId {
    let uuid = cx.next_uuid();
    let suffix = uuid.simple().to_string();
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    JobId::new(format!(
        "{}-{}",
        stem.trim_start_matches(['-', '.']),
        &suffix[..8]
    ))
    .unwrap_or_else(|_| JobId::from_uuid(uuid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeio_core::job::JobSpec;
    use edgeio_core::state::JobState;

    /// A RUNNING job of `replicas` with instances `n-0`, `n-1` … in `states`, in that order.
    fn job_with(replicas: u32, states: &[InstanceState]) -> ClusterJob {
        let mut spec = JobSpec::minimal("web", "fake:run", "native", Resources::ZERO);
        spec.replicas = replicas;
        let id = JobId::new("web-1").unwrap();
        let mut job = ClusterJob::new(id, spec, JobState::Running, 0, "every replica runs");
        for (n, state) in states.iter().enumerate() {
            let mut lifecycle = Lifecycle::new(InstanceState::Pending, 0, "placed");
            lifecycle.reconcile(*state, 1, "reported").unwrap();
            job.instances.push(InstanceRecord {
                id: InstanceId::new(format!("web-1-{n}")).unwrap(),
                node: Some(format!("w{n}")),
                lifecycle,
                exit_code: None,
                replaces: None,
                cluster: None,
            });
        }
        job
    }

    #[test]
    fn a_lost_instance_whose_replacements_all_failed_leaves_the_job_failed() {
        // seed 1543: w0 lost with web-1-0, relocated to w1, failed there, relocated to w2,
        // failed there too, and no node is left: nothing will run, the lost copy is replaced
        use InstanceState::{Failed, Lost, Running};
        let mut job = job_with(1, &[Lost, Failed, Failed]);
        let mut refusals = Refusals::default();
        job.settle(2, &mut refusals);
        assert_eq!(job.lifecycle.state(), JobState::Failed);
        assert_eq!(refusals.count(), 0);
        // a lost instance no later one replaced may come back: the job keeps its state
        let mut job = job_with(2, &[Failed, Lost, Running]);
        job.settle(2, &mut refusals);
        assert_eq!(job.lifecycle.state(), JobState::Running);
        let mut job = job_with(1, &[Failed, Lost]);
        job.settle(2, &mut refusals);
        assert_eq!(job.lifecycle.state(), JobState::Running);
    }

    #[test]
    fn job_ids_are_readable_and_valid() {
        let id = new_job_id("web server", &Context::system());
        assert!(id.as_str().starts_with("web-server-"), "{id}");
        assert_eq!(id.as_str().len(), "web-server-".len() + 8);
        assert!(new_job_id("..", &Context::system()).as_str().len() > 8);
    }
}
