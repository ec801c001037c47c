//! Terminating a job on every cluster holding it.

use super::*;

impl RootState {
    pub(super) fn on_terminate_outcome(
        &mut self,
        job: &JobId,
        outcome: Result<CommandOutcome, TransportError>,
        fx: &mut Fx,
    ) {
        let Some(record) = self.jobs.get_mut(job.as_str()) else {
            return;
        };
        if let Ok(CommandOutcome::Nacked(e)) = &outcome {
            warn!(job = %job, error = %e.message, "a cluster refused to terminate a job");
        }
        if record.lifecycle.state() == JobState::Terminating
            && record.instances.iter().all(InstanceRecord::is_over)
        {
            if let Err(e) = record.lifecycle.reconcile(
                JobState::Terminated,
                self.cx.now_ms(),
                "the cluster ran nothing of it",
            ) {
                self.refusals
                    .note(job.as_str(), None, &e, "the job stays TERMINATING");
            }
            fx.persist.push(job_key(job.as_str()));
        }
    }

    pub(crate) fn terminate(&mut self, id: &str, fx: &mut Fx) -> Result<JobView, ApiError> {
        let job = self.jobs.get_mut(id).ok_or_else(|| ApiError::NotFound {
            kind: "job",
            id: id.to_string(),
        })?;
        let state = job.lifecycle.state();
        if state.is_final() || state == JobState::Terminating {
            return Ok(job.view());
        }
        let now = self.cx.now_ms();
        if let Err(e) = job
            .lifecycle
            .reconcile(JobState::Terminating, now, "terminate requested")
        {
            self.refusals.note(id, None, &e, "the job keeps its state");
        }
        let mut clusters = job.clusters();
        // a move across clusters not finished yet: the cluster it leaves still runs it
        clusters.extend(job.migration.as_ref().and_then(|m| m.from_cluster.clone()));
        let placed = Some(clusters)
            .filter(|c| !c.is_empty())
            .filter(|_| !matches!(state, JobState::Requested | JobState::NotDeployable));
        match placed {
            Some(clusters)
                if !job.instances.iter().all(InstanceRecord::is_over)
                    || job.instances.is_empty() =>
            {
                // TERMINATED follows from the instances' events, or from the cluster's ack
                // when it had placed nothing
                for cluster in clusters {
                    fx.commands
                        .push(terminate_command(&self.cx, &self.config, &cluster, &job.id));
                }
            }
            _ => {
                if let Err(e) =
                    job.lifecycle
                        .reconcile(JobState::Terminated, now, "nothing was running")
                {
                    self.refusals
                        .note(id, None, &e, "the job stays TERMINATING");
                }
            }
        }
        fx.persist.push(job_key(id));
        Ok(job.view())
    }
}
