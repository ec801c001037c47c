//! The cluster engine (Cluster Manager): registers workers, keeps them in the Store, places
//! the root's jobs on them with a [`Scheduler`], relays instance events up, and sends the root
//! an aggregate of its nodes every `aggregate_interval`.
//!
//! State lives in one `ClusterState` behind a mutex; every change returns the effects it
//! needs (records to persist, messages to send, commands to send reliably), which the
//! engine's core (`effects::Core::apply`, shared with the root engine) carries out. The registrar ([`ClusterEngine::registrar`]) and the loop
//! ([`ClusterEngine::run`]) both go through it, so the workers' WebSocket handshakes need no
//! round trip through the loop.

use crate::effects::{record_json, Core, Effects, Outcome, Records};
use crate::records::{
    advance, load, InstanceRecord, JobRecord, Migration, NodeRecord, JOBS, NODES,
};
use async_trait::async_trait;
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
    now_ms, ChannelKind, ChannelSettings, ClusterAggregate, Deploy, Envelope, ErrorBody,
    InstanceEvent, Message, Migrate, MigrateTarget, Nack, NodeStatus, PeerRole, Query, QueryReply,
    RegisterReply, RegisterRequest, Scale, Terminate, Topics, MAX_PREFIX,
};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// An `instance_event` from this cluster (`from`) for the root.
fn instance_event(
    from: &str,
    job: &JobId,
    instance: &InstanceId,
    node: &str,
    state: InstanceState,
    reason: String,
) -> Envelope {
    Envelope::new(
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
    (node.to_string(), Envelope::new(cluster, body), tag)
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
    cluster: &str,
    job: &mut JobRecord,
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
        cluster,
        &job.id,
        &id,
        node,
        InstanceState::Pending,
        reason,
    ));
    let instance = InstanceSpec::for_job(id.clone(), job.id.clone(), &job.spec);
    fx.commands.push((
        node.to_string(),
        Envelope::new(
            cluster,
            Message::Deploy(Box::new(Deploy {
                job: job.id.clone(),
                spec: job.spec.clone(),
                instance: Some(instance),
                first_instance: 0,
                instance_prefix: None,
            })),
        ),
        Tag::Deploy {
            job: job.id.clone(),
            instance: id.clone(),
        },
    ));
    id
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
enum Tag {
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
struct ClusterState {
    config: ClusterConfig,
    scheduler: Arc<dyn Scheduler>,
    nodes: BTreeMap<String, NodeRecord>,
    candidates: CandidateSet,
    jobs: BTreeMap<String, JobRecord>,
    /// Logs queries sent to a worker: their id → the root's query id.
    relayed: HashMap<String, String>,
    /// Followed logs: the root's query id → the node and the id of the query relayed to it.
    following: HashMap<String, (String, String)>,
    /// Instances a node runs that this cluster asked it to stop (until the node answers).
    stopping: std::collections::HashSet<InstanceId>,
}

type Fx = Effects<Tag>;

impl ClusterState {
    fn node_key(id: &str) -> String {
        format!("{NODES}{id}")
    }

    fn job_key(id: &str) -> String {
        format!("{JOBS}{id}")
    }

    fn up(&self, body: Message) -> Envelope {
        Envelope::new(&self.config.id, body)
    }

    fn register(
        &mut self,
        request: RegisterRequest,
        fx: &mut Fx,
    ) -> Result<RegisterReply, ErrorBody> {
        let invalid = |message: String| ErrorBody {
            code: "invalid".into(),
            message,
        };
        if request.role != PeerRole::Node {
            return Err(invalid(format!(
                "role {:?} cannot register with a cluster; only nodes can",
                request.role
            )));
        }
        let Some(capabilities) = request.capabilities else {
            return Err(invalid(
                "capabilities: (missing): a node must send its capabilities".into(),
            ));
        };
        let known = request.previous_id.filter(|id| self.nodes.contains_key(id));
        let id = match known {
            Some(id) => id,
            None => {
                let base = if check_id("node id", &request.name).is_ok() {
                    request.name.clone()
                } else {
                    "node".to_string()
                };
                if self.nodes.contains_key(&base) || base == "node" {
                    let suffix = uuid::Uuid::new_v4().simple().to_string();
                    format!("{base}-{}", &suffix[..8])
                } else {
                    base
                }
            }
        };
        let now = now_ms();
        let total = NodeRecord::total_of(&capabilities);
        let record = match self.nodes.remove(&id) {
            Some(mut old) => {
                if old.lifecycle.state() == NodeState::Lost {
                    let _ = old
                        .lifecycle
                        .transition(NodeState::Ready, now, "registered again");
                }
                old.capabilities = capabilities;
                old.total = total;
                old.last_seen_ms = now;
                old
            }
            None => NodeRecord {
                id: id.clone(),
                name: request.name.clone(),
                capabilities,
                lifecycle: Lifecycle::new(NodeState::Ready, now, "registered"),
                free: total,
                total,
                instances: 0,
                usage: None,
                last_seen_ms: now,
            },
        };
        info!(node = %id, name = %record.name, "node registered");
        self.candidates.insert(record.candidate(now));
        self.nodes.insert(id.clone(), record);
        fx.persist.push(Self::node_key(&id));
        let mut channel = self.config.channel.clone();
        if channel.kind == ChannelKind::Mqtt {
            channel.topics = Some(Topics::for_node(&id));
        }
        Ok(RegisterReply { id, channel })
    }

