//! Instance events relayed by the clusters, and escalations (a cluster that cannot replace an instance).

use super::*;

impl RootState {
    pub(super) fn refused(
        &mut self,
        job: &JobId,
        cluster: &str,
        error: String,
        unschedulable: Option<Unschedulable>,
        fx: &mut Fx,
    ) {
        let Some(record) = self.jobs.get_mut(job.as_str()) else {
            return;
        };
        if record.lifecycle.state() != JobState::ScheduledCluster
            || record.at.cluster.as_deref() != Some(cluster)
        {
            return;
        }
        record.at.refused_by.push(cluster.to_string());
        if let Some(fits) = unschedulable.as_ref().map(|u| u.fits).filter(|n| *n > 0) {
            record.at.offers.insert(cluster.to_string(), fits);
        }
        record.unschedulable.extend(unschedulable);
        record.at.cluster = None;
        let reason = format!("cluster {cluster} refused: {error}");
        self.reschedule(job.as_str(), &reason, fx);
    }

    /// An instance's change of state, reported by `cluster`: recorded, then what follows for
    /// its job (a move across clusters completed or abandoned, the job's state settled, an
    /// escalation when the cluster cannot replace the instance).
    pub(super) fn on_instance_event(&mut self, cluster: &str, event: InstanceEvent, fx: &mut Fx) {
        let now = self.cx.now_ms();
        let Some(job) = self.jobs.get_mut(event.job.as_str()) else {
            debug!(cluster, job = %event.job, "event for an unknown job");
            return;
        };
        let owner = job.holds(cluster);
        if !owner && !ends_a_known_instance(job, &event) {
            debug!(cluster, job = %event.job, "event from a cluster the job has left");
            return;
        }
        if owner && of_an_earlier_placement(job, &event.instance) {
            // the job left this cluster and was placed on it anew since the root wrote the
            // instance off (a re-sync that found the job gone, while the cluster still held
            // the news of its end): what the instance did no longer counts for the job
            info!(cluster, job = %event.job, instance = %event.instance, state = %event.state,
                "event of an instance of an earlier placement; it stays LOST, the new placement counts");
            return;
        }
        record_event(job, cluster, &event, now, &mut self.refusals);
        // across clusters, the new placement ended without ever running: the job stays on
        // the cluster it left, and the new one lets go of what it placed
        let moving_here = job.moving_to() == Some(cluster);
        if moving_here && new_placement_ended(job, cluster) {
            let id = job.id.clone();
            let why = format!(
                "the new placement on cluster {cluster} ended: {}",
                event.reason
            );
            fx.commands
                .push(terminate_command(&self.cx, &self.config, cluster, &id));
            self.abandon_migration(id.as_str(), &why, None);
            fx.persist.push(job_key(id.as_str()));
            return;
        }
        if moving_here && event.state == InstanceState::Running {
            // make-before-break across clusters: the new placement runs, the old one goes
            let from = job.migration.as_mut().and_then(|m| m.from_cluster.take());
            if let Some(from) = from {
                let id = job.id.clone();
                info!(job = %id, from = %from, to = cluster, "migrated; the old cluster lets go");
                fx.commands
                    .push(terminate_command(&self.cx, &self.config, &from, &id));
            }
        }
        job.settle(now, &mut self.refusals);
        fx.persist.push(job_key(event.job.as_str()));
        let escalate = owner
            && job.is_live()
            && job.lifecycle.state() != JobState::Terminating
            && job.spec.worker_node.is_none();
        if let (Some(u), true) = (event.unschedulable, escalate) {
            job.unschedulable.push(u);
            let id = job.id.clone();
            self.escalate(id.as_str(), cluster, &event.reason, fx);
        }
    }

