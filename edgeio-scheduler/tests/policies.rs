//! What each policy chooses, and how refusals read.

use edgeio_core::model::{Arch, CandidateSet, Location, Tier};
use edgeio_core::scheduler::{Scheduler, SchedulerError};
use edgeio_core::testing::conformance::scheduler::{candidate, job};
use edgeio_scheduler::{
    BestFit, FilterChain, FirstFit, LeastLoaded, LocationAware, PolicyKind, SchedulerConfig, Spread,
};
use std::time::Duration;

fn explain(s: &dyn Scheduler, j: &edgeio_core::job::JobSpec, set: &CandidateSet) -> String {
    match s.place(j, set) {
        Err(SchedulerError::Unschedulable(why)) => why.to_string(),
        other => panic!("expected unschedulable, got {other:?}"),
    }
}

#[test]
fn first_fit_takes_the_first_fitting_in_id_order() {
    let set: CandidateSet = [
        candidate("c", 4000, 8),
        candidate("a", 500, 1),
        candidate("b", 4000, 8),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        FirstFit::default()
            .place(&job("w", 1000, 2), &set)
            .unwrap()
            .candidate,
        "b"
    );
}

#[test]
fn best_fit_takes_the_tightest_candidate() {
    let set: CandidateSet = [
        candidate("a", 8000, 16),
        candidate("b", 2000, 3),
        candidate("c", 4000, 8),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        BestFit::default()
            .place(&job("w", 1000, 2), &set)
            .unwrap()
            .candidate,
        "b"
    );
}

#[test]
fn least_loaded_takes_the_least_loaded_and_rotates_among_equals() {
    let mut busy = candidate("a", 4000, 8);
    busy.free.cpu_millis = 1000;
    let set: CandidateSet = [
        busy,
        candidate("b", 4000, 8),
        candidate("c", 4000, 8),
        candidate("d", 4000, 8),
    ]
    .into_iter()
    .collect();
    let policy = LeastLoaded::default();
    // a zero-resource job does not change loads, so only the cursor moves it on
    let j = job("w", 0, 0);
    let picks: Vec<String> = (0..4)
        .map(|_| policy.place(&j, &set).unwrap().candidate)
        .collect();
    assert_eq!(picks, ["b", "c", "d", "b"]);
}

#[test]
fn location_aware_prefers_a_name_match_then_the_nearest_then_first_fit() {
    let mut munich = candidate("a-munich", 4000, 8);
    munich.location = Some(Location {
        name: "Munich".into(),
        latitude: Some(48.1374),
        longitude: Some(11.5755),
    });
    let mut berlin = candidate("b-berlin", 4000, 8);
    berlin.location = Some(Location {
        name: "Berlin".into(),
        latitude: Some(52.52),
        longitude: Some(13.405),
    });
    let mut garching = candidate("c-garching", 4000, 8);
    garching.location = Some(Location::named("Garching"));
    let set: CandidateSet = [munich, berlin, garching].into_iter().collect();
    let policy = LocationAware::default();

    let mut j = job("w", 100, 1);
    j.cluster_location = Some(Location::named("garching"));
    assert_eq!(policy.place(&j, &set).unwrap().candidate, "c-garching");

    j.cluster_location = Some(Location {
        name: "Potsdam".into(),
        latitude: Some(52.39),
        longitude: Some(13.06),
    });
    assert_eq!(policy.place(&j, &set).unwrap().candidate, "b-berlin");

    j.cluster_location = Some(Location::named("Nowhere"));
    assert_eq!(policy.place(&j, &set).unwrap().candidate, "a-munich");
}

#[test]
fn spread_goes_to_the_zone_with_fewest_instances_of_the_job() {
    let mut a1 = candidate("a1", 4000, 8);
    a1.labels.insert("zone".into(), "a".into());
    a1.jobs.insert("w".into());
    let mut a2 = candidate("a2", 4000, 8);
    a2.labels.insert("zone".into(), "a".into());
    let mut b1 = candidate("b1", 2000, 4);
    b1.labels.insert("zone".into(), "b".into());
    let set: CandidateSet = [a1, a2, b1].into_iter().collect();
    assert_eq!(
        Spread::default()
            .place(&job("w", 100, 1), &set)
            .unwrap()
            .candidate,
        "b1"
    );
}

