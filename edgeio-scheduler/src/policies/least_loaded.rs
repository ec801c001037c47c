use crate::filters::FilterChain;
use edgeio_core::job::JobSpec;
use edgeio_core::model::{Candidate, CandidateSet};
use edgeio_core::scheduler::{Placement, Scheduler, SchedulerError};
use std::sync::Mutex;

/// The least loaded candidate (CPU share + memory share in use), round-robin among equals —
/// the seed system "relocatable composition". Walks the candidate set's load index from the
/// bottom, so it does not scan when the least loaded candidates fit.
///
/// The round-robin cursor (the id chosen last) is explicit state of the policy, so the same
/// sequence of calls on the same set gives the same placements.
#[derive(Debug, Default)]
pub struct LeastLoaded {
    /// The filters.
    pub filters: FilterChain,
    cursor: Mutex<Option<String>>,
}

impl LeastLoaded {
    /// The policy with a filter chain.
    pub fn new(filters: FilterChain) -> Self {
        LeastLoaded {
            filters,
            cursor: Mutex::new(None),
        }
    }
}

impl Scheduler for LeastLoaded {
    fn name(&self) -> &str {
        "least-loaded"
    }

    fn place(&self, job: &JobSpec, set: &CandidateSet) -> Result<Placement, SchedulerError> {
        let tier = set.tier();
        let fits = |c: &Candidate| self.filters.check(job, tier, c).is_none();
        let need = self.filters.need(job);
        let Some(least) = set.least_loaded(&need, fits) else {
            return Err(self.filters.explain(job, set).into());
        };
        // a poisoned cursor only loses the rotation position
        let mut cursor = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        let chosen = cursor
            .as_deref()
            .and_then(|after| set.next_with_load(&need, least.load(), after, fits))
            .unwrap_or(least);
        *cursor = Some(chosen.id.clone());
        Ok(Placement::on(&chosen.id))
    }
}
