//! The network: links that deliver in order, loss as a dropped connection, redelivery, registration, links coming up and going, commands re-sent until answered.

use super::*;

impl Sim {
    pub(super) fn parent_of(&self, addr: Addr) -> Option<Addr> {
        match addr {
            Addr::Root => None,
            Addr::Cluster(_) => Some(Addr::Root),
            Addr::Worker(w) => Some(Addr::Cluster(w / self.config.workers_per_cluster)),
        }
    }

    /// Whether a message from `from` to `to` can get through right now.
    pub(super) fn open(&self, from: Addr, to: Addr) -> bool {
        let child = if self.parent_of(from) == Some(to) {
            from
        } else {
            to
        };
        !self.cut.contains(&child) && !self.down.contains(&from) && !self.down.contains(&to)
    }

    pub(super) fn send(&mut self, from: Addr, to: Addr, env: Envelope) {
        if !self.open(from, to) {
            return;
        }
        if self.faulting() && self.rng.chance(self.config.loss) {
            // links are TCP (WebSocket, MQTT): a message is lost only with its connection,
            // which the child dials again and the parent sees come up (and re-syncs)
            let child = if self.parent_of(from) == Some(to) {
                from
            } else {
                to
            };
            self.fault(Scripted::Partition(child));
            let back = self.rng.range(50, 500);
            self.after(back, Ev::Fault(Scripted::Heal(child)));
            return;
        }
        // one link is one TCP connection: its messages arrive in the order sent
        let earliest = self.fifo.get(&(from, to)).copied().unwrap_or(0);
        let delay = self
            .rng
            .range(1, self.config.max_delay_ms.max(1))
            .max(earliest.saturating_sub(self.now));
        self.fifo.insert((from, to), self.now + delay);
        if self.faulting() && self.rng.chance(self.config.duplication) {
            // a redelivery (MQTT QoS 1 after a reconnect): after the original
            let again = delay + self.rng.range(1, self.config.max_delay_ms.max(1));
            self.after(
                again,
                Ev::Deliver {
                    from,
                    to,
                    env: Box::new(env.clone()),
                },
            );
        }
        self.after(
            delay,
            Ev::Deliver {
                from,
                to,
                env: Box::new(env),
            },
        );
    }

    pub(super) fn link_mut(&mut self, addr: Addr) -> &mut Link {
        match addr {
            Addr::Root => &mut self.root.link,
            Addr::Cluster(i) => &mut self.clusters[i].link,
            Addr::Worker(_) => unreachable!("workers send no commands"),
        }
    }

    pub(super) fn command(&mut self, from: Addr, to: Addr, env: Envelope, tag: SimTag) {
        let id = env.id.clone();
        let pending = Pending {
            to,
            env: env.clone(),
            tag,
            first_ms: self.now,
            wait_ms: RESEND_MS,
        };
        self.link_mut(from).pending.insert(id.clone(), pending);
        self.send(from, to, env);
        self.after(RESEND_MS, Ev::Resend { from, id });
    }

    pub(super) fn addr_of_cluster(id: &str) -> Option<Addr> {
        id.strip_prefix('c')?.parse().ok().map(Addr::Cluster)
    }

    pub(super) fn addr_of_worker(id: &str) -> Option<Addr> {
        id.strip_prefix('w')?.parse().ok().map(Addr::Worker)
    }

    pub(super) fn register_cluster(&mut self, i: usize) {
        let Some(root) = self.root.state.as_mut() else {
            return;
        };
        let request = RegisterRequest {
            role: PeerRole::Cluster,
            name: format!("c{i}"),
            previous_id: Some(format!("c{i}")),
            capabilities: None,
            location: None,
            labels: Labels::new(),
            auth: None,
        };
        let mut fx = Effects::default();
        if root.register(request, &mut fx).is_ok() {
            if !self.apply_root(fx) {
                self.registration_refused(Addr::Cluster(i));
                return;
            }
            self.after(
                1,
                Ev::LinkUp {
                    child: Addr::Cluster(i),
                },
            );
        }
    }

    /// A registration the parent could not store is refused (an id the store does not hold
    /// is not given out): the child dials again half a second later.
    fn registration_refused(&mut self, child: Addr) {
        self.counts.refused_requests += 1;
        self.after(500, Ev::Register(child));
    }

