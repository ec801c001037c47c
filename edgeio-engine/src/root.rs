//! The root engine (System Manager): takes jobs from users, schedules them over the
//! clusters' aggregates, gives each to a cluster, follows its instances through the events
//! the clusters relay, and answers users through [`RootHandle`] (which implements
//! [`RootApi`], the trait the REST router serves).
//!
//! Like the cluster engine, state lives behind one mutex and every change returns its
//! effects (records to persist, messages, commands), carried out after the lock is released.

use crate::effects::{record_json, Core, Effects, Outcome, Records};
use crate::records::{
    advance, load, new_job_id, ClusterRecord, InstanceRecord, JobRecord, Migration, Part, CLUSTERS,
    JOBS,
};
use async_trait::async_trait;
use edgeio_core::api::{ApiError, ClusterView, JobView, LogStream, LogsQuery, NodeView, RootApi};
use edgeio_core::job::{FieldError, JobSpec, MAX_REPLICAS};
use edgeio_core::model::{check_id, CandidateSet, InstanceId, JobId, Labels, Tier};
use edgeio_core::reliable::{CommandOutcome, ReliableConfig, ReliableParent};
use edgeio_core::scheduler::{Scheduler, SchedulerError, Unschedulable};
use edgeio_core::state::{ClusterState, InstanceState, JobState, Lifecycle, StateMachine};
use edgeio_core::store::{Store, StoreExt};
use edgeio_core::transport::{ParentEvent, ParentTransport, Registrar, TransportError};
use edgeio_core::wire::{
    now_ms, ChannelKind, ChannelSettings, ClusterAggregate, Deploy, Envelope, ErrorBody,
    InstanceEvent, Message, Migrate, MigrateTarget, PeerRole, Query, QueryReply, RegisterReply,
    RegisterRequest, Scale, Terminate, DEFAULT_MAX_MESSAGE_BYTES, MAX_PREFIX,
};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

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
enum Tag {
    Deploy {
        job: JobId,
        cluster: String,
    },
    Terminate {
        job: JobId,
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
    },
}

type Fx = Effects<Tag>;

struct RootState {
    config: RootConfig,
    scheduler: Arc<dyn Scheduler>,
    clusters: BTreeMap<String, ClusterRecord>,
    jobs: BTreeMap<String, JobRecord>,
    /// Job names being created right now (their record is being written).
    reserving: Vec<String>,
    /// Queries sent to clusters, waiting for their reply.
    queries: HashMap<String, oneshot::Sender<Result<serde_json::Value, ApiError>>>,
    /// Followed logs: query id → the reader's end.
    streams: HashMap<String, mpsc::Sender<Result<bytes::Bytes, ApiError>>>,
    /// Re-sync queries sent to clusters whose link came up: query id → cluster.
    syncs: HashMap<String, String>,
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
        Err(e) => Some((format!("cluster {cluster} could not be reached: {e}"), None)),
    }
}

