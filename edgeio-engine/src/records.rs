//! What the root and cluster engines keep in their [`Store`](edgeio_core::store::Store): one JSON
//! record per cluster, node and job, under `clusters/`, `nodes/` and `jobs/`.
//!
//! Records hold [`Lifecycle`]s, so every state change is checked against the one table in
//! [`edgeio_core::state`] and kept with its time and reason. A report that skipped states (an
//! event may report RUNNING for an instance the engine still knows as PENDING) is caught up
//! through the declared catch-up table ([`Lifecycle::reconcile`]), never a search; a refused
//! change is noted in [`Refusals`].

use edgeio_core::api::{ClusterView, InstanceView, JobView, NodeView, PartView};
use edgeio_core::clock::Context;
use edgeio_core::job::JobSpec;
use edgeio_core::model::{Candidate, Capabilities, InstanceId, JobId, Labels, Location, Resources};
use edgeio_core::scheduler::Unschedulable;
use edgeio_core::state::{
    ClusterState, InstanceState, JobState, Lifecycle, NodeState, StateMachine, TransitionError,
};
use edgeio_core::wire::ClusterAggregate;
use serde::{Deserialize, Serialize};
use std::time::Duration;

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
}

/// A job, as the root and its cluster keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id.
    pub id: JobId,
    /// Its spec.
    pub spec: JobSpec,
    /// Its lifecycle.
    pub lifecycle: Lifecycle<JobState>,
    /// The cluster it was given to.
    pub cluster: Option<String>,
    /// Its instances.
    pub instances: Vec<InstanceRecord>,
    /// The schedulers' explanations of the last attempts that failed.
    pub unschedulable: Vec<Unschedulable>,
    /// Clusters that refused it since it was last placed.
    pub refused_by: Vec<String>,
    /// The number of its first instance in this record: a job that ran elsewhere before
    /// continues the numbering, so an instance id names one placement only.
    #[serde(default)]
    pub first_instance: u32,
    /// The migration under way, while the job is MIGRATING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<Migration>,
    /// At a cluster: what its instance ids start with, when it holds one part of a job
    /// spread over clusters (see [`edgeio_core::wire::Deploy::instance_prefix`]); else the job's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_prefix: Option<String>,
    /// At the root: the clusters holding the job and how many replicas each, when it is
    /// spread over several because no one cluster could take them all. Empty when the job
    /// lives on one cluster ([`Self::cluster`]); else `cluster` is the first part's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
    /// At the root, while it is being placed: clusters that refused all its replicas but
    /// said how many they could take (cluster → count), so that it can be spread over them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub offers: std::collections::BTreeMap<String, u32>,
}

/// One cluster's part of a job spread over several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The cluster.
    pub cluster: String,
    /// How many of the job's replicas it runs.
    pub replicas: u32,
}

/// A make-before-break move in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// Instances from this index on are the new placement; those before it, the old one.
    pub first_new: usize,
    /// Where to, for people.
    pub target: String,
    /// At the root, when the move goes to another cluster: the cluster it leaves, told to
    /// terminate the job once the new placement runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_cluster: Option<String>,
    /// At the root, when the move goes to another cluster: the cluster it goes to (for a
    /// spread job, the one part that moves; the others stay where they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_cluster: Option<String>,
}

impl JobRecord {
    /// A job in `state` since `now_ms` (for `reason`), with no cluster, instance or history
    /// of placement yet: the one way both tiers create a record.
    pub fn new(id: JobId, spec: JobSpec, state: JobState, now_ms: u64, reason: &str) -> JobRecord {
        JobRecord {
            id,
            spec,
            lifecycle: Lifecycle::new(state, now_ms, reason),
            cluster: None,
            instances: Vec::new(),
            unschedulable: Vec::new(),
            refused_by: Vec::new(),
            first_instance: 0,
            migration: None,
            instance_prefix: None,
            parts: Vec::new(),
            offers: Default::default(),
        }
    }

    /// Whether the job is alive (its name is taken).
    pub fn is_live(&self) -> bool {
        !self.lifecycle.state().is_final()
    }

    /// The cluster a move across clusters goes to, until its new placement runs (the old
    /// cluster is then told to let go).
    pub fn moving_to(&self) -> Option<&str> {
        let m = self.migration.as_ref()?;
        m.from_cluster.as_ref()?;
        m.to_cluster.as_deref().or(self.cluster.as_deref())
    }

    /// Names the first part's cluster as the job's (`None` when it has no part): a spread
    /// job's `cluster` follows its parts, for views and for messages about it.
    pub fn cluster_from_parts(&mut self) {
        self.cluster = self.parts.first().map(|p| p.cluster.clone());
    }

    /// What `cluster` runs of the job: the whole spec, or for a spread job the spec with its
    /// part's count of replicas.
    pub fn spec_on(&self, cluster: &str) -> edgeio_core::job::JobSpec {
        let mut spec = self.spec.clone();
        if let Some(part) = self.parts.iter().find(|p| p.cluster == cluster) {
            spec.replicas = part.replicas;
        }
        spec
    }

