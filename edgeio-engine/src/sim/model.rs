//! What a simulation is made of: its configuration, the processes' addresses, scripted
//! faults, planted bugs and the violations it reports.

use edgeio_core::job::RestartPolicy;
use std::fmt;

/// A process of the simulated hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Addr {
    /// The root.
    Root,
    /// Cluster number `i` (its id is `c{i}`).
    Cluster(usize),
    /// Worker number `i` (its id is `w{i}`), of cluster `i / workers_per_cluster`.
    Worker(usize),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Root => f.write_str("root"),
            Addr::Cluster(i) => write!(f, "c{i}"),
            Addr::Worker(i) => write!(f, "w{i}"),
        }
    }
}

/// A fault placed on the timeline by a test (on top of the seed's random ones, if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scripted {
    /// The process dies: its memory is gone, its store stays.
    Crash(Addr),
    /// A crashed process starts again from its store.
    Restart(Addr),
    /// The process is cut from its parent (both directions).
    Partition(Addr),
    /// The cut heals.
    Heal(Addr),
    /// The root is asked to terminate the job submitted `n`-th (from 0).
    Terminate(usize),
    /// The root is asked to move the job submitted `n`-th anywhere other than where it
    /// runs (make-before-break); refused when it is not RUNNING then.
    Migrate(usize),
    /// The store of the root or of a cluster refuses every write (a full disk); workers
    /// store nothing, so a worker's address is ignored.
    StoreFail(Addr),
    /// The store takes writes again (the disk was emptied).
    StoreHeal(Addr),
}

/// A known bug the simulator can plant, to show that a seed catches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// Clusters answer commands without storing what they changed.
    AckWithoutPersist,
    /// Clusters never stop a named instance on a node, so a returning node keeps the copy
    /// that was replaced while it was away (the newer placement does not win).
    KeepReplacedCopies,
    /// Clusters ack a command even when its records could not be written (instead of
    /// answering "not now"), so an ack can name a change the store does not hold.
    AckDespiteFailedWrite,
}

/// The shape of a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Clusters under the root.
    pub clusters: usize,
    /// Workers per cluster.
    pub workers_per_cluster: usize,
    /// Cores per worker.
    pub worker_cores: u32,
    /// Jobs submitted, at random times before `faults_until_ms`.
    pub jobs: usize,
    /// CPU each job's replica asks for, in millicores.
    pub job_cpu_millis: u64,
    /// Replicas per job.
    pub replicas: u32,
    /// Random faults (crashes, partitions, message loss and duplication) happen before
    /// this time; after it every fault is healed and nothing new breaks.
    pub faults_until_ms: u64,
    /// How many random faults (crash-restart or partition-heal pairs) the seed places.
    pub random_faults: usize,
    /// Probability that a message is lost while faults happen; the link it travelled on
    /// drops with it and is dialed again 50–500 ms later (links are TCP connections).
    pub loss: f64,
    /// Probability that a message is delivered twice while faults happen.
    pub duplication: f64,
    /// How many windows of failing store writes the seed places (each on the root or one
    /// cluster, 300 ms to 6 s long, before `faults_until_ms`).
    pub store_faults: usize,
    /// Probability that a run of an instance (its start, or a restart) ends on its own
    /// before the faults end: a clean exit, a failure or a crash, each with its own chance,
    /// and the job's restart policy (drawn by the seed) decides what follows.
    pub exit_chance: f64,
    /// How many migrations (anywhere) of random jobs the seed asks the root for while
    /// faults happen. None in the CI set yet: at 2 per seed, 1 of the first 1,500 seeds
    /// still fails (100: `liveness`, a job left SCHEDULED_CLUSTER) and 1 of the next 500
    /// (1863: `replicas`), not triaged yet (run with `EDGEIO_SIM_MIGRATIONS=2`, see
    /// `sim::tests`).
    pub migrations: usize,
    /// Every job's restart policy; `None`: the seed draws one per job (never, on-failure or
    /// always, with a limit of 0 to 2 restarts and a backoff of 0.1 to 1 s).
    pub restart: Option<RestartPolicy>,
    /// Messages take from 1 ms to this long (different delays reorder them).
    pub max_delay_ms: u64,
    /// Once the faults end, every live job must run within this long.
    pub settle_ms: u64,
    /// How long a job may run more replicas than it asks once nothing hides the old copy.
    pub excess_grace_ms: u64,
    /// Faults a test places on the timeline: (time in ms, fault).
    pub script: Vec<(u64, Scripted)>,
    /// A bug planted on purpose, if any.
    pub plant: Option<PlantedBug>,
    /// Submit every job at this time instead of at random times (for throughput).
    pub submit_at: Option<u64>,
    /// Check the invariants after every event (off for scale measurements, where the
    /// checks would cost more than the engines; the end checks still run).
    pub check_every_event: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            clusters: 2,
            workers_per_cluster: 3,
            worker_cores: 4,
            jobs: 6,
            job_cpu_millis: 500,
            replicas: 1,
            faults_until_ms: 20_000,
            random_faults: 3,
            loss: 0.02,
            duplication: 0.02,
            store_faults: 2,
            exit_chance: 0.3,
            restart: None,
            migrations: 0,
            max_delay_ms: 20,
            settle_ms: 60_000,
            excess_grace_ms: 20_000,
            script: Vec::new(),
            plant: None,
            submit_at: None,
            check_every_event: true,
        }
    }
}

/// An invariant the simulation broke, with the virtual time it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time, in ms since the start.
    pub at_ms: u64,
    /// Which invariant: `ack-persisted`, `act-stored`, `single-copy`, `replicas`, `table`,
    /// `liveness`, `panic`.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at {} ms: {}: {}",
            self.at_ms, self.invariant, self.detail
        )
    }
}

/// A small deterministic generator (splitmix64): the same seed gives the same run.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}
