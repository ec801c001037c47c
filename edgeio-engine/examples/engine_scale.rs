//! `engine_scale`: what the engines cost at fleet scale, measured in the simulator.
//!
//! Three shapes on virtual time, status and aggregates at 1 Hz: a root with 100 clusters of
//! 100 workers (10,000 workers), one cluster with 10,000 workers, and a root with 1,000
//! clusters. For each it prints the engines' wall-clock time per status message and per
//! aggregate (measured around the engine calls only, not the simulator's own work) and the
//! share of one core that 1 Hz costs; then memory per node and per job (process RSS), and
//! jobs per second from submit to SCHEDULED_NODE with 10,000 jobs, beside the goals and the
//! peers' published figures.
//!
//! ```sh
//! cargo run --release -p edgeio-engine --features testing --example engine_scale
//! EDGEIO_SCALE_SECONDS=5 cargo run --release -p edgeio-engine --features testing --example engine_scale
//! EDGEIO_SCALE_PART=jobs EDGEIO_SCALE_JOBS=2000 cargo run --release -p edgeio-engine --features testing --example engine_scale
//! ```

use edgeio_core::state::JobState;
use edgeio_engine::sim::{EngineTime, Sim, SimConfig};
use std::time::{Duration, Instant};

/// Virtual seconds measured after the fleet has registered and settled.
fn seconds() -> u64 {
    std::env::var("EDGEIO_SCALE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

/// Resident set size of this process, in bytes (Linux; 0 elsewhere).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn quiet(clusters: usize, workers_per_cluster: usize, jobs: usize) -> SimConfig {
    SimConfig {
        clusters,
        workers_per_cluster,
        worker_cores: 4,
        jobs,
        job_cpu_millis: 500,
        replicas: 1,
        faults_until_ms: 0,
        random_faults: 0,
        loss: 0.0,
        duplication: 0.0,
        max_delay_ms: 5,
        settle_ms: 0,
        check_every_event: false,
        submit_at: Some(u64::MAX),
        ..SimConfig::default()
    }
}

fn per(time: Duration, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        time.as_secs_f64() * 1e6 / count as f64
    }
}

/// The difference of two measurements: what the measured window cost.
fn window(after: &EngineTime, before: &EngineTime) -> EngineTime {
    EngineTime {
        statuses: after.statuses - before.statuses,
        status_time: after.status_time - before.status_time,
        aggregates: after.aggregates - before.aggregates,
        aggregate_time: after.aggregate_time - before.aggregate_time,
        cluster_ticks: after.cluster_ticks - before.cluster_ticks,
        cluster_tick_time: after.cluster_tick_time - before.cluster_tick_time,
        root_ticks: after.root_ticks - before.root_ticks,
        root_tick_time: after.root_tick_time - before.root_tick_time,
    }
}

/// Runs a quiet fleet for the measured window and prints one row of the CPU table.
fn fleet(name: &str, clusters: usize, workers_per_cluster: usize) {
    let mut sim = Sim::new(1, quiet(clusters, workers_per_cluster, 0));
    let warm = 3_000;
    sim.advance_to(warm)
        .expect("a quiet fleet keeps its invariants");
    let before = sim.engine_time().clone();
    let secs = seconds();
    sim.advance_to(warm + secs * 1000)
        .expect("a quiet fleet keeps its invariants");
    let t = window(sim.engine_time(), &before);
    let cluster_share = (t.status_time + t.cluster_tick_time).as_secs_f64() / secs as f64;
    let root_share = (t.aggregate_time + t.root_tick_time).as_secs_f64() / secs as f64;
    println!(
        "| {name} | {} | {:.2} | {:.1}% ({:.2}% per cluster) | {} | {:.2} | {:.2}% |",
        t.statuses / secs,
        per(t.status_time, t.statuses),
        cluster_share * 100.0,
        cluster_share * 100.0 / clusters as f64,
        t.aggregates / secs,
        per(t.aggregate_time, t.aggregates),
        root_share * 100.0,
    );
}

/// Which part to run: `fleets`, `jobs` or both (the default).
fn part(name: &str) -> bool {
    match std::env::var("EDGEIO_SCALE_PART") {
        Ok(p) => p == name || p == "all",
        Err(_) => true,
    }
}

fn main() {
    if part("fleets") {
        fleets();
    }
    if part("jobs") {
        jobs();
    }
}

fn fleets() {
    println!(
        "engine CPU at 1 Hz, {} virtual seconds each (wall-clock time inside the engines):\n",
        seconds()
    );
    println!("| fleet | statuses/s | µs per status | cluster engines, share of one core | aggregates/s | µs per aggregate | root engine, share of one core |");
    println!("|---|---|---|---|---|---|---|");
    fleet("root + 100 clusters × 100 workers", 100, 100);
    fleet("root + 1 cluster × 10,000 workers", 1, 10_000);
    fleet("root + 1,000 clusters × 2 workers", 1_000, 2);
    println!("\ngoals: a cluster engine keeps up with 10,000 workers at 1 Hz in ≤ 10% of one core; the root with 1,000 clusters in ≤ 5%");
}

/// Memory and throughput: 100 clusters × 100 workers, then 10,000 jobs at once.
fn jobs() {
    let jobs: usize = std::env::var("EDGEIO_SCALE_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let submit_at = 3_000;
    let base = rss_bytes();
    let mut config = quiet(100, 100, jobs);
    config.submit_at = Some(submit_at);
    let mut sim = Sim::new(2, config);
    sim.advance_to(submit_at - 1)
        .expect("registration keeps the invariants");
    let fleet_rss = rss_bytes();
    let started = Instant::now();
    let mut at = submit_at;
    let placed =
        |sim: &Sim| sim.jobs_at_root(JobState::ScheduledNode) + sim.jobs_at_root(JobState::Running);
    while placed(&sim) < jobs && at < submit_at + 600_000 {
        at += 10;
        sim.advance_to(at).expect("placement keeps the invariants");
    }
    let wall = started.elapsed();
    let placed_now = placed(&sim);
    sim.advance_to(at + 5_000).expect("the jobs settle");
    let jobs_rss = rss_bytes();
    println!("\n{jobs} jobs submitted at once to root + 100 clusters × 100 workers:\n");
    println!("| figure | edgeio (simulated) | goal / peers |");
    println!("|---|---|---|");
    println!(
        "| submit → SCHEDULED_NODE | {placed_now} jobs in {:.0} ms wall ({:.1} s virtual): {:.0} jobs/s | ≥ 10,000 jobs/s; Kubernetes scheduler_perf about 1,000 pods/s; Nomad C1M 3,750 containers/s |",
        wall.as_secs_f64() * 1000.0,
        (at - submit_at) as f64 / 1000.0,
        placed_now as f64 / wall.as_secs_f64()
    );
    println!(
        "| memory per node (root, cluster and worker model, RSS) | {:.1} KiB | |",
        fleet_rss.saturating_sub(base) as f64 / 1024.0 / 10_000.0
    );
    println!(
        "| memory per job (its records at root and cluster, its instance, RSS) | {:.1} KiB | |",
        jobs_rss.saturating_sub(fleet_rss) as f64 / 1024.0 / jobs as f64
    );
    println!(
        "\n(the wall time above includes the simulator's own work: the engines' share is lower)"
    );
}
