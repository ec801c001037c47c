//! The policies, each assembled from the [`FilterChain`](crate::filters::FilterChain) and,
//! where it ranks, [`scores`](crate::scores).

mod best_fit;
mod first_fit;
mod least_loaded;
mod location_aware;
mod spread;
mod weighted;

pub use best_fit::BestFit;
pub use first_fit::FirstFit;
pub use least_loaded::LeastLoaded;
pub use location_aware::{LocationAware, LocationFirst};
pub use spread::Spread;
pub use weighted::WeightedPolicy;

use crate::filters::FilterChain;
use edgeio_core::job::JobSpec;
use edgeio_core::model::{Candidate, CandidateSet};
use edgeio_core::scheduler::{Placement, SchedulerError};

/// The feasible candidate with the highest `score`; ties go to the lower id (iteration order).
pub(crate) fn best_by(
    chain: &FilterChain,
    job: &JobSpec,
    set: &CandidateSet,
    mut score: impl FnMut(&Candidate) -> f64,
) -> Result<Placement, SchedulerError> {
    let mut best: Option<(&Candidate, f64)> = None;
    for c in chain.feasible(job, set) {
        let s = score(c);
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((c, s));
        }
    }
    match best {
        Some((c, s)) => Ok(Placement {
            candidate: c.id.clone(),
            // scores are 0..=1 per rule; a thousandth is plenty for `describe`
            score: Some((s * 1000.0).round() as i64),
        }),
        None => Err(chain.explain(job, set).into()),
    }
}