    fn node_heard(&mut self, node: &str, fx: &mut Fx) {
        let now = now_ms();
        let Some(record) = self.nodes.get_mut(node) else {
            return;
        };
        record.last_seen_ms = now;
        if record.lifecycle.state() == NodeState::Lost
            && record
                .lifecycle
                .transition(NodeState::Ready, now, "heard from again")
                .is_ok()
        {
            info!(node, "node is back");
            self.candidates.insert(record.candidate(now));
            fx.persist.push(Self::node_key(node));
        }
    }

    fn node_lost(&mut self, node: &str, reason: &str, fx: &mut Fx) {
        let now = now_ms();
        let Some(record) = self.nodes.get_mut(node) else {
            return;
        };
        if record
            .lifecycle
            .transition(NodeState::Lost, now, reason)
            .is_err()
        {
            return;
        }
        warn!(node, reason, "node lost");
        self.candidates.remove(node);
        fx.persist.push(Self::node_key(node));
        for job in self.jobs.values_mut() {
            let mut changed = false;
            for instance in job
                .instances
                .iter_mut()
                .filter(|i| i.node.as_deref() == Some(node) && !i.is_over())
            {
                let why = format!("node {node} lost: {reason}");
                if advance(&mut instance.lifecycle, InstanceState::Lost, now, &why).is_ok() {
                    changed = true;
                    fx.send_up.push(instance_event(
                        &self.config.id,
                        &job.id,
                        &instance.id,
                        node,
                        InstanceState::Lost,
                        why,
                    ));
                }
            }
            if changed {
                fx.persist.push(Self::job_key(job.id.as_str()));
            }
        }
        self.relocate_from(node, fx);
    }

    /// The free resources of READY nodes as the scheduler should see them now: the workers'
    /// reports less what this cluster placed and has not seen reported yet.
    fn refresh_candidates(&mut self) {
        let now = now_ms();
        for record in self.nodes.values() {
            if record.lifecycle.state() == NodeState::Ready {
                let free = record
                    .free
                    .min_each(&record.total.saturating_sub(&self.placed_on(&record.id)));
                self.candidates
                    .update_free(&record.id, free, record.candidate(now).data_age);
            }
        }
    }

    /// Places a replacement for every instance lost with `node`, on another node of this
    /// cluster; one that no node can take stays LOST, with the scheduler's reason told up.
    fn relocate_from(&mut self, node: &str, fx: &mut Fx) {
        let lost: Vec<(String, InstanceId)> = self
            .jobs
            .values()
            .filter(|j| j.lifecycle.state() != JobState::Terminating && j.is_live())
            .flat_map(|j| {
                j.instances
                    .iter()
                    .filter(|i| {
                        i.node.as_deref() == Some(node)
                            && i.lifecycle.state() == InstanceState::Lost
                    })
                    .map(|i| (j.id.to_string(), i.id.clone()))
            })
            .collect();
        if lost.is_empty() {
            return;
        }
        self.refresh_candidates();
        let policy = self.scheduler.name().to_string();
        let now = now_ms();
        for (job_id, old) in lost {
            let Some(job) = self.jobs.get(&job_id) else {
                continue;
            };
            let spec = job.spec.clone();
            let (target, reason) = match self.scheduler.place(&spec, &self.candidates) {
                Ok(p) => {
                    let reason = format!(
                        "replaces {old} (node {node} lost), placed on {} by {policy}",
                        p.candidate
                    );
                    (p.candidate, reason)
                }
                Err(e) => {
                    // nothing here fits: the root is told, and places the job elsewhere
                    let reason = format!("cannot replace {old} (node {node} lost): {e}");
                    warn!(job = %job_id, %reason, "instance not relocated; escalating to the root");
                    let mut event = instance_event(
                        &self.config.id,
                        &job.id,
                        &old,
                        node,
                        InstanceState::Lost,
                        reason.clone(),
                    );
                    if let Message::InstanceEvent(event) = &mut event.body {
                        event.unschedulable = Some(match e {
                            SchedulerError::Unschedulable(u) => u.in_tier(Tier::Nodes),
                            other => {
                                edgeio_core::scheduler::Unschedulable::new(self.candidates.len())
                                    .in_tier(Tier::Nodes)
                                    .refused("spec", self.candidates.len(), other.to_string())
                            }
                        });
                    }
                    fx.send_up.push(event);
                    continue;
                }
            };
            self.candidates.reserve(&target, &spec.resources);
            self.candidates.add_job(&target, &spec.name);
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            let id = start_instance(&self.config.id, job, &target, reason, now, fx);
            info!(job = %job_id, instance = %id, node = %target, "relocating a lost instance");
            fx.persist.push(Self::job_key(&job_id));
        }
    }

    /// Places a replacement for an instance that FAILED on `node` (its restarts there are used
    /// up, or it could not start) on another READY node with at least the same labels, never
    /// one where the job failed before. When none can take it, the failure stands (the job
    /// is FAILED with the reason).
    fn relocate_failed(
        &mut self,
        job_id: &str,
        old: &InstanceId,
        node: &str,
        why: &str,
        fx: &mut Fx,
    ) {
        let Some(job) = self.jobs.get(job_id) else {
            return;
        };
        if !job.is_live() || job.lifecycle.state() == JobState::Terminating {
            return;
        }
        if job
            .instances
            .iter()
            .any(|i| &i.id == old && i.replaces.is_some())
        {
            // a migration that failed: the instance it was to replace runs on
            return;
        }
        let tried: Vec<String> = job
            .instances
            .iter()
            .filter(|i| i.lifecycle.state() == InstanceState::Failed)
            .filter_map(|i| i.node.clone())
            .collect();
        let spec = job.spec.clone();
        let labels = self
            .nodes
            .get(node)
            .map(|n| n.capabilities.labels.clone())
            .unwrap_or_default();
        self.refresh_candidates();
        let mut set = self.candidates.clone();
        let unlike: Vec<String> = set
            .iter()
            .filter(|c| {
                tried.contains(&c.id)
                    || c.id == node
                    || !labels.iter().all(|(k, v)| c.labels.get(k) == Some(v))
            })
            .map(|c| c.id.clone())
            .collect();
        for id in unlike {
            set.remove(&id);
        }
        let placed = match self.scheduler.place(&spec, &set) {
            Ok(p) => p.candidate,
            Err(e) => {
                info!(job = job_id, instance = %old, reason = %e, "no other node with the same labels can take a failed instance; it stays FAILED");
                return;
            }
        };
        self.candidates.reserve(&placed, &spec.resources);
        self.candidates.add_job(&placed, &spec.name);
        let policy = self.scheduler.name().to_string();
        let reason =
            format!("replaces {old} (failed on {node}: {why}), placed on {placed} by {policy}");
        let now = now_ms();
        let cluster = self.config.id.clone();
        if let Some(job) = self.jobs.get_mut(job_id) {
            let id = start_instance(&cluster, job, &placed, reason, now, fx);
            info!(job = job_id, instance = %id, node = %placed, "relocating a failed instance");
            fx.persist.push(Self::job_key(job_id));
        }
    }

