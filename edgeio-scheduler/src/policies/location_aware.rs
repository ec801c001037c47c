use crate::filters::FilterChain;
use crate::scores::distance;
use edgeio_core::job::JobSpec;
use edgeio_core::model::CandidateSet;
use edgeio_core::scheduler::{Placement, Scheduler, SchedulerError};

/// The thesis' root rule: a job with `cluster_location` goes to the nearest fitting candidate
/// — a name match first, else the shortest great-circle distance when coordinates are known —
/// and first-fit otherwise (no location asked, or none of the fitting candidates has one).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocationAware {
    /// The filters.
    pub filters: FilterChain,
}

impl Scheduler for LocationAware {
    fn name(&self) -> &str {
        "location-aware"
    }

    fn place(&self, job: &JobSpec, set: &CandidateSet) -> Result<Placement, SchedulerError> {
        if job.cluster_location.is_some() {
            let mut best: Option<(&str, f64)> = None;
            for c in self.filters.feasible(job, set) {
                let near = distance(job, c);
                if near > 0.0 && best.is_none_or(|(_, b)| near > b) {
                    best = Some((&c.id, near));
                }
            }
            if let Some((id, _)) = best {
                return Ok(Placement::on(id));
            }
        }
        match self.filters.first_fit(job, set) {
            Some(c) => Ok(Placement::on(&c.id)),
            None => Err(self.filters.explain(job, set).into()),
        }
    }
}

/// The root's rule as the issue states it: [`LocationAware`] for a job that names a
/// `cluster_location`, the configured policy for every other job.
#[derive(Clone)]
pub struct LocationFirst {
    /// Places jobs that name a location.
    pub located: LocationAware,
    /// Places the others.
    pub otherwise: std::sync::Arc<dyn Scheduler>,
}

impl std::fmt::Debug for LocationFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocationFirst")
            .field("otherwise", &self.otherwise.name())
            .finish()
    }
}

impl Scheduler for LocationFirst {
    fn name(&self) -> &str {
        self.otherwise.name()
    }

    fn place(&self, job: &JobSpec, set: &CandidateSet) -> Result<Placement, SchedulerError> {
        if job.cluster_location.is_some() {
            self.located.place(job, set)
        } else {
            self.otherwise.place(job, set)
        }
    }
}
