//! Lifecycle states of jobs, instances, nodes and clusters, with ONE transition table each.
//!
//! Every state change in edgeio goes through [`Lifecycle::transition`], which checks the
//! object's table and records the change in the object's history. An illegal move is a
//! [`TransitionError`], never a silent overwrite. The tables are snapshot-tested
//! (`tests/snapshots`), so changing one is a reviewed change.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A state of some object, with its transition table.
pub trait StateMachine:
    Copy + Eq + fmt::Debug + fmt::Display + Serialize + Send + Sync + 'static
{
    /// The object's name in error messages (`job`, `instance` …).
    const OBJECT: &'static str;
    /// Every state, in table order.
    const ALL: &'static [Self];
    /// The states this one may move to (the transition table's row).
    fn successors(self) -> &'static [Self];
    /// True when no transition leaves this state.
    fn is_final(self) -> bool {
        self.successors().is_empty()
    }
    /// True when `self -> to` is in the table.
    fn can_move_to(self, to: Self) -> bool {
        self.successors().contains(&to)
    }
    /// The states a report that skipped some may be caught up through, from `self` to `to`
    /// (not counting either), when `self -> to` is not one move: the catch-up table, declared
    /// pair by pair (never a search), each step a move of the transition table. Empty when
    /// there is no declared catch-up.
    fn catch_up(self, to: Self) -> &'static [Self] {
        let _ = to;
        &[]
    }
}