    fn on_status(&mut self, node: &str, status: NodeStatus, fx: &mut Fx) {
        self.node_heard(node, fx);
        let now = now_ms();
        let placed = self.placed_on(node);
        let Some(record) = self.nodes.get_mut(node) else {
            debug!(node, "status from a node that never registered");
            return;
        };
        // the worker's figure lags the deploys in flight to it; what this cluster placed
        // there is reserved either way
        record.free = status.free.min_each(&status.total.saturating_sub(&placed));
        record.total = status.total;
        record.usage = status.usage;
        record.instances = status
            .instances
            .iter()
            .filter(|i| !matches!(i.state, InstanceState::Terminated | InstanceState::Failed))
            .count();
        if record.lifecycle.state() == NodeState::Ready {
            self.candidates.insert(record.candidate(now));
        }
        // Node records change with every status; they are written when their state changes,
        // not every interval, so an idle cluster does not write to disk once a second.
        self.reconcile_reports(node, &status, fx);
        self.stop_unwanted(node, &status, fx);
    }

    /// Stops what `node` runs that this cluster no longer wants: an instance recorded as over
    /// (terminated while its node was away, or replaced), or of a job it no longer keeps.
    fn stop_unwanted(&mut self, node: &str, status: &NodeStatus, fx: &mut Fx) {
        for report in &status.instances {
            if !matches!(
                report.state,
                InstanceState::Pending | InstanceState::Starting | InstanceState::Running
            ) || self.stopping.contains(&report.instance)
            {
                continue;
            }
            let wanted = self.jobs.get(report.job.as_str()).is_some_and(|job| {
                job.instances.iter().any(|i| {
                    i.id == report.instance && i.node.as_deref() == Some(node) && !i.is_over()
                })
            });
            if wanted {
                continue;
            }
            info!(node, instance = %report.instance, job = %report.job, "stopping an instance this cluster no longer keeps");
            self.stopping.insert(report.instance.clone());
            fx.commands.push(stop_instance(
                &self.config.id,
                node,
                &report.job,
                &report.instance,
                self.config.grace.as_millis() as u64,
                Tag::Stop {
                    instance: report.instance.clone(),
                },
            ));
        }
    }

    /// Takes the node's report as the truth about its instances: a state whose event was
    /// lost is recorded and told up; an instance marked LOST with its node that the node,
    /// back again, reports alive (it adopted it after a restart, or the link only blinked) is
    /// alive again, unless it was replaced meanwhile (then it is stopped: the newer wins).
    fn reconcile_reports(&mut self, node: &str, status: &NodeStatus, fx: &mut Fx) {
        let now = now_ms();
        for report in &status.instances {
            let Some(job) = self.jobs.get_mut(report.job.as_str()) else {
                continue;
            };
            let Some(instance) = job.instance_mut(&report.instance) else {
                continue;
            };
            if instance.node.as_deref() != Some(node)
                || report.state == InstanceState::Lost
                || report.state == instance.lifecycle.state()
                || instance.is_over()
            {
                continue;
            }
            let was_lost = instance.lifecycle.state() == InstanceState::Lost;
            // an event lost on the way (the broker restarted) is told again by the status; only
            // forward, since a status may be older than the last event
            if !was_lost && progress(report.state) <= progress(instance.lifecycle.state()) {
                continue;
            }
            if was_lost {
                let others = job
                    .instances
                    .iter()
                    .filter(|i| {
                        i.id != report.instance
                            && !i.is_over()
                            && !matches!(
                                i.lifecycle.state(),
                                InstanceState::Lost | InstanceState::Terminating
                            )
                    })
                    .count();
                if others >= job.spec.replicas as usize {
                    // replaced while its node was away: the newer placement wins
                    let reason =
                        format!("node {node} is back with it, but it was replaced meanwhile");
                    let Some(instance) = job.instance_mut(&report.instance) else {
                        continue;
                    };
                    if advance(
                        &mut instance.lifecycle,
                        InstanceState::Terminating,
                        now,
                        &reason,
                    )
                    .is_ok()
                    {
                        fx.persist.push(Self::job_key(report.job.as_str()));
                        fx.send_up.push(instance_event(
                            &self.config.id,
                            &report.job,
                            &report.instance,
                            node,
                            InstanceState::Terminating,
                            reason,
                        ));
                        fx.commands.push(stop_instance(
                            &self.config.id,
                            node,
                            &report.job,
                            &report.instance,
                            self.config.grace.as_millis() as u64,
                            Tag::Terminate,
                        ));
                    }
                    continue;
                }
            }
            let reason = if was_lost {
                format!("node {node} is back and reports it {}", report.state)
            } else {
                format!("node {node} reports it {}", report.state)
            };
            let Some(instance) = job.instance_mut(&report.instance) else {
                continue;
            };
            if advance(&mut instance.lifecycle, report.state, now, &reason).is_ok() {
                job.settle(now);
                fx.persist.push(Self::job_key(report.job.as_str()));
                fx.send_up.push(instance_event(
                    &self.config.id,
                    &report.job,
                    &report.instance,
                    node,
                    report.state,
                    reason,
                ));
            }
        }
    }

