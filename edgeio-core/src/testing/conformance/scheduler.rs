//! Conformance suite for [`Scheduler`] implementations: the contract every policy keeps,
//! whatever it optimizes.
//!
//! ```ignore
//! #[test]
//! fn first_fit_conforms() {
//!     edgeio_core::testing::conformance::scheduler::run_all(&FirstFit::default());
//! }
//! ```

use crate::job::JobSpec;
use crate::model::{Arch, Candidate, CandidateSet, Labels, Resources, RuntimeKind, Tier};
use crate::scheduler::{Scheduler, SchedulerError};
use std::time::Duration;

const GIB: u64 = 1 << 30;

/// A candidate with `cpu` millicores and `mem_gib` GiB free (and in total), amd64, docker.
pub fn candidate(id: &str, cpu: u64, mem_gib: u64) -> Candidate {
    let res = Resources {
        cpu_millis: cpu,
        memory_bytes: mem_gib * GIB,
        disk_bytes: 100 * GIB,
        gpus: 0,
    };
    Candidate {
        id: id.to_string(),
        labels: Labels::new(),
        location: None,
        architectures: vec![Arch::Amd64],
        runtimes: vec![RuntimeKind::new(RuntimeKind::DOCKER)],
        free: res,
        total: res,
        data_age: Duration::ZERO,
        jobs: Default::default(),
    }
}

/// A docker job needing `cpu` millicores and `mem_gib` GiB.
pub fn job(name: &str, cpu: u64, mem_gib: u64) -> JobSpec {
    JobSpec::minimal(
        name,
        "busybox",
        RuntimeKind::DOCKER,
        Resources {
            cpu_millis: cpu,
            memory_bytes: mem_gib * GIB,
            ..Resources::ZERO
        },
    )
}

fn set(tier: Tier, candidates: Vec<Candidate>) -> CandidateSet {
    let mut set = CandidateSet::for_tier(tier);
    set.extend(candidates);
    set
}

/// Runs every behaviour.
pub fn run_all(scheduler: &dyn Scheduler) {
    empty_set_is_unschedulable(scheduler);
    placement_fits_free_resources(scheduler);
    too_large_job_explains_itself(scheduler);
    pinned_worker_node_is_honoured(scheduler);
    pinned_cluster_is_honoured(scheduler);
    arch_and_runtime_are_honoured(scheduler);
    node_selector_is_honoured(scheduler);
    same_calls_give_same_placements(scheduler);
    group_is_all_or_nothing_and_keeps_anti_affinity(scheduler);
    group_keeps_affinity(scheduler);
}

/// No candidates: `Unschedulable`, saying so.
pub fn empty_set_is_unschedulable(s: &dyn Scheduler) {
    let result = s.place(&job("web", 100, 1), &CandidateSet::new());
    match result {
        Err(SchedulerError::Unschedulable(why)) => {
            assert_eq!(why.candidates, 0, "empty_set_is_unschedulable: count");
            assert!(
                !why.to_string().is_empty(),
                "empty_set_is_unschedulable: text"
            );
        }
        other => panic!("empty_set_is_unschedulable: got {other:?}"),
    }
}

/// The chosen candidate has room for the job; candidates without room are never chosen.
pub fn placement_fits_free_resources(s: &dyn Scheduler) {
    let candidates = set(
        Tier::Nodes,
        vec![
            candidate("a-small", 500, 1),
            candidate("b-big", 4000, 8),
            candidate("c-tiny", 100, 1),
        ],
    );
    let p = s
        .place(&job("web", 2000, 4), &candidates)
        .unwrap_or_else(|e| panic!("placement_fits_free_resources: {e}"));
    assert_eq!(p.candidate, "b-big", "placement_fits_free_resources");
}

/// A job nothing can hold is `Unschedulable`, with refusals naming the resource.
pub fn too_large_job_explains_itself(s: &dyn Scheduler) {
    let candidates = set(
        Tier::Nodes,
        vec![candidate("n1", 4000, 1), candidate("n2", 4000, 1)],
    );
    match s.place(&job("big", 1000, 2), &candidates) {
        Err(SchedulerError::Unschedulable(why)) => {
            assert_eq!(why.candidates, 2, "too_large_job_explains_itself: count");
            let refused: usize = why.refusals.iter().map(|r| r.count).sum();
            assert_eq!(refused, 2, "too_large_job_explains_itself: refusals {why}");
            assert!(
                why.to_string().contains("memory"),
                "too_large_job_explains_itself: text does not name memory: {why}"
            );
        }
        other => panic!("too_large_job_explains_itself: got {other:?}"),
    }
}

/// `worker_node` pins the job to that node at the cluster tier; a pin to a missing node fails.
pub fn pinned_worker_node_is_honoured(s: &dyn Scheduler) {
    let candidates = set(
        Tier::Nodes,
        vec![candidate("n1", 4000, 8), candidate("n2", 4000, 8)],
    );
    let mut pinned = job("web", 100, 1);
    pinned.worker_node = Some("n2".into());
    let p = s
        .place(&pinned, &candidates)
        .unwrap_or_else(|e| panic!("pinned_worker_node_is_honoured: {e}"));
    assert_eq!(p.candidate, "n2", "pinned_worker_node_is_honoured");
    pinned.worker_node = Some("n9".into());
    assert!(
        matches!(
            s.place(&pinned, &candidates),
            Err(SchedulerError::Unschedulable(_))
        ),
        "pinned_worker_node_is_honoured: pin to an absent node must be unschedulable"
    );
}

