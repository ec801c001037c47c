//! The event queue, the network, the processes around the engines' decisions, and the
//! invariants checked after every step.

use super::model::{Addr, PlantedBug, Rng, Scripted, SimConfig, Violation};
use crate::cluster::{ClusterConfig, ClusterState as ClusterEngineState, Tag as ClusterTag};
use crate::effects::{not_now, Effects, Records};
use crate::records::{ClusterJob, ClusterRecord, NodeRecord, RootJob, CLUSTERS, JOBS, NODES};
use crate::root::{RootConfig, RootState, Tag as RootTag};
use crate::worker::{after_exit, plan, status_of, Action, AfterExit, Local};
use edgeio_core::clock::{Context, ManualClock, SeededIds};
use edgeio_core::job::{JobSpec, RestartKind, RestartPolicy};
use edgeio_core::model::{Arch, Capabilities, InstanceId, JobId, Labels, Resources, RuntimeInfo};
use edgeio_core::reliable::{CommandOutcome, ReliableConfig};
use edgeio_core::scheduler::Scheduler;
use edgeio_core::state::{InstanceState, JobState, Lifecycle, StateMachine};
use edgeio_core::testing::SimpleScheduler;
use edgeio_core::transport::{ParentEvent, TransportError};
use edgeio_core::wire::{
    ChannelKind, ChannelSettings, Envelope, InstanceEvent, Message, MigrateTarget, PeerRole,
    RegisterRequest,
};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod delivery;
mod effects;
mod faults;
mod invariants;
mod links;
mod worker;

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
    /// Run number `run` of an instance ended on its own: exit code `code`, `None` when it
    /// crashed (killed by a signal).
    Exit {
        worker: usize,
        instance: InstanceId,
        run: u64,
        code: Option<i32>,
    },
    /// An instance's restart backoff on its worker is over.
    Restart {
        worker: usize,
        instance: InstanceId,
    },
    /// A child whose registration was refused (its parent could not store it) dials again.
    Register(Addr),
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

/// Something a change asked for that waits for its records to be written, as
/// `effects::Core` holds it.
#[derive(Debug, Clone)]
enum Held {
    Up(Envelope),
    Down(Addr, Envelope),
    Command(Addr, Envelope, SimTag),
}

/// What the reliable layer of one process holds (lost with it when it crashes).
#[derive(Debug, Default)]
struct Link {
    pending: BTreeMap<String, Pending>,
    /// Answers to commands already handled, by command id: a duplicate gets the same answer.
    answered: BTreeMap<String, Envelope>,
}

/// A root or cluster process: the engine's state and its backlog while it lives, its
/// store always.
struct Proc<S> {
    state: Option<S>,
    durable: BTreeMap<String, Vec<u8>>,
    /// Whether the store refuses writes now (a full disk: it stays full across a crash).
    failing: bool,
    /// Keys whose records the store refused, in the order they changed first: the engine's
    /// memory is ahead of its store (lost with a crash, as the engine's memory is).
    dirty: Vec<String>,
    /// What waits for the dirty keys to be written, in order.
    held: Vec<Held>,
    link: Link,
}

impl<S: Records> Proc<S> {
    fn new(state: S) -> Proc<S> {
        Proc {
            state: Some(state),
            durable: BTreeMap::new(),
            failing: false,
            dirty: Vec::new(),
            held: Vec::new(),
            link: Link::default(),
        }
    }

    /// As `effects::persist_all` under `Core::apply`: `keys` join the dirty ones, then each
    /// dirty key is written with its record as it is now, unless the store refuses writes.
    /// True when nothing is left unwritten (with nothing to write, a failing store is not
    /// asked, so the answer is true).
    fn write(&mut self, keys: &[String], counts: &mut Counts) -> bool {
        for key in keys {
            if !self.dirty.contains(key) {
                self.dirty.push(key.clone());
            }
        }
        if self.dirty.is_empty() {
            return true;
        }
        if self.failing {
            counts.failed_writes += 1;
            return false;
        }
        if let Some(state) = &self.state {
            for key in self.dirty.drain(..) {
                if let Some(value) = state.value_of(&key) {
                    self.durable.insert(key, value);
                }
            }
        }
        true
    }

    /// Forgets what lived in memory (a crash): the engine, its backlog, its links.
    fn crash(&mut self) {
        self.state = None;
        self.dirty.clear();
        self.held.clear();
        self.link = Link::default();
    }
}