/// A terminate of all of `job` on `cluster`, as a command from the root `config` describes.
/// A free function, so that it can be built while a job record is borrowed.
fn terminate_command(config: &RootConfig, cluster: &str, job: &JobId) -> (String, Envelope, Tag) {
    let body = Message::Terminate(Terminate {
        job: job.clone(),
        instance: None,
        grace_ms: config.grace.as_millis() as u64,
    });
    (
        cluster.to_string(),
        Envelope::new(&config.id, body),
        Tag::Terminate { job: job.clone() },
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
        Envelope::new(&self.config.id, body)
    }

    fn register(
        &mut self,
        request: RegisterRequest,
        fx: &mut Fx,
    ) -> Result<RegisterReply, ErrorBody> {
        if request.role != PeerRole::Cluster {
            return Err(ErrorBody {
                code: "invalid".into(),
                message: format!(
                    "role {:?} cannot register with the root; only clusters can",
                    request.role
                ),
            });
        }
        let id = match request
            .previous_id
            .filter(|id| self.clusters.contains_key(id))
        {
            Some(id) => id,
            None => {
                check_id("cluster name", &request.name).map_err(|e| ErrorBody {
                    code: "invalid".into(),
                    message: format!("name: {e}"),
                })?;
                request.name.clone()
            }
        };
        let now = now_ms();
        let record = match self.clusters.remove(&id) {
            Some(mut old) => {
                if old.lifecycle.state() == ClusterState::Inactive {
                    let _ = old
                        .lifecycle
                        .transition(ClusterState::Active, now, "registered again");
                }
                old.location = request.location;
                old.labels = request.labels;
                old.last_seen_ms = now;
                old
            }
            None => ClusterRecord {
                id: id.clone(),
                name: request.name,
                location: request.location,
                labels: request.labels,
                lifecycle: Lifecycle::new(ClusterState::Active, now, "registered"),
                aggregate: None,
                last_seen_ms: now,
            },
        };
        info!(cluster = %id, "cluster registered");
        self.clusters.insert(id.clone(), record);
        fx.persist.push(cluster_key(&id));
        Ok(RegisterReply {
            id,
            channel: ChannelSettings {
                kind: ChannelKind::Ws,
                broker: None,
                topics: None,
                status_interval_ms: self.config.aggregate_interval.as_millis().max(1) as u64,
                max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            },
        })
    }

    /// Heard from `cluster`: ACTIVE again if it was not, and then re-synced.
    fn cluster_up(&mut self, cluster: &str, fx: &mut Fx) {
        let Some(record) = self.clusters.get_mut(cluster) else {
            return;
        };
        record.last_seen_ms = now_ms();
        if record.lifecycle.state() == ClusterState::Inactive
            && record
                .lifecycle
                .transition(ClusterState::Active, now_ms(), "heard from again")
                .is_ok()
        {
            fx.persist.push(cluster_key(cluster));
            self.sync(cluster, fx);
        }
    }

    /// `cluster`'s link came up (it registered, or dialed in again): ACTIVE, and asked for
    /// every job it keeps, so that what either side missed while apart is reconciled.
    fn linked(&mut self, cluster: &str, fx: &mut Fx) {
        let was_active = self
            .clusters
            .get(cluster)
            .is_some_and(|c| c.lifecycle.state() == ClusterState::Active);
        self.cluster_up(cluster, fx);
        if was_active {
            self.sync(cluster, fx);
        }
    }

    fn sync(&mut self, cluster: &str, fx: &mut Fx) {
        let query = self.msg(Message::Query(Query::Jobs));
        self.syncs.insert(query.id.clone(), cluster.to_string());
        fx.send_down.push((cluster.to_string(), query));
    }

    /// Reconciles the root's jobs with what `cluster` reports it keeps (one `instance_event`
    /// per instance): states it missed are applied; a job the cluster runs that has moved
    /// elsewhere (or ended, or is unknown) is terminated there, the newer placement winning;
    /// a job waiting for a place is adopted back; a deploy the cluster never got is sent again;
    /// a job the cluster no longer keeps is placed anew.
    fn on_sync(&mut self, cluster: &str, reply: QueryReply, fx: &mut Fx) {
        let events: Vec<InstanceEvent> = match reply.result.map(serde_json::from_value) {
            Some(Ok(events)) => events,
            Some(Err(e)) => {
                warn!(cluster, error = %e, "unreadable re-sync answer");
                return;
            }
            None => {
                let error = reply.error.map(|e| e.message).unwrap_or_default();
                warn!(cluster, %error, "cluster did not answer the re-sync");
                return;
            }
        };
        let mut reported: BTreeMap<JobId, Vec<InstanceEvent>> = BTreeMap::new();
        for event in events {
            reported.entry(event.job.clone()).or_default().push(event);
        }
        let now = now_ms();
        for (job, events) in &reported {
            let owner = self
                .jobs
                .get(job.as_str())
                .map(|j| (j.holds(cluster), j.cluster.clone(), j.lifecycle.state()));
            match owner {
                Some((true, _, state)) => {
                    for event in events {
                        self.on_instance_event(cluster, event.clone(), fx);
                    }
                    if state == JobState::Terminating {
                        fx.commands
                            .push(terminate_command(&self.config, cluster, job));
                    }
                }
                Some((_, None, JobState::Requested | JobState::NotDeployable)) => {
                    info!(job = %job, cluster, "adopting a job back from a cluster that kept it");
                    if let Some(record) = self.jobs.get_mut(job.as_str()) {
                        record.cluster = Some(cluster.to_string());
                        record.refused_by.clear();
                        let why = format!("cluster {cluster} is back and still runs it");
                        let _ =
                            advance(&mut record.lifecycle, JobState::ScheduledCluster, now, &why);
                    }
                    for event in events {
                        self.on_instance_event(cluster, event.clone(), fx);
                    }
                    fx.persist.push(job_key(job.as_str()));
                }
                _ => {
                    info!(job = %job, cluster, "terminating a job on a cluster it has left");
                    for event in events {
                        self.on_instance_event(cluster, event.clone(), fx);
                    }
                    fx.commands
                        .push(terminate_command(&self.config, cluster, job));
                }
            }
        }
        let missing: Vec<(String, JobState)> = self
            .jobs
            .values()
            .filter(|j| j.is_live() && j.holds(cluster) && !reported.contains_key(&j.id))
            .map(|j| (j.id.to_string(), j.lifecycle.state()))
            .collect();
        for (id, state) in missing {
            match state {
                JobState::ScheduledCluster => {
                    if let Some(command) = self.deploy_command(&id, cluster) {
                        fx.commands.push(command);
                    }
                }
                JobState::Terminating => {
                    if let Some(record) = self.jobs.get_mut(&id) {
                        let why = format!("cluster {cluster} keeps nothing of it");
                        let spread = !record.parts.is_empty();
                        for i in record.instances.iter_mut().filter(|i| {
                            !i.is_over() && (!spread || i.cluster.as_deref() == Some(cluster))
                        }) {
                            let _ = advance(&mut i.lifecycle, InstanceState::Terminated, now, &why);
                        }
                        if !spread {
                            let _ = advance(&mut record.lifecycle, JobState::Terminated, now, &why);
                        }
                        record.settle(now);
                        fx.persist.push(job_key(&id));
                    }
                }
                _ => {
                    let why = format!("cluster {cluster} no longer keeps it");
                    self.leave_cluster(&id, cluster, &why, fx);
                }
            }
        }
    }

    /// Takes job `id` away from `cluster` (lost, or unable to keep it): its instances there
    /// are LOST, and it is scheduled again over the other clusters.
    fn leave_cluster(&mut self, id: &str, cluster: &str, reason: &str, fx: &mut Fx) {
        let now = now_ms();
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        if !job.holds(cluster) || !job.is_live() {
            return;
        }
        if let Some(at) = job.parts.iter().position(|p| p.cluster == cluster) {
            let part = job.parts.remove(at);
            if !job.parts.is_empty() {
                // the other parts stay; this one's replicas go to yet another cluster
                warn!(
                    job = id,
                    cluster, reason, "moving a part of a job to another cluster"
                );
                for instance in job
                    .instances
                    .iter_mut()
                    .filter(|i| !i.is_over() && i.cluster.as_deref() == Some(cluster))
                {
                    let _ = advance(&mut instance.lifecycle, InstanceState::Lost, now, reason);
                }
                job.cluster_from_parts();
                if !job.refused_by.iter().any(|c| c == cluster) {
                    job.refused_by.push(cluster.to_string());
                }
                fx.persist.push(job_key(id));
                self.place_part(id, part.replicas, reason, fx);
                return;
            }
        }
        warn!(job = id, cluster, reason, "moving a job to another cluster");
        job.cluster = None;
        job.parts.clear();
        for instance in job.instances.iter_mut().filter(|i| !i.is_over()) {
            let _ = advance(&mut instance.lifecycle, InstanceState::Lost, now, reason);
        }
        fx.persist.push(job_key(id));
        self.reschedule(id, reason, fx);
    }

    /// Places `count` more replicas of spread job `id` on a cluster that holds none of it
    /// yet (the rest of a part a cluster could not keep or take): true when one was found.
    /// The deploy may still be refused; [`Self::part_refused`] goes on from there.
    fn place_part(&mut self, id: &str, count: u32, reason: &str, fx: &mut Fx) -> bool {
        let Some(job) = self.jobs.get(id) else {
            return false;
        };
        let mut excluded = job.refused_by.clone();
        excluded.extend(job.clusters());
        let set = self.candidates(&excluded, &job.spec.node_selector);
        let placed = self.scheduler.place(&job.spec, &set);
        let Some(job) = self.jobs.get_mut(id) else {
            return false;
        };
        match placed {
            Ok(p) => {
                info!(job = id, cluster = %p.candidate, count, reason, "placing part of a job");
                if job.lifecycle.state() == JobState::Running {
                    // the move shows in the job's history, with its reason
                    let why = format!("{count} replicas go to cluster {}: {reason}", p.candidate);
                    let _ = advance(&mut job.lifecycle, JobState::ScheduledNode, now_ms(), &why);
                }
                job.parts.push(Part {
                    cluster: p.candidate.clone(),
                    replicas: count,
                });
                job.cluster_from_parts();
                fx.persist.push(job_key(id));
                if let Some(command) = self.deploy_command(id, &p.candidate) {
                    fx.commands.push(command);
                }
                true
            }
            Err(e) => {
                if let SchedulerError::Unschedulable(u) = e {
                    job.unschedulable.push(u.in_tier(Tier::Clusters));
                }
                let held: u32 = job.parts.iter().map(|p| p.replicas).sum();
                warn!(
                    job = id,
                    count, held, reason, "no other cluster can take the rest of a spread job"
                );
                fx.persist.push(job_key(id));
                false
            }
        }
    }

    /// `cluster` refused the part of spread job `id` it was given. When it could take some of
    /// it, it gets that many and the rest goes elsewhere; when no cluster is left, a job still
    /// being placed is given back (NOT_DEPLOYABLE, what was placed terminated), a scale-up
    /// keeps the count it had, and a running job stays short until capacity appears.
    fn part_refused(
        &mut self,
        id: &str,
        cluster: &str,
        error: &str,
        unschedulable: Option<Unschedulable>,
        fx: &mut Fx,
    ) {
        let now = now_ms();
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let Some(at) = job.parts.iter().position(|p| p.cluster == cluster) else {
            return;
        };
        let part = job.parts.remove(at);
        let fits = unschedulable
            .as_ref()
            .map_or(0, |u| u.fits)
            .min(part.replicas);
        job.unschedulable.extend(unschedulable);
        job.refused_by.push(cluster.to_string());
        let reason = format!(
            "cluster {cluster} refused {} replicas: {error}",
            part.replicas
        );
        let mut rest = part.replicas;
        if fits > 0 {
            // it said how many it can take: those, and the rest elsewhere
            job.parts.insert(
                at,
                Part {
                    cluster: cluster.to_string(),
                    replicas: fits,
                },
            );
            rest -= fits;
            if let Some(command) = self.deploy_command(id, cluster) {
                fx.commands.push(command);
            }
        }
        if let Some(job) = self.jobs.get_mut(id) {
            job.cluster_from_parts();
        }
        fx.persist.push(job_key(id));
        if self.place_part(id, rest, &reason, fx) {
            return;
        }
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let ran = job
            .lifecycle
            .history()
            .iter()
            .any(|h| h.state == JobState::Running);
        match job.lifecycle.state() {
            JobState::Scaling => {
                // the extra replicas found no place: the count they were added to stays
                let from = job.spec.replicas - rest;
                let why = format!("{reason}; no other cluster can take them: it keeps {from}");
                job.spec.replicas = from;
                if job.parts.len() == 1 {
                    job.parts.clear();
                }
                let _ = advance(&mut job.lifecycle, JobState::Running, now, &why);
                job.settle(now);
            }
            JobState::ScheduledCluster | JobState::ScheduledNode if !ran => {
                let why = format!("{reason}; the other clusters cannot take them either");
                let clusters = job.clusters();
                job.parts.clear();
                job.cluster = None;
                for instance in job.instances.iter_mut().filter(|i| !i.is_over()) {
                    let _ = advance(
                        &mut instance.lifecycle,
                        InstanceState::Terminating,
                        now,
                        &why,
                    );
                }
                let _ = advance(&mut job.lifecycle, JobState::NotDeployable, now, &why);
                let job_id = job.id.clone();
                for c in clusters {
                    fx.commands
                        .push(terminate_command(&self.config, &c, &job_id));
                }
            }
            _ => {}
        }
    }

    /// Spreads REQUESTED job `id` over the clusters that said how many of its replicas they
    /// can take, when together they can take all: true when it did.
    fn spread(&mut self, id: &str, fx: &mut Fx) -> bool {
        let now = now_ms();
        let Some(job) = self.jobs.get_mut(id) else {
            return false;
        };
        let wanted = job.spec.replicas;
        let mut offers: Vec<(String, u32)> = std::mem::take(&mut job.offers)
            .into_iter()
            .filter(|(c, _)| {
                self.clusters
                    .get(c)
                    .is_some_and(|r| r.lifecycle.state() == ClusterState::Active)
            })
            .collect();
        if wanted < 2 || offers.iter().map(|(_, n)| *n).sum::<u32>() < wanted {
            return false;
        }
        // the fewest clusters: the largest offers first
        offers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut left = wanted;
        let mut parts = Vec::new();
        for (cluster, n) in offers {
            if left == 0 {
                break;
            }
            let take = n.min(left);
            parts.push(Part {
                cluster,
                replicas: take,
            });
            left -= take;
        }
        let text: Vec<String> = parts
            .iter()
            .map(|p| format!("{} ({})", p.cluster, p.replicas))
            .collect();
        let reason = format!(
            "spread over clusters {}: no one cluster can take all {wanted} replicas",
            text.join(", ")
        );
        if advance(&mut job.lifecycle, JobState::ScheduledCluster, now, &reason).is_err() {
            return false;
        }
        info!(job = id, %reason, "spreading a job");
        job.refused_by.clear();
        let clusters: Vec<String> = parts.iter().map(|p| p.cluster.clone()).collect();
        job.parts = parts;
        job.cluster_from_parts();
        for cluster in clusters {
            if let Some(command) = self.deploy_command(id, &cluster) {
                fx.commands.push(command);
            }
        }
        fx.persist.push(job_key(id));
        true
    }

    /// A deploy of job `id` to `cluster`, as a command; its instances are numbered after
    /// those the job had before. A spread job's part goes with its own count and names its
    /// instances after the cluster.
    fn deploy_command(&self, id: &str, cluster: &str) -> Option<(String, Envelope, Tag)> {
        let job = self.jobs.get(id)?;
        let instance_prefix = job
            .parts
            .iter()
            .any(|p| p.cluster == cluster)
            .then(|| part_prefix(&job.id, cluster));
        let deploy = Deploy {
            job: job.id.clone(),
            spec: job.spec_on(cluster),
            instance: None,
            first_instance: job.first_instance + job.instances.len() as u32,
            instance_prefix,
        };
        Some((
            cluster.to_string(),
            self.msg(Message::Deploy(Box::new(deploy))),
            Tag::Deploy {
                job: job.id.clone(),
                cluster: cluster.to_string(),
            },
        ))
    }

    /// Marks clusters silent for `missed_aggregates` intervals INACTIVE, and moves the jobs of
    /// clusters INACTIVE for longer than `cluster_timeout`.
    fn check_clusters(&mut self, fx: &mut Fx) {
        let now = now_ms();
        let silent_limit = (self.config.aggregate_interval * self.config.missed_aggregates.max(1))
            .as_millis() as u64;
        let timeout = self.config.cluster_timeout.as_millis() as u64;
        let silent: Vec<String> = self
            .clusters
            .values()
            .filter(|c| {
                c.lifecycle.state() == ClusterState::Active
                    && now.saturating_sub(c.last_seen_ms) > silent_limit
            })
            .map(|c| c.id.clone())
            .collect();
        for cluster in silent {
            let reason = format!(
                "no aggregate for {} intervals ({} ms)",
                self.config.missed_aggregates, silent_limit
            );
            self.cluster_lost(&cluster, &reason, fx);
        }
        let gone: Vec<String> = self
            .clusters
            .values()
            .filter(|c| {
                c.lifecycle.state() == ClusterState::Inactive
                    && c.lifecycle
                        .history()
                        .last()
                        .is_some_and(|h| now.saturating_sub(h.at_ms) >= timeout)
            })
            .map(|c| c.id.clone())
            .collect();
        for cluster in gone {
            let jobs: Vec<String> = self
                .jobs
                .values()
                .filter(|j| {
                    j.is_live() && j.holds(&cluster) && j.lifecycle.state() != JobState::Terminating
                })
                .map(|j| j.id.to_string())
                .collect();
            for job in jobs {
                let reason = format!(
                    "cluster {cluster} INACTIVE for more than {:?}",
                    self.config.cluster_timeout
                );
                self.leave_cluster(&job, &cluster, &reason, fx);
            }
        }
    }

    fn cluster_lost(&mut self, cluster: &str, reason: &str, fx: &mut Fx) {
        let Some(record) = self.clusters.get_mut(cluster) else {
            return;
        };
        if record
            .lifecycle
            .transition(ClusterState::Inactive, now_ms(), reason)
            .is_ok()
        {
            // a cluster that said goodbye (close code 1000) is news, not a problem
            if reason.contains("code 1000") {
                info!(cluster, reason, "cluster inactive");
            } else {
                warn!(cluster, reason, "cluster inactive");
            }
            fx.persist.push(cluster_key(cluster));
        }
        // queries to it will not be answered
        self.queries.retain(|_, q| !q.is_closed());
    }

    fn on_aggregate(&mut self, cluster: &str, aggregate: ClusterAggregate, fx: &mut Fx) {
        self.cluster_up(cluster, fx);
        let Some(record) = self.clusters.get_mut(cluster) else {
            return;
        };
        let more_nodes =
            aggregate.ready_nodes > record.aggregate.as_ref().map_or(0, |a| a.ready_nodes);
        record.aggregate = Some(aggregate);
        if more_nodes {
            fx.persist.push(cluster_key(cluster));
            // capacity appeared: jobs nothing could take get another chance
            let waiting: Vec<String> = self
                .jobs
                .values()
                .filter(|j| j.lifecycle.state() == JobState::NotDeployable)
                .map(|j| j.id.to_string())
                .collect();
            for job in waiting {
                if let Some(record) = self.jobs.get_mut(&job) {
                    record.refused_by.clear();
                }
                let reason = format!("cluster {cluster} has new nodes; retrying");
                self.reschedule(&job, &reason, fx);
            }
            // and spread jobs left short of replicas when a part found no other cluster
            let short: Vec<(String, u32)> = self
                .jobs
                .values()
                .filter(|j| {
                    !j.parts.is_empty()
                        && j.is_live()
                        && !matches!(
                            j.lifecycle.state(),
                            JobState::Terminating | JobState::Scaling | JobState::Migrating
                        )
                })
                .filter_map(|j| {
                    let held: u32 = j.parts.iter().map(|p| p.replicas).sum();
                    (held < j.spec.replicas).then(|| (j.id.to_string(), j.spec.replicas - held))
                })
                .collect();
            for (job, missing) in short {
                if let Some(record) = self.jobs.get_mut(&job) {
                    record.refused_by.clear();
                }
                let reason = format!("cluster {cluster} has new nodes; placing what is missing");
                self.place_part(&job, missing, &reason, fx);
            }
        }
    }

    fn candidates(&self, refused: &[String], selector: &Labels) -> CandidateSet {
        let now = now_ms();
        let mut set = CandidateSet::for_tier(Tier::Clusters);
        for record in self.clusters.values() {
            if record.lifecycle.state() == ClusterState::Active && !refused.contains(&record.id) {
                if let Some(candidate) = record.candidate(now, selector) {
                    set.insert(candidate);
                }
            }
        }
        set
    }

    /// Moves a job back to REQUESTED (recording `reason`) and schedules it again.
    fn reschedule(&mut self, id: &str, reason: &str, fx: &mut Fx) {
        let Some(record) = self.jobs.get_mut(id) else {
            return;
        };
        if advance(&mut record.lifecycle, JobState::Requested, now_ms(), reason).is_ok() {
            self.schedule(id, fx);
        }
    }

    /// Places a REQUESTED job on a cluster, or marks it NOT_DEPLOYABLE with the reasons.
    fn schedule(&mut self, id: &str, fx: &mut Fx) {
        let Some(job) = self.jobs.get(id) else {
            return;
        };
        if job.lifecycle.state() != JobState::Requested {
            return;
        }
        let set = self.candidates(&job.refused_by, &job.spec.node_selector);
        let mut spec = job.spec.clone();
        let placed = match &job.spec.worker_node {
            Some(node) if spec.cluster.is_none() => {
                // a pinned node is routed to the cluster whose aggregate names it
                match self.clusters.values().find(|c| {
                    c.aggregate
                        .as_ref()
                        .is_some_and(|a| a.node_names.contains(node))
                }) {
                    Some(c) => {
                        spec.cluster = Some(c.id.clone());
                        self.scheduler.place(&spec, &set)
                    }
                    None => Err(SchedulerError::Unschedulable(
                        Unschedulable::new(set.len())
                            .in_tier(Tier::Clusters)
                            .refused(
                                "worker_node",
                                set.len(),
                                format!("no cluster reports a READY node {node:?}"),
                            ),
                    )),
                }
            }
            _ => self.scheduler.place(&spec, &set),
        };
        let offered = self.jobs.get(id).is_some_and(|j| !j.offers.is_empty());
        if placed.is_err() && offered && self.spread(id, fx) {
            return;
        }
        let now = now_ms();
        let policy = self.scheduler.name().to_string();
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        match placed {
            Ok(p) => {
                let reason = format!("placed on cluster {} by {policy}", p.candidate);
                if advance(&mut job.lifecycle, JobState::ScheduledCluster, now, &reason).is_err() {
                    return;
                }
                job.cluster = Some(p.candidate.clone());
                if let Some(command) = self.deploy_command(id, &p.candidate) {
                    fx.commands.push(command);
                }
            }
            Err(e) => {
                job.offers.clear();
                let reason = match e {
                    SchedulerError::Unschedulable(u) => {
                        let u = u.in_tier(Tier::Clusters);
                        let text = if set.is_empty() && job.refused_by.is_empty() {
                            "no ACTIVE cluster with READY nodes".to_string()
                        } else {
                            u.to_string()
                        };
                        job.unschedulable.push(u);
                        text
                    }
                    other => other.to_string(),
                };
                let _ = advance(&mut job.lifecycle, JobState::NotDeployable, now, &reason);
                info!(job = id, %reason, "job not deployable");
            }
        }
        fx.persist.push(job_key(id));
    }

    fn on_deploy_outcome(
        &mut self,
        job: &JobId,
        cluster: &str,
        outcome: Result<CommandOutcome, TransportError>,
        fx: &mut Fx,
    ) {
        let Some((error, unschedulable)) = refusal(cluster, outcome) else {
            // taken: what other clusters offered while it was being placed is old news
            if let Some(record) = self.jobs.get_mut(job.as_str()) {
                if !record.offers.is_empty() {
                    record.offers.clear();
                    fx.persist.push(job_key(job.as_str()));
                }
            }
            return;
        };
        let moving_here = self
            .jobs
            .get(job.as_str())
            .is_some_and(|j| j.moving_to() == Some(cluster));
        if moving_here {
            self.abandon_migration(
                job.as_str(),
                &format!("cluster {cluster} refused: {error}"),
                unschedulable,
            );
            return;
        }
        let part = self
            .jobs
            .get(job.as_str())
            .is_some_and(|j| j.parts.iter().any(|p| p.cluster == cluster));
        if part {
            self.part_refused(job.as_str(), cluster, &error, unschedulable, fx);
            return;
        }
        self.refused(job, cluster, error, unschedulable, fx);
    }

    fn on_scale_outcome(
        &mut self,
        job: &JobId,
        cluster: &str,
        from: u32,
        outcome: Result<CommandOutcome, TransportError>,
        fx: &mut Fx,
    ) {
        let Some((error, unschedulable)) = refusal(cluster, outcome) else {
            return;
        };
        let Some(record) = self.jobs.get_mut(job.as_str()) else {
            return;
        };
        if record.lifecycle.state() != JobState::Scaling {
            return;
        }
        let to = record.spec.replicas;
        record.unschedulable.extend(unschedulable);
        if to > from {
            // the extra replicas go to a cluster that holds none of the job yet
            let extra = to - from;
            if record.parts.is_empty() {
                record.parts.push(Part {
                    cluster: cluster.to_string(),
                    replicas: from,
                });
            } else if let Some(part) = record.parts.iter_mut().find(|p| p.cluster == cluster) {
                part.replicas = part.replicas.saturating_sub(extra);
            }
            let why = format!("cluster {cluster} cannot take {extra} more: {error}");
            if self.place_part(job.as_str(), extra, &why, fx) {
                return;
            }
        }
        let Some(record) = self.jobs.get_mut(job.as_str()) else {
            return;
        };
        if record.parts.len() == 1 {
            record.parts.clear();
        }
        record.spec.replicas = from;
        let why = format!("scale to {to} refused by cluster {cluster}: {error}; it keeps {from}");
        let _ = advance(&mut record.lifecycle, JobState::Running, now_ms(), &why);
        warn!(job = %job, %why, "scale refused");
        record.settle(now_ms());
        fx.persist.push(job_key(job.as_str()));
    }

    fn on_migrate_outcome(
        &mut self,
        job: &JobId,
        cluster: &str,
        anywhere: bool,
        outcome: Result<CommandOutcome, TransportError>,
        fx: &mut Fx,
    ) {
        let Some((error, unschedulable)) = refusal(cluster, outcome) else {
            return;
        };
        let why = format!("cluster {cluster} cannot move it: {error}");
        if anywhere {
            // no other node there: another cluster (one holding no part of it),
            // make-before-break
            let others = self.jobs.get(job.as_str()).map(|j| {
                let mut held = j.clusters();
                held.push(cluster.to_string());
                let set = self.candidates(&held, &j.spec.node_selector);
                self.scheduler.place(&j.spec_on(cluster), &set)
            });
            if let Some(Ok(p)) = others {
                info!(job = %job, to = %p.candidate, %why, "migrating to another cluster");
                self.migrate_across(job.as_str(), cluster, &p.candidate, None, fx);
                return;
            }
        }
        self.abandon_migration(job.as_str(), &why, unschedulable);
        fx.persist.push(job_key(job.as_str()));
    }

    /// Ends a migration that could not be made: the job stays where it ran, RUNNING.
    fn abandon_migration(&mut self, id: &str, why: &str, unschedulable: Option<Unschedulable>) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        if job.lifecycle.state() != JobState::Migrating {
            return;
        }
        let across = job
            .migration
            .as_ref()
            .and_then(|m| Some((m.from_cluster.clone()?, m.to_cluster.clone())));
        if let Some((from, to)) = across {
            // the part (or the job) is the old cluster's again
            match job
                .parts
                .iter_mut()
                .find(|p| Some(&p.cluster) == to.as_ref())
            {
                Some(part) => part.cluster = from,
                None => job.cluster = Some(from),
            }
            if !job.parts.is_empty() {
                job.cluster_from_parts();
            }
        }
        job.unschedulable.extend(unschedulable);
        let why = format!("migration abandoned, it stays where it ran: {why}");
        warn!(job = id, %why, "migration abandoned");
        let _ = advance(&mut job.lifecycle, JobState::Running, now_ms(), &why);
        job.settle(now_ms());
    }

    /// Starts moving job `id` (or, for a spread job, its part) from cluster `from` to
    /// `cluster` make-before-break (pinned to `node` there, when given): deployed there first;
    /// the cluster it leaves is told to terminate it once an instance of the new placement
    /// runs.
    fn migrate_across(
        &mut self,
        id: &str,
        from: &str,
        cluster: &str,
        node: Option<&str>,
        fx: &mut Fx,
    ) {
        let now = now_ms();
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let target = match node {
            Some(n) => format!("node {n} of cluster {cluster}"),
            None => format!("cluster {cluster}"),
        };
        let why = match job.parts.iter_mut().find(|p| p.cluster == from) {
            Some(part) => {
                part.cluster = cluster.to_string();
                format!(
                    "migrate the part on cluster {from} ({} replicas) to {target} requested",
                    part.replicas
                )
            }
            None => format!("migrate to {target} requested"),
        };
        let _ = advance(&mut job.lifecycle, JobState::Migrating, now, &why);
        job.cluster = Some(cluster.to_string());
        if !job.parts.is_empty() {
            job.cluster_from_parts();
        }
        job.migration = Some(Migration {
            first_new: job.instances.len(),
            target,
            from_cluster: Some(from.to_string()),
            to_cluster: Some(cluster.to_string()),
        });
        if let Some((to, mut envelope, tag)) = self.deploy_command(id, cluster) {
            if let (Some(n), Message::Deploy(deploy)) = (node, &mut envelope.body) {
                deploy.spec.worker_node = Some(n.to_string());
            }
            fx.commands.push((to, envelope, tag));
        }
        fx.persist.push(job_key(id));
    }

    /// Validates and starts a scale (see [`RootApi::scale`]).
    fn scale(&mut self, id: &str, replicas: u32, fx: &mut Fx) -> Result<JobView, ApiError> {
        if !(1..=MAX_REPLICAS).contains(&replicas) {
            return Err(ApiError::Invalid {
                message: format!("replicas: {replicas} is out of range"),
                details: vec![FieldError {
                    path: "replicas".into(),
                    value: replicas.to_string(),
                    rule: format!("must be a whole number from 1 to {MAX_REPLICAS} (terminate a job to stop it)"),
                }],
            });
        }
        let root = self.config.id.clone();
        let job = self.jobs.get_mut(id).ok_or_else(|| ApiError::NotFound {
            kind: "job",
            id: id.to_string(),
        })?;
        let state = job.lifecycle.state();
        let from = job.spec.replicas;
        match state {
            _ if from == replicas && !state.is_final() => return Ok(job.view()),
            JobState::Requested | JobState::NotDeployable => {
                job.spec.replicas = replicas;
                fx.persist.push(job_key(id));
                if state == JobState::NotDeployable {
                    let why = format!("scaled from {from} to {replicas} replicas; retrying");
                    self.reschedule(id, &why, fx);
                }
            }
            JobState::ScheduledNode | JobState::Running => {
                let Some(cluster) = job.cluster.clone() else {
                    return Err(ApiError::Conflict {
                        message: format!("job {id} has no cluster yet"),
                        details: Vec::new(),
                    });
                };
                job.spec.replicas = replicas;
                let why = format!("scale from {from} to {replicas} replicas requested");
                let _ = advance(&mut job.lifecycle, JobState::Scaling, now_ms(), &why);
                // (cluster, its new count, or None: let go of its part)
                let mut changes: Vec<(String, Option<u32>)> = Vec::new();
                if job.parts.is_empty() {
                    changes.push((cluster, Some(replicas)));
                } else if replicas > from {
                    // more: asked of the newest part's cluster first
                    let last = job.parts.last_mut().expect("a spread job has parts");
                    last.replicas += replicas - from;
                    changes.push((last.cluster.clone(), Some(last.replicas)));
                } else {
                    // fewer: the newest parts shrink or go first
                    let mut excess = from - replicas;
                    while excess > 0 {
                        let Some(last) = job.parts.last_mut() else {
                            break;
                        };
                        if last.replicas <= excess {
                            excess -= last.replicas;
                            changes.push((last.cluster.clone(), None));
                            job.parts.pop();
                        } else {
                            last.replicas -= excess;
                            excess = 0;
                            changes.push((last.cluster.clone(), Some(last.replicas)));
                        }
                    }
                }
                let job_id = job.id.clone();
                for (cluster, count) in changes {
                    match count {
                        Some(n) => fx.commands.push((
                            cluster.clone(),
                            Envelope::new(
                                &root,
                                Message::Scale(Scale {
                                    job: job_id.clone(),
                                    replicas: n,
                                }),
                            ),
                            Tag::Scale {
                                job: job_id.clone(),
                                cluster,
                                from,
                            },
                        )),
                        None => fx
                            .commands
                            .push(terminate_command(&self.config, &cluster, &job_id)),
                    }
                }
                fx.persist.push(job_key(id));
            }
            other => {
                return Err(ApiError::Conflict {
                    message: format!("job {id} is {other}; it scales when REQUESTED, NOT_DEPLOYABLE, SCHEDULED_NODE or RUNNING"),
                    details: vec![FieldError {
                        path: "job".into(),
                        value: id.to_string(),
                        rule: "must be placed or waiting, and not moving".into(),
                    }],
                })
            }
        }
        Ok(self
            .jobs
            .get(id)
            .map(JobRecord::view)
            .expect("the job just changed"))
    }

    /// Validates and starts a migration (see [`RootApi::migrate`]).
    fn migrate(
        &mut self,
        id: &str,
        target: MigrateTarget,
        instance: Option<InstanceId>,
        fx: &mut Fx,
    ) -> Result<JobView, ApiError> {
        let job = self.jobs.get(id).ok_or_else(|| ApiError::NotFound {
            kind: "job",
            id: id.to_string(),
        })?;
        let state = job.lifecycle.state();
        let cluster = job.cluster.clone().filter(|_| state == JobState::Running);
        let Some(mut cluster) = cluster else {
            return Err(ApiError::Conflict {
                message: format!("job {id} is {state}; only a RUNNING job migrates"),
                details: Vec::new(),
            });
        };
        let mut from = None;
        if let Some(i) = &instance {
            let live = job.instances.iter().find(|x| &x.id == i && !x.is_over());
            let Some(live) = live else {
                return Err(ApiError::NotFound {
                    kind: "instance",
                    id: i.to_string(),
                });
            };
            from = live.cluster.clone();
        }
        let invalid = |message: String, field: &str, value: &str, rule: &str| ApiError::Invalid {
            message,
            details: vec![FieldError {
                path: field.into(),
                value: value.into(),
                rule: rule.into(),
            }],
        };
        let node_cluster = |node: &str| {
            self.clusters
                .values()
                .find(|c| {
                    c.lifecycle.state() == ClusterState::Active
                        && c.aggregate
                            .as_ref()
                            .is_some_and(|a| a.node_names.iter().any(|n| n == node))
                })
                .map(|c| c.id.clone())
        };
        if !job.parts.is_empty() {
            // a spread job moves one part at a time: the named instance's, or the one on
            // the cluster of the node named
            let part = match (&from, &target) {
                (Some(c), _) => Some(c.clone()),
                (None, MigrateTarget::Node(node)) => {
                    node_cluster(node).filter(|c| job.parts.iter().any(|p| &p.cluster == c))
                }
                _ => None,
            };
            let Some(part) = part else {
                return Err(invalid(
                    format!(
                        "job {id} is spread over clusters {}: say which part moves",
                        job.clusters().join(", ")
                    ),
                    "instance",
                    "",
                    "must name a live instance of the part to move (or a node of its cluster)",
                ));
            };
            cluster = part;
        }
        let within = |target: MigrateTarget, anywhere: bool| {
            let body = Message::Migrate(Migrate {
                job: job.id.clone(),
                instance: instance.clone(),
                target,
            });
            (body, anywhere)
        };
        let job_id = job.id.clone();
        let (message, anywhere) = match &target {
            MigrateTarget::Node(node) => {
                let there = job
                    .instances
                    .iter()
                    .filter(|i| !i.is_over() && instance.as_ref().is_none_or(|only| only == &i.id));
                if there.clone().count() > 0
                    && there.into_iter().all(|i| i.node.as_deref() == Some(node))
                {
                    return Err(invalid(
                        format!("job {id} already runs on node {node}"),
                        "node",
                        node,
                        "must be another node than the one it runs on",
                    ));
                }
                let Some(owner) = node_cluster(node) else {
                    return Err(ApiError::NotFound {
                        kind: "node",
                        id: node.clone(),
                    });
                };
                if owner != cluster && job.holds(&owner) {
                    return Err(invalid(
                        format!("cluster {owner} of node {node} already runs a part of job {id}"),
                        "node",
                        node,
                        "must be a node of the part's own cluster or of one holding no part of the job (scale to add replicas)",
                    ));
                }
                if owner != cluster {
                    self.migrate_across(id, &cluster, &owner, Some(node), fx);
                    return Ok(self.jobs.get(id).map(JobRecord::view).expect("a known job"));
                }
                within(target.clone(), false)
            }
            MigrateTarget::Cluster(c) => {
                let Some(record) = self.clusters.get(c) else {
                    return Err(ApiError::NotFound {
                        kind: "cluster",
                        id: c.clone(),
                    });
                };
                if c == &cluster {
                    return Err(invalid(
                        format!("job {id} already runs on cluster {c}"),
                        "cluster",
                        c,
                        "must be another cluster than the job's (or name a node)",
                    ));
                }
                if job.holds(c) {
                    return Err(invalid(
                        format!("cluster {c} already runs a part of job {id}"),
                        "cluster",
                        c,
                        "must be a cluster holding no part of the job (scale to add replicas)",
                    ));
                }
                if record.lifecycle.state() != ClusterState::Active {
                    return Err(ApiError::Unavailable {
                        reason: format!("cluster {c} is INACTIVE"),
                    });
                }
                self.migrate_across(id, &cluster, c, None, fx);
                return Ok(self.jobs.get(id).map(JobRecord::view).expect("a known job"));
            }
            MigrateTarget::Anywhere => within(target.clone(), true),
        };
        let now = now_ms();
        let root = self.config.id.clone();
        let Some(job) = self.jobs.get_mut(id) else {
            return Err(ApiError::NotFound {
                kind: "job",
                id: id.to_string(),
            });
        };
        let text = match &target {
            MigrateTarget::Node(n) => format!("node {n}"),
            _ => "another node or cluster".to_string(),
        };
        let _ = advance(
            &mut job.lifecycle,
            JobState::Migrating,
            now,
            &format!("migrate to {text} requested"),
        );
        job.migration = Some(Migration {
            first_new: job.instances.len(),
            target: text,
            from_cluster: None,
            to_cluster: None,
        });
        fx.commands.push((
            cluster.clone(),
            Envelope::new(&root, message),
            Tag::Migrate {
                job: job_id,
                cluster,
                anywhere,
            },
        ));
        fx.persist.push(job_key(id));
        Ok(job.view())
    }

    fn refused(
        &mut self,
        job: &JobId,
        cluster: &str,
        error: String,
        unschedulable: Option<Unschedulable>,
        fx: &mut Fx,
    ) {
        let Some(record) = self.jobs.get_mut(job.as_str()) else {
            return;
        };
        if record.lifecycle.state() != JobState::ScheduledCluster
            || record.cluster.as_deref() != Some(cluster)
        {
            return;
        }
        record.refused_by.push(cluster.to_string());
        if let Some(fits) = unschedulable.as_ref().map(|u| u.fits).filter(|n| *n > 0) {
            record.offers.insert(cluster.to_string(), fits);
        }
        record.unschedulable.extend(unschedulable);
        record.cluster = None;
        let reason = format!("cluster {cluster} refused: {error}");
        self.reschedule(job.as_str(), &reason, fx);
    }

    fn on_terminate_outcome(
        &mut self,
        job: &JobId,
        outcome: Result<CommandOutcome, TransportError>,
        fx: &mut Fx,
    ) {
        let Some(record) = self.jobs.get_mut(job.as_str()) else {
            return;
        };
        if let Ok(CommandOutcome::Nacked(e)) = &outcome {
            warn!(job = %job, error = %e.message, "a cluster refused to terminate a job");
        }
        if record.lifecycle.state() == JobState::Terminating
            && record.instances.iter().all(InstanceRecord::is_over)
        {
            let _ = advance(
                &mut record.lifecycle,
                JobState::Terminated,
                now_ms(),
                "the cluster ran nothing of it",
            );
            fx.persist.push(job_key(job.as_str()));
        }
    }

    fn on_instance_event(&mut self, cluster: &str, event: InstanceEvent, fx: &mut Fx) {
        let now = now_ms();
        let Some(job) = self.jobs.get_mut(event.job.as_str()) else {
            debug!(cluster, job = %event.job, "event for an unknown job");
            return;
        };
        let owner = job.holds(cluster);
        if !owner {
            // from a cluster the job has left: only the end of an instance it had is news
            let ends = matches!(
                event.state,
                InstanceState::Terminating
                    | InstanceState::Terminated
                    | InstanceState::Failed
                    | InstanceState::Exited
            );
            if !ends || job.instance_mut(&event.instance).is_none() {
                debug!(cluster, job = %event.job, "event from a cluster the job has left");
                return;
            }
        }
        let reason = if event.reason.is_empty() {
            format!("reported by {}", event.node)
        } else {
            event.reason.clone()
        };
        match job.instance_mut(&event.instance) {
            Some(instance) => {
                if let Err(e) = advance(&mut instance.lifecycle, event.state, now, &reason) {
                    debug!(instance = %event.instance, error = %e, "event does not move the instance");
                }
                instance.node = Some(event.node.clone());
                instance.cluster = Some(cluster.to_string());
                if event.exit_code.is_some() {
                    instance.exit_code = event.exit_code;
                }
            }
            None => job.instances.push(InstanceRecord {
                id: event.instance.clone(),
                node: Some(event.node.clone()),
                lifecycle: Lifecycle::new(event.state, now, &reason),
                exit_code: event.exit_code,
                replaces: None,
                cluster: Some(cluster.to_string()),
            }),
        }
        // across clusters, the new placement ended without ever running: the job stays on
        // the cluster it left, and the new one lets go of what it placed
        let moving_here = job.moving_to() == Some(cluster);
        let failed_across = moving_here
            && job.migration.as_ref().is_some_and(|m| {
                let mut new = job.instances[m.first_new.min(job.instances.len())..]
                    .iter()
                    .filter(|i| i.cluster.as_deref() == Some(cluster))
                    .peekable();
                new.peek().is_some() && new.all(InstanceRecord::is_over)
            });
        if failed_across {
            let id = job.id.clone();
            let why = format!(
                "the new placement on cluster {cluster} ended: {}",
                event.reason
            );
            fx.commands
                .push(terminate_command(&self.config, cluster, &id));
            self.abandon_migration(id.as_str(), &why, None);
            fx.persist.push(job_key(id.as_str()));
            return;
        }
        let arrived = moving_here && event.state == InstanceState::Running;
        if arrived {
            // make-before-break across clusters: the new placement runs, the old one goes
            let from = job.migration.as_mut().and_then(|m| m.from_cluster.take());
            if let Some(from) = from {
                let id = job.id.clone();
                info!(job = %id, from = %from, to = cluster, "migrated; the old cluster lets go");
                fx.commands
                    .push(terminate_command(&self.config, &from, &id));
            }
        }
        job.settle(now);
        fx.persist.push(job_key(event.job.as_str()));
        let escalate = owner
            && job.is_live()
            && job.lifecycle.state() != JobState::Terminating
            && job.spec.worker_node.is_none();
        if let (Some(u), true) = (event.unschedulable, escalate) {
            job.unschedulable.push(u);
            let id = job.id.clone();
            self.escalate(id.as_str(), cluster, &event.reason, fx);
        }
    }

    /// `cluster` cannot replace an instance of job `id` on any of its nodes. When another
    /// cluster can take the job, it moves there and `cluster` lets go of what is left of it;
    /// otherwise it stays (its node may come back with the instance still running).
    fn escalate(&mut self, id: &str, cluster: &str, why: &str, fx: &mut Fx) {
        let Some(job) = self.jobs.get(id) else {
            return;
        };
        let job_id = job.id.clone();
        let mut held = job.clusters();
        held.push(cluster.to_string());
        let others = self.candidates(&held, &job.spec.node_selector);
        if let Err(e) = self.scheduler.place(&job.spec, &others) {
            info!(job = id, cluster, reason = %e, "escalated, but no other cluster can take the job; it stays");
            return;
        }
        if let Some(job) = self.jobs.get_mut(id) {
            job.refused_by.clear();
            job.refused_by.push(cluster.to_string());
        }
        fx.commands
            .push(terminate_command(&self.config, cluster, &job_id));
        let why = format!("escalated by cluster {cluster}: {why}");
        self.leave_cluster(id, cluster, &why, fx);
    }

    fn on_query_reply(&mut self, reply: QueryReply, fx: &mut Fx) {
        if let Some(cluster) = self.syncs.remove(&reply.re) {
            self.on_sync(&cluster, reply, fx);
            return;
        }
        if let Some(reader) = self.streams.get(&reply.re) {
            let more = reply.more;
            let item = match (reply.result, reply.error) {
                (_, Some(error)) => Err(ApiError::Unavailable {
                    reason: error.message,
                }),
                (Some(value), None) => Ok(bytes::Bytes::from(
                    value.as_str().unwrap_or_default().to_string(),
                )),
                (None, None) => Ok(bytes::Bytes::new()),
            };
            let failed = item.is_err();
            let delivered = match reader.try_send(item) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    warn!(query = %reply.re, "a log reader fell too far behind; its stream ends");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            };
            if !more || failed || !delivered {
                self.streams.remove(&reply.re);
            }
            return;
        }
        let Some(waiting) = self.queries.remove(&reply.re) else {
            return;
        };
        let answer = match (reply.result, reply.error) {
            (_, Some(error)) if error.code == "not_found" => Err(ApiError::NotFound {
                kind: "instance",
                id: error.message,
            }),
            (_, Some(error)) => Err(ApiError::Unavailable {
                reason: error.message,
            }),
            (Some(value), None) => Ok(value),
            (None, None) => Ok(serde_json::Value::Null),
        };
        let _ = waiting.send(answer);
    }

    fn terminate(&mut self, id: &str, fx: &mut Fx) -> Result<JobView, ApiError> {
        let job = self.jobs.get_mut(id).ok_or_else(|| ApiError::NotFound {
            kind: "job",
            id: id.to_string(),
        })?;
        let state = job.lifecycle.state();
        if state.is_final() || state == JobState::Terminating {
            return Ok(job.view());
        }
        let now = now_ms();
        let _ = advance(
            &mut job.lifecycle,
            JobState::Terminating,
            now,
            "terminate requested",
        );
        let mut clusters = job.clusters();
        // a move across clusters not finished yet: the cluster it leaves still runs it
        clusters.extend(job.migration.as_ref().and_then(|m| m.from_cluster.clone()));
        let placed = Some(clusters)
            .filter(|c| !c.is_empty())
            .filter(|_| !matches!(state, JobState::Requested | JobState::NotDeployable));
        match placed {
            Some(clusters)
                if !job.instances.iter().all(InstanceRecord::is_over)
                    || job.instances.is_empty() =>
            {
                // TERMINATED follows from the instances' events, or from the cluster's ack
                // when it had placed nothing
                for cluster in clusters {
                    fx.commands
                        .push(terminate_command(&self.config, &cluster, &job.id));
                }
            }
            _ => {
                let _ = advance(
                    &mut job.lifecycle,
                    JobState::Terminated,
                    now,
                    "nothing was running",
                );
            }
        }
        fx.persist.push(job_key(id));
        Ok(job.view())
    }
}

