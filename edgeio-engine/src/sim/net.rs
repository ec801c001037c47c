//! The event queue, the network, the processes around the engines' decisions, and the
//! invariants checked after every step.

use super::model::{Addr, PlantedBug, Rng, Scripted, SimConfig, Violation};
use crate::cluster::{ClusterConfig, ClusterState as ClusterEngineState, Tag as ClusterTag};
use crate::effects::{Effects, Records};
use crate::records::{ClusterRecord, JobRecord, NodeRecord, CLUSTERS, JOBS, NODES};
use crate::root::{RootConfig, RootState, Tag as RootTag};
use crate::worker::{plan, Action, Local};
use edgeio_core::clock::{Context, ManualClock, SeededIds};
use edgeio_core::job::JobSpec;
use edgeio_core::model::{Arch, Capabilities, InstanceId, JobId, Labels, Resources, RuntimeInfo};
use edgeio_core::reliable::{CommandOutcome, ReliableConfig};
use edgeio_core::scheduler::Scheduler;
use edgeio_core::state::{InstanceState, JobState, Lifecycle, StateMachine};
use edgeio_core::testing::SimpleScheduler;
use edgeio_core::transport::{ParentEvent, TransportError};
use edgeio_core::wire::{
    ChannelKind, ChannelSettings, Envelope, InstanceEvent, InstanceReport, Message, NodeStatus,
    PeerRole, RegisterRequest,
};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The virtual time everything starts at (a plausible Unix time, so records look real).
const EPOCH_MS: u64 = 1_700_000_000_000;
/// Interval of aggregates, status reports and the root's cluster check.
const TICK_MS: u64 = 1_000;
/// First re-send of an unanswered command; doubles up to [`RESEND_MAX_MS`].
const RESEND_MS: u64 = 200;
const RESEND_MAX_MS: u64 = 2_000;
/// An unanswered command is given up after this long.
const GIVE_UP_MS: u64 = 30_000;
/// How long a parent takes to notice a dead or cut child (keepalive, will).
const NOTICE_MS: u64 = 2_000;

/// What happens next.
#[derive(Debug, Clone)]
enum Ev {
    Deliver {
        from: Addr,
        to: Addr,
        env: Box<Envelope>,
    },
    LinkUp {
        child: Addr,
    },
    LinkLost {
        child: Addr,
        reason: String,
    },
    Tick(Addr),
    Resend {
        from: Addr,
        id: String,
    },
    Submit(usize),
    Fault(Scripted),
    /// A worker's runtime moved an instance along.
    Runtime {
        worker: usize,
        instance: InstanceId,
        to: InstanceState,
    },
}

/// What a command was for, by the tier that sent it.
#[derive(Debug, Clone)]
enum SimTag {
    Root(RootTag),
    Cluster(ClusterTag),
}

/// A command waiting for its answer.
#[derive(Debug, Clone)]
struct Pending {
    to: Addr,
    env: Envelope,
    tag: SimTag,
    first_ms: u64,
    wait_ms: u64,
}

/// What the reliable layer of one process holds (lost with it when it crashes).
#[derive(Debug, Default)]
struct Link {
    pending: BTreeMap<String, Pending>,
    /// Answers to commands already handled, by command id: a duplicate gets the same answer.
    answered: BTreeMap<String, Envelope>,
}

/// A root or cluster process: the engine's state while it lives, its store always.
struct Proc<S> {
    state: Option<S>,
    durable: BTreeMap<String, serde_json::Value>,
    link: Link,
}

impl<S> Proc<S> {
    fn new(state: S) -> Proc<S> {
        Proc {
            state: Some(state),
            durable: BTreeMap::new(),
            link: Link::default(),
        }
    }
}

/// A simulated worker: the engine's `plan` over what it runs, events at once, status every
/// tick. Its instances die with it.
struct Worker {
    id: String,
    alive: bool,
    local: BTreeMap<InstanceId, Local>,
    answered: BTreeMap<String, Envelope>,
}

/// Wall-clock time the engines spent, by what they handled (measured around the calls,
/// not counting the simulator's own work).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EngineTime {
    /// Worker status messages handled by clusters.
    pub statuses: u64,
    /// Time clusters spent on them.
    pub status_time: Duration,
    /// Cluster aggregates handled by the root.
    pub aggregates: u64,
    /// Time the root spent on them.
    pub aggregate_time: Duration,
    /// Cluster ticks (building and sending an aggregate, checking heartbeats).
    pub cluster_ticks: u64,
    /// Time clusters spent on their ticks.
    pub cluster_tick_time: Duration,
    /// Root ticks (checking on clusters).
    pub root_ticks: u64,
    /// Time the root spent on its ticks.
    pub root_tick_time: Duration,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Events processed.
    pub events: u64,
    /// Virtual time at the end, in ms.
    pub end_ms: u64,
    /// Jobs running at the end.
    pub running: usize,
    /// State changes the engines refused (late and duplicate events).
    pub refused: u64,
}

/// One simulation: build it from a seed and a configuration, then [`Sim::run`] it.
pub struct Sim {
    seed: u64,
    config: SimConfig,
    rng: Rng,
    clock: Arc<ManualClock>,
    /// Milliseconds since the start.
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    root: Proc<RootState>,
    clusters: Vec<Proc<ClusterEngineState>>,
    workers: Vec<Worker>,
    /// Children whose link to their parent is cut.
    cut: BTreeSet<Addr>,
    /// Processes down (crashed, not restarted yet).
    down: BTreeSet<Addr>,
    /// Job ids by submission order, once submitted.
    submitted: Vec<Option<JobId>>,
    /// Jobs asked to terminate.
    terminated: BTreeSet<usize>,
    /// Since when each job has run more replicas than it asks.
    excess_since: BTreeMap<JobId, u64>,
    /// When the last fault (crash, cut) healed.
    last_heal_ms: u64,
    /// Every fault applied, with its time, for a failing seed's report.
    faults: Vec<String>,
    /// The delivery time of the last message on each link (links deliver in order).
    fifo: BTreeMap<(Addr, Addr), u64>,
    /// What the engines cost.
    engine_time: EngineTime,
    events: u64,
}

