//! The cluster engine (Cluster Manager): registers workers, keeps them in the Store, places
//! the root's jobs on them with a [`Scheduler`], relays instance events up, and sends the root
//! an aggregate of its nodes every `aggregate_interval`.
//!
//! State lives in one `ClusterState` behind a mutex; every change returns the effects it
//! needs (records to persist, messages to send, commands to send reliably), which the
//! engine's core (`effects::Core::apply`, shared with the root engine) carries out. The registrar ([`ClusterEngine::registrar`]) and the loop
//! ([`ClusterEngine::run`]) both go through it, so the workers' WebSocket handshakes need no
//! round trip through the loop.

use crate::effects::{record_json, Core, Effects, Outcome, Records, Running};
use crate::records::{
    load, ClusterJob, InstanceRecord, Migration, NodeRecord, Refusals, JOBS, NODES,
};
use async_trait::async_trait;
use edgeio_core::clock::Context;
use edgeio_core::job::InstanceSpec;
use edgeio_core::model::{
    check_id, CandidateSet, InstanceId, JobId, Labels, Location, Resources, Tier,
};
use edgeio_core::reliable::{CommandOutcome, ReliableConfig, ReliableParent};
use edgeio_core::scheduler::{Scheduler, SchedulerError};
use edgeio_core::state::{InstanceState, JobState, Lifecycle, NodeState};
use edgeio_core::store::Store;
use edgeio_core::transport::{
    ChildTransport, ParentEvent, ParentTransport, Registrar, TransportError,
};
use edgeio_core::wire::{
    ChannelKind, ChannelSettings, ClusterAggregate, Deploy, Envelope, ErrorBody, InstanceEvent,
    Message, Migrate, MigrateTarget, Nack, NodeStatus, PeerRole, Query, QueryReply, RegisterReply,
    RegisterRequest, Scale, Terminate, Topics, MAX_PREFIX,
};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

mod aggregate;
pub use aggregate::aggregate_of;
#[cfg(any(test, feature = "testing"))]
pub use aggregate::sample_nodes;
mod candidates;
mod migration;
mod nodes;
mod placement;
mod queries;
mod relocation;
mod reports;
mod scaling;
mod termination;
#[cfg(test)]
mod tests;

/// An `instance_event` from this cluster (`from`) for the root.
fn instance_event(
    cx: &Context,
    from: &str,
    job: &JobId,
    instance: &InstanceId,
    node: &str,
    state: InstanceState,
    reason: String,
) -> Envelope {
    Envelope::new_in(
        cx,
        from,
        Message::InstanceEvent(InstanceEvent {
            job: job.clone(),
            instance: instance.clone(),
            node: node.to_string(),
            state,
            exit_code: None,
            reason,
            unschedulable: None,
        }),
    )
}

/// A terminate of one `instance` of `job` on `node`, as a command from `cluster`.
fn stop_instance(
    cx: &Context,
    cluster: &str,
    node: &str,
    job: &JobId,
    instance: &InstanceId,
    grace_ms: u64,
    tag: Tag,
) -> (String, Envelope, Tag) {
    let body = Message::Terminate(Terminate {
        job: job.clone(),
        instance: Some(instance.clone()),
        grace_ms,
    });
    (node.to_string(), Envelope::new_in(cx, cluster, body), tag)
}

/// How far an instance has come, to tell a newer report from an older one.
fn progress(state: InstanceState) -> u8 {
    match state {
        InstanceState::Pending => 0,
        InstanceState::Starting | InstanceState::Restarting => 1,
        InstanceState::Running => 2,
        InstanceState::Lost => 3,
        InstanceState::Exited | InstanceState::Terminating => 4,
        InstanceState::Failed | InstanceState::Terminated => 5,
    }
}

/// Records a new PENDING instance of `job` on `node`, tells the root, and commands the node
/// to start it; returns its id.
fn start_instance(
    cx: &Context,
    cluster: &str,
    job: &mut ClusterJob,
    node: &str,
    reason: String,
    now: u64,
    fx: &mut Fx,
) -> InstanceId {
    let id = job.next_instance_id();
    job.instances.push(InstanceRecord {
        id: id.clone(),
        node: Some(node.to_string()),
        lifecycle: Lifecycle::new(InstanceState::Pending, now, &reason),
        exit_code: None,
        replaces: None,
        cluster: None,
    });
    fx.send_up.push(instance_event(
        cx,
        cluster,
        &job.id,
        &id,
        node,
        InstanceState::Pending,
        reason,
    ));
    fx.commands
        .push(deploy_instance(cx, cluster, job, &id, node));
    id
}

