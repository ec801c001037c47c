//! The runtime's moving parts: the table of instances, spawning a tender and waiting for it,
//! adopting what an earlier runtime left running, and stopping instances.
//!
//! Each instance the runtime started has a task awaiting its process; each adopted one (not
//! our child, so not awaitable) has a task polling `/proc` for it. Both record the end in the
//! instance's `exit.json` *before* changing its state, so whoever waits for the state (a
//! terminate) may remove the folder right after.

use crate::command::{self, Accel, Launch, Tender};
use crate::image::{self, ImageKind, LABEL_TARGET};
use crate::instance::{
    self, decode_exit, is_alive, read_json, write_json, ExitRecord, ExitReport, Meta, Paths,
    ProcessEnd,
};
use crate::probe::{self, HostProbe};
use crate::qmp::Qmp;
use crate::{logs, MirageConfig};
use edgeio_core::job::InstanceSpec;
use edgeio_core::model::{human_bytes, InstanceId, RuntimeKind};
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
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::BroadcastStream;

const RUNTIME: &str = RuntimeKind::MIRAGE;
/// How often an adopted instance's process is looked for.
const ADOPTED_POLL: Duration = Duration::from_millis(100);
/// How long SIGKILL may take to be seen.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long a Solo5 tender must stay up to count as started (it has no QMP to ask).
const SOLO5_SETTLE: Duration = Duration::from_millis(200);

