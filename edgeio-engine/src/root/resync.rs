//! Re-sync with a cluster whose link came up: what it reports runs is reconciled with what the root keeps (the newer placement wins).

use super::*;

impl RootState {
    /// A command to `cluster` went unanswered for good (the reliable layer gave up): the
    /// cluster may be slow but alive and have applied it, so it is not taken as a refusal
    /// (placing the job elsewhere could run it twice). The root asks the cluster what it
    /// keeps instead, and the re-sync settles it: a deploy it never got is sent again, a job
    /// it terminated is recorded so, one it runs is followed.
    pub(super) fn gave_up(&mut self, cluster: &str, reason: &str, fx: &mut Fx) {
        warn!(
            cluster,
            reason, "a command went unanswered; re-syncing with the cluster"
        );
        self.sync(cluster, fx);
    }

    pub(super) fn sync(&mut self, cluster: &str, fx: &mut Fx) {
        let query = self.msg(Message::Query(Query::Jobs));
        self.syncs.insert(query.id.clone(), cluster.to_string());
        fx.send_down.push((cluster.to_string(), query));
    }

    /// Reconciles the root's jobs with what `cluster` reports it keeps (one `instance_event`
    /// per instance): states it missed are applied; a job the cluster runs that has moved
    /// elsewhere (or ended, or is unknown) is terminated there, the newer placement winning;
    /// a job waiting for a place is adopted back; a deploy the cluster never got is sent again;
    /// a job the cluster no longer keeps is placed anew.
    pub(super) fn on_sync(&mut self, cluster: &str, reply: QueryReply, fx: &mut Fx) {
        let Some(reported) = reported_jobs(cluster, reply) else {
            return;
        };
        for (job, events) in &reported {
            self.sync_reported(cluster, job, events, fx);
        }
        self.sync_missing(cluster, &reported, fx);
    }

    /// One job `cluster` reports it keeps, with its instances' `events`.
    fn sync_reported(&mut self, cluster: &str, job: &JobId, events: &[InstanceEvent], fx: &mut Fx) {
        let now = self.cx.now_ms();
        let owner = self.jobs.get(job.as_str()).map(|j| {
            (
                j.holds(cluster),
                j.at.cluster.is_some(),
                j.lifecycle.state(),
            )
        });
        let adopt = match owner {
            Some((true, _, _)) => false,
            Some((_, false, JobState::Requested | JobState::NotDeployable)) => true,
            _ => {
                info!(job = %job, cluster, "terminating a job on a cluster it has left");
                for event in events {
                    self.on_instance_event(cluster, event.clone(), fx);
                }
                fx.commands
                    .push(terminate_command(&self.cx, &self.config, cluster, job));
                return;
            }
        };
        if adopt {
            info!(job = %job, cluster, "adopting a job back from a cluster that kept it");
            if let Some(record) = self.jobs.get_mut(job.as_str()) {
                adopt_back(record, cluster, now, &mut self.refusals);
            }
        }
        for event in events {
            self.on_instance_event(cluster, event.clone(), fx);
        }
        self.migration_unsent(cluster, job, fx);
        if adopt {
            fx.persist.push(job_key(job.as_str()));
        } else if owner.is_some_and(|(_, _, state)| state == JobState::Terminating) {
            fx.commands
                .push(terminate_command(&self.cx, &self.config, cluster, job));
        }
    }

    /// A move of `job` inside `cluster` asked before this root started, that the cluster has
    /// not begun (it reports no instance of the new placement): the migrate went with the
    /// memory of the root that sent it, so the move is abandoned and the job RUNNING where
    /// it runs (a user may ask again).
    fn migration_unsent(&mut self, cluster: &str, id: &JobId, fx: &mut Fx) {
        let Some(job) = self.jobs.get(id.as_str()) else {
            return;
        };
        let Some(m) = job.migration.as_ref() else {
            return;
        };
        let asked_at = job.lifecycle.history().last().map_or(0, |h| h.at_ms);
        let unsent = job.lifecycle.state() == JobState::Migrating
            && m.from_cluster.is_none()
            && job.holds(cluster)
            && asked_at < self.started_ms
            && job.instances.len() <= m.first_new;
        if unsent {
            let why = format!(
                "cluster {cluster} has not begun it, and its request went with the root's restart"
            );
            self.abandon_migration(id.as_str(), &why, None);
            fx.persist.push(job_key(id.as_str()));
        }
    }

    /// The live jobs the root gave `cluster` that it did not report: a deploy it never got
    /// is sent again, a termination it finished is recorded, anything else is placed anew.
    fn sync_missing(
        &mut self,
        cluster: &str,
        reported: &BTreeMap<JobId, Vec<InstanceEvent>>,
        fx: &mut Fx,
    ) {
        let now = self.cx.now_ms();
        let missing: Vec<(String, JobState)> = self
            .jobs
            .values()
            .filter(|j| j.is_live() && j.holds(cluster) && !reported.contains_key(&j.id))
            .map(|j| (j.id.to_string(), j.lifecycle.state()))
            .collect();
        for (id, state) in missing {
            match state {
                JobState::ScheduledCluster => {
                    if let Some(command) = self.deploy_command(&id, cluster) {
                        fx.commands.push(command);
                    }
                }
                JobState::Terminating => {
                    if let Some(record) = self.jobs.get_mut(&id) {
                        terminated_there(record, cluster, now, &mut self.refusals);
                        fx.persist.push(job_key(&id));
                    }
                }
                _ => {
                    let why = format!("cluster {cluster} no longer keeps it");
                    self.leave_cluster(&id, cluster, &why, fx);
                }
            }
        }
    }

