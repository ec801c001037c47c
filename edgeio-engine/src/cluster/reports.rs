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
            // one being stopped since before this cluster started: its stop went with the
            // memory of the process that sent it
            let started = self.started_ms;
            let stop_lost = |i: &InstanceRecord| {
                i.lifecycle.state() == InstanceState::Terminating
                    && i.lifecycle
                        .history()
                        .last()
                        .is_some_and(|h| h.at_ms < started)
            };
            let wanted = self.jobs.get(report.job.as_str()).is_some_and(|job| {
                job.instances.iter().any(|i| {
                    i.id == report.instance
                        && i.node.as_deref() == Some(node)
                        && !i.is_over()
                        && !stop_lost(i)
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
            // an EXITED instance its node restarted (its restart policy asked) is alive again:
            // not over, and forward though RUNNING comes before EXITED in a run's progress
            let restarted = instance.lifecycle.state() == InstanceState::Exited
                && matches!(
                    report.state,
                    InstanceState::Restarting | InstanceState::Starting | InstanceState::Running
                );
            if instance.node.as_deref() != Some(node)
                || report.state == InstanceState::Lost
                || report.state == instance.lifecycle.state()
                || (instance.is_over() && !restarted)
            {
                continue;
            }
            let was_lost = instance.lifecycle.state() == InstanceState::Lost;
            // an event lost on the way (the broker restarted) is told again by the status; only
            // forward, since a status may be older than the last event
            if !was_lost
                && !restarted
                && progress(report.state) <= progress(instance.lifecycle.state())
            {
                continue;
            }
            if was_lost && self.stop_if_replaced(node, &report.job, &report.instance, fx) {
                continue;
            }
            let Some(job) = self.jobs.get_mut(report.job.as_str()) else {
                continue;
            };
            let reason = if was_lost {
                format!("node {node} is back and reports it {}", report.state)
            } else {
                format!("node {node} reports it {}", report.state)
            };
            let Some(instance) = job.instance_mut(&report.instance) else {
                continue;
            };
            let moved = instance.lifecycle.reconcile(report.state, now, &reason);
            // a move's new instance runs (its RUNNING event was lost): the move ends here
            // as on the event, or the old instance would run on and the job stay MIGRATING
            let arrived = report.state == InstanceState::Running && instance.replaces.is_some();
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
                if arrived {
                    self.finish_migration(report.job.as_str(), &report.instance, fx);
                    if let Some(job) = self.jobs.get_mut(report.job.as_str()) {
                        job.settle(now, &mut self.refusals);
                    }
                }
            }
        }
    }

    /// An instance recorded LOST that its node reports alive again was replaced meanwhile
    /// when enough others live: the newer placement wins, so it is stopped (TERMINATING, told
    /// up, a terminate sent to the node). True when it was stopped. The status and the event
    /// paths both ask, since either may be the first to bring it back (a deploy re-sent to a
    /// node after it was declared LOST starts the instance there anew).
    fn stop_if_replaced(
        &mut self,
        node: &str,
        job_id: &JobId,
        instance_id: &InstanceId,
        fx: &mut Fx,
    ) -> bool {
        let now = self.cx.now_ms();
        let Some(job) = self.jobs.get_mut(job_id.as_str()) else {
            return false;
        };
        let others = job
            .instances
            .iter()
            .filter(|i| &i.id != instance_id && i.counts_as_replica())
            .count();
        // a job that ended meanwhile (FAILED: the replacements failed too) wants no copy
        let ended = !job.is_live();
        if !ended && others < job.spec.replicas as usize {
            return false;
        }
        let Some(instance) = job.instance_mut(instance_id) else {
            return false;
        };
        let reason = if ended {
            format!("node {node} is back with it, but its job ended meanwhile")
        } else {
            format!("node {node} is back with it, but it was replaced meanwhile")
        };
        let stopping = instance
            .lifecycle
            .reconcile(InstanceState::Terminating, now, &reason);
        let instead = "no terminate is sent; the instance keeps its state";
        if self
            .refusals
            .check(stopping, job_id.as_str(), Some(instance_id), instead)
            .is_none()
        {
            return false;
        }
        fx.persist.push(Self::job_key(job_id.as_str()));
        fx.send_up.push(instance_event(
            &self.cx,
            &self.config.id,
            job_id,
            instance_id,
            node,
            InstanceState::Terminating,
            reason,
        ));
        fx.commands.push(stop_instance(
            &self.cx,
            &self.config.id,
            node,
            job_id,
            instance_id,
            self.config.grace.as_millis() as u64,
            Tag::Terminate,
        ));
        true
    }

    /// What the node's status leaves out. An instance it reported RUNNING (or STARTING, or
    /// RESTARTING) and that its statuses keep leaving out for three intervals is gone with the node's restart (whose
    /// will was lost with the broker, when the cluster was down too): it is LOST, told up,
    /// and replaced as a lost node's would be. The wait covers a worker that reports before
    /// it has adopted what survived its restart.
    /// An instance still PENDING a few status intervals after it was placed never reached
    /// the node (its deploy went with a restart of this cluster): the deploy is sent again.
    /// The node an instance of any job is recorded on.
    fn instance_node(&self, id: &InstanceId) -> Option<String> {
        self.jobs
            .values()
            .flat_map(|j| &j.instances)
            .find(|i| &i.id == id)
            .and_then(|i| i.node.clone())
    }

    pub(super) fn missing_from(&mut self, node: &str, status: &NodeStatus, fx: &mut Fx) {
        let now = self.cx.now_ms();
        let listed: BTreeSet<&InstanceId> = status.instances.iter().map(|r| &r.instance).collect();
        let patience = self.config.status_interval().as_millis() as u64 * 3;
        self.redeployed
            .retain(|_, at| now.saturating_sub(*at) < patience);
        let mut again = Vec::new();
        for job in self.jobs.values() {
            for instance in job.instances.iter().filter(|i| {
                i.node.as_deref() == Some(node)
                    && i.lifecycle.state() == InstanceState::Pending
                    && !listed.contains(&i.id)
                    && !self.redeployed.contains_key(&i.id)
                    && i.lifecycle
                        .history()
                        .last()
                        .is_some_and(|h| now.saturating_sub(h.at_ms) >= patience)
            }) {
                info!(job = %job.id, instance = %instance.id, node, "deploying again: the node never got it");
                again.push(instance.id.clone());
                fx.commands.push(deploy_instance(
                    &self.cx,
                    &self.config.id,
                    job,
                    &instance.id,
                    node,
                ));
            }
        }
        self.redeployed
            .extend(again.into_iter().map(|id| (id, now)));
        let left_out: Vec<InstanceId> = self
            .jobs
            .values()
            .flat_map(|j| &j.instances)
            .filter(|i| {
                // not only RUNNING: one its node gave up on while the link was down (the
                // FAILED event lost, and a RUNNING before it) is left out while STARTING
                i.node.as_deref() == Some(node)
                    && matches!(
                        i.lifecycle.state(),
                        InstanceState::Running
                            | InstanceState::Starting
                            | InstanceState::Restarting
                    )
                    && !listed.contains(&i.id)
            })
            .map(|i| i.id.clone())
            .collect();
        // forget what this node lists again, or no longer runs at all
        let on_node = |id: &InstanceId| self.instance_node(id).as_deref() == Some(node);
        let keep: BTreeMap<InstanceId, u64> = self
            .missing
            .iter()
            .filter(|(id, _)| !on_node(id) || left_out.contains(id))
            .map(|(id, at)| (id.clone(), *at))
            .collect();
        self.missing = keep;
        let mut vanished = BTreeSet::new();
        for id in left_out {
            let since = *self.missing.entry(id.clone()).or_insert(now);
            if now.saturating_sub(since) >= patience {
                vanished.insert(id);
            }
        }
        if vanished.is_empty() {
            return;
        }
        for id in &vanished {
            self.missing.remove(id);
        }
        let why = format!("node {node} no longer runs it");
        // of a job being terminated, it is stopped (its TERMINATED event was lost): not LOST,
        // which a terminating job would wait on for good
        for job in self
            .jobs
            .values_mut()
            .filter(|j| j.lifecycle.state() == JobState::Terminating)
        {
            let mut ended = false;
            for instance in job
                .instances
                .iter_mut()
                .filter(|i| vanished.contains(&i.id))
            {
                let moved = instance
                    .lifecycle
                    .reconcile(InstanceState::Terminated, now, &why);
                let instead = "it keeps its state";
                if self
                    .refusals
                    .check(moved, job.id.as_str(), Some(&instance.id), instead)
                    .is_some()
                {
                    ended = true;
                    fx.send_up.push(instance_event(
                        &self.cx,
                        &self.config.id,
                        &job.id,
                        &instance.id,
                        node,
                        InstanceState::Terminated,
                        why.clone(),
                    ));
                }
            }
            if ended {
                job.settle(now, &mut self.refusals);
                fx.persist.push(Self::job_key(job.id.as_str()));
            }
        }
        let changed = self.mark_lost(node, |i| vanished.contains(&i.id), &why, fx);
        for job in changed {
            if let Some(job) = self.jobs.get_mut(&job) {
                job.settle(now, &mut self.refusals);
            }
        }
        self.relocate_from(node, fx);
    }

    pub(super) fn on_instance_event(&mut self, node: &str, event: InstanceEvent, fx: &mut Fx) {
        self.node_heard(node, fx);
        let revived = matches!(
            event.state,
            InstanceState::Starting | InstanceState::Running
        );
        let lost = self
            .jobs
            .get(event.job.as_str())
            .and_then(|j| j.instances.iter().find(|i| i.id == event.instance))
            .is_some_and(|i| i.lifecycle.state() == InstanceState::Lost);
        if revived && lost && self.stop_if_replaced(node, &event.job, &event.instance, fx) {
            return;
        }
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
                // one being stopped (replaced while its node was away, or the old half of
                // a move) was going anyway: its failure is not replaced again
                failed = !matches!(was, InstanceState::Failed | InstanceState::Terminating)
                    && event.state == InstanceState::Failed;
            }
            if event.exit_code.is_some() {
                instance.exit_code = event.exit_code;
            }
            fx.persist.push(Self::job_key(&job_id));
        }
        let instance = self
            .jobs
            .get(&job_id)
            .and_then(|j| j.instances.iter().find(|i| i.id == event.instance));
        let migrating = instance.is_some_and(|i| i.replaces.is_some());
        // a move's new instance that runs as recorded, not one being stopped (lost with its
        // node, back after it was replaced, and stopped by the node's status first)
        let runs = instance.is_some_and(|i| i.lifecycle.state() == InstanceState::Running);
        // over before a status named it: the node's last report never counted it, so what
        // it reserved is free again now rather than at the next status
        let ended = instance
            .filter(|i| i.is_over())
            .and_then(|i| i.node.clone());
        if let Some(on) = ended {
            self.release(&on, &event.instance);
        }
        // the replacement's PENDING goes up before the failure, so the root never sees the
        // job with a failed instance and nothing to take its place; when no node here can
        // take it, the failure carries the refusal up (the root moves the job)
        let refusal = if failed {
            self.relocate_failed(&job_id, &event.instance, node, &event.reason, fx)
        } else {
            None
        };
        let arrived = migrating && runs && event.state == InstanceState::Running;
        let new = event.instance.clone();
        let mut up = event;
        up.node = node.to_string();
        up.unschedulable = up.unschedulable.or(refusal);
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