/// The command that starts instance `id` of `job` on `node` (a worker that runs it already
/// does nothing: deploys are idempotent by instance id).
fn deploy_instance(
    cx: &Context,
    cluster: &str,
    job: &ClusterJob,
    id: &InstanceId,
    node: &str,
) -> (String, Envelope, Tag) {
    let instance = InstanceSpec::for_job(id.clone(), job.id.clone(), &job.spec);
    (
        node.to_string(),
        Envelope::new_in(
            cx,
            cluster,
            Message::Deploy(Box::new(Deploy {
                job: job.id.clone(),
                spec: job.spec.clone(),
                instance: Some(instance),
                first_instance: 0,
                instance_prefix: None,
                seq: 0,
            })),
        ),
        Tag::Deploy {
            job: job.id.clone(),
            instance: id.clone(),
        },
    )
}

/// How the cluster engine runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// The cluster's id, as the root gave it.
    pub id: String,
    /// What workers are told at registration: channel kind, broker URL, status interval,
    /// message limit (topics are filled in per node).
    pub channel: ChannelSettings,
    /// A node that missed this many status intervals is LOST.
    pub missed_heartbeats: u32,
    /// How often the root gets an aggregate.
    pub aggregate_interval: Duration,
    /// Where the cluster is.
    pub location: Option<Location>,
    /// The cluster's labels.
    pub labels: Labels,
    /// Grace period asked of workers when terminating.
    pub grace: Duration,
    /// Re-sending of commands to workers.
    pub reliable: ReliableConfig,
}

impl ClusterConfig {
    /// The status interval workers are told to keep.
    pub fn status_interval(&self) -> Duration {
        Duration::from_millis(self.channel.status_interval_ms.max(1))
    }
}

/// What a command to a worker was for, so its outcome can be applied.
#[derive(Debug, Clone)]
pub(crate) enum Tag {
    Deploy {
        job: JobId,
        instance: InstanceId,
    },
    Terminate,
    /// A terminate of something a node runs that this cluster no longer wants.
    Stop {
        instance: InstanceId,
    },
}

/// The cluster's state: nodes, their candidates, jobs.
pub(crate) struct ClusterState {
    /// State changes refused so far (logged and counted; see [`Refusals`]).
    pub(crate) refusals: Refusals,
    /// Where decisions read the time and draw ids.
    pub(crate) cx: Context,
    config: ClusterConfig,
    scheduler: Arc<dyn Scheduler>,
    pub(crate) nodes: BTreeMap<String, NodeRecord>,
    /// READY nodes as the scheduler sees them, kept current (see `candidates.rs`).
    candidates: CandidateSet,
    /// Per node, what this cluster placed there that its status reports do not show yet.
    unreported: BTreeMap<String, candidates::Unreported>,
    pub(crate) jobs: BTreeMap<String, ClusterJob>,
    /// Logs queries sent to a worker: their id → the root's query id.
    relayed: BTreeMap<String, String>,
    /// Followed logs: the root's query id → the node and the id of the query relayed to it.
    following: BTreeMap<String, (String, String)>,
    /// PENDING instances whose deploy was sent again (the first was lost with a restart of
    /// this cluster), and when: sent again at most every few status intervals.
    redeployed: BTreeMap<InstanceId, u64>,
    /// RUNNING instances their node's statuses have left out, and since when: LOST only
    /// once they stay missing a few intervals (a worker that just restarted reports before
    /// it has adopted what survived).
    missing: BTreeMap<InstanceId, u64>,
    /// Instances a node runs that this cluster asked it to stop (until the node answers).
    stopping: BTreeSet<InstanceId>,
    /// When this cluster read its records (ms): a stop sent before went with the memory of
    /// the process that sent it (see `stop_unwanted`).
    started_ms: u64,
    /// The number of the last deploy from the root handled (taken or refused), reported in
    /// the aggregate so the root knows which of its deploys the figures count
    /// ([`ClusterAggregate::deploys_seen`]); 0 before the first.
    deploys_seen: u64,
}

pub(crate) type Fx = Effects<Tag>;

impl ClusterState {
    fn node_key(id: &str) -> String {
        format!("{NODES}{id}")
    }

    fn job_key(id: &str) -> String {
        format!("{JOBS}{id}")
    }

    fn up(&self, body: Message) -> Envelope {
        Envelope::new_in(&self.cx, &self.config.id, body)
    }
}

impl ClusterState {
    /// The aggregate, sent up now.
    pub(crate) fn send_aggregate(&self, fx: &mut Fx) {
        fx.send_up
            .push(self.up(Message::ClusterAggregate(self.aggregate())));
    }

