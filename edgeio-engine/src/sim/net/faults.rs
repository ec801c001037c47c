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
                    Addr::Root => self.root.crash(),
                    Addr::Cluster(i) => self.clusters[i].crash(),
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
                if self.ask_root(n, Scripted::Terminate(n)) {
                    self.terminated.insert(n);
                }
            }
            Scripted::Migrate(n) => {
                if self.ask_root(n, Scripted::Migrate(n)) {
                    self.counts.migrations += 1;
                }
            }
            Scripted::StoreFail(addr) => {
                let proc_failing = match addr {
                    Addr::Root => &mut self.root.failing,
                    Addr::Cluster(i) => &mut self.clusters[i].failing,
                    Addr::Worker(_) => return,
                };
                if !std::mem::replace(proc_failing, true) {
                    self.counts.store_outages += 1;
                }
            }
            Scripted::StoreHeal(addr) => {
                // the next change (a tick at the latest) writes what is dirty and sends
                // what waited for it
                match addr {
                    Addr::Root => self.root.failing = false,
                    Addr::Cluster(i) => self.clusters[i].failing = false,
                    Addr::Worker(_) => {}
                }
            }
        }
    }

    /// Asks the root's API for `request` about the job submitted `n`-th, as `RootHandle`
    /// does: the change is kept only once its records are written (`apply_or_undo`); when
    /// the store refuses them it is undone, nothing of it is sent, its keys stay dirty so
    /// the store gets the restored record, and the user, told 503, asks again a second
    /// later. True when the root took the request.
    fn ask_root(&mut self, n: usize, request: Scripted) -> bool {
        let Some(Some(id)) = self.submitted.get(n).cloned() else {
            return false;
        };
        let Some(root) = self.root.state.as_mut() else {
            return false;
        };
        let before = root.jobs.get(id.as_str()).cloned();
        let mut fx = Effects::default();
        let asked = match request {
            Scripted::Terminate(_) => root.terminate(id.as_str(), &mut fx).map(|_| ()),
            Scripted::Migrate(_) => root
                .migrate(id.as_str(), MigrateTarget::Anywhere, None, &mut fx)
                .map(|_| ()),
            _ => return false,
        };
        // refused (a move of a job that is not RUNNING): the user is told why, nothing changed
        if asked.is_err() {
            return false;
        }
        if self.root.write(&fx.persist, &mut self.counts) {
            self.apply_root(fx);
            return true;
        }
        if let Some(root) = self.root.state.as_mut() {
            match before {
                Some(record) => root.jobs.insert(id.to_string(), record),
                None => root.jobs.remove(id.as_str()),
            };
        }
        self.counts.refused_requests += 1;
        self.after(TICK_MS, Ev::Fault(request));
        false
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
