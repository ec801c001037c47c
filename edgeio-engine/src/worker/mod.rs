//! The worker engine (Node Engine): runs what its cluster commands through its runtimes,
//! reports every instance change at once, and its status every `status_interval`.
//!
//! The decision what a command means is a pure function ([`plan`]) from the command and what
//! runs here; [`Worker::run`] is the loop around it that does the I/O. Duplicate commands are
//! dropped by the reliable layer the caller wraps the transport in
//! ([`edgeio_core::reliable::ReliableChild`]); [`plan`] is idempotent as well, so a deploy of an
//! instance that already runs has no second effect.

use edgeio_core::clock::Context;
use edgeio_core::job::RestartPolicy;
use edgeio_core::model::{InstanceId, JobId, Resources, RuntimeKind};
use edgeio_core::runtime::{LogOptions, RunState, Runtime, RuntimeEvent, LABEL_JOB};
use edgeio_core::state::InstanceState;
use edgeio_core::transport::{ChildTransport, TransportError};
use edgeio_core::wire::{
    Envelope, ErrorBody, HostUsage, InstanceEvent, Message, NodeStatus, Query,
};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

mod plan;

pub use plan::{after_exit, instance_state, plan, status_of, Action, AfterExit, Local};

/// The most log text one reply carries (the message limit is 1 MiB, and JSON escaping may
/// double the size of text).
pub const MAX_LOG_REPLY_BYTES: usize = 256 * 1024;

/// How long reading one instance's logs for a query may take.
const LOG_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How the worker engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// This node's id (as registration gave it).
    pub node_id: String,
    /// How often to send status (the cluster owns this value).
    pub status_interval: Duration,
    /// Grace period when terminating an instance.
    pub grace: Duration,
    /// The node's resources in all (free = total minus what its instances reserve).
    pub total: Resources,
}

/// The worker engine: one transport up, one runtime per kind.
pub struct Worker {
    config: WorkerConfig,
    transport: Arc<dyn ChildTransport>,
    runtimes: BTreeMap<RuntimeKind, Arc<dyn Runtime>>,
    local: BTreeMap<InstanceId, Local>,
    /// Followed logs being streamed, by query id.
    follows: std::collections::HashMap<String, tokio::task::AbortHandle>,
    /// Measures the host before each status (see [`Worker::with_usage`]).
    probe: Option<UsageProbe>,
    /// Restarts whose backoff is over arrive here.
    restart_tx: tokio::sync::mpsc::UnboundedSender<InstanceId>,
    restart_rx: tokio::sync::mpsc::UnboundedReceiver<InstanceId>,
    usage: Option<HostUsage>,
    /// Where the worker reads the time and draws message ids.
    cx: Context,
}

/// Measures how busy the host is; called once per status interval.
pub type UsageProbe = Box<dyn FnMut() -> Option<HostUsage> + Send + Sync>;

impl Worker {
    /// A worker over `transport` (wrap it in [`edgeio_core::reliable::ReliableChild`]) with its runtimes.
    pub fn new(
        config: WorkerConfig,
        transport: Arc<dyn ChildTransport>,
        runtimes: Vec<Arc<dyn Runtime>>,
    ) -> Worker {
        let (restart_tx, restart_rx) = tokio::sync::mpsc::unbounded_channel();
        Worker {
            config,
            transport,
            runtimes: runtimes.into_iter().map(|r| (r.kind(), r)).collect(),
            local: BTreeMap::new(),
            follows: std::collections::HashMap::new(),
            restart_tx,
            restart_rx,
            probe: None,
            usage: None,
            cx: Context::system(),
        }
    }

    /// Reads the time and draws message ids from `cx` (a manual clock and seeded ids in tests
    /// and the simulator) instead of the wall clock and random ids.
    pub fn with_context(mut self, cx: Context) -> Worker {
        self.cx = cx;
        self
    }

