//! Queries from the root (nodes, jobs for re-sync, logs relayed to a worker) and the workers' replies.

use super::*;

impl ClusterState {
    pub(super) fn on_query(&mut self, query: &Envelope, what: &Query, fx: &mut Fx) {
        let result = match what {
            Query::Nodes => {
                let nodes: Vec<_> = self.nodes.values().map(NodeRecord::view).collect();
                serde_json::to_value(nodes).map_err(|e| ErrorBody {
                    code: "internal".into(),
                    message: e.to_string(),
                })
            }
            Query::Logs { job, .. } => {
                // the newest instance that ran, on whichever node it is
                let node = self.jobs.get(job.as_str()).and_then(|j| {
                    j.instances
                        .iter()
                        .rev()
                        .find(|i| !i.is_over() || i.lifecycle.state() == InstanceState::Exited)
                        .or(j.instances.last())
                        .and_then(|i| i.node.clone())
                });
                let Some(node) = node else {
                    let error = ErrorBody {
                        code: "not_found".into(),
                        message: format!("job {job} has no instance on this cluster"),
                    };
                    fx.send_up
                        .push(query.reply_in(&self.cx, &self.config.id, Err(error)));
                    return;
                };
                let ask = self.up(Message::Query(what.clone()));
                self.relayed.insert(ask.id.clone(), query.id.clone());
                if matches!(what, Query::Logs { follow: true, .. }) {
                    self.following
                        .insert(query.id.clone(), (node.clone(), ask.id.clone()));
                }
                fx.send_down.push((node, ask));
                return;
            }
            Query::Jobs => {
                let events: Vec<InstanceEvent> = self
                    .jobs
                    .values()
                    .filter(|j| j.is_live())
                    .flat_map(|j| {
                        j.instances.iter().map(|i| InstanceEvent {
                            job: j.id.clone(),
                            instance: i.id.clone(),
                            node: i.node.clone().unwrap_or_default(),
                            state: i.lifecycle.state(),
                            exit_code: i.exit_code,
                            reason: format!("re-synced from cluster {}", self.config.id),
                            unschedulable: None,
                        })
                    })
                    .collect();
                serde_json::to_value(events).map_err(|e| ErrorBody {
                    code: "internal".into(),
                    message: e.to_string(),
                })
            }
            Query::Cancel { query: id } => {
                if let Some((node, asked)) = self.following.remove(id) {
                    self.relayed.remove(&asked);
                    let cancel = self.up(Message::Query(Query::Cancel { query: asked }));
                    fx.send_down.push((node, cancel));
                }
                return;
            }
        };
        fx.send_up
            .push(query.reply_in(&self.cx, &self.config.id, result));
    }

    pub(super) fn on_query_reply(&mut self, reply: QueryReply, fx: &mut Fx) {
        let Some(re) = self.relayed.get(&reply.re).cloned() else {
            return;
        };
        if !reply.more {
            self.relayed.remove(&reply.re);
            self.following.remove(&re);
        }
        fx.send_up
            .push(self.up(Message::QueryReply(QueryReply { re, ..reply })));
    }
}