    /// Takes job `id` away from `cluster` (lost, or unable to keep it): its instances there
    /// are LOST, and it is scheduled again over the other clusters.
    pub(super) fn leave_cluster(&mut self, id: &str, cluster: &str, reason: &str, fx: &mut Fx) {
        let now = self.cx.now_ms();
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        if !job.holds(cluster) || !job.is_live() {
            return;
        }
        if let Some(at) = job.at.parts.iter().position(|p| p.cluster == cluster) {
            let part = job.at.parts.remove(at);
            if !job.at.parts.is_empty() {
                // the other parts stay; this one's replicas go to yet another cluster
                warn!(
                    job = id,
                    cluster, reason, "moving a part of a job to another cluster"
                );
                job.lose(
                    |i| i.cluster.as_deref() == Some(cluster),
                    now,
                    reason,
                    &mut self.refusals,
                );
                job.cluster_from_parts();
                if !job.at.refused_by.iter().any(|c| c == cluster) {
                    job.at.refused_by.push(cluster.to_string());
                }
                fx.persist.push(job_key(id));
                self.place_part(id, part.replicas, reason, fx);
                return;
            }
        }
        warn!(job = id, cluster, reason, "moving a job to another cluster");
        job.at.cluster = None;
        job.at.parts.clear();
        job.lose(|_| true, now, reason, &mut self.refusals);
        fx.persist.push(job_key(id));
        self.reschedule(id, reason, fx);
    }
}

/// What a cluster's answer to a re-sync reports, by job; `None` (logged) when it did not
/// answer or the answer is unreadable.
fn reported_jobs(cluster: &str, reply: QueryReply) -> Option<BTreeMap<JobId, Vec<InstanceEvent>>> {
    let events: Vec<InstanceEvent> = match reply.result.map(serde_json::from_value) {
        Some(Ok(events)) => events,
        Some(Err(e)) => {
            warn!(cluster, error = %e, "unreadable re-sync answer");
            return None;
        }
        None => {
            let error = reply.error.map(|e| e.message).unwrap_or_default();
            warn!(cluster, %error, "cluster did not answer the re-sync");
            return None;
        }
    };
    let mut reported: BTreeMap<JobId, Vec<InstanceEvent>> = BTreeMap::new();
    for event in events {
        reported.entry(event.job.clone()).or_default().push(event);
    }
    // the instances that live before those that ended, as the cluster tells a replacement
    // before the failure it replaces (relocate_failed): in record order, a failed instance
    // and its ended replacement would settle the job FAILED, with nothing to take their
    // place, before the root hears of the replacement's replacement that runs
    for events in reported.values_mut() {
        events.sort_by_key(|e| {
            !matches!(
                e.state,
                InstanceState::Pending
                    | InstanceState::Starting
                    | InstanceState::Running
                    | InstanceState::Restarting
            )
        });
    }
    Some(reported)
}

/// A job waiting for a place that `cluster`, back, still runs: it is the cluster's again.
fn adopt_back(job: &mut RootJob, cluster: &str, now: u64, refusals: &mut Refusals) {
    job.at.cluster = Some(cluster.to_string());
    job.at.refused_by.clear();
    let why = format!("cluster {cluster} is back and still runs it");
    if let Err(e) = job
        .lifecycle
        .reconcile(JobState::ScheduledCluster, now, &why)
    {
        let instead = "the events it reports settle the job";
        refusals.note(job.id.as_str(), None, &e, instead);
    }
}

/// A terminating job `cluster` keeps nothing of: its instances there are TERMINATED, and so
/// is the job unless other clusters hold parts of it.
fn terminated_there(job: &mut RootJob, cluster: &str, now: u64, refusals: &mut Refusals) {
    let why = format!("cluster {cluster} keeps nothing of it");
    let spread = !job.at.parts.is_empty();
    let id = job.id.to_string();
    for i in job
        .instances
        .iter_mut()
        .filter(|i| !i.is_over() && (!spread || i.cluster.as_deref() == Some(cluster)))
    {
        if let Err(e) = i.lifecycle.reconcile(InstanceState::Terminated, now, &why) {
            refusals.note(&id, Some(&i.id), &e, "the instance keeps its state");
        }
    }
    if !spread {
        if let Err(e) = job.lifecycle.reconcile(JobState::Terminated, now, &why) {
            refusals.note(&id, None, &e, "the job keeps its state");
        }
    }
    job.settle(now, refusals);
}
