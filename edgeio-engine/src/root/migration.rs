//! Moving a job make-before-break: inside its cluster, to another cluster, or anywhere.

use super::*;

impl RootState {
    pub(super) fn on_migrate_outcome(
        &mut self,
        job: &JobId,
        cluster: &str,
        anywhere: bool,
        node: Option<&str>,
        outcome: Result<CommandOutcome, TransportError>,
        fx: &mut Fx,
    ) {
        let Some((error, unschedulable)) = refusal(cluster, outcome) else {
            return;
        };
        let why = format!("cluster {cluster} cannot move it: {error}");
        if let Some(node) = node {
            // its filter's "maybe" may have been a false positive: the next ACTIVE cluster
            // whose filter may hold the node and that holds no part of the job, make-before-break
            let next = self.jobs.get(job.as_str()).and_then(|j| {
                self.clusters
                    .values()
                    .find(|c| {
                        c.id != cluster
                            && c.lifecycle.state() == ClusterState::Active
                            && c.may_have_node(node)
                            && !j.holds(&c.id)
                    })
                    .map(|c| c.id.clone())
            });
            if let Some(next) = next {
                info!(job = %job, to = %next, node, %why, "migrating to another cluster that may hold the node");
                self.migrate_across(job.as_str(), cluster, &next, Some(node), fx);
                return;
            }
        }
        if anywhere {
            // no other node there: another cluster (one holding no part of it),
            // make-before-break
            let others = self.jobs.get(job.as_str()).map(|j| {
                let mut held = j.clusters();
                held.push(cluster.to_string());
                let set = self.candidates(&held, &j.spec.node_selector);
                self.scheduler.place(&j.spec_on(cluster), &set)
            });
            if let Some(Ok(p)) = others {
                info!(job = %job, to = %p.candidate, %why, "migrating to another cluster");
                self.migrate_across(job.as_str(), cluster, &p.candidate, None, fx);
                return;
            }
        }
        self.abandon_migration(job.as_str(), &why, unschedulable);
        fx.persist.push(job_key(job.as_str()));
    }

