//! The root engine (System Manager): takes jobs from users, schedules them over the
//! clusters' aggregates, gives each to a cluster, follows its instances through the events
//! the clusters relay, and answers users through [`RootHandle`] (which implements
//! [`RootApi`], the trait the REST router serves).
//!
//! Like the cluster engine, state lives behind one mutex and every change returns its
//! effects (records to persist, messages, commands), carried out after the lock is released.

use crate::effects::{record_json, Core, Effects, Outcome, Records, Running};
use crate::records::{
    load, new_job_id, ClusterRecord, InstanceRecord, Migration, Part, Refusals, RootJob, CLUSTERS,
    JOBS,
};
use async_trait::async_trait;
use edgeio_core::api::{ApiError, ClusterView, JobView, LogStream, LogsQuery, NodeView, RootApi};
use edgeio_core::clock::Context;
use edgeio_core::job::{FieldError, JobSpec, MAX_REPLICAS};
use edgeio_core::model::{check_id, CandidateSet, InstanceId, JobId, Labels, Tier};
use edgeio_core::reliable::{CommandOutcome, ReliableConfig, ReliableParent};
use edgeio_core::scheduler::{Scheduler, SchedulerError, Unschedulable};
use edgeio_core::state::{ClusterState, InstanceState, JobState, Lifecycle, StateMachine};
use edgeio_core::store::{Store, StoreExt};
use edgeio_core::transport::{ParentEvent, ParentTransport, Registrar, TransportError};
use edgeio_core::wire::{
    ChannelKind, ChannelSettings, ClusterAggregate, Deploy, Envelope, ErrorBody, InstanceEvent,
    Message, Migrate, MigrateTarget, PeerRole, Query, QueryReply, RegisterReply, RegisterRequest,
    Scale, Terminate, DEFAULT_MAX_MESSAGE_BYTES, MAX_PREFIX,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

mod events;
mod handle;
mod migration;
mod placement;
mod queries;
mod registry;
mod resync;
mod scaling;
mod sent;
mod spread;
mod termination;
#[cfg(test)]
mod tests;

pub use handle::RootHandle;

/// How the root engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootConfig {
    /// The root's id on the wire.
    pub id: String,
    /// How often clusters send their aggregate (told to them at registration).
    pub aggregate_interval: Duration,
    /// Grace period asked for when terminating a job.
    pub grace: Duration,
    /// How long a query to a cluster (nodes, logs) may take.
    pub query_timeout: Duration,
    /// Re-sending of commands to clusters.
    pub reliable: ReliableConfig,
    /// A cluster silent for this many aggregate intervals is INACTIVE (its link may look up).
    pub missed_aggregates: u32,
    /// A cluster INACTIVE for this long loses its jobs: the root places them elsewhere.
    pub cluster_timeout: Duration,
}

impl Default for RootConfig {
    fn default() -> Self {
        RootConfig {
            id: "root".into(),
            aggregate_interval: Duration::from_secs(1),
            grace: Duration::from_secs(10),
            query_timeout: Duration::from_secs(10),
            reliable: ReliableConfig::default(),
            missed_aggregates: 3,
            cluster_timeout: Duration::from_secs(30),
        }
    }
}

/// What a command to a cluster was for.
#[derive(Debug, Clone)]
pub(crate) enum Tag {
    Deploy {
        job: JobId,
        cluster: String,
    },
    Terminate {
        job: JobId,
        cluster: String,
    },
    Scale {
        job: JobId,
        cluster: String,
        from: u32,
    },
    Migrate {
        job: JobId,
        /// The cluster asked to move it (for a spread job, the part's).
        cluster: String,
        anywhere: bool,
        /// The node named as the target: refused, the job goes on to another cluster whose
        /// node filter may hold it (the first one's "maybe" may have been a false positive).
        node: Option<String>,
    },
}

impl Tag {
    /// The cluster the command went to.
    fn cluster(&self) -> &str {
        match self {
            Tag::Deploy { cluster, .. }
            | Tag::Terminate { cluster, .. }
            | Tag::Scale { cluster, .. }
            | Tag::Migrate { cluster, .. } => cluster,
        }
    }
}

pub(crate) type Fx = Effects<Tag>;

pub(crate) struct RootState {
    /// State changes refused so far (logged and counted; see [`Refusals`]).
    pub(crate) refusals: Refusals,
    /// Where decisions read the time and draw ids.
    pub(crate) cx: Context,
    config: RootConfig,
    scheduler: Arc<dyn Scheduler>,
    pub(crate) clusters: BTreeMap<String, ClusterRecord>,
    pub(crate) jobs: BTreeMap<String, RootJob>,
    /// Job names being created right now (their record is being written).
    reserving: Vec<String>,
    /// Queries sent to clusters, waiting for their reply.
    queries: BTreeMap<String, oneshot::Sender<Result<serde_json::Value, ApiError>>>,
    /// Followed logs: query id → the reader's end.
    streams: BTreeMap<String, mpsc::Sender<Result<bytes::Bytes, ApiError>>>,
    /// Re-sync queries sent to clusters whose link came up: query id → cluster.
    syncs: BTreeMap<String, String>,
    /// The ACTIVE clusters as candidates for a job with no node selector, kept up to date
    /// cluster by cluster (an aggregate, a cluster up or lost), so placing a job does not
    /// rebuild the set; `None` until first needed.
    offered: Option<CandidateSet>,
    /// The number of the last deploy sent (see [`sent`]).
    deploy_seq: u64,
    /// Per cluster, the deploys sent that its aggregate does not count yet (see [`sent`]).
    sent: BTreeMap<String, sent::Sent>,
    /// When this root read its records (ms): commands sent before went with the memory of
    /// the process that sent them (see `resync`).
    started_ms: u64,
}

