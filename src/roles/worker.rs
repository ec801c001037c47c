//! A worker (Node Engine): registers with its cluster over WebSocket, then talks MQTT; runs
//! native programs the operator allowed, and Docker containers where an engine answers.
//! It opens no port.

use super::common::{
    data_dir, parse_labels, parse_location, read_id, write_id, RoleError, Running,
};
use edgeio_core::model::{Arch, Capabilities, Labels, Location, Resources, RuntimeInfo};
use edgeio_core::reliable::{ReliableChild, ReliableConfig};
use edgeio_core::runtime::Runtime;
use edgeio_core::wire::{
    ChannelKind, Envelope, HostUsage, Message, NodeStatus, PeerRole, RegisterRequest,
};
use edgeio_engine::worker::{Worker, WorkerConfig};
use edgeio_runtime_process::{ProcessConfig, ProcessRuntime};
use edgeio_transport_mqtt::{ChildConfig, MqttChild};
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
        match DockerRuntime::connect(config).await {
            Ok(docker) if docker.probe().await.is_ok_and(|p| p.available) => {
                return Some(Arc::new(docker))
            }
            Ok(_) | Err(_) => {
                tracing::info!("docker is not available; this worker offers native only")
            }
        }
    }
    None
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
    // Docker is probed for the capabilities here, and built again with the node id below
    let probed: Vec<Arc<dyn Runtime>> = std::iter::once(process.clone())
        .chain(docker_runtime(&options, None).await)
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

    let id_file = data.join("node-id");
    let request = RegisterRequest {
        role: PeerRole::Node,
        name: name.clone(),
        previous_id: read_id(&id_file),
        capabilities: Some(capabilities),
        location: None,
        labels: Labels::new(),
    };
    let registration = register(
        &options.cluster,
        PeerRole::Node,
        request,
        WsClientConfig::default(),
    )
    .await
    .map_err(|e| {
        RoleError::new(format!(
            "cannot register with the cluster at {}: {e}",
            options.cluster
        ))
    })?;
    let reply = registration.reply;
    write_id(&id_file, &reply.id)?;
    let mut runtimes = vec![process];
    if probed.len() > 1 {
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
    let link = MqttChild::connect(ChildConfig::new(reply.id.clone(), broker.clone()), announce)
        .await
        .map_err(|e| RoleError::new(format!("cannot reach the MQTT broker {broker}: {e}")))?;
    let link: Arc<dyn edgeio_core::transport::ChildTransport> = Arc::new(ReliableChild::new(
        Arc::new(link),
        ReliableConfig::default(),
    ));
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
    tracing::info!(node = %reply.id, broker = %broker, "worker up");
    Ok(running)
}
