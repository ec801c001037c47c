//! A fake `Runtime` for engine tests: instances are entries in a map that a test can make
//! exit, fail or vanish on command.
//!
//! Images select behaviour: `fake:run` runs until stopped, `fake:exit:<code>` exits with that
//! code right after starting, `fake:fail` cannot start. Each argument is printed as a log line
//! at start.

use crate::job::InstanceSpec;
use crate::model::{Arch, InstanceId, RuntimeKind};
use crate::runtime::{
    instance_labels, EventStream, InstanceStatus, LogLine, LogOptions, LogSource, LogStream,
    RunState, Runtime, RuntimeError, RuntimeEvent, RuntimeProbe,
};
use async_trait::async_trait;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

struct Instance {
    status: InstanceStatus,
    log: Vec<LogLine>,
    // `None` marks the end of the log (the instance ended)
    log_tx: broadcast::Sender<Option<LogLine>>,
}

struct State {
    available: bool,
    instances: BTreeMap<InstanceId, Instance>,
    deploys: u64,
}

/// An in-memory runtime whose instances exit, fail or disappear when a test says so.
#[derive(Clone)]
pub struct FakeRuntime {
    kind: RuntimeKind,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<RuntimeEvent>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRuntime {
    /// A fake runtime of kind `native`.
    pub fn new() -> Self {
        Self::with_kind(RuntimeKind::NATIVE)
    }

    /// A fake runtime of any kind.
    pub fn with_kind(kind: &str) -> Self {
        FakeRuntime {
            kind: RuntimeKind::new(kind),
            state: Arc::new(Mutex::new(State {
                available: true,
                instances: BTreeMap::new(),
                deploys: 0,
            })),
            events: broadcast::channel(1024).0,
        }
    }

    /// A spec for this runtime with the given instance id and image (`fake:run` …).
    pub fn spec(&self, id: &str, image: &str) -> InstanceSpec {
        InstanceSpec {
            id: InstanceId::new(id).unwrap_or_else(|_| InstanceId::random()),
            job: crate::model::JobId::new("fake-job")
                .unwrap_or_else(|_| crate::model::JobId::random()),
            image: image.to_string(),
            kind: self.kind.clone(),
            args: Vec::new(),
            env: BTreeMap::new(),
            ports: Vec::new(),
            resources: crate::model::Resources::ZERO,
            labels: BTreeMap::new(),
        }
    }

    // A poisoned lock only means another test thread panicked; the map is still usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the runtime (un)available: probe reports it, deploy refuses with `Unavailable`.
    pub fn set_available(&self, available: bool) {
        self.lock().available = available;
    }

    /// How many deploys succeeded (to check that nothing was started twice).
    pub fn deploy_count(&self) -> u64 {
        self.lock().deploys
    }

    /// Ends a running instance with `code`, as if its process exited.
    pub fn exit(&self, id: &InstanceId, code: i32) -> Result<(), RuntimeError> {
        self.end(id, Some(code), false, format!("exited with code {code}"))
    }

    /// Ends a running instance as killed for exceeding its memory limit.
    pub fn oom_kill(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        self.end(id, Some(137), true, "killed: out of memory".to_string())
    }

    /// Removes an instance behind edgeio's back (like `docker rm -f`).
    pub fn remove_externally(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        let inst = state.instances.remove(id).ok_or_else(|| not_found(id))?;
        let _ = inst.log_tx.send(None);
        drop(state);
        self.emit(id, RunState::Removed, "removed from outside edgeio");
        Ok(())
    }

    /// Appends a line to an instance's log.
    pub fn emit_log(&self, id: &InstanceId, text: &str) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        let inst = state.instances.get_mut(id).ok_or_else(|| not_found(id))?;
        let line = LogLine {
            source: LogSource::Stdout,
            text: text.to_string(),
        };
        inst.log.push(line.clone());
        let _ = inst.log_tx.send(Some(line));
        Ok(())
    }

    fn end(
        &self,
        id: &InstanceId,
        code: Option<i32>,
        oom_killed: bool,
        reason: String,
    ) -> Result<(), RuntimeError> {
        let state_now = RunState::Exited { code, oom_killed };
        {
            let mut state = self.lock();
            let inst = state.instances.get_mut(id).ok_or_else(|| not_found(id))?;
            if !matches!(inst.status.state, RunState::Running | RunState::Starting) {
                return Err(RuntimeError::Conflict {
                    id: id.to_string(),
                    reason: "is not running".into(),
                });
            }
            inst.status.state = state_now.clone();
            let _ = inst.log_tx.send(None);
        }
        self.emit(id, state_now, &reason);
        Ok(())
    }

    fn emit(&self, id: &InstanceId, state: RunState, reason: &str) {
        // no subscriber is fine: events are for whoever listens now
        let _ = self.events.send(RuntimeEvent {
            id: id.clone(),
            state,
            reason: reason.to_string(),
        });
    }
}

fn not_found(id: &InstanceId) -> RuntimeError {
    RuntimeError::NotFound { id: id.to_string() }
}

enum Behaviour {
    Run,
    Exit(i32),
    Fail,
}

