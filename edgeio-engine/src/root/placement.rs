//! Placing a job on a cluster: candidates from the aggregates, the deploy command, refusals and NOT_DEPLOYABLE.

use super::*;
use edgeio_core::model::Candidate;
use edgeio_core::scheduler::Placement;

impl RootState {
    /// Places `count` more replicas of spread job `id` on a cluster that holds none of it
    /// yet (the rest of a part a cluster could not keep or take): true when one was found.
    /// The deploy may still be refused; [`Self::part_refused`] goes on from there.
    pub(super) fn place_part(&mut self, id: &str, count: u32, reason: &str, fx: &mut Fx) -> bool {
        let Some(job) = self.jobs.get(id) else {
            return false;
        };
        let mut excluded = job.at.refused_by.clone();
        excluded.extend(job.clusters());
        let set = self.candidates(&excluded, &job.spec.node_selector);
        let placed = self.scheduler.place(&job.spec, &set);
        let Some(job) = self.jobs.get_mut(id) else {
            return false;
        };
        match placed {
            Ok(p) => {
                info!(job = id, cluster = %p.candidate, count, reason, "placing part of a job");
                if job.lifecycle.state() == JobState::Running {
                    // the move shows in the job's history, with its reason
                    let why = format!("{count} replicas go to cluster {}: {reason}", p.candidate);
                    if let Err(e) =
                        job.lifecycle
                            .reconcile(JobState::ScheduledNode, self.cx.now_ms(), &why)
                    {
                        self.refusals.note(
                            id,
                            None,
                            &e,
                            "the part is placed all the same; the job settles when it runs",
                        );
                    }
                }
                job.at.parts.push(Part {
                    cluster: p.candidate.clone(),
                    replicas: count,
                });
                job.cluster_from_parts();
                fx.persist.push(job_key(id));
                if let Some(command) = self.deploy_command(id, &p.candidate) {
                    fx.commands.push(command);
                }
                true
            }
            Err(e) => {
                if let SchedulerError::Unschedulable(u) = e {
                    job.unschedulable.push(u.in_tier(Tier::Clusters));
                }
                let held: u32 = job.at.parts.iter().map(|p| p.replicas).sum();
                warn!(
                    job = id,
                    count, held, reason, "no other cluster can take the rest of a spread job"
                );
                fx.persist.push(job_key(id));
                false
            }
        }
    }

    /// A deploy of job `id` to `cluster`, as a command; its instances are numbered after
    /// those the job had before. A spread job's part goes with its own count and names its
    /// instances after the cluster. What it needs is held against the cluster's offer until an aggregate counts it (see
    /// [`super::sent`]).
    pub(super) fn deploy_command(
        &mut self,
        id: &str,
        cluster: &str,
    ) -> Option<(String, Envelope, Tag)> {
        let job = self.jobs.get(id)?;
        let instance_prefix = job
            .at
            .parts
            .iter()
            .any(|p| p.cluster == cluster)
            .then(|| part_prefix(&job.id, cluster));
        let mut deploy = Deploy {
            job: job.id.clone(),
            spec: job.spec_on(cluster),
            instance: None,
            first_instance: job.first_instance + job.instances.len() as u32,
            instance_prefix,
            seq: 0,
        };
        deploy.seq = self.hold_sent(cluster, &deploy.job, &deploy.spec);
        let tag = Tag::Deploy {
            job: deploy.job.clone(),
            cluster: cluster.to_string(),
        };
        Some((
            cluster.to_string(),
            self.msg(Message::Deploy(Box::new(deploy))),
            tag,
        ))
    }

    pub(super) fn candidates(&self, refused: &[String], selector: &Labels) -> CandidateSet {
        let now = self.cx.now_ms();
        let mut set = CandidateSet::for_tier(Tier::Clusters);
        for record in self.clusters.values() {
            if record.lifecycle.state() == ClusterState::Active && !refused.contains(&record.id) {
                if let Some(candidate) = self.offer_of(record, now, selector) {
                    set.insert(candidate);
                }
            }
        }
        set
    }

