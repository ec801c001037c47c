use super::best_by;
use crate::filters::FilterChain;
use crate::scores::{Score, ScoreContext};
use edgeio_core::job::JobSpec;
use edgeio_core::model::CandidateSet;
use edgeio_core::scheduler::{Placement, Scheduler, SchedulerError};

/// Spreads a job's instances over the values of a label (e.g. `zone`): the feasible candidate
/// whose label value hosts the fewest instances of the job wins, then the least allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spread {
    /// The filters.
    pub filters: FilterChain,
    /// The label to spread over.
    pub label: String,
}

impl Default for Spread {
    fn default() -> Self {
        Spread {
            filters: FilterChain::default(),
            label: "zone".into(),
        }
    }
}

impl Scheduler for Spread {
    fn name(&self) -> &str {
        "spread"
    }

    fn place(&self, job: &JobSpec, set: &CandidateSet) -> Result<Placement, SchedulerError> {
        let spread = Score::Spread {
            label: self.label.clone(),
        };
        let ctx = ScoreContext::new(job, set, [&spread]);
        // spread dominates; least-allocated (0..=1) only breaks ties between equal spreads
        best_by(&self.filters, job, set, |c| {
            10.0 * spread.score(job, c, &ctx) + Score::LeastAllocated.score(job, c, &ctx)
        })
    }
}