macro_rules! states {
    ($(#[$doc:meta])* $name:ident, $object:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The state's name as shown to users and on the wire (`SCHEDULED_NODE`).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

states!(
    /// The orchestration phase of a job (thesis figure 3.5, plus NOT_DEPLOYABLE, TERMINATING).
    ///
    /// The job state says where orchestration is; each instance's own state says how each
    /// replica is doing. A job with replicas is RUNNING once all its instances run.
    JobState, "job" {
        /// Accepted by the root, no cluster chosen yet (also: re-placement across clusters).
        Requested = "REQUESTED",
        /// A cluster was chosen and asked to take the job.
        ScheduledCluster = "SCHEDULED_CLUSTER",
        /// The cluster chose node(s) and asked them to start instances.
        ScheduledNode = "SCHEDULED_NODE",
        /// All instances run.
        Running = "RUNNING",
        /// Moving make-before-break: the new instance starts before the old one stops.
        Migrating = "MIGRATING",
        /// The number of replicas is changing.
        Scaling = "SCALING",
        /// No cluster or node fits; the reason says which filters refused.
        NotDeployable = "NOT_DEPLOYABLE",
        /// Instances are being stopped.
        Terminating = "TERMINATING",
        /// Stopped on request; final.
        Terminated = "TERMINATED",
        /// Given up; final, the reason says why.
        Failed = "FAILED",
    }
);

states!(
    /// The state of one instance (one replica of a job on one node).
    InstanceState, "instance" {
        /// Placed on a node, not yet started by it.
        Pending = "PENDING",
        /// The node's runtime is starting it.
        Starting = "STARTING",
        /// Running.
        Running = "RUNNING",
        /// Waiting for its restart backoff on the same node.
        Restarting = "RESTARTING",
        /// Its process ended (exit code in the reason); restart policy decides what follows.
        Exited = "EXITED",
        /// Cannot run or past its restart limit; final. Relocation creates a new instance.
        Failed = "FAILED",
        /// Its node is lost; it may come back (and be kept or terminated as a duplicate).
        Lost = "LOST",
        /// Being stopped (on request, or as the old half of a migration).
        Terminating = "TERMINATING",
        /// Stopped; final.
        Terminated = "TERMINATED",
    }
);

states!(
    /// The state of a worker node as its cluster sees it.
    NodeState, "node" {
        /// Registered and heard from within `missed_heartbeats × status_interval`.
        Ready = "READY",
        /// Its MQTT will fired or it missed its heartbeats.
        Lost = "LOST",
    }
);

states!(
    /// The state of a cluster as the root sees it.
    ClusterState, "cluster" {
        /// Sending aggregates; receives work.
        Active = "ACTIVE",
        /// Missed `missed_aggregates × aggregate_interval`; receives no new work.
        Inactive = "INACTIVE",
    }
);

impl StateMachine for JobState {
    const OBJECT: &'static str = "job";
    const ALL: &'static [Self] = &[
        JobState::Requested,
        JobState::ScheduledCluster,
        JobState::ScheduledNode,
        JobState::Running,
        JobState::Migrating,
        JobState::Scaling,
        JobState::NotDeployable,
        JobState::Terminating,
        JobState::Terminated,
        JobState::Failed,
    ];

    fn successors(self) -> &'static [Self] {
        use JobState::*;
        match self {
            Requested => &[ScheduledCluster, NotDeployable, Terminating, Failed],
            // back to REQUESTED: the cluster refused (capacity changed) and the next one is tried
            ScheduledCluster => &[ScheduledNode, Requested, NotDeployable, Terminating, Failed],
            // back to SCHEDULED_CLUSTER: the node could not start it and the cluster re-places;
            // back to REQUESTED: the cluster has no other node and escalates to the root
            ScheduledNode => &[Running, ScheduledCluster, Requested, Terminating, Failed],
            // SCHEDULED_NODE: relocation inside the cluster (worker lost, restart limit reached);
            // REQUESTED: relocation across clusters (escalation, cluster lost)
            Running => &[
                Migrating,
                Scaling,
                ScheduledNode,
                Requested,
                Terminating,
                Failed,
            ],
            // make-before-break ends in RUNNING either way (new instance up, or migration abandoned)
            Migrating => &[Running, Terminating, Failed],
            Scaling => &[Running, Terminating, Failed],
            // capacity may appear later: the root retries from REQUESTED
            NotDeployable => &[Requested, Terminating, Failed],
            Terminating => &[Terminated, Failed],
            Terminated | Failed => &[],
        }
    }

    fn catch_up(self, to: Self) -> &'static [Self] {
        use JobState::*;
        match (self, to) {
            // instance events arrived before the cluster's placement was recorded
            (Requested, ScheduledNode) => &[ScheduledCluster],
            (Requested, Running) => &[ScheduledCluster, ScheduledNode],
            (ScheduledCluster, Running) => &[ScheduledNode],
            // a cluster that kept a job the root had given up on is back with it
            (NotDeployable, ScheduledCluster) => &[Requested],
            // a move or a resize overtaken by a loss: it ends, then the job is placed again
            (Migrating | Scaling, Requested | ScheduledNode) => &[Running],
            // the cluster(s) that took a job cannot place it after all
            (ScheduledNode, NotDeployable) => &[ScheduledCluster],
            // everything ended at once (a cluster keeps nothing of it)
            (
                Requested | ScheduledCluster | ScheduledNode | Running | Migrating | Scaling
                | NotDeployable,
                Terminated,
            ) => &[Terminating],
            _ => &[],
        }
    }
}

impl StateMachine for InstanceState {
    const OBJECT: &'static str = "instance";
    const ALL: &'static [Self] = &[
        InstanceState::Pending,
        InstanceState::Starting,
        InstanceState::Running,
        InstanceState::Restarting,
        InstanceState::Exited,
        InstanceState::Failed,
        InstanceState::Lost,
        InstanceState::Terminating,
        InstanceState::Terminated,
    ];

    fn successors(self) -> &'static [Self] {
        use InstanceState::*;
        match self {
            Pending => &[Starting, Lost, Terminating, Failed],
            Starting => &[Running, Exited, Lost, Terminating, Failed],
            Running => &[Exited, Restarting, Lost, Terminating, Failed],
            // restart on the same node (policy allows), or done (TERMINATED after a clean exit
            // with policy `never`/`on-failure`), or FAILED past the restart limit
            Exited => &[Restarting, Terminating, Terminated, Failed],
            Restarting => &[Starting, Lost, Terminating, Failed],
            // the node came back: kept (RUNNING) or a duplicate of a newer placement (TERMINATING);
            // TERMINATED: the node never returned and the record is closed
            Lost => &[Running, Terminating, Terminated, Failed],
            Terminating => &[Terminated, Failed],
            Failed | Terminated => &[],
        }
    }

    fn catch_up(self, to: Self) -> &'static [Self] {
        use InstanceState::*;
        match (self, to) {
            // a status or event shows where the runtime is; the ones between were lost
            (Pending | Restarting, Running | Exited) => &[Starting],
            (Exited, Starting) => &[Restarting],
            (Exited, Running) => &[Restarting, Starting],
            // stopped without its stop being seen
            (Pending | Starting | Running | Restarting, Terminated) => &[Terminating],
            _ => &[],
        }
    }
}

