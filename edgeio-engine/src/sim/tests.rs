//! The simulator's own tests: a fixed set of seeds, a replay of one, scripted timelines, and
//! planted bugs it must catch. Every test name contains `sim`.

use super::*;
use edgeio_core::job::{RestartKind, RestartPolicy};
use edgeio_core::state::JobState;

/// How many seeds CI runs (a few seconds); `EDGEIO_SIM_SEEDS=N` runs N from seed 0 instead
/// (from `EDGEIO_SIM_FROM` when set), `EDGEIO_SIM_MIGRATIONS=N` with N seeded migrations.
const SEEDS: u64 = 500;

/// The default configuration, with `EDGEIO_SIM_MIGRATIONS` seeded migrations when set.
fn config_from_env() -> SimConfig {
    let mut config = SimConfig::default();
    if let Some(n) = env_number("EDGEIO_SIM_MIGRATIONS") {
        config.migrations = n as usize;
    }
    config
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

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
    let seeds = env_number("EDGEIO_SIM_SEEDS").unwrap_or(SEEDS);
    let from = env_number("EDGEIO_SIM_FROM").unwrap_or(0);
    // how many seeds saw each fault, so that a change of rates that leaves one out shows
    let (mut writes, mut not_now, mut exits, mut gave_up, mut restarted) = (0, 0, 0, 0, 0);
    for seed in from..from + seeds {
        let c = expect_pass(seed, config_from_env()).counts;
        writes += u64::from(c.failed_writes > 0);
        not_now += u64::from(c.not_now > 0);
        exits += u64::from(c.clean_exits + c.failed_exits + c.crashes > 0);
        gave_up += u64::from(c.give_ups > 0);
        restarted += u64::from(c.restarts > 0);
    }
    eprintln!(
        "sim: of {seeds} seeds, {writes} saw failed writes, {not_now} a command answered \
         \"not now\", {exits} instance exits, {restarted} restarts, {gave_up} give-ups"
    );
    if seeds >= SEEDS {
        assert!(writes * 2 > seeds, "most seeds see failed writes: {writes}");
        assert!(exits * 2 > seeds, "most seeds see instances exit: {exits}");
        assert!(
            not_now * 10 > seeds,
            "a command answered not now: {not_now}"
        );
        assert!(gave_up * 10 > seeds, "give-ups: {gave_up}");
        assert!(restarted * 10 > seeds, "restarts: {restarted}");
    }
}

/// Replays `EDGEIO_SIM_SEED` (seed 0 when unset) with the default configuration
/// (`EDGEIO_SIM_MIGRATIONS=N`: with N seeded migrations).
#[test]
fn replay() {
    let seed = env_number("EDGEIO_SIM_SEED").unwrap_or(0);
    let report = expect_pass(seed, config_from_env());
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

#[test]
fn sim_catches_a_planted_ack_despite_a_failed_write() {
    // both clusters' disks are full while the jobs arrive
    let config = SimConfig {
        random_faults: 0,
        store_faults: 0,
        exit_chance: 0.0,
        plant: Some(PlantedBug::AckDespiteFailedWrite),
        script: vec![
            (0, Scripted::StoreFail(Addr::Cluster(0))),
            (0, Scripted::StoreFail(Addr::Cluster(1))),
            (15_000, Scripted::StoreHeal(Addr::Cluster(0))),
            (15_000, Scripted::StoreHeal(Addr::Cluster(1))),
        ],
        ..SimConfig::default()
    };
    let violation = run(4, config).expect_err("the planted bug is caught");
    assert_eq!(violation.invariant, "ack-persisted", "{violation}");
}

#[test]
fn sim_timeline_full_disks_hold_every_deploy_until_they_empty_and_then_all_runs() {
    let config = SimConfig {
        random_faults: 0,
        store_faults: 0,
        exit_chance: 0.0,
        loss: 0.0,
        duplication: 0.0,
        submit_at: Some(3_000),
        script: vec![
            (2_000, Scripted::StoreFail(Addr::Cluster(0))),
            (2_000, Scripted::StoreFail(Addr::Cluster(1))),
            (9_000, Scripted::StoreHeal(Addr::Cluster(0))),
            (9_000, Scripted::StoreHeal(Addr::Cluster(1))),
        ],
        ..SimConfig::default()
    };
    let mut sim = Sim::new(6, config.clone());
    sim.advance_to(8_000).unwrap();
    assert_eq!(
        sim.jobs_at_root(JobState::Running),
        0,
        "nothing runs that the clusters could not store"
    );
    let report = expect_pass(6, config);
    assert_eq!(report.running, 6);
    assert!(report.counts.not_now > 0, "{:?}", report.counts);
    assert!(report.counts.failed_writes > 0, "{:?}", report.counts);
}

#[test]
fn sim_timeline_a_full_disk_at_the_root_refuses_submissions_until_it_empties() {
    let config = SimConfig {
        random_faults: 0,
        store_faults: 0,
        exit_chance: 0.0,
        submit_at: Some(3_000),
        script: vec![
            (2_000, Scripted::StoreFail(Addr::Root)),
            (6_000, Scripted::StoreHeal(Addr::Root)),
        ],
        ..SimConfig::default()
    };
    let report = expect_pass(8, config);
    assert_eq!(report.running, 6);
    assert!(report.counts.refused_requests >= 6, "{:?}", report.counts);
}

#[test]
fn sim_timeline_instances_that_keep_failing_are_restarted_then_relocated() {
    // every run fails or crashes before the faults end; each node restarts an instance once
    let config = SimConfig {
        random_faults: 0,
        store_faults: 0,
        loss: 0.0,
        duplication: 0.0,
        jobs: 3,
        exit_chance: 1.0,
        restart: Some(RestartPolicy {
            policy: RestartKind::Always,
            limit: 1,
            backoff_ms: 300,
        }),
        ..SimConfig::default()
    };
    let report = expect_pass(9, config);
    let c = &report.counts;
    assert!(c.restarts > 0 && c.give_ups > 0, "{c:?}");
}

#[test]
fn sim_timeline_migrations_asked_during_a_full_disk_and_a_partition_are_retried_and_end_running() {
    let config = SimConfig {
        jobs: 3,
        random_faults: 0,
        store_faults: 0,
        exit_chance: 0.0,
        submit_at: Some(1_000),
        script: vec![
            (4_000, Scripted::StoreFail(Addr::Root)),
            (5_000, Scripted::Migrate(0)),
            (6_000, Scripted::StoreHeal(Addr::Root)),
            (6_500, Scripted::Partition(Addr::Worker(4))),
            (8_000, Scripted::Migrate(1)),
            (9_000, Scripted::Heal(Addr::Worker(4))),
        ],
        ..SimConfig::default()
    };
    let report = expect_pass(11, config);
    assert_eq!(report.running, 3);
    assert_eq!(report.counts.migrations, 2, "{:?}", report.counts);
    assert!(report.counts.refused_requests >= 1, "{:?}", report.counts);
}
