//! The runtime's moving parts: the table of instances, spawning a program and waiting for
//! it, adopting what an earlier runtime left running, and stopping process groups.
//!
//! Each instance the runtime started has a task awaiting its process; each adopted one (not
//! our child, so not awaitable) has a task polling `/proc` for it. Both record the end in
//! the instance's `exit.json` *before* changing its state, so whoever waits for the state
//! (a terminate) may remove the folder right after.

use crate::adopt::{
    group_members, instances_dir, is_alive, proc_stat, read_json, write_json, ExitRecord, Meta,
    Paths,
};
use crate::allow::AllowList;
use crate::limits::{self, Limits};
use crate::logs::{self, CappedFile};
use crate::ProcessConfig;
use edgeio_core::job::InstanceSpec;
use edgeio_core::model::{InstanceId, RuntimeKind};
use edgeio_core::runtime::{
    instance_labels, EventStream, InstanceStatus, LogOptions, LogStream, RunState, RuntimeError,
    RuntimeEvent,
};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_stream::wrappers::BroadcastStream;

const RUNTIME: &str = RuntimeKind::NATIVE;
/// How often an adopted instance's process is looked for.
const ADOPTED_POLL: Duration = Duration::from_millis(100);
/// How long SIGKILL may take to be seen.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long an exit waits for the last output to reach the log files. A descendant that
/// still holds the pipes keeps them open, so this is bounded and short.
const DRAIN: Duration = Duration::from_millis(200);

struct Record {
    meta: Meta,
    paths: Paths,
    state: RunState,
    reason: String,
    /// Events go out only once the program was spawned: a spec that fails before is a
    /// deploy error, not an instance that existed.
    announced: bool,
    /// How a terminate is stopping it, to say so in the exit reason.
    stopping: Option<&'static str>,
    terminating: bool,
    state_tx: watch::Sender<RunState>,
    pumps: Vec<AbortHandle>,
}

impl Record {
    fn new(meta: Meta, paths: Paths, state: RunState, reason: String, announced: bool) -> Self {
        Record {
            meta,
            paths,
            state_tx: watch::Sender::new(state.clone()),
            state,
            reason,
            announced,
            stopping: None,
            terminating: false,
            pumps: Vec::new(),
        }
    }

    fn status(&self, limits: &Limits) -> InstanceStatus {
        let m = &self.meta;
        let mut detail = m.program.display().to_string();
        for arg in &m.spec.args {
            detail.push(' ');
            detail.push_str(arg);
        }
        if let Some(pid) = m.pid {
            detail.push_str(&format!(", pid {pid}"));
        }
        if !self.reason.is_empty() {
            detail.push_str(&format!("; {}", self.reason));
        }
        match &m.cgroup {
            Some(cgroup) => detail.push_str(&format!("; limits enforced in {}", cgroup.display())),
            None => detail.push_str(&format!("; {}", limits.detail())),
        }
        InstanceStatus {
            id: m.spec.id.clone(),
            kind: RuntimeKind::new(RUNTIME),
            state: self.state.clone(),
            labels: m.labels.clone(),
            detail,
        }
    }
}

/// State shared with the per-instance tasks.
struct Shared {
    instances: Mutex<BTreeMap<InstanceId, Record>>,
    events: broadcast::Sender<RuntimeEvent>,
}

impl Shared {
    // A poisoned lock only means a task panicked; the table itself stays consistent because
    // every change is made of plain assignments.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<InstanceId, Record>> {
        self.instances.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, id: &InstanceId, state: RunState, reason: &str) {
        tracing::debug!(instance = %id, ?state, reason, "instance event");
        // no subscriber is fine: events are for whoever listens now
        let _ = self.events.send(RuntimeEvent {
            id: id.clone(),
            state,
            reason: reason.to_string(),
        });
    }

    /// Records an end: `exit.json` first, then the state (see the module docs).
    fn finish(&self, id: &InstanceId, code: Option<i32>, reason: String) {
        let (exit_path, stopping) = {
            let map = self.lock();
            let Some(record) = map.get(id) else { return };
            (record.paths.exit.clone(), record.stopping)
        };
        let reason = match stopping {
            Some(how) => format!("terminated ({how}); {reason}"),
            None => reason,
        };
        let exit = ExitRecord {
            code,
            reason: reason.clone(),
        };
        if let Err(e) = write_json(&exit_path, &exit) {
            tracing::debug!(instance = %id, error = %e, "exit record not written");
        }
        let state = RunState::Exited {
            code,
            oom_killed: false,
        };
        let mut map = self.lock();
        let Some(record) = map.get_mut(id) else {
            return;
        };
        record.state = state.clone();
        record.reason = reason.clone();
        record.state_tx.send_replace(state.clone());
        tracing::info!(instance = %id, ?code, %reason, "program ended");
        // sent under the lock, so that no other change of this instance overtakes it
        if record.announced {
            self.emit(id, state, &reason);
        }
    }
}

