//! Terminating a job or one instance on its nodes.

use super::*;

impl ClusterState {
    pub(super) fn on_terminate(
        &mut self,
        command: &Envelope,
        t: &Terminate,
        fx: &mut Fx,
    ) -> Envelope {
        let now = self.cx.now_ms();
        let id = self.config.id.clone();
        let Some(job) = self.jobs.get_mut(t.job.as_str()) else {
            return command.ack_in(&self.cx, &id);
        };
        if let Err(e) = job
            .lifecycle
            .reconcile(JobState::Terminating, now, "terminate requested")
        {
            self.refusals.note(
                t.job.as_str(),
                None,
                &e,
                "its instances are stopped all the same",
            );
        }
        for instance in job
            .instances
            .iter_mut()
            .filter(|i| !i.is_over() && t.instance.as_ref().is_none_or(|only| only == &i.id))
        {
            let node = instance.node.clone().unwrap_or_default();
            let reachable = self
                .nodes
                .get(&node)
                .is_some_and(|n| n.lifecycle.state() == NodeState::Ready);
            if reachable {
                let stop = stop_instance(
                    &self.cx,
                    &id,
                    &node,
                    &t.job,
                    &instance.id,
                    t.grace_ms,
                    Tag::Terminate,
                );
                fx.commands.push(stop);
            } else {
                // nothing to stop where nothing is reachable; if the node comes back with
                // it still running, its report is answered with a terminate (stop_unwanted)
                let reason = format!("node {node} is not reachable; recorded as terminated");
                if let Err(e) =
                    instance
                        .lifecycle
                        .reconcile(InstanceState::Terminated, now, &reason)
                {
                    self.refusals.note(
                        t.job.as_str(),
                        Some(&instance.id),
                        &e,
                        "the instance keeps its state",
                    );
                }
                fx.send_up.push(instance_event(
                    &self.cx,
                    &id,
                    &t.job,
                    &instance.id,
                    &node,
                    InstanceState::Terminated,
                    reason,
                ));
            }
        }
        job.settle(now, &mut self.refusals);
        fx.persist.push(Self::job_key(t.job.as_str()));
        command.ack_in(&self.cx, &id)
    }
}