    /// What the live instances this cluster placed on `node` reserve.
    fn placed_on(&self, node: &str) -> Resources {
        self.jobs
            .values()
            .flat_map(|j| {
                j.instances
                    .iter()
                    .filter(|i| i.node.as_deref() == Some(node) && !i.is_over())
                    .map(|_| j.spec.resources)
            })
            .fold(Resources::ZERO, |sum, r| sum.saturating_add(&r))
    }

    fn on_instance_event(&mut self, node: &str, event: InstanceEvent, fx: &mut Fx) {
        self.node_heard(node, fx);
        let Some(job) = self.jobs.get_mut(event.job.as_str()) else {
            debug!(node, job = %event.job, "event for a job this cluster does not know");
            return;
        };
        let job_id = job.id.to_string();
        let mut failed = false;
        if let Some(instance) = job.instance_mut(&event.instance) {
            let reason = if event.reason.is_empty() {
                format!("reported by {node}")
            } else {
                event.reason.clone()
            };
            let was = instance.lifecycle.state();
            match advance(&mut instance.lifecycle, event.state, now_ms(), &reason) {
                Ok(()) => {
                    failed = was != InstanceState::Failed && event.state == InstanceState::Failed
                }
                Err(e) => {
                    debug!(instance = %event.instance, error = %e, "event does not move the instance")
                }
            }
            if event.exit_code.is_some() {
                instance.exit_code = event.exit_code;
            }
            fx.persist.push(Self::job_key(&job_id));
        }
        let migrating = self
            .jobs
            .get(&job_id)
            .and_then(|j| j.instances.iter().find(|i| i.id == event.instance))
            .is_some_and(|i| i.replaces.is_some());
        if failed {
            // the replacement's PENDING goes up before the failure, so the root never sees
            // the job with a failed instance and nothing to take its place
            self.relocate_failed(&job_id, &event.instance, node, &event.reason, fx);
        }
        let arrived = migrating && event.state == InstanceState::Running;
        let new = event.instance.clone();
        let mut up = event;
        up.node = node.to_string();
        fx.send_up.push(self.up(Message::InstanceEvent(up)));
        // the root hears that the new instance runs before it hears the old one stop
        if arrived {
            self.finish_migration(&job_id, &new, fx);
        }
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.settle(now_ms());
        }
    }

    fn aggregate(&self) -> ClusterAggregate {
        let ready: Vec<&NodeRecord> = self
            .nodes
            .values()
            .filter(|n| n.lifecycle.state() == NodeState::Ready)
            .collect();
        let mut agg = ClusterAggregate {
            nodes: self.nodes.len() as u32,
            ready_nodes: ready.len() as u32,
            total: Resources::ZERO,
            free: Resources::ZERO,
            largest_free: Resources::ZERO,
            architectures: Vec::new(),
            runtimes: Vec::new(),
            labels: self.config.labels.clone(),
            location: self.config.location.clone(),
            node_names: ready.iter().map(|n| n.id.clone()).collect(),
            node_labels: Vec::new(),
        };
        for node in ready {
            agg.total = agg.total.saturating_add(&node.total);
            agg.free = agg.free.saturating_add(&node.free);
            // the node with the most free CPU, then memory, stands for "the most one node has"
            if (node.free.cpu_millis, node.free.memory_bytes)
                > (agg.largest_free.cpu_millis, agg.largest_free.memory_bytes)
            {
                agg.largest_free = node.free;
            }
            if !node.capabilities.labels.is_empty()
                && !agg.node_labels.contains(&node.capabilities.labels)
            {
                agg.node_labels.push(node.capabilities.labels.clone());
            }
            if !agg.architectures.contains(&node.capabilities.arch) {
                agg.architectures.push(node.capabilities.arch.clone());
            }
            for r in &node.capabilities.runtimes {
                if !agg.runtimes.contains(&r.kind) {
                    agg.runtimes.push(r.kind.clone());
                }
            }
        }
        agg
    }

