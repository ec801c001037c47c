//! What a job's instances imply for its state, and the moves that follow: the rules both
//! tiers share (see [`JobRecord::settle`]).

use super::{InstanceRecord, JobRecord, Refusals};
use edgeio_core::model::InstanceId;
use edgeio_core::state::{InstanceState, JobState, StateMachine};

impl<T> JobRecord<T> {
    /// The job state its instances imply, if it differs from the current one: TERMINATED
    /// once a terminating job has nothing left, FAILED when an instance failed, RUNNING when
    /// every replica runs, SCHEDULED_NODE once instances are placed.
    pub fn implied_state(&self) -> Option<(JobState, String)> {
        let state = self.lifecycle.state();
        let states: Vec<InstanceState> =
            self.instances.iter().map(|i| i.lifecycle.state()).collect();
        match state {
            JobState::Migrating => return self.implied_by_change(),
            JobState::Scaling => {
                if let Some(done) = self.implied_by_change() {
                    return Some(done);
                }
            }
            _ => {}
        }
        let implied = match state {
            JobState::Terminating if self.instances.iter().all(InstanceRecord::is_over) => {
                (JobState::Terminated, "every instance stopped".to_string())
            }
            s if s.is_final() || s == JobState::Terminating => return None,
            // failed with nothing to take its place (a relocated failure has a replacement;
            // an exited one may be restarting; a lost one may come back, unless it was
            // relocated: then its replacement took its place, and failed)
            _ if states.contains(&InstanceState::Failed)
                && states
                    .iter()
                    .filter(|s| {
                        matches!(
                            s,
                            InstanceState::Pending
                                | InstanceState::Starting
                                | InstanceState::Running
                                | InstanceState::Restarting
                                | InstanceState::Exited
                        )
                    })
                    .count()
                    + self.lost_unreplaced()
                    < self.spec.replicas.max(1) as usize =>
            {
                let why = self
                    .instances
                    .iter()
                    .find(|i| i.lifecycle.state() == InstanceState::Failed)
                    .and_then(|i| i.lifecycle.history().last())
                    .map(|h| h.reason.clone())
                    .unwrap_or_default();
                (JobState::Failed, format!("an instance failed: {why}"))
            }
            _ if edgeio_core::state::all_replicas_running(self.spec.replicas, &states) => {
                (JobState::Running, "every replica runs".to_string())
            }
            JobState::ScheduledCluster if !self.instances.is_empty() => (
                JobState::ScheduledNode,
                format!("placed on {}", self.node_names().join(", ")),
            ),
            // a replacement is on its way (an instance was lost with its node)
            JobState::Running
                if states
                    .iter()
                    .any(|s| matches!(s, InstanceState::Pending | InstanceState::Starting)) =>
            {
                let why = self
                    .instances
                    .iter()
                    .rev()
                    .find(|i| i.lifecycle.state() == InstanceState::Pending)
                    .and_then(|i| i.lifecycle.history().first())
                    .map_or_else(
                        || "an instance is starting".to_string(),
                        |h| h.reason.clone(),
                    );
                (JobState::ScheduledNode, why)
            }
            _ => return None,
        };
        if state == JobState::Scaling && implied.0 != JobState::Failed {
            // a change of count ends when the count is reached, not when some replicas run
            return None;
        }
        (implied.0 != state).then_some(implied)
    }

    /// How many LOST instances no later instance replaced (their node may bring them back).
    /// Instances are recorded in the order they were made; those past the first `replicas`
    /// were made to replace one that ended before them (a relocation of a lost or failed
    /// one), unless they are the new half of a migration (`replaces`). Each such replacement
    /// is matched with an earlier FAILED or LOST instance not matched yet, a FAILED one
    /// first: when it is unclear which one it replaced, a lost instance keeps counting.
    fn lost_unreplaced(&self) -> usize {
        let (mut failed, mut lost) = (0usize, 0usize);
        let first_replacement = self.spec.replicas.max(1) as usize;
        for (n, instance) in self.instances.iter().enumerate() {
            if n >= first_replacement && instance.replaces.is_none() {
                if failed > 0 {
                    failed -= 1;
                } else {
                    lost = lost.saturating_sub(1);
                }
            }
            match instance.lifecycle.state() {
                InstanceState::Failed => failed += 1,
                InstanceState::Lost => lost += 1,
                _ => {}
            }
        }
        lost
    }