impl Records for RootState {
    fn value_of(&self, key: &str) -> Option<serde_json::Value> {
        record_json(key, CLUSTERS, &self.clusters).or_else(|| record_json(key, JOBS, &self.jobs))
    }
}

type Shared = Core<RootState, Tag>;

/// The root engine's handle: the user API ([`RootApi`]) and the clusters' registrar. Cheap
/// to clone.
#[derive(Clone)]
pub struct RootHandle {
    shared: Arc<Shared>,
}

impl RootHandle {
    fn not_found(kind: &'static str, id: &str) -> ApiError {
        ApiError::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    async fn ask(&self, cluster: &str, query: Query) -> Result<serde_json::Value, ApiError> {
        let (tx, rx) = oneshot::channel();
        let (envelope, timeout) = {
            let mut state = self.shared.state();
            let record = state
                .clusters
                .get(cluster)
                .ok_or_else(|| Self::not_found("cluster", cluster))?;
            if record.lifecycle.state() != ClusterState::Active {
                return Err(ApiError::Unavailable {
                    reason: format!("cluster {cluster} is INACTIVE"),
                });
            }
            let envelope = state.msg(Message::Query(query));
            state.queries.insert(envelope.id.clone(), tx);
            (envelope, state.config.query_timeout)
        };
        let id = envelope.id.clone();
        let down = self.shared.down().ok_or_else(|| ApiError::Unavailable {
            reason: "the root engine is not running".into(),
        })?;
        let sent = down.send(cluster, &envelope).await;
        let answer = match sent {
            Err(e) => Err(ApiError::Unavailable {
                reason: format!("cannot reach cluster {cluster}: {e}"),
            }),
            Ok(()) => match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(ApiError::Unavailable {
                    reason: format!("cluster {cluster} went away before answering"),
                }),
                Err(_) => Err(ApiError::Unavailable {
                    reason: format!("cluster {cluster} did not answer within {timeout:?}"),
                }),
            },
        };
        self.shared.state().queries.remove(&id);
        answer
    }
}