fn context(clock: &Arc<ManualClock>, seed: u64, process: u64) -> Context {
    Context::new(
        clock.clone(),
        Arc::new(SeededIds::new(
            seed.wrapping_mul(1_000).wrapping_add(process),
        )),
    )
}

fn scheduler() -> Arc<dyn Scheduler> {
    Arc::new(SimpleScheduler)
}

fn root_config() -> RootConfig {
    RootConfig {
        aggregate_interval: Duration::from_millis(TICK_MS),
        reliable: reliable(),
        ..RootConfig::default()
    }
}

fn reliable() -> ReliableConfig {
    ReliableConfig {
        resend_initial: Duration::from_millis(RESEND_MS),
        resend_max: Duration::from_millis(RESEND_MAX_MS),
        ..ReliableConfig::default()
    }
}

fn cluster_config(i: usize) -> ClusterConfig {
    ClusterConfig {
        id: format!("c{i}"),
        channel: ChannelSettings {
            kind: ChannelKind::Ws,
            broker: None,
            topics: None,
            status_interval_ms: TICK_MS,
            max_message_bytes: 1 << 20,
        },
        missed_heartbeats: 3,
        aggregate_interval: Duration::from_millis(TICK_MS),
        location: None,
        labels: Labels::new(),
        grace: Duration::from_secs(1),
        reliable: reliable(),
    }
}

fn outcome_of(message: &Message) -> Option<(&str, CommandOutcome)> {
    match message {
        Message::Ack(a) => Some((&a.re, CommandOutcome::Acked)),
        Message::Nack(n) => Some((
            &n.re,
            match &n.unschedulable {
                Some(u) => CommandOutcome::Unschedulable(n.error.clone(), Box::new(u.clone())),
                None => CommandOutcome::Nacked(n.error.clone()),
            },
        )),
        _ => None,
    }
}

