//! Clusters: registration, links coming up, aggregates, and liveness (a silent cluster is INACTIVE, its jobs move after the timeout).

use super::*;

impl RootState {
    pub(crate) fn register(
        &mut self,
        request: RegisterRequest,
        fx: &mut Fx,
    ) -> Result<RegisterReply, ErrorBody> {
        if request.role != PeerRole::Cluster {
            return Err(ErrorBody {
                code: "invalid".into(),
                message: format!(
                    "role {:?} cannot register with the root; only clusters can",
                    request.role
                ),
            });
        }
        let id = match request
            .previous_id
            .filter(|id| self.clusters.contains_key(id))
        {
            Some(id) => id,
            None => {
                check_id("cluster name", &request.name).map_err(|e| ErrorBody {
                    code: "invalid".into(),
                    message: format!("name: {e}"),
                })?;
                request.name.clone()
            }
        };
        let now = self.cx.now_ms();
        let mut came_back = false;
        let record = match self.clusters.remove(&id) {
            Some(mut old) => {
                if old.lifecycle.state() == ClusterState::Inactive {
                    came_back = true;
                    // INACTIVE -> ACTIVE is in the table: a refusal would be a bug, logged
                    if let Err(e) =
                        old.lifecycle
                            .transition(ClusterState::Active, now, "registered again")
                    {
                        warn!(cluster = %id, error = %e, "cluster state refused; it stays INACTIVE");
                    }
                }
                old.location = request.location;
                old.labels = request.labels;
                old.last_seen_ms = now;
                old
            }
            None => ClusterRecord {
                id: id.clone(),
                name: request.name,
                location: request.location,
                labels: request.labels,
                lifecycle: Lifecycle::new(ClusterState::Active, now, "registered"),
                aggregate: None,
                last_seen_ms: now,
            },
        };
        info!(cluster = %id, "cluster registered");
        self.clusters.insert(id.clone(), record);
        self.refresh_offered(&id);
        fx.persist.push(cluster_key(&id));
        if came_back {
            self.retry_waiting(&format!("cluster {id} is back; retrying"), fx);
        }
        Ok(RegisterReply {
            id,
            channel: ChannelSettings {
                kind: ChannelKind::Ws,
                broker: None,
                topics: None,
                status_interval_ms: self.config.aggregate_interval.as_millis().max(1) as u64,
                max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            },
            credentials: None,
        })
    }

    /// Heard from `cluster`: ACTIVE again if it was not, and then re-synced.
    pub(super) fn cluster_up(&mut self, cluster: &str, fx: &mut Fx) {
        let Some(record) = self.clusters.get_mut(cluster) else {
            return;
        };
        record.last_seen_ms = self.cx.now_ms();
        if record.lifecycle.state() == ClusterState::Inactive
            && record
                .lifecycle
                .transition(ClusterState::Active, self.cx.now_ms(), "heard from again")
                .is_ok()
        {
            fx.persist.push(cluster_key(cluster));
            self.refresh_offered(cluster);
            self.sync(cluster, fx);
            // a cluster back is capacity back, even with as many nodes as before
            self.retry_waiting(&format!("cluster {cluster} is back; retrying"), fx);
        }
    }

    /// Gives every NOT_DEPLOYABLE job another chance (capacity appeared).
    fn retry_waiting(&mut self, reason: &str, fx: &mut Fx) {
        let waiting: Vec<String> = self
            .jobs
            .values()
            .filter(|j| j.lifecycle.state() == JobState::NotDeployable)
            .map(|j| j.id.to_string())
            .collect();
        for job in waiting {
            if let Some(record) = self.jobs.get_mut(&job) {
                record.at.refused_by.clear();
            }
            self.reschedule(&job, reason, fx);
        }
    }

    /// `cluster`'s link came up (it registered, or dialed in again): ACTIVE, and asked for
    /// every job it keeps, so that what either side missed while apart is reconciled.
    pub(super) fn linked(&mut self, cluster: &str, fx: &mut Fx) {
        let was_active = self
            .clusters
            .get(cluster)
            .is_some_and(|c| c.lifecycle.state() == ClusterState::Active);
        self.cluster_up(cluster, fx);
        if was_active {
            self.sync(cluster, fx);
        }
    }

