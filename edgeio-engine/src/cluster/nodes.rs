//! Workers: registration (ids kept across restarts), status reports, and liveness (LOST on their will or after missed heartbeats).

use super::*;

impl ClusterState {
    pub(crate) fn register(
        &mut self,
        request: RegisterRequest,
        fx: &mut Fx,
    ) -> Result<RegisterReply, ErrorBody> {
        let invalid = |message: String| ErrorBody {
            code: "invalid".into(),
            message,
        };
        if request.role != PeerRole::Node {
            return Err(invalid(format!(
                "role {:?} cannot register with a cluster; only nodes can",
                request.role
            )));
        }
        let Some(capabilities) = request.capabilities else {
            return Err(invalid(
                "capabilities: (missing): a node must send its capabilities".into(),
            ));
        };
        let known = request.previous_id.filter(|id| self.nodes.contains_key(id));
        let id = match known {
            Some(id) => id,
            None => {
                let base = if check_id("node id", &request.name).is_ok() {
                    request.name.clone()
                } else {
                    "node".to_string()
                };
                if self.nodes.contains_key(&base) || base == "node" {
                    let suffix = self.cx.next_uuid().simple().to_string();
                    format!("{base}-{}", &suffix[..8])
                } else {
                    base
                }
            }
        };
        let now = self.cx.now_ms();
        let total = NodeRecord::total_of(&capabilities);
        let record = match self.nodes.remove(&id) {
            Some(mut old) => {
                if old.lifecycle.state() == NodeState::Lost {
                    // LOST -> READY is in the table: a refusal would be a bug, logged
                    if let Err(e) =
                        old.lifecycle
                            .transition(NodeState::Ready, now, "registered again")
                    {
                        warn!(node = %id, error = %e, "node state refused; it stays LOST");
                    }
                }
                old.capabilities = capabilities;
                old.total = total;
                old.last_seen_ms = now;
                old
            }
            None => NodeRecord {
                id: id.clone(),
                name: request.name.clone(),
                capabilities,
                lifecycle: Lifecycle::new(NodeState::Ready, now, "registered"),
                free: total,
                total,
                instances: 0,
                usage: None,
                last_seen_ms: now,
            },
        };
        info!(node = %id, name = %record.name, "node registered");
        self.candidates.insert(record.candidate(now));
        self.nodes.insert(id.clone(), record);
        fx.persist.push(Self::node_key(&id));
        let mut channel = self.config.channel.clone();
        if channel.kind == ChannelKind::Mqtt {
            channel.topics = Some(Topics::for_node(&id));
        }
        Ok(RegisterReply {
            id,
            channel,
            credentials: None,
        })
    }

    pub(super) fn node_heard(&mut self, node: &str, fx: &mut Fx) {
        let now = self.cx.now_ms();
        let Some(record) = self.nodes.get_mut(node) else {
            return;
        };
        record.last_seen_ms = now;
        if record.lifecycle.state() == NodeState::Lost
            && record
                .lifecycle
                .transition(NodeState::Ready, now, "heard from again")
                .is_ok()
        {
            info!(node, "node is back");
            self.candidates.insert(record.candidate(now));
            fx.persist.push(Self::node_key(node));
        }
    }

    /// Marks LOST the instances on `node` that `which` picks, tells the root of each, and
    /// returns the jobs that changed (persisted). An instance whose table refuses LOST (an
    /// exited one stays EXITED) is noted as a refusal and keeps its state.
    pub(super) fn mark_lost(
        &mut self,
        node: &str,
        which: impl Fn(&InstanceRecord) -> bool,
        why: &str,
        fx: &mut Fx,
    ) -> Vec<String> {
        let now = self.cx.now_ms();
        let mut changed_jobs = Vec::new();
        for job in self.jobs.values_mut() {
            let lost = job.lose(
                |i| i.node.as_deref() == Some(node) && which(i),
                now,
                why,
                &mut self.refusals,
            );
            for instance in &lost {
                fx.send_up.push(instance_event(
                    &self.cx,
                    &self.config.id,
                    &job.id,
                    instance,
                    node,
                    InstanceState::Lost,
                    why.to_string(),
                ));
            }
            if !lost.is_empty() {
                fx.persist.push(Self::job_key(job.id.as_str()));
                changed_jobs.push(job.id.to_string());
            }
        }
        changed_jobs
    }

    pub(super) fn node_lost(&mut self, node: &str, reason: &str, fx: &mut Fx) {
        let now = self.cx.now_ms();
        let Some(record) = self.nodes.get_mut(node) else {
            return;
        };
        if record
            .lifecycle
            .transition(NodeState::Lost, now, reason)
            .is_err()
        {
            return;
        }
        warn!(node, reason, "node lost");
        self.candidates.remove(node);
        fx.persist.push(Self::node_key(node));
        let why = format!("node {node} lost: {reason}");
        // a job whose move's new instance went with the node keeps its old placement
        for job in self.mark_lost(node, |_| true, &why, fx) {
            if let Some(job) = self.jobs.get_mut(&job) {
                job.settle(now, &mut self.refusals);
            }
        }
        self.fail_exited_on(node, &why, fx);
        self.relocate_from(node, fx);
    }

    pub(super) fn on_status(&mut self, node: &str, status: NodeStatus, fx: &mut Fx) {
        self.node_heard(node, fx);
        let Some(record) = self.nodes.get_mut(node) else {
            debug!(node, "status from a node that never registered");
            return;
        };
        record.usage = status.usage;
        record.instances = status
            .instances
            .iter()
            .filter(|i| !matches!(i.state, InstanceState::Terminated | InstanceState::Failed))
            .count();
        // Node records change with every status; they are written when their state changes,
        // not every interval, so an idle cluster does not write to disk once a second.
        self.reconcile_reports(node, &status, fx);
        self.stop_unwanted(node, &status, fx);
        self.missing_from(node, &status, fx);
        // after reconciling, so an instance the report ended is no longer counted as on
        // its way; the worker's figure lags the deploys in flight to it, which stay reserved
        self.update_from_status(node, &status);
    }

    pub(crate) fn check_heartbeats(&mut self, fx: &mut Fx) {
        let limit = self.config.status_interval() * self.config.missed_heartbeats.max(1);
        let now = self.cx.now_ms();
        let late: Vec<String> = self
            .nodes
            .values()
            .filter(|n| {
                n.lifecycle.state() == NodeState::Ready
                    && now.saturating_sub(n.last_seen_ms) > limit.as_millis() as u64
            })
            .map(|n| n.id.clone())
            .collect();
        for node in late {
            let reason = format!(
                "no status for {} missed intervals ({limit:?})",
                self.config.missed_heartbeats
            );
            self.node_lost(&node, &reason, fx);
        }
        // once per interval, so a scheduler refusing stale data sees each report's age
        self.age_candidates();
    }
}
