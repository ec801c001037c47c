//! Carrying out what an engine's change asks (persist, send, command), ticks, outcomes and submissions.

use super::*;

impl Sim {
    pub(super) fn apply_root(&mut self, fx: Effects<RootTag>) {
        if let Some(state) = &self.root.state {
            for key in &fx.persist {
                if let Some(value) = state.value_of(key) {
                    self.root.durable.insert(key.clone(), value);
                }
            }
        }
        for (child, env) in fx.send_down {
            if let Some(to) = Self::addr_of_cluster(&child) {
                self.send(Addr::Root, to, env);
            }
        }
        for (child, env, tag) in fx.commands {
            if let Some(to) = Self::addr_of_cluster(&child) {
                self.command(Addr::Root, to, env, SimTag::Root(tag));
            }
        }
    }

    pub(super) fn apply_cluster(
        &mut self,
        i: usize,
        fx: Effects<ClusterTag>,
        answer: Option<Envelope>,
    ) {
        let me = Addr::Cluster(i);
        if self.config.plant != Some(PlantedBug::AckWithoutPersist) {
            let proc = &mut self.clusters[i];
            if let Some(state) = &proc.state {
                for key in &fx.persist {
                    if let Some(value) = state.value_of(key) {
                        proc.durable.insert(key.clone(), value);
                    }
                }
            }
        }
        // the answer goes before any event the command caused
        for env in answer.into_iter().chain(fx.send_up) {
            self.send(me, Addr::Root, env);
        }
        for (node, env) in fx.send_down {
            if let Some(to) = Self::addr_of_worker(&node) {
                self.send(me, to, env);
            }
        }
        for (node, env, tag) in fx.commands {
            // the planted bug: no instance a node runs is ever stopped by name
            let keep_copy = self.config.plant == Some(PlantedBug::KeepReplacedCopies)
                && matches!(&env.body, Message::Terminate(t) if t.instance.is_some());
            if keep_copy {
                continue;
            }
            if let Some(to) = Self::addr_of_worker(&node) {
                self.command(me, to, env, SimTag::Cluster(tag));
            }
        }
    }

    pub(super) fn tick(&mut self, addr: Addr) {
        self.after(TICK_MS, Ev::Tick(addr));
        if self.down.contains(&addr) {
            return;
        }
        match addr {
            Addr::Root => {
                if let Some(root) = self.root.state.as_mut() {
                    let mut fx = Effects::default();
                    let started = Instant::now();
                    root.check_clusters(&mut fx);
                    self.engine_time.root_ticks += 1;
                    self.engine_time.root_tick_time += started.elapsed();
                    self.apply_root(fx);
                }
            }
            Addr::Cluster(i) => {
                if let Some(cluster) = self.clusters[i].state.as_mut() {
                    let mut fx = Effects::default();
                    let started = Instant::now();
                    cluster.send_aggregate(&mut fx);
                    cluster.check_heartbeats(&mut fx);
                    self.engine_time.cluster_ticks += 1;
                    self.engine_time.cluster_tick_time += started.elapsed();
                    self.apply_cluster(i, fx, None);
                }
            }
            Addr::Worker(w) => self.worker_status(w),
        }
    }

    pub(super) fn outcome(
        &mut self,
        at: Addr,
        tag: SimTag,
        outcome: Result<CommandOutcome, TransportError>,
    ) {
        match (at, tag) {
            (Addr::Root, SimTag::Root(tag)) => {
                if let Some(root) = self.root.state.as_mut() {
                    let mut fx = Effects::default();
                    root.on_outcome(tag, outcome, &mut fx);
                    self.apply_root(fx);
                }
            }
            (Addr::Cluster(i), SimTag::Cluster(tag)) => {
                if let Some(cluster) = self.clusters[i].state.as_mut() {
                    let mut fx = Effects::default();
                    cluster.on_outcome(tag, outcome, &mut fx);
                    self.apply_cluster(i, fx, None);
                }
            }
            _ => {}
        }
    }

    pub(super) fn submit(&mut self, n: usize) {
        let Some(root) = self.root.state.as_mut() else {
            // the root is down: the user tries again a second later
            self.after(TICK_MS, Ev::Submit(n));
            return;
        };
        let mut spec = JobSpec::minimal(
            format!("job{n}"),
            "sim:run",
            "native",
            Resources {
                cpu_millis: self.config.job_cpu_millis,
                ..Resources::ZERO
            },
        );
        spec.replicas = self.config.replicas;
        let id = crate::records::new_job_id(&spec.name, &root.cx);
        let now = root.cx.now_ms();
        let record = RootJob::new(id.clone(), spec, JobState::Requested, now, "submitted");
        // stored before it exists, as the API does
        let key = format!("{JOBS}{id}");
        if let Ok(value) = serde_json::to_vec(&record) {
            self.root.durable.insert(key, value);
        }
        root.jobs.insert(id.to_string(), record);
        let mut fx = Effects::default();
        root.schedule(id.as_str(), &mut fx);
        self.submitted[n] = Some(id);
        self.apply_root(fx);
    }
}
