//! The simulator's own tests: a fixed set of seeds, a replay of one, scripted timelines, and
//! planted bugs it must catch. Every test name contains `sim`.

use super::*;

/// How many seeds CI runs (a few seconds); `EDGEIO_SIM_SEEDS=N` runs N from seed 0 instead.
const SEEDS: u64 = 500;

fn run(seed: u64, config: SimConfig) -> Result<Report, Violation> {
    Sim::new(seed, config).run()
}

fn expect_pass(seed: u64, config: SimConfig) -> Report {
    match run(seed, config) {
        Ok(report) => report,
        Err(v) => panic!(
            "sim seed {seed} failed {v}\nreplay: {}",
            replay_command(seed)
        ),
    }
}

#[test]
fn sim_seeds_keep_every_invariant() {
    let seeds = std::env::var("EDGEIO_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS);
    for seed in 0..seeds {
        expect_pass(seed, SimConfig::default());
    }
}

/// Replays `EDGEIO_SIM_SEED` (seed 0 when unset) with the default configuration.
#[test]
fn replay() {
    let seed = std::env::var("EDGEIO_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let report = expect_pass(seed, SimConfig::default());
    eprintln!("sim seed {seed}: {report:?}");
}

#[test]
fn sim_runs_the_same_seed_the_same_way() {
    let a = run(42, SimConfig::default());
    let b = run(42, SimConfig::default());
    assert_eq!(a, b);
}

#[test]
fn sim_timeline_a_killed_worker_is_replaced_and_nothing_runs_twice() {
    let config = SimConfig {
        jobs: 4,
        random_faults: 0,
        loss: 0.0,
        duplication: 0.0,
        faults_until_ms: 12_000,
        script: vec![
            (5_000, Scripted::Crash(Addr::Worker(2))),
            (9_000, Scripted::Restart(Addr::Worker(2))),
        ],
        ..SimConfig::default()
    };
    let report = expect_pass(1, config);
    assert_eq!(report.running, 4);
}

#[test]
fn sim_timeline_a_partitioned_cluster_comes_back_and_the_newer_placement_wins() {
    let config = SimConfig {
        jobs: 4,
        random_faults: 0,
        faults_until_ms: 40_000,
        script: vec![
            (3_000, Scripted::Partition(Addr::Cluster(0))),
            (38_000, Scripted::Heal(Addr::Cluster(0))),
        ],
        ..SimConfig::default()
    };
    expect_pass(3, config);
}

#[test]
fn sim_timeline_terminated_jobs_stop_everywhere() {
    let config = SimConfig {
        jobs: 3,
        random_faults: 0,
        script: vec![
            (15_000, Scripted::Terminate(0)),
            (16_000, Scripted::Crash(Addr::Cluster(1))),
            (18_000, Scripted::Restart(Addr::Cluster(1))),
        ],
        ..SimConfig::default()
    };
    expect_pass(5, config);
}

#[test]
fn sim_catches_a_planted_ack_without_persist() {
    let config = SimConfig {
        plant: Some(PlantedBug::AckWithoutPersist),
        ..SimConfig::default()
    };
    let violation = run(1, config).expect_err("the planted bug is caught");
    assert_eq!(violation.invariant, "ack-persisted", "{violation}");
}

#[test]
fn sim_catches_a_planted_replacement_that_keeps_the_old_copy() {
    // the first worker (first fit puts the early jobs there) is cut off long enough to be
    // replaced, then comes back with its copies
    let config = SimConfig {
        jobs: 6,
        random_faults: 0,
        loss: 0.0,
        duplication: 0.0,
        faults_until_ms: 15_000,
        plant: Some(PlantedBug::KeepReplacedCopies),
        script: vec![
            (4_000, Scripted::Partition(Addr::Worker(0))),
            (12_000, Scripted::Heal(Addr::Worker(0))),
        ],
        ..SimConfig::default()
    };
    let violation = run(2, config).expect_err("the planted bug is caught");
    assert!(
        violation.invariant == "replicas" || violation.invariant == "liveness",
        "{violation}"
    );
}