impl StateMachine for NodeState {
    const OBJECT: &'static str = "node";
    const ALL: &'static [Self] = &[NodeState::Ready, NodeState::Lost];

    fn successors(self) -> &'static [Self] {
        match self {
            NodeState::Ready => &[NodeState::Lost],
            // a lost worker that re-registers with its kept node id is READY again
            NodeState::Lost => &[NodeState::Ready],
        }
    }
}

impl StateMachine for ClusterState {
    const OBJECT: &'static str = "cluster";
    const ALL: &'static [Self] = &[ClusterState::Active, ClusterState::Inactive];

    fn successors(self) -> &'static [Self] {
        match self {
            ClusterState::Active => &[ClusterState::Inactive],
            // a cluster that reconnects re-syncs and is ACTIVE again
            ClusterState::Inactive => &[ClusterState::Active],
        }
    }
}

/// A move that the object's transition table does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object} cannot move from {from} to {to}{}", allowed_text(.allowed))]
pub struct TransitionError {
    /// `job`, `instance`, `node` or `cluster`.
    pub object: &'static str,
    /// The current state.
    pub from: String,
    /// The refused target state.
    pub to: String,
    /// The states it could move to.
    pub allowed: Vec<String>,
}

fn allowed_text(allowed: &[String]) -> String {
    if allowed.is_empty() {
        " (it is final)".to_string()
    } else {
        format!(" (allowed: {})", allowed.join(", "))
    }
}

/// One recorded state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry<S> {
    /// The state entered.
    pub state: S,
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// Why, in words a user can act on (`exit code 137 (OOM killed)`).
    pub reason: String,
}

/// An object's current state and its full history. The only way to change the state is
/// [`Lifecycle::transition`], which checks the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: serde::de::DeserializeOwned"))]
pub struct Lifecycle<S> {
    state: S,
    history: Vec<HistoryEntry<S>>,
}

impl<S: StateMachine> Lifecycle<S> {
    /// Starts a lifecycle in `initial`.
    pub fn new(initial: S, at_ms: u64, reason: impl Into<String>) -> Self {
        Self {
            state: initial,
            history: vec![HistoryEntry {
                state: initial,
                at_ms,
                reason: reason.into(),
            }],
        }
    }

    /// The current state.
    pub fn state(&self) -> S {
        self.state
    }

    /// Every state entered, oldest first.
    pub fn history(&self) -> &[HistoryEntry<S>] {
        &self.history
    }

    /// Catches up with a reported state: one move when the table has it, else the declared
    /// catch-up path ([`StateMachine::catch_up`]) then `to`, each step recorded with `reason`.
    /// All or nothing: a refused step leaves the lifecycle as it was. Returns the number of
    /// moves made (0 when already in `to`).
    pub fn reconcile(
        &mut self,
        to: S,
        at_ms: u64,
        reason: impl Into<String>,
    ) -> Result<usize, TransitionError> {
        if self.state == to {
            return Ok(0);
        }
        let reason = reason.into();
        if self.state.can_move_to(to) {
            self.transition(to, at_ms, reason)?;
            return Ok(1);
        }
        let via = self.state.catch_up(to);
        if via.is_empty() {
            return Err(self.refusal(to));
        }
        let mut next = self.clone();
        for &step in via.iter().chain([&to]) {
            next.transition(step, at_ms, reason.clone())
                .map_err(|_| self.refusal(to))?;
        }
        *self = next;
        Ok(via.len() + 1)
    }