#[async_trait]
impl Registrar for RootHandle {
    async fn register(&self, request: RegisterRequest) -> Result<RegisterReply, ErrorBody> {
        let mut fx = Fx::default();
        let reply = self.shared.state().register(request, &mut fx);
        self.shared.apply(fx).await;
        reply
    }
}

#[async_trait]
impl RootApi for RootHandle {
    async fn submit(&self, spec: JobSpec) -> Result<JobView, ApiError> {
        let record = {
            let mut state = self.shared.state();
            let taken = state.reserving.contains(&spec.name)
                || state
                    .jobs
                    .values()
                    .any(|j| j.is_live() && j.spec.name == spec.name);
            if taken {
                return Err(ApiError::Conflict {
                    message: format!("a job named {:?} is already live", spec.name),
                    details: vec![FieldError {
                        path: "job_name".into(),
                        value: spec.name.clone(),
                        rule: "must not be the name of a live job (terminate it first)".into(),
                    }],
                });
            }
            state.reserving.push(spec.name.clone());
            JobRecord {
                id: new_job_id(&spec.name),
                lifecycle: Lifecycle::new(JobState::Requested, now_ms(), "submitted"),
                spec,
                cluster: None,
                instances: Vec::new(),
                unschedulable: Vec::new(),
                refused_by: Vec::new(),
                first_instance: 0,
                migration: None,
                instance_prefix: None,
                parts: Vec::new(),
                offers: BTreeMap::new(),
            }
        };
        // written before it exists for anyone: a failed write leaves no half-created job
        let written = self
            .shared
            .store
            .put_json(&job_key(record.id.as_str()), &record)
            .await;
        let mut fx = Fx::default();
        let view = {
            let mut state = self.shared.state();
            state.reserving.retain(|n| n != &record.spec.name);
            if let Err(e) = written {
                return Err(ApiError::Unavailable {
                    reason: format!("cannot store the job: {e}"),
                });
            }
            let id = record.id.to_string();
            let view = record.view();
            state.jobs.insert(id.clone(), record);
            state.schedule(&id, &mut fx);
            view
        };
        self.shared.apply(fx).await;
        Ok(view)
    }

