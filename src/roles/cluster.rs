//! A cluster orchestrator: registers with the root, runs (or uses) an MQTT broker, serves
//! `/ws/node` for its workers, and runs the cluster engine.

use super::common::{
    bind, data_dir, insecure_listen, parse_duration, parse_labels, parse_location, read_id,
    write_id, RoleError, Running, INSECURE_WARNING,
};
use super::join::{now_s, Issue, JoinGate};
use super::joiner::{dial_parent, join_token, keep_credentials, require_https};
use super::root::{build_scheduler, policy};
use super::sealing::{next_epoch, MemberKeys};
use super::trust::{serve_maybe_tls, server_names, serving_certificate};
use edgeio_core::model::{Labels, Location};
use edgeio_core::redial::Redial;
use edgeio_core::reliable::{ReliableChild, ReliableConfig};
use edgeio_core::seal::SealedParent;
use edgeio_core::transport::ChildTransport;
use edgeio_core::transport::ParentTransport;
use edgeio_core::transport::Registrar;
use edgeio_core::wire::{
    ChannelKind, ChannelSettings, PeerRole, RegisterRequest, DEFAULT_MAX_MESSAGE_BYTES,
};
use edgeio_core::wire::{Credentials, Secret};
use edgeio_engine::cluster::{ClusterConfig, ClusterEngine};
use edgeio_scheduler::PolicyKind;
use edgeio_store::StoreConfig;
use edgeio_transport_mqtt::{BrokerConfig, BrokerUrl, EmbeddedBroker, MqttParent, ParentConfig};
use edgeio_transport_mqtt::{
    BrokerCredentials, BrokerSecurity, BrokerTls, LinkCredentials, LinkTls,
};
use edgeio_transport_ws::rest::health_warning;
use edgeio_transport_ws::tls::{client_config, ServerTrust};
use edgeio_transport_ws::Registration;
use edgeio_transport_ws::{WsClientConfig, WsDial, WsParent, WsServerConfig};
use edgeio_trust::{CertificateAuthority, TrustError, TrustFolder};
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
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

    /// The root's join token (its `DATA/join.token`), needed on the first start only: it
    /// pins the root's CA, and the root answers with this cluster's own credential and CA,
    /// kept in `--data`.
    #[arg(
        long,
        env = "EDGEIO_CLUSTER_JOIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "join_token_file"
    )]
    pub join_token: Option<String>,

    /// A file holding the join token on its first line (instead of --join-token).
    #[arg(long, env = "EDGEIO_CLUSTER_JOIN_TOKEN_FILE", value_name = "FILE")]
    pub join_token_file: Option<PathBuf>,

    /// Where workers reach this cluster, `https://HOST:PORT`; its certificate covers HOST.
    /// Default: the --listen address.
    #[arg(long, env = "EDGEIO_CLUSTER_ADVERTISE")]
    pub advertise: Option<String>,

    /// Where workers reach the embedded broker, `HOST:PORT` (a cluster listening on 0.0.0.0
    /// must say which address its workers dial). Default: the --mqtt-listen address, or
    /// 127.0.0.1 when that is unspecified.
    #[arg(long, env = "EDGEIO_CLUSTER_MQTT_ADVERTISE", value_name = "HOST:PORT")]
    pub mqtt_advertise: Option<String>,

    /// A further name (DNS name or IP address) the cluster's certificates cover. Repeat it
    /// for several.
    #[arg(
        long = "tls-san",
        env = "EDGEIO_CLUSTER_TLS_SAN",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub tls_san: Vec<String>,

    /// Development only: no TLS and no join tokens, to a root started --insecure. Prints a
    /// warning, says so in /healthz, and refuses non-loopback listen addresses.
    #[arg(long, env = "EDGEIO_CLUSTER_INSECURE")]
    pub insecure: bool,
}

