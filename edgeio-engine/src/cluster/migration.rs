//! Moving an instance make-before-break: the new one starts, the old one stops once it runs.

use super::*;

impl ClusterState {
    /// `migrate` inside this cluster: starts the instance anew on the target node (or on any
    /// other node that fits) and terminates the old one once the new one runs
    /// (make-before-break). Moves to another cluster are the root's.
    pub(super) fn on_migrate(&mut self, command: &Envelope, m: &Migrate, fx: &mut Fx) -> Envelope {
        let Some(job) = self.jobs.get(m.job.as_str()) else {
            return self.refuse(
                command,
                "not_found",
                format!("job {} is not on this cluster", m.job),
            );
        };
        if job.lifecycle.state() != JobState::Running
            && job.lifecycle.state() != JobState::Migrating
        {
            return self.refuse(
                command,
                "conflict",
                format!(
                    "job {} is {}; only a RUNNING job migrates",
                    m.job,
                    job.lifecycle.state()
                ),
            );
        }
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
            return self.refuse(
                command,
                "not_found",
                format!("job {} has no {which} here", m.job),
            );
        };
        let (old_id, from) = (old.id.clone(), old.node.clone().unwrap_or_default());
        let mut spec = job.spec.clone();
        let mut except = Vec::new();
        let target = match &m.target {
            MigrateTarget::Node(node) if node == &from => {
                return self.refuse(
                    command,
                    "invalid",
                    format!("instance {old_id} already runs on node {node}"),
                );
            }
            MigrateTarget::Node(node) => {
                if self.candidates.get(node).is_none() {
                    return self.refuse(
                        command,
                        "not_found",
                        format!(
                            "node {node} is not a READY node of cluster {}",
                            self.config.id
                        ),
                    );
                }
                // the pin filter keeps the scheduler to that node, without a search
                spec.worker_node = Some(node.clone());
                format!("node {node}")
            }
            MigrateTarget::Anywhere => {
                except.push(from.clone());
                "another node".to_string()
            }
            MigrateTarget::Cluster(c) => {
                return self.refuse(
                    command,
                    "unsupported",
                    format!(
                        "moving to cluster {c} is decided by the root, not by cluster {}",
                        self.config.id
                    ),
                );
            }
        };
        let placed = match self.place_many(&spec, 1, &except) {
            Ok(mut placed) => placed.remove(0),
            Err(SchedulerError::Unschedulable(u)) => {
                return self.unschedulable(command, &format!("cannot move {old_id} to {target}"), u)
            }
            Err(e) => return self.refuse(command, "invalid", e.to_string()),
        };
        let now = self.cx.now_ms();
        let cluster = self.config.id.clone();
        let Some(job) = self.jobs.get_mut(m.job.as_str()) else {
            return command.ack_in(&self.cx, &cluster);
        };
        let why = format!("migrate {old_id} from {from} to {placed}");
        let migrating = job.lifecycle.reconcile(JobState::Migrating, now, &why);
        let instead = "the instance moves all the same; the job's state follows its instances";
        if self
            .refusals
            .check(migrating, m.job.as_str(), None, instead)
            .is_some()
            && job.migration.is_none()
        {
            job.migration = Some(Migration {
                first_new: job.instances.len(),
                target: placed.clone(),
                from_cluster: None,
                to_cluster: None,
            });
        }
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
        command.ack_in(&self.cx, &cluster)
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