    async fn jobs(&self) -> Result<Vec<JobView>, ApiError> {
        let state = self.shared.state();
        let mut jobs: Vec<&JobRecord> = state.jobs.values().collect();
        jobs.sort_by_key(|j| j.lifecycle.history().first().map_or(0, |h| h.at_ms));
        Ok(jobs.into_iter().map(JobRecord::view).collect())
    }

    async fn job(&self, id: &str) -> Result<JobView, ApiError> {
        self.shared
            .state()
            .jobs
            .get(id)
            .map(JobRecord::view)
            .ok_or_else(|| Self::not_found("job", id))
    }

    async fn terminate(&self, id: &str) -> Result<JobView, ApiError> {
        let mut fx = Fx::default();
        let view = self.shared.state().terminate(id, &mut fx)?;
        self.shared.apply(fx).await;
        Ok(view)
    }

    async fn scale(&self, id: &str, replicas: u32) -> Result<JobView, ApiError> {
        let mut fx = Fx::default();
        let view = self.shared.state().scale(id, replicas, &mut fx)?;
        self.shared.apply(fx).await;
        Ok(view)
    }

    async fn migrate(
        &self,
        id: &str,
        target: MigrateTarget,
        instance: Option<InstanceId>,
    ) -> Result<JobView, ApiError> {
        let mut fx = Fx::default();
        let view = self.shared.state().migrate(id, target, instance, &mut fx)?;
        self.shared.apply(fx).await;
        Ok(view)
    }

