//! Moving an instance make-before-break: the new one starts, the old one stops once it runs.

use super::*;
use edgeio_core::job::JobSpec;

impl ClusterState {
    /// `migrate` inside this cluster: starts the instance anew on the target node (or on any
    /// other node that fits) and terminates the old one once the new one runs
    /// (make-before-break). Moves to another cluster are the root's.
    pub(super) fn on_migrate(&mut self, command: &Envelope, m: &Migrate, fx: &mut Fx) -> Envelope {
        let moving = migratable(self.jobs.get(m.job.as_str()), m)
            .and_then(|job| Ok((job.spec.clone(), instance_to_move(job, m)?)));
        let (mut spec, (old_id, from)) = match moving {
            Ok(moving) => moving,
            Err(e) => return command.nack_in(&self.cx, &self.config.id, e),
        };
        let under_way = self.jobs.get(m.job.as_str()).is_some_and(|j| {
            j.instances
                .iter()
                .any(|i| i.replaces.as_ref() == Some(&old_id) && !i.is_over())
        });
        if under_way {
            // the same move again (a copy re-sent after "not now": the first was applied,
            // not yet stored): acked once the move is stored, not started a second time
            fx.persist.push(Self::job_key(m.job.as_str()));
            return command.ack_in(&self.cx, &self.config.id);
        }
        let (target, except) = match self.destination(&m.target, &old_id, &from, &mut spec) {
            Ok(destination) => destination,
            Err(e) => return command.nack_in(&self.cx, &self.config.id, e),
        };
        let placed = match self.place_many(&spec, 1, &except) {
            Ok(mut placed) => placed.remove(0),
            Err(e) => {
                let what = |_| format!("cannot move {old_id} to {target}");
                return self.placement_refused(command, e, what);
            }
        };
        let now = self.cx.now_ms();
        let job = self.jobs.get_mut(m.job.as_str()).expect("looked up above");
        let why = format!("migrate {old_id} from {from} to {placed}");
        start_migrating(job, &why, &placed, now, &mut self.refusals);
        let reason = format!("{why} (make-before-break)");
        let id = self.start_on(m.job.as_str(), &placed, reason, fx);
        let new = id.as_ref().and_then(|id| {
            self.jobs
                .get_mut(m.job.as_str())
                .and_then(|j| j.instance_mut(id))
        });
        if let Some(new) = new {
            new.replaces = Some(old_id);
        }
        info!(job = %m.job, instance = ?id, node = %placed, "migrating");
        fx.persist.push(Self::job_key(m.job.as_str()));
        command.ack_in(&self.cx, &self.config.id)
    }

    /// Where the instance `old` (on node `from`) may move to reach `target`: the target, for
    /// people, and the nodes it may not go to (`spec` is pinned to a node named), or the
    /// refusal.
    fn destination(
        &self,
        target: &MigrateTarget,
        old: &InstanceId,
        from: &str,
        spec: &mut JobSpec,
    ) -> Result<(String, Vec<String>), ErrorBody> {
        let refused = |code: &str, message| {
            Err(ErrorBody {
                code: code.into(),
                message,
            })
        };
        match target {
            MigrateTarget::Node(node) if node == from => refused(
                "invalid",
                format!("instance {old} already runs on node {node}"),
            ),
            MigrateTarget::Node(node) => {
                if self.candidates.get(node).is_none() {
                    let cluster = &self.config.id;
                    let message = format!("node {node} is not a READY node of cluster {cluster}");
                    return refused("not_found", message);
                }
                // the pin filter keeps the scheduler to that node, without a search
                spec.worker_node = Some(node.clone());
                Ok((format!("node {node}"), Vec::new()))
            }
            MigrateTarget::Anywhere => Ok(("another node".to_string(), vec![from.to_string()])),
            MigrateTarget::Cluster(c) => refused(
                "unsupported",
                format!(
                    "moving to cluster {c} is decided by the root, not by cluster {}",
                    self.config.id
                ),
            ),
        }
    }

    /// A migration's new instance runs: the one it replaces is terminated now.
    pub(super) fn finish_migration(&mut self, job_id: &str, new: &InstanceId, fx: &mut Fx) {
        let grace = self.config.grace.as_millis() as u64;
        let cluster = self.config.id.clone();
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        let Some(old) = job
            .instances
            .iter()
            .find(|i| &i.id == new)
            .and_then(|i| i.replaces.clone())
        else {
            return;
        };
        let Some(instance) = job.instance_mut(&old) else {
            return;
        };
        if instance.is_over() || instance.lifecycle.state() == InstanceState::Terminating {
            return;
        }
        let node = instance.node.clone().unwrap_or_default();
        let reason = format!("replaced by {new}, which runs (migration)");
        let stopping =
            instance
                .lifecycle
                .reconcile(InstanceState::Terminating, self.cx.now_ms(), &reason);
        let instead = "the old instance is not stopped; it keeps its state";
        if self
            .refusals
            .check(stopping, job_id, Some(&old), instead)
            .is_none()
        {
            return;
        }
        fx.send_up.push(instance_event(
            &self.cx,
            &cluster,
            &job.id,
            &old,
            &node,
            InstanceState::Terminating,
            reason,
        ));
        fx.commands.push(stop_instance(
            &self.cx,
            &cluster,
            &node,
            &job.id,
            &old,
            grace,
            Tag::Terminate,
        ));
        fx.persist.push(Self::job_key(job_id));
    }
}

/// `job`, when it is here and may migrate (RUNNING, or MIGRATING already): else the refusal.
fn migratable<'j>(job: Option<&'j ClusterJob>, m: &Migrate) -> Result<&'j ClusterJob, ErrorBody> {
    let Some(job) = job else {
        return Err(ErrorBody {
            code: "not_found".into(),
            message: format!("job {} is not on this cluster", m.job),
        });
    };
    let state = job.lifecycle.state();
    if state != JobState::Running && state != JobState::Migrating {
        return Err(ErrorBody {
            code: "conflict".into(),
            message: format!("job {} is {state}; only a RUNNING job migrates", m.job),
        });
    }
    Ok(job)
}

/// The live instance of `job` that moves (the one named, else the first RUNNING) and its
/// node: else the refusal.
fn instance_to_move(job: &ClusterJob, m: &Migrate) -> Result<(InstanceId, String), ErrorBody> {
    let old = job.instances.iter().find(|i| match &m.instance {
        Some(id) => &i.id == id,
        None => i.lifecycle.state() == InstanceState::Running,
    });
    let Some(old) = old.filter(|i| !i.is_over()) else {
        let which = m
            .instance
            .as_ref()
            .map_or("a running instance".to_string(), |i| {
                format!("live instance {i}")
            });
        return Err(ErrorBody {
            code: "not_found".into(),
            message: format!("job {} has no {which} here", m.job),
        });
    };
    Ok((old.id.clone(), old.node.clone().unwrap_or_default()))
}

/// `job` is MIGRATING (`why`) to `placed`, the move recorded unless one is already; a refused
/// change is noted (the instance moves all the same, untracked).
fn start_migrating(
    job: &mut ClusterJob,
    why: &str,
    placed: &str,
    now: u64,
    refusals: &mut Refusals,
) {
    let migrating = job.lifecycle.reconcile(JobState::Migrating, now, why);
    let instead = "the instance moves all the same; the job's state follows its instances";
    if refusals
        .check(migrating, job.id.as_str(), None, instead)
        .is_some()
        && job.migration.is_none()
    {
        job.migration = Some(Migration {
            first_new: job.instances.len(),
            target: placed.to_string(),
            from_cluster: None,
            to_cluster: None,
        });
    }
}