/// The exit code and reason of a process's end; death by signal `n` reads as `128 + n`,
/// as shells report it.
pub(crate) fn decode_exit(status: std::process::ExitStatus) -> (Option<i32>, String) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (Some(code), format!("exited with code {code}")),
        (None, Some(signal)) => (
            Some(128 + signal),
            format!(
                "killed by signal {signal} ({}), reported as code {}",
                signal_name(signal),
                128 + signal
            ),
        ),
        (None, None) => (None, "ended with an unreadable status".into()),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "another signal",
    }
}

/// The runtime behind [`crate::ProcessRuntime`].
pub(crate) struct Inner {
    pub config: ProcessConfig,
    pub allow: AllowList,
    pub limits: Limits,
    shared: Arc<Shared>,
    // dropping the runtime drops the set, which aborts the tasks: supervision stops, the
    // programs keep running for the next runtime to adopt
    tasks: Mutex<JoinSet<()>>,
}

fn invalid(field: &str, value: impl Into<String>, rule: impl Into<String>) -> RuntimeError {
    RuntimeError::Invalid {
        field: field.to_string(),
        value: value.into(),
        rule: rule.into(),
    }
}

fn unsupported(what: impl Into<String>, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Unsupported {
        runtime: RUNTIME.to_string(),
        what: what.into(),
        reason: reason.into(),
    }
}

fn other(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> RuntimeError {
    RuntimeError::Other { source: e.into() }
}

fn not_found(id: &InstanceId) -> RuntimeError {
    RuntimeError::NotFound { id: id.to_string() }
}

fn already_exists(id: &InstanceId, paths: &Paths) -> RuntimeError {
    RuntimeError::AlreadyExists {
        id: id.to_string(),
        detail: format!("its state folder {} exists", paths.dir.display()),
    }
}

fn is_running(state: &RunState) -> bool {
    matches!(state, RunState::Running | RunState::Starting)
}

/// Waits until the state leaves running/starting or `until` passes; true when it ended.
async fn wait_ended(mut rx: watch::Receiver<RunState>, until: Instant) -> bool {
    let ended = tokio::time::timeout_at(until, rx.wait_for(|s| !is_running(s))).await;
    // a closed channel means the record is gone, which only follows an end
    ended.is_ok()
}

/// Sends `signal` to the process group `pgid` (the instance's pid), if its leader is still
/// that process or members it left behind still live.
fn signal_group(
    pgid: u32,
    start_ticks: Option<u64>,
    signal: rustix::process::Signal,
) -> io::Result<()> {
    if !is_alive(pgid, start_ticks) && group_members(pgid, start_ticks).is_empty() {
        return Ok(());
    }
    let Some(pid) = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return Ok(());
    };
    match rustix::process::kill_process_group(pid, signal) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::SRCH => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates the two FIFOs of an instance and opens the program's ends, read-write (see
/// [`crate::logs`] for why).
fn make_pipes(paths: &Paths) -> io::Result<(std::fs::File, std::fs::File)> {
    let mode = rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR;
    let mut ends = Vec::with_capacity(2);
    for pipe in [&paths.stdout_pipe, &paths.stderr_pipe] {
        rustix::fs::mkfifoat(rustix::fs::CWD, pipe, mode).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot create the pipe {}: {e}", pipe.display()),
            )
        })?;
        // opening a FIFO read-write never blocks on Linux, and keeps it from ever having
        // no reader
        ends.push(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(pipe)?,
        );
    }
    let stderr = ends.pop().expect("two ends");
    let stdout = ends.pop().expect("two ends");
    Ok((stdout, stderr))
}