    /// Takes out of `set` the clusters whose aggregate says for certain that they have no
    /// READY node `node` (their Bloom filter); those that may have it stay, in id order.
    pub(super) fn keep_clusters_for_node(&self, set: &mut CandidateSet, node: &str) {
        let without: Vec<String> = set
            .iter()
            .filter(|c| {
                !self
                    .clusters
                    .get(&c.id)
                    .is_some_and(|r| r.may_have_node(node))
            })
            .map(|c| c.id.clone())
            .collect();
        for id in without {
            set.remove(&id);
        }
    }

    /// Brings `cluster`'s entry in the kept candidate set up to date (see
    /// [`RootState::offered`]): there while it is ACTIVE with an aggregate, gone otherwise.
    pub(super) fn refresh_offered(&mut self, cluster: &str) {
        let now = self.cx.now_ms();
        if self.offered.is_none() {
            return;
        }
        let candidate = self
            .clusters
            .get(cluster)
            .filter(|c| c.lifecycle.state() == ClusterState::Active)
            .and_then(|record| self.offer_of(record, now, &Labels::new()));
        let Some(set) = self.offered.as_mut() else {
            return;
        };
        match candidate {
            // an entry already there is replaced in place (O(log n)); only a new or a gone
            // cluster reorders the set
            Some(candidate) => set.insert(candidate),
            None => {
                set.remove(cluster);
            }
        }
    }

    /// Places `id` (no selector, no pinned node) on the kept candidate set, the clusters that
    /// refused it set aside for the call: no set is built per job (building one asks every
    /// cluster's record for its candidate, which costs more than setting a few aside).
    fn place_on_offered(&mut self, id: &str) -> Option<Result<Placement, SchedulerError>> {
        if self.offered.is_none() {
            self.offered = Some(self.candidates(&[], &Labels::new()));
        }
        let job = self.jobs.get(id)?;
        let set = self.offered.as_mut()?;
        let aside: Vec<Candidate> = job
            .at
            .refused_by
            .iter()
            .filter_map(|c| set.remove(c))
            .collect();
        let placed = self.scheduler.place(&job.spec, set);
        for candidate in aside {
            set.insert(candidate);
        }
        Some(placed)
    }

    /// Moves a job back to REQUESTED (recording `reason`) and schedules it again.
    pub(super) fn reschedule(&mut self, id: &str, reason: &str, fx: &mut Fx) {
        let Some(record) = self.jobs.get_mut(id) else {
            return;
        };
        match record
            .lifecycle
            .reconcile(JobState::Requested, self.cx.now_ms(), reason)
        {
            Ok(_) => self.schedule(id, fx),
            Err(e) => self
                .refusals
                .note(id, None, &e, "the job is not placed again"),
        }
    }

    /// Places a REQUESTED job on a cluster, or marks it NOT_DEPLOYABLE with the reasons.
    pub(crate) fn schedule(&mut self, id: &str, fx: &mut Fx) {
        let Some(job) = self.jobs.get(id) else {
            return;
        };
        if job.lifecycle.state() != JobState::Requested {
            return;
        }
        let pinned = job.spec.worker_node.is_some() && job.spec.cluster.is_none();
        if !pinned && job.spec.node_selector.is_empty() {
            if let Some(placed) = self.place_on_offered(id) {
                let set_empty = self.offered.as_ref().is_none_or(CandidateSet::is_empty);
                return self.placed(id, placed, set_empty, fx);
            }
        }
        let Some(job) = self.jobs.get(id) else {
            return;
        };
        let mut set = self.candidates(&job.at.refused_by, &job.spec.node_selector);
        let placed = match &job.spec.worker_node {
            Some(node) if job.spec.cluster.is_none() => {
                // a pinned node goes to a cluster whose filter may hold it; a false positive
                // is refused there, and that cluster joins `refused_by` like any other
                let all = set.len();
                self.keep_clusters_for_node(&mut set, node);
                if set.is_empty() {
                    Err(SchedulerError::Unschedulable(
                        Unschedulable::new(all).in_tier(Tier::Clusters).refused(
                            "worker_node",
                            all,
                            format!("no cluster reports a READY node {node:?}"),
                        ),
                    ))
                } else {
                    self.scheduler.place(&job.spec, &set)
                }
            }
            _ => self.scheduler.place(&job.spec, &set),
        };
        let set_empty = set.is_empty();
        self.placed(id, placed, set_empty, fx);
    }