/// Starts a cluster: its registration with the root (joining with a token on its first
/// secure start), its broker (unless `--broker`), its `/ws/node` server, its MQTT link, and
/// its engine.
pub async fn start_cluster(options: ClusterOptions) -> Result<Running, RoleError> {
    let data = options
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("edgeio-data/cluster-{}", options.name)));
    if options.insecure {
        insecure_listen(options.listen, "--listen")?;
        if options.broker.is_none() {
            insecure_listen(options.mqtt_listen, "--mqtt-listen")?;
        }
        tracing::warn!("{INSECURE_WARNING}");
    } else {
        require_https(&options.root, "--root")?;
    }
    data_dir(&data)?;
    if let Some(url) = &options.broker {
        BrokerUrl::parse(url).map_err(|e| RoleError::new(format!("--broker: {e}")))?;
    }
    // the node listener first: a port in use is found before anything registers
    let listener = bind(options.listen, "workers' registration").await?;
    let (mut dial, registration, trust) = register_with_root(&options, &data).await?;
    let id = registration.reply.id.clone();
    let Some(up) = registration.channel else {
        return Err(RoleError::new(format!(
            "the root at {} answered with a {:?} channel; a cluster talks to the root over its WebSocket",
            options.root, registration.reply.channel.kind
        )));
    };
    let broker = start_broker(&options, &id, &trust)?;

    let path = data.join("cluster.redb");
    let store = StoreConfig::embedded(&path)
        .open()
        .await
        .map_err(|e| RoleError::new(format!("cannot open the store {}: {e}", path.display())))?;
    let config = ClusterConfig {
        id: id.clone(),
        channel: ChannelSettings {
            kind: ChannelKind::Mqtt,
            broker: Some(broker.advertised.clone()),
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
    // a broker the cluster does not control: every message is signed end to end
    let member_keys = match (&trust, &options.broker) {
        (Some(_), Some(_)) => Some(Arc::new(MemberKeys::open(&data)?)),
        _ => None,
    };
    let registrar: Arc<dyn Registrar> = match &trust {
        Some(trust) => Arc::new(JoinGate::new(
            Arc::new(engine.registrar()),
            trust.folder.clone(),
            "worker",
            "--join-token",
            issue_worker_credentials(member_keys.clone()),
        )),
        None => Arc::new(engine.registrar()),
    };
    let ws = WsParent::new(id.clone(), registrar, WsServerConfig::default());
    let mut app = ws
        .router()
        .merge(edgeio_transport_ws::rest::health_router());
    if trust.is_none() {
        app = health_warning(app, INSECURE_WARNING);
    }
    let cert = match &trust {
        Some(trust) => {
            let advertised: Vec<&str> = options.advertise.iter().map(String::as_str).collect();
            let names = server_names(options.listen, &advertised, &options.tls_san);
            let now = now_s();
            let issued = trust
                .folder
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .ca
                .issue_server(&names, now)
                .map_err(|e| {
                    RoleError::new(format!("cannot issue the cluster's certificate: {e}"))
                })?;
            Some(serving_certificate(trust.folder.clone(), &issued, names)?)
        }
        None => None,
    };
    let server = serve_maybe_tls(listener, app, &cert)
        .map_err(|e| RoleError::new(format!("cannot serve on {}: {e}", options.listen)))?;
    let mut parent = ParentConfig::new(id.clone(), broker.url.clone());
    parent.link.tls = broker.tls.clone();
    parent.link.credentials = broker.login.clone();
    let down = MqttParent::connect(parent)
        .await
        .map_err(|e| RoleError::new(format!("cannot reach the MQTT broker {}: {e}", broker.url)))?;
    let down: Arc<dyn ParentTransport> = match &member_keys {
        Some(keys) => Arc::new(SealedParent::new(down, next_epoch(&data)?, keys.keys())),
        None => Arc::new(down),
    };

    let (stop, _) = tokio::sync::watch::channel(false);
    let mut running = Running::new(server.url(), id.clone(), stop.clone());
    if broker.embedded {
        running.broker = Some(broker.url.clone());
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
        let result = engine.run(down, up, stopped).await;
        let _ = closing.close().await;
        let _ = server.shutdown().await;
        result.map_err(|e| RoleError::new(format!("cluster engine stopped: {e}")))
    });
    tracing::info!(cluster = %id, url = %running.url, broker = %broker.url, "cluster up");
    Ok(running)
}

/// A secure cluster's trust: its CA (an intermediate under the root's) with its workers'
/// join token and members, in its data folder.
struct ClusterTrust {
    folder: Arc<Mutex<TrustFolder>>,
}

