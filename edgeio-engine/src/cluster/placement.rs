//! Placing a deploy's replicas on nodes: candidates, reservations, refusals carrying the scheduler's `Unschedulable`.

use super::*;

impl ClusterState {
    /// `deploy`: places the job's replicas on nodes, all or none (a nack with the scheduler's
    /// reasons when not all fit); a deploy of a job placed here already is acked again.
    pub(super) fn on_deploy(
        &mut self,
        command: &Envelope,
        deploy: &Deploy,
        fx: &mut Fx,
    ) -> Envelope {
        // a re-sent deploy of a job placed here already; one that was given back (terminated)
        // and now comes again is placed anew
        let placed_here = self
            .jobs
            .get(deploy.job.as_str())
            .is_some_and(|j| j.is_live() && j.lifecycle.state() != JobState::Terminating);
        if placed_here {
            return command.ack_in(&self.cx, &self.config.id);
        }
        if let Err(e) = check_prefix(deploy) {
            return command.nack_in(&self.cx, &self.config.id, e);
        }
        let now = self.cx.now_ms();
        let spec = &deploy.spec;
        let placed = match self.place_many(spec, spec.replicas.max(1) as usize, &[]) {
            Ok(placed) => placed,
            Err(e) => return self.deploy_refused(command, deploy, e),
        };
        let policy = self.scheduler.name().to_string();
        self.jobs
            .insert(deploy.job.to_string(), placed_job(deploy, now));
        for node in placed {
            let reason = format!("placed on {node} by {policy}");
            self.start_on(deploy.job.as_str(), &node, reason, fx);
        }
        fx.persist.push(Self::job_key(deploy.job.as_str()));
        command.ack_in(&self.cx, &self.config.id)
    }

    /// The refusal of a `deploy` whose replicas could not be placed (`e`): when nothing fits,
    /// the scheduler's explanation (after how many fit, when it asked for more than one).
    fn deploy_refused(&self, command: &Envelope, deploy: &Deploy, e: SchedulerError) -> Envelope {
        let u = match e {
            SchedulerError::Unschedulable(u) => u,
            e => return self.refuse(command, "invalid", e.to_string()),
        };
        info!(job = %deploy.job, explanation = %u, "refusing a job: no node fits");
        let spec = &deploy.spec;
        let what = (spec.replicas > 1)
            .then(|| format!("{} replicas asked, {} fit", spec.replicas, u.fits));
        self.unschedulable(command, what.as_deref(), u)
    }

    /// A refusal of `command` with `code` and `message`.
    pub(super) fn refuse(&self, command: &Envelope, code: &str, message: String) -> Envelope {
        command.nack_in(
            &self.cx,
            &self.config.id,
            ErrorBody {
                code: code.into(),
                message,
            },
        )
    }

    /// A refusal of `command` because nothing fits, with the scheduler's explanation (after
    /// `what` did not fit, when given).
    pub(super) fn unschedulable(
        &self,
        command: &Envelope,
        what: Option<&str>,
        u: edgeio_core::scheduler::Unschedulable,
    ) -> Envelope {
        let u = u.in_tier(Tier::Nodes);
        let message = match what {
            Some(what) => format!("cluster {}: {what}: {u}", self.config.id),
            None => format!("cluster {}: {u}", self.config.id),
        };
        Envelope::new_in(
            &self.cx,
            &self.config.id,
            Message::Nack(Nack {
                re: command.id.clone(),
                error: ErrorBody {
                    code: "unschedulable".into(),
                    message,
                },
                unschedulable: Some(u),
                retry: false,
            }),
        )
    }

    /// The refusal of `command` whose replicas could not be placed (`e`): when nothing fits,
    /// `what` (told how many fit) and the scheduler's explanation; else `invalid`.
    pub(super) fn placement_refused(
        &self,
        command: &Envelope,
        e: SchedulerError,
        what: impl FnOnce(u32) -> String,
    ) -> Envelope {
        match e {
            SchedulerError::Unschedulable(u) => self.unschedulable(command, Some(&what(u.fits)), u),
            e => self.refuse(command, "invalid", e.to_string()),
        }
    }

