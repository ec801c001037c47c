//! The one `CandidateSet` the cluster places on, kept current incrementally: a placement
//! reserves on it (all or nothing, released on refusal), a status updates its node's entry
//! only, and what this cluster placed on a node and has not seen reported yet is kept per
//! node, so no placement clones the set and no status rebuilds it.

use super::*;
use edgeio_core::job::JobSpec;
use edgeio_core::model::Candidate;

/// Instances placed on one node and not yet in its status reports: their job and what they
/// reserve. The node's reported free resources do not count them yet.
pub(super) type Unreported = BTreeMap<InstanceId, (JobId, Resources)>;

impl ClusterState {
    /// Places `count` replicas of `spec` on the candidates, all or nothing: on success each
    /// chosen node's free resources are reserved (on the set and its record) and the nodes
    /// are returned in order; on refusal nothing stays reserved and a scheduler's
    /// `Unschedulable` says how many did fit (`fits`). `except` names nodes set aside for
    /// this call (taken out and put back: O(nodes) each, so only for the few nodes a
    /// relocation or migration must avoid).
    pub(super) fn place_many(
        &mut self,
        spec: &JobSpec,
        count: usize,
        except: &[String],
    ) -> Result<Vec<String>, SchedulerError> {
        let aside: Vec<Candidate> = except
            .iter()
            .filter_map(|id| self.candidates.remove(id))
            .collect();
        let placed = self.place_reserving(spec, count);
        for c in aside {
            self.candidates.insert(c);
        }
        let placed = placed?;
        for node in &placed {
            if let Some(record) = self.nodes.get_mut(node) {
                // the record says what the set says: the worker's report less what is placed
                // and not reported yet
                record.free = record.free.saturating_sub(&spec.resources);
            }
        }
        Ok(placed)
    }

    fn place_reserving(
        &mut self,
        spec: &JobSpec,
        count: usize,
    ) -> Result<Vec<String>, SchedulerError> {
        let mut placed = Vec::with_capacity(count);
        // each touched node as it was before this call, to put back on refusal: a
        // reservation saturates and a job may already be listed, so restoring the entry
        // undoes both exactly where subtracting again would not
        let mut before: Vec<Candidate> = Vec::new();
        for _ in 0..count {
            match self.scheduler.place(spec, &self.candidates) {
                Ok(p) => {
                    if !before.iter().any(|c| c.id == p.candidate) {
                        before.extend(self.candidates.get(&p.candidate).cloned());
                    }
                    self.candidates.reserve(&p.candidate, &spec.resources);
                    self.candidates.add_job(&p.candidate, &spec.name);
                    placed.push(p.candidate);
                }
                Err(e) => {
                    for c in before {
                        self.candidates.insert(c);
                    }
                    return Err(match e {
                        SchedulerError::Unschedulable(mut u) => {
                            u.fits = placed.len() as u32;
                            SchedulerError::Unschedulable(u.in_tier(Tier::Nodes))
                        }
                        other => other,
                    });
                }
            }
        }
        Ok(placed)
    }

    /// Starts a new instance of job `job_id` on `node` (placed there by [`Self::place_many`]),
    /// keeping it as unreported on that node until the node's status lists it.
    pub(super) fn start_on(
        &mut self,
        job_id: &str,
        node: &str,
        reason: String,
        fx: &mut Fx,
    ) -> Option<InstanceId> {
        let now = self.cx.now_ms();
        let job = self.jobs.get_mut(job_id)?;
        let id = start_instance(&self.cx, &self.config.id, job, node, reason, now, fx);
        self.unreported
            .entry(node.to_string())
            .or_default()
            .insert(id.clone(), (job.id.clone(), job.spec.resources));
        Some(id)
    }

    /// Gives back what an unreported instance reserved on `node` (it will never run there:
    /// the worker refused it or could not be reached).
    pub(super) fn release(&mut self, node: &str, instance: &InstanceId) {
        let Some((_, need)) = self
            .unreported
            .get_mut(node)
            .and_then(|pending| pending.remove(instance))
        else {
            return;
        };
        let now = self.cx.now_ms();
        if let Some(record) = self.nodes.get_mut(node) {
            record.free = record.free.saturating_add(&need).min_each(&record.total);
            if record.lifecycle.state() == NodeState::Ready {
                let age = record.candidate(now).data_age;
                self.candidates.update_free(node, record.free, age);
            }
        }
    }

    /// A status from `node`: its entry (and only its) is set from the report less what was
    /// placed there and is not in the report yet. An unreported instance leaves that list
    /// when the report names it or when it is over here (it will not be reported).
    pub(super) fn update_from_status(&mut self, node: &str, status: &NodeStatus) {
        let now = self.cx.now_ms();
        let jobs = &self.jobs;
        let pending = self.unreported.entry(node.to_string()).or_default();
        let listed: BTreeSet<&InstanceId> = status.instances.iter().map(|i| &i.instance).collect();
        pending.retain(|id, (job, _)| {
            !listed.contains(id)
                && jobs
                    .get(job.as_str())
                    .and_then(|j| j.instances.iter().find(|i| &i.id == id))
                    .is_some_and(|i| !i.is_over())
        });
        let reserved = pending
            .values()
            .fold(Resources::ZERO, |sum, (_, r)| sum.saturating_add(r));
        // anti-affinity looks at the jobs with an instance here: those the node runs and
        // those on their way to it
        let names: BTreeSet<String> = status
            .instances
            .iter()
            .filter(|i| {
                !matches!(
                    i.state,
                    InstanceState::Terminated | InstanceState::Failed | InstanceState::Exited
                )
            })
            .map(|i| &i.job)
            .chain(pending.values().map(|(job, _)| job))
            .filter_map(|job| jobs.get(job.as_str()).map(|j| j.spec.name.clone()))
            .collect();
        let Some(record) = self.nodes.get_mut(node) else {
            return;
        };
        record.free = status.free.saturating_sub(&reserved);
        record.total = status.total;
        if record.lifecycle.state() == NodeState::Ready {
            let mut candidate = record.candidate(now);
            candidate.jobs = names;
            self.candidates.insert(candidate);
        }
    }

    /// Ages every READY node's entry to `now`, so that a scheduler refusing stale data sees
    /// how old each node's report is; once per status interval, not per placement.
    pub(super) fn age_candidates(&mut self) {
        let now = self.cx.now_ms();
        for record in self.nodes.values() {
            if record.lifecycle.state() == NodeState::Ready {
                let c = record.candidate(now);
                self.candidates.update_free(&record.id, c.free, c.data_age);
            }
        }
    }

    /// What the store held at start: every live instance counts as unreported on its node
    /// until the node's first status names it, and the nodes' free resources are at most
    /// their total less those (a record's figure may predate the last placements).
    pub(super) fn seed_unreported(&mut self) {
        for job in self.jobs.values() {
            for i in job.instances.iter().filter(|i| !i.is_over()) {
                if let Some(node) = &i.node {
                    self.unreported
                        .entry(node.clone())
                        .or_default()
                        .insert(i.id.clone(), (job.id.clone(), job.spec.resources));
                }
            }
        }
        let now = self.cx.now_ms();
        for (node, pending) in &self.unreported {
            let Some(record) = self.nodes.get_mut(node) else {
                continue;
            };
            let placed = pending
                .values()
                .fold(Resources::ZERO, |sum, (_, r)| sum.saturating_add(r));
            record.free = record.free.min_each(&record.total.saturating_sub(&placed));
            if record.lifecycle.state() == NodeState::Ready {
                let c = record.candidate(now);
                self.candidates.update_free(node, c.free, c.data_age);
            }
        }
    }
}