    /// What a command's outcome means, by what the command was for.
    pub(crate) fn on_outcome(
        &mut self,
        tag: Tag,
        outcome: Result<CommandOutcome, TransportError>,
        fx: &mut Fx,
    ) {
        match tag {
            Tag::Deploy { job, instance } => self.on_deploy_outcome(&job, &instance, outcome, fx),
            Tag::Stop { instance } => {
                self.stopping.remove(&instance);
            }
            Tag::Terminate => {}
        }
    }

    /// A worker's link came up or went, or it sent a message.
    pub(crate) fn on_node_event(&mut self, event: ParentEvent, fx: &mut Fx) {
        match event {
            ParentEvent::ChildUp { child } => self.node_heard(&child, fx),
            ParentEvent::ChildLost { child, reason } => self.node_lost(&child, &reason, fx),
            ParentEvent::Message { child, envelope } => match envelope.body {
                Message::NodeStatus(status) => self.on_status(&child, status, fx),
                Message::InstanceEvent(event) => self.on_instance_event(&child, event, fx),
                Message::QueryReply(reply) => self.on_query_reply(reply, fx),
                other => debug!(node = %child, kind = other.kind(), "ignored message from a node"),
            },
            ParentEvent::Invalid { child, error } => {
                warn!(node = %child, %error, "bad message from a node")
            }
        }
    }

    /// A message from the root; a command's answer (ack or nack) is returned.
    pub(crate) fn on_root_message(&mut self, envelope: &Envelope, fx: &mut Fx) -> Option<Envelope> {
        match &envelope.body {
            Message::Deploy(deploy) => {
                let answer = self.on_deploy(envelope, deploy, fx);
                // the last handled, not the highest: a root that restarted numbers from 1 again
                if deploy.seq > 0 {
                    self.deploys_seen = deploy.seq;
                }
                Some(answer)
            }
            Message::Terminate(t) => Some(self.on_terminate(envelope, t, fx)),
            Message::Scale(scale) => Some(self.on_scale(envelope, scale, fx)),
            Message::Migrate(m) => Some(self.on_migrate(envelope, m, fx)),
            Message::Query(q) => {
                self.on_query(envelope, q, fx);
                None
            }
            other if other.is_command() => Some(envelope.nack_in(
                &self.cx,
                &self.config.id,
                ErrorBody {
                    code: "unsupported".into(),
                    message: format!("{} is not supported by this cluster yet", other.kind()),
                },
            )),
            other => {
                debug!(kind = other.kind(), "ignored message from the root");
                None
            }
        }
    }
}

impl Records for ClusterState {
    fn value_of(&self, key: &str) -> Option<Vec<u8>> {
        record_json(key, NODES, &self.nodes).or_else(|| record_json(key, JOBS, &self.jobs))
    }
}

type Shared = Core<ClusterState, Tag>;

/// Registers workers on behalf of the engine; hand it to the WebSocket server of `/ws/node`.
#[derive(Clone)]
pub struct ClusterRegistrar {
    shared: Arc<Shared>,
}

#[async_trait]
impl Registrar for ClusterRegistrar {
    async fn register(&self, request: RegisterRequest) -> Result<RegisterReply, ErrorBody> {
        let mut fx = Fx::default();
        let reply = self.shared.state().register(request, &mut fx);
        // an id the store does not hold is not given out: the worker dials again
        if let Err(e) = self.shared.apply(fx).await {
            return Err(ErrorBody::unavailable(format!(
                "cluster cannot register {} now: {e}; retry",
                reply.as_ref().map_or("the node", |r| r.id.as_str())
            )));
        }
        reply
    }
}

/// The cluster engine.
pub struct ClusterEngine {
    shared: Arc<Shared>,
    outcomes: mpsc::UnboundedReceiver<Outcome<Tag>>,
}

impl ClusterEngine {
    /// An engine that keeps its nodes and jobs in `store` and places with `scheduler`. Reads
    /// what the store holds from an earlier run: nodes come back as they were (a node that
    /// does not report within `missed_heartbeats` intervals is marked LOST).
    pub async fn new(
        config: ClusterConfig,
        store: Arc<dyn Store>,
        scheduler: Arc<dyn Scheduler>,
    ) -> Result<ClusterEngine, edgeio_core::store::StoreError> {
        ClusterEngine::new_in(Context::system(), config, store, scheduler).await
    }

    /// As [`ClusterEngine::new`], reading the time and drawing ids from `cx` (a manual clock
    /// and seeded ids in tests and the simulator).
    pub async fn new_in(
        cx: Context,
        config: ClusterConfig,
        store: Arc<dyn Store>,
        scheduler: Arc<dyn Scheduler>,
    ) -> Result<ClusterEngine, edgeio_core::store::StoreError> {
        let nodes = load::<NodeRecord>(&*store, NODES).await?;
        let jobs = load::<ClusterJob>(&*store, JOBS).await?;
        let state = ClusterState::from_records(cx, config, scheduler, nodes, jobs);
        let (core, outcomes) = Core::new(state, store);
        Ok(ClusterEngine {
            shared: Arc::new(core),
            outcomes,
        })
    }
}