impl Inner {
    pub fn new(mut config: ProcessConfig) -> Result<Inner, RuntimeError> {
        if config.log_cap_bytes == 0 {
            return Err(invalid(
                "log_cap_bytes",
                "0",
                "must be at least 1 byte (8 MiB by default)",
            ));
        }
        let shown = config.state_dir.display().to_string();
        let create = |p: &Path| {
            std::fs::create_dir_all(p)
                .map_err(|e| invalid("state_dir", &shown, format!("cannot be created: {e}")))
        };
        let absolute = std::path::absolute(&config.state_dir)
            .map_err(|e| invalid("state_dir", &shown, format!("cannot be resolved: {e}")))?;
        create(&absolute)?;
        config.state_dir = std::fs::canonicalize(&absolute)
            .map_err(|e| invalid("state_dir", &shown, format!("cannot be resolved: {e}")))?;
        create(&instances_dir(&config.state_dir))?;
        let allow = AllowList::new(&config.allow);
        let limits = Limits::detect(&config.cgroup_root);
        tracing::info!(
            state_dir = %config.state_dir.display(),
            allowed = allow.len(),
            limits = %limits.detail(),
            "native process runtime ready"
        );
        Ok(Inner {
            config,
            allow,
            limits,
            shared: Arc::new(Shared {
                instances: Mutex::new(BTreeMap::new()),
                events: broadcast::channel(1024).0,
            }),
            tasks: Mutex::new(JoinSet::new()),
        })
    }

    fn spawn_task(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> AbortHandle {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task)
    }

    pub fn events(&self) -> EventStream {
        BroadcastStream::new(self.shared.events.subscribe())
            .filter_map(|e| futures::future::ready(e.ok()))
            .boxed()
    }

    /// Starts the pumps of an instance's pipes; the receivers tell when each has stopped.
    fn start_pumps(
        &self,
        paths: &Paths,
        pipes: [tokio::net::unix::pipe::Receiver; 2],
    ) -> io::Result<(Vec<AbortHandle>, [oneshot::Receiver<()>; 2])> {
        let cap = self.config.log_cap_bytes;
        let [out_pipe, err_pipe] = pipes;
        let out_log = CappedFile::open(paths.stdout_log.clone(), cap)?;
        let err_log = CappedFile::open(paths.stderr_log.clone(), cap)?;
        let (out_tx, out_rx) = oneshot::channel();
        let (err_tx, err_rx) = oneshot::channel();
        let handles = vec![
            self.spawn_task(logs::pump(out_pipe, out_log, out_tx)),
            self.spawn_task(logs::pump(err_pipe, err_log, err_tx)),
        ];
        Ok((handles, [out_rx, err_rx]))
    }

