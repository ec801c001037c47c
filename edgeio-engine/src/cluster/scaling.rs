//! Scaling a job on this cluster: the missing replicas placed all or none, or the newest terminated.

use super::*;

impl ClusterState {
    /// `scale`: places the replicas missing (all or none: a nack with the scheduler's reasons
    /// when not all fit), or terminates the newest ones beyond the count.
    pub(super) fn on_scale(&mut self, command: &Envelope, scale: &Scale, fx: &mut Fx) -> Envelope {
        let Some(job) = self.jobs.get(scale.job.as_str()) else {
            return self.refuse(
                command,
                "not_found",
                format!("job {} is not on this cluster", scale.job),
            );
        };
        if !job.is_live() || job.lifecycle.state() == JobState::Terminating {
            return self.refuse(
                command,
                "conflict",
                format!("job {} is {}", scale.job, job.lifecycle.state()),
            );
        }
        let alive: Vec<(InstanceId, Option<String>)> = job
            .instances
            .iter()
            .filter(|i| !i.is_over() && i.lifecycle.state() != InstanceState::Terminating)
            .map(|i| (i.id.clone(), i.node.clone()))
            .collect();
        let wanted = scale.replicas as usize;
        let mut spec = job.spec.clone();
        spec.replicas = scale.replicas;
        let now = self.cx.now_ms();
        let why = format!(
            "scale from {} to {} replicas",
            job.spec.replicas, scale.replicas
        );
        if wanted > alive.len() {
            let targets = match self.place_many(&spec, wanted - alive.len(), &[]) {
                Ok(targets) => targets,
                Err(SchedulerError::Unschedulable(u)) => {
                    let what = format!(
                        "cannot place {} more replicas ({} fit)",
                        wanted - alive.len(),
                        u.fits
                    );
                    return self.unschedulable(command, &what, u);
                }
                Err(e) => return self.refuse(command, "invalid", e.to_string()),
            };
            let policy = self.scheduler.name().to_string();
            let cluster = self.config.id.clone();
            let Some(job) = self.jobs.get_mut(scale.job.as_str()) else {
                return command.ack_in(&self.cx, &cluster);
            };
            job.spec = spec;
            if let Err(e) = job.lifecycle.reconcile(JobState::Scaling, now, &why) {
                self.refusals.note(
                    scale.job.as_str(),
                    None,
                    &e,
                    "the replicas are placed all the same; the job settles when they run",
                );
            }
            for node in targets {
                let reason = format!("{why}: placed on {node} by {policy}");
                self.start_on(scale.job.as_str(), &node, reason, fx);
            }
        } else {
            let ready: Vec<String> = self
                .nodes
                .values()
                .filter(|n| n.lifecycle.state() == NodeState::Ready)
                .map(|n| n.id.clone())
                .collect();
            let grace = self.config.grace.as_millis() as u64;
            let cluster = self.config.id.clone();
            let Some(job) = self.jobs.get_mut(scale.job.as_str()) else {
                return command.ack_in(&self.cx, &cluster);
            };
            job.spec = spec;
            if let Err(e) = job.lifecycle.reconcile(JobState::Scaling, now, &why) {
                self.refusals.note(
                    scale.job.as_str(),
                    None,
                    &e,
                    "the newest replicas stop all the same; the job settles when they have",
                );
            }
            // the newest go first: the oldest have run longest and proved themselves
            for (id, node) in alive
                .into_iter()
                .skip(wanted)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                let node = node.unwrap_or_default();
                let reason = format!("{why}: the newest go first");
                let reachable = ready.contains(&node);
                let to = if reachable {
                    InstanceState::Terminating
                } else {
                    InstanceState::Terminated
                };
                if let Some(i) = job.instance_mut(&id) {
                    if let Err(e) = i.lifecycle.reconcile(to, now, &reason) {
                        self.refusals.note(
                            scale.job.as_str(),
                            Some(&id),
                            &e,
                            "the instance keeps its state; its node reports what it runs",
                        );
                    }
                }
                fx.send_up.push(instance_event(
                    &self.cx, &cluster, &job.id, &id, &node, to, reason,
                ));
                if reachable {
                    let stop = stop_instance(
                        &self.cx,
                        &cluster,
                        &node,
                        &job.id,
                        &id,
                        grace,
                        Tag::Terminate,
                    );
                    fx.commands.push(stop);
                }
            }
        }
        if let Some(job) = self.jobs.get_mut(scale.job.as_str()) {
            job.settle(now, &mut self.refusals);
        }
        fx.persist.push(Self::job_key(scale.job.as_str()));
        command.ack_in(&self.cx, &self.config.id)
    }
}
