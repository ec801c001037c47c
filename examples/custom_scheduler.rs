//! An integrator's own scheduling policy in a few lines: prefer nodes labelled `gpu=true`,
//! then the least loaded; every hard filter (resources, arch, runtime, selectors, pins) and
//! the explanation of refusals come from edgeio's `FilterChain`.
//!
//! Run it with `cargo run --example custom_scheduler`; its tests (including edgeio's
//! scheduler conformance suite) run with `cargo test --example custom_scheduler`.

use edgeio::job::JobSpec;
use edgeio::model::{Candidate, CandidateSet, Resources};
use edgeio::scheduler::{Placement, Scheduler, SchedulerError};
use edgeio::schedulers::FilterChain;

/// GPU nodes first, then the least loaded; ties in id order.
#[derive(Default)]
struct GpuFirst {
    filters: FilterChain,
}

impl Scheduler for GpuFirst {
    fn name(&self) -> &str {
        "gpu-first"
    }

    fn place(&self, job: &JobSpec, set: &CandidateSet) -> Result<Placement, SchedulerError> {
        let no_gpu = |c: &Candidate| c.labels.get("gpu").map(String::as_str) != Some("true");
        self.filters
            .feasible(job, set)
            .min_by_key(|c| (no_gpu(c), c.load()))
            .map(|c| Placement::on(&c.id))
            .ok_or_else(|| self.filters.explain(job, set).into())
    }
}

fn node(id: &str, gpu: bool) -> Candidate {
    let mut c = Candidate::new(
        id,
        Resources {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            ..Resources::ZERO
        },
    );
    c.runtimes = vec!["docker".into()];
    if gpu {
        c.labels.insert("gpu".into(), "true".into());
    }
    c
}

fn main() {
    let mut set: CandidateSet = [node("n1", false), node("n2", true), node("n3", false)]
        .into_iter()
        .collect();
    let need = Resources {
        cpu_millis: 1500,
        memory_bytes: 1 << 30,
        ..Resources::ZERO
    };
    for i in 0..5 {
        let job = JobSpec::minimal(format!("job-{i}"), "busybox", "docker", need);
        let placement = GpuFirst::default().place(&job, &set);
        if let Ok(p) = &placement {
            set.reserve(&p.candidate, &job.resources); // as the cluster engine does
        }
        println!("{} -> {:?}", job.name, placement.map(|p| p.candidate));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_nodes_come_first_then_the_least_loaded() {
        let mut set: CandidateSet = [node("n1", false), node("n2", true), node("n3", false)]
            .into_iter()
            .collect();
        let job = JobSpec::minimal(
            "j",
            "busybox",
            "docker",
            Resources {
                cpu_millis: 3000,
                ..Resources::ZERO
            },
        );
        let s = GpuFirst::default();
        assert_eq!(s.place(&job, &set).unwrap().candidate, "n2");
        set.reserve("n2", &job.resources);
        set.reserve(
            "n1",
            &Resources {
                cpu_millis: 100,
                ..Resources::ZERO
            },
        );
        assert_eq!(s.place(&job, &set).unwrap().candidate, "n3");
    }

    #[test]
    fn it_keeps_the_scheduler_contract() {
        edgeio_core::testing::conformance::scheduler::run_all(&GpuFirst::default());
    }
}