    /// Ends a migration that could not be made: the job stays where it ran, RUNNING.
    pub(super) fn abandon_migration(
        &mut self,
        id: &str,
        why: &str,
        unschedulable: Option<Unschedulable>,
    ) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        if job.lifecycle.state() != JobState::Migrating {
            return;
        }
        let across = job
            .migration
            .as_ref()
            .and_then(|m| Some((m.from_cluster.clone()?, m.to_cluster.clone())));
        if let Some((from, to)) = across {
            // the part (or the job) is the old cluster's again
            match job
                .at
                .parts
                .iter_mut()
                .find(|p| Some(&p.cluster) == to.as_ref())
            {
                Some(part) => part.cluster = from,
                None => job.at.cluster = Some(from),
            }
            if !job.at.parts.is_empty() {
                job.cluster_from_parts();
            }
        }
        job.unschedulable.extend(unschedulable);
        let why = format!("migration abandoned, it stays where it ran: {why}");
        warn!(job = id, %why, "migration abandoned");
        if let Err(e) = job
            .lifecycle
            .reconcile(JobState::Running, self.cx.now_ms(), &why)
        {
            self.refusals.note(
                id,
                None,
                &e,
                "the job keeps its state; the next report settles it",
            );
        }
        job.settle(self.cx.now_ms(), &mut self.refusals);
    }

    /// Starts moving job `id` (or, for a spread job, its part) from cluster `from` to
    /// `cluster` make-before-break (pinned to `node` there, when given): deployed there first;
    /// the cluster it leaves is told to terminate it once an instance of the new placement
    /// runs.
    pub(super) fn migrate_across(
        &mut self,
        id: &str,
        from: &str,
        cluster: &str,
        node: Option<&str>,
        fx: &mut Fx,
    ) {
        let now = self.cx.now_ms();
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let target = match node {
            Some(n) => format!("node {n} of cluster {cluster}"),
            None => format!("cluster {cluster}"),
        };
        let why = match job.at.parts.iter().find(|p| p.cluster == from) {
            Some(part) => format!(
                "migrate the part on cluster {from} ({} replicas) to {target} requested",
                part.replicas
            ),
            None => format!("migrate to {target} requested"),
        };
        if let Err(e) = job.lifecycle.reconcile(JobState::Migrating, now, &why) {
            self.refusals.note(
                id,
                None,
                &e,
                "nothing moves: no migration is recorded or sent",
            );
            return;
        }
        if let Some(part) = job.at.parts.iter_mut().find(|p| p.cluster == from) {
            part.cluster = cluster.to_string();
        }
        job.at.cluster = Some(cluster.to_string());
        if !job.at.parts.is_empty() {
            job.cluster_from_parts();
        }
        job.migration = Some(Migration {
            first_new: job.instances.len(),
            target,
            from_cluster: Some(from.to_string()),
            to_cluster: Some(cluster.to_string()),
        });
        if let Some((to, mut envelope, tag)) = self.deploy_command(id, cluster) {
            if let Message::Deploy(deploy) = &mut envelope.body {
                if let Some(n) = node {
                    deploy.spec.worker_node = Some(n.to_string());
                }
                // named after the cluster: the one it leaves may have made instances the
                // root has not heard of yet, numbered as these would be
                deploy
                    .instance_prefix
                    .get_or_insert_with(|| part_prefix(&deploy.job, cluster));
            }
            fx.commands.push((to, envelope, tag));
        }
        fx.persist.push(job_key(id));
    }

    /// Validates and starts a migration (see [`RootApi::migrate`]).
    pub(crate) fn migrate(
        &mut self,
        id: &str,
        target: MigrateTarget,
        instance: Option<InstanceId>,
        fx: &mut Fx,
    ) -> Result<JobView, ApiError> {
        let job = self.jobs.get(id).ok_or_else(|| ApiError::NotFound {
            kind: "job",
            id: id.to_string(),
        })?;
        let (cluster, from) = running_cluster(job, instance.as_ref())?;
        let cluster = self.part_to_move(job, cluster, from, &target)?;
        match self.route(job, &cluster, instance.as_ref(), &target)? {
            Route::Across { to, node } => {
                self.migrate_across(id, &cluster, &to, node.as_deref(), fx);
                Ok(self.jobs.get(id).map(RootJob::view).expect("a known job"))
            }
            Route::Within { anywhere } => {
                let now = self.cx.now_ms();
                let job = self.jobs.get_mut(id).expect("looked up above");
                let message = start_within(job, instance, &target, now, &mut self.refusals)?;
                let node = match target {
                    MigrateTarget::Node(n) => Some(n),
                    _ => None,
                };
                let tag = Tag::Migrate {
                    job: job.id.clone(),
                    cluster: cluster.clone(),
                    anywhere,
                    node,
                };
                let envelope = Envelope::new_in(&self.cx, &self.config.id, message);
                fx.commands.push((cluster, envelope, tag));
                fx.persist.push(job_key(id));
                Ok(job.view())
            }
        }
    }

    /// The ACTIVE clusters whose filter may hold `node`, in id order.
    fn node_clusters(&self, node: &str) -> Vec<String> {
        self.clusters
            .values()
            .filter(|c| c.lifecycle.state() == ClusterState::Active && c.may_have_node(node))
            .map(|c| c.id.clone())
            .collect()
    }

    /// The cluster whose placement moves: the job's, or for a spread job the part named by
    /// the instance (`from`, its cluster) or by the node's cluster. A spread job moves one
    /// part at a time.
    fn part_to_move(
        &self,
        job: &RootJob,
        cluster: String,
        from: Option<String>,
        target: &MigrateTarget,
    ) -> Result<String, ApiError> {
        if job.at.parts.is_empty() {
            return Ok(cluster);
        }
        let part = match (from, target) {
            (Some(c), _) => Some(c),
            (None, MigrateTarget::Node(node)) => self
                .node_clusters(node)
                .into_iter()
                .find(|c| job.at.parts.iter().any(|p| &p.cluster == c)),
            _ => None,
        };
        part.ok_or_else(|| {
            invalid(
                format!(
                    "job {} is spread over clusters {}: say which part moves",
                    job.id,
                    job.clusters().join(", ")
                ),
                "instance",
                "",
                "must name a live instance of the part to move (or a node of its cluster)",
            )
        })
    }

    /// Where a move of `job`'s placement on `cluster` to `target` goes, or why it cannot.
    fn route(
        &self,
        job: &RootJob,
        cluster: &str,
        instance: Option<&InstanceId>,
        target: &MigrateTarget,
    ) -> Result<Route, ApiError> {
        match target {
            MigrateTarget::Anywhere => Ok(Route::Within { anywhere: true }),
            MigrateTarget::Node(node) => self.route_to_node(job, cluster, instance, node),
            MigrateTarget::Cluster(c) => self.route_to_cluster(job, cluster, c),
        }
    }

    /// Where a move to `node` goes: within `cluster` when its filter may hold the node (it
    /// is asked first; refused, the next one is tried: see `on_migrate_outcome`), else to
    /// another cluster that may hold it and holds no part of the job.
    fn route_to_node(
        &self,
        job: &RootJob,
        cluster: &str,
        instance: Option<&InstanceId>,
        node: &str,
    ) -> Result<Route, ApiError> {
        let id = &job.id;
        let mut there = job
            .instances
            .iter()
            .filter(|i| !i.is_over() && instance.is_none_or(|only| only == &i.id))
            .peekable();
        if there.peek().is_some() && there.all(|i| i.node.as_deref() == Some(node)) {
            return Err(invalid(
                format!("job {id} already runs on node {node}"),
                "node",
                node,
                "must be another node than the one it runs on",
            ));
        }
        let maybe = self.node_clusters(node);
        let owner = maybe
            .iter()
            .find(|c| *c == cluster)
            .or_else(|| maybe.iter().find(|c| !job.holds(c)))
            .or(maybe.first())
            .ok_or_else(|| ApiError::NotFound {
                kind: "node",
                id: node.to_string(),
            })?;
        if owner == cluster {
            return Ok(Route::Within { anywhere: false });
        }
        if job.holds(owner) {
            return Err(invalid(
                format!("cluster {owner} of node {node} already runs a part of job {id}"),
                "node",
                node,
                "must be a node of the part's own cluster or of one holding no part of the job (scale to add replicas)",
            ));
        }
        Ok(Route::Across {
            to: owner.clone(),
            node: Some(node.to_string()),
        })
    }

    /// A move to cluster `to`: one that exists, is ACTIVE and holds no part of the job.
    fn route_to_cluster(&self, job: &RootJob, cluster: &str, to: &str) -> Result<Route, ApiError> {
        let id = &job.id;
        let record = self.clusters.get(to).ok_or_else(|| ApiError::NotFound {
            kind: "cluster",
            id: to.to_string(),
        })?;
        if to == cluster {
            return Err(invalid(
                format!("job {id} already runs on cluster {to}"),
                "cluster",
                to,
                "must be another cluster than the job's (or name a node)",
            ));
        }
        if job.holds(to) {
            return Err(invalid(
                format!("cluster {to} already runs a part of job {id}"),
                "cluster",
                to,
                "must be a cluster holding no part of the job (scale to add replicas)",
            ));
        }
        if record.lifecycle.state() != ClusterState::Active {
            return Err(ApiError::Unavailable {
                reason: format!("cluster {to} is INACTIVE"),
            });
        }
        Ok(Route::Across {
            to: to.to_string(),
            node: None,
        })
    }
}