/// `cluster` pins the job to that cluster at the root tier; `worker_node` is the cluster's
/// business there and does not restrict the choice of cluster.
pub fn pinned_cluster_is_honoured(s: &dyn Scheduler) {
    let candidates = set(
        Tier::Clusters,
        vec![candidate("c1", 4000, 8), candidate("c2", 4000, 8)],
    );
    let mut pinned = job("web", 100, 1);
    pinned.cluster = Some("c2".into());
    pinned.worker_node = Some("some-node".into());
    let p = s
        .place(&pinned, &candidates)
        .unwrap_or_else(|e| panic!("pinned_cluster_is_honoured: {e}"));
    assert_eq!(p.candidate, "c2", "pinned_cluster_is_honoured");
}

/// Candidates of another architecture or without the job's runtime are never chosen.
pub fn arch_and_runtime_are_honoured(s: &dyn Scheduler) {
    let mut arm = candidate("a-arm", 4000, 8);
    arm.architectures = vec![Arch::Arm64];
    let mut no_docker = candidate("b-native", 4000, 8);
    no_docker.runtimes = vec![RuntimeKind::new(RuntimeKind::NATIVE)];
    let ok = candidate("c-ok", 4000, 8);
    let candidates = set(Tier::Nodes, vec![arm, no_docker, ok]);
    let mut j = job("web", 100, 1);
    j.arch = Some(Arch::Amd64);
    let p = s
        .place(&j, &candidates)
        .unwrap_or_else(|e| panic!("arch_and_runtime_are_honoured: {e}"));
    assert_eq!(p.candidate, "c-ok", "arch_and_runtime_are_honoured");
}

/// Only candidates carrying every `node_selector` label are chosen.
pub fn node_selector_is_honoured(s: &dyn Scheduler) {
    let plain = candidate("a-plain", 4000, 8);
    let mut labelled = candidate("b-camera", 4000, 8);
    labelled.labels.insert("camera".into(), "true".into());
    let candidates = set(Tier::Nodes, vec![plain, labelled]);
    let mut j = job("detect", 100, 1);
    j.node_selector.insert("camera".into(), "true".into());
    let p = s
        .place(&j, &candidates)
        .unwrap_or_else(|e| panic!("node_selector_is_honoured: {e}"));
    assert_eq!(p.candidate, "b-camera", "node_selector_is_honoured");
}

/// The same sequence of calls on the same set gives the same placements.
pub fn same_calls_give_same_placements(s: &dyn Scheduler) {
    let candidates = set(
        Tier::Nodes,
        (0..8)
            .map(|i| candidate(&format!("n{i}"), 4000, 8))
            .collect(),
    );
    let jobs: Vec<JobSpec> = (0..4).map(|i| job(&format!("j{i}"), 100, 1)).collect();
    let first: Vec<_> = jobs.iter().map(|j| s.place(j, &candidates)).collect();
    let second: Vec<_> = jobs.iter().map(|j| s.place(j, &candidates)).collect();
    assert!(
        first.iter().all(Result::is_ok),
        "same_calls_give_same_placements: {first:?}"
    );
    // stateful policies (round-robin) may differ between the two rounds, but each round must
    // choose only valid candidates; stateless ones must repeat themselves exactly
    for p in first.iter().chain(second.iter()).flatten() {
        assert!(candidates.get(&p.candidate).is_some());
    }
}

/// `place_group` places coupled jobs all or nothing and keeps anti-affine jobs apart.
pub fn group_is_all_or_nothing_and_keeps_anti_affinity(s: &dyn Scheduler) {
    const B: &str = "group_is_all_or_nothing_and_keeps_anti_affinity";
    let mut a = job("a", 100, 1);
    let b = job("b", 100, 1);
    a.anti_affinity = vec!["b".into()];
    let one = set(Tier::Nodes, vec![candidate("n1", 4000, 8)]);
    assert!(
        matches!(
            s.place_group(&[a.clone(), b.clone()], &one),
            Err(SchedulerError::Unschedulable(_))
        ),
        "{B}: two anti-affine jobs on one node must be unschedulable"
    );
    let two = set(
        Tier::Nodes,
        vec![candidate("n1", 4000, 8), candidate("n2", 4000, 8)],
    );
    let placed = s
        .place_group(&[a, b], &two)
        .unwrap_or_else(|e| panic!("{B}: {e}"));
    assert_eq!(placed.len(), 2, "{B}: count");
    assert_ne!(placed[0].candidate, placed[1].candidate, "{B}: apart");
    // resources are reserved across the group: two jobs of 3 cores cannot share a 4-core node
    let big = set(
        Tier::Nodes,
        vec![candidate("n1", 4000, 8), candidate("n2", 4000, 8)],
    );
    let placed = s
        .place_group(&[job("x", 3000, 1), job("y", 3000, 1)], &big)
        .unwrap_or_else(|e| panic!("{B}: reservation: {e}"));
    assert_ne!(placed[0].candidate, placed[1].candidate, "{B}: reservation");
}

/// `place_group` puts affine jobs on the same candidate.
pub fn group_keeps_affinity(s: &dyn Scheduler) {
    let mut b = job("b", 100, 1);
    b.affinity = vec!["a".into()];
    let candidates = set(
        Tier::Nodes,
        vec![
            candidate("n1", 4000, 8),
            candidate("n2", 4000, 8),
            candidate("n3", 4000, 8),
        ],
    );
    let placed = s
        .place_group(&[job("a", 100, 1), b], &candidates)
        .unwrap_or_else(|e| panic!("group_keeps_affinity: {e}"));
    assert_eq!(
        placed[0].candidate, placed[1].candidate,
        "group_keeps_affinity"
    );
}
