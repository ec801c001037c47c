//! A message arriving at the root or a cluster: answers go to the command waiting for them, the rest to the engine.

use super::*;

impl Sim {
    pub(super) fn deliver(&mut self, from: Addr, to: Addr, env: Envelope) -> Result<(), Violation> {
        match to {
            Addr::Root => self.deliver_to_root(from, env),
            Addr::Cluster(i) => {
                self.deliver_to_cluster(i, from, env);
                Ok(())
            }
            Addr::Worker(w) => {
                self.deliver_to_worker(w, env);
                Ok(())
            }
        }
    }

    pub(super) fn deliver_to_root(&mut self, from: Addr, env: Envelope) -> Result<(), Violation> {
        let Addr::Cluster(i) = from else {
            return Ok(());
        };
        if let Some((re, outcome)) = outcome_of(&env.body) {
            if let Some(pending) = self.root.link.pending.remove(re) {
                if matches!(outcome, CommandOutcome::Acked) {
                    self.check_acked(i, &pending.env)?;
                }
                self.outcome(Addr::Root, pending.tag, Ok(outcome));
                return Ok(());
            }
        }
        if matches!(&env.body, Message::Nack(n) if n.retry) {
            // "not now": the command stays pending and its re-send timer sends it again,
            // as `ReliableParent` does; the engine never sees it
            return Ok(());
        }
        let Some(root) = self.root.state.as_mut() else {
            return Ok(());
        };
        let mut fx = Effects::default();
        let child = format!("c{i}");
        let aggregate = matches!(env.body, Message::ClusterAggregate(_));
        let started = Instant::now();
        root.on_cluster_event(
            ParentEvent::Message {
                child,
                envelope: env,
            },
            &mut fx,
        );
        if aggregate {
            self.engine_time.aggregates += 1;
            self.engine_time.aggregate_time += started.elapsed();
        }
        self.apply_root(fx);
        Ok(())
    }

    pub(super) fn deliver_to_cluster(&mut self, i: usize, from: Addr, env: Envelope) {
        let me = Addr::Cluster(i);
        if from == Addr::Root {
            if env.body.is_command() {
                if let Some(answer) = self.clusters[i].link.answered.get(&env.id).cloned() {
                    self.send(me, Addr::Root, answer);
                    return;
                }
            }
            let Some(cluster) = self.clusters[i].state.as_mut() else {
                return;
            };
            let mut fx = Effects::default();
            let answer = cluster.on_root_message(&env, &mut fx);
            let answer = self.apply_cluster(i, fx, answer);
            match answer.as_ref().map(|a| &a.body) {
                // as `ReliableChild`: "not now" is not kept, so the root's next copy of the
                // command reaches the engine again
                Some(Message::Nack(n)) if n.retry => {}
                Some(body) => {
                    if matches!(body, Message::Ack(_)) {
                        self.check_ack_stored(i, &env);
                    }
                    if let Some(answer) = answer {
                        self.clusters[i]
                            .link
                            .answered
                            .insert(env.id.clone(), answer);
                    }
                }
                None => {}
            }
            return;
        }
        let Addr::Worker(w) = from else {
            return;
        };
        if let Some((re, outcome)) = outcome_of(&env.body) {
            if let Some(pending) = self.clusters[i].link.pending.remove(re) {
                self.outcome(me, pending.tag, Ok(outcome));
                return;
            }
        }
        let Some(cluster) = self.clusters[i].state.as_mut() else {
            return;
        };
        let mut fx = Effects::default();
        let child = format!("w{w}");
        let status = matches!(env.body, Message::NodeStatus(_));
        let started = Instant::now();
        cluster.on_node_event(
            ParentEvent::Message {
                child,
                envelope: env,
            },
            &mut fx,
        );
        if status {
            self.engine_time.statuses += 1;
            self.engine_time.status_time += started.elapsed();
        }
        self.apply_cluster(i, fx, None);
    }
}
