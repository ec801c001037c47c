//! # edgeio-scheduler
//!
//! Scheduling policies for edgeio. One [`Scheduler`](edgeio_core::scheduler::Scheduler) trait
//! serves both tiers: candidates are nodes at the cluster tier and cluster aggregates at the
//! root tier. Policies are assembled from [`filters`], which also explain refusals.
//!
//! Status: [`FirstFit`] (the thesis' default at both tiers) is here. The filter/score
//! framework with weights and the other policies (best-fit, least-loaded round-robin,
//! location-aware, spread) belong to the scheduler issue and are not built yet.
//!
//! ```
//! use edgeio_core::scheduler::Scheduler;
//! use edgeio_core::testing::conformance::scheduler::{candidate, job};
//! use edgeio_scheduler::FirstFit;
//!
//! let set = [candidate("n1", 500, 1), candidate("n2", 4000, 8)].into_iter().collect();
//! let placement = FirstFit::default().place(&job("web", 1000, 2), &set).unwrap();
//! assert_eq!(placement.candidate, "n2");
//! ```

pub mod filters;

use edgeio_core::job::JobSpec;
use edgeio_core::model::CandidateSet;
use edgeio_core::scheduler::{Placement, Scheduler, SchedulerError};
use filters::{Explanation, DEFAULT_FILTERS};

/// The thesis' policy: the first candidate, in id order, that passes every filter.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstFit;

impl Scheduler for FirstFit {
    fn name(&self) -> &str {
        "first-fit"
    }

    fn place(&self, job: &JobSpec, candidates: &CandidateSet) -> Result<Placement, SchedulerError> {
        let tier = candidates.tier();
        let mut why = Explanation::default();
        for c in candidates.iter() {
            match DEFAULT_FILTERS.iter().find_map(|f| f(job, tier, c)) {
                None => return Ok(Placement::on(&c.id)),
                Some(refused) => why.add(refused),
            }
        }
        Err(why.finish(candidates.len()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeio_core::model::Arch;
    use edgeio_core::testing::conformance::scheduler::{candidate, job};

    #[test]
    fn refusals_are_grouped_and_show_the_best_free_amount() {
        let mut arm = candidate("a", 4000, 8);
        arm.architectures = vec![Arch::Arm64];
        let mut arm2 = candidate("b", 4000, 8);
        arm2.architectures = vec![Arch::Arm64];
        let mut small = candidate("c", 4000, 1);
        small.free.memory_bytes = 1536 << 20;
        let set = [arm, arm2, small, candidate("d", 4000, 1)]
            .into_iter()
            .collect();
        let mut j = job("web", 100, 2);
        j.arch = Some(Arch::Amd64);
        let err = FirstFit.place(&j, &set).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unschedulable: 2 candidates: arch arm64, need amd64; \
             2 candidates: insufficient memory (need 2 GiB, best free 1.5 GiB)"
        );
    }
}