    /// A deploy a node never answered for good: the node may be slow but alive and have
    /// started the instance, so it is not failed (relocating it could run it twice). Its
    /// status reports tell what it runs; while the instance is still PENDING on a READY node
    /// the deploy is sent again, as a new command (a node starts an instance once, however
    /// often it is asked). A node that is not READY is handled as lost.
    fn deploy_unanswered(&mut self, job: &JobId, instance: &InstanceId, why: &str, fx: &mut Fx) {
        let Some(record) = self.jobs.get(job.as_str()) else {
            return;
        };
        let Some(i) = record.instances.iter().find(|i| &i.id == instance) else {
            return;
        };
        let node = i.node.clone().unwrap_or_default();
        let ready = self
            .nodes
            .get(&node)
            .is_some_and(|n| n.lifecycle.state() == NodeState::Ready);
        if i.lifecycle.state() != InstanceState::Pending || !ready {
            debug!(job = %job, instance = %instance, node, why, "deploy unanswered; the node's reports settle it");
            return;
        }
        warn!(job = %job, instance = %instance, node, why, "deploy unanswered; sending it again");
        fx.commands.push(deploy_instance(
            &self.cx,
            &self.config.id,
            record,
            instance,
            &node,
        ));
    }

    pub(super) fn on_deploy_outcome(
        &mut self,
        job: &JobId,
        instance: &InstanceId,
        outcome: Result<CommandOutcome, TransportError>,
        fx: &mut Fx,
    ) {
        let reason = match outcome {
            Ok(CommandOutcome::Acked) => return,
            Ok(CommandOutcome::GaveUp(why)) => {
                self.deploy_unanswered(job, instance, &why, fx);
                return;
            }
            Ok(CommandOutcome::Nacked(e) | CommandOutcome::Unschedulable(e, _)) => {
                format!("the worker refused: {}", e.message)
            }
            Err(e) => format!("the worker could not be reached: {e}"),
        };
        let Some(record) = self.jobs.get_mut(job.as_str()) else {
            return;
        };
        let Some(i) = record.instance_mut(instance) else {
            return;
        };
        if i.is_over() {
            return;
        }
        let node = i.node.clone().unwrap_or_default();
        // it never ran there: what it reserved is free again
        self.release(&node, instance);
        let Some(i) = self
            .jobs
            .get_mut(job.as_str())
            .and_then(|r| r.instance_mut(instance))
        else {
            return;
        };
        let failed = i
            .lifecycle
            .reconcile(InstanceState::Failed, self.cx.now_ms(), &reason);
        let instead = "the instance keeps its state and is not relocated";
        if self
            .refusals
            .check(failed, job.as_str(), Some(instance), instead)
            .is_some()
        {
            fx.persist.push(Self::job_key(job.as_str()));
            let refusal = self.relocate_failed(job.as_str(), instance, &node, &reason, fx);
            if let Some(record) = self.jobs.get_mut(job.as_str()) {
                record.settle(self.cx.now_ms(), &mut self.refusals);
            }
            let event = instance_event(
                &self.cx,
                &self.config.id,
                job,
                instance,
                &node,
                InstanceState::Failed,
                reason,
            );
            fx.send_up
                .push(super::relocation::escalating(event, refusal));
        }
    }
}

/// Whether `deploy`'s instance prefix, when it has one, names a part of its job: the job's id,
/// a '.', then a valid id of at most [`MAX_PREFIX`] characters in all. Else the refusal.
fn check_prefix(deploy: &Deploy) -> Result<(), ErrorBody> {
    let Some(prefix) = &deploy.instance_prefix else {
        return Ok(());
    };
    let part_of_job = prefix
        .strip_prefix(deploy.job.as_str())
        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'));
    let valid = check_id("instance prefix", prefix).is_ok() && prefix.len() <= MAX_PREFIX;
    if part_of_job && valid {
        return Ok(());
    }
    Err(ErrorBody {
        code: "invalid".into(),
        message: format!(
            "instance_prefix: {prefix:?} must be the job's id {}, a '.', then letters, digits, '.', '_' or '-', at most {MAX_PREFIX} characters in all",
            deploy.job
        ),
    })
}

/// The record of a job `deploy` placed on nodes at `now`, before its instances start.
fn placed_job(deploy: &Deploy, now: u64) -> ClusterJob {
    let mut job = ClusterJob::new(
        deploy.job.clone(),
        deploy.spec.clone(),
        JobState::ScheduledNode,
        now,
        "placed on nodes",
    );
    job.first_instance = deploy.first_instance;
    job.at.instance_prefix = deploy.instance_prefix.clone();
    job
}
