//! A worker (Node Engine): registers with its cluster over WebSocket, then talks MQTT; runs
//! native programs and unikernels the operator allowed, and Docker containers. Each runtime
//! built in (features `runtime-process`, `runtime-docker`, `runtime-mirage`; all in `roles`)
//! is offered when its engine answers at start ([`runtimes_help`]). It opens no port.

use super::common::{
    data_dir, parse_labels, parse_location, read_id, write_id, RoleError, Running, INSECURE_WARNING,
};
use super::joiner::{
    dial_parent, join_token, keep_credentials, require_https, CREDENTIAL_FILE, PARENT_CA_FILE,
};
use super::sealing::{next_epoch, worker_key};
use super::trust::read_token_file;
use edgeio_core::model::{Arch, Capabilities, Labels, Location, Resources, RuntimeInfo};
use edgeio_core::reliable::{ReliableChild, ReliableConfig};
use edgeio_core::runtime::Runtime;
use edgeio_core::seal::SealedChild;
use edgeio_core::wire::{
    ChannelKind, Envelope, HostUsage, Message, NodeStatus, PeerRole, RegisterReply, RegisterRequest,
};
use edgeio_engine::worker::{Worker, WorkerConfig};
use edgeio_runtime_process::{ProcessConfig, ProcessRuntime};
use edgeio_transport_mqtt::{ChildConfig, MqttChild};
use edgeio_transport_mqtt::{LinkCredentials, LinkTls};
use edgeio_transport_ws::{register, WsClientConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Options of `worker`. Each flag is also an environment variable (`EDGEIO_WORKER_<FLAG>`).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerOptions {
    /// The cluster's `http://HOST:PORT` (the WebSocket path is derived).
    #[arg(
        long,
        env = "EDGEIO_WORKER_CLUSTER",
        default_value = "http://127.0.0.1:7071"
    )]
    pub cluster: String,

    /// The node's name (its id when free at the cluster); default: the host name.
    #[arg(long, env = "EDGEIO_WORKER_NAME")]
    pub name: Option<String>,

    /// The node's labels, `K=V,K=V` (matched by jobs' `node_selector`).
    #[arg(long, env = "EDGEIO_WORKER_LABELS", value_parser = parse_labels, default_value = "")]
    pub labels: Labels,

    /// Where the node is: `NAME` or `NAME@LAT,LON`.
    #[arg(long, env = "EDGEIO_WORKER_LOCATION", value_parser = parse_location)]
    pub location: Option<Location>,

    /// Programs jobs may run with `image_runtime: native`, as paths separated by commas.
    /// Nothing by default: until the API authenticates users, whoever reaches it could
    /// otherwise run any command here.
    #[arg(long, env = "EDGEIO_WORKER_ALLOW_NATIVE", value_delimiter = ',')]
    pub allow_native: Vec<PathBuf>,

    /// Folder of the node id, instance files and logs; default `edgeio-data/worker-NAME`.
    #[arg(long, env = "EDGEIO_WORKER_DATA")]
    pub data: Option<PathBuf>,

    /// Offer Docker when its engine answers (`--docker=false` to never use it).
    #[arg(long, env = "EDGEIO_WORKER_DOCKER", default_value_t = true, action = clap::ArgAction::Set)]
    pub docker: bool,

    /// Offer unikernels when qemu (or a Solo5 tender) is found (`--mirage=false` to never
    /// use them).
    #[arg(long, env = "EDGEIO_WORKER_MIRAGE", default_value_t = true, action = clap::ArgAction::Set)]
    pub mirage: bool,

    /// Kernel images jobs may boot with `image_runtime: mirage` (or `unikernel`), as paths
    /// separated by commas. Nothing by default: until the API authenticates users, whoever
    /// reaches it could otherwise have qemu read any file here.
    #[arg(long, env = "EDGEIO_WORKER_ALLOW_KERNEL", value_delimiter = ',')]
    pub allow_kernel: Vec<PathBuf>,

    /// Whether qemu uses KVM: `auto` (when /dev/kvm opens for reading and writing), `on`
    /// (refuse unikernels without it) or `off` (software emulation; KVM can be slower to
    /// start under nested virtualisation).
    #[arg(long, env = "EDGEIO_WORKER_KVM", value_enum, default_value_t = Kvm::Auto)]
    pub kvm: Kvm,

    /// The cluster's join token (its `DATA/join.token`), needed on the first start only: it
    /// pins the cluster's CA, and the cluster answers with this worker's own credential
    /// (its MQTT password, user name its node id), kept in `--data`.
    #[arg(
        long,
        env = "EDGEIO_WORKER_JOIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "join_token_file"
    )]
    pub join_token: Option<String>,

    /// A file holding the join token on its first line (instead of --join-token).
    #[arg(long, env = "EDGEIO_WORKER_JOIN_TOKEN_FILE", value_name = "FILE")]
    pub join_token_file: Option<PathBuf>,

    /// Development only: no TLS and no join token, to a cluster started --insecure. Prints a
    /// warning.
    #[arg(long, env = "EDGEIO_WORKER_INSECURE")]
    pub insecure: bool,
}