/// Where a requested migration goes.
#[derive(Debug)]
enum Route {
    /// Inside the cluster it runs on; with `anywhere`, the cluster picks the node, and
    /// another cluster is tried when it has none.
    Within { anywhere: bool },
    /// To another cluster (pinned to a node there, when given).
    Across { to: String, node: Option<String> },
}

/// The cluster a RUNNING job runs on, and the cluster of `instance` when one is named
/// (`None` for an instance its own cluster reported without one).
fn running_cluster(
    job: &RootJob,
    instance: Option<&InstanceId>,
) -> Result<(String, Option<String>), ApiError> {
    let state = job.lifecycle.state();
    let cluster = job
        .at
        .cluster
        .clone()
        .filter(|_| state == JobState::Running);
    let Some(cluster) = cluster else {
        return Err(ApiError::Conflict {
            message: format!("job {} is {state}; only a RUNNING job migrates", job.id),
            details: Vec::new(),
        });
    };
    let Some(i) = instance else {
        return Ok((cluster, None));
    };
    let live = job.instances.iter().find(|x| &x.id == i && !x.is_over());
    let live = live.ok_or_else(|| ApiError::NotFound {
        kind: "instance",
        id: i.to_string(),
    })?;
    Ok((cluster, live.cluster.clone()))
}

/// Moves `job` to MIGRATING inside its cluster (the cluster picks or is told the node) and
/// returns the message that asks its cluster; a refused move changes nothing and answers 409.
fn start_within(
    job: &mut RootJob,
    instance: Option<InstanceId>,
    target: &MigrateTarget,
    now: u64,
    refusals: &mut Refusals,
) -> Result<Message, ApiError> {
    let text = match target {
        MigrateTarget::Node(n) => format!("node {n}"),
        _ => "another node or cluster".to_string(),
    };
    let why = format!("migrate to {text} requested");
    if let Err(e) = job.lifecycle.reconcile(JobState::Migrating, now, &why) {
        let id = job.id.as_str();
        refusals.note(id, None, &e, "the migration is refused; nothing moves");
        return Err(ApiError::Conflict {
            message: format!("job {id}: {e}"),
            details: Vec::new(),
        });
    }
    job.migration = Some(Migration {
        first_new: job.instances.len(),
        target: text,
        from_cluster: None,
        to_cluster: None,
    });
    Ok(Message::Migrate(Migrate {
        job: job.id.clone(),
        instance,
        target: target.clone(),
    }))
}

/// A 400 naming the field, its value and the rule it breaks.
fn invalid(message: String, field: &str, value: &str, rule: &str) -> ApiError {
    ApiError::Invalid {
        message,
        details: vec![FieldError {
            path: field.into(),
            value: value.into(),
            rule: rule.into(),
        }],
    }
}
