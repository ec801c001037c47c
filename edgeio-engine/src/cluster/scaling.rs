//! Scaling a job on this cluster: the missing replicas placed all or none, or the newest terminated.

use super::*;
use edgeio_core::job::JobSpec;

impl ClusterState {
    /// `scale`: places the replicas missing (all or none: a nack with the scheduler's reasons
    /// when not all fit), or terminates the newest ones beyond the count.
    pub(super) fn on_scale(&mut self, command: &Envelope, scale: &Scale, fx: &mut Fx) -> Envelope {
        let job = match scalable(self.jobs.get(scale.job.as_str()), scale) {
            Ok(job) => job,
            Err(e) => return command.nack_in(&self.cx, &self.config.id, e),
        };
        let alive = counted_replicas(job);
        let wanted = scale.replicas as usize;
        let mut spec = job.spec.clone();
        spec.replicas = scale.replicas;
        let now = self.cx.now_ms();
        let why = format!(
            "scale from {} to {} replicas",
            job.spec.replicas, scale.replicas
        );
        if wanted > alive.len() {
            let missing = wanted - alive.len();
            let targets = match self.place_many(&spec, missing, &[]) {
                Ok(targets) => targets,
                Err(e) => {
                    let what = |fits| format!("cannot place {missing} more replicas ({fits} fit)");
                    return self.placement_refused(command, e, what);
                }
            };
            self.scale_up(&scale.job, spec, targets, &why, now, fx);
        } else {
            let extra = alive.into_iter().skip(wanted).collect();
            self.scale_down(&scale.job, spec, extra, &why, now, fx);
        }
        if let Some(job) = self.jobs.get_mut(scale.job.as_str()) {
            job.settle(now, &mut self.refusals);
        }
        fx.persist.push(Self::job_key(scale.job.as_str()));
        command.ack_in(&self.cx, &self.config.id)
    }

    /// Scales `job` up to `spec`'s count: an instance starts on each of `targets`.
    fn scale_up(
        &mut self,
        job: &JobId,
        spec: JobSpec,
        targets: Vec<String>,
        why: &str,
        now: u64,
        fx: &mut Fx,
    ) {
        let policy = self.scheduler.name().to_string();
        let record = self.jobs.get_mut(job.as_str()).expect("looked up above");
        let instead = "the replicas are placed all the same; the job settles when they run";
        start_scaling(record, spec, why, now, &mut self.refusals, instead);
        for node in targets {
            let reason = format!("{why}: placed on {node} by {policy}");
            self.start_on(job.as_str(), &node, reason, fx);
        }
    }

    /// Scales `job` down to `spec`'s count: its replicas beyond it (`extra`) stop, and the
    /// root hears of each; a node that is READY is told to stop its own.
    fn scale_down(
        &mut self,
        job: &JobId,
        spec: JobSpec,
        extra: Vec<(InstanceId, Option<String>)>,
        why: &str,
        now: u64,
        fx: &mut Fx,
    ) {
        let ready: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.lifecycle.state() == NodeState::Ready)
            .map(|n| n.id.clone())
            .collect();
        let grace = self.config.grace.as_millis() as u64;
        let cluster = &self.config.id;
        let record = self.jobs.get_mut(job.as_str()).expect("looked up above");
        let instead = "the newest replicas stop all the same; the job settles when they have";
        start_scaling(record, spec, why, now, &mut self.refusals, instead);
        let reason = format!("{why}: the newest go first");
        let stopped = stop_newest(record, extra, &ready, &reason, now, &mut self.refusals);
        for (id, node, to) in stopped {
            fx.send_up.push(instance_event(
                &self.cx,
                cluster,
                job,
                &id,
                &node,
                to,
                reason.clone(),
            ));
            if to == InstanceState::Terminating {
                let stop = stop_instance(&self.cx, cluster, &node, job, &id, grace, Tag::Terminate);
                fx.commands.push(stop);
            }
        }
    }
}

/// `job`, when it can be scaled (on this cluster, live, not terminating): else the refusal.
fn scalable<'j>(job: Option<&'j ClusterJob>, scale: &Scale) -> Result<&'j ClusterJob, ErrorBody> {
    let Some(job) = job else {
        return Err(ErrorBody {
            code: "not_found".into(),
            message: format!("job {} is not on this cluster", scale.job),
        });
    };
    if !job.is_live() || job.lifecycle.state() == JobState::Terminating {
        return Err(ErrorBody {
            code: "conflict".into(),
            message: format!("job {} is {}", scale.job, job.lifecycle.state()),
        });
    }
    Ok(job)
}

/// The replicas of `job` that count toward its replicas (live, not being stopped), oldest
/// first, each with its node.
fn counted_replicas(job: &ClusterJob) -> Vec<(InstanceId, Option<String>)> {
    job.instances
        .iter()
        .filter(|i| !i.is_over() && i.lifecycle.state() != InstanceState::Terminating)
        .map(|i| (i.id.clone(), i.node.clone()))
        .collect()
}

/// `job` takes `spec` (its new count) and is SCALING; a refused change is noted with
/// `instead`, what happens all the same.
fn start_scaling(
    job: &mut ClusterJob,
    spec: JobSpec,
    why: &str,
    now: u64,
    refusals: &mut Refusals,
    instead: &str,
) {
    job.spec = spec;
    if let Err(e) = job.lifecycle.reconcile(JobState::Scaling, now, why) {
        refusals.note(job.id.as_str(), None, &e, instead);
    }
}

/// Stops `extra`, the replicas of `job` beyond its count (oldest first), newest first: one
/// on a READY node (`ready`) is TERMINATING until its node has stopped it, one elsewhere
/// TERMINATED (nothing reachable runs it). Returns each with its node and the state it went
/// to, in that order.
fn stop_newest(
    job: &mut ClusterJob,
    extra: Vec<(InstanceId, Option<String>)>,
    ready: &[String],
    reason: &str,
    now: u64,
    refusals: &mut Refusals,
) -> Vec<(InstanceId, String, InstanceState)> {
    let mut stopped = Vec::with_capacity(extra.len());
    // the newest go first: the oldest have run longest and proved themselves
    for (id, node) in extra.into_iter().rev() {
        let node = node.unwrap_or_default();
        let to = if ready.contains(&node) {
            InstanceState::Terminating
        } else {
            InstanceState::Terminated
        };
        if let Some(i) = job.instance_mut(&id) {
            if let Err(e) = i.lifecycle.reconcile(to, now, reason) {
                refusals.note(
                    job.id.as_str(),
                    Some(&id),
                    &e,
                    "the instance keeps its state; its node reports what it runs",
                );
            }
        }
        stopped.push((id, node, to));
    }
    stopped
}