    fn on_deploy(&mut self, command: &Envelope, deploy: &Deploy, fx: &mut Fx) -> Envelope {
        // a re-sent deploy of a job placed here already; one that was given back (terminated)
        // and now comes again is placed anew
        let placed_here = self
            .jobs
            .get(deploy.job.as_str())
            .is_some_and(|j| j.is_live() && j.lifecycle.state() != JobState::Terminating);
        if placed_here {
            return command.ack(&self.config.id);
        }
        if let Some(prefix) = &deploy.instance_prefix {
            let part_of_job = prefix
                .strip_prefix(deploy.job.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'));
            let valid = check_id("instance prefix", prefix).is_ok() && prefix.len() <= MAX_PREFIX;
            if !part_of_job || !valid {
                return self.refuse(
                    command,
                    "invalid",
                    format!(
                        "instance_prefix: {prefix:?} must be the job's id {}, a '.', then letters, digits, '.', '_' or '-', at most {MAX_PREFIX} characters in all",
                        deploy.job
                    ),
                );
            }
        }
        let now = now_ms();
        self.refresh_candidates();
        let spec = &deploy.spec;
        let mut set = self.candidates.clone();
        let mut placed = Vec::new();
        for _ in 0..spec.replicas.max(1) {
            match self.scheduler.place(spec, &set) {
                Ok(p) => {
                    set.reserve(&p.candidate, &spec.resources);
                    set.add_job(&p.candidate, &spec.name);
                    placed.push(p.candidate);
                }
                Err(SchedulerError::Unschedulable(u)) => {
                    let mut u = u.in_tier(Tier::Nodes);
                    u.fits = placed.len() as u32;
                    info!(job = %deploy.job, explanation = %u, "refusing a job: no node fits");
                    if spec.replicas > 1 {
                        let what =
                            format!("{} replicas asked, {} fit", spec.replicas, placed.len());
                        return self.unschedulable(command, &what, u);
                    }
                    return Envelope::new(
                        &self.config.id,
                        Message::Nack(Nack {
                            re: command.id.clone(),
                            error: ErrorBody {
                                code: "unschedulable".into(),
                                message: format!("cluster {}: {u}", self.config.id),
                            },
                            unschedulable: Some(u),
                        }),
                    );
                }
                Err(e) => {
                    return command.nack(
                        &self.config.id,
                        ErrorBody {
                            code: "invalid".into(),
                            message: e.to_string(),
                        },
                    )
                }
            }
        }
        self.candidates = set;
        let policy = self.scheduler.name().to_string();
        let mut job = JobRecord {
            id: deploy.job.clone(),
            spec: spec.clone(),
            lifecycle: Lifecycle::new(JobState::ScheduledNode, now, "placed on nodes"),
            cluster: Some(self.config.id.clone()),
            instances: Vec::new(),
            unschedulable: Vec::new(),
            refused_by: Vec::new(),
            first_instance: deploy.first_instance,
            migration: None,
            instance_prefix: deploy.instance_prefix.clone(),
            parts: Vec::new(),
            offers: Default::default(),
        };
        for node in placed {
            let reason = format!("placed on {node} by {policy}");
            start_instance(&self.config.id, &mut job, &node, reason, now, fx);
        }
        self.jobs.insert(deploy.job.to_string(), job);
        fx.persist.push(Self::job_key(deploy.job.as_str()));
        command.ack(&self.config.id)
    }

    /// A refusal of `command` with `code` and `message`.
    fn refuse(&self, command: &Envelope, code: &str, message: String) -> Envelope {
        command.nack(
            &self.config.id,
            ErrorBody {
                code: code.into(),
                message,
            },
        )
    }

    /// A refusal of `command` because nothing fits, with the scheduler's explanation.
    fn unschedulable(
        &self,
        command: &Envelope,
        what: &str,
        u: edgeio_core::scheduler::Unschedulable,
    ) -> Envelope {
        let u = u.in_tier(Tier::Nodes);
        Envelope::new(
            &self.config.id,
            Message::Nack(Nack {
                re: command.id.clone(),
                error: ErrorBody {
                    code: "unschedulable".into(),
                    message: format!("cluster {}: {what}: {u}", self.config.id),
                },
                unschedulable: Some(u),
            }),
        )
    }

    /// `scale`: places the replicas missing (all or none: a nack with the scheduler's reasons
    /// when not all fit), or terminates the newest ones beyond the count.
    fn on_scale(&mut self, command: &Envelope, scale: &Scale, fx: &mut Fx) -> Envelope {
        let Some(job) = self.jobs.get(scale.job.as_str()) else {
            return self.refuse(
                command,
                "not_found",
                format!("job {} is not on this cluster", scale.job),
            );
        };
        if !job.is_live() || job.lifecycle.state() == JobState::Terminating {
            return self.refuse(
                command,
                "conflict",
                format!("job {} is {}", scale.job, job.lifecycle.state()),
            );
        }
        let alive: Vec<(InstanceId, Option<String>)> = job
            .instances
            .iter()
            .filter(|i| !i.is_over() && i.lifecycle.state() != InstanceState::Terminating)
            .map(|i| (i.id.clone(), i.node.clone()))
            .collect();
        let wanted = scale.replicas as usize;
        let mut spec = job.spec.clone();
        spec.replicas = scale.replicas;
        let now = now_ms();
        let why = format!(
            "scale from {} to {} replicas",
            job.spec.replicas, scale.replicas
        );
        if wanted > alive.len() {
            self.refresh_candidates();
            let mut set = self.candidates.clone();
            let mut targets = Vec::new();
            for _ in alive.len()..wanted {
                match self.scheduler.place(&spec, &set) {
                    Ok(p) => {
                        set.reserve(&p.candidate, &spec.resources);
                        set.add_job(&p.candidate, &spec.name);
                        targets.push(p.candidate);
                    }
                    Err(SchedulerError::Unschedulable(mut u)) => {
                        u.fits = targets.len() as u32;
                        let what = format!(
                            "cannot place {} more replicas ({} fit)",
                            wanted - alive.len(),
                            targets.len()
                        );
                        return self.unschedulable(command, &what, u);
                    }
                    Err(e) => return self.refuse(command, "invalid", e.to_string()),
                }
            }
            self.candidates = set;
            let policy = self.scheduler.name().to_string();
            let cluster = self.config.id.clone();
            let Some(job) = self.jobs.get_mut(scale.job.as_str()) else {
                return command.ack(&cluster);
            };
            job.spec = spec;
            let _ = advance(&mut job.lifecycle, JobState::Scaling, now, &why);
            for node in targets {
                let reason = format!("{why}: placed on {node} by {policy}");
                start_instance(&cluster, job, &node, reason, now, fx);
            }
        } else {
            let ready: Vec<String> = self
                .nodes
                .values()
                .filter(|n| n.lifecycle.state() == NodeState::Ready)
                .map(|n| n.id.clone())
                .collect();
            let grace = self.config.grace.as_millis() as u64;
            let cluster = self.config.id.clone();
            let Some(job) = self.jobs.get_mut(scale.job.as_str()) else {
                return command.ack(&cluster);
            };
            job.spec = spec;
            let _ = advance(&mut job.lifecycle, JobState::Scaling, now, &why);
            // the newest go first: the oldest have run longest and proved themselves
            for (id, node) in alive
                .into_iter()
                .skip(wanted)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                let node = node.unwrap_or_default();
                let reason = format!("{why}: the newest go first");
                let reachable = ready.contains(&node);
                let to = if reachable {
                    InstanceState::Terminating
                } else {
                    InstanceState::Terminated
                };
                if let Some(i) = job.instance_mut(&id) {
                    let _ = advance(&mut i.lifecycle, to, now, &reason);
                }
                fx.send_up
                    .push(instance_event(&cluster, &job.id, &id, &node, to, reason));
                if reachable {
                    let stop = stop_instance(&cluster, &node, &job.id, &id, grace, Tag::Terminate);
                    fx.commands.push(stop);
                }
            }
        }
        if let Some(job) = self.jobs.get_mut(scale.job.as_str()) {
            job.settle(now);
        }
        fx.persist.push(Self::job_key(scale.job.as_str()));
        command.ack(&self.config.id)
    }

