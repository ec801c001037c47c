//! A cluster orchestrator: registers with the root, runs (or uses) an MQTT broker, serves
//! `/ws/node` for its workers, and runs the cluster engine.

use super::common::{
    bind, data_dir, parse_duration, parse_labels, parse_location, read_id, write_id, RoleError,
    Running,
};
use super::root::{build_scheduler, policy};
use edgeio_core::model::{Labels, Location};
use edgeio_core::redial::Redial;
use edgeio_core::reliable::{ReliableChild, ReliableConfig};
use edgeio_core::transport::ChildTransport;
use edgeio_core::wire::{
    ChannelKind, ChannelSettings, PeerRole, RegisterRequest, DEFAULT_MAX_MESSAGE_BYTES,
};
use edgeio_engine::cluster::{ClusterConfig, ClusterEngine};
use edgeio_scheduler::PolicyKind;
use edgeio_store::StoreConfig;
use edgeio_transport_mqtt::{BrokerConfig, BrokerUrl, EmbeddedBroker, MqttParent, ParentConfig};
use edgeio_transport_ws::{serve, WsClientConfig, WsDial, WsParent, WsServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// First wait before dialing the root again after the link dropped; doubles up to
/// [`REDIAL_MAX`], with jitter.
const REDIAL_INITIAL: Duration = Duration::from_millis(100);
/// Longest wait between two dials of the root.
const REDIAL_MAX: Duration = Duration::from_secs(5);

/// Options of `cluster`. Each flag is also an environment variable (`EDGEIO_CLUSTER_<FLAG>`).
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterOptions {
    /// The root's `http://HOST:PORT` (the WebSocket path is derived); several, comma-separated,
    /// for root replicas: the first that answers is used, and the others on reconnection.
    #[arg(
        long,
        env = "EDGEIO_CLUSTER_ROOT",
        default_value = "http://127.0.0.1:7070"
    )]
    pub root: String,

    /// Address of the workers' registration WebSocket (`/ws/node`) and `/healthz`.
    #[arg(long, env = "EDGEIO_CLUSTER_LISTEN", default_value = "127.0.0.1:7071")]
    pub listen: SocketAddr,

    /// Address of the embedded MQTT broker (the default: the cluster runs its own broker).
    #[arg(
        long,
        env = "EDGEIO_CLUSTER_MQTT_LISTEN",
        default_value = "127.0.0.1:1883",
        conflicts_with = "broker"
    )]
    pub mqtt_listen: SocketAddr,

    /// Use this external MQTT broker (`mqtt://HOST:PORT`, e.g. Mosquitto) instead of the
    /// embedded one.
    #[arg(long, env = "EDGEIO_CLUSTER_BROKER")]
    pub broker: Option<String>,

    /// The cluster's name, which is also its id at the root.
    #[arg(long, env = "EDGEIO_CLUSTER_NAME", default_value = "cluster-1")]
    pub name: String,

    /// Where the cluster is: `NAME` or `NAME@LAT,LON` (used by location-aware scheduling).
    #[arg(long, env = "EDGEIO_CLUSTER_LOCATION", value_parser = parse_location)]
    pub location: Option<Location>,

    /// The cluster's labels, `K=V,K=V`.
    #[arg(long, env = "EDGEIO_CLUSTER_LABELS", value_parser = parse_labels, default_value = "")]
    pub labels: Labels,

    /// Folder of the cluster's store and id; default `edgeio-data/cluster-NAME`.
    #[arg(long, env = "EDGEIO_CLUSTER_DATA")]
    pub data: Option<PathBuf>,

    /// Policy placing jobs on nodes: first-fit, best-fit, least-loaded, location-aware,
    /// spread, weighted.
    #[arg(long, env = "EDGEIO_CLUSTER_SCHEDULER", default_value = "first-fit", value_parser = policy)]
    pub scheduler: PolicyKind,

    /// How often workers report their status (the cluster tells them at registration).
    #[arg(long, env = "EDGEIO_CLUSTER_STATUS_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub status_interval: Duration,

    /// A worker silent for this many status intervals is LOST.
    #[arg(long, env = "EDGEIO_CLUSTER_MISSED_HEARTBEATS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub missed_heartbeats: u32,
}