/// Whether the unikernel runtime's qemu uses KVM (`worker --kvm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Kvm {
    /// KVM when `/dev/kvm` is usable, else software emulation.
    #[default]
    Auto,
    /// Always KVM: unikernels are refused where it is not usable.
    On,
    /// Always software emulation.
    Off,
}

/// What `worker --help` says about runtimes: those this build has, when each is offered and
/// how to switch it off, and those left out of the build.
pub fn runtimes_help() -> String {
    let mut built = Vec::new();
    let mut missing = Vec::new();
    let mut note = |on: bool, name: &'static str, feature: &'static str, what: &'static str| {
        if on {
            built.push(format!("  {name:<7} {what}"));
        } else {
            missing.push(format!("{name} (feature {feature})"));
        }
    };
    note(
        cfg!(feature = "runtime-process"),
        "native",
        "runtime-process",
        "programs named by --allow-native; none runs while it names none",
    );
    note(
        cfg!(feature = "runtime-docker"),
        "docker",
        "runtime-docker",
        "containers, when the Docker engine answers at start; --docker=false switches it off",
    );
    note(
        cfg!(feature = "runtime-mirage"),
        "mirage",
        "runtime-mirage",
        "unikernels named by --allow-kernel, when qemu is found at start (KVM per --kvm); \
         --mirage=false switches it off",
    );
    let mut text = format!("Runtimes in this build:\n{}", built.join("\n"));
    if !missing.is_empty() {
        text.push_str(&format!(
            "\nNot in this build: {} (rebuild with those features)",
            missing.join(", ")
        ));
    }
    text
}