    /// Reports the host's CPU and memory use in every status, as `probe` measures it (the
    /// engine reads no host counters itself: it names no platform crate).
    pub fn with_usage(mut self, probe: UsageProbe) -> Worker {
        self.probe = Some(probe);
        self
    }

    /// What runs here, as the worker knows it.
    pub fn instances(&self) -> &BTreeMap<InstanceId, Local> {
        &self.local
    }

    /// Adopts what the runtimes still run from before a restart (found by their edgeio
    /// labels), so nothing is started twice; returns how many were adopted.
    pub async fn adopt(&mut self) -> usize {
        let mut adopted = 0;
        for (kind, runtime) in &self.runtimes {
            let listed = match runtime.list().await {
                Ok(listed) => listed,
                Err(e) => {
                    warn!(runtime = %kind, error = %e, "cannot list instances to adopt");
                    continue;
                }
            };
            for status in listed {
                let Some(job) = status
                    .labels
                    .get(LABEL_JOB)
                    .and_then(|j| JobId::new(j.as_str()).ok())
                else {
                    continue;
                };
                self.local.insert(
                    status.id.clone(),
                    Local {
                        job,
                        kind: kind.clone(),
                        state: instance_state(&status.state),
                        // the spec is gone with the old process; the cluster's status view
                        // of this node corrects the reservation on its next schedule
                        resources: Resources::ZERO,
                        restart: None,
                        restarts: 0,
                        clearing: false,
                    },
                );
                adopted += 1;
            }
        }
        adopted
    }

    /// The status report: free resources and every instance's state.
    pub fn status(&self) -> NodeStatus {
        status_of(self.config.total, &self.local, self.usage)
    }

    async fn send(&self, body: Message) -> Result<(), TransportError> {
        self.deliver(&Envelope::new_in(&self.cx, &self.config.node_id, body))
            .await
    }

    /// Sends to the cluster. A failure is logged, not fatal: while the link is down (the
    /// broker restarts) the worker goes on running its instances; the cluster re-sends
    /// unanswered commands, and the next status carries every instance's state.
    async fn deliver(&self, envelope: &Envelope) -> Result<(), TransportError> {
        if let Err(e) = self.transport.send(envelope).await {
            warn!(kind = envelope.kind(), error = %e, "cannot send to the cluster");
        }
        Ok(())
    }

    async fn report(
        &self,
        id: &InstanceId,
        state: InstanceState,
        exit_code: Option<i32>,
        reason: &str,
    ) -> Result<(), TransportError> {
        let Some(local) = self.local.get(id) else {
            return Ok(());
        };
        self.send(Message::InstanceEvent(InstanceEvent {
            job: local.job.clone(),
            instance: id.clone(),
            node: self.config.node_id.clone(),
            state,
            exit_code,
            reason: reason.to_string(),
            unschedulable: None,
        }))
        .await
    }

    async fn on_command(&mut self, envelope: Envelope) -> Result<(), TransportError> {
        let kinds: Vec<RuntimeKind> = self.runtimes.keys().cloned().collect();
        let policy = match &envelope.body {
            Message::Deploy(deploy) => deploy.spec.restart,
            _ => RestartPolicy::default(),
        };
        let mut refusal = None;
        for action in plan(&envelope.body, &self.local, &kinds) {
            match action {
                Action::Refuse(error) => refusal = Some(error),
                Action::Start(spec) => {
                    let Some(runtime) = self.runtimes.get(&spec.kind).cloned() else {
                        continue;
                    };
                    self.local
                        .insert(spec.id.clone(), Local::starting(&spec, policy));
                    if let Err(e) = runtime.deploy(&spec).await {
                        self.report(&spec.id, InstanceState::Failed, None, &e.to_string())
                            .await?;
                        self.local.remove(&spec.id);
                        refusal = Some(ErrorBody {
                            code: "deploy_failed".into(),
                            message: e.to_string(),
                        });
                    }
                }
                Action::Stop(id) => {
                    let Some(local) = self.local.get_mut(&id) else {
                        continue;
                    };
                    local.state = InstanceState::Terminating;
                    let runtime = self.runtimes.get(&local.kind).cloned();
                    self.report(&id, InstanceState::Terminating, None, "terminate requested")
                        .await?;
                    if let Some(runtime) = runtime {
                        if let Err(e) = runtime.terminate(&id, self.config.grace).await {
                            warn!(instance = %id, error = %e, "terminate failed");
                        }
                    }
                }
            }
        }
        let answer = match refusal {
            Some(error) => envelope.nack_in(&self.cx, &self.config.node_id, error),
            None => envelope.ack_in(&self.cx, &self.config.node_id),
        };
        self.deliver(&answer).await
    }