fn behaviour(image: &str) -> Result<Behaviour, RuntimeError> {
    let invalid = |rule: &str| RuntimeError::Invalid {
        field: "image".into(),
        value: image.to_string(),
        rule: rule.to_string(),
    };
    match image {
        "fake:run" => Ok(Behaviour::Run),
        "fake:fail" => Ok(Behaviour::Fail),
        _ => match image.strip_prefix("fake:exit:") {
            Some(code) => code
                .parse()
                .map(Behaviour::Exit)
                .map_err(|_| invalid("exit code must be an integer")),
            None => Err(invalid(
                "the fake runtime runs fake:run, fake:exit:<code> and fake:fail",
            )),
        },
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn kind(&self) -> RuntimeKind {
        self.kind.clone()
    }

    async fn probe(&self) -> Result<RuntimeProbe, RuntimeError> {
        let available = self.lock().available;
        Ok(RuntimeProbe {
            kind: self.kind.clone(),
            available,
            version: Some("fake-1".into()),
            architectures: vec![Arch::host()],
            detail: if available {
                String::new()
            } else {
                "made unavailable by the test".into()
            },
        })
    }

    async fn deploy(&self, spec: &InstanceSpec) -> Result<InstanceStatus, RuntimeError> {
        if spec.kind != self.kind {
            return Err(RuntimeError::Unsupported {
                runtime: self.kind.to_string(),
                what: format!("image_runtime {}", spec.kind),
                reason: String::new(),
            });
        }
        let behaviour = behaviour(&spec.image)?;
        let status = {
            let mut state = self.lock();
            if !state.available {
                return Err(RuntimeError::Unavailable {
                    runtime: self.kind.to_string(),
                    reason: "made unavailable by the test".into(),
                });
            }
            if state.instances.contains_key(&spec.id) {
                return Err(RuntimeError::AlreadyExists {
                    id: spec.id.to_string(),
                    detail: String::new(),
                });
            }
            if let Behaviour::Fail = behaviour {
                return Err(RuntimeError::Invalid {
                    field: "image".into(),
                    value: spec.image.clone(),
                    rule: "cannot start (fake:fail)".into(),
                });
            }
            let log: Vec<LogLine> = spec
                .args
                .iter()
                .map(|a| LogLine {
                    source: LogSource::Stdout,
                    text: a.clone(),
                })
                .collect();
            let status = InstanceStatus {
                id: spec.id.clone(),
                kind: self.kind.clone(),
                state: RunState::Running,
                labels: instance_labels(spec),
                detail: format!("fake instance #{}", state.deploys + 1),
            };
            state.deploys += 1;
            state.instances.insert(
                spec.id.clone(),
                Instance {
                    status: status.clone(),
                    log,
                    log_tx: broadcast::channel(256).0,
                },
            );
            status
        };
        self.emit(&spec.id, RunState::Running, "started");
        if let Behaviour::Exit(code) = behaviour {
            self.exit(&spec.id, code)?;
        }
        Ok(status)
    }

    async fn terminate(&self, id: &InstanceId, _grace: Duration) -> Result<(), RuntimeError> {
        let inst = self
            .lock()
            .instances
            .remove(id)
            .ok_or_else(|| not_found(id))?;
        let _ = inst.log_tx.send(None);
        if matches!(inst.status.state, RunState::Running | RunState::Starting) {
            self.emit(
                id,
                RunState::Exited {
                    code: None,
                    oom_killed: false,
                },
                "terminated",
            );
        }
        self.emit(id, RunState::Removed, "removed after terminate");
        Ok(())
    }

    async fn status(&self, id: &InstanceId) -> Result<InstanceStatus, RuntimeError> {
        self.lock()
            .instances
            .get(id)
            .map(|i| i.status.clone())
            .ok_or_else(|| not_found(id))
    }

    async fn list(&self) -> Result<Vec<InstanceStatus>, RuntimeError> {
        Ok(self
            .lock()
            .instances
            .values()
            .map(|i| i.status.clone())
            .collect())
    }

    async fn logs(&self, id: &InstanceId, options: LogOptions) -> Result<LogStream, RuntimeError> {
        let state = self.lock();
        let inst = state.instances.get(id).ok_or_else(|| not_found(id))?;
        let skip = options
            .tail
            .map(|n| inst.log.len().saturating_sub(n))
            .unwrap_or(0);
        let past: Vec<Result<LogLine, RuntimeError>> =
            inst.log[skip..].iter().cloned().map(Ok).collect();
        let running = matches!(inst.status.state, RunState::Running | RunState::Starting);
        if !options.follow || !running {
            return Ok(futures::stream::iter(past).boxed());
        }
        // subscribed under the lock, so no line falls between the copy and the subscription
        let live = BroadcastStream::new(inst.log_tx.subscribe())
            .take_while(|item| futures::future::ready(matches!(item, Ok(Some(_)))))
            .filter_map(|item| futures::future::ready(item.ok().flatten().map(Ok)));
        Ok(futures::stream::iter(past).chain(live).boxed())
    }

    fn events(&self) -> EventStream {
        BroadcastStream::new(self.events.subscribe())
            .filter_map(|e| futures::future::ready(e.ok()))
            .boxed()
    }
}