    async fn clusters(&self) -> Result<Vec<ClusterView>, ApiError> {
        Ok(self
            .shared
            .state()
            .clusters
            .values()
            .map(ClusterRecord::view)
            .collect())
    }

    async fn cluster(&self, id: &str) -> Result<ClusterView, ApiError> {
        self.shared
            .state()
            .clusters
            .get(id)
            .map(ClusterRecord::view)
            .ok_or_else(|| Self::not_found("cluster", id))
    }

    async fn nodes(&self, cluster: &str) -> Result<Vec<NodeView>, ApiError> {
        let value = self.ask(cluster, Query::Nodes).await?;
        serde_json::from_value(value).map_err(|e| ApiError::Unavailable {
            reason: format!("cluster {cluster} answered with unreadable nodes: {e}"),
        })
    }

    async fn logs(&self, job: &str, query: LogsQuery) -> Result<LogStream, ApiError> {
        let (id, cluster) = {
            let state = self.shared.state();
            let record = state
                .jobs
                .get(job)
                .ok_or_else(|| Self::not_found("job", job))?;
            (record.id.clone(), record.cluster.clone())
        };
        let Some(cluster) = cluster else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        let logs = Query::Logs {
            job: id,
            tail: query.tail,
            follow: query.follow,
        };
        if query.follow {
            return self.follow(&cluster, logs).await;
        }
        let value = self.ask(&cluster, logs).await?;
        let text = value.as_str().unwrap_or_default().to_string();
        Ok(Box::pin(futures::stream::once(async move {
            Ok(bytes::Bytes::from(text))
        })))
    }
}