    /// Marks clusters silent for `missed_aggregates` intervals INACTIVE, and moves the jobs of
    /// clusters INACTIVE for longer than `cluster_timeout`.
    pub(crate) fn check_clusters(&mut self, fx: &mut Fx) {
        let now = self.cx.now_ms();
        let silent_limit = (self.config.aggregate_interval * self.config.missed_aggregates.max(1))
            .as_millis() as u64;
        let timeout = self.config.cluster_timeout.as_millis() as u64;
        let silent: Vec<String> = self
            .clusters
            .values()
            .filter(|c| {
                c.lifecycle.state() == ClusterState::Active
                    && now.saturating_sub(c.last_seen_ms) > silent_limit
            })
            .map(|c| c.id.clone())
            .collect();
        for cluster in silent {
            let reason = format!(
                "no aggregate for {} intervals ({} ms)",
                self.config.missed_aggregates, silent_limit
            );
            self.cluster_lost(&cluster, &reason, fx);
        }
        let gone: Vec<String> = self
            .clusters
            .values()
            .filter(|c| {
                c.lifecycle.state() == ClusterState::Inactive
                    && c.lifecycle
                        .history()
                        .last()
                        .is_some_and(|h| now.saturating_sub(h.at_ms) >= timeout)
            })
            .map(|c| c.id.clone())
            .collect();
        for cluster in gone {
            let jobs: Vec<String> = self
                .jobs
                .values()
                .filter(|j| {
                    j.is_live() && j.holds(&cluster) && j.lifecycle.state() != JobState::Terminating
                })
                .map(|j| j.id.to_string())
                .collect();
            for job in jobs {
                let reason = format!(
                    "cluster {cluster} INACTIVE for more than {:?}",
                    self.config.cluster_timeout
                );
                self.leave_cluster(&job, &cluster, &reason, fx);
            }
        }
    }

    pub(super) fn cluster_lost(&mut self, cluster: &str, reason: &str, fx: &mut Fx) {
        let Some(record) = self.clusters.get_mut(cluster) else {
            return;
        };
        if record
            .lifecycle
            .transition(ClusterState::Inactive, self.cx.now_ms(), reason)
            .is_ok()
        {
            // a cluster that said goodbye (close code 1000) is news, not a problem
            if reason.contains("code 1000") {
                info!(cluster, reason, "cluster inactive");
            } else {
                warn!(cluster, reason, "cluster inactive");
            }
            // what was on its way there is lost with it
            self.sent.remove(cluster);
            self.refresh_offered(cluster);
            fx.persist.push(cluster_key(cluster));
        }
        // queries to it will not be answered
        self.queries.retain(|_, q| !q.is_closed());
    }

    pub(super) fn on_aggregate(&mut self, cluster: &str, aggregate: ClusterAggregate, fx: &mut Fx) {
        self.cluster_up(cluster, fx);
        let Some(record) = self.clusters.get_mut(cluster) else {
            return;
        };
        let more_nodes =
            aggregate.ready_nodes > record.aggregate.as_ref().map_or(0, |a| a.ready_nodes);
        let seen = aggregate.deploys_seen;
        record.aggregate = Some(aggregate);
        self.sent_counted(cluster, seen);
        self.refresh_offered(cluster);
        if more_nodes {
            fx.persist.push(cluster_key(cluster));
            // capacity appeared: jobs nothing could take get another chance
            self.retry_waiting(&format!("cluster {cluster} has new nodes; retrying"), fx);
            // and spread jobs left short of replicas when a part found no other cluster
            let short: Vec<(String, u32)> = self
                .jobs
                .values()
                .filter(|j| {
                    !j.at.parts.is_empty()
                        && j.is_live()
                        && !matches!(
                            j.lifecycle.state(),
                            JobState::Terminating | JobState::Scaling | JobState::Migrating
                        )
                })
                .filter_map(|j| {
                    let held: u32 = j.at.parts.iter().map(|p| p.replicas).sum();
                    (held < j.spec.replicas).then(|| (j.id.to_string(), j.spec.replicas - held))
                })
                .collect();
            for (job, missing) in short {
                if let Some(record) = self.jobs.get_mut(&job) {
                    record.at.refused_by.clear();
                }
                let reason = format!("cluster {cluster} has new nodes; placing what is missing");
                self.place_part(&job, missing, &reason, fx);
            }
        }
    }
}