    /// `cluster` cannot replace an instance of job `id` on any of its nodes. When another
    /// cluster can take the job, it moves there and `cluster` lets go of what is left of it;
    /// otherwise it stays (its node may come back with the instance still running).
    pub(super) fn escalate(&mut self, id: &str, cluster: &str, why: &str, fx: &mut Fx) {
        let Some(job) = self.jobs.get(id) else {
            return;
        };
        let job_id = job.id.clone();
        let mut held = job.clusters();
        held.push(cluster.to_string());
        let others = self.candidates(&held, &job.spec.node_selector);
        if let Err(e) = self.scheduler.place(&job.spec, &others) {
            info!(job = id, cluster, reason = %e, "escalated, but no other cluster can take the job; it stays");
            return;
        }
        if let Some(job) = self.jobs.get_mut(id) {
            job.at.refused_by.clear();
            job.at.refused_by.push(cluster.to_string());
        }
        fx.commands
            .push(terminate_command(&self.cx, &self.config, cluster, &job_id));
        let why = format!("escalated by cluster {cluster}: {why}");
        self.leave_cluster(id, cluster, &why, fx);
    }
}

/// Whether `instance` is one the root wrote off (LOST) when it took `job` away from its
/// cluster, and the job was placed anew since (SCHEDULED_CLUSTER at or after that): its news
/// is of an earlier placement.
fn of_an_earlier_placement(job: &RootJob, instance: &InstanceId) -> bool {
    let Some(lost_at) = job
        .instances
        .iter()
        .find(|i| &i.id == instance && i.lifecycle.state() == InstanceState::Lost)
        .and_then(|i| i.lifecycle.history().last())
        .map(|h| h.at_ms)
    else {
        return false;
    };
    job.lifecycle
        .history()
        .iter()
        .any(|h| h.state == JobState::ScheduledCluster && h.at_ms >= lost_at)
}

/// Whether `event`, from a cluster `job` has left, ends an instance the root knows: the only
/// news such a cluster has.
fn ends_a_known_instance(job: &mut RootJob, event: &InstanceEvent) -> bool {
    let ends = matches!(
        event.state,
        InstanceState::Terminating
            | InstanceState::Terminated
            | InstanceState::Failed
            | InstanceState::Exited
    );
    ends && job.instance_mut(&event.instance).is_some()
}

/// Records what `event` says of an instance of `job` on `cluster`: its state (a late or
/// duplicate one refused, noted), its node and cluster, its exit code; a new instance is added.
fn record_event(
    job: &mut RootJob,
    cluster: &str,
    event: &InstanceEvent,
    now: u64,
    refusals: &mut Refusals,
) {
    let reason = if event.reason.is_empty() {
        format!("reported by {}", event.node)
    } else {
        event.reason.clone()
    };
    let Some(instance) = job.instance_mut(&event.instance) else {
        job.instances.push(InstanceRecord {
            id: event.instance.clone(),
            node: Some(event.node.clone()),
            lifecycle: Lifecycle::new(event.state, now, &reason),
            exit_code: event.exit_code,
            replaces: None,
            cluster: Some(cluster.to_string()),
        });
        return;
    };
    if let Err(e) = instance.lifecycle.reconcile(event.state, now, &reason) {
        // a late or duplicate event: where it runs and its exit code still count
        let instead = "the instance keeps its state";
        refusals.note(event.job.as_str(), Some(&event.instance), &e, instead);
    }
    instance.node = Some(event.node.clone());
    instance.cluster = Some(cluster.to_string());
    if event.exit_code.is_some() {
        instance.exit_code = event.exit_code;
    }
}

/// Whether a move of `job` to `cluster` placed instances there that all ended.
fn new_placement_ended(job: &RootJob, cluster: &str) -> bool {
    job.migration.as_ref().is_some_and(|m| {
        let mut new = job.instances[m.first_new.min(job.instances.len())..]
            .iter()
            .filter(|i| i.cluster.as_deref() == Some(cluster))
            .peekable();
        new.peek().is_some() && new.all(InstanceRecord::is_over)
    })
}
