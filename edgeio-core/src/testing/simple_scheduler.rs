//! A plain first-fit [`Scheduler`] for engine tests, so core's tests need no policy crate.

use crate::job::JobSpec;
use crate::model::{CandidateSet, Need, Tier};
use crate::scheduler::{Placement, Scheduler, SchedulerError, Unschedulable};

/// First candidate in id order with room, the job's runtime and arch, and the pinned id when
/// the job pins one at the set's tier. Explains a failure with one refusal line.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimpleScheduler;

impl Scheduler for SimpleScheduler {
    fn name(&self) -> &str {
        "simple-first-fit"
    }

    fn place(&self, job: &JobSpec, set: &CandidateSet) -> Result<Placement, SchedulerError> {
        let pin = match set.tier() {
            Tier::Nodes => job.worker_node.as_deref(),
            Tier::Clusters => job.cluster.as_deref(),
        };
        let need = Need {
            resources: job.resources,
            arch: job.arch.as_ref(),
            runtime: Some(&job.runtime),
            max_age: None,
        };
        let found = set.first_fit(&need, |c| {
            c.free.fits(&job.resources)
                && c.runtimes.contains(&job.runtime)
                && job
                    .arch
                    .as_ref()
                    .is_none_or(|a| c.architectures.contains(a))
                && pin.is_none_or(|p| p == c.id)
        });
        match found {
            Some(c) => Ok(Placement::on(c.id.clone())),
            None => Err(SchedulerError::Unschedulable(
                Unschedulable::new(set.len()).in_tier(set.tier()).refused(
                    "first-fit",
                    set.len(),
                    format!(
                        "no room for {} cpu millis and {} bytes with runtime {}",
                        job.resources.cpu_millis, job.resources.memory_bytes, job.runtime
                    ),
                ),
            )),
        }
    }
}