/// Registers with the root, joining with the join token on the first secure start and
/// keeping the credential and CA the root issues; answers the dial (set up for redials with
/// the credential), the registration, and the cluster's trust (none when insecure).
async fn register_with_root(
    options: &ClusterOptions,
    data: &Path,
) -> Result<(WsDial, Registration, Option<ClusterTrust>), RoleError> {
    let id_file = data.join("cluster-id");
    let security = if options.insecure {
        None
    } else {
        let token = join_token(&options.join_token, &options.join_token_file)?;
        Some(dial_parent(data, token, "cluster", "the root")?)
    };
    let request = RegisterRequest {
        role: PeerRole::Cluster,
        name: options.name.clone(),
        previous_id: read_id(&id_file),
        capabilities: None,
        location: options.location.clone(),
        labels: options.labels.clone(),
        auth: security.as_ref().map(|s| s.auth.clone()),
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
        request,
        config: WsClientConfig {
            tls: security.as_ref().map(|s| s.tls.clone()),
            ..WsClientConfig::default()
        },
    };
    let registration = dial.register().await.map_err(|e| {
        RoleError::new(format!(
            "cannot register with the root at {}: {e}",
            options.root
        ))
    })?;
    write_id(&id_file, &registration.reply.id)?;
    let Some(security) = security else {
        return Ok((dial, registration, None));
    };
    let folder = if security.joining {
        let Some(credentials) = registration.reply.credentials.clone() else {
            return Err(RoleError::new(format!(
                "the root at {} issued no credential (is it running --insecure? then start this cluster --insecure too)",
                options.root
            )));
        };
        keep_credentials(data, &credentials)?;
        // from now on (redials, restarts) the cluster proves itself with its credential and
        // trusts the root by the CA it was given
        dial = redial_with(dial, &credentials)?;
        TrustFolder::open_or_create(data, || cluster_ca(&options.name, &credentials), "workers", now_s())
    } else {
        TrustFolder::open(data)
    }
    .map_err(|e| RoleError::new(format!("cannot open the cluster's CA in {}: {e}", data.display())))?;
    tracing::info!(
        ca = %folder.path("ca.crt").display(),
        join_token = %folder.path("join.token").display(),
        "secure: workers join with the join token"
    );
    let trust = ClusterTrust {
        folder: Arc::new(Mutex::new(folder)),
    };
    Ok((dial, registration, Some(trust)))
}

/// The dial after joining: the credential instead of the token, the CA instead of the pin.
fn redial_with(mut dial: WsDial, credentials: &Credentials) -> Result<WsDial, RoleError> {
    dial.request.auth = Some(credentials.credential.clone());
    let tls = client_config(&ServerTrust::CaPem(credentials.ca_pem.clone().into_bytes()))
        .map_err(|e| RoleError::new(format!("the root's CA: {e}")))?;
    dial.config.tls = Some(tls);
    Ok(dial)
}

/// The cluster's intermediate CA from what the root issued.
fn cluster_ca(name: &str, credentials: &Credentials) -> Result<CertificateAuthority, TrustError> {
    let missing = |what: &str| TrustError::Certificate(format!("the root's reply has no {what}"));
    let cert = credentials
        .ca_cert_pem
        .as_deref()
        .ok_or_else(|| missing("CA certificate"))?;
    let key = credentials
        .ca_key_pem
        .as_ref()
        .ok_or_else(|| missing("CA key"))?;
    let not_after = credentials
        .ca_not_after
        .ok_or_else(|| missing("CA expiry"))?;
    CertificateAuthority::from_parts(
        &format!("edgeio cluster {name}"),
        false,
        key.expose(),
        cert,
        "",
        &credentials.ca_pem,
        not_after,
    )
}

/// The broker the cluster and its workers use.
struct Broker {
    /// What the cluster's own client dials.
    url: String,
    /// What workers are told to dial.
    advertised: String,
    /// TLS for the cluster's own client (secure embedded broker).
    tls: Option<LinkTls>,
    /// The cluster's own login (secure embedded broker).
    login: Option<LinkCredentials>,
    embedded: bool,
}