    /// What the scheduler's answer for `id` means: a deploy to the cluster it chose, or
    /// (after trying to spread it over offers) NOT_DEPLOYABLE with the reasons. `set_empty`:
    /// there was no candidate at all.
    fn placed(
        &mut self,
        id: &str,
        placed: Result<Placement, SchedulerError>,
        set_empty: bool,
        fx: &mut Fx,
    ) {
        let offered = self.jobs.get(id).is_some_and(|j| !j.at.offers.is_empty());
        if placed.is_err() && offered && self.spread(id, fx) {
            return;
        }
        let now = self.cx.now_ms();
        let policy = self.scheduler.name().to_string();
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        match placed {
            Ok(p) => {
                let reason = format!("placed on cluster {} by {policy}", p.candidate);
                if let Err(e) = job
                    .lifecycle
                    .reconcile(JobState::ScheduledCluster, now, &reason)
                {
                    self.refusals
                        .note(id, None, &e, "no deploy is sent; the job keeps its state");
                    return;
                }
                job.at.cluster = Some(p.candidate.clone());
                if let Some(command) = self.deploy_command(id, &p.candidate) {
                    fx.commands.push(command);
                }
            }
            Err(e) => {
                job.at.offers.clear();
                let reason = match e {
                    SchedulerError::Unschedulable(u) => {
                        let u = u.in_tier(Tier::Clusters);
                        let pinned = job.spec.worker_node.is_some();
                        let text = if set_empty && job.at.refused_by.is_empty() && !pinned {
                            "no ACTIVE cluster with READY nodes".to_string()
                        } else {
                            u.to_string()
                        };
                        job.unschedulable.push(u);
                        text
                    }
                    other => other.to_string(),
                };
                if let Err(e) = job
                    .lifecycle
                    .reconcile(JobState::NotDeployable, now, &reason)
                {
                    self.refusals.note(
                        id,
                        None,
                        &e,
                        "the job keeps its state and its reasons are recorded",
                    );
                }
                info!(job = id, %reason, "job not deployable");
            }
        }
        fx.persist.push(job_key(id));
    }

    pub(super) fn on_deploy_outcome(
        &mut self,
        job: &JobId,
        cluster: &str,
        outcome: Result<CommandOutcome, TransportError>,
        fx: &mut Fx,
    ) {
        if !matches!(outcome, Ok(CommandOutcome::Acked)) {
            // refused, or no answer: it holds nothing there (taken, an aggregate counts it)
            self.release_sent(cluster, job.as_str());
        }
        let Some((error, unschedulable)) = refusal(cluster, outcome) else {
            let left = self.jobs.get(job.as_str()).is_none_or(|j| {
                let from = j.migration.as_ref().and_then(|m| m.from_cluster.as_deref());
                !j.is_live() || !(j.holds(cluster) || from == Some(cluster))
            });
            if left {
                // taken after the job left this cluster (the deploy was re-sent while the
                // cluster was away or could not store it, and it took it when back): the
                // newer placement wins, so this copy is stopped
                warn!(job = %job, cluster, "a cluster took a job that has left it; terminating it there");
                fx.commands
                    .push(terminate_command(&self.cx, &self.config, cluster, job));
                return;
            }
            // taken: what other clusters offered while it was being placed is old news
            if let Some(record) = self.jobs.get_mut(job.as_str()) {
                if !record.at.offers.is_empty() {
                    record.at.offers.clear();
                    fx.persist.push(job_key(job.as_str()));
                }
            }
            return;
        };
        let moving_here = self
            .jobs
            .get(job.as_str())
            .is_some_and(|j| j.moving_to() == Some(cluster));
        if moving_here {
            self.abandon_migration(
                job.as_str(),
                &format!("cluster {cluster} refused: {error}"),
                unschedulable,
            );
            return;
        }
        let part = self
            .jobs
            .get(job.as_str())
            .is_some_and(|j| j.at.parts.iter().any(|p| p.cluster == cluster));
        if part {
            self.part_refused(job.as_str(), cluster, &error, unschedulable, fx);
            return;
        }
        self.refused(job, cluster, error, unschedulable, fx);
    }
}