/// The refusal in a command's outcome, if it was refused: why, and the scheduler's
/// explanation when nothing fit.
fn refusal(
    cluster: &str,
    outcome: Result<CommandOutcome, TransportError>,
) -> Option<(String, Option<Unschedulable>)> {
    match outcome {
        Ok(CommandOutcome::Acked) => None,
        Ok(CommandOutcome::Nacked(e)) => Some((e.message, None)),
        Ok(CommandOutcome::Unschedulable(e, u)) => Some((e.message, Some(*u))),
        // not a refusal: the cluster may have taken it; the loop re-syncs with the cluster
        // (`RootState::gave_up`), which settles what it runs
        Ok(CommandOutcome::GaveUp(_)) => None,
        Err(e) => Some((format!("cluster {cluster} could not be reached: {e}"), None)),
    }
}

/// A terminate of all of `job` on `cluster`, as a command from the root `config` describes.
/// A free function, so that it can be built while a job record is borrowed.
fn terminate_command(
    cx: &Context,
    config: &RootConfig,
    cluster: &str,
    job: &JobId,
) -> (String, Envelope, Tag) {
    let body = Message::Terminate(Terminate {
        job: job.clone(),
        instance: None,
        grace_ms: config.grace.as_millis() as u64,
    });
    (
        cluster.to_string(),
        Envelope::new_in(cx, &config.id, body),
        Tag::Terminate {
            job: job.clone(),
            cluster: cluster.to_string(),
        },
    )
}

/// What the instances of `job`'s part on `cluster` are named after (see
/// [`Deploy::instance_prefix`]): `{job}.{cluster}`, or a short hash of the cluster's name when
/// that would make ids too long.
fn part_prefix(job: &JobId, cluster: &str) -> String {
    let plain = format!("{job}.{cluster}");
    if plain.len() <= MAX_PREFIX {
        return plain;
    }
    // FNV-1a: stable across runs and builds, unlike the std hasher
    let hash = cluster.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{job}.{:06x}", hash & 0xff_ffff)
}

fn job_key(id: &str) -> String {
    format!("{JOBS}{id}")
}

fn cluster_key(id: &str) -> String {
    format!("{CLUSTERS}{id}")
}

impl RootState {
    fn msg(&self, body: Message) -> Envelope {
        Envelope::new_in(&self.cx, &self.config.id, body)
    }
}

impl RootState {
    /// What a command's outcome means, by what the command was for.
    pub(crate) fn on_outcome(
        &mut self,
        tag: Tag,
        outcome: Result<CommandOutcome, TransportError>,
        fx: &mut Fx,
    ) {
        if let Ok(CommandOutcome::GaveUp(reason)) = &outcome {
            self.gave_up(tag.cluster(), reason, fx);
        }
        match tag {
            Tag::Deploy { job, cluster } => self.on_deploy_outcome(&job, &cluster, outcome, fx),
            Tag::Terminate { job, .. } => self.on_terminate_outcome(&job, outcome, fx),
            Tag::Scale { job, cluster, from } => {
                self.on_scale_outcome(&job, &cluster, from, outcome, fx)
            }
            Tag::Migrate {
                job,
                cluster,
                anywhere,
                node,
            } => self.on_migrate_outcome(&job, &cluster, anywhere, node.as_deref(), outcome, fx),
        }
    }

    /// A cluster's link came up or went, or it sent a message.
    pub(crate) fn on_cluster_event(&mut self, event: ParentEvent, fx: &mut Fx) {
        match event {
            ParentEvent::ChildUp { child } => self.linked(&child, fx),
            ParentEvent::ChildLost { child, reason } => self.cluster_lost(&child, &reason, fx),
            ParentEvent::Message { child, envelope } => match envelope.body {
                Message::ClusterAggregate(agg) => self.on_aggregate(&child, agg, fx),
                Message::InstanceEvent(event) => self.on_instance_event(&child, event, fx),
                Message::QueryReply(reply) => self.on_query_reply(reply, fx),
                Message::Nack(nack) => {
                    // a refusal whose command was abandoned; nothing waits for it
                    debug!(cluster = %child, re = %nack.re, "late nack");
                }
                other => {
                    debug!(cluster = %child, kind = other.kind(), "ignored message from a cluster")
                }
            },
            ParentEvent::Invalid { child, error } => {
                warn!(cluster = %child, %error, "bad message from a cluster")
            }
        }
    }
}

