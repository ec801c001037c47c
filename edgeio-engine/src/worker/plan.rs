//! The worker's decisions as functions: what a command means given what runs here
//! ([`plan`]), what follows an exit ([`after_exit`]), and the status it reports
//! ([`status_of`]). [`super::Worker`] is the loop around them that does the I/O.

use edgeio_core::job::{InstanceSpec, RestartKind, RestartPolicy};
use edgeio_core::model::{InstanceId, JobId, Resources, RuntimeKind};
use edgeio_core::runtime::RunState;
use edgeio_core::state::InstanceState;
use edgeio_core::wire::{ErrorBody, HostUsage, InstanceReport, Message, NodeStatus};
use std::collections::BTreeMap;
use std::time::Duration;
/// What the worker knows about one instance it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// The job.
    pub job: JobId,
    /// The runtime kind running it.
    pub kind: RuntimeKind,
    /// Its state as last reported.
    pub state: InstanceState,
    /// What it reserves.
    pub resources: Resources,
    /// How to start it again, with its job's restart policy; `None` for an instance adopted
    /// after a restart of the worker (its spec went with the old process), which is not
    /// restarted here.
    pub restart: Option<(InstanceSpec, RestartPolicy)>,
    /// Restarts on this node so far.
    pub restarts: u32,
    /// Its previous run is being cleared away for a restart: the runtime's `Removed` of that
    /// run, which arrives after the restart began, is not news.
    pub clearing: bool,
}

impl Local {
    /// An instance being started from `spec` under `policy`: STARTING, no restart yet.
    pub fn starting(spec: &InstanceSpec, policy: RestartPolicy) -> Local {
        Local {
            job: spec.job.clone(),
            kind: spec.kind.clone(),
            state: InstanceState::Starting,
            resources: spec.resources,
            restart: Some((spec.clone(), policy)),
            restarts: 0,
            clearing: false,
        }
    }
}

/// What to do when an instance's process ended on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterExit {
    /// Nothing: it is done (a clean exit the policy does not restart).
    Done,
    /// Start it again on this node after this wait.
    Restart(Duration),
    /// Give up on this node: the instance is FAILED here (the cluster relocates it).
    GiveUp(String),
}

/// Decides what an exit with `code` (`None`: killed by a signal) means under `policy`, after
/// `restarts` restarts on this node. Pure: the waits double from `backoff_ms` (capped at an
/// hour), and `on-failure` and `always` stop at `limit`.
pub fn after_exit(policy: &RestartPolicy, code: Option<i32>, restarts: u32) -> AfterExit {
    let failed = code != Some(0);
    let how = match code {
        Some(c) => format!("exited with code {c}"),
        None => "was killed by a signal".to_string(),
    };
    let wanted = match policy.policy {
        RestartKind::Never => {
            return if failed {
                AfterExit::GiveUp(format!("{how}; restart policy never"))
            } else {
                AfterExit::Done
            }
        }
        RestartKind::OnFailure => failed,
        RestartKind::Always => true,
    };
    if !wanted {
        return AfterExit::Done;
    }
    if restarts >= policy.limit {
        return AfterExit::GiveUp(format!(
            "{how}; restart limit {} reached on this node",
            policy.limit
        ));
    }
    let wait = policy
        .backoff_ms
        .saturating_mul(1u64 << restarts.min(32))
        .min(3_600_000);
    AfterExit::Restart(Duration::from_millis(wait))
}

/// What a command asks of this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start this instance.
    Start(InstanceSpec),
    /// Stop this instance.
    Stop(InstanceId),
    /// Refuse the command (answered with a nack).
    Refuse(ErrorBody),
}

fn refuse(code: &str, message: String) -> Vec<Action> {
    vec![Action::Refuse(ErrorBody {
        code: code.to_string(),
        message,
    })]
}

/// Decides what `command` means given what runs here (`local`) and the runtime kinds this
/// worker has. Pure, so it is unit-tested with values; an empty list means "already as asked".
pub fn plan(
    command: &Message,
    local: &BTreeMap<InstanceId, Local>,
    kinds: &[RuntimeKind],
) -> Vec<Action> {
    match command {
        Message::Deploy(deploy) => match &deploy.instance {
            None => refuse(
                "invalid",
                format!(
                    "deploy of job {:?} to a worker must name the instance to run",
                    deploy.job.as_str()
                ),
            ),
            Some(spec) if local.contains_key(&spec.id) => Vec::new(),
            Some(spec) if !kinds.contains(&spec.kind) => refuse(
                "unsupported",
                format!(
                    "image_runtime {:?} is not available on this worker (it has: {})",
                    spec.kind.as_str(),
                    kinds
                        .iter()
                        .map(RuntimeKind::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Some(spec) => vec![Action::Start(spec.clone())],
        },
        Message::Terminate(t) => local
            .iter()
            .filter(|(id, l)| l.job == t.job && t.instance.as_ref().is_none_or(|only| only == *id))
            .filter(|(_, l)| l.state != InstanceState::Terminating)
            .map(|(id, _)| Action::Stop(id.clone()))
            .collect(),
        Message::Migrate(_) | Message::Scale(_) => refuse(
            "unsupported",
            format!(
                "{} is decided by the cluster, not by a worker",
                command.kind()
            ),
        ),
        _ => Vec::new(),
    }
}

/// The instance state a runtime state means, for an instance not being terminated.
pub fn instance_state(state: &RunState) -> InstanceState {
    match state {
        RunState::Starting => InstanceState::Starting,
        RunState::Running => InstanceState::Running,
        RunState::Exited { .. } => InstanceState::Exited,
        RunState::Removed => InstanceState::Terminated,
    }
}

/// A node's status from what it runs (`local`): free is `total` less what its pending,
/// starting and running instances reserve; every instance is reported with its state.
pub fn status_of(
    total: Resources,
    local: &BTreeMap<InstanceId, Local>,
    usage: Option<HostUsage>,
) -> NodeStatus {
    let reserved = local
        .values()
        .filter(|l| {
            matches!(
                l.state,
                InstanceState::Pending | InstanceState::Starting | InstanceState::Running
            )
        })
        .fold(Resources::ZERO, |sum, l| sum.saturating_add(&l.resources));
    NodeStatus {
        free: total.saturating_sub(&reserved),
        total,
        instances: local
            .iter()
            .map(|(id, l)| InstanceReport {
                instance: id.clone(),
                job: l.job.clone(),
                state: l.state,
            })
            .collect(),
        usage,
    }
}