/// How often the faults the seed drives happened in a run (in [`Report`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Windows in which a root's or a cluster's store refused writes.
    pub store_outages: u64,
    /// Changes whose records a failing store refused (each held what it asked for).
    pub failed_writes: u64,
    /// Migrations the root started (asked while the job was RUNNING and stored).
    pub migrations: u64,
    /// Commands answered "not now" (`nack` `unavailable` with `retry`) instead of acked,
    /// because what they changed could not be stored.
    pub not_now: u64,
    /// Submissions, registrations, terminations and migrations refused because the store
    /// could not take them (tried again later).
    pub refused_requests: u64,
    /// Runs of instances that exited cleanly (code 0).
    pub clean_exits: u64,
    /// Runs of instances that exited with a failure code.
    pub failed_exits: u64,
    /// Runs of instances that crashed (killed by a signal, no exit code).
    pub crashes: u64,
    /// Restarts on the same node that the restart policy asked for.
    pub restarts: u64,
    /// Instances a worker gave up on (FAILED: restart policy `never`, or its limit reached).
    pub give_ups: u64,
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
    /// How often the seed's store and instance faults happened.
    pub counts: Counts,
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
    /// The restart policy of each job, by submission order (drawn by the seed).
    policies: Vec<RestartPolicy>,
    /// The run number of each instance's current run on a worker, so that the end the seed
    /// planned for one run does not end the next.
    runs: BTreeMap<(usize, InstanceId), u64>,
    /// Jobs an instance of which exited cleanly and was done (not restarted): such a job is
    /// finished, not expected to run at the end.
    finished: BTreeSet<JobId>,
    /// Jobs an instance of which a worker gave up on: the relocation may fail for good (no
    /// other node takes it) and the job end FAILED.
    gave_up: BTreeSet<JobId>,
    counts: Counts,
    /// A violation seen while carrying out effects, reported by the next check.
    broken: Option<Violation>,
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

/// What an answer says about its command; a "not now" (nack with retry) says nothing final,
/// so the command stays pending and is re-sent, as `ReliableParent` does.
fn outcome_of(message: &Message) -> Option<(&str, CommandOutcome)> {
    match message {
        Message::Ack(a) => Some((&a.re, CommandOutcome::Acked)),
        Message::Nack(n) if n.retry => None,
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
    durable: &BTreeMap<String, Vec<u8>>,
    prefix: &str,
) -> Vec<T> {
    durable
        .range(prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .filter_map(|(_, v)| serde_json::from_slice(v).ok())
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
            policies: Vec::new(),
            runs: BTreeMap::new(),
            finished: BTreeSet::new(),
            gave_up: BTreeSet::new(),
            counts: Counts::default(),
            broken: None,
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
        for _ in 0..self.config.store_faults {
            let victim = match self.rng.range(0, self.config.clusters as u64) {
                0 => Addr::Root,
                c => Addr::Cluster(c as usize - 1),
            };
            let start = self.rng.range(500, until);
            let end = (start + self.rng.range(300, 6_000)).min(until);
            self.at(start, Ev::Fault(Scripted::StoreFail(victim)));
            self.at(end, Ev::Fault(Scripted::StoreHeal(victim)));
        }
        for _ in 0..self.config.migrations {
            if self.config.jobs == 0 {
                break;
            }
            let job = self.rng.range(0, self.config.jobs as u64 - 1) as usize;
            let at = self.rng.range(1_000, until);
            self.at(at, Ev::Fault(Scripted::Migrate(job)));
        }
        // what a job's instances do when they end on their own: a third each never
        // restart, restart on failure, always restart; small limits and backoffs, so that
        // give-ups (and the relocations they cause) happen within the faults
        for _ in 0..self.config.jobs {
            let policy = match self.rng.range(0, 2) {
                0 => RestartKind::Never,
                1 => RestartKind::OnFailure,
                _ => RestartKind::Always,
            };
            let drawn = RestartPolicy {
                policy,
                limit: self.rng.range(0, 2) as u32,
                backoff_ms: self.rng.range(100, 1_000),
            };
            self.policies.push(self.config.restart.unwrap_or(drawn));
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
            self.advance_to(end)?;
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
                counts: self.counts.clone(),
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
            Ev::Exit {
                worker,
                instance,
                run,
                code,
            } => self.exit(worker, instance, run, code),
            Ev::Restart { worker, instance } => self.restart_instance(worker, instance),
            Ev::Register(child) => self.register(child),
        }
        match self.broken.take() {
            Some(violation) => Err(violation),
            None => Ok(()),
        }
    }
}