    /// Marks LOST the live instances `which` picks, each change recorded with `why`; one the
    /// table refuses (an exited instance stays EXITED) is noted in `refusals`. Returns the
    /// instances that became LOST.
    pub fn lose(
        &mut self,
        which: impl Fn(&InstanceRecord) -> bool,
        now_ms: u64,
        why: &str,
        refusals: &mut Refusals,
    ) -> Vec<InstanceId> {
        let mut lost = Vec::new();
        for instance in self
            .instances
            .iter_mut()
            .filter(|i| !i.is_over() && which(i))
        {
            let moved = instance
                .lifecycle
                .reconcile(InstanceState::Lost, now_ms, why);
            let instead = "it keeps its state (an exited instance stays EXITED)";
            if refusals
                .check(moved, self.id.as_str(), Some(&instance.id), instead)
                .is_some()
            {
                lost.push(instance.id.clone());
            }
        }
        lost
    }

    /// Moves the job to the state its instances imply, step by step (see [`Self::implied_state`]).
    pub fn settle(&mut self, now_ms: u64, refusals: &mut Refusals) {
        while let Some((state, why)) = self.implied_state() {
            if let Err(e) = self.lifecycle.reconcile(state, now_ms, &why) {
                // the implied state is unreachable from here: it stays as it is until the
                // next report moves it
                refusals.note(self.id.as_str(), None, &e, "the job keeps its state");
                break;
            }
            tracing::info!(job = %self.id, state = %state, "job state");
        }
        if self.lifecycle.state() != JobState::Migrating {
            self.migration = None;
        }
    }

    /// What a MIGRATING or SCALING job's instances imply: RUNNING once the move or the
    /// change of count is complete (or a move failed and the old placement stays).
    fn implied_by_change(&self) -> Option<(JobState, String)> {
        let counts = |from: usize, pick: &dyn Fn(InstanceState) -> bool| {
            self.instances
                .iter()
                .skip(from)
                .filter(|i| pick(i.lifecycle.state()))
                .count()
        };
        match self.lifecycle.state() {
            JobState::Migrating => {
                let m = self.migration.as_ref()?;
                let new = &self.instances.get(m.first_new..)?;
                // the instances that stay (other replicas, other parts) and the new ones that
                // run make the count again once those being replaced are going
                let staying = self.instances[..m.first_new]
                    .iter()
                    .filter(|i| i.counts_as_replica())
                    .count();
                let running = counts(m.first_new, &|s| s == InstanceState::Running);
                if running > 0 && staying + running <= self.spec.replicas as usize {
                    let ids: Vec<&str> = new.iter().map(|i| i.id.as_str()).collect();
                    return Some((
                        JobState::Running,
                        format!("migrated to {}: {} runs", m.target, ids.join(", ")),
                    ));
                }
                // a new instance lost with its node is stopped if the node brings it back
                // while the old one runs (the old one counts as its replacement): the move
                // is over as if it had ended
                let ended =
                    |i: &InstanceRecord| i.is_over() || i.lifecycle.state() == InstanceState::Lost;
                if !new.is_empty() && new.iter().all(ended) {
                    let why = new
                        .last()
                        .and_then(|i| i.lifecycle.history().last())
                        .map(|h| h.reason.clone())
                        .unwrap_or_default();
                    return Some((
                        JobState::Running,
                        format!(
                            "migration to {} abandoned, the old placement stays: {why}",
                            m.target
                        ),
                    ));
                }
                None
            }
            JobState::Scaling => {
                let running = counts(0, &|s| s == InstanceState::Running);
                let moving = counts(0, &|s| {
                    matches!(
                        s,
                        InstanceState::Pending
                            | InstanceState::Starting
                            | InstanceState::Terminating
                    )
                });
                (running == self.spec.replicas as usize && moving == 0).then(|| {
                    (
                        JobState::Running,
                        format!("scaled to {} replicas", self.spec.replicas),
                    )
                })
            }
            _ => None,
        }
    }
}