/// Records of `prefix` from a process's store, as a restart reads them.
fn stored<T: serde::de::DeserializeOwned>(
    durable: &BTreeMap<String, serde_json::Value>,
    prefix: &str,
) -> Vec<T> {
    durable
        .range(prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .filter_map(|(_, v)| serde_json::from_value(v.clone()).ok())
        .collect()
}

/// Every recorded change of `life` is a move of its table.
fn follows_table<S: StateMachine>(life: &Lifecycle<S>) -> Result<(), String> {
    for pair in life.history().windows(2) {
        if !pair[0].state.can_move_to(pair[1].state) {
            return Err(format!("{} -> {}", pair[0].state, pair[1].state));
        }
    }
    Ok(())
}

impl Sim {
    /// A simulation of `config` driven by `seed`: registrations at time 0, the seed's jobs
    /// and faults on the timeline, and the config's scripted faults.
    pub fn new(seed: u64, config: SimConfig) -> Sim {
        let clock = Arc::new(ManualClock::new(EPOCH_MS));
        let root = RootState::from_records(
            context(&clock, seed, 0),
            root_config(),
            scheduler(),
            Vec::new(),
            Vec::new(),
        );
        let clusters = (0..config.clusters)
            .map(|i| {
                Proc::new(ClusterEngineState::from_records(
                    context(&clock, seed, 1 + i as u64),
                    cluster_config(i),
                    scheduler(),
                    Vec::new(),
                    Vec::new(),
                ))
            })
            .collect();
        let workers = (0..config.clusters * config.workers_per_cluster)
            .map(|i| Worker {
                id: format!("w{i}"),
                alive: true,
                local: BTreeMap::new(),
                answered: BTreeMap::new(),
            })
            .collect();
        let mut sim = Sim {
            seed,
            rng: Rng::new(seed),
            clock,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            root: Proc::new(root),
            clusters,
            workers,
            cut: BTreeSet::new(),
            down: BTreeSet::new(),
            submitted: vec![None; config.jobs],
            terminated: BTreeSet::new(),
            excess_since: BTreeMap::new(),
            last_heal_ms: 0,
            faults: Vec::new(),
            fifo: BTreeMap::new(),
            engine_time: EngineTime::default(),
            events: 0,
            config,
        };
        sim.plan_timeline();
        sim
    }

    fn plan_timeline(&mut self) {
        for i in 0..self.config.clusters {
            self.register_cluster(i);
        }
        for w in 0..self.workers.len() {
            self.register_worker(w);
        }
        self.at(0, Ev::Tick(Addr::Root));
        for i in 0..self.config.clusters {
            self.at(1, Ev::Tick(Addr::Cluster(i)));
        }
        for w in 0..self.workers.len() {
            self.at(2, Ev::Tick(Addr::Worker(w)));
        }
        let until = self.config.faults_until_ms.max(1);
        for job in 0..self.config.jobs {
            let at = match self.config.submit_at {
                Some(at) => at,
                None => self.rng.range(500, until),
            };
            self.at(at, Ev::Submit(job));
        }
        for _ in 0..self.config.random_faults {
            let victim = match self.rng.range(0, 2) {
                0 => Addr::Worker(self.rng.range(0, self.workers.len() as u64 - 1) as usize),
                1 => Addr::Cluster(self.rng.range(0, self.config.clusters as u64 - 1) as usize),
                _ => Addr::Root,
            };
            let start = self.rng.range(1_000, until);
            let end = (start + self.rng.range(500, 8_000)).min(until);
            let (break_it, heal_it) = if victim != Addr::Root && self.rng.chance(0.5) {
                (Scripted::Partition(victim), Scripted::Heal(victim))
            } else {
                (Scripted::Crash(victim), Scripted::Restart(victim))
            };
            self.at(start, Ev::Fault(break_it));
            self.at(end, Ev::Fault(heal_it));
        }
        for (at, fault) in self.config.script.clone() {
            self.at(at, Ev::Fault(fault));
        }
    }

    fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn after(&mut self, delay: u64, ev: Ev) {
        self.at(self.now + delay, ev);
    }

    /// Runs the events up to `ms` of virtual time (for measurements that look between
    /// phases); the first violation ends it.
    pub fn advance_to(&mut self, ms: u64) -> Result<(), Violation> {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > ms {
                break;
            }
            let ((at, _), ev) = entry.remove_entry();
            self.now = at;
            self.clock.set_ms(EPOCH_MS + at);
            self.events += 1;
            self.step(ev)?;
            if self.config.check_every_event {
                self.check()?;
            }
        }
        self.now = self.now.max(ms);
        self.clock.set_ms(EPOCH_MS + self.now);
        Ok(())
    }

    /// What the engines cost so far.
    pub fn engine_time(&self) -> &EngineTime {
        &self.engine_time
    }

    /// Jobs the root holds in `state`.
    pub fn jobs_at_root(&self, state: JobState) -> usize {
        self.root_jobs_in(state)
    }

    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Runs until the faults end and the settle time has passed; the first violation ends
    /// the run. A panic inside an engine is a violation too.
    pub fn run(mut self) -> Result<Report, Violation> {
        let end = self.config.faults_until_ms + self.config.settle_ms;
        let ran = catch_unwind(AssertUnwindSafe(|| -> Result<(), Violation> {
            while let Some(((at, _), ev)) = self.queue.pop_first() {
                if at > end {
                    break;
                }
                self.now = at;
                self.clock.set_ms(EPOCH_MS + at);
                self.events += 1;
                self.step(ev)?;
                if self.config.check_every_event {
                    self.check()?;
                }
            }
            self.now = end;
            self.check_end()
        }));
        match ran {
            Ok(Ok(())) => Ok(Report {
                events: self.events,
                end_ms: self.now,
                running: self.root_jobs_in(JobState::Running),
                refused: self.root.state.as_ref().map_or(0, |r| r.refusals.count())
                    + self
                        .clusters
                        .iter()
                        .filter_map(|c| c.state.as_ref())
                        .map(|c| c.refusals.count())
                        .sum::<u64>(),
            }),
            Ok(Err(v)) => Err(v),
            Err(panic) => Err(Violation {
                at_ms: self.now,
                invariant: "panic",
                detail: panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            }),
        }
    }

    /// The seed this simulation runs.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn root_jobs_in(&self, state: JobState) -> usize {
        self.root.state.as_ref().map_or(0, |r| {
            r.jobs
                .values()
                .filter(|j| j.lifecycle.state() == state)
                .count()
        })
    }

    fn faulting(&self) -> bool {
        self.now < self.config.faults_until_ms
    }

    // ---- the network ----

    fn parent_of(&self, addr: Addr) -> Option<Addr> {
        match addr {
            Addr::Root => None,
            Addr::Cluster(_) => Some(Addr::Root),
            Addr::Worker(w) => Some(Addr::Cluster(w / self.config.workers_per_cluster)),
        }
    }

    /// Whether a message from `from` to `to` can get through right now.
    fn open(&self, from: Addr, to: Addr) -> bool {
        let child = if self.parent_of(from) == Some(to) {
            from
        } else {
            to
        };
        !self.cut.contains(&child) && !self.down.contains(&from) && !self.down.contains(&to)
    }

    fn send(&mut self, from: Addr, to: Addr, env: Envelope) {
        if !self.open(from, to) {
            return;
        }
        if self.faulting() && self.rng.chance(self.config.loss) {
            // links are TCP (WebSocket, MQTT): a message is lost only with its connection,
            // which the child dials again and the parent sees come up (and re-syncs)
            let child = if self.parent_of(from) == Some(to) {
                from
            } else {
                to
            };
            self.fault(Scripted::Partition(child));
            let back = self.rng.range(50, 500);
            self.after(back, Ev::Fault(Scripted::Heal(child)));
            return;
        }
        // one link is one TCP connection: its messages arrive in the order sent
        let earliest = self.fifo.get(&(from, to)).copied().unwrap_or(0);
        let delay = self
            .rng
            .range(1, self.config.max_delay_ms.max(1))
            .max(earliest.saturating_sub(self.now));
        self.fifo.insert((from, to), self.now + delay);
        if self.faulting() && self.rng.chance(self.config.duplication) {
            // a redelivery (MQTT QoS 1 after a reconnect): after the original
            let again = delay + self.rng.range(1, self.config.max_delay_ms.max(1));
            self.after(
                again,
                Ev::Deliver {
                    from,
                    to,
                    env: Box::new(env.clone()),
                },
            );
        }
        self.after(
            delay,
            Ev::Deliver {
                from,
                to,
                env: Box::new(env),
            },
        );
    }

    fn link_mut(&mut self, addr: Addr) -> &mut Link {
        match addr {
            Addr::Root => &mut self.root.link,
            Addr::Cluster(i) => &mut self.clusters[i].link,
            Addr::Worker(_) => unreachable!("workers send no commands"),
        }
    }

    fn command(&mut self, from: Addr, to: Addr, env: Envelope, tag: SimTag) {
        let id = env.id.clone();
        let pending = Pending {
            to,
            env: env.clone(),
            tag,
            first_ms: self.now,
            wait_ms: RESEND_MS,
        };
        self.link_mut(from).pending.insert(id.clone(), pending);
        self.send(from, to, env);
        self.after(RESEND_MS, Ev::Resend { from, id });
    }

    fn addr_of_cluster(id: &str) -> Option<Addr> {
        id.strip_prefix('c')?.parse().ok().map(Addr::Cluster)
    }

    fn addr_of_worker(id: &str) -> Option<Addr> {
        id.strip_prefix('w')?.parse().ok().map(Addr::Worker)
    }

    // ---- applying effects ----

    fn apply_root(&mut self, fx: Effects<RootTag>) {
        if let Some(state) = &self.root.state {
            for key in &fx.persist {
                if let Some(value) = state.value_of(key) {
                    self.root.durable.insert(key.clone(), value);
                }
            }
        }
        for (child, env) in fx.send_down {
            if let Some(to) = Self::addr_of_cluster(&child) {
                self.send(Addr::Root, to, env);
            }
        }
        for (child, env, tag) in fx.commands {
            if let Some(to) = Self::addr_of_cluster(&child) {
                self.command(Addr::Root, to, env, SimTag::Root(tag));
            }
        }
    }

    fn apply_cluster(&mut self, i: usize, fx: Effects<ClusterTag>, answer: Option<Envelope>) {
        let me = Addr::Cluster(i);
        if self.config.plant != Some(PlantedBug::AckWithoutPersist) {
            let proc = &mut self.clusters[i];
            if let Some(state) = &proc.state {
                for key in &fx.persist {
                    if let Some(value) = state.value_of(key) {
                        proc.durable.insert(key.clone(), value);
                    }
                }
            }
        }
        // the answer goes before any event the command caused
        for env in answer.into_iter().chain(fx.send_up) {
            self.send(me, Addr::Root, env);
        }
        for (node, env) in fx.send_down {
            if let Some(to) = Self::addr_of_worker(&node) {
                self.send(me, to, env);
            }
        }
        for (node, env, tag) in fx.commands {
            // the planted bug: no instance a node runs is ever stopped by name
            let keep_copy = self.config.plant == Some(PlantedBug::KeepReplacedCopies)
                && matches!(&env.body, Message::Terminate(t) if t.instance.is_some());
            if keep_copy {
                continue;
            }
            if let Some(to) = Self::addr_of_worker(&node) {
                self.command(me, to, env, SimTag::Cluster(tag));
            }
        }
    }

    // ---- registration and links ----

    fn register_cluster(&mut self, i: usize) {
        let Some(root) = self.root.state.as_mut() else {
            return;
        };
        let request = RegisterRequest {
            role: PeerRole::Cluster,
            name: format!("c{i}"),
            previous_id: Some(format!("c{i}")),
            capabilities: None,
            location: None,
            labels: Labels::new(),
        };
        let mut fx = Effects::default();
        if root.register(request, &mut fx).is_ok() {
            self.apply_root(fx);
            self.after(
                1,
                Ev::LinkUp {
                    child: Addr::Cluster(i),
                },
            );
        }
    }

    fn register_worker(&mut self, w: usize) {
        let c = w / self.config.workers_per_cluster;
        let Some(cluster) = self.clusters[c].state.as_mut() else {
            return;
        };
        let request = RegisterRequest {
            role: PeerRole::Node,
            name: format!("w{w}"),
            previous_id: Some(format!("w{w}")),
            capabilities: Some(Capabilities {
                arch: Arch::Amd64,
                cores: self.config.worker_cores,
                memory_bytes: 8 << 30,
                disk_bytes: 20 << 30,
                gpus: 0,
                runtimes: vec![RuntimeInfo {
                    kind: "native".into(),
                    version: "sim".into(),
                }],
                labels: Labels::new(),
                location: None,
            }),
            location: None,
            labels: Labels::new(),
        };
        let mut fx = Effects::default();
        if cluster.register(request, &mut fx).is_ok() {
            self.apply_cluster(c, fx, None);
            self.after(
                1,
                Ev::LinkUp {
                    child: Addr::Worker(w),
                },
            );
        }
    }

    // ---- one step ----

    fn step(&mut self, ev: Ev) -> Result<(), Violation> {
        match ev {
            Ev::Deliver { from, to, env } => {
                if self.open(from, to) {
                    self.deliver(from, to, *env)?;
                }
            }
            Ev::LinkUp { child } => self.link_up(child),
            Ev::LinkLost { child, reason } => self.link_lost(child, reason),
            Ev::Tick(addr) => self.tick(addr),
            Ev::Resend { from, id } => self.resend(from, id),
            Ev::Submit(n) => self.submit(n),
            Ev::Fault(fault) => self.fault(fault),
            Ev::Runtime {
                worker,
                instance,
                to,
            } => self.runtime_step(worker, instance, to),
        }
        Ok(())
    }

    fn link_up(&mut self, child: Addr) {
        if self.down.contains(&child) || self.cut.contains(&child) {
            return;
        }
        match child {
            Addr::Cluster(i) => {
                let Some(root) = self.root.state.as_mut() else {
                    return;
                };
                let mut fx = Effects::default();
                let child = format!("c{i}");
                root.on_cluster_event(ParentEvent::ChildUp { child }, &mut fx);
                self.apply_root(fx);
            }
            Addr::Worker(w) => {
                let c = w / self.config.workers_per_cluster;
                let Some(cluster) = self.clusters[c].state.as_mut() else {
                    return;
                };
                let mut fx = Effects::default();
                let child = format!("w{w}");
                cluster.on_node_event(ParentEvent::ChildUp { child }, &mut fx);
                self.apply_cluster(c, fx, None);
                // a worker reports at once when its link comes up
                self.worker_status(w);
            }
            Addr::Root => {}
        }
    }

    fn link_lost(&mut self, child: Addr, reason: String) {
        // the parent only notices if the child is still gone
        if !self.down.contains(&child) && !self.cut.contains(&child) {
            return;
        }
        match child {
            Addr::Cluster(i) => {
                if let Some(root) = self.root.state.as_mut() {
                    let mut fx = Effects::default();
                    let child = format!("c{i}");
                    root.on_cluster_event(ParentEvent::ChildLost { child, reason }, &mut fx);
                    self.apply_root(fx);
                }
            }
            Addr::Worker(w) => {
                let c = w / self.config.workers_per_cluster;
                if let Some(cluster) = self.clusters[c].state.as_mut() {
                    let mut fx = Effects::default();
                    let child = format!("w{w}");
                    cluster.on_node_event(ParentEvent::ChildLost { child, reason }, &mut fx);
                    self.apply_cluster(c, fx, None);
                }
            }
            Addr::Root => {}
        }
    }

    fn tick(&mut self, addr: Addr) {
        self.after(TICK_MS, Ev::Tick(addr));
        if self.down.contains(&addr) {
            return;
        }
        match addr {
            Addr::Root => {
                if let Some(root) = self.root.state.as_mut() {
                    let mut fx = Effects::default();
                    let started = Instant::now();
                    root.check_clusters(&mut fx);
                    self.engine_time.root_ticks += 1;
                    self.engine_time.root_tick_time += started.elapsed();
                    self.apply_root(fx);
                }
            }
            Addr::Cluster(i) => {
                if let Some(cluster) = self.clusters[i].state.as_mut() {
                    let mut fx = Effects::default();
                    let started = Instant::now();
                    cluster.send_aggregate(&mut fx);
                    cluster.check_heartbeats(&mut fx);
                    self.engine_time.cluster_ticks += 1;
                    self.engine_time.cluster_tick_time += started.elapsed();
                    self.apply_cluster(i, fx, None);
                }
            }
            Addr::Worker(w) => self.worker_status(w),
        }
    }

    fn resend(&mut self, from: Addr, id: String) {
        if self.down.contains(&from) {
            return;
        }
        let now = self.now;
        let Some(pending) = self.link_mut(from).pending.get_mut(&id) else {
            return;
        };
        if now.saturating_sub(pending.first_ms) >= GIVE_UP_MS {
            let pending = self.link_mut(from).pending.remove(&id).expect("present");
            let outcome = Err(TransportError::Unavailable {
                reason: format!("no answer within {GIVE_UP_MS} ms"),
            });
            self.outcome(from, pending.tag, outcome);
            return;
        }
        pending.wait_ms = (pending.wait_ms * 2).min(RESEND_MAX_MS);
        let (to, env, wait) = (pending.to, pending.env.clone(), pending.wait_ms);
        self.send(from, to, env);
        self.after(wait, Ev::Resend { from, id });
    }

    fn outcome(&mut self, at: Addr, tag: SimTag, outcome: Result<CommandOutcome, TransportError>) {
        match (at, tag) {
            (Addr::Root, SimTag::Root(tag)) => {
                if let Some(root) = self.root.state.as_mut() {
                    let mut fx = Effects::default();
                    root.on_outcome(tag, outcome, &mut fx);
                    self.apply_root(fx);
                }
            }
            (Addr::Cluster(i), SimTag::Cluster(tag)) => {
                if let Some(cluster) = self.clusters[i].state.as_mut() {
                    let mut fx = Effects::default();
                    cluster.on_outcome(tag, outcome, &mut fx);
                    self.apply_cluster(i, fx, None);
                }
            }
            _ => {}
        }
    }

    fn submit(&mut self, n: usize) {
        let Some(root) = self.root.state.as_mut() else {
            // the root is down: the user tries again a second later
            self.after(TICK_MS, Ev::Submit(n));
            return;
        };
        let mut spec = JobSpec::minimal(
            format!("job{n}"),
            "sim:run",
            "native",
            Resources {
                cpu_millis: self.config.job_cpu_millis,
                ..Resources::ZERO
            },
        );
        spec.replicas = self.config.replicas;
        let id = crate::records::new_job_id(&spec.name, &root.cx);
        let now = root.cx.now_ms();
        let record = JobRecord::new(id.clone(), spec, JobState::Requested, now, "submitted");
        // stored before it exists, as the API does
        let key = format!("{JOBS}{id}");
        if let Ok(value) = serde_json::to_value(&record) {
            self.root.durable.insert(key, value);
        }
        root.jobs.insert(id.to_string(), record);
        let mut fx = Effects::default();
        root.schedule(id.as_str(), &mut fx);
        self.submitted[n] = Some(id);
        self.apply_root(fx);
    }

    fn fault(&mut self, fault: Scripted) {
        self.faults.push(format!("{fault:?}@{}", self.now));
        match fault {
            Scripted::Crash(addr) => {
                if !self.down.insert(addr) {
                    return;
                }
                match addr {
                    Addr::Root => {
                        self.root.state = None;
                        self.root.link = Link::default();
                    }
                    Addr::Cluster(i) => {
                        self.clusters[i].state = None;
                        self.clusters[i].link = Link::default();
                    }
                    Addr::Worker(w) => {
                        let worker = &mut self.workers[w];
                        worker.alive = false;
                        worker.local.clear();
                        worker.answered.clear();
                    }
                }
                if addr != Addr::Root {
                    // its connection drops with it: the parent hears at once (the MQTT will,
                    // the WebSocket's close), before any restart can dial again; a cut link
                    // is noticed by keepalive only
                    self.link_lost(addr, format!("{addr} crashed"));
                }
            }
            Scripted::Restart(addr) => {
                if !self.down.remove(&addr) {
                    return;
                }
                self.last_heal_ms = self.now;
                self.restart(addr);
            }
            Scripted::Partition(addr) => {
                if addr == Addr::Root || !self.cut.insert(addr) {
                    return;
                }
                let reason = format!("{addr} cut off");
                self.after(
                    NOTICE_MS,
                    Ev::LinkLost {
                        child: addr,
                        reason,
                    },
                );
            }
            Scripted::Heal(addr) => {
                if !self.cut.remove(&addr) {
                    return;
                }
                self.last_heal_ms = self.now;
                match addr {
                    // a cluster redials and registers again with its id
                    Addr::Cluster(i) => self.register_cluster(i),
                    _ => self.after(1, Ev::LinkUp { child: addr }),
                }
            }
            Scripted::Terminate(n) => {
                let Some(Some(id)) = self.submitted.get(n).cloned() else {
                    return;
                };
                let Some(root) = self.root.state.as_mut() else {
                    return;
                };
                let mut fx = Effects::default();
                if root.terminate(id.as_str(), &mut fx).is_ok() {
                    self.terminated.insert(n);
                }
                self.apply_root(fx);
            }
        }
    }

    fn restart(&mut self, addr: Addr) {
        match addr {
            Addr::Root => {
                let durable = &self.root.durable;
                let state = RootState::from_records(
                    context(&self.clock, self.seed, 10_000 + self.events),
                    root_config(),
                    scheduler(),
                    stored::<ClusterRecord>(durable, CLUSTERS),
                    stored::<JobRecord>(durable, JOBS),
                );
                self.root.state = Some(state);
                // every cluster's link dropped with the root: they dial again
                for i in 0..self.config.clusters {
                    if !self.down.contains(&Addr::Cluster(i))
                        && !self.cut.contains(&Addr::Cluster(i))
                    {
                        self.register_cluster(i);
                    }
                }
            }
            Addr::Cluster(i) => {
                let durable = &self.clusters[i].durable;
                let state = ClusterEngineState::from_records(
                    context(&self.clock, self.seed, 20_000 + self.events),
                    cluster_config(i),
                    scheduler(),
                    stored::<NodeRecord>(durable, NODES),
                    stored::<JobRecord>(durable, JOBS),
                );
                self.clusters[i].state = Some(state);
                if !self.cut.contains(&addr) {
                    self.register_cluster(i);
                }
                // its workers reconnect to its broker
                let per = self.config.workers_per_cluster;
                for w in i * per..(i + 1) * per {
                    self.after(
                        1,
                        Ev::LinkUp {
                            child: Addr::Worker(w),
                        },
                    );
                }
            }
            Addr::Worker(w) => {
                self.workers[w].alive = true;
                self.register_worker(w);
            }
        }
    }

    // ---- delivery ----

    fn deliver(&mut self, from: Addr, to: Addr, env: Envelope) -> Result<(), Violation> {
        match to {
            Addr::Root => self.deliver_to_root(from, env),
            Addr::Cluster(i) => {
                self.deliver_to_cluster(i, from, env);
                Ok(())
            }
            Addr::Worker(w) => {
                self.deliver_to_worker(w, env);
                Ok(())
            }
        }
    }

    fn deliver_to_root(&mut self, from: Addr, env: Envelope) -> Result<(), Violation> {
        let Addr::Cluster(i) = from else {
            return Ok(());
        };
        if let Some((re, outcome)) = outcome_of(&env.body) {
            if let Some(pending) = self.root.link.pending.remove(re) {
                if matches!(outcome, CommandOutcome::Acked) {
                    self.check_acked(i, &pending.env)?;
                }
                self.outcome(Addr::Root, pending.tag, Ok(outcome));
                return Ok(());
            }
        }
        let Some(root) = self.root.state.as_mut() else {
            return Ok(());
        };
        let mut fx = Effects::default();
        let child = format!("c{i}");
        let aggregate = matches!(env.body, Message::ClusterAggregate(_));
        let started = Instant::now();
        root.on_cluster_event(
            ParentEvent::Message {
                child,
                envelope: env,
            },
            &mut fx,
        );
        if aggregate {
            self.engine_time.aggregates += 1;
            self.engine_time.aggregate_time += started.elapsed();
        }
        self.apply_root(fx);
        Ok(())
    }

    fn deliver_to_cluster(&mut self, i: usize, from: Addr, env: Envelope) {
        let me = Addr::Cluster(i);
        if from == Addr::Root {
            if env.body.is_command() {
                if let Some(answer) = self.clusters[i].link.answered.get(&env.id).cloned() {
                    self.send(me, Addr::Root, answer);
                    return;
                }
            }
            let Some(cluster) = self.clusters[i].state.as_mut() else {
                return;
            };
            let mut fx = Effects::default();
            let answer = cluster.on_root_message(&env, &mut fx);
            if let Some(answer) = &answer {
                self.clusters[i]
                    .link
                    .answered
                    .insert(env.id.clone(), answer.clone());
            }
            self.apply_cluster(i, fx, answer);
            return;
        }
        let Addr::Worker(w) = from else {
            return;
        };
        if let Some((re, outcome)) = outcome_of(&env.body) {
            if let Some(pending) = self.clusters[i].link.pending.remove(re) {
                self.outcome(me, pending.tag, Ok(outcome));
                return;
            }
        }
        let Some(cluster) = self.clusters[i].state.as_mut() else {
            return;
        };
        let mut fx = Effects::default();
        let child = format!("w{w}");
        let status = matches!(env.body, Message::NodeStatus(_));
        let started = Instant::now();
        cluster.on_node_event(
            ParentEvent::Message {
                child,
                envelope: env,
            },
            &mut fx,
        );
        if status {
            self.engine_time.statuses += 1;
            self.engine_time.status_time += started.elapsed();
        }
        self.apply_cluster(i, fx, None);
    }

    // ---- the worker model ----

    fn worker_cx(&self, w: usize) -> Context {
        context(&self.clock, self.seed, 30_000 + w as u64)
    }

    fn worker_send(&mut self, w: usize, body: Message) {
        let cx = self.worker_cx(w);
        let c = w / self.config.workers_per_cluster;
        let env = Envelope::new_in(&cx, &self.workers[w].id, body);
        self.send(Addr::Worker(w), Addr::Cluster(c), env);
    }

    fn worker_event(&mut self, w: usize, job: &JobId, instance: &InstanceId, state: InstanceState) {
        let event = InstanceEvent {
            job: job.clone(),
            instance: instance.clone(),
            node: self.workers[w].id.clone(),
            state,
            exit_code: None,
            reason: String::new(),
            unschedulable: None,
        };
        self.worker_send(w, Message::InstanceEvent(event));
    }

    fn worker_status(&mut self, w: usize) {
        if !self.workers[w].alive {
            return;
        }
        let total = Resources {
            cpu_millis: u64::from(self.config.worker_cores) * 1000,
            memory_bytes: 8 << 30,
            disk_bytes: 20 << 30,
            gpus: 0,
        };
        let used: u64 = self.workers[w]
            .local
            .values()
            .map(|l| l.resources.cpu_millis)
            .sum();
        let status = NodeStatus {
            free: Resources {
                cpu_millis: total.cpu_millis.saturating_sub(used),
                ..total
            },
            total,
            instances: self.workers[w]
                .local
                .iter()
                .map(|(id, l)| InstanceReport {
                    instance: id.clone(),
                    job: l.job.clone(),
                    state: l.state,
                })
                .collect(),
            usage: None,
        };
        self.worker_send(w, Message::NodeStatus(status));
    }

    fn deliver_to_worker(&mut self, w: usize, env: Envelope) {
        if !self.workers[w].alive || !env.body.is_command() {
            return;
        }
        let cx = self.worker_cx(w);
        let c = w / self.config.workers_per_cluster;
        if let Some(answer) = self.workers[w].answered.get(&env.id).cloned() {
            self.send(Addr::Worker(w), Addr::Cluster(c), answer);
            return;
        }
        let kinds = vec!["native".into()];
        let actions = plan(&env.body, &self.workers[w].local, &kinds);
        let mut refusal = None;
        let mut started = Vec::new();
        for action in actions {
            match action {
                Action::Start(spec) => {
                    let local = Local {
                        job: spec.job.clone(),
                        kind: spec.kind.clone(),
                        state: InstanceState::Starting,
                        resources: spec.resources,
                        restart: None,
                        restarts: 0,
                        clearing: false,
                    };
                    self.workers[w].local.insert(spec.id.clone(), local);
                    started.push((spec.id.clone(), spec.job.clone()));
                    let delay = self.rng.range(5, 50);
                    self.after(
                        delay,
                        Ev::Runtime {
                            worker: w,
                            instance: spec.id.clone(),
                            to: InstanceState::Running,
                        },
                    );
                }
                Action::Stop(id) => {
                    if let Some(local) = self.workers[w].local.get_mut(&id) {
                        local.state = InstanceState::Terminating;
                        let job = local.job.clone();
                        self.worker_event(w, &job, &id, InstanceState::Terminating);
                        let delay = self.rng.range(5, 50);
                        self.after(
                            delay,
                            Ev::Runtime {
                                worker: w,
                                instance: id,
                                to: InstanceState::Terminated,
                            },
                        );
                    }
                }
                Action::Refuse(error) => refusal = Some(error),
            }
        }
        let me = self.workers[w].id.clone();
        let answer = match refusal {
            Some(error) => env.nack_in(&cx, &me, error),
            None => env.ack_in(&cx, &me),
        };
        self.workers[w]
            .answered
            .insert(env.id.clone(), answer.clone());
        // the answer goes before the events the command causes
        self.send(Addr::Worker(w), Addr::Cluster(c), answer);
        for (id, job) in started {
            self.worker_event(w, &job, &id, InstanceState::Starting);
        }
    }

    fn runtime_step(&mut self, w: usize, instance: InstanceId, to: InstanceState) {
        if !self.workers[w].alive {
            return;
        }
        let Some(local) = self.workers[w].local.get_mut(&instance) else {
            return;
        };
        let job = local.job.clone();
        match to {
            InstanceState::Running if local.state == InstanceState::Starting => {
                local.state = InstanceState::Running;
                self.worker_event(w, &job, &instance, to);
            }
            InstanceState::Terminated => {
                self.workers[w].local.remove(&instance);
                self.worker_event(w, &job, &instance, to);
            }
            _ => {}
        }
    }

    // ---- invariants ----

    /// A cluster acked a deploy: the job must be in its store.
    fn check_acked(&self, cluster: usize, command: &Envelope) -> Result<(), Violation> {
        let Message::Deploy(deploy) = &command.body else {
            return Ok(());
        };
        let key = format!("{JOBS}{}", deploy.job);
        if self.clusters[cluster].durable.contains_key(&key) {
            return Ok(());
        }
        Err(Violation {
            at_ms: self.now,
            invariant: "ack-persisted",
            detail: format!(
                "c{cluster} acked the deploy of {} without storing it",
                deploy.job
            ),
        })
    }

    /// What runs where: (job → instances running on live workers that reach their cluster).
    fn running(&self) -> Result<BTreeMap<JobId, Vec<(InstanceId, usize)>>, Violation> {
        let mut seen: BTreeMap<&InstanceId, usize> = BTreeMap::new();
        let mut jobs: BTreeMap<JobId, Vec<(InstanceId, usize)>> = BTreeMap::new();
        for (w, worker) in self.workers.iter().enumerate() {
            if !worker.alive {
                continue;
            }
            for (id, local) in &worker.local {
                if local.state != InstanceState::Running {
                    continue;
                }
                if let Some(other) = seen.insert(id, w) {
                    return Err(Violation {
                        at_ms: self.now,
                        invariant: "single-copy",
                        detail: format!("instance {id} runs on w{other} and w{w}"),
                    });
                }
                let c = w / self.config.workers_per_cluster;
                let hidden = self.cut.contains(&Addr::Worker(w))
                    || self.cut.contains(&Addr::Cluster(c))
                    || self.down.contains(&Addr::Cluster(c));
                if !hidden {
                    jobs.entry(local.job.clone())
                        .or_default()
                        .push((id.clone(), w));
                }
            }
        }
        Ok(jobs)
    }

    /// What the root and the clusters record of `job`: its history and its instances', as
    /// text (for a failing seed's report).
    fn story(&self, job: &JobId) -> String {
        let mut out = format!("\n  faults: {}", self.faults.join(" "));
        let tiers = std::iter::once((
            "root".to_string(),
            self.root.state.as_ref().map(|r| &r.jobs),
        ))
        .chain(
            self.clusters
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("c{i}"), c.state.as_ref().map(|s| &s.jobs))),
        );
        for (tier, jobs) in tiers {
            let Some(record) = jobs.and_then(|j| j.get(job.as_str())) else {
                continue;
            };
            let line = |h: &edgeio_core::state::HistoryEntry<_>| {
                format!(
                    "{}@{} ({})",
                    h.state,
                    h.at_ms.saturating_sub(EPOCH_MS),
                    h.reason
                )
            };
            let states: Vec<String> = record.lifecycle.history().iter().map(line).collect();
            out.push_str(&format!("\n  {tier}: {}", states.join(" ")));
            for i in &record.instances {
                let states: Vec<String> = i
                    .lifecycle
                    .history()
                    .iter()
                    .map(|h| {
                        format!(
                            "{}@{} ({})",
                            h.state,
                            h.at_ms.saturating_sub(EPOCH_MS),
                            h.reason
                        )
                    })
                    .collect();
                out.push_str(&format!(
                    "\n    {} on {:?}: {}",
                    i.id,
                    i.node,
                    states.join(" → ")
                ));
            }
        }
        out
    }

    fn check(&mut self) -> Result<(), Violation> {
        let running = self.running()?;
        let wanted = self.config.replicas as usize;
        let quiet = self.cut.is_empty() && self.down.is_empty();
        let mut still = BTreeMap::new();
        for (job, copies) in &running {
            if copies.len() > wanted {
                let since = self.excess_since.get(job).copied().unwrap_or(self.now);
                let from = since.max(self.last_heal_ms);
                if quiet && self.now.saturating_sub(from) > self.config.excess_grace_ms {
                    return Err(Violation {
                        at_ms: self.now,
                        invariant: "replicas",
                        detail: format!(
                            "job {job} has run {} copies (wants {wanted}) since {since} ms: {:?}{}",
                            copies.len(),
                            copies,
                            self.story(job)
                        ),
                    });
                }
                still.insert(job.clone(), since);
            }
        }
        self.excess_since = still;
        Ok(())
    }

    fn check_end(&self) -> Result<(), Violation> {
        let violation = |invariant, detail| Violation {
            at_ms: self.now,
            invariant,
            detail,
        };
        let Some(root) = &self.root.state else {
            return Err(violation("liveness", "the root is down at the end".into()));
        };
        let mut lives: Vec<Lifecycle<InstanceState>> = Vec::new();
        for job in root.jobs.values() {
            follows_table(&job.lifecycle)
                .map_err(|e| violation("table", format!("job {} moved {e}", job.id)))?;
            lives.extend(job.instances.iter().map(|i| i.lifecycle.clone()));
        }
        for cluster in self.clusters.iter().filter_map(|c| c.state.as_ref()) {
            for job in cluster.jobs.values() {
                follows_table(&job.lifecycle)
                    .map_err(|e| violation("table", format!("job {} moved {e}", job.id)))?;
                lives.extend(job.instances.iter().map(|i| i.lifecycle.clone()));
            }
        }
        for life in &lives {
            follows_table(life)
                .map_err(|e| violation("table", format!("an instance moved {e}")))?;
        }
        let running = self.running()?;
        for (n, id) in self.submitted.iter().enumerate() {
            let Some(id) = id else {
                return Err(violation(
                    "liveness",
                    format!("job {n} was never submitted"),
                ));
            };
            let state = root.jobs.get(id.as_str()).map(|j| j.lifecycle.state());
            let copies = running.get(id).map_or(0, Vec::len);
            if self.terminated.contains(&n) {
                if state != Some(JobState::Terminated) || copies != 0 {
                    return Err(violation(
                        "liveness",
                        format!("terminated job {id} is {state:?} with {copies} copies running"),
                    ));
                }
            } else if state != Some(JobState::Running) || copies != self.config.replicas as usize {
                return Err(violation(
                    "liveness",
                    format!(
                        "job {id} is {state:?} with {copies} copies running, {} s after the faults ended:{}",
                        self.config.settle_ms / 1000,
                        self.story(id)
                    ),
                ));
            }
        }
        Ok(())
    }
}
