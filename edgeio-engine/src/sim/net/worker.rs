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
        self.worker_report(w, job, instance, state, None, String::new());
    }

    /// An instance event with its exit code and reason, as the worker engine's `report`.
    pub(super) fn worker_report(
        &mut self,
        w: usize,
        job: &JobId,
        instance: &InstanceId,
        state: InstanceState,
        exit_code: Option<i32>,
        reason: String,
    ) {
        let event = InstanceEvent {
            job: job.clone(),
            instance: instance.clone(),
            node: self.workers[w].id.clone(),
            state,
            exit_code,
            reason,
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
        let policy = match &env.body {
            Message::Deploy(deploy) => deploy.spec.restart,
            _ => RestartPolicy::default(),
        };
        let mut refusal = None;
        let mut started = Vec::new();
        for action in actions {
            match action {
                Action::Start(spec) => {
                    let local = Local::starting(&spec, policy);
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
                self.plan_end(w, instance);
            }
            InstanceState::Terminated => {
                self.workers[w].local.remove(&instance);
                self.worker_event(w, &job, &instance, to);
            }
            _ => {}
        }
    }

    /// A run that just began may end on its own before the faults end (the seed decides
    /// whether, when and how: a clean exit a quarter of the time, else a failure or a crash
    /// half each).
    fn plan_end(&mut self, w: usize, instance: InstanceId) {
        let run = self.runs.entry((w, instance.clone())).or_insert(0);
        *run += 1;
        let run = *run;
        if !self.faulting() || !self.rng.chance(self.config.exit_chance) {
            return;
        }
        let at = self.now + self.rng.range(200, 8_000);
        if at >= self.config.faults_until_ms {
            return;
        }
        let code = match self.rng.range(0, 7) {
            0 | 1 => Some(0),
            2..=4 => Some(1),
            _ => None,
        };
        self.at(
            at,
            Ev::Exit {
                worker: w,
                instance,
                run,
                code,
            },
        );
    }

    /// A run ended on its own: EXITED is reported with its code, then the job's restart
    /// policy decides through the worker engine's own `after_exit`, and the worker reports
    /// as it does: RESTARTING (and a restart after the backoff), FAILED (given up here, the
    /// instance removed, for the cluster to relocate), or nothing more (done).
    pub(super) fn exit(&mut self, w: usize, instance: InstanceId, run: u64, code: Option<i32>) {
        if !self.workers[w].alive || self.runs.get(&(w, instance.clone())) != Some(&run) {
            return;
        }
        let Some(local) = self.workers[w].local.get_mut(&instance) else {
            return;
        };
        // a process that ends while being stopped is part of the stop (TERMINATED follows)
        if local.state != InstanceState::Running {
            return;
        }
        local.state = InstanceState::Exited;
        let job = local.job.clone();
        let Some((_, policy)) = local.restart.clone() else {
            return;
        };
        let restarts = local.restarts;
        match code {
            Some(0) => self.counts.clean_exits += 1,
            Some(_) => self.counts.failed_exits += 1,
            None => self.counts.crashes += 1,
        }
        let how = match code {
            Some(c) => format!("exited with code {c}"),
            None => "was killed by a signal".to_string(),
        };
        self.worker_report(w, &job, &instance, InstanceState::Exited, code, how);
        let node = self.workers[w].id.clone();
        match after_exit(&policy, code, restarts) {
            AfterExit::Done => {
                self.finished.insert(job);
            }
            AfterExit::Restart(wait) => {
                self.counts.restarts += 1;
                if let Some(local) = self.workers[w].local.get_mut(&instance) {
                    local.restarts += 1;
                    local.state = InstanceState::Restarting;
                }
                let reason = format!(
                    "restart {} of {} on {node} in {wait:?}",
                    restarts + 1,
                    policy.limit
                );
                self.worker_report(w, &job, &instance, InstanceState::Restarting, None, reason);
                self.after(
                    wait.as_millis() as u64,
                    Ev::Restart {
                        worker: w,
                        instance,
                    },
                );
            }
            AfterExit::GiveUp(why) => {
                self.counts.give_ups += 1;
                self.gave_up.insert(job.clone());
                self.workers[w].local.remove(&instance);
                let reason = format!("{why} ({node})");
                self.worker_report(w, &job, &instance, InstanceState::Failed, code, reason);
            }
        }
    }

    /// A restart's backoff is over: unless the instance was stopped meanwhile, it starts
    /// again (STARTING, then RUNNING once the runtime has it up).
    pub(super) fn restart_instance(&mut self, w: usize, instance: InstanceId) {
        if !self.workers[w].alive {
            return;
        }
        let Some(local) = self.workers[w].local.get_mut(&instance) else {
            return;
        };
        if local.state != InstanceState::Restarting {
            return;
        }
        local.state = InstanceState::Starting;
        let job = local.job.clone();
        self.worker_report(
            w,
            &job,
            &instance,
            InstanceState::Starting,
            None,
            "restarting".into(),
        );
        let delay = self.rng.range(5, 50);
        self.after(
            delay,
            Ev::Runtime {
                worker: w,
                instance,
                to: InstanceState::Running,
            },
        );
    }
}
