//! Moving instances off a lost node, and relocating a FAILED instance to a node with the same labels; escalation when none fits.

use super::*;

impl ClusterState {
    /// EXITED instances on `node`, lost, that it would have restarted or given up on (all
    /// but a clean exit the job's restart policy does not restart): they cannot restart
    /// there now, and an EXITED instance is never LOST, so they are FAILED and relocated as
    /// a give-up on the node would be. A done instance stays EXITED.
    pub(super) fn fail_exited_on(&mut self, node: &str, why: &str, fx: &mut Fx) {
        let now = self.cx.now_ms();
        let reason = format!("{why}, while it waited to restart there");
        let mut failed = Vec::new();
        for job in self.jobs.values_mut() {
            let always = job.spec.restart.policy == edgeio_core::job::RestartKind::Always;
            for instance in job.instances.iter_mut().filter(|i| {
                i.node.as_deref() == Some(node)
                    && i.lifecycle.state() == InstanceState::Exited
                    && (always || i.exit_code != Some(0))
            }) {
                let moved = instance
                    .lifecycle
                    .reconcile(InstanceState::Failed, now, &reason);
                let instead = "it stays EXITED";
                if self
                    .refusals
                    .check(moved, job.id.as_str(), Some(&instance.id), instead)
                    .is_some()
                {
                    failed.push((job.id.clone(), instance.id.clone()));
                }
            }
        }
        for (job, instance) in failed {
            warn!(job = %job, instance = %instance, node, "an instance waiting to restart on a lost node failed");
            fx.persist.push(Self::job_key(job.as_str()));
            // the replacement's PENDING goes up before the failure, as on a give-up
            let refusal = self.relocate_failed(job.as_str(), &instance, node, &reason, fx);
            let event = instance_event(
                &self.cx,
                &self.config.id,
                &job,
                &instance,
                node,
                InstanceState::Failed,
                reason.clone(),
            );
            fx.send_up.push(escalating(event, refusal));
            if let Some(job) = self.jobs.get_mut(job.as_str()) {
                job.settle(now, &mut self.refusals);
            }
        }
    }

    /// Places a replacement for every instance lost with `node` that its job still misses,
    /// on another node of this cluster; one that no node can take stays LOST, with the
    /// scheduler's reason told up. An instance lost before and replaced already is not
    /// replaced again (the node may be lost twice while it stays LOST).
    pub(super) fn relocate_from(&mut self, node: &str, fx: &mut Fx) {
        let lost: Vec<(String, InstanceId)> = self
            .jobs
            .values()
            .filter(|j| j.lifecycle.state() != JobState::Terminating && j.is_live())
            .flat_map(|j| {
                let live = j.instances.iter().filter(|i| i.counts_as_replica()).count();
                let missing = (j.spec.replicas as usize).saturating_sub(live);
                j.instances
                    .iter()
                    .filter(|i| {
                        i.node.as_deref() == Some(node)
                            && i.lifecycle.state() == InstanceState::Lost
                    })
                    .take(missing)
                    .map(|i| (j.id.to_string(), i.id.clone()))
            })
            .collect();
        if lost.is_empty() {
            return;
        }
        let policy = self.scheduler.name().to_string();
        for (job_id, old) in lost {
            let Some(job) = self.jobs.get(&job_id) else {
                continue;
            };
            let (id, spec) = (job.id.clone(), job.spec.clone());
            let (target, reason) = match self.place_many(&spec, 1, &[]) {
                Ok(mut placed) => {
                    let target = placed.remove(0);
                    let reason = format!(
                        "replaces {old} (node {node} lost), placed on {target} by {policy}"
                    );
                    (target, reason)
                }
                Err(e) => {
                    // nothing here fits: the root is told, and places the job elsewhere
                    let reason = format!("cannot replace {old} (node {node} lost): {e}");
                    warn!(job = %job_id, %reason, "instance not relocated; escalating to the root");
                    let event = instance_event(
                        &self.cx,
                        &self.config.id,
                        &id,
                        &old,
                        node,
                        InstanceState::Lost,
                        reason.clone(),
                    );
                    let refusal = self.nodes_refusal(e);
                    fx.send_up.push(escalating(event, Some(refusal)));
                    continue;
                }
            };
            if let Some(id) = self.start_on(&job_id, &target, reason, fx) {
                info!(job = %job_id, instance = %id, node = %target, "relocating a lost instance");
                fx.persist.push(Self::job_key(&job_id));
            }
        }
    }

    /// The scheduler's refusal to place on this cluster's nodes, as told to the root.
    fn nodes_refusal(&self, e: SchedulerError) -> edgeio_core::scheduler::Unschedulable {
        match e {
            SchedulerError::Unschedulable(u) => u.in_tier(Tier::Nodes),
            other => edgeio_core::scheduler::Unschedulable::new(self.candidates.len())
                .in_tier(Tier::Nodes)
                .refused("spec", self.candidates.len(), other.to_string()),
        }
    }

    /// Places a replacement for an instance that FAILED on `node` (its restarts there are used
    /// up, or it could not start) on another READY node with at least the same labels, never
    /// one where the job failed before. When none can take it, the failure stands here and
    /// the scheduler's refusal is returned, for the FAILED event to carry up: the root moves
    /// the job to another cluster that can take it (as for a lost instance no node takes),
    /// else the job is FAILED once nothing else of it lives.
    pub(super) fn relocate_failed(
        &mut self,
        job_id: &str,
        old: &InstanceId,
        node: &str,
        why: &str,
        fx: &mut Fx,
    ) -> Option<edgeio_core::scheduler::Unschedulable> {
        let job = self.jobs.get(job_id)?;
        if !job.is_live() || job.lifecycle.state() == JobState::Terminating {
            return None;
        }
        if job
            .instances
            .iter()
            .any(|i| &i.id == old && i.replaces.is_some())
        {
            // a migration that failed: the instance it was to replace runs on
            return None;
        }
        let tried: Vec<String> = job
            .instances
            .iter()
            .filter(|i| i.lifecycle.state() == InstanceState::Failed)
            .filter_map(|i| i.node.clone())
            .collect();
        // at least the same labels: the node's own, asked of the others as a selector
        let mut spec = job.spec.clone();
        if let Some(n) = self.nodes.get(node) {
            spec.node_selector.extend(n.capabilities.labels.clone());
        }
        let mut except = tried;
        except.push(node.to_string());
        let placed = match self.place_many(&spec, 1, &except) {
            Ok(mut placed) => placed.remove(0),
            Err(e) => {
                info!(job = job_id, instance = %old, reason = %e, "no other node with the same labels can take a failed instance; it stays FAILED, the root is told");
                return Some(self.nodes_refusal(e));
            }
        };
        let policy = self.scheduler.name().to_string();
        let reason =
            format!("replaces {old} (failed on {node}: {why}), placed on {placed} by {policy}");
        if let Some(id) = self.start_on(job_id, &placed, reason, fx) {
            info!(job = job_id, instance = %id, node = %placed, "relocating a failed instance");
            fx.persist.push(Self::job_key(job_id));
        }
        None
    }
}

/// `event` (an instance event for the root) carrying `refusal`, when no node of this cluster
/// can replace the instance: the root then moves the job to another cluster.
pub(super) fn escalating(
    mut event: Envelope,
    refusal: Option<edgeio_core::scheduler::Unschedulable>,
) -> Envelope {
    if let (Message::InstanceEvent(e), Some(refusal)) = (&mut event.body, refusal) {
        e.unschedulable = Some(refusal);
    }
    event
}
