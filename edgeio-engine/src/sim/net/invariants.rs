//! What must hold after every event and at the end of a run.

use super::*;

impl Sim {
    /// A cluster acked a deploy: the job must be in its store.
    pub(super) fn check_acked(&self, cluster: usize, command: &Envelope) -> Result<(), Violation> {
        let Message::Deploy(deploy) = &command.body else {
            return Ok(());
        };
        let key = format!("{JOBS}{}", deploy.job);
        if self.clusters[cluster].durable.contains_key(&key) {
            return Ok(());
        }
        Err(Violation {
            at_ms: self.now,
            invariant: "ack-persisted",
            detail: format!(
                "c{cluster} acked the deploy of {} without storing it",
                deploy.job
            ),
        })
    }

    /// Cluster `i` acks `command`: the record of the command's job must be in its store as
    /// it is in its memory (a crash now must not lose what the ack confirms). Checked when
    /// the ack leaves, against the store, not the engine's word.
    pub(super) fn check_ack_stored(&mut self, i: usize, command: &Envelope) {
        let job = match &command.body {
            Message::Deploy(d) => &d.job,
            Message::Terminate(t) => &t.job,
            Message::Scale(s) => &s.job,
            Message::Migrate(m) => &m.job,
            _ => return,
        };
        let key = format!("{JOBS}{job}");
        let proc = &self.clusters[i];
        let memory = proc.state.as_ref().and_then(|s| s.value_of(&key));
        let stored = proc.durable.get(&key);
        if stored == memory.as_ref() {
            return;
        }
        let state_of = |v: Option<&Vec<u8>>| {
            v.and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
                .and_then(|v| v.pointer("/lifecycle/state").cloned())
                .map_or_else(|| "nothing".to_string(), |s| s.to_string())
        };
        self.broken.get_or_insert(Violation {
            at_ms: self.now,
            invariant: "ack-persisted",
            detail: format!(
                "c{i} acked the {} of {job} with its record not stored as it is (stored: {}, in memory: {})",
                command.kind(),
                state_of(stored),
                state_of(memory.as_ref()),
            ),
        });
    }

    /// A deploy leaves `from` for `to` only once `from`'s store holds what it deploys: a
    /// cluster's, the instance; the root's, the job given to that cluster.
    pub(super) fn check_stored_deploy(&mut self, from: Addr, to: Addr, command: &Envelope) {
        if self.config.plant == Some(PlantedBug::AckWithoutPersist) {
            // that bug stores nothing: what it acks is what it is caught on
            return;
        }
        let Message::Deploy(deploy) = &command.body else {
            return;
        };
        let key = format!("{JOBS}{}", deploy.job);
        let stored = |durable: &BTreeMap<String, Vec<u8>>| durable.get(&key).cloned();
        let held = match (from, to, &deploy.instance) {
            (Addr::Cluster(i), Addr::Worker(_), Some(spec)) => stored(&self.clusters[i].durable)
                .and_then(|v| serde_json::from_slice::<ClusterJob>(&v).ok())
                .is_some_and(|r| r.instances.iter().any(|i| i.id == spec.id)),
            (Addr::Root, Addr::Cluster(c), _) => stored(&self.root.durable)
                .and_then(|v| serde_json::from_slice::<RootJob>(&v).ok())
                .is_some_and(|r| {
                    let c = format!("c{c}");
                    r.holds(&c) || r.moving_to() == Some(c.as_str())
                }),
            _ => false,
        };
        if !held {
            self.broken.get_or_insert(Violation {
                at_ms: self.now,
                invariant: "act-stored",
                detail: format!(
                    "{from} sent a deploy of {} to {to} that its store does not hold{}",
                    deploy.job,
                    self.story(&deploy.job)
                ),
            });
        }
    }

    /// What runs where: (job → instances running on live workers that reach their cluster).
    pub(super) fn running(&self) -> Result<BTreeMap<JobId, Vec<(InstanceId, usize)>>, Violation> {
        let mut seen: BTreeMap<&InstanceId, usize> = BTreeMap::new();
        let mut jobs: BTreeMap<JobId, Vec<(InstanceId, usize)>> = BTreeMap::new();
        for (w, worker) in self.workers.iter().enumerate() {
            if !worker.alive {
                continue;
            }
            for (id, local) in &worker.local {
                if local.state != InstanceState::Running {
                    continue;
                }
                if let Some(other) = seen.insert(id, w) {
                    return Err(Violation {
                        at_ms: self.now,
                        invariant: "single-copy",
                        detail: format!(
                            "instance {id} runs on w{other} and w{w}:{}",
                            self.story(&local.job)
                        ),
                    });
                }
                let c = w / self.config.workers_per_cluster;
                let hidden = self.cut.contains(&Addr::Worker(w))
                    || self.cut.contains(&Addr::Cluster(c))
                    || self.down.contains(&Addr::Cluster(c));
                if !hidden {
                    jobs.entry(local.job.clone())
                        .or_default()
                        .push((id.clone(), w));
                }
            }
        }
        Ok(jobs)
    }