impl Records for RootState {
    fn value_of(&self, key: &str) -> Option<Vec<u8>> {
        record_json(key, CLUSTERS, &self.clusters).or_else(|| record_json(key, JOBS, &self.jobs))
    }
}

type Shared = Core<RootState, Tag>;

/// How many chunks of a followed log may wait for a slow reader before its stream ends.
const FOLLOW_BUFFER: usize = 256;

/// The root engine.
pub struct RootEngine {
    shared: Arc<Shared>,
    outcomes: mpsc::UnboundedReceiver<Outcome<Tag>>,
}

impl RootEngine {
    /// An engine keeping clusters and jobs in `store`, placing jobs with `scheduler`. Reads
    /// what the store holds from an earlier run; clusters start INACTIVE until they dial in.
    pub async fn new(
        config: RootConfig,
        store: Arc<dyn Store>,
        scheduler: Arc<dyn Scheduler>,
    ) -> Result<RootEngine, edgeio_core::store::StoreError> {
        RootEngine::new_in(Context::system(), config, store, scheduler).await
    }

    /// As [`RootEngine::new`], reading the time and drawing ids from `cx` (a manual clock and
    /// seeded ids in tests and the simulator).
    pub async fn new_in(
        cx: Context,
        config: RootConfig,
        store: Arc<dyn Store>,
        scheduler: Arc<dyn Scheduler>,
    ) -> Result<RootEngine, edgeio_core::store::StoreError> {
        let clusters = load::<ClusterRecord>(&*store, CLUSTERS).await?;
        let jobs = load::<RootJob>(&*store, JOBS).await?;
        let state = RootState::from_records(cx, config, scheduler, clusters, jobs);
        let (core, outcomes) = Core::new(state, store);
        Ok(RootEngine {
            shared: Arc::new(core),
            outcomes,
        })
    }
}

impl RootState {
    /// The state a root restarts into from its stored records: every cluster INACTIVE until
    /// it dials in again.
    pub(crate) fn from_records(
        cx: Context,
        config: RootConfig,
        scheduler: Arc<dyn Scheduler>,
        stored_clusters: Vec<ClusterRecord>,
        stored_jobs: Vec<RootJob>,
    ) -> RootState {
        let now = cx.now_ms();
        let mut clusters = BTreeMap::new();
        for mut c in stored_clusters {
            // every cluster is INACTIVE until it dials in again (one already INACTIVE stays)
            if c.lifecycle.state() == ClusterState::Active {
                if let Err(e) =
                    c.lifecycle
                        .transition(ClusterState::Inactive, now, "root restarted")
                {
                    warn!(cluster = %c.id, error = %e, "cluster state refused on restart");
                }
            }
            clusters.insert(c.id.clone(), c);
        }
        // an older format's record is written back in today's at its next change
        let jobs: BTreeMap<String, RootJob> = stored_jobs
            .into_iter()
            .map(|job| (job.id.to_string(), job.upgraded()))
            .collect();
        RootState {
            refusals: Refusals::default(),
            cx,
            config,
            scheduler,
            clusters,
            jobs,
            reserving: Vec::new(),
            queries: BTreeMap::new(),
            streams: BTreeMap::new(),
            syncs: BTreeMap::new(),
            offered: None,
            deploy_seq: 0,
            sent: BTreeMap::new(),
            started_ms: now,
        }
    }
}

impl RootEngine {
    /// The handle: user API and cluster registrar.
    pub fn handle(&self) -> RootHandle {
        RootHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs until `shutdown` completes or the clusters' transport closes. `down` is the
    /// channel to the clusters (the WebSocket parent in the reference binary), wrapped here
    /// in [`ReliableParent`].
    pub async fn run(
        mut self,
        down: Arc<dyn ParentTransport>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), TransportError> {
        let (reliable, check_every) = {
            let state = self.shared.state();
            (
                state.config.reliable.clone(),
                state.config.aggregate_interval,
            )
        };
        let down = ReliableParent::new(down, reliable);
        self.shared.connect(down.clone(), None);
        // every command sent from here on ends with this loop
        let shared = self.shared.clone();
        let _running = Running(&shared);
        let mut check_tick = tokio::time::interval(check_every);
        check_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let mut fx = Fx::default();
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = check_tick.tick() => self.shared.state().check_clusters(&mut fx),
                Some((tag, outcome)) = self.outcomes.recv() => {
                    self.shared.state().on_outcome(tag, outcome, &mut fx)
                }
                event = down.recv() => self.shared.state().on_cluster_event(event?, &mut fx),
            }
            // a refused write is retried by the next apply (every check tick at the latest);
            // what depends on it waits, so there is nothing else to do here
            if let Err(e) = self.shared.apply(fx).await {
                debug!(error = %e, "effects held until the store takes writes");
            }
        }
    }
}
