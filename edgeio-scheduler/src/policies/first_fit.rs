use crate::filters::FilterChain;
use edgeio_core::job::JobSpec;
use edgeio_core::model::CandidateSet;
use edgeio_core::scheduler::{Placement, Scheduler, SchedulerError};

/// The thesis' default at both tiers: the first candidate, in id order, that passes every
/// filter. Served from the candidate set's index, so it does not scan.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstFit {
    /// The filters.
    pub filters: FilterChain,
}

impl Scheduler for FirstFit {
    fn name(&self) -> &str {
        "first-fit"
    }

    fn place(&self, job: &JobSpec, set: &CandidateSet) -> Result<Placement, SchedulerError> {
        match self.filters.first_fit(job, set) {
            Some(c) => Ok(Placement::on(&c.id)),
            None => Err(self.filters.explain(job, set).into()),
        }
    }
}