/// Ends a followed log when its reader goes: forgets the stream and tells the cluster.
struct FollowGuard {
    shared: Arc<Shared>,
    cluster: String,
    query: String,
}

impl Drop for FollowGuard {
    fn drop(&mut self) {
        let (envelope, down) = {
            let mut state = self.shared.state();
            state.streams.remove(&self.query);
            let cancel = Query::Cancel {
                query: self.query.clone(),
            };
            (state.msg(Message::Query(cancel)), self.shared.down())
        };
        let (Some(down), Ok(runtime)) = (down, tokio::runtime::Handle::try_current()) else {
            return;
        };
        let cluster = self.cluster.clone();
        runtime.spawn(async move {
            let _ = down.send(&cluster, &envelope).await;
        });
    }
}

impl RootHandle {
    async fn follow(&self, cluster: &str, logs: Query) -> Result<LogStream, ApiError> {
        let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
        let envelope = {
            let mut state = self.shared.state();
            let active = state
                .clusters
                .get(cluster)
                .is_some_and(|c| c.lifecycle.state() == ClusterState::Active);
            if !active {
                return Err(ApiError::Unavailable {
                    reason: format!("cluster {cluster} is not ACTIVE"),
                });
            }
            let envelope = state.msg(Message::Query(logs));
            state.streams.insert(envelope.id.clone(), tx);
            envelope
        };
        let guard = FollowGuard {
            shared: self.shared.clone(),
            cluster: cluster.to_string(),
            query: envelope.id.clone(),
        };
        let down = self.shared.down().ok_or_else(|| ApiError::Unavailable {
            reason: "the root engine is not running".into(),
        })?;
        down.send(cluster, &envelope)
            .await
            .map_err(|e| ApiError::Unavailable {
                reason: format!("cannot reach cluster {cluster}: {e}"),
            })?;
        let stream = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
            rx.recv().await.map(|item| (item, (rx, guard)))
        });
        Ok(Box::pin(stream))
    }
}

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
        let now = now_ms();
        let mut clusters = BTreeMap::new();
        for mut c in load::<ClusterRecord>(&*store, CLUSTERS).await? {
            let _ = c
                .lifecycle
                .transition(ClusterState::Inactive, now, "root restarted");
            clusters.insert(c.id.clone(), c);
        }
        let jobs: BTreeMap<String, JobRecord> = load::<JobRecord>(&*store, JOBS)
            .await?
            .into_iter()
            .map(|job| (job.id.to_string(), job))
            .collect();
        let state = RootState {
            config,
            scheduler,
            clusters,
            jobs,
            reserving: Vec::new(),
            queries: HashMap::new(),
            streams: HashMap::new(),
            syncs: HashMap::new(),
        };
        let (core, outcomes) = Core::new(state, store);
        Ok(RootEngine {
            shared: Arc::new(core),
            outcomes,
        })
    }

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
        let mut check_tick = tokio::time::interval(check_every);
        check_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let mut fx = Fx::default();
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = check_tick.tick() => self.shared.state().check_clusters(&mut fx),
                Some((tag, outcome)) = self.outcomes.recv() => {
                    let mut state = self.shared.state();
                    match tag {
                        Tag::Deploy { job, cluster } => state.on_deploy_outcome(&job, &cluster, outcome, &mut fx),
                        Tag::Terminate { job } => state.on_terminate_outcome(&job, outcome, &mut fx),
                        Tag::Scale { job, cluster, from } => {
                state.on_scale_outcome(&job, &cluster, from, outcome, &mut fx)
            }
                        Tag::Migrate { job, cluster, anywhere } => {
                            state.on_migrate_outcome(&job, &cluster, anywhere, outcome, &mut fx)
                        }
                    }
                }
                event = down.recv() => {
                    let mut state = self.shared.state();
                    match event? {
                        ParentEvent::ChildUp { child } => state.linked(&child, &mut fx),
                        ParentEvent::ChildLost { child, reason } => state.cluster_lost(&child, &reason, &mut fx),
                        ParentEvent::Message { child, envelope } => match envelope.body {
                            Message::ClusterAggregate(agg) => state.on_aggregate(&child, agg, &mut fx),
                            Message::InstanceEvent(event) => state.on_instance_event(&child, event, &mut fx),
                            Message::QueryReply(reply) => state.on_query_reply(reply, &mut fx),
                            Message::Nack(nack) => {
                                // a refusal whose command was abandoned; nothing waits for it
                                debug!(cluster = %child, re = %nack.re, "late nack");
                            }
                            other => debug!(cluster = %child, kind = other.kind(), "ignored message from a cluster"),
                        },
                        ParentEvent::Invalid { child, error } => warn!(cluster = %child, %error, "bad message from a cluster"),
                    }
                }
            }
            self.shared.apply(fx).await;
        }
    }
}