/// Starts the embedded broker (with TLS, the members' credentials and topic rights when
/// secure), or checks the external one.
fn start_broker(
    options: &ClusterOptions,
    id: &str,
    trust: &Option<ClusterTrust>,
) -> Result<Broker, RoleError> {
    if let Some(url) = &options.broker {
        if trust.is_some() {
            tracing::warn!(broker = %url, "an external broker: the cluster does not control its logins or rights, so every message to and from the workers is signed end to end; give the broker TLS and logins too");
        }
        return Ok(Broker {
            url: url.clone(),
            advertised: url.clone(),
            tls: None,
            login: None,
            embedded: false,
        });
    }
    let config = BrokerConfig {
        listen: options.mqtt_listen,
        ..BrokerConfig::default()
    };
    let failed = |e: edgeio_core::transport::TransportError| {
        RoleError::new(format!(
            "cannot start the MQTT broker on {}: {e}",
            options.mqtt_listen
        ))
    };
    let Some(trust) = trust else {
        let handle = EmbeddedBroker::start(config).map_err(failed)?;
        let url = handle.url();
        let advertised = match &options.mqtt_advertise {
            Some(hostport) => format!("mqtt://{hostport}"),
            None => url.clone(),
        };
        return Ok(Broker {
            url,
            advertised,
            tls: None,
            login: None,
            embedded: true,
        });
    };
    // workers dial the advertised address, else the one listened on (127.0.0.1 for an
    // unspecified one) with the port the broker got
    let advertised = |port: u16| {
        options.mqtt_advertise.clone().unwrap_or_else(|| {
            let ip = options.mqtt_listen.ip();
            let host = if ip.is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                ip.to_string()
            };
            format!("{host}:{port}")
        })
    };
    let names = server_names(
        options.mqtt_listen,
        &[advertised(1).as_str()],
        &options.tls_san,
    );
    let folder = trust.folder.lock().unwrap_or_else(|p| p.into_inner());
    let issued = folder
        .ca
        .issue_server(&names, now_s())
        .map_err(|e| RoleError::new(format!("cannot issue the broker's certificate: {e}")))?;
    let chain = format!("{}{}", issued.chain_pem, folder.ca.root_pem());
    let bundle = folder.ca.bundle_pem();
    drop(folder);
    let tls = BrokerTls::from_pem(chain.as_bytes(), issued.key_pem.as_bytes()).map_err(failed)?;
    let username = format!("edgeio-cluster-{id}");
    let secret = random_secret()?;
    let members = Arc::new(MemberLogins(trust.folder.clone()));
    let security =
        BrokerSecurity::new(tls, username.clone(), secret.clone(), members).map_err(failed)?;
    let handle = EmbeddedBroker::start_secure(config, security).map_err(failed)?;
    let link_tls = LinkTls::from_ca_pem(bundle.as_bytes()).map_err(failed)?;
    Ok(Broker {
        url: handle.url(),
        advertised: format!("mqtts://{}", advertised(handle.addr().port())),
        tls: Some(link_tls),
        login: Some(LinkCredentials::new(username, secret)),
        embedded: true,
    })
}

/// A random secret for the cluster's own broker login (new at every start: only this
/// process uses it).
fn random_secret() -> Result<String, RoleError> {
    edgeio_trust::random_secret(32).map_err(|e| RoleError::new(e.to_string()))
}

/// The broker's logins of nodes: each member's credential, as its cluster admitted it; a
/// removed member cannot log in again.
struct MemberLogins(Arc<Mutex<TrustFolder>>);

impl BrokerCredentials for MemberLogins {
    fn verify(&self, node: &str, secret: &str) -> bool {
        let folder = self.0.lock().unwrap_or_else(|p| p.into_inner());
        folder.recognise(node, secret).is_ok()
    }

    fn is_current(&self, node: &str) -> bool {
        let folder = self.0.lock().unwrap_or_else(|p| p.into_inner());
        folder.members.iter().any(|m| m.id == node)
    }
}

/// What a cluster issues a worker: the CA chain it trusts the cluster by, and, over a broker
/// the cluster does not control, a signing key (`keys`); its credential (filled in by the
/// gate) is also its MQTT password, with its node id as user name.
fn issue_worker_credentials(keys: Option<Arc<MemberKeys>>) -> Issue {
    Box::new(move |folder: &TrustFolder, id: &str, _now: i64| {
        let signing_key = match &keys {
            Some(keys) => Some(keys.issue(id).map_err(TrustError::Certificate)?),
            None => None,
        };
        Ok(Credentials {
            ca_pem: folder.ca.bundle_pem(),
            credential: Secret::new(String::new()),
            ca_cert_pem: None,
            ca_key_pem: None,
            ca_not_after: None,
            mqtt_password: None,
            signing_key,
        })
    })
}
