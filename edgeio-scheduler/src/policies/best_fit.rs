use super::best_by;
use crate::filters::FilterChain;
use crate::scores::{Score, ScoreContext};
use edgeio_core::job::JobSpec;
use edgeio_core::model::CandidateSet;
use edgeio_core::scheduler::{Placement, Scheduler, SchedulerError};

/// Best CPU-memory fit (the thesis' alternative): the feasible candidate with the least CPU
/// and memory share left after placement, so large holes stay free for large jobs.
#[derive(Debug, Clone, Copy, Default)]
pub struct BestFit {
    /// The filters.
    pub filters: FilterChain,
}

impl Scheduler for BestFit {
    fn name(&self) -> &str {
        "best-fit"
    }

    fn place(&self, job: &JobSpec, set: &CandidateSet) -> Result<Placement, SchedulerError> {
        let ctx = ScoreContext::default();
        best_by(&self.filters, job, set, |c| {
            Score::MostAllocated.score(job, c, &ctx)
        })
    }
}
