//! A job's record: what both tiers keep of it ([`JobRecord`]) and what only the root
//! ([`AtRoot`]) or only a cluster ([`AtCluster`]) adds, stored as one flat JSON object.
//!
//! Format 0 (before the split) kept every tier's fields in every record; a format-0 record
//! reads as either tier's, the other tier's fields dropped (they were never used there), and
//! is written back in this format at its next change. A record of a newer format than
//! [`JOB_FORMAT`] is not read (see [`super::load`]): a downgrade must not silently lose what
//! a newer version stored.

use super::InstanceRecord;
use edgeio_core::api::{InstanceView, JobView, PartView};
use edgeio_core::job::JobSpec;
use edgeio_core::model::{InstanceId, JobId};
use edgeio_core::scheduler::Unschedulable;
use edgeio_core::state::{JobState, Lifecycle, StateMachine};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The format job records are written in. 0: one record type for both tiers (until the
/// engine split); 1: shared fields plus the tier's own.
pub const JOB_FORMAT: u32 = 1;

/// A job, as the root and its cluster keep it: the shared fields, and `at`, what only its
/// tier keeps ([`RootJob`], [`ClusterJob`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord<T> {
    /// The format it was written in (absent in format 0).
    #[serde(default)]
    pub format: u32,
    /// The job's id.
    pub id: JobId,
    /// Its spec.
    pub spec: JobSpec,
    /// Its lifecycle.
    pub lifecycle: Lifecycle<JobState>,
    /// Its instances.
    pub instances: Vec<InstanceRecord>,
    /// The schedulers' explanations of the last attempts that failed.
    pub unschedulable: Vec<Unschedulable>,
    /// The number of its first instance in this record: a job that ran elsewhere before
    /// continues the numbering, so an instance id names one placement only.
    #[serde(default)]
    pub first_instance: u32,
    /// The migration under way, while the job is MIGRATING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<Migration>,
    /// What only its tier keeps.
    #[serde(flatten)]
    pub at: T,
}

/// A job as the root keeps it.
pub type RootJob = JobRecord<AtRoot>;
/// A job as a cluster keeps it.
pub type ClusterJob = JobRecord<AtCluster>;

/// What only the root keeps of a job: where it was placed and how placing it went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtRoot {
    /// The cluster it was given to.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Clusters that refused it since it was last placed.
    #[serde(default)]
    pub refused_by: Vec<String>,
    /// The clusters holding the job and how many replicas each, when it is spread over
    /// several because no one cluster could take them all. Empty when the job lives on one
    /// cluster ([`Self::cluster`]); else `cluster` is the first part's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
    /// While it is being placed: clusters that refused all its replicas but said how many
    /// they could take (cluster → count), so that it can be spread over them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub offers: BTreeMap<String, u32>,
}

/// What only a cluster keeps of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtCluster {
    /// What its instance ids start with, when it holds one part of a job spread over
    /// clusters (see [`edgeio_core::wire::Deploy::instance_prefix`]); else the job's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_prefix: Option<String>,
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

impl<T: Default> JobRecord<T> {
    /// A job in `state` since `now_ms` (for `reason`), with no instance or history of
    /// placement yet, in today's format: the one way both tiers create a record.
    pub fn new(id: JobId, spec: JobSpec, state: JobState, now_ms: u64, reason: &str) -> Self {
        JobRecord {
            format: JOB_FORMAT,
            id,
            spec,
            lifecycle: Lifecycle::new(state, now_ms, reason),
            instances: Vec::new(),
            unschedulable: Vec::new(),
            first_instance: 0,
            migration: None,
            at: T::default(),
        }
    }
}

impl<T> JobRecord<T> {
    /// The record as today's format writes it: a record read from an older format keeps
    /// everything this tier uses (format 0 differed only in holding the other tier's fields,
    /// which reading it dropped).
    pub fn upgraded(mut self) -> Self {
        self.format = JOB_FORMAT;
        self
    }

    /// Whether the job is alive (its name is taken).
    pub fn is_live(&self) -> bool {
        !self.lifecycle.state().is_final()
    }

    /// The instance with this id.
    pub fn instance_mut(&mut self, id: &InstanceId) -> Option<&mut InstanceRecord> {
        self.instances.iter_mut().find(|i| &i.id == id)
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

impl RootJob {
    /// The cluster a move across clusters goes to, until its new placement runs (the old
    /// cluster is then told to let go).
    pub fn moving_to(&self) -> Option<&str> {
        let m = self.migration.as_ref()?;
        m.from_cluster.as_ref()?;
        m.to_cluster.as_deref().or(self.at.cluster.as_deref())
    }

    /// Names the first part's cluster as the job's (`None` when it has no part): a spread
    /// job's `cluster` follows its parts, for views and for messages about it.
    pub fn cluster_from_parts(&mut self) {
        self.at.cluster = self.at.parts.first().map(|p| p.cluster.clone());
    }

    /// What `cluster` runs of the job: the whole spec, or for a spread job the spec with its
    /// part's count of replicas.
    pub fn spec_on(&self, cluster: &str) -> JobSpec {
        let mut spec = self.spec.clone();
        if let Some(part) = self.at.parts.iter().find(|p| p.cluster == cluster) {
            spec.replicas = part.replicas;
        }
        spec
    }

    /// Whether `cluster` holds the job, or a part of it.
    pub fn holds(&self, cluster: &str) -> bool {
        self.at.cluster.as_deref() == Some(cluster)
            || self.at.parts.iter().any(|p| p.cluster == cluster)
    }

    /// The clusters holding the job (one, unless it is spread; none before it is placed).
    pub fn clusters(&self) -> Vec<String> {
        if self.at.parts.is_empty() {
            self.at.cluster.iter().cloned().collect()
        } else {
            self.at.parts.iter().map(|p| p.cluster.clone()).collect()
        }
    }

    /// The user's view.
    pub fn view(&self) -> JobView {
        JobView {
            id: self.id.clone(),
            name: self.spec.name.clone(),
            state: self.lifecycle.state(),
            history: self.lifecycle.history().to_vec(),
            cluster: self.at.cluster.clone(),
            parts: self
                .at
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
}

impl ClusterJob {
    /// The id for its next new instance.
    pub fn next_instance_id(&self) -> InstanceId {
        let n = self.first_instance as usize + self.instances.len();
        let prefix = self
            .at
            .instance_prefix
            .as_deref()
            .unwrap_or(self.id.as_str());
        // a prefix too long for an id with its number: a stable hash of it instead (FNV-1a,
        // the same in every run, so a replayed decision names the same instance)
        InstanceId::new(format!("{prefix}-{n}")).unwrap_or_else(|_| {
            let hash = prefix.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            InstanceId::from_uuid(uuid::Uuid::from_u64_pair(hash, n as u64))
        })
    }
}