    /// Answers a logs query with the last lines of the job's instances here, cut to
    /// [`MAX_LOG_REPLY_BYTES`] so the reply fits in one message.
    async fn on_query(&mut self, query: Envelope) -> Result<(), TransportError> {
        let (job, tail) = match &query.body {
            Message::Query(Query::Cancel { query: id }) => {
                if let Some(task) = self.follows.remove(id) {
                    task.abort();
                }
                return Ok(());
            }
            Message::Query(Query::Logs {
                job,
                tail,
                follow: true,
            }) => return self.follow_logs(&query, job, *tail).await,
            Message::Query(Query::Logs { job, tail, .. }) => (job, tail),
            _ => {
                let error = ErrorBody {
                    code: "unsupported".into(),
                    message: format!("a worker answers only logs queries, not {:?}", query.body),
                };
                return self
                    .deliver(&query.reply_in(&self.cx, &self.config.node_id, Err(error)))
                    .await;
            }
        };
        let mut text = String::new();
        let mut found = false;
        for (id, local) in self.local.iter().filter(|(_, l)| &l.job == job) {
            found = true;
            let Some(runtime) = self.runtimes.get(&local.kind) else {
                continue;
            };
            let options = LogOptions {
                tail: *tail,
                follow: false,
            };
            let read = async {
                let mut lines = runtime.logs(id, options).await?;
                while let Some(line) = lines.next().await {
                    text.push_str(&line?.text);
                    text.push('\n');
                }
                Ok::<_, edgeio_core::runtime::RuntimeError>(())
            };
            match tokio::time::timeout(LOG_READ_TIMEOUT, read).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => text.push_str(&format!("[edgeio: cannot read logs of {id}: {e}]\n")),
                Err(_) => text.push_str(&format!("[edgeio: logs of {id} took too long to read]\n")),
            }
        }
        if text.len() > MAX_LOG_REPLY_BYTES {
            let mut cut = text.len() - MAX_LOG_REPLY_BYTES;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            text = text.split_off(cut);
        }
        let result = if found {
            Ok(serde_json::Value::String(text))
        } else {
            Err(ErrorBody {
                code: "not_found".into(),
                message: format!("job {job} has no instance on node {}", self.config.node_id),
            })
        };
        self.deliver(&query.reply_in(&self.cx, &self.config.node_id, result))
            .await
    }

    /// Streams the job's logs as `query_reply`s with `more` until the instances' logs end or
    /// the query is cancelled; the last reply has `more: false`.
    async fn follow_logs(
        &mut self,
        query: &Envelope,
        job: &JobId,
        tail: Option<usize>,
    ) -> Result<(), TransportError> {
        let mut streams = Vec::new();
        for (id, local) in self.local.iter().filter(|(_, l)| &l.job == job) {
            if let Some(runtime) = self.runtimes.get(&local.kind) {
                let options = LogOptions { tail, follow: true };
                match runtime.logs(id, options).await {
                    Ok(lines) => streams.push(lines),
                    Err(e) => warn!(instance = %id, error = %e, "cannot follow logs"),
                }
            }
        }
        if streams.is_empty() {
            let error = ErrorBody {
                code: "not_found".into(),
                message: format!("job {job} has no instance on node {}", self.config.node_id),
            };
            return self
                .deliver(&query.reply_in(&self.cx, &self.config.node_id, Err(error)))
                .await;
        }
        self.follows.retain(|_, task| !task.is_finished());
        let transport = self.transport.clone();
        let node = self.config.node_id.clone();
        let re = query.id.clone();
        let cx = self.cx.clone();
        let task = tokio::spawn(async move {
            let mut lines = futures::stream::select_all(streams).ready_chunks(256);
            let reply = |text: String, more: bool| {
                Envelope::new_in(
                    &cx,
                    &node,
                    Message::QueryReply(edgeio_core::wire::QueryReply {
                        re: re.clone(),
                        result: Some(serde_json::Value::String(text)),
                        error: None,
                        more,
                    }),
                )
            };
            while let Some(chunk) = lines.next().await {
                let mut text = String::new();
                for line in chunk.into_iter().flatten() {
                    // one line longer than a reply is cut, never the reply's neighbours
                    let mut cut = line.text.len().min(MAX_LOG_REPLY_BYTES);
                    while !line.text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    if text.len() + cut >= MAX_LOG_REPLY_BYTES {
                        let full = std::mem::take(&mut text);
                        if transport.send(&reply(full, true)).await.is_err() {
                            return;
                        }
                    }
                    text.push_str(&line.text[..cut]);
                    text.push('\n');
                }
                if !text.is_empty() && transport.send(&reply(text, true)).await.is_err() {
                    return;
                }
            }
            let _ = transport.send(&reply(String::new(), false)).await;
        });
        self.follows.insert(query.id.clone(), task.abort_handle());
        Ok(())
    }

    async fn on_runtime_event(&mut self, event: RuntimeEvent) -> Result<(), TransportError> {
        let Some(local) = self.local.get(&event.id) else {
            debug!(instance = %event.id, "event for an instance this worker does not run");
            return Ok(());
        };
        if local.clearing {
            let old_run = matches!(event.state, RunState::Exited { .. } | RunState::Removed);
            // the old run's removal, or (a runtime that reports none) the new run's start,
            // ends the clearing
            if event.state == RunState::Removed || !old_run {
                if let Some(local) = self.local.get_mut(&event.id) {
                    local.clearing = false;
                }
            }
            if old_run {
                return Ok(());
            }
        }
        let Some(local) = self.local.get(&event.id) else {
            return Ok(());
        };
        let terminating = local.state == InstanceState::Terminating;
        let state = match (&event.state, terminating, local.state) {
            // the process ending is part of the termination asked for; TERMINATED follows
            (RunState::Exited { .. }, true, _) => return Ok(()),
            // the old run being cleared away before a restart, or after giving up
            (RunState::Exited { .. } | RunState::Removed, _, InstanceState::Restarting)
            | (_, _, InstanceState::Failed) => return Ok(()),
            (s, _, _) => instance_state(s),
        };
        if state == local.state {
            return Ok(());
        }
        let exit_code = match &event.state {
            RunState::Exited { code, .. } => *code,
            _ => None,
        };
        self.report(&event.id, state, exit_code, &event.reason)
            .await?;
        if state == InstanceState::Terminated {
            self.local.remove(&event.id);
        } else if let Some(local) = self.local.get_mut(&event.id) {
            local.state = state;
        }
        if state == InstanceState::Exited {
            self.after_exit(&event.id, exit_code).await?;
        }
        Ok(())
    }

    /// Applies the restart policy to an instance whose process ended on its own: schedules
    /// a restart on this node, or gives up (FAILED, and the runtime's leftovers removed) so
    /// that the cluster relocates it.
    async fn after_exit(
        &mut self,
        id: &InstanceId,
        code: Option<i32>,
    ) -> Result<(), TransportError> {
        let Some(local) = self.local.get_mut(id) else {
            return Ok(());
        };
        let Some((_, policy)) = &local.restart else {
            return Ok(());
        };
        let node = self.config.node_id.clone();
        match after_exit(policy, code, local.restarts) {
            AfterExit::Done => Ok(()),
            AfterExit::Restart(wait) => {
                local.restarts += 1;
                local.state = InstanceState::Restarting;
                let reason = format!(
                    "restart {} of {} on {node} in {wait:?}",
                    local.restarts, policy.limit
                );
                let (tx, id2) = (self.restart_tx.clone(), id.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tx.send(id2);
                });
                self.report(id, InstanceState::Restarting, None, &reason)
                    .await
            }
            AfterExit::GiveUp(why) => {
                local.state = InstanceState::Failed;
                let kind = local.kind.clone();
                let reason = format!("{why} ({node})");
                self.report(id, InstanceState::Failed, code, &reason)
                    .await?;
                if let Some(runtime) = self.runtimes.get(&kind) {
                    // what the runtime keeps of it (an exited container) goes
                    if let Err(e) = runtime.terminate(id, Duration::ZERO).await {
                        debug!(instance = %id, error = %e, "nothing left to remove");
                    }
                }
                self.local.remove(id);
                Ok(())
            }
        }
    }

    /// Starts an instance again after its backoff, unless it was stopped meanwhile.
    async fn restart(&mut self, id: InstanceId) -> Result<(), TransportError> {
        let Some(local) = self.local.get(&id) else {
            return Ok(());
        };
        let (Some((spec, _)), InstanceState::Restarting) = (&local.restart, local.state) else {
            return Ok(());
        };
        let Some(runtime) = self.runtimes.get(&local.kind).cloned() else {
            return Ok(());
        };
        let spec = spec.clone();
        // the old run is cleared first: the runtime keeps one instance per id
        if let Some(local) = self.local.get_mut(&id) {
            local.clearing = true;
        }
        if let Err(e) = runtime.terminate(&id, Duration::ZERO).await {
            debug!(instance = %id, error = %e, "nothing to clear before the restart");
            if let Some(local) = self.local.get_mut(&id) {
                local.clearing = false;
            }
        }
        if let Some(local) = self.local.get_mut(&id) {
            local.state = InstanceState::Starting;
        }
        self.report(&id, InstanceState::Starting, None, "restarting")
            .await?;
        if let Err(e) = runtime.deploy(&spec).await {
            if let Some(local) = self.local.get_mut(&id) {
                local.state = InstanceState::Failed;
            }
            let reason = format!("restart failed: {e}");
            self.report(&id, InstanceState::Failed, None, &reason)
                .await?;
            self.local.remove(&id);
        }
        Ok(())
    }

    /// Runs until `shutdown` completes or the link is gone for good.
    ///
    /// Sends a status at once and then every `status_interval`; answers every command with an
    /// ack (applied) or a nack (refused, with the reason); reports runtime events as
    /// `instance_event`s as they happen.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), TransportError> {
        let mut events = futures::stream::select_all(self.runtimes.values().map(|r| r.events()));
        let mut tick = tokio::time::interval(self.config.status_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tick.tick() => {
                    if let Some(probe) = self.probe.as_mut() {
                        self.usage = probe();
                    }
                    self.send(Message::NodeStatus(self.status())).await?
                }
                Some(event) = events.next() => self.on_runtime_event(event).await?,
                Some(id) = self.restart_rx.recv() => self.restart(id).await?,
                received = self.transport.recv() => match received {
                    Ok(envelope) if envelope.body.is_command() => self.on_command(envelope).await?,
                    Ok(envelope) if matches!(envelope.body, Message::Query(_)) => self.on_query(envelope).await?,
                    Ok(other) => debug!(kind = other.kind(), "ignored message"),
                    // one bad message; the link is fine
                    Err(TransportError::Invalid { reason, .. }) => warn!(%reason, "bad message from the cluster"),
                    Err(e) => return Err(e),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests;