/// Starts a cluster: its broker (unless `--broker`), its registration with the root, its
/// `/ws/node` server, its MQTT link, and its engine.
pub async fn start_cluster(options: ClusterOptions) -> Result<Running, RoleError> {
    let data = options
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("edgeio-data/cluster-{}", options.name)));
    data_dir(&data)?;

    let (broker_url, embedded) = match &options.broker {
        Some(url) => {
            BrokerUrl::parse(url).map_err(|e| RoleError::new(format!("--broker: {e}")))?;
            (url.clone(), false)
        }
        None => {
            let handle = EmbeddedBroker::start(BrokerConfig {
                listen: options.mqtt_listen,
                ..BrokerConfig::default()
            })
            .map_err(|e| {
                RoleError::new(format!(
                    "cannot start the MQTT broker on {}: {e}",
                    options.mqtt_listen
                ))
            })?;
            (handle.url(), true)
        }
    };

    // the node listener first: a port in use is found before anything registers
    let listener = bind(options.listen, "workers' registration").await?;

    let id_file = data.join("cluster-id");
    let request = RegisterRequest {
        role: PeerRole::Cluster,
        name: options.name.clone(),
        previous_id: read_id(&id_file),
        capabilities: None,
        location: options.location.clone(),
        labels: options.labels.clone(),
        auth: None,
    };
    // several roots (replicas on etcd): the first that answers; the others on each redial
    let urls: Vec<String> = options
        .root
        .split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    let mut dial = WsDial {
        urls,
        request: request.clone(),
        config: WsClientConfig::default(),
    };
    let registration = dial.register().await.map_err(|e| {
        RoleError::new(format!(
            "cannot register with the root at {}: {e}",
            options.root
        ))
    })?;
    let id = registration.reply.id.clone();
    write_id(&id_file, &id)?;
    let Some(up) = registration.channel else {
        return Err(RoleError::new(format!(
            "the root at {} answered with a {:?} channel; a cluster talks to the root over its WebSocket",
            options.root, registration.reply.channel.kind
        )));
    };

    let path = data.join("cluster.redb");
    let store = StoreConfig::embedded(&path)
        .open()
        .await
        .map_err(|e| RoleError::new(format!("cannot open the store {}: {e}", path.display())))?;
    let config = ClusterConfig {
        id: id.clone(),
        channel: ChannelSettings {
            kind: ChannelKind::Mqtt,
            broker: Some(broker_url.clone()),
            topics: None,
            status_interval_ms: options.status_interval.as_millis().max(1) as u64,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        },
        missed_heartbeats: options.missed_heartbeats,
        aggregate_interval: Duration::from_millis(
            registration.reply.channel.status_interval_ms.max(1),
        ),
        location: options.location.clone(),
        labels: options.labels.clone(),
        grace: Duration::from_secs(10),
        reliable: ReliableConfig::default(),
    };
    let engine = ClusterEngine::new(config, store, build_scheduler(options.scheduler)?)
        .await
        .map_err(|e| RoleError::new(format!("cannot read the store {}: {e}", path.display())))?;
    let ws = WsParent::new(
        id.clone(),
        Arc::new(engine.registrar()),
        WsServerConfig::default(),
    );
    let app = ws
        .router()
        .merge(edgeio_transport_ws::rest::health_router());
    let server = serve(listener, app)
        .map_err(|e| RoleError::new(format!("cannot serve on {}: {e}", options.listen)))?;
    let down = MqttParent::connect(ParentConfig::new(id.clone(), broker_url.clone()))
        .await
        .map_err(|e| RoleError::new(format!("cannot reach the MQTT broker {broker_url}: {e}")))?;

    let (stop, _) = tokio::sync::watch::channel(false);
    let mut running = Running::new(server.url(), id.clone(), stop.clone());
    if embedded {
        running.broker = Some(broker_url.clone());
    }
    let stopped = Running::stopped(&stop);
    // the root may restart or the network blink: the link is dialed again (same id) with
    // backoff and jitter, and the root re-syncs this cluster's jobs when it is back
    dial.request.previous_id = Some(id.clone());
    let up = Redial::new(Arc::new(dial), Arc::new(up), REDIAL_INITIAL, REDIAL_MAX);
    let up: Arc<dyn ChildTransport> =
        Arc::new(ReliableChild::new(Arc::new(up), ReliableConfig::default()));
    let closing = up.clone();
    running.spawn(async move {
        let result = engine.run(Arc::new(down), up, stopped).await;
        let _ = closing.close().await;
        let _ = server.shutdown().await;
        result.map_err(|e| RoleError::new(format!("cluster engine stopped: {e}")))
    });
    tracing::info!(cluster = %id, url = %running.url, broker = %broker_url, "cluster up");
    Ok(running)
}