    /// Whether `cluster` holds the job, or a part of it.
    pub fn holds(&self, cluster: &str) -> bool {
        self.cluster.as_deref() == Some(cluster) || self.parts.iter().any(|p| p.cluster == cluster)
    }

    /// The clusters holding the job (one, unless it is spread; none before it is placed).
    pub fn clusters(&self) -> Vec<String> {
        if self.parts.is_empty() {
            self.cluster.iter().cloned().collect()
        } else {
            self.parts.iter().map(|p| p.cluster.clone()).collect()
        }
    }

    /// The instance with this id.
    pub fn instance_mut(&mut self, id: &InstanceId) -> Option<&mut InstanceRecord> {
        self.instances.iter_mut().find(|i| &i.id == id)
    }

    /// The user's view.
    pub fn view(&self) -> JobView {
        JobView {
            id: self.id.clone(),
            name: self.spec.name.clone(),
            state: self.lifecycle.state(),
            history: self.lifecycle.history().to_vec(),
            cluster: self.cluster.clone(),
            parts: self
                .parts
                .iter()
                .map(|p| PartView {
                    cluster: p.cluster.clone(),
                    replicas: p.replicas,
                })
                .collect(),
            instances: self
                .instances
                .iter()
                .map(|i| InstanceView {
                    id: i.id.clone(),
                    node: i.node.clone(),
                    cluster: i.cluster.clone(),
                    state: i.lifecycle.state(),
                    exit_code: i.exit_code,
                    history: i.lifecycle.history().to_vec(),
                })
                .collect(),
            unschedulable: self.unschedulable.clone(),
            spec: self.spec.clone(),
        }
    }

    /// The job state its instances imply, if it differs from the current one: TERMINATED
    /// once a terminating job has nothing left, FAILED when an instance failed, RUNNING when
    /// every replica runs, SCHEDULED_NODE once instances are placed.
    pub fn implied_state(&self) -> Option<(JobState, String)> {
        let state = self.lifecycle.state();
        let states: Vec<InstanceState> =
            self.instances.iter().map(|i| i.lifecycle.state()).collect();
        match state {
            JobState::Migrating => return self.implied_by_change(),
            JobState::Scaling => {
                if let Some(done) = self.implied_by_change() {
                    return Some(done);
                }
            }
            _ => {}
        }
        let implied = match state {
            JobState::Terminating if self.instances.iter().all(InstanceRecord::is_over) => {
                (JobState::Terminated, "every instance stopped".to_string())
            }
            s if s.is_final() || s == JobState::Terminating => return None,
            // failed with nothing to take its place (a relocated failure has a replacement;
            // an exited one may be restarting)
            _ if states.contains(&InstanceState::Failed)
                && states
                    .iter()
                    .filter(|s| {
                        matches!(
                            s,
                            InstanceState::Pending
                                | InstanceState::Starting
                                | InstanceState::Running
                                | InstanceState::Restarting
                                | InstanceState::Exited
                                | InstanceState::Lost
                        )
                    })
                    .count()
                    < self.spec.replicas.max(1) as usize =>
            {
                let why = self
                    .instances
                    .iter()
                    .find(|i| i.lifecycle.state() == InstanceState::Failed)
                    .and_then(|i| i.lifecycle.history().last())
                    .map(|h| h.reason.clone())
                    .unwrap_or_default();
                (JobState::Failed, format!("an instance failed: {why}"))
            }
            _ if edgeio_core::state::all_replicas_running(self.spec.replicas, &states) => {
                (JobState::Running, "every replica runs".to_string())
            }
            JobState::ScheduledCluster if !self.instances.is_empty() => (
                JobState::ScheduledNode,
                format!("placed on {}", self.node_names().join(", ")),
            ),
            // a replacement is on its way (an instance was lost with its node)
            JobState::Running
                if states
                    .iter()
                    .any(|s| matches!(s, InstanceState::Pending | InstanceState::Starting)) =>
            {
                let why = self
                    .instances
                    .iter()
                    .rev()
                    .find(|i| i.lifecycle.state() == InstanceState::Pending)
                    .and_then(|i| i.lifecycle.history().first())
                    .map_or_else(
                        || "an instance is starting".to_string(),
                        |h| h.reason.clone(),
                    );
                (JobState::ScheduledNode, why)
            }
            _ => return None,
        };
        if state == JobState::Scaling && implied.0 != JobState::Failed {
            // a change of count ends when the count is reached, not when some replicas run
            return None;
        }
        (implied.0 != state).then_some(implied)
    }

    /// Marks LOST the live instances `which` picks, each change recorded with `why`; one the
    /// table refuses (an exited instance stays EXITED) is noted in `refusals`. Returns the
    /// instances that became LOST.
    pub fn lose(
        &mut self,
        which: impl Fn(&InstanceRecord) -> bool,
        now_ms: u64,
        why: &str,
        refusals: &mut Refusals,
    ) -> Vec<InstanceId> {
        let mut lost = Vec::new();
        for instance in self
            .instances
            .iter_mut()
            .filter(|i| !i.is_over() && which(i))
        {
            let moved = instance
                .lifecycle
                .reconcile(InstanceState::Lost, now_ms, why);
            let instead = "it keeps its state (an exited instance stays EXITED)";
            if refusals
                .check(moved, self.id.as_str(), Some(&instance.id), instead)
                .is_some()
            {
                lost.push(instance.id.clone());
            }
        }
        lost
    }