#[test]
fn an_unschedulable_job_names_each_refusing_filter_with_counts() {
    let mut arm = candidate("a", 4000, 8);
    arm.architectures = vec![Arch::Arm64];
    let mut arm2 = candidate("b", 4000, 8);
    arm2.architectures = vec![Arch::Arm64];
    let mut small = candidate("c", 4000, 1);
    small.free.memory_bytes = 1536 << 20;
    let mut old = candidate("d", 4000, 8);
    old.data_age = Duration::from_secs(90);
    let mut native = candidate("e", 4000, 8);
    native.runtimes = vec!["native".into()];
    let mut busy = candidate("f", 4000, 8);
    busy.jobs.insert("db".into());
    let mut zoned = candidate("g", 4000, 1);
    zoned.labels.insert("zone".into(), "a".into());
    let set: CandidateSet = [
        arm,
        arm2,
        small,
        old,
        native,
        busy,
        zoned,
        candidate("h", 4000, 1),
    ]
    .into_iter()
    .collect();
    let mut j = job("web", 100, 2);
    j.arch = Some(Arch::Amd64);
    j.anti_affinity = vec!["db".into()];
    let policy = FirstFit {
        filters: FilterChain::with_stale_after(Duration::from_secs(30)),
    };
    assert_eq!(
        explain(&policy, &j, &set),
        "2 nodes: arch arm64, need amd64; 3 nodes: insufficient memory (need 2 GiB, best free 1.5 GiB); \
         1 node: not heard from within 30s; 1 node: no docker runtime; \
         1 node: runs \"db\", which \"web\" must avoid"
    );
    j.node_selector.insert("gpu".into(), "true".into());
    j.anti_affinity.clear();
    j.arch = None;
    assert!(explain(&policy, &j, &set).contains("6 nodes: label gpu=true missing"));
}

#[test]
fn pins_explain_themselves_per_tier() {
    let mut nodes: CandidateSet = [candidate("n1", 4000, 8)].into_iter().collect();
    let mut j = job("web", 100, 1);
    j.worker_node = Some("e580".into());
    assert_eq!(
        explain(&FirstFit::default(), &j, &nodes),
        "1 node: not the pinned worker_node \"e580\""
    );
    nodes = CandidateSet::for_tier(Tier::Clusters);
    nodes.insert(candidate("c1", 4000, 8));
    nodes.insert(candidate("c2", 4000, 8));
    j.cluster = Some("garching".into());
    assert_eq!(
        explain(&FirstFit::default(), &j, &nodes),
        "2 clusters: not the pinned cluster \"garching\""
    );
    assert_eq!(
        explain(
            &FirstFit::default(),
            &j,
            &CandidateSet::for_tier(Tier::Clusters)
        ),
        "no clusters to choose from"
    );
}

#[test]
fn configuration_errors_name_the_field_and_the_rule() {
    let err = "fastest".parse::<PolicyKind>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid policy \"fastest\": must be one of first-fit, best-fit, least-loaded, location-aware, spread, weighted"
    );
    let err = SchedulerConfig::policy(PolicyKind::Weighted)
        .build()
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("needs at least one score"),
        "{err}"
    );
    let config: SchedulerConfig = serde_json::from_str(
        r#"{"policy":"weighted","scores":[{"score":"least_allocated","weight":-1}]}"#,
    )
    .unwrap();
    let err = config.build().err().unwrap();
    assert_eq!(
        err.to_string(),
        "invalid scores[0].weight \"-1\": must be a finite number >= 0"
    );
    let config: SchedulerConfig =
        serde_json::from_str(r#"{"policy":"least-loaded","filters":{"stale_after":5000}}"#)
            .unwrap();
    assert_eq!(config.filters.stale_after, Some(Duration::from_secs(5)));
    assert_eq!(config.build().unwrap().name(), "least-loaded");
}

#[test]
fn an_engine_can_be_unit_tested_with_the_scheduler_mock() {
    // integrators test engine code that calls a scheduler without any policy at all
    let mut mock = edgeio_core::testing::mocks::MockScheduler::new();
    mock.expect_place()
        .withf(|job, set| job.name == "web" && set.len() == 1)
        .times(1)
        .returning(|_, _| Ok(edgeio_core::scheduler::Placement::on("n1")));
    let set: CandidateSet = [candidate("n1", 4000, 8)].into_iter().collect();
    let scheduler: &dyn Scheduler = &mock;
    assert_eq!(
        scheduler.place(&job("web", 1, 1), &set).unwrap().candidate,
        "n1"
    );
}
