//! What workers report (status and instance events) reconciled with what the cluster keeps: forward only, the newer placement wins.

use super::*;

impl ClusterState {
    /// Stops what `node` runs that this cluster no longer wants: an instance recorded as over
    /// (terminated while its node was away, or replaced), or of a job it no longer keeps.
    pub(super) fn stop_unwanted(&mut self, node: &str, status: &NodeStatus, fx: &mut Fx) {
        for report in &status.instances {
            if !matches!(
                report.state,
                InstanceState::Pending | InstanceState::Starting | InstanceState::Running
            ) || self.stopping.contains(&report.instance)
            {
                continue;
            }
            let wanted = self.jobs.get(report.job.as_str()).is_some_and(|job| {
                job.instances.iter().any(|i| {
                    i.id == report.instance && i.node.as_deref() == Some(node) && !i.is_over()
                })
            });
            if wanted {
                continue;
            }
            info!(node, instance = %report.instance, job = %report.job, "stopping an instance this cluster no longer keeps");
            self.stopping.insert(report.instance.clone());
            fx.commands.push(stop_instance(
                &self.cx,
                &self.config.id,
                node,
                &report.job,
                &report.instance,
                self.config.grace.as_millis() as u64,
                Tag::Stop {
                    instance: report.instance.clone(),
                },
            ));
        }
    }

    /// Takes the node's report as the truth about its instances: a state whose event was
    /// lost is recorded and told up; an instance marked LOST with its node that the node,
    /// back again, reports alive (it adopted it after a restart, or the link only blinked) is
    /// alive again, unless it was replaced meanwhile (then it is stopped: the newer wins).
    pub(super) fn reconcile_reports(&mut self, node: &str, status: &NodeStatus, fx: &mut Fx) {
        let now = self.cx.now_ms();
        for report in &status.instances {
            let Some(job) = self.jobs.get_mut(report.job.as_str()) else {
                continue;
            };
            let Some(instance) = job.instance_mut(&report.instance) else {
                continue;
            };
            if instance.node.as_deref() != Some(node)
                || report.state == InstanceState::Lost
                || report.state == instance.lifecycle.state()
                || instance.is_over()
            {
                continue;
            }
            let was_lost = instance.lifecycle.state() == InstanceState::Lost;
            // an event lost on the way (the broker restarted) is told again by the status; only
            // forward, since a status may be older than the last event
            if !was_lost && progress(report.state) <= progress(instance.lifecycle.state()) {
                continue;
            }
            if was_lost {
                let others = job
                    .instances
                    .iter()
                    .filter(|i| {
                        i.id != report.instance
                            && !i.is_over()
                            && !matches!(
                                i.lifecycle.state(),
                                InstanceState::Lost | InstanceState::Terminating
                            )
                    })
                    .count();
                if others >= job.spec.replicas as usize {
                    // replaced while its node was away: the newer placement wins
                    let reason =
                        format!("node {node} is back with it, but it was replaced meanwhile");
                    let Some(instance) = job.instance_mut(&report.instance) else {
                        continue;
                    };
                    let stopping =
                        instance
                            .lifecycle
                            .reconcile(InstanceState::Terminating, now, &reason);
                    let instead = "no terminate is sent; the instance keeps its state";
                    if self
                        .refusals
                        .check(
                            stopping,
                            report.job.as_str(),
                            Some(&report.instance),
                            instead,
                        )
                        .is_some()
                    {
                        fx.persist.push(Self::job_key(report.job.as_str()));
                        fx.send_up.push(instance_event(
                            &self.cx,
                            &self.config.id,
                            &report.job,
                            &report.instance,
                            node,
                            InstanceState::Terminating,
                            reason,
                        ));
                        fx.commands.push(stop_instance(
                            &self.cx,
                            &self.config.id,
                            node,
                            &report.job,
                            &report.instance,
                            self.config.grace.as_millis() as u64,
                            Tag::Terminate,
                        ));
                    }
                    continue;
                }
            }
            let reason = if was_lost {
                format!("node {node} is back and reports it {}", report.state)
            } else {
                format!("node {node} reports it {}", report.state)
            };
            let Some(instance) = job.instance_mut(&report.instance) else {
                continue;
            };
            let moved = instance.lifecycle.reconcile(report.state, now, &reason);
            let instead = "the report is not recorded; the instance keeps its state";
            if self
                .refusals
                .check(moved, report.job.as_str(), Some(&report.instance), instead)
                .is_some()
            {
                job.settle(now, &mut self.refusals);
                fx.persist.push(Self::job_key(report.job.as_str()));
                fx.send_up.push(instance_event(
                    &self.cx,
                    &self.config.id,
                    &report.job,
                    &report.instance,
                    node,
                    report.state,
                    reason,
                ));
            }
        }
    }

    pub(super) fn on_instance_event(&mut self, node: &str, event: InstanceEvent, fx: &mut Fx) {
        self.node_heard(node, fx);
        let Some(job) = self.jobs.get_mut(event.job.as_str()) else {
            debug!(node, job = %event.job, "event for a job this cluster does not know");
            return;
        };
        let job_id = job.id.to_string();
        let mut failed = false;
        if let Some(instance) = job.instance_mut(&event.instance) {
            let reason = if event.reason.is_empty() {
                format!("reported by {node}")
            } else {
                event.reason.clone()
            };
            let was = instance.lifecycle.state();
            let moved = instance
                .lifecycle
                .reconcile(event.state, self.cx.now_ms(), &reason);
            // a late or duplicate event: its exit code still counts, and it is relayed up
            let instead = "the instance keeps its state";
            if self
                .refusals
                .check(moved, &job_id, Some(&event.instance), instead)
                .is_some()
            {
                failed = was != InstanceState::Failed && event.state == InstanceState::Failed;
            }
            if event.exit_code.is_some() {
                instance.exit_code = event.exit_code;
            }
            fx.persist.push(Self::job_key(&job_id));
        }
        let migrating = self
            .jobs
            .get(&job_id)
            .and_then(|j| j.instances.iter().find(|i| i.id == event.instance))
            .is_some_and(|i| i.replaces.is_some());
        if failed {
            // the replacement's PENDING goes up before the failure, so the root never sees
            // the job with a failed instance and nothing to take its place
            self.relocate_failed(&job_id, &event.instance, node, &event.reason, fx);
        }
        let arrived = migrating && event.state == InstanceState::Running;
        let new = event.instance.clone();
        let mut up = event;
        up.node = node.to_string();
        fx.send_up.push(self.up(Message::InstanceEvent(up)));
        // the root hears that the new instance runs before it hears the old one stop
        if arrived {
            self.finish_migration(&job_id, &new, fx);
        }
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.settle(self.cx.now_ms(), &mut self.refusals);
        }
    }
}
