use super::best_by;
use crate::filters::FilterChain;
use crate::scores::{ScoreContext, Weighted};
use edgeio_core::job::JobSpec;
use edgeio_core::model::CandidateSet;
use edgeio_core::scheduler::{Placement, Scheduler, SchedulerError};

/// Any weighted sum of scores over the filter chain, built from configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WeightedPolicy {
    /// The filters.
    pub filters: FilterChain,
    /// The scores and their weights.
    pub scores: Vec<Weighted>,
}

impl Scheduler for WeightedPolicy {
    fn name(&self) -> &str {
        "weighted"
    }

    fn place(&self, job: &JobSpec, set: &CandidateSet) -> Result<Placement, SchedulerError> {
        let ctx = ScoreContext::new(job, set, self.scores.iter().map(|w| &w.score));
        best_by(&self.filters, job, set, |c| {
            self.scores
                .iter()
                .map(|w| w.weight * w.score.score(job, c, &ctx))
                .sum()
        })
    }
}