    /// `migrate` inside this cluster: starts the instance anew on the target node (or on any
    /// other node that fits) and terminates the old one once the new one runs
    /// (make-before-break). Moves to another cluster are the root's.
    fn on_migrate(&mut self, command: &Envelope, m: &Migrate, fx: &mut Fx) -> Envelope {
        let Some(job) = self.jobs.get(m.job.as_str()) else {
            return self.refuse(
                command,
                "not_found",
                format!("job {} is not on this cluster", m.job),
            );
        };
        if job.lifecycle.state() != JobState::Running
            && job.lifecycle.state() != JobState::Migrating
        {
            return self.refuse(
                command,
                "conflict",
                format!(
                    "job {} is {}; only a RUNNING job migrates",
                    m.job,
                    job.lifecycle.state()
                ),
            );
        }
        let old = job.instances.iter().find(|i| match &m.instance {
            Some(id) => &i.id == id,
            None => i.lifecycle.state() == InstanceState::Running,
        });
        let Some(old) = old.filter(|i| !i.is_over()) else {
            let which = m
                .instance
                .as_ref()
                .map_or("a running instance".to_string(), |i| {
                    format!("live instance {i}")
                });
            return self.refuse(
                command,
                "not_found",
                format!("job {} has no {which} here", m.job),
            );
        };
        let (old_id, from) = (old.id.clone(), old.node.clone().unwrap_or_default());
        let spec = job.spec.clone();
        self.refresh_candidates();
        let mut set = self.candidates.clone();
        let target = match &m.target {
            MigrateTarget::Node(node) if node == &from => {
                return self.refuse(
                    command,
                    "invalid",
                    format!("instance {old_id} already runs on node {node}"),
                );
            }
            MigrateTarget::Node(node) => {
                if set.get(node).is_none() {
                    return self.refuse(
                        command,
                        "not_found",
                        format!(
                            "node {node} is not a READY node of cluster {}",
                            self.config.id
                        ),
                    );
                }
                let others: Vec<String> = set
                    .iter()
                    .filter(|c| &c.id != node)
                    .map(|c| c.id.clone())
                    .collect();
                for id in others {
                    set.remove(&id);
                }
                format!("node {node}")
            }
            MigrateTarget::Anywhere => {
                set.remove(&from);
                "another node".to_string()
            }
            MigrateTarget::Cluster(c) => {
                return self.refuse(
                    command,
                    "unsupported",
                    format!(
                        "moving to cluster {c} is decided by the root, not by cluster {}",
                        self.config.id
                    ),
                );
            }
        };
        let placed = match self.scheduler.place(&spec, &set) {
            Ok(p) => p.candidate,
            Err(SchedulerError::Unschedulable(u)) => {
                return self.unschedulable(command, &format!("cannot move {old_id} to {target}"), u)
            }
            Err(e) => return self.refuse(command, "invalid", e.to_string()),
        };
        self.candidates.reserve(&placed, &spec.resources);
        self.candidates.add_job(&placed, &spec.name);
        let now = now_ms();
        let cluster = self.config.id.clone();
        let Some(job) = self.jobs.get_mut(m.job.as_str()) else {
            return command.ack(&cluster);
        };
        let why = format!("migrate {old_id} from {from} to {placed}");
        if advance(&mut job.lifecycle, JobState::Migrating, now, &why).is_ok()
            && job.migration.is_none()
        {
            job.migration = Some(Migration {
                first_new: job.instances.len(),
                target: placed.clone(),
                from_cluster: None,
                to_cluster: None,
            });
        }
        let reason = format!("{why} (make-before-break)");
        let id = start_instance(&cluster, job, &placed, reason, now, fx);
        if let Some(new) = job.instance_mut(&id) {
            new.replaces = Some(old_id);
        }
        info!(job = %m.job, instance = %id, node = %placed, "migrating");
        fx.persist.push(Self::job_key(m.job.as_str()));
        command.ack(&cluster)
    }

