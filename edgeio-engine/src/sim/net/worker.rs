//! The worker model: the worker engine's `plan` over what it runs, events at once, status every tick; its instances die with it.

use super::*;

impl Sim {
    pub(super) fn worker_cx(&self, w: usize) -> Context {
        context(&self.clock, self.seed, 30_000 + w as u64)
    }

    pub(super) fn worker_send(&mut self, w: usize, body: Message) {
        let cx = self.worker_cx(w);
        let c = w / self.config.workers_per_cluster;
        let env = Envelope::new_in(&cx, &self.workers[w].id, body);
        self.send(Addr::Worker(w), Addr::Cluster(c), env);
    }

    pub(super) fn worker_event(
        &mut self,
        w: usize,
        job: &JobId,
        instance: &InstanceId,
        state: InstanceState,
    ) {
        let event = InstanceEvent {
            job: job.clone(),
            instance: instance.clone(),
            node: self.workers[w].id.clone(),
            state,
            exit_code: None,
            reason: String::new(),
            unschedulable: None,
        };
        self.worker_send(w, Message::InstanceEvent(event));
    }

    pub(super) fn worker_status(&mut self, w: usize) {
        if !self.workers[w].alive {
            return;
        }
        let total = Resources {
            cpu_millis: u64::from(self.config.worker_cores) * 1000,
            memory_bytes: 8 << 30,
            disk_bytes: 20 << 30,
            gpus: 0,
        };
        let status = status_of(total, &self.workers[w].local, None);
        self.worker_send(w, Message::NodeStatus(status));
    }

    pub(super) fn deliver_to_worker(&mut self, w: usize, env: Envelope) {
        if !self.workers[w].alive || !env.body.is_command() {
            return;
        }
        let cx = self.worker_cx(w);
        let c = w / self.config.workers_per_cluster;
        if let Some(answer) = self.workers[w].answered.get(&env.id).cloned() {
            self.send(Addr::Worker(w), Addr::Cluster(c), answer);
            return;
        }
        let kinds = vec!["native".into()];
        let actions = plan(&env.body, &self.workers[w].local, &kinds);
        let mut refusal = None;
        let mut started = Vec::new();
        for action in actions {
            match action {
                Action::Start(spec) => {
                    let local = Local {
                        job: spec.job.clone(),
                        kind: spec.kind.clone(),
                        state: InstanceState::Starting,
                        resources: spec.resources,
                        restart: None,
                        restarts: 0,
                        clearing: false,
                    };
                    self.workers[w].local.insert(spec.id.clone(), local);
                    started.push((spec.id.clone(), spec.job.clone()));
                    let delay = self.rng.range(5, 50);
                    self.after(
                        delay,
                        Ev::Runtime {
                            worker: w,
                            instance: spec.id.clone(),
                            to: InstanceState::Running,
                        },
                    );
                }
                Action::Stop(id) => {
                    if let Some(local) = self.workers[w].local.get_mut(&id) {
                        local.state = InstanceState::Terminating;
                        let job = local.job.clone();
                        self.worker_event(w, &job, &id, InstanceState::Terminating);
                        let delay = self.rng.range(5, 50);
                        self.after(
                            delay,
                            Ev::Runtime {
                                worker: w,
                                instance: id,
                                to: InstanceState::Terminated,
                            },
                        );
                    }
                }
                Action::Refuse(error) => refusal = Some(error),
            }
        }
        let me = self.workers[w].id.clone();
        let answer = match refusal {
            Some(error) => env.nack_in(&cx, &me, error),
            None => env.ack_in(&cx, &me),
        };
        self.workers[w]
            .answered
            .insert(env.id.clone(), answer.clone());
        // the answer goes before the events the command causes
        self.send(Addr::Worker(w), Addr::Cluster(c), answer);
        for (id, job) in started {
            self.worker_event(w, &job, &id, InstanceState::Starting);
        }
    }

    pub(super) fn runtime_step(&mut self, w: usize, instance: InstanceId, to: InstanceState) {
        if !self.workers[w].alive {
            return;
        }
        let Some(local) = self.workers[w].local.get_mut(&instance) else {
            return;
        };
        let job = local.job.clone();
        match to {
            InstanceState::Running if local.state == InstanceState::Starting => {
                local.state = InstanceState::Running;
                self.worker_event(w, &job, &instance, to);
            }
            InstanceState::Terminated => {
                self.workers[w].local.remove(&instance);
                self.worker_event(w, &job, &instance, to);
            }
            _ => {}
        }
    }
}
