//! Crashes, restarts from the store, partitions and their healing, terminations asked by a test.

use super::*;

impl Sim {
    pub(super) fn fault(&mut self, fault: Scripted) {
        self.faults.push(format!("{fault:?}@{}", self.now));
        match fault {
            Scripted::Crash(addr) => {
                if !self.down.insert(addr) {
                    return;
                }
                match addr {
                    Addr::Root => {
                        self.root.state = None;
                        self.root.link = Link::default();
                    }
                    Addr::Cluster(i) => {
                        self.clusters[i].state = None;
                        self.clusters[i].link = Link::default();
                    }
                    Addr::Worker(w) => {
                        let worker = &mut self.workers[w];
                        worker.alive = false;
                        worker.local.clear();
                        worker.answered.clear();
                    }
                }
                if addr != Addr::Root {
                    // its connection drops with it: the parent hears at once (the MQTT will,
                    // the WebSocket's close), before any restart can dial again; a cut link
                    // is noticed by keepalive only
                    self.link_lost(addr, format!("{addr} crashed"));
                }
            }
            Scripted::Restart(addr) => {
                if !self.down.remove(&addr) {
                    return;
                }
                self.last_heal_ms = self.now;
                self.restart(addr);
            }
            Scripted::Partition(addr) => {
                if addr == Addr::Root || !self.cut.insert(addr) {
                    return;
                }
                let reason = format!("{addr} cut off");
                self.after(
                    NOTICE_MS,
                    Ev::LinkLost {
                        child: addr,
                        reason,
                    },
                );
            }
            Scripted::Heal(addr) => {
                if !self.cut.remove(&addr) {
                    return;
                }
                self.last_heal_ms = self.now;
                match addr {
                    // a cluster redials and registers again with its id
                    Addr::Cluster(i) => self.register_cluster(i),
                    _ => self.after(1, Ev::LinkUp { child: addr }),
                }
            }
            Scripted::Terminate(n) => {
                let Some(Some(id)) = self.submitted.get(n).cloned() else {
                    return;
                };
                let Some(root) = self.root.state.as_mut() else {
                    return;
                };
                let mut fx = Effects::default();
                if root.terminate(id.as_str(), &mut fx).is_ok() {
                    self.terminated.insert(n);
                }
                self.apply_root(fx);
            }
        }
    }

    pub(super) fn restart(&mut self, addr: Addr) {
        match addr {
            Addr::Root => {
                let durable = &self.root.durable;
                let state = RootState::from_records(
                    context(&self.clock, self.seed, 10_000 + self.events),
                    root_config(),
                    scheduler(),
                    stored::<ClusterRecord>(durable, CLUSTERS),
                    stored::<RootJob>(durable, JOBS),
                );
                self.root.state = Some(state);
                // every cluster's link dropped with the root: they dial again
                for i in 0..self.config.clusters {
                    if !self.down.contains(&Addr::Cluster(i))
                        && !self.cut.contains(&Addr::Cluster(i))
                    {
                        self.register_cluster(i);
                    }
                }
            }
            Addr::Cluster(i) => {
                let durable = &self.clusters[i].durable;
                let state = ClusterEngineState::from_records(
                    context(&self.clock, self.seed, 20_000 + self.events),
                    cluster_config(i),
                    scheduler(),
                    stored::<NodeRecord>(durable, NODES),
                    stored::<ClusterJob>(durable, JOBS),
                );
                self.clusters[i].state = Some(state);
                if !self.cut.contains(&addr) {
                    self.register_cluster(i);
                }
                // its workers reconnect to its broker
                let per = self.config.workers_per_cluster;
                for w in i * per..(i + 1) * per {
                    self.after(
                        1,
                        Ev::LinkUp {
                            child: Addr::Worker(w),
                        },
                    );
                }
            }
            Addr::Worker(w) => {
                self.workers[w].alive = true;
                self.register_worker(w);
            }
        }
    }
}