    /// A migration's new instance runs: the one it replaces is terminated now.
    fn finish_migration(&mut self, job_id: &str, new: &InstanceId, fx: &mut Fx) {
        let grace = self.config.grace.as_millis() as u64;
        let cluster = self.config.id.clone();
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        let Some(old) = job
            .instances
            .iter()
            .find(|i| &i.id == new)
            .and_then(|i| i.replaces.clone())
        else {
            return;
        };
        let Some(instance) = job.instance_mut(&old) else {
            return;
        };
        if instance.is_over() || instance.lifecycle.state() == InstanceState::Terminating {
            return;
        }
        let node = instance.node.clone().unwrap_or_default();
        let reason = format!("replaced by {new}, which runs (migration)");
        if advance(
            &mut instance.lifecycle,
            InstanceState::Terminating,
            now_ms(),
            &reason,
        )
        .is_err()
        {
            return;
        }
        fx.send_up.push(instance_event(
            &cluster,
            &job.id,
            &old,
            &node,
            InstanceState::Terminating,
            reason,
        ));
        fx.commands.push(stop_instance(
            &cluster,
            &node,
            &job.id,
            &old,
            grace,
            Tag::Terminate,
        ));
        fx.persist.push(Self::job_key(job_id));
    }

    fn on_terminate(&mut self, command: &Envelope, t: &Terminate, fx: &mut Fx) -> Envelope {
        let now = now_ms();
        let id = self.config.id.clone();
        let Some(job) = self.jobs.get_mut(t.job.as_str()) else {
            return command.ack(&id);
        };
        let _ = advance(
            &mut job.lifecycle,
            JobState::Terminating,
            now,
            "terminate requested",
        );
        for instance in job
            .instances
            .iter_mut()
            .filter(|i| !i.is_over() && t.instance.as_ref().is_none_or(|only| only == &i.id))
        {
            let node = instance.node.clone().unwrap_or_default();
            let reachable = self
                .nodes
                .get(&node)
                .is_some_and(|n| n.lifecycle.state() == NodeState::Ready);
            if reachable {
                let stop =
                    stop_instance(&id, &node, &t.job, &instance.id, t.grace_ms, Tag::Terminate);
                fx.commands.push(stop);
            } else {
                // nothing to stop where nothing is reachable; if the node comes back with
                // it still running, its report is answered with a terminate (issue 9)
                let reason = format!("node {node} is not reachable; recorded as terminated");
                let _ = advance(
                    &mut instance.lifecycle,
                    InstanceState::Terminated,
                    now,
                    &reason,
                );
                fx.send_up.push(instance_event(
                    &id,
                    &t.job,
                    &instance.id,
                    &node,
                    InstanceState::Terminated,
                    reason,
                ));
            }
        }
        job.settle(now);
        fx.persist.push(Self::job_key(t.job.as_str()));
        command.ack(&id)
    }

    fn on_deploy_outcome(
        &mut self,
        job: &JobId,
        instance: &InstanceId,
        outcome: Result<CommandOutcome, TransportError>,
        fx: &mut Fx,
    ) {
        let reason = match outcome {
            Ok(CommandOutcome::Acked) => return,
            Ok(CommandOutcome::Nacked(e) | CommandOutcome::Unschedulable(e, _)) => {
                format!("the worker refused: {}", e.message)
            }
            Err(e) => format!("the worker could not be reached: {e}"),
        };
        let Some(record) = self.jobs.get_mut(job.as_str()) else {
            return;
        };
        let Some(i) = record.instance_mut(instance) else {
            return;
        };
        if i.is_over() {
            return;
        }
        let node = i.node.clone().unwrap_or_default();
        if advance(&mut i.lifecycle, InstanceState::Failed, now_ms(), &reason).is_ok() {
            fx.persist.push(Self::job_key(job.as_str()));
            self.relocate_failed(job.as_str(), instance, &node, &reason, fx);
            if let Some(record) = self.jobs.get_mut(job.as_str()) {
                record.settle(now_ms());
            }
            fx.send_up.push(instance_event(
                &self.config.id,
                job,
                instance,
                &node,
                InstanceState::Failed,
                reason,
            ));
        }
    }

    fn on_query(&mut self, query: &Envelope, what: &Query, fx: &mut Fx) {
        let result = match what {
            Query::Nodes => {
                let nodes: Vec<_> = self.nodes.values().map(NodeRecord::view).collect();
                serde_json::to_value(nodes).map_err(|e| ErrorBody {
                    code: "internal".into(),
                    message: e.to_string(),
                })
            }
            Query::Logs { job, .. } => {
                // the newest instance that ran, on whichever node it is
                let node = self.jobs.get(job.as_str()).and_then(|j| {
                    j.instances
                        .iter()
                        .rev()
                        .find(|i| !i.is_over() || i.lifecycle.state() == InstanceState::Exited)
                        .or(j.instances.last())
                        .and_then(|i| i.node.clone())
                });
                let Some(node) = node else {
                    let error = ErrorBody {
                        code: "not_found".into(),
                        message: format!("job {job} has no instance on this cluster"),
                    };
                    fx.send_up.push(query.reply(&self.config.id, Err(error)));
                    return;
                };
                let ask = self.up(Message::Query(what.clone()));
                self.relayed.insert(ask.id.clone(), query.id.clone());
                if matches!(what, Query::Logs { follow: true, .. }) {
                    self.following
                        .insert(query.id.clone(), (node.clone(), ask.id.clone()));
                }
                fx.send_down.push((node, ask));
                return;
            }
            Query::Jobs => {
                let events: Vec<InstanceEvent> = self
                    .jobs
                    .values()
                    .filter(|j| j.is_live())
                    .flat_map(|j| {
                        j.instances.iter().map(|i| InstanceEvent {
                            job: j.id.clone(),
                            instance: i.id.clone(),
                            node: i.node.clone().unwrap_or_default(),
                            state: i.lifecycle.state(),
                            exit_code: i.exit_code,
                            reason: format!("re-synced from cluster {}", self.config.id),
                            unschedulable: None,
                        })
                    })
                    .collect();
                serde_json::to_value(events).map_err(|e| ErrorBody {
                    code: "internal".into(),
                    message: e.to_string(),
                })
            }
            Query::Cancel { query: id } => {
                if let Some((node, asked)) = self.following.remove(id) {
                    self.relayed.remove(&asked);
                    let cancel = self.up(Message::Query(Query::Cancel { query: asked }));
                    fx.send_down.push((node, cancel));
                }
                return;
            }
        };
        fx.send_up.push(query.reply(&self.config.id, result));
    }