impl ClusterState {
    /// The state a cluster restarts into from its stored records: nodes as they were, each
    /// given its missed heartbeats from now before it is LOST.
    pub(crate) fn from_records(
        cx: Context,
        config: ClusterConfig,
        scheduler: Arc<dyn Scheduler>,
        stored_nodes: Vec<NodeRecord>,
        stored_jobs: Vec<ClusterJob>,
    ) -> ClusterState {
        let now = cx.now_ms();
        let mut nodes = BTreeMap::new();
        let mut candidates = CandidateSet::for_tier(Tier::Nodes);
        for mut node in stored_nodes {
            node.last_seen_ms = now;
            if node.lifecycle.state() == NodeState::Ready {
                candidates.insert(node.candidate(now));
            }
            nodes.insert(node.id.clone(), node);
        }
        // an older format's record is written back in today's at its next change
        let jobs: BTreeMap<String, ClusterJob> = stored_jobs
            .into_iter()
            .map(|job| (job.id.to_string(), job.upgraded()))
            .collect();
        let mut state = ClusterState {
            refusals: Refusals::default(),
            cx,
            config,
            scheduler,
            nodes,
            candidates,
            unreported: BTreeMap::new(),
            jobs,
            relayed: BTreeMap::new(),
            following: BTreeMap::new(),
            stopping: BTreeSet::new(),
            started_ms: now,
            deploys_seen: 0,
            redeployed: BTreeMap::new(),
            missing: BTreeMap::new(),
        };
        state.seed_unreported();
        state
    }
}

impl ClusterEngine {
    /// How many state changes the engine refused so far (late, duplicate or
    /// post-termination reports; each was logged with its ids).
    pub fn refused_transitions(&self) -> u64 {
        self.shared.state().refusals.count()
    }

    /// The registrar to serve `/ws/node` with.
    pub fn registrar(&self) -> ClusterRegistrar {
        ClusterRegistrar {
            shared: self.shared.clone(),
        }
    }

    /// The nodes as the cluster knows them.
    pub fn nodes(&self) -> Vec<edgeio_core::api::NodeView> {
        self.shared
            .state()
            .nodes
            .values()
            .map(NodeRecord::view)
            .collect()
    }

    /// Runs until `shutdown` completes or the root link is gone for good.
    ///
    /// `down` is the channel to the workers (MQTT in the reference binaries; wrapped here in
    /// [`ReliableParent`]); `up` the channel to the root (wrap it in
    /// [`edgeio_core::reliable::ReliableChild`]). Sends an aggregate at once and every
    /// `aggregate_interval`.
    pub async fn run(
        mut self,
        down: Arc<dyn ParentTransport>,
        up: Arc<dyn ChildTransport>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), TransportError> {
        let (aggregate_every, heartbeat_every, reliable) = {
            let state = self.shared.state();
            (
                state.config.aggregate_interval,
                state.config.status_interval(),
                state.config.reliable.clone(),
            )
        };
        let down = ReliableParent::new(down, reliable);
        self.shared.connect(down.clone(), Some(up.clone()));
        // every command sent from here on ends with this loop
        let shared = self.shared.clone();
        let _running = Running(&shared);
        let mut aggregate_tick = tokio::time::interval(aggregate_every);
        aggregate_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat_tick = tokio::time::interval(heartbeat_every);
        heartbeat_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let mut fx = Fx::default();
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = aggregate_tick.tick() => self.shared.state().send_aggregate(&mut fx),
                _ = heartbeat_tick.tick() => self.shared.state().check_heartbeats(&mut fx),
                Some((tag, outcome)) = self.outcomes.recv() => {
                    self.shared.state().on_outcome(tag, outcome, &mut fx)
                }
                event = down.recv() => self.shared.state().on_node_event(event?, &mut fx),
                received = up.recv() => match received {
                    Ok(envelope) => {
                        let answer = self.shared.state().on_root_message(&envelope, &mut fx);
                        // sent before any event the command caused, and an ack only once
                        // what the command changed is stored (effects::Core::apply)
                        fx.answer = answer;
                    }
                    Err(TransportError::Invalid { reason, .. }) => warn!(%reason, "bad message from the root"),
                    Err(e) => return Err(e),
                },
            }
            // a refused write is retried by the next apply (every heartbeat tick at the
            // latest); what depends on it waits, so there is nothing else to do here
            if let Err(e) = self.shared.apply(fx).await {
                debug!(error = %e, "effects held until the store takes writes");
            }
        }
    }
}
