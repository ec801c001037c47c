//! Carrying out what an engine's change asks (persist, send, command), ticks, outcomes and submissions.

use super::*;

impl Sim {
    /// Carries out the root's change as `effects::Core::apply` does: its records are written
    /// (with those left dirty before) first; when the store refuses them, what the change
    /// asks for is held until a later change finds the store healed (one with no records of
    /// its own sends its messages anyway: they say nothing the store lacks). True when
    /// nothing is left unwritten.
    pub(super) fn apply_root(&mut self, fx: Effects<RootTag>) -> bool {
        let written = self.root.write(&fx.persist, &mut self.counts);
        let messages: Vec<Held> = fx
            .send_down
            .into_iter()
            .filter_map(|(child, env)| Some(Held::Down(Self::addr_of_cluster(&child)?, env)))
            .collect();
        let commands: Vec<Held> = fx
            .commands
            .into_iter()
            .filter_map(|(child, env, tag)| {
                Some(Held::Command(
                    Self::addr_of_cluster(&child)?,
                    env,
                    SimTag::Root(tag),
                ))
            })
            .collect();
        let release = Self::hold(
            &mut self.root.held,
            written,
            fx.persist.is_empty(),
            messages,
            commands,
        );
        for held in release {
            self.release(Addr::Root, held);
        }
        written
    }

    /// What goes out now of what waited (`held`) and of a change's `messages` and
    /// `commands`, given whether the records were `written` and whether the change had
    /// records of its own; the rest joins `held`, in order.
    fn hold(
        held: &mut Vec<Held>,
        written: bool,
        no_records: bool,
        messages: Vec<Held>,
        commands: Vec<Held>,
    ) -> Vec<Held> {
        if written {
            let mut release = std::mem::take(held);
            release.extend(messages);
            release.extend(commands);
            release
        } else if no_records {
            held.extend(commands);
            messages
        } else {
            held.extend(messages);
            held.extend(commands);
            Vec::new()
        }
    }

    /// Sends one message or command that the store now holds everything of.
    fn release(&mut self, from: Addr, held: Held) {
        match held {
            Held::Up(env) => {
                if let Some(to) = self.parent_of(from) {
                    self.send(from, to, env);
                }
            }
            Held::Down(to, env) => self.send(from, to, env),
            Held::Command(to, env, tag) => {
                self.check_stored_deploy(from, to, &env);
                self.command(from, to, env, tag);
            }
        }
    }

    /// Carries out a cluster's change as `effects::Core::apply` does (see
    /// [`Sim::apply_root`]), with `answer`, the answer to a command of the root, sent first:
    /// an ack only when the change is written, else "not now" (`nack` `unavailable` with
    /// `retry`), which the root's re-send brings back. Returns the answer sent.
    pub(super) fn apply_cluster(
        &mut self,
        i: usize,
        fx: Effects<ClusterTag>,
        answer: Option<Envelope>,
    ) -> Option<Envelope> {
        let me = Addr::Cluster(i);
        let written = if self.config.plant == Some(PlantedBug::AckWithoutPersist) {
            true
        } else {
            self.clusters[i].write(&fx.persist, &mut self.counts)
        };
        let answer = answer.map(|answer| match &answer.body {
            Message::Ack(ack)
                if !written && self.config.plant != Some(PlantedBug::AckDespiteFailedWrite) =>
            {
                self.counts.not_now += 1;
                let e = edgeio_core::store::StoreError::Unavailable {
                    reason: "the simulated disk is full".into(),
                };
                not_now(&answer, &ack.re, &e)
            }
            _ => answer,
        });
        let messages: Vec<Held> = fx
            .send_up
            .into_iter()
            .map(Held::Up)
            .chain(
                fx.send_down
                    .into_iter()
                    .filter_map(|(node, env)| Some(Held::Down(Self::addr_of_worker(&node)?, env))),
            )
            .collect();
        let commands: Vec<Held> = fx
            .commands
            .into_iter()
            // the planted bug: no instance a node runs is ever stopped by name
            .filter(|(_, env, _)| {
                self.config.plant != Some(PlantedBug::KeepReplacedCopies)
                    || !matches!(&env.body, Message::Terminate(t) if t.instance.is_some())
            })
            .filter_map(|(node, env, tag)| {
                Some(Held::Command(
                    Self::addr_of_worker(&node)?,
                    env,
                    SimTag::Cluster(tag),
                ))
            })
            .collect();
        let release = Self::hold(
            &mut self.clusters[i].held,
            written,
            fx.persist.is_empty(),
            messages,
            commands,
        );
        // the answer goes before anything else, and before any event the command caused
        if let Some(answer) = &answer {
            self.send(me, Addr::Root, answer.clone());
        }
        for held in release {
            self.release(me, held);
        }
        answer
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
        if self.root.failing {
            // the API stores a job before it exists and answers 503 when it cannot: the
            // user tries again a second later
            self.counts.refused_requests += 1;
            self.after(TICK_MS, Ev::Submit(n));
            return;
        }
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
        spec.restart = self.policies[n];
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