    fn on_query_reply(&mut self, reply: QueryReply, fx: &mut Fx) {
        let Some(re) = self.relayed.get(&reply.re).cloned() else {
            return;
        };
        if !reply.more {
            self.relayed.remove(&reply.re);
            self.following.remove(&re);
        }
        fx.send_up
            .push(self.up(Message::QueryReply(QueryReply { re, ..reply })));
    }

    fn check_heartbeats(&mut self, fx: &mut Fx) {
        let limit = self.config.status_interval() * self.config.missed_heartbeats.max(1);
        let now = now_ms();
        let late: Vec<String> = self
            .nodes
            .values()
            .filter(|n| {
                n.lifecycle.state() == NodeState::Ready
                    && now.saturating_sub(n.last_seen_ms) > limit.as_millis() as u64
            })
            .map(|n| n.id.clone())
            .collect();
        for node in late {
            let reason = format!(
                "no status for {} missed intervals ({limit:?})",
                self.config.missed_heartbeats
            );
            self.node_lost(&node, &reason, fx);
        }
    }
}

impl Records for ClusterState {
    fn value_of(&self, key: &str) -> Option<serde_json::Value> {
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
        self.shared.apply(fx).await;
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
        let now = now_ms();
        let mut nodes = BTreeMap::new();
        let mut candidates = CandidateSet::for_tier(Tier::Nodes);
        for mut node in load::<NodeRecord>(&*store, NODES).await? {
            node.last_seen_ms = now;
            if node.lifecycle.state() == NodeState::Ready {
                candidates.insert(node.candidate(now));
            }
            nodes.insert(node.id.clone(), node);
        }
        let jobs: BTreeMap<String, JobRecord> = load::<JobRecord>(&*store, JOBS)
            .await?
            .into_iter()
            .map(|job| (job.id.to_string(), job))
            .collect();
        let state = ClusterState {
            config,
            scheduler,
            nodes,
            candidates,
            jobs,
            relayed: HashMap::new(),
            following: HashMap::new(),
            stopping: std::collections::HashSet::new(),
        };
        let (core, outcomes) = Core::new(state, store);
        Ok(ClusterEngine {
            shared: Arc::new(core),
            outcomes,
        })
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
        let mut aggregate_tick = tokio::time::interval(aggregate_every);
        aggregate_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat_tick = tokio::time::interval(heartbeat_every);
        heartbeat_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let mut fx = Fx::default();
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = aggregate_tick.tick() => {
                    let state = self.shared.state();
                    fx.send_up.push(state.up(Message::ClusterAggregate(state.aggregate())));
                }
                _ = heartbeat_tick.tick() => self.shared.state().check_heartbeats(&mut fx),
                Some((tag, outcome)) = self.outcomes.recv() => match tag {
                    Tag::Deploy { job, instance } => self.shared.state().on_deploy_outcome(&job, &instance, outcome, &mut fx),
                    Tag::Stop { instance } => { self.shared.state().stopping.remove(&instance); }
                    Tag::Terminate => {}
                },
                event = down.recv() => {
                    let mut state = self.shared.state();
                    match event? {
                        ParentEvent::ChildUp { child } => state.node_heard(&child, &mut fx),
                        ParentEvent::ChildLost { child, reason } => state.node_lost(&child, &reason, &mut fx),
                        ParentEvent::Message { child, envelope } => match envelope.body {
                            Message::NodeStatus(status) => state.on_status(&child, status, &mut fx),
                            Message::InstanceEvent(event) => state.on_instance_event(&child, event, &mut fx),
                            Message::QueryReply(reply) => state.on_query_reply(reply, &mut fx),
                            other => debug!(node = %child, kind = other.kind(), "ignored message from a node"),
                        },
                        ParentEvent::Invalid { child, error } => warn!(node = %child, %error, "bad message from a node"),
                    }
                }
                received = up.recv() => match received {
                    Ok(envelope) => {
                        let mut state = self.shared.state();
                        let answer = match &envelope.body {
                            Message::Deploy(deploy) => Some(state.on_deploy(&envelope, deploy, &mut fx)),
                            Message::Terminate(t) => Some(state.on_terminate(&envelope, t, &mut fx)),
                            Message::Scale(scale) => Some(state.on_scale(&envelope, scale, &mut fx)),
                            Message::Migrate(m) => Some(state.on_migrate(&envelope, m, &mut fx)),
                            Message::Query(q) => { state.on_query(&envelope, q, &mut fx); None }
                            other if other.is_command() => Some(envelope.nack(&state.config.id, ErrorBody {
                                code: "unsupported".into(),
                                message: format!("{} is not supported by this cluster yet", other.kind()),
                            })),
                            other => { debug!(kind = other.kind(), "ignored message from the root"); None }
                        };
                        // the answer goes before any event the command caused
                        if let Some(answer) = answer {
                            fx.send_up.insert(0, answer);
                        }
                    }
                    Err(TransportError::Invalid { reason, .. }) => warn!(%reason, "bad message from the root"),
                    Err(e) => return Err(e),
                },
            }
            self.shared.apply(fx).await;
        }
    }
}