    /// A child dials its parent again after a refused registration, if it is still up and
    /// reaches it.
    pub(super) fn register(&mut self, child: Addr) {
        let Some(parent) = self.parent_of(child) else {
            return;
        };
        if !self.open(child, parent) {
            return;
        }
        match child {
            Addr::Cluster(i) => self.register_cluster(i),
            Addr::Worker(w) => self.register_worker(w),
            Addr::Root => {}
        }
    }

    pub(super) fn register_worker(&mut self, w: usize) {
        let c = w / self.config.workers_per_cluster;
        let Some(cluster) = self.clusters[c].state.as_mut() else {
            return;
        };
        let request = RegisterRequest {
            role: PeerRole::Node,
            name: format!("w{w}"),
            previous_id: Some(format!("w{w}")),
            capabilities: Some(Capabilities {
                arch: Arch::Amd64,
                cores: self.config.worker_cores,
                memory_bytes: 8 << 30,
                disk_bytes: 20 << 30,
                gpus: 0,
                runtimes: vec![RuntimeInfo {
                    kind: "native".into(),
                    version: "sim".into(),
                }],
                labels: Labels::new(),
                location: None,
            }),
            location: None,
            labels: Labels::new(),
            auth: None,
        };
        let mut fx = Effects::default();
        if cluster.register(request, &mut fx).is_ok() {
            self.apply_cluster(c, fx, None);
            // keys left dirty: the node's record is not stored
            if !self.clusters[c].dirty.is_empty() {
                self.registration_refused(Addr::Worker(w));
                return;
            }
            self.after(
                1,
                Ev::LinkUp {
                    child: Addr::Worker(w),
                },
            );
        }
    }

    pub(super) fn link_up(&mut self, child: Addr) {
        if self.down.contains(&child) || self.cut.contains(&child) {
            return;
        }
        match child {
            Addr::Cluster(i) => {
                let Some(root) = self.root.state.as_mut() else {
                    return;
                };
                let mut fx = Effects::default();
                let child = format!("c{i}");
                root.on_cluster_event(ParentEvent::ChildUp { child }, &mut fx);
                self.apply_root(fx);
            }
            Addr::Worker(w) => {
                let c = w / self.config.workers_per_cluster;
                let Some(cluster) = self.clusters[c].state.as_mut() else {
                    return;
                };
                let mut fx = Effects::default();
                let child = format!("w{w}");
                cluster.on_node_event(ParentEvent::ChildUp { child }, &mut fx);
                self.apply_cluster(c, fx, None);
                // a worker reports at once when its link comes up
                self.worker_status(w);
            }
            Addr::Root => {}
        }
    }

    pub(super) fn link_lost(&mut self, child: Addr, reason: String) {
        // the parent only notices if the child is still gone
        if !self.down.contains(&child) && !self.cut.contains(&child) {
            return;
        }
        match child {
            Addr::Cluster(i) => {
                if let Some(root) = self.root.state.as_mut() {
                    let mut fx = Effects::default();
                    let child = format!("c{i}");
                    root.on_cluster_event(ParentEvent::ChildLost { child, reason }, &mut fx);
                    self.apply_root(fx);
                }
            }
            Addr::Worker(w) => {
                let c = w / self.config.workers_per_cluster;
                if let Some(cluster) = self.clusters[c].state.as_mut() {
                    let mut fx = Effects::default();
                    let child = format!("w{w}");
                    cluster.on_node_event(ParentEvent::ChildLost { child, reason }, &mut fx);
                    self.apply_cluster(c, fx, None);
                }
            }
            Addr::Root => {}
        }
    }

    pub(super) fn resend(&mut self, from: Addr, id: String) {
        if self.down.contains(&from) {
            return;
        }
        let now = self.now;
        let Some(pending) = self.link_mut(from).pending.get_mut(&id) else {
            return;
        };
        if now.saturating_sub(pending.first_ms) >= GIVE_UP_MS {
            let pending = self.link_mut(from).pending.remove(&id).expect("present");
            // as ReliableParent does: not a refusal, the child may have applied it
            let outcome = Ok(CommandOutcome::GaveUp(format!(
                "no answer within {GIVE_UP_MS} ms"
            )));
            self.outcome(from, pending.tag, outcome);
            return;
        }
        pending.wait_ms = (pending.wait_ms * 2).min(RESEND_MAX_MS);
        let (to, env, wait) = (pending.to, pending.env.clone(), pending.wait_ms);
        self.send(from, to, env);
        self.after(wait, Ev::Resend { from, id });
    }
}