    /// What the root and the clusters record of `job`: its history and its instances', as
    /// text (for a failing seed's report).
    pub(super) fn story(&self, job: &JobId) -> String {
        let mut out = format!("\n  faults: {}", self.faults.join(" "));
        // each tier's lifecycle and instances of the job (the records' other fields differ)
        let tiers = std::iter::once((
            "root".to_string(),
            self.root
                .state
                .as_ref()
                .and_then(|r| r.jobs.get(job.as_str()))
                .map(|j| (&j.lifecycle, &j.instances)),
        ))
        .chain(self.clusters.iter().enumerate().map(|(i, c)| {
            (
                format!("c{i}"),
                c.state
                    .as_ref()
                    .and_then(|s| s.jobs.get(job.as_str()))
                    .map(|j| (&j.lifecycle, &j.instances)),
            )
        }));
        for (tier, record) in tiers {
            let Some((lifecycle, instances)) = record else {
                continue;
            };
            let line = |h: &edgeio_core::state::HistoryEntry<_>| {
                format!(
                    "{}@{} ({})",
                    h.state,
                    h.at_ms.saturating_sub(EPOCH_MS),
                    h.reason
                )
            };
            let states: Vec<String> = lifecycle.history().iter().map(line).collect();
            out.push_str(&format!("\n  {tier}: {}", states.join(" ")));
            for i in instances {
                let states: Vec<String> = i
                    .lifecycle
                    .history()
                    .iter()
                    .map(|h| {
                        format!(
                            "{}@{} ({})",
                            h.state,
                            h.at_ms.saturating_sub(EPOCH_MS),
                            h.reason
                        )
                    })
                    .collect();
                out.push_str(&format!(
                    "\n    {} on {:?}: {}",
                    i.id,
                    i.node,
                    states.join(" → ")
                ));
            }
        }
        out
    }

    pub(super) fn check(&mut self) -> Result<(), Violation> {
        let running = self.running()?;
        let wanted = self.config.replicas as usize;
        let quiet = self.cut.is_empty() && self.down.is_empty();
        let mut still = BTreeMap::new();
        for (job, copies) in &running {
            if copies.len() > wanted {
                let since = self.excess_since.get(job).copied().unwrap_or(self.now);
                let from = since.max(self.last_heal_ms);
                if quiet && self.now.saturating_sub(from) > self.config.excess_grace_ms {
                    return Err(Violation {
                        at_ms: self.now,
                        invariant: "replicas",
                        detail: format!(
                            "job {job} has run {} copies (wants {wanted}) since {since} ms: {:?}{}",
                            copies.len(),
                            copies,
                            self.story(job)
                        ),
                    });
                }
                still.insert(job.clone(), since);
            }
        }
        self.excess_since = still;
        Ok(())
    }

    /// Whether a live job (not asked to terminate) is where it should be once the faults
    /// ended: RUNNING with every replica, unless its instances ended on their own — a job
    /// an instance of which exited cleanly and was done is finished (the root holds that
    /// instance EXITED, and nothing replaces it), and a job a worker gave up on may have
    /// found no other node (its relocation failed for good: FAILED, nothing runs).
    fn settled(&self, id: &JobId, state: Option<JobState>, copies: usize) -> bool {
        let wanted = self.config.replicas as usize;
        if state == Some(JobState::Running) && copies == wanted {
            return true;
        }
        let record = self
            .root
            .state
            .as_ref()
            .and_then(|r| r.jobs.get(id.as_str()));
        let exited = record.is_some_and(|r| {
            r.instances
                .iter()
                .any(|i| i.lifecycle.state() == InstanceState::Exited)
        });
        let live = state.is_some_and(|s| !s.is_final());
        (self.finished.contains(id) && exited && live && copies <= wanted)
            || (self.gave_up.contains(id) && state == Some(JobState::Failed) && copies == 0)
    }

    pub(super) fn check_end(&self) -> Result<(), Violation> {
        let violation = |invariant, detail| Violation {
            at_ms: self.now,
            invariant,
            detail,
        };
        let Some(root) = &self.root.state else {
            return Err(violation("liveness", "the root is down at the end".into()));
        };
        let mut lives: Vec<Lifecycle<InstanceState>> = Vec::new();
        for job in root.jobs.values() {
            follows_table(&job.lifecycle)
                .map_err(|e| violation("table", format!("job {} moved {e}", job.id)))?;
            lives.extend(job.instances.iter().map(|i| i.lifecycle.clone()));
        }
        for cluster in self.clusters.iter().filter_map(|c| c.state.as_ref()) {
            for job in cluster.jobs.values() {
                follows_table(&job.lifecycle)
                    .map_err(|e| violation("table", format!("job {} moved {e}", job.id)))?;
                lives.extend(job.instances.iter().map(|i| i.lifecycle.clone()));
            }
        }
        for life in &lives {
            follows_table(life)
                .map_err(|e| violation("table", format!("an instance moved {e}")))?;
        }
        let running = self.running()?;
        for (n, id) in self.submitted.iter().enumerate() {
            let Some(id) = id else {
                return Err(violation(
                    "liveness",
                    format!("job {n} was never submitted"),
                ));
            };
            let state = root.jobs.get(id.as_str()).map(|j| j.lifecycle.state());
            let copies = running.get(id).map_or(0, Vec::len);
            if self.terminated.contains(&n) {
                if state != Some(JobState::Terminated) || copies != 0 {
                    return Err(violation(
                        "liveness",
                        format!("terminated job {id} is {state:?} with {copies} copies running"),
                    ));
                }
            } else if !self.settled(id, state, copies) {
                return Err(violation(
                    "liveness",
                    format!(
                        "job {id} is {state:?} with {copies} copies running, {} s after the faults ended:{}",
                        self.config.settle_ms / 1000,
                        self.story(id)
                    ),
                ));
            }
        }
        Ok(())
    }
}