    /// Moves the job to the state its instances imply, step by step (see [`Self::implied_state`]).
    pub fn settle(&mut self, now_ms: u64, refusals: &mut Refusals) {
        while let Some((state, why)) = self.implied_state() {
            if let Err(e) = self.lifecycle.reconcile(state, now_ms, &why) {
                // the implied state is unreachable from here: it stays as it is until the
                // next report moves it
                refusals.note(self.id.as_str(), None, &e, "the job keeps its state");
                break;
            }
            tracing::info!(job = %self.id, state = %state, "job state");
        }
        if self.lifecycle.state() != JobState::Migrating {
            self.migration = None;
        }
    }

    /// What a MIGRATING or SCALING job's instances imply: RUNNING once the move or the
    /// change of count is complete (or a move failed and the old placement stays).
    fn implied_by_change(&self) -> Option<(JobState, String)> {
        let counts = |from: usize, pick: &dyn Fn(InstanceState) -> bool| {
            self.instances
                .iter()
                .skip(from)
                .filter(|i| pick(i.lifecycle.state()))
                .count()
        };
        match self.lifecycle.state() {
            JobState::Migrating => {
                let m = self.migration.as_ref()?;
                let new = &self.instances.get(m.first_new..)?;
                // the instances that stay (other replicas, other parts) and the new ones that
                // run make the count again once those being replaced are going
                let staying = self.instances[..m.first_new]
                    .iter()
                    .filter(|i| {
                        !i.is_over()
                            && !matches!(
                                i.lifecycle.state(),
                                InstanceState::Terminating | InstanceState::Lost
                            )
                    })
                    .count();
                let running = counts(m.first_new, &|s| s == InstanceState::Running);
                if running > 0 && staying + running <= self.spec.replicas as usize {
                    let ids: Vec<&str> = new.iter().map(|i| i.id.as_str()).collect();
                    return Some((
                        JobState::Running,
                        format!("migrated to {}: {} runs", m.target, ids.join(", ")),
                    ));
                }
                if !new.is_empty() && new.iter().all(InstanceRecord::is_over) {
                    let why = new
                        .last()
                        .and_then(|i| i.lifecycle.history().last())
                        .map(|h| h.reason.clone())
                        .unwrap_or_default();
                    return Some((
                        JobState::Running,
                        format!(
                            "migration to {} abandoned, the old placement stays: {why}",
                            m.target
                        ),
                    ));
                }
                None
            }
            JobState::Scaling => {
                let running = counts(0, &|s| s == InstanceState::Running);
                let moving = counts(0, &|s| {
                    matches!(
                        s,
                        InstanceState::Pending
                            | InstanceState::Starting
                            | InstanceState::Terminating
                    )
                });
                (running == self.spec.replicas as usize && moving == 0).then(|| {
                    (
                        JobState::Running,
                        format!("scaled to {} replicas", self.spec.replicas),
                    )
                })
            }
            _ => None,
        }
    }

    /// The id for its next new instance.
    pub fn next_instance_id(&self) -> InstanceId {
        let n = self.first_instance as usize + self.instances.len();
        let prefix = self.instance_prefix.as_deref().unwrap_or(self.id.as_str());
        // a prefix too long for an id with its number: a stable hash of it instead (FNV-1a,
        // the same in every run, so a replayed decision names the same instance)
        InstanceId::new(format!("{prefix}-{n}")).unwrap_or_else(|_| {
            let hash = prefix.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            InstanceId::from_uuid(uuid::Uuid::from_u64_pair(hash, n as u64))
        })
    }

    /// The nodes its instances were placed on, in instance order, without repeats.
    pub fn node_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for node in self.instances.iter().filter_map(|i| i.node.clone()) {
            if !names.contains(&node) {
                names.push(node);
            }
        }
        names
    }
}

/// Reads every record under `prefix`. An unreadable one is skipped with a warning naming its
/// key: one damaged record must not keep an engine from starting with all the others.
pub async fn load<T: serde::de::DeserializeOwned>(
    store: &dyn edgeio_core::store::Store,
    prefix: &str,
) -> Result<Vec<T>, edgeio_core::store::StoreError> {
    let mut records = Vec::new();
    for kv in store.list(prefix).await?.items {
        match serde_json::from_slice::<T>(&kv.value) {
            Ok(record) => records.push(record),
            Err(e) => tracing::warn!(key = %kv.key, error = %e, "skipping an unreadable record"),
        }
    }
    Ok(records)
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

    #[test]
    fn job_ids_are_readable_and_valid() {
        let id = new_job_id("web server", &Context::system());
        assert!(id.as_str().starts_with("web-server-"), "{id}");
        assert_eq!(id.as_str().len(), "web-server-".len() + 8);
        assert!(new_job_id("..", &Context::system()).as_str().len() > 8);
    }
}
