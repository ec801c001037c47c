//! Property tests: placements never exceed free resources, every hard filter holds, the
//! index-backed first fit equals a plain scan, and equal inputs give equal outputs.

use edgeio_core::job::JobSpec;
use edgeio_core::model::{Arch, Candidate, CandidateSet, Resources, RuntimeKind, Tier};
use edgeio_core::scheduler::{Scheduler, SchedulerError};
use edgeio_scheduler::{FilterChain, PolicyKind, SchedulerConfig, Score, Weighted};
use proptest::prelude::*;
use std::time::Duration;

fn arb_candidate(i: usize) -> impl Strategy<Value = Candidate> {
    (
        0u64..8_000,
        0u64..16,
        prop::sample::select(vec![Arch::Amd64, Arch::Arm64]),
        prop::sample::select(vec!["docker", "native"]),
        prop::option::of(prop::sample::select(vec!["a", "b", "c"])),
        0u64..120,
    )
        .prop_map(move |(cpu, gib, arch, rt, zone, age)| {
            let total = Resources {
                cpu_millis: 8_000,
                memory_bytes: 16 << 30,
                disk_bytes: 100 << 30,
                gpus: 0,
            };
            let mut c = Candidate::new(format!("n{i:03}"), total);
            c.free.cpu_millis = cpu;
            c.free.memory_bytes = gib << 30;
            c.architectures = vec![arch];
            c.runtimes = vec![RuntimeKind::new(rt)];
            if let Some(z) = zone {
                c.labels.insert("zone".into(), z.into());
            }
            c.data_age = Duration::from_secs(age);
            c
        })
}

fn arb_set() -> impl Strategy<Value = CandidateSet> {
    (0usize..40)
        .prop_flat_map(|n| (0..n).map(arb_candidate).collect::<Vec<_>>())
        .prop_map(|cs| cs.into_iter().collect())
}

fn arb_job() -> impl Strategy<Value = JobSpec> {
    (
        1u64..4_000,
        0u64..8,
        prop::option::of(prop::sample::select(vec![Arch::Amd64, Arch::Arm64])),
        prop::sample::select(vec!["docker", "native"]),
        prop::option::of(prop::sample::select(vec!["a", "b"])),
        prop::option::of(0usize..45),
    )
        .prop_map(|(cpu, gib, arch, rt, zone, pin)| {
            let mut j = JobSpec::minimal(
                "job",
                "img",
                rt,
                Resources {
                    cpu_millis: cpu,
                    memory_bytes: gib << 30,
                    ..Resources::ZERO
                },
            );
            j.arch = arch;
            if let Some(z) = zone {
                j.node_selector.insert("zone".into(), z.into());
            }
            j.worker_node = pin.map(|p| format!("n{p:03}"));
            j
        })
}

fn policies() -> Vec<(String, std::sync::Arc<dyn Scheduler>)> {
    PolicyKind::NAMES
        .iter()
        .map(|name| {
            let mut config = SchedulerConfig::policy(name.parse().unwrap());
            config.filters = FilterChain::with_stale_after(Duration::from_secs(60));
            if config.policy == PolicyKind::Weighted {
                config.scores = vec![
                    Weighted {
                        score: Score::LeastAllocated,
                        weight: 1.0,
                    },
                    Weighted {
                        score: Score::Spread {
                            label: "zone".into(),
                        },
                        weight: 2.0,
                    },
                ];
            }
            (name.to_string(), config.build().unwrap())
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn placements_fit_and_honour_every_hard_filter(set in arb_set(), jobs in prop::collection::vec(arb_job(), 1..20)) {
        let chain = FilterChain::with_stale_after(Duration::from_secs(60));
        for (name, policy) in policies() {
            let mut set = set.clone();
            for job in &jobs {
                match policy.place(job, &set) {
                    Ok(p) => {
                        let c = set.get(&p.candidate).expect("placement names a candidate of the set");
                        prop_assert!(c.free.fits(&job.resources), "{name}: placed beyond free resources");
                        prop_assert!(chain.check(job, Tier::Nodes, c).is_none(), "{name}: a hard filter refuses {}", c.id);
                        set.reserve(&p.candidate, &job.resources);
                        set.add_job(&p.candidate, &job.name);
                    }
                    Err(SchedulerError::Unschedulable(why)) => {
                        // nothing feasible really existed
                        prop_assert!(set.iter().all(|c| chain.check(job, Tier::Nodes, c).is_some()), "{name}: refused a feasible job: {why}");
                        let refused: usize = why.refusals.iter().map(|r| r.count).sum();
                        prop_assert_eq!(refused, set.len(), "{}: every candidate is accounted for", name);
                    }
                    Err(other) => prop_assert!(false, "{name}: {other}"),
                }
            }
        }
    }

    #[test]
    fn indexed_first_fit_equals_a_plain_scan(set in arb_set(), job in arb_job()) {
        let chain = FilterChain::with_stale_after(Duration::from_secs(60));
        let scan = set.iter().find(|c| chain.check(&job, Tier::Nodes, c).is_none()).map(|c| c.id.clone());
        let indexed = chain.first_fit(&job, &set).map(|c| c.id.clone());
        prop_assert_eq!(scan, indexed);
    }

    #[test]
    fn equal_inputs_give_equal_outputs(set in arb_set(), jobs in prop::collection::vec(arb_job(), 1..20)) {
        let run = || {
            let mut set = set.clone();
            let mut out = Vec::new();
            for (_, policy) in policies() {
                for job in &jobs {
                    let p = policy.place(job, &set).map(|p| p.candidate);
                    if let Ok(id) = &p {
                        set.reserve(id, &job.resources);
                    }
                    out.push(p);
                }
            }
            out
        };
        prop_assert_eq!(run(), run());
    }
}