    /// Removes an instance from the table, its cgroup and its files from the disk.
    fn forget(&self, id: &InstanceId) {
        let record = self.shared.lock().remove(id);
        let (paths, cgroup) = match record {
            Some(record) => {
                for pump in &record.pumps {
                    pump.abort();
                }
                (record.paths, record.meta.cgroup)
            }
            None => (Paths::new(&self.config.state_dir, id), None),
        };
        if let Some(cgroup) = cgroup {
            limits::remove(&cgroup);
        }
        if let Err(e) = std::fs::remove_dir_all(&paths.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(instance = %id, error = %e, dir = %paths.dir.display(), "instance folder not removed");
            }
        }
    }

    pub async fn deploy(&self, spec: &InstanceSpec) -> Result<InstanceStatus, RuntimeError> {
        let id = spec.id.clone();
        let paths = Paths::new(&self.config.state_dir, &id);
        if spec.kind.as_str() != RUNTIME {
            return Err(unsupported(
                format!("image_runtime {}", spec.kind),
                "this runtime runs native programs only",
            ));
        }
        // a taken id is the answer whatever else is wrong with the spec; checked again below
        // under the lock, where it counts
        if self.shared.lock().contains_key(&id) || paths.dir.exists() {
            return Err(already_exists(&id, &paths));
        }
        let program = self.allow.check(&spec.image, &self.config.path)?;
        if let Some(port) = spec
            .ports
            .iter()
            .find(|p| p.host.is_some_and(|h| h != p.container))
        {
            return Err(unsupported(
                format!("port mapping {:?} -> {}", port.host, port.container),
                "a native program binds host ports itself: declare the port it listens on, unmapped",
            ));
        }
        if spec.resources.gpus > 0 {
            return Err(unsupported(
                format!("{} gpus", spec.resources.gpus),
                "gpu assignment for native programs is not built yet",
            ));
        }

        // reserve the id: in the table, and on disk against an instance of an earlier runtime
        let meta = Meta {
            spec: spec.clone(),
            labels: instance_labels(spec),
            program,
            pid: None,
            start_ticks: None,
            cgroup: None,
        };
        {
            let mut map = self.shared.lock();
            if map.contains_key(&id) {
                return Err(already_exists(&id, &paths));
            }
            match std::fs::create_dir(&paths.dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(already_exists(&id, &paths))
                }
                Err(e) => return Err(other(e)),
            }
            map.insert(
                id.clone(),
                Record::new(
                    meta.clone(),
                    paths.clone(),
                    RunState::Starting,
                    String::new(),
                    false,
                ),
            );
        }
        match self.start(meta, &paths).await {
            Ok(status) => Ok(status),
            Err(e) => {
                self.forget(&id);
                Err(e)
            }
        }
    }

    async fn start(&self, mut meta: Meta, paths: &Paths) -> Result<InstanceStatus, RuntimeError> {
        let spec = meta.spec.clone();
        let id = spec.id.clone();
        meta.cgroup = self
            .limits
            .create(&id, &spec.resources)
            .map_err(|e| other(io::Error::new(e.kind(), format!("instance {id}: {e}"))))?;
        // the cgroup is recorded before anything else can fail, so forget removes it
        if let Some(record) = self.shared.lock().get_mut(&id) {
            record.meta.cgroup = meta.cgroup.clone();
        }
        write_json(&paths.meta, &meta).map_err(other)?;
        let (stdout, stderr) = make_pipes(paths).map_err(other)?;
        let pipes = [
            logs::open_pipe(&paths.stdout_pipe).map_err(other)?,
            logs::open_pipe(&paths.stderr_pipe).map_err(other)?,
        ];
        let mut child = tokio::process::Command::new(&meta.program)
            .args(&spec.args)
            // a minimal environment, so the worker's own variables (and secrets) stay its own
            .env_clear()
            .env("PATH", &self.config.path)
            .envs(&spec.env)
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // its own process group: terminate signals the whole group, and a Ctrl-C meant
            // for the worker does not reach the program, which outlives a worker restart
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| invalid("image", &spec.image, format!("cannot be started: {e}")))?;
        let Some(pid) = child.id() else {
            return Err(other(io::Error::other(format!(
                "instance {id}: the program ended before its pid was read"
            ))));
        };
        meta.pid = Some(pid);
        meta.start_ticks = proc_stat(pid).map(|s| s.start_ticks);
        if let Err(e) = write_json(&paths.meta, &meta) {
            tracing::warn!(instance = %id, error = %e, "meta.json not updated with the pid; a restarted worker will not find the process");
        }
        if let Some(cgroup) = &meta.cgroup {
            if let Err(e) = limits::add(cgroup, pid) {
                // a program asked to be limited does not run unlimited
                let _ = signal_group(pid, meta.start_ticks, rustix::process::Signal::KILL);
                let _ = tokio::time::timeout(KILL_WAIT, child.wait()).await;
                return Err(other(io::Error::new(
                    e.kind(),
                    format!("instance {id}: cannot apply its limits: {e}"),
                )));
            }
        }
        tracing::info!(instance = %id, pid, program = %meta.program.display(), "program started");

        let (handles, [out_done, err_done]) = match self.start_pumps(paths, pipes) {
            Ok(p) => p,
            Err(e) => {
                let _ = signal_group(pid, meta.start_ticks, rustix::process::Signal::KILL);
                let _ = tokio::time::timeout(KILL_WAIT, child.wait()).await;
                return Err(other(e));
            }
        };
        let status = {
            let mut map = self.shared.lock();
            let record = map.get_mut(&id).ok_or_else(|| not_found(&id))?;
            record.meta = meta;
            record.pumps = handles;
            record.announced = true;
            record.state = RunState::Running;
            record.reason = "running".into();
            record.state_tx.send_replace(RunState::Running);
            self.shared.emit(&id, RunState::Running, "started");
            record.status(&self.limits)
        };
        let shared = self.shared.clone();
        self.spawn_task(async move {
            let (code, reason) = match child.wait().await {
                Ok(status) => decode_exit(status),
                Err(e) => (None, format!("its exit status could not be read: {e}")),
            };
            let _ = tokio::time::timeout(DRAIN, async {
                let _ = out_done.await;
                let _ = err_done.await;
            })
            .await;
            shared.finish(&id, code, reason);
        });
        Ok(status)
    }

    /// Adopts the instance `id` from the state folder if an earlier runtime left it there.
    /// True when the instance is (now) in the table.
    fn adopt(&self, id: &InstanceId) -> bool {
        if self.shared.lock().contains_key(id) {
            return true;
        }
        let paths = Paths::new(&self.config.state_dir, id);
        let meta: Meta = match read_json(&paths.meta) {
            Ok(Some(meta)) => meta,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(instance = %id, error = %e, "unreadable meta.json; not adopted");
                return false;
            }
        };
        if meta.spec.id != *id {
            tracing::warn!(instance = %id, recorded = %meta.spec.id, "meta.json names another instance; not adopted");
            return false;
        }
        let alive = meta.pid.filter(|&pid| is_alive(pid, meta.start_ticks));
        let record = match alive {
            Some(_) => Record::new(
                meta.clone(),
                paths.clone(),
                RunState::Running,
                "adopted: running".into(),
                true,
            ),
            None => {
                let exit = match read_json::<ExitRecord>(&paths.exit) {
                    Ok(Some(exit)) => exit,
                    _ => {
                        let exit = ExitRecord {
                            code: None,
                            reason:
                                "ended while no runtime supervised it; its exit code is unknown"
                                    .into(),
                        };
                        let _ = write_json(&paths.exit, &exit);
                        exit
                    }
                };
                Record::new(
                    meta.clone(),
                    paths.clone(),
                    RunState::Exited {
                        code: exit.code,
                        oom_killed: false,
                    },
                    exit.reason,
                    true,
                )
            }
        };
        {
            let mut map = self.shared.lock();
            if map.contains_key(id) {
                return true;
            }
            map.insert(id.clone(), record);
        }
        tracing::info!(instance = %id, alive = alive.is_some(), "adopted an instance of an earlier runtime");
        let Some(pid) = alive else { return true };
        let pipes = logs::open_pipe(&paths.stdout_pipe)
            .and_then(|out| Ok([out, logs::open_pipe(&paths.stderr_pipe)?]));
        let done = match pipes.and_then(|pipes| self.start_pumps(&paths, pipes)) {
            Ok((handles, done)) => {
                if let Some(record) = self.shared.lock().get_mut(id) {
                    record.pumps = handles;
                }
                Some(done)
            }
            Err(e) => {
                tracing::warn!(instance = %id, error = %e, "output of an adopted instance not captured");
                None
            }
        };
        let shared = self.shared.clone();
        let (task_id, exit_path, start) = (id.clone(), paths.exit.clone(), meta.start_ticks);
        self.spawn_task(async move {
            while is_alive(pid, start) {
                tokio::time::sleep(ADOPTED_POLL).await;
            }
            if let Some([out_done, err_done]) = done {
                let _ = tokio::time::timeout(DRAIN, async {
                    let _ = out_done.await;
                    let _ = err_done.await;
                })
                .await;
            }
            let (code, reason) = match read_json::<ExitRecord>(&exit_path) {
                Ok(Some(exit)) => (exit.code, exit.reason),
                _ => (
                    None,
                    format!("pid {pid} ended while adopted; only the runtime that started it sees its exit code"),
                ),
            };
            shared.finish(&task_id, code, reason);
        });
        true
    }

    pub fn status(&self, id: &InstanceId) -> Result<InstanceStatus, RuntimeError> {
        if !self.adopt(id) {
            return Err(not_found(id));
        }
        self.shared
            .lock()
            .get(id)
            .map(|r| r.status(&self.limits))
            .ok_or_else(|| not_found(id))
    }

    pub fn list(&self) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let dir = instances_dir(&self.config.state_dir);
        let entries = std::fs::read_dir(&dir).map_err(other)?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| InstanceId::new(n).ok()) else {
                continue;
            };
            self.adopt(&id);
        }
        Ok(self
            .shared
            .lock()
            .values()
            // an instance still being deployed is not there yet for anyone else
            .filter(|r| r.announced)
            .map(|r| r.status(&self.limits))
            .collect())
    }

    pub fn logs(&self, id: &InstanceId, options: LogOptions) -> Result<LogStream, RuntimeError> {
        if !self.adopt(id) {
            return Err(not_found(id));
        }
        let (paths, rx) = {
            let map = self.shared.lock();
            let record = map.get(id).ok_or_else(|| not_found(id))?;
            (record.paths.clone(), record.state_tx.subscribe())
        };
        logs::stream(paths.stdout_log, paths.stderr_log, options, rx).map_err(other)
    }

    pub async fn terminate(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        if !self.adopt(id) {
            return Err(not_found(id));
        }
        let (pid, start, rx, running) = {
            let mut map = self.shared.lock();
            let record = map.get_mut(id).ok_or_else(|| not_found(id))?;
            if record.terminating {
                return Err(RuntimeError::Conflict {
                    id: id.to_string(),
                    reason: "is already being terminated".into(),
                });
            }
            // its deploy has not spawned it yet: removing the record now would leave the
            // deploy to start a process nobody tracks
            if !record.announced {
                return Err(RuntimeError::Conflict {
                    id: id.to_string(),
                    reason: "is still being deployed; terminate it once the deploy returned".into(),
                });
            }
            record.terminating = true;
            (
                record.meta.pid,
                record.meta.start_ticks,
                record.state_tx.subscribe(),
                is_running(&record.state),
            )
        };
        if let Some(pid) = pid {
            if let Err(e) = self.stop(id, pid, start, rx, running, grace).await {
                if let Some(record) = self.shared.lock().get_mut(id) {
                    record.terminating = false;
                }
                return Err(e);
            }
        }
        self.forget(id);
        self.shared
            .emit(id, RunState::Removed, "removed after terminate");
        tracing::info!(instance = %id, "program terminated and removed");
        Ok(())
    }

    fn stopping(&self, id: &InstanceId, how: &'static str) {
        if let Some(record) = self.shared.lock().get_mut(id) {
            record.stopping = Some(how);
        }
    }

    /// SIGTERM to the group, SIGKILL to the group once `grace` is over, then SIGKILL to
    /// whatever the group still holds after its leader ended.
    async fn stop(
        &self,
        id: &InstanceId,
        pid: u32,
        start: Option<u64>,
        rx: watch::Receiver<RunState>,
        running: bool,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        use rustix::process::Signal;
        if running {
            let mut ended = false;
            if !grace.is_zero() {
                self.stopping(id, "SIGTERM to its process group");
                signal_group(pid, start, Signal::TERM).map_err(other)?;
                ended = wait_ended(rx.clone(), Instant::now() + grace).await;
            }
            if !ended {
                self.stopping(id, "SIGKILL to its process group after the grace period");
                signal_group(pid, start, Signal::KILL).map_err(other)?;
                if !wait_ended(rx, Instant::now() + KILL_WAIT).await {
                    return Err(other(io::Error::other(format!(
                        "pid {pid} of instance {id} is still there {KILL_WAIT:?} after SIGKILL"
                    ))));
                }
            }
        }
        // descendants that outlived the leader (or ignored SIGTERM) go too
        let deadline = Instant::now() + KILL_WAIT;
        loop {
            let left = group_members(pid, start);
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(other(io::Error::other(format!(
                    "processes {left:?} of instance {id} are still there {KILL_WAIT:?} after SIGKILL"
                ))));
            }
            signal_group(pid, start, Signal::KILL).map_err(other)?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
