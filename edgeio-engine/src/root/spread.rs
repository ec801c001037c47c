//! Spreading a job's replicas over several clusters when no one cluster can take them all.

use super::*;

impl RootState {
    /// `cluster` refused the part of spread job `id` it was given. When it could take some of
    /// it, it gets that many and the rest goes elsewhere; when no cluster is left, a job still
    /// being placed is given back (NOT_DEPLOYABLE, what was placed terminated), a scale-up
    /// keeps the count it had, and a running job stays short until capacity appears.
    pub(super) fn part_refused(
        &mut self,
        id: &str,
        cluster: &str,
        error: &str,
        unschedulable: Option<Unschedulable>,
        fx: &mut Fx,
    ) {
        let now = self.cx.now_ms();
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let Some(at) = job.at.parts.iter().position(|p| p.cluster == cluster) else {
            return;
        };
        let part = job.at.parts.remove(at);
        let fits = unschedulable
            .as_ref()
            .map_or(0, |u| u.fits)
            .min(part.replicas);
        job.unschedulable.extend(unschedulable);
        job.at.refused_by.push(cluster.to_string());
        let reason = format!(
            "cluster {cluster} refused {} replicas: {error}",
            part.replicas
        );
        let mut rest = part.replicas;
        if fits > 0 {
            // it said how many it can take: those, and the rest elsewhere
            job.at.parts.insert(
                at,
                Part {
                    cluster: cluster.to_string(),
                    replicas: fits,
                },
            );
            rest -= fits;
            if let Some(command) = self.deploy_command(id, cluster) {
                fx.commands.push(command);
            }
        }
        if let Some(job) = self.jobs.get_mut(id) {
            job.cluster_from_parts();
        }
        fx.persist.push(job_key(id));
        if self.place_part(id, rest, &reason, fx) {
            return;
        }
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        for c in no_place_for_part(job, rest, &reason, now, &mut self.refusals) {
            let command = terminate_command(&self.cx, &self.config, &c, &job.id);
            fx.commands.push(command);
        }
    }

    /// Spreads REQUESTED job `id` over the clusters that said how many of its replicas they
    /// can take, when together they can take all: true when it did.
    pub(super) fn spread(&mut self, id: &str, fx: &mut Fx) -> bool {
        let now = self.cx.now_ms();
        let Some(job) = self.jobs.get_mut(id) else {
            return false;
        };
        let wanted = job.spec.replicas;
        let mut offers: Vec<(String, u32)> = std::mem::take(&mut job.at.offers)
            .into_iter()
            .filter(|(c, _)| {
                self.clusters
                    .get(c)
                    .is_some_and(|r| r.lifecycle.state() == ClusterState::Active)
            })
            .collect();
        if wanted < 2 || offers.iter().map(|(_, n)| *n).sum::<u32>() < wanted {
            return false;
        }
        // the fewest clusters: the largest offers first
        offers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut left = wanted;
        let mut parts = Vec::new();
        for (cluster, n) in offers {
            if left == 0 {
                break;
            }
            let take = n.min(left);
            parts.push(Part {
                cluster,
                replicas: take,
            });
            left -= take;
        }
        let text: Vec<String> = parts
            .iter()
            .map(|p| format!("{} ({})", p.cluster, p.replicas))
            .collect();
        let reason = format!(
            "spread over clusters {}: no one cluster can take all {wanted} replicas",
            text.join(", ")
        );
        if let Err(e) = job
            .lifecycle
            .reconcile(JobState::ScheduledCluster, now, &reason)
        {
            self.refusals
                .note(id, None, &e, "the job is not spread; it keeps its state");
            return false;
        }
        info!(job = id, %reason, "spreading a job");
        job.at.refused_by.clear();
        let clusters: Vec<String> = parts.iter().map(|p| p.cluster.clone()).collect();
        job.at.parts = parts;
        job.cluster_from_parts();
        for cluster in clusters {
            if let Some(command) = self.deploy_command(id, &cluster) {
                fx.commands.push(command);
            }
        }
        fx.persist.push(job_key(id));
        true
    }
}

/// No cluster takes the `rest` of a refused part of `job`: a scale-up keeps the count it
/// had; a job never yet RUNNING is NOT_DEPLOYABLE, its placed parts stopped (the clusters
/// returned are told to terminate it); a running job stays short until capacity appears.
fn no_place_for_part(
    job: &mut RootJob,
    rest: u32,
    reason: &str,
    now: u64,
    refusals: &mut Refusals,
) -> Vec<String> {
    let id = job.id.to_string();
    let ran = job
        .lifecycle
        .history()
        .iter()
        .any(|h| h.state == JobState::Running);
    match job.lifecycle.state() {
        JobState::Scaling => {
            // the extra replicas found no place: the count they were added to stays
            let from = job.spec.replicas - rest;
            let why = format!("{reason}; no other cluster can take them: it keeps {from}");
            job.spec.replicas = from;
            if job.at.parts.len() == 1 {
                job.at.parts.clear();
            }
            if let Err(e) = job.lifecycle.reconcile(JobState::Running, now, &why) {
                let instead = "the job keeps its state; the count is narrowed all the same";
                refusals.note(&id, None, &e, instead);
            }
            job.settle(now, refusals);
            Vec::new()
        }
        JobState::ScheduledCluster | JobState::ScheduledNode if !ran => {
            let why = format!("{reason}; the other clusters cannot take them either");
            let clusters = job.clusters();
            job.at.parts.clear();
            job.at.cluster = None;
            for instance in job.instances.iter_mut().filter(|i| !i.is_over()) {
                let moved = instance
                    .lifecycle
                    .reconcile(InstanceState::Terminating, now, &why);
                if let Err(e) = moved {
                    refusals.note(&id, Some(&instance.id), &e, "the instance keeps its state");
                }
            }
            if let Err(e) = job.lifecycle.reconcile(JobState::NotDeployable, now, &why) {
                let instead = "the job keeps its state; its parts are stopped all the same";
                refusals.note(&id, None, &e, instead);
            }
            clusters
        }
        _ => Vec::new(),
    }
}