fn host_name() -> String {
    sysinfo::System::host_name()
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

/// What this machine offers, measured once at start.
fn capabilities(
    data: &Path,
    labels: Labels,
    location: Option<Location>,
    runtimes: Vec<RuntimeInfo>,
) -> Capabilities {
    // a machine sysinfo cannot read still registers, with zero where it could not measure
    let memory_bytes = sysinfo::System::new()
        .map(|mut system| {
            system.refresh_memory();
            system.total_memory()
        })
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let disks = sysinfo::Disks::new_with_refreshed_list();
    let data = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    // the disk whose mount point is the longest prefix of the data folder holds the data
    let disk_bytes = disks
        .iter()
        .flat_map(|d| d.into_iter())
        .filter(|d| data.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map_or(0, |d| d.available_space());
    Capabilities {
        arch: Arch::host(),
        cores,
        memory_bytes,
        disk_bytes,
        gpus: 0,
        runtimes,
        labels,
        location,
    }
}

/// The host's CPU use since the previous call and its memory in use, from sysinfo.
fn usage_probe() -> edgeio_engine::worker::UsageProbe {
    let mut system = sysinfo::System::new().ok();
    Box::new(move || {
        let system = system.as_mut()?;
        system.refresh_cpu_usage();
        system.refresh_memory();
        let permille = |share: f64| (share * 1000.0).round().clamp(0.0, 1000.0) as u16;
        let total = system.total_memory().max(1) as f64;
        Some(HostUsage {
            cpu_permille: permille(f64::from(system.global_cpu_usage()) / 100.0),
            memory_permille: permille(system.used_memory() as f64 / total),
        })
    })
}

/// The native runtime, confined to the programs the operator allowed.
fn process_runtime(options: &WorkerOptions, data: &Path) -> Result<Arc<dyn Runtime>, RoleError> {
    let process = ProcessRuntime::new(ProcessConfig {
        state_dir: data.join("process"),
        allow: options.allow_native.clone(),
        ..ProcessConfig::default()
    })
    .map_err(|e| RoleError::new(format!("--allow-native: {e}")))?;
    Ok(Arc::new(process))
}

/// Docker, when it is wanted and its engine answers. `node` is the worker's id once
/// registered: containers are labelled with it, and only those are listed and watched, so
/// workers sharing one engine never adopt, report or stop each other's containers.
#[allow(unused_variables)]
async fn docker_runtime(options: &WorkerOptions, node: Option<&str>) -> Option<Arc<dyn Runtime>> {
    #[cfg(feature = "runtime-docker")]
    if options.docker {
        use edgeio_runtime_docker::{DockerConfig, DockerRuntime};
        let config = DockerConfig {
            node_id: node.map(str::to_string),
            ..DockerConfig::default()
        };
        let why = match DockerRuntime::connect(config).await {
            Ok(docker) => match docker.probe().await {
                Ok(p) if p.available => return Some(Arc::new(docker)),
                Ok(p) => p.detail,
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if node.is_none() {
            tracing::info!(reason = %why, "docker is not available; this worker does not offer it");
        }
    }
    None
}

/// The unikernel runtime, when it is wanted and a tender (qemu) is found; its qemu uses KVM
/// as `--kvm` says, and boots only the kernels `--allow-kernel` names.
#[allow(unused_variables)]
async fn mirage_runtime(
    options: &WorkerOptions,
    data: &Path,
) -> Result<Option<Arc<dyn Runtime>>, RoleError> {
    #[cfg(feature = "runtime-mirage")]
    if options.mirage {
        use edgeio_runtime_mirage::{probe::HostProbe, KvmPolicy, MirageConfig, MirageRuntime};
        let mut config = MirageConfig {
            kvm: match options.kvm {
                Kvm::Auto => KvmPolicy::Auto,
                Kvm::On => KvmPolicy::On,
                Kvm::Off => KvmPolicy::Off,
            },
            allow: Some(options.allow_kernel.clone()),
            ..MirageConfig::default()
        };
        // probed before any folder is made, so a host without qemu is left untouched
        let host = HostProbe::run(&config).await.to_runtime_probe();
        if !host.available {
            tracing::info!(reason = %host.detail, "unikernels are not available; this worker does not offer them");
            return Ok(None);
        }
        config.state_dir = mirage_state_dir(data)?;
        let runtime = MirageRuntime::new(config).map_err(|e| {
            RoleError::new(format!(
                "cannot start the unikernel runtime: {e} (choose another --data, or --mirage=false)"
            ))
        })?;
        if options.allow_kernel.is_empty() {
            tracing::info!(
                "no kernel allowed: start the worker with --allow-kernel PATH to boot unikernels"
            );
        }
        tracing::info!(state = %runtime.config().state_dir.display(), detail = %host.detail, "offering unikernels");
        return Ok(Some(Arc::new(runtime)));
    }
    Ok(None)
}

/// The unikernel runtime's state folder: `DATA/mirage`, unless its absolute path is too long
/// for the QMP sockets under it (a unix socket path has at most 107 bytes, which leaves
/// `edgeio_runtime_mirage::command::max_state_dir_len()` = 83 for the folder). Then it is
/// `$XDG_RUNTIME_DIR/edgeio-mirage-HASH`, or `/tmp/edgeio-mirage-HASH` when that is unset
/// or too long too, where HASH is a stable hash (FNV-1a) of the data folder's absolute path:
/// a worker restarted on the same data folder finds its unikernels again. The short folder
/// is made private (0700) and refused unless this user owns it.
#[cfg(feature = "runtime-mirage")]
fn mirage_state_dir(data: &Path) -> Result<PathBuf, RoleError> {
    use edgeio_runtime_mirage::command::{fnv1a64, max_state_dir_len};
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let data = std::path::absolute(data).map_err(|e| {
        RoleError::new(format!(
            "cannot resolve the data folder {}: {e}",
            data.display()
        ))
    })?;
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    let dir = short_state_dir(&data, xdg.as_deref(), max_state_dir_len(), fnv1a64);
    if dir.starts_with(&data) {
        return Ok(dir);
    }
    let refuse = |why: String| {
        RoleError::new(format!(
            "the unikernel state folder {} (the data folder {} is too long for QMP socket paths): {why}; choose a shorter --data, or --mirage=false",
            dir.display(),
            data.display()
        ))
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(refuse(format!("cannot be created: {e}"))),
    }
    // the folder sits in a shared place: it must be ours, private, and not a link
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| refuse(e.to_string()))?;
    let mine = std::fs::metadata(&data)
        .map_err(|e| refuse(e.to_string()))?
        .uid();
    if !meta.is_dir() || meta.uid() != mine || meta.permissions().mode() & 0o077 != 0 {
        return Err(refuse(
            "it exists but is not a private folder of this user".into(),
        ));
    }
    tracing::info!(data = %data.display(), state = %dir.display(), "the data folder is too long for QMP socket paths; unikernels keep their state in a short folder");
    Ok(dir)
}

/// Where [`mirage_state_dir`] puts the state of a worker whose absolute data folder is
/// `data`: pure, for tests.
#[cfg(feature = "runtime-mirage")]
fn short_state_dir(
    data: &Path,
    xdg_runtime_dir: Option<&Path>,
    max_len: usize,
    hash: fn(&[u8]) -> u64,
) -> PathBuf {
    let inside = data.join("mirage");
    if inside.as_os_str().len() <= max_len {
        return inside;
    }
    let name = format!(
        "edgeio-mirage-{:016x}",
        hash(data.as_os_str().as_encoded_bytes())
    );
    xdg_runtime_dir
        .filter(|x| x.is_absolute())
        .map(|x| x.join(&name))
        .filter(|d| d.as_os_str().len() <= max_len)
        .unwrap_or_else(|| Path::new("/tmp").join(name))
}

/// Registers with the cluster — joining with the join token on the first secure start and
/// keeping the credential it issues — and answers the reply with, when secure, the TLS
/// settings and login for the cluster's broker.
async fn register_with_cluster(
    options: &WorkerOptions,
    data: &Path,
    name: String,
    capabilities: Capabilities,
) -> Result<(RegisterReply, Option<(LinkTls, LinkCredentials)>), RoleError> {
    let security = if options.insecure {
        tracing::warn!("{INSECURE_WARNING}");
        None
    } else {
        require_https(&options.cluster, "--cluster")?;
        let token = join_token(&options.join_token, &options.join_token_file)?;
        Some(dial_parent(data, token, "worker", "the cluster")?)
    };
    let id_file = data.join("node-id");
    let request = RegisterRequest {
        role: PeerRole::Node,
        name,
        previous_id: read_id(&id_file),
        capabilities: Some(capabilities),
        location: None,
        labels: Labels::new(),
        auth: security.as_ref().map(|s| s.auth.clone()),
    };
    let config = WsClientConfig {
        tls: security.as_ref().map(|s| s.tls.clone()),
        ..WsClientConfig::default()
    };
    let registration = register(&options.cluster, PeerRole::Node, request, config)
        .await
        .map_err(|e| {
            RoleError::new(format!(
                "cannot register with the cluster at {}: {e}",
                options.cluster
            ))
        })?;
    let reply = registration.reply;
    write_id(&id_file, &reply.id)?;
    let Some(security) = security else {
        return Ok((reply, None));
    };
    if security.joining {
        let Some(credentials) = &reply.credentials else {
            return Err(RoleError::new(format!(
                "the cluster at {} issued no credential (is it running --insecure? then start this worker --insecure too)",
                options.cluster
            )));
        };
        keep_credentials(data, credentials)?;
    }
    let ca_file = data.join(PARENT_CA_FILE);
    let ca = std::fs::read(&ca_file)
        .map_err(|e| RoleError::new(format!("cannot read {}: {e}", ca_file.display())))?;
    let tls = LinkTls::from_ca_pem(&ca)
        .map_err(|e| RoleError::new(format!("{}: {e}", ca_file.display())))?;
    let credential = read_token_file(&data.join(CREDENTIAL_FILE)).map_err(RoleError::new)?;
    let login = LinkCredentials::new(reply.id.clone(), credential);
    Ok((reply, Some((tls, login))))
}

/// Starts a worker: registers with its cluster, connects to the broker the cluster named,
/// adopts what its runtimes still run from before, and runs the worker engine.
pub async fn start_worker(options: WorkerOptions) -> Result<Running, RoleError> {
    let name = options.name.clone().unwrap_or_else(host_name);
    let data = options
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("edgeio-data/worker-{name}")));
    data_dir(&data)?;
    let process = process_runtime(&options, &data)?;
    let mirage = mirage_runtime(&options, &data).await?;
    // Docker is probed for the capabilities here, and built again with the node id below
    let docker = docker_runtime(&options, None).await;
    let offers_docker = docker.is_some();
    let probed: Vec<Arc<dyn Runtime>> = std::iter::once(process.clone())
        .chain(mirage.clone())
        .chain(docker)
        .collect();
    let mut infos = Vec::new();
    for runtime in &probed {
        let version = match runtime.probe().await {
            Ok(p) => p.version.unwrap_or_default(),
            Err(_) => String::new(),
        };
        infos.push(RuntimeInfo {
            kind: runtime.kind(),
            version,
        });
    }
    let capabilities = capabilities(
        &data,
        options.labels.clone(),
        options.location.clone(),
        infos,
    );
    let total = Resources {
        cpu_millis: u64::from(capabilities.cores) * 1000,
        memory_bytes: capabilities.memory_bytes,
        disk_bytes: capabilities.disk_bytes,
        gpus: capabilities.gpus,
    };

    let (reply, login) = register_with_cluster(&options, &data, name.clone(), capabilities).await?;
    let issued = reply
        .credentials
        .as_ref()
        .and_then(|c| c.signing_key.as_ref());
    let signing = if options.insecure {
        None
    } else {
        worker_key(&data, issued)?
    };
    let mut runtimes = vec![process];
    runtimes.extend(mirage);
    if offers_docker {
        runtimes.extend(docker_runtime(&options, Some(&reply.id)).await);
    }
    drop(probed);
    if reply.channel.kind != ChannelKind::Mqtt {
        return Err(RoleError::new(format!(
            "the cluster at {} offers a {:?} channel; this worker talks MQTT",
            options.cluster, reply.channel.kind
        )));
    }
    let Some(broker) = reply.channel.broker.clone() else {
        return Err(RoleError::new(format!(
            "the cluster at {} named no MQTT broker",
            options.cluster
        )));
    };
    let config = WorkerConfig {
        node_id: reply.id.clone(),
        status_interval: Duration::from_millis(reply.channel.status_interval_ms.max(1)),
        grace: Duration::from_secs(10),
        total,
    };
    let announce = Envelope::new(
        &reply.id,
        Message::NodeStatus(NodeStatus {
            free: total,
            total,
            instances: Vec::new(),
            usage: None,
        }),
    );
    let mut child = ChildConfig::new(reply.id.clone(), broker.clone());
    match login {
        // the cluster's own broker: TLS, and this node's credential as its password
        Some((tls, credentials)) if broker.starts_with("mqtts://") => {
            child.link.tls = Some(tls);
            child.link.credentials = Some(credentials);
        }
        Some(_) => tracing::warn!(
            broker = %broker,
            "the cluster names a plain MQTT broker: this link is neither encrypted nor authenticated by edgeio"
        ),
        None => {}
    }
    let link = MqttChild::connect(child, announce)
        .await
        .map_err(|e| RoleError::new(format!("cannot reach the MQTT broker {broker}: {e}")))?;
    // a cluster on a broker it does not control issued a signing key: seal both ways
    let link: Arc<dyn edgeio_core::transport::ChildTransport> = match &signing {
        Some(key) => Arc::new(SealedChild::new(link, key.clone(), next_epoch(&data)?)),
        None => Arc::new(link),
    };
    let link: Arc<dyn edgeio_core::transport::ChildTransport> =
        Arc::new(ReliableChild::new(link, ReliableConfig::default()));
    let offered: Vec<String> = runtimes.iter().map(|r| r.kind().to_string()).collect();
    let mut worker = Worker::new(config, link.clone(), runtimes).with_usage(usage_probe());
    let adopted = worker.adopt().await;
    if adopted > 0 {
        tracing::info!(adopted, "adopted instances from before a restart");
    }

    let (stop, _) = tokio::sync::watch::channel(false);
    let mut running = Running::new(options.cluster.clone(), reply.id.clone(), stop.clone());
    let stopped = Running::stopped(&stop);
    running.spawn(async move {
        let result = worker.run(stopped).await;
        let _ = link.close().await;
        result.map_err(|e| RoleError::new(format!("worker stopped: {e}")))
    });
    tracing::info!(node = %reply.id, broker = %broker, runtimes = %offered.join(","), "worker up");
    Ok(running)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_names_every_runtime_of_this_build_and_its_switch() {
        let help = runtimes_help();
        assert!(help.starts_with("Runtimes in this build:\n"), "{help}");
        for (built, line) in [
            (
                cfg!(feature = "runtime-process"),
                "native  programs named by --allow-native",
            ),
            (
                cfg!(feature = "runtime-docker"),
                "--docker=false switches it off",
            ),
            (
                cfg!(feature = "runtime-mirage"),
                "--mirage=false switches it off",
            ),
        ] {
            assert_eq!(help.contains(line), built, "{line:?} in {help}");
        }
        let all = cfg!(all(
            feature = "runtime-process",
            feature = "runtime-docker",
            feature = "runtime-mirage"
        ));
        assert_eq!(!help.contains("Not in this build"), all, "{help}");
    }

    #[cfg(feature = "runtime-mirage")]
    #[test]
    fn a_data_folder_too_long_for_socket_paths_moves_the_state_to_a_short_folder() {
        use edgeio_runtime_mirage::command::{fnv1a64, max_state_dir_len};
        let max = max_state_dir_len();
        let short = Path::new("/var/lib/edgeio/worker-a");
        assert_eq!(
            short_state_dir(short, None, max, fnv1a64),
            short.join("mirage")
        );
        let long = PathBuf::from(format!("/home/{}/edgeio-data/worker-a", "x".repeat(60)));
        let name = format!(
            "edgeio-mirage-{:016x}",
            fnv1a64(long.as_os_str().as_encoded_bytes())
        );
        let xdg = Path::new("/run/user/1000");
        assert_eq!(
            short_state_dir(&long, Some(xdg), max, fnv1a64),
            xdg.join(&name)
        );
        // no runtime folder, a relative one, or one too long itself: /tmp
        for xdg in [None, Some(Path::new("run")), Some(long.as_path())] {
            assert_eq!(
                short_state_dir(&long, xdg, max, fnv1a64),
                Path::new("/tmp").join(&name)
            );
        }
        // stable (a restarted worker finds its unikernels), and distinct per data folder
        let other = long.with_file_name("worker-b");
        assert_ne!(
            short_state_dir(&other, None, max, fnv1a64),
            short_state_dir(&long, None, max, fnv1a64)
        );
        assert!(Path::new("/tmp").join(&name).as_os_str().len() <= max);
    }

    #[cfg(feature = "runtime-mirage")]
    #[test]
    fn the_short_state_folder_is_private_and_one_of_another_user_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("d".repeat(90));
        std::fs::create_dir_all(&data).unwrap();
        let dir = mirage_state_dir(&data).unwrap();
        assert!(!dir.starts_with(&data), "{}", dir.display());
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        // found again on the next start
        assert_eq!(mirage_state_dir(&data).unwrap(), dir);
        // opened up to others: refused, naming the flags that avoid it
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = mirage_state_dir(&data).unwrap_err().to_string();
        assert!(
            err.contains("is not a private folder of this user"),
            "{err}"
        );
        assert!(
            err.contains("--data") && err.contains("--mirage=false"),
            "{err}"
        );
        std::fs::remove_dir(&dir).unwrap();
    }
}