struct Record {
    meta: Meta,
    paths: Paths,
    state: RunState,
    reason: String,
    /// Events go out only once the instance was announced: a tender that fails before it
    /// runs is a deploy error, not an instance that existed.
    announced: bool,
    tender_failed: bool,
    /// How a terminate is stopping it, to say so in the exit reason.
    stopping: Option<&'static str>,
    terminating: bool,
    state_tx: watch::Sender<RunState>,
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
            tender_failed: false,
            stopping: None,
            terminating: false,
        }
    }

    fn status(&self) -> InstanceStatus {
        let m = &self.meta;
        let mut detail = format!("{} image {} under {}", m.image_kind, m.image, m.tender);
        if let Some(accel) = m.accel {
            detail.push_str(&format!(" ({accel})"));
        }
        if let Some(pid) = m.pid {
            detail.push_str(&format!(", pid {pid}"));
        }
        detail.push_str(&format!(
            ", {} MiB, {} vCPU{}, console {}",
            m.memory_mib,
            m.vcpus,
            if m.vcpus == 1 { "" } else { "s" },
            self.paths.console.display()
        ));
        if !self.reason.is_empty() {
            detail.push_str(&format!("; {}", self.reason));
        }
        InstanceStatus {
            id: m.id.clone(),
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
    // every change is a single assignment.
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
    fn finish(&self, id: &InstanceId, report: ExitReport) {
        let (exit_path, stopping) = {
            let map = self.lock();
            let Some(record) = map.get(id) else { return };
            (record.paths.exit.clone(), record.stopping)
        };
        let reason = match stopping {
            Some(how) => format!("terminated ({how}); {}", report.reason),
            None => report.reason.clone(),
        };
        let record_file = ExitRecord {
            code: report.code,
            reason: reason.clone(),
        };
        if let Err(e) = write_json(&exit_path, &record_file) {
            tracing::debug!(instance = %id, error = %e, "exit record not written");
        }
        let state = RunState::Exited {
            code: report.code,
            oom_killed: false,
        };
        let announce = {
            let mut map = self.lock();
            let Some(record) = map.get_mut(id) else {
                return;
            };
            record.state = state.clone();
            record.reason = reason.clone();
            record.tender_failed = report.tender_failed;
            record.state_tx.send_replace(state.clone());
            record.announced
        };
        tracing::info!(instance = %id, code = ?report.code, %reason, "unikernel ended");
        if announce {
            self.emit(id, state, &reason);
        }
    }
}

/// The runtime behind [`crate::MirageRuntime`].
pub(crate) struct Inner {
    pub config: MirageConfig,
    shared: Arc<Shared>,
    // dropping the runtime drops the set, which aborts the tasks: supervision stops, the
    // unikernels keep running for the next runtime to adopt
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

/// Sends `signal` to the instance's process if it is still that process.
fn signal(pid: u32, start_ticks: Option<u64>, signal: rustix::process::Signal) -> io::Result<()> {
    if !is_alive(pid, start_ticks) {
        return Ok(());
    }
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return Ok(());
    };
    match rustix::process::kill_process(pid, signal) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::SRCH => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What a validated spec will run.
struct Plan {
    image: String,
    image_path: std::path::PathBuf,
    kind: ImageKind,
    tender: Tender,
    program: std::path::PathBuf,
    accel: Option<Accel>,
    memory_mib: u64,
    vcpus: u32,
}

impl Inner {
    pub fn new(mut config: MirageConfig) -> Result<Inner, RuntimeError> {
        let shown = config.state_dir.display().to_string();
        let too_long = |dir: &Path| {
            command::check_socket_path(&command::qmp_socket_path(dir, "x")).map_err(|_| {
                invalid(
                    "state_dir",
                    dir.display().to_string(),
                    format!(
                        "must be at most {} bytes so that QMP socket paths fit the 108-byte unix socket limit",
                        command::max_state_dir_len()
                    ),
                )
            })
        };
        let create = |p: &Path| {
            std::fs::create_dir_all(p)
                .map_err(|e| invalid("state_dir", &shown, format!("cannot be created: {e}")))
        };
        let absolute = std::path::absolute(&config.state_dir)
            .map_err(|e| invalid("state_dir", &shown, format!("cannot be resolved: {e}")))?;
        // checked before anything is created, and again once symlinks are resolved
        too_long(&absolute)?;
        create(&absolute)?;
        config.state_dir = std::fs::canonicalize(&absolute)
            .map_err(|e| invalid("state_dir", &shown, format!("cannot be resolved: {e}")))?;
        too_long(&config.state_dir)?;
        create(&instance::instances_dir(&config.state_dir))?;
        create(&command::socket_dir(&config.state_dir))?;
        config.allow = config.allow.as_deref().map(crate::allow::canonical);
        Ok(Inner {
            config,
            shared: Arc::new(Shared {
                instances: Mutex::new(BTreeMap::new()),
                events: broadcast::channel(1024).0,
            }),
            tasks: Mutex::new(JoinSet::new()),
        })
    }

    fn spawn_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    pub fn events(&self) -> EventStream {
        BroadcastStream::new(self.shared.events.subscribe())
            .filter_map(|e| futures::future::ready(e.ok()))
            .boxed()
    }

    /// Checks a spec and decides what runs it, touching nothing.
    async fn plan(&self, spec: &InstanceSpec) -> Result<Plan, RuntimeError> {
        if spec.kind.as_str() != RUNTIME {
            return Err(unsupported(format!("image_runtime {}", spec.kind), ""));
        }
        let located = probe::locate_tenders(&self.config);
        let kvm = probe::kvm_usable(&self.config.kvm_device);
        let host = HostProbe {
            tenders: located,
            kvm,
            policy: self.config.kvm,
        };
        if let Some(why) = host.unavailable_reason() {
            return Err(RuntimeError::Unavailable {
                runtime: RUNTIME.to_string(),
                reason: why,
            });
        }
        if !spec.ports.is_empty() {
            return Err(unsupported(
                "published ports",
                "port publishing for unikernels is not built yet (it needs a tap device or qemu user networking); deploy without ports",
            ));
        }
        if !spec.env.is_empty() {
            return Err(unsupported(
                "environment variables",
                "a unikernel has no environment: pass boot parameters as args",
            ));
        }

        // an allowed image is read (and booted) at the path it resolved to when checked
        let image_path = match &self.config.allow {
            Some(allowed) => crate::allow::check(allowed, &spec.image)?,
            None => std::path::absolute(&spec.image)
                .map_err(|e| invalid("image", &spec.image, format!("not a usable path: {e}")))?,
        };
        let bytes = match tokio::fs::read(&image_path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(invalid("image", &spec.image, "no such file"))
            }
            Err(e) if image_path.is_dir() => {
                return Err(invalid(
                    "image",
                    &spec.image,
                    format!("is a directory, not an image file ({e})"),
                ))
            }
            Err(e) => {
                return Err(invalid(
                    "image",
                    &spec.image,
                    format!("cannot be read: {e}"),
                ))
            }
        };
        let kind = match spec.labels.get(LABEL_TARGET) {
            Some(given) => given
                .parse::<ImageKind>()
                .map_err(|e| invalid(&format!("labels.{LABEL_TARGET}"), given, e.to_string()))?,
            None => image::detect(&bytes).map_err(|e| {
                invalid("image", &spec.image, format!("not a kernel: {}", e.reason))
            })?,
        };
        let Some(tender) = kind.tender() else {
            return Err(unsupported(
                format!("the mirage unix-target executable {}", spec.image),
                "it is an ordinary program: deploy it with image_runtime: native",
            ));
        };
        let info = host.tender(tender);
        let Some(program) = info.and_then(|i| i.path.clone()) else {
            let problem = info
                .and_then(|i| i.problem.clone())
                .unwrap_or_else(|| format!("{tender} not found"));
            let hint = match tender {
                Tender::Qemu => "install Debian's qemu-system-x86",
                Tender::Hvt | Tender::Spt => {
                    "Solo5 is not packaged in Debian: install it from its releases or opam, or set the tender's path in the config"
                }
            };
            return Err(unsupported(
                format!("{kind} image"),
                format!("{problem}; {hint}"),
            ));
        };
        let accel = match tender {
            Tender::Qemu => Some(
                probe::choose_accel(self.config.kvm, &host.kvm)
                    .map_err(|why| unsupported(format!("{kind} image"), why))?,
            ),
            Tender::Hvt => {
                if let Err(why) = &host.kvm {
                    return Err(unsupported(
                        "hvt image",
                        format!("solo5-hvt needs kvm but {why}"),
                    ));
                }
                None
            }
            Tender::Spt => None,
        };

        let memory_mib =
            command::memory_mib(spec.resources.memory_bytes, self.config.default_memory_mib);
        if let Some(host_bytes) = probe::host_memory_bytes() {
            if memory_mib.saturating_mul(command::MIB) > host_bytes {
                return Err(invalid(
                    "resources.memory_bytes",
                    human_bytes(spec.resources.memory_bytes),
                    format!("more than the host's memory ({})", human_bytes(host_bytes)),
                ));
            }
        }
        let vcpus = command::vcpus(spec.resources.cpu_millis);
        match tender {
            Tender::Qemu if vcpus > probe::host_cpus() => {
                return Err(invalid(
                    "resources.cpu_millis",
                    spec.resources.cpu_millis.to_string(),
                    format!(
                        "needs {vcpus} vCPUs but the host has {} cores",
                        probe::host_cpus()
                    ),
                ))
            }
            Tender::Hvt | Tender::Spt if vcpus > 1 => {
                return Err(invalid(
                    "resources.cpu_millis",
                    spec.resources.cpu_millis.to_string(),
                    "solo5 tenders run one vCPU: ask for at most 1000 millicores",
                ))
            }
            _ => {}
        }
        Ok(Plan {
            image: spec.image.clone(),
            image_path,
            kind,
            tender,
            program,
            accel,
            memory_mib,
            vcpus,
        })
    }

    /// Removes an instance from the table and its files from the disk.
    fn forget(&self, id: &InstanceId) {
        let paths = self.shared.lock().remove(id).map(|r| r.paths);
        let paths = paths.unwrap_or_else(|| Paths::new(&self.config.state_dir, id));
        if let Err(e) = std::fs::remove_dir_all(&paths.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(instance = %id, error = %e, dir = %paths.dir.display(), "instance folder not removed");
            }
        }
        let _ = std::fs::remove_file(&paths.qmp_socket);
    }

    pub async fn deploy(&self, spec: &InstanceSpec) -> Result<InstanceStatus, RuntimeError> {
        let id = spec.id.clone();
        let paths = Paths::new(&self.config.state_dir, &id);
        // a taken id is the answer whatever else is wrong with the spec; checked again below
        // under the lock, where it counts
        if self.shared.lock().contains_key(&id) || paths.dir.exists() {
            return Err(already_exists(&id, &paths));
        }
        let plan = self.plan(spec).await?;
        let console = &paths.console;
        let launch = Launch {
            id: id.as_str(),
            image: &plan.image_path,
            args: &spec.args,
            memory_mib: plan.memory_mib,
            vcpus: plan.vcpus,
            accel: plan.accel.unwrap_or(Accel::Tcg),
            console,
            qmp_socket: &paths.qmp_socket,
            pid_file: &paths.pid_file,
        };
        let line = command::build(plan.tender, &plan.program, &launch);
        let mut meta = Meta {
            id: id.clone(),
            job: spec.job.clone(),
            labels: instance_labels(spec),
            image: plan.image.clone(),
            image_kind: plan.kind,
            tender: plan.tender,
            accel: plan.accel,
            memory_mib: plan.memory_mib,
            vcpus: plan.vcpus,
            command: line.to_string(),
            pid: None,
            start_ticks: None,
        };

        // reserve the id: in the table, and on disk against an instance of an earlier runtime
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
        match self.start(&id, &plan, &paths, &line, &mut meta).await {
            Ok(status) => Ok(status),
            Err(e) => {
                self.forget(&id);
                Err(e)
            }
        }
    }

    async fn start(
        &self,
        id: &InstanceId,
        plan: &Plan,
        paths: &Paths,
        line: &command::CommandLine,
        meta: &mut Meta,
    ) -> Result<InstanceStatus, RuntimeError> {
        write_json(&paths.meta, meta).map_err(other)?;
        // a socket left by an instance of the same id that ended long ago would answer no one
        let _ = std::fs::remove_file(&paths.qmp_socket);
        let console = std::fs::File::create(&paths.console).map_err(other)?;
        let stderr = std::fs::File::create(&paths.stderr).map_err(other)?;
        let stdout = match plan.tender {
            // qemu's console goes to the chardev file; anything on its stdout is its own talk
            Tender::Qemu => stderr.try_clone().map_err(other)?,
            Tender::Hvt | Tender::Spt => console,
        };
        let mut child = tokio::process::Command::new(&line.program)
            .args(&line.args)
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // its own process group: a Ctrl-C meant for the worker does not reach the guest,
            // which is meant to outlive a worker restart
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                other(io::Error::new(
                    e.kind(),
                    format!("cannot start {}: {e}", line.program.display()),
                ))
            })?;
        let pid = child.id();
        meta.pid = pid;
        meta.start_ticks = pid.and_then(instance::proc_stat).map(|s| s.start_ticks);
        if let Err(e) = write_json(&paths.meta, meta) {
            tracing::warn!(instance = %id, error = %e, "pid not recorded; adoption falls back to qemu's pid file");
        }
        let rx = {
            let mut map = self.shared.lock();
            let record = map.get_mut(id).ok_or_else(|| not_found(id))?;
            record.meta = meta.clone();
            record.state_tx.subscribe()
        };
        tracing::info!(instance = %id, pid = ?pid, command = %line, "unikernel started");
        let shared = self.shared.clone();
        let (task_id, tender, stderr_path) = (id.clone(), plan.tender, paths.stderr.clone());
        self.spawn_task(async move {
            let end = match child.wait().await {
                Ok(status) => Some(ProcessEnd::from(status)),
                Err(e) => {
                    tracing::warn!(instance = %task_id, error = %e, "waiting for the tender failed");
                    None
                }
            };
            let report = match end {
                Some(end) => {
                    let stderr = tokio::fs::read_to_string(&stderr_path)
                        .await
                        .unwrap_or_default();
                    decode_exit(tender, end, &stderr)
                }
                None => ExitReport {
                    code: None,
                    reason: "the tender's status could not be read".into(),
                    tender_failed: false,
                },
            };
            shared.finish(&task_id, report);
        });

        let deadline = Instant::now() + self.config.start_timeout();
        let ready = match plan.tender {
            Tender::Qemu => {
                let socket = paths.qmp_socket.clone();
                tokio::select! {
                    kvm = wait_running(&socket) => Ready::Running(kvm),
                    ended = wait_ended(rx, deadline) => {
                        if ended { Ready::Ended } else { Ready::TimedOut }
                    }
                }
            }
            Tender::Hvt | Tender::Spt => {
                if wait_ended(rx, Instant::now() + SOLO5_SETTLE).await {
                    Ready::Ended
                } else {
                    Ready::Running(None)
                }
            }
        };
        match ready {
            Ready::Running(kvm) => {
                let status = {
                    let mut map = self.shared.lock();
                    let record = map.get_mut(id).ok_or_else(|| not_found(id))?;
                    record.announced = true;
                    if record.state == RunState::Starting {
                        record.state = RunState::Running;
                        record.reason = match kvm {
                            Some(true) => "running (kvm)".into(),
                            Some(false) => "running (tcg)".into(),
                            None => "running".into(),
                        };
                        record.state_tx.send_replace(RunState::Running);
                    }
                    (record.status(), record.reason.clone())
                };
                let (status, reason) = status;
                self.shared.emit(id, status.state.clone(), &reason);
                Ok(status)
            }
            Ready::Ended => {
                let mut map = self.shared.lock();
                let record = map.get_mut(id).ok_or_else(|| not_found(id))?;
                if record.tender_failed {
                    let reason = record.reason.clone();
                    drop(map);
                    return Err(invalid(
                        "image",
                        &plan.image,
                        format!("{} could not start it: {reason}", plan.tender),
                    ));
                }
                // the guest ran and ended before it was seen running: still an instance
                record.announced = true;
                let (status, reason) = (record.status(), record.reason.clone());
                drop(map);
                self.shared.emit(id, status.state.clone(), &reason);
                Ok(status)
            }
            Ready::TimedOut => {
                let (pid, start, rx) = {
                    let map = self.shared.lock();
                    let record = map.get(id).ok_or_else(|| not_found(id))?;
                    (
                        record.meta.pid,
                        record.meta.start_ticks,
                        record.state_tx.subscribe(),
                    )
                };
                if let Some(pid) = pid {
                    let _ = signal(pid, start, rustix::process::Signal::KILL);
                }
                wait_ended(rx, Instant::now() + KILL_WAIT).await;
                Err(RuntimeError::Unavailable {
                    runtime: RUNTIME.to_string(),
                    reason: format!(
                        "{} did not report instance {id} running within {:?}; it was killed",
                        plan.tender,
                        self.config.start_timeout()
                    ),
                })
            }
        }
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
        if meta.id != *id {
            tracing::warn!(instance = %id, recorded = %meta.id, "meta.json names another instance; not adopted");
            return false;
        }
        let process = match (meta.pid, meta.start_ticks) {
            (Some(pid), start) => Some((pid, start)),
            // the worker died between spawning qemu and recording its pid
            (None, _) => instance::pid_from_pid_file(&paths.pid_file, &paths.dir)
                .map(|(pid, start)| (pid, Some(start))),
        };
        let alive = process.filter(|&(pid, start)| is_alive(pid, start));
        let mut meta = meta;
        if let (Some((pid, start)), None) = (alive, meta.pid) {
            meta.pid = Some(pid);
            meta.start_ticks = start;
        }
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
        if let Some((pid, start)) = alive {
            let shared = self.shared.clone();
            let (task_id, exit_path) = (id.clone(), paths.exit.clone());
            self.spawn_task(async move {
                while is_alive(pid, start) {
                    tokio::time::sleep(ADOPTED_POLL).await;
                }
                let report = match read_json::<ExitRecord>(&exit_path) {
                    Ok(Some(exit)) => ExitReport {
                        code: exit.code,
                        reason: exit.reason,
                        tender_failed: false,
                    },
                    _ => ExitReport {
                        code: None,
                        reason: format!(
                            "pid {pid} ended while adopted; only the runtime that started it sees its exit code"
                        ),
                        tender_failed: false,
                    },
                };
                shared.finish(&task_id, report);
            });
        }
        true
    }

    fn record_status(&self, id: &InstanceId) -> Result<InstanceStatus, RuntimeError> {
        self.shared
            .lock()
            .get(id)
            .map(Record::status)
            .ok_or_else(|| not_found(id))
    }

    pub fn status(&self, id: &InstanceId) -> Result<InstanceStatus, RuntimeError> {
        if !self.adopt(id) {
            return Err(not_found(id));
        }
        self.record_status(id)
    }

    pub fn list(&self) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let dir = instance::instances_dir(&self.config.state_dir);
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
            .map(Record::status)
            .collect())
    }

    pub async fn logs(
        &self,
        id: &InstanceId,
        options: LogOptions,
    ) -> Result<LogStream, RuntimeError> {
        if !self.adopt(id) {
            return Err(not_found(id));
        }
        let (path, rx) = {
            let map = self.shared.lock();
            let record = map.get(id).ok_or_else(|| not_found(id))?;
            (record.paths.console.clone(), record.state_tx.subscribe())
        };
        logs::stream(path, options, rx).await.map_err(other)
    }

    pub async fn terminate(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        if !self.adopt(id) {
            return Err(not_found(id));
        }
        let (meta, socket, rx, running) = {
            let mut map = self.shared.lock();
            let record = map.get_mut(id).ok_or_else(|| not_found(id))?;
            if record.terminating {
                return Err(RuntimeError::Conflict {
                    id: id.to_string(),
                    reason: "is already being terminated".into(),
                });
            }
            record.terminating = true;
            (
                record.meta.clone(),
                record.paths.qmp_socket.clone(),
                record.state_tx.subscribe(),
                is_running(&record.state),
            )
        };
        if running {
            if let Err(e) = self.stop(&meta, &socket, rx, grace).await {
                if let Some(record) = self.shared.lock().get_mut(id) {
                    record.terminating = false;
                }
                return Err(e);
            }
        }
        self.forget(id);
        self.shared
            .emit(id, RunState::Removed, "removed after terminate");
        tracing::info!(instance = %id, "unikernel terminated and removed");
        Ok(())
    }

    fn stopping(&self, id: &InstanceId, how: &'static str) {
        if let Some(record) = self.shared.lock().get_mut(id) {
            record.stopping = Some(how);
        }
    }

    /// QMP `quit`, then SIGTERM, then SIGKILL once `grace` is over.
    async fn stop(
        &self,
        meta: &Meta,
        socket: &Path,
        rx: watch::Receiver<RunState>,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let (id, pid, start, tender) = (&meta.id, meta.pid, meta.start_ticks, meta.tender);
        let begun = Instant::now();
        let deadline = begun + grace;
        if tender.has_qmp() && !grace.is_zero() {
            self.stopping(id, "quit over QMP");
            let half = begun + grace / 2;
            let quit = tokio::time::timeout_at(half, async {
                let mut qmp = Qmp::connect(socket).await?;
                qmp.quit().await
            })
            .await;
            match quit {
                Ok(Ok(())) => {
                    if wait_ended(rx.clone(), half).await {
                        return Ok(());
                    }
                }
                Ok(Err(e)) => {
                    tracing::info!(instance = %id, error = %e, "qmp quit failed; sending SIGTERM")
                }
                Err(_) => tracing::info!(instance = %id, "qmp quit unanswered; sending SIGTERM"),
            }
        }
        let Some(pid) = pid else {
            return Err(other(io::Error::other(format!(
                "instance {id} has no recorded pid to signal"
            ))));
        };
        if !grace.is_zero() {
            self.stopping(id, "SIGTERM");
            signal(pid, start, rustix::process::Signal::TERM).map_err(other)?;
            if wait_ended(rx.clone(), deadline).await {
                return Ok(());
            }
        }
        self.stopping(id, "SIGKILL after the grace period");
        signal(pid, start, rustix::process::Signal::KILL).map_err(other)?;
        if wait_ended(rx, Instant::now() + KILL_WAIT).await {
            return Ok(());
        }
        Err(other(io::Error::other(format!(
            "pid {pid} of instance {id} is still there {KILL_WAIT:?} after SIGKILL"
        ))))
    }
}

enum Ready {
    /// qemu says the VM runs; whether KVM is on, when it told.
    Running(Option<bool>),
    Ended,
    TimedOut,
}

/// Connects to qemu's QMP socket until it answers and reports the VM running. Returns
/// whether KVM is enabled, when qemu tells. The caller bounds the wait and races it against
/// the process ending.
async fn wait_running(socket: &Path) -> Option<bool> {
    loop {
        if let Ok(mut qmp) = Qmp::connect(socket).await {
            loop {
                match qmp.query_status().await.as_deref() {
                    Ok("running") => return qmp.kvm_enabled().await.ok(),
                    // prelaunch, paused …: qemu is still setting up
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(_) => break,
                }
            }
        }
        // the socket appears only once qemu has created it
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