    fn refusal(&self, to: S) -> TransitionError {
        TransitionError {
            object: S::OBJECT,
            from: self.state.to_string(),
            to: to.to_string(),
            allowed: self
                .state
                .successors()
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }

    /// Moves to `to` if the table allows it, recording time and reason.
    pub fn transition(
        &mut self,
        to: S,
        at_ms: u64,
        reason: impl Into<String>,
    ) -> Result<(), TransitionError> {
        if !self.state.can_move_to(to) {
            return Err(self.refusal(to));
        }
        self.state = to;
        self.history.push(HistoryEntry {
            state: to,
            at_ms,
            reason: reason.into(),
        });
        Ok(())
    }
}

/// Renders the catch-up table (see [`StateMachine::catch_up`]) as text, one row per declared
/// pair: `FROM -> TO via A, B`.
pub fn render_catch_up<S: StateMachine>() -> String {
    let mut out = String::new();
    for from in S::ALL {
        for to in S::ALL {
            let via = from.catch_up(*to);
            if !via.is_empty() {
                let via: Vec<String> = via.iter().map(ToString::to_string).collect();
                out.push_str(&format!("{from} -> {to} via {}\n", via.join(", ")));
            }
        }
    }
    out
}

/// Renders a transition table as text, one row per state (used by the snapshot tests and docs).
pub fn render_table<S: StateMachine>() -> String {
    let mut out = String::new();
    for state in S::ALL {
        let next: Vec<String> = state.successors().iter().map(ToString::to_string).collect();
        let next = if next.is_empty() {
            "(final)".to_string()
        } else {
            next.join(", ")
        };
        out.push_str(&format!("{state} -> {next}\n"));
    }
    out
}

/// Whether a job with `replicas` wanted instances counts as RUNNING: all of them run.
pub fn all_replicas_running(replicas: u32, instances: &[InstanceState]) -> bool {
    let running = instances
        .iter()
        .filter(|s| **s == InstanceState::Running)
        .count();
    replicas > 0 && running >= replicas as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_up_table_snapshot() {
        insta::assert_snapshot!(format!(
            "job:\n{}\ninstance:\n{}",
            render_catch_up::<JobState>(),
            render_catch_up::<InstanceState>()
        ));
    }

    #[test]
    fn every_catch_up_step_is_a_move_of_the_table() {
        fn check<S: StateMachine>() {
            for from in S::ALL {
                for to in S::ALL {
                    let via = from.catch_up(*to);
                    if via.is_empty() {
                        continue;
                    }
                    assert!(!from.can_move_to(*to), "{from} -> {to} is one move already");
                    let mut at = *from;
                    for step in via.iter().chain([to]) {
                        assert!(at.can_move_to(*step), "{from} -> {to}: {at} -> {step}");
                        at = *step;
                    }
                }
            }
        }
        check::<JobState>();
        check::<InstanceState>();
    }

    #[test]
    fn reconcile_takes_the_declared_path_or_nothing() {
        let mut life = Lifecycle::new(InstanceState::Pending, 0, "placed");
        assert_eq!(life.reconcile(InstanceState::Running, 5, "reported"), Ok(2));
        let states: Vec<_> = life.history().iter().map(|h| h.state).collect();
        assert_eq!(
            states,
            [
                InstanceState::Pending,
                InstanceState::Starting,
                InstanceState::Running
            ]
        );
        assert_eq!(life.reconcile(InstanceState::Running, 6, "again"), Ok(0));
        // no declared path: refused, nothing recorded
        let mut lost = Lifecycle::new(InstanceState::Exited, 0, "exited");
        let e = lost
            .reconcile(InstanceState::Lost, 1, "node lost")
            .unwrap_err();
        assert_eq!(e.to, "LOST");
        assert_eq!(lost.history().len(), 1);
        // final states go nowhere
        let mut done = Lifecycle::new(JobState::Terminated, 0, "x");
        assert!(done.reconcile(JobState::Running, 1, "late").is_err());
        assert_eq!(done.history().len(), 1);
    }

    #[test]
    fn job_table_snapshot() {
        insta::assert_snapshot!(render_table::<JobState>());
    }

    #[test]
    fn instance_table_snapshot() {
        insta::assert_snapshot!(render_table::<InstanceState>());
    }

    #[test]
    fn node_and_cluster_table_snapshot() {
        insta::assert_snapshot!(format!(
            "{}{}",
            render_table::<NodeState>(),
            render_table::<ClusterState>()
        ));
    }

    #[test]
    fn every_non_final_job_state_can_terminate_and_fail() {
        for s in JobState::ALL.iter().filter(|s| !s.is_final()) {
            if *s != JobState::Terminating {
                assert!(s.can_move_to(JobState::Terminating), "{s}");
            }
            assert!(s.can_move_to(JobState::Failed), "{s}");
        }
        assert!(JobState::Terminated.is_final() && JobState::Failed.is_final());
    }

    #[test]
    fn thesis_happy_path_and_refusal_path_are_legal() {
        use JobState::*;
        let mut job = Lifecycle::new(Requested, 0, "submitted");
        for (i, s) in [
            ScheduledCluster,
            Requested, // cluster refused
            ScheduledCluster,
            ScheduledNode,
            Running,
            Migrating,
            Running,
            Scaling,
            Running,
            Terminating,
            Terminated,
        ]
        .into_iter()
        .enumerate()
        {
            job.transition(s, i as u64 + 1, "step").unwrap();
        }
        assert_eq!(job.history().len(), 12);
        assert_eq!(job.state(), Terminated);
    }

    #[test]
    fn restart_relocation_and_loss_paths_are_legal_for_instances() {
        use InstanceState::*;
        let paths: &[&[InstanceState]] = &[
            // restart on the same node
            &[
                Pending, Starting, Running, Exited, Restarting, Starting, Running,
            ],
            // past the restart limit: failed (relocation makes a new instance)
            &[Pending, Starting, Running, Exited, Failed],
            // worker lost, came back, kept
            &[Pending, Starting, Running, Lost, Running],
            // worker lost, came back as a duplicate
            &[Pending, Starting, Running, Lost, Terminating, Terminated],
            // old half of a make-before-break migration
            &[Pending, Starting, Running, Terminating, Terminated],
        ];
        for path in paths {
            let mut life = Lifecycle::new(path[0], 0, "placed");
            for s in &path[1..] {
                life.transition(*s, 1, "step")
                    .unwrap_or_else(|e| panic!("{path:?}: {e}"));
            }
        }
    }

    #[test]
    fn illegal_transition_is_a_typed_error_and_changes_nothing() {
        let mut job = Lifecycle::new(JobState::Terminated, 0, "done");
        let err = job.transition(JobState::Running, 1, "oops").unwrap_err();
        assert_eq!(
            err.to_string(),
            "job cannot move from TERMINATED to RUNNING (it is final)"
        );
        assert_eq!(job.state(), JobState::Terminated);
        assert_eq!(job.history().len(), 1);

        let mut node = Lifecycle::new(NodeState::Ready, 0, "registered");
        let err = node.transition(NodeState::Ready, 1, "again").unwrap_err();
        assert_eq!(
            err.to_string(),
            "node cannot move from READY to READY (allowed: LOST)"
        );
    }

    #[test]
    fn replicas_count_as_running_only_when_all_run() {
        use InstanceState::*;
        assert!(!all_replicas_running(2, &[Running, Starting]));
        assert!(all_replicas_running(2, &[Running, Running]));
        assert!(!all_replicas_running(0, &[]));
    }

    #[test]
    fn lifecycle_roundtrips_through_json() {
        let mut life = Lifecycle::new(ClusterState::Active, 5, "registered");
        life.transition(ClusterState::Inactive, 9, "missed 3 aggregates")
            .unwrap();
        let json = serde_json::to_string(&life).unwrap();
        assert!(json.contains("\"INACTIVE\""), "{json}");
        let back: Lifecycle<ClusterState> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, life);
    }
}
