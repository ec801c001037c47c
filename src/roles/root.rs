//! The root orchestrator: REST API, the clusters' WebSocket, the root scheduler.

use super::common::{
    bind, data_dir, insecure_listen, parse_duration, RoleError, Running, INSECURE_WARNING,
};
use super::join::{issue_cluster_ca, JoinGate};
use super::trust::{
    open_root_trust, serve_maybe_tls, server_names, serving_certificate, RootTokens,
};
use edgeio_core::api::RootApi;
use edgeio_core::auth::TokenAuthority;
use edgeio_core::model::KnownRuntimes;
use edgeio_core::scheduler::Scheduler;
use edgeio_core::store::LeaseId;
use edgeio_core::transport::Registrar;
use edgeio_engine::relay::{hold_links, RelayConfig, RelayParent, RelayRegistrar};
use edgeio_engine::root::{RootConfig, RootEngine};
use edgeio_scheduler::{LocationAware, LocationFirst, PolicyKind, SchedulerConfig};
use edgeio_store::StoreConfig;
use edgeio_transport_ws::rest::{
    forwarding_router, health_warning, router, secured_router, FindLeader, RouterSwitch,
};
use edgeio_transport_ws::{WsParent, WsServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Options of `root`. Each flag is also an environment variable (`EDGEIO_ROOT_<FLAG>`).
#[derive(Debug, Clone, clap::Args)]
pub struct RootOptions {
    /// Address of the REST API and of the clusters' WebSocket (`/ws/cluster`). Loopback by
    /// default; any address when secure (the default), loopback only with `--insecure`.
    #[arg(long, env = "EDGEIO_ROOT_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,

    /// Folder of the root's store (`root.redb`); created when missing.
    #[arg(long, env = "EDGEIO_ROOT_DATA", default_value = "edgeio-data/root")]
    pub data: PathBuf,

    /// Policy placing jobs on clusters: first-fit, best-fit, least-loaded, location-aware,
    /// spread, weighted. A job naming a `cluster_location` is always placed location-aware.
    #[arg(long, env = "EDGEIO_ROOT_SCHEDULER", default_value = "first-fit", value_parser = policy)]
    pub scheduler: PolicyKind,

    /// How often clusters report their aggregate (the root tells them at registration).
    #[arg(long, env = "EDGEIO_ROOT_AGGREGATE_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub aggregate_interval: Duration,

    /// A cluster silent for this many aggregate intervals is INACTIVE and gets no new work.
    #[arg(long, env = "EDGEIO_ROOT_MISSED_AGGREGATES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub missed_aggregates: u32,

    /// A cluster INACTIVE for this long loses its jobs: the root places them on other
    /// clusters (a cluster that comes back later has its copies terminated).
    #[arg(long, env = "EDGEIO_ROOT_CLUSTER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub cluster_timeout: Duration,

    /// Where the root keeps its state: `embedded` (a file under --data) or
    /// `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`. On etcd several roots form a group: every one
    /// takes the clusters that dial it and serves the API; the one that wins etcd's election
    /// runs the engine, reaching every cluster through etcd (the replica holding a cluster's
    /// link passes messages both ways), and the others forward API requests to it. The next
    /// one takes over (with the state in etcd) within a few seconds of the leader's death.
    /// etcd needs a build with `--features etcd` (which needs protoc).
    #[arg(long, env = "EDGEIO_ROOT_STORE", default_value = "embedded", value_parser = parse_store)]
    pub store: RootStore,

    /// With `--store etcd://…`: the URL the other replicas reach this one at, to forward
    /// requests to it while it leads. Default: `http://` and the address it listens on.
    #[arg(long, env = "EDGEIO_ROOT_ADVERTISE", value_parser = parse_advertise)]
    pub advertise: Option<String>,

    /// Development only: no API tokens (anyone who reaches the API may do anything). Prints
    /// a warning, says so in `/healthz`, and refuses to listen on a non-loopback address.
    /// Without it the root creates, on first start, its CA (`ca.crt`), a cluster join token
    /// (`join.token`) and an admin API token (`admin.token`) in `--data`.
    #[arg(long, env = "EDGEIO_ROOT_INSECURE")]
    pub insecure: bool,

    /// A further name (DNS name or IP address) the root's certificate covers, besides
    /// `localhost`, `127.0.0.1`, the `--listen` address and the `--advertise` host. Repeat it
    /// for several.
    #[arg(
        long = "tls-san",
        env = "EDGEIO_ROOT_TLS_SAN",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub tls_san: Vec<String>,
}

/// Reads an `https://HOST:PORT` (or, for a root run `--insecure`, `http://HOST:PORT`) URL.
fn parse_advertise(text: &str) -> Result<String, String> {
    let rest = text.trim().trim_end_matches('/');
    let hostport = rest
        .strip_prefix("https://")
        .or_else(|| rest.strip_prefix("http://"))
        .ok_or_else(|| {
            format!("{text:?} must be https://HOST:PORT (http://HOST:PORT with --insecure)")
        })?;
    if is_host_port(hostport) {
        Ok(rest.to_string())
    } else {
        Err(format!(
            "{text:?} must be https://HOST:PORT (http://HOST:PORT with --insecure) with a port from 1 to 65535 and no path"
        ))
    }
}

/// Whether `text` is `HOST:PORT` with a host and a port from 1 to 65535 (and no path).
fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
    })
}

/// Where a root keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootStore {
    /// A redb file under the data folder.
    Embedded,
    /// etcd, shared by root replicas.
    Etcd {
        /// `http://HOST:PORT` of each etcd member.
        endpoints: Vec<String>,
        /// The key prefix of this root group.
        prefix: String,
    },
}

/// Reads `embedded` or `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`; a build without the `etcd`
/// feature refuses `etcd://…` saying how to rebuild.
pub fn parse_store(text: &str) -> Result<RootStore, String> {
    read_store(text, cfg!(feature = "etcd"))
}

/// [`parse_store`] for a build with or without etcd (both tested in any build).
fn read_store(text: &str, etcd_built: bool) -> Result<RootStore, String> {
    let text = text.trim();
    if text == "embedded" {
        return Ok(RootStore::Embedded);
    }
    let Some(rest) = text.strip_prefix("etcd://") else {
        return Err(format!(
            "{text:?} is not a store; write embedded or etcd://HOST:PORT[,HOST:PORT…][/PREFIX]"
        ));
    };
    if !etcd_built {
        return Err(format!(
            "{text:?}: this root was built without etcd support; rebuild it with \
             --features etcd (which needs protoc: Debian's protobuf-compiler)"
        ));
    }
    let (hosts, prefix) = match rest.split_once('/') {
        Some((hosts, prefix)) if !prefix.trim_matches('/').is_empty() => {
            (hosts, format!("{}/", prefix.trim_matches('/')))
        }
        Some((hosts, _)) => (hosts, DEFAULT_PREFIX.to_string()),
        None => (rest, DEFAULT_PREFIX.to_string()),
    };
    let mut endpoints = Vec::new();
    for host in hosts.split(',').map(str::trim) {
        if !is_host_port(host) {
            return Err(format!(
                "etcd member {host:?} in {text:?} must be HOST:PORT with a port from 1 to 65535"
            ));
        }
        endpoints.push(format!("http://{host}"));
    }
    Ok(RootStore::Etcd { endpoints, prefix })
}

/// The key prefix of a root group on etcd when the URL names none.
const DEFAULT_PREFIX: &str = "edgeio/root/";
/// The etcd election the root replicas run in.
const ELECTION: &str = "leader";
/// A leader that cannot renew its lease for this long loses the leadership.
const LEASE_TTL: Duration = Duration::from_secs(3);

pub(crate) fn policy(text: &str) -> Result<PolicyKind, String> {
    text.parse::<PolicyKind>().map_err(|e| e.to_string())
}

pub(crate) fn build_scheduler(kind: PolicyKind) -> Result<Arc<dyn Scheduler>, RoleError> {
    SchedulerConfig::policy(kind)
        .build()
        .map_err(|e| RoleError::new(format!("scheduler {kind}: {e}")))
}

/// Starts a root: opens its store, binds its address, serves the API and `/ws/cluster`.
/// On etcd every replica takes clusters (their links are relayed through etcd to the
/// leader's engine) and serves the API, forwarding it to the leader until it wins the
/// election itself.
pub async fn start_root(options: RootOptions) -> Result<Running, RoleError> {
    if options.insecure {
        insecure_listen(options.listen, "--listen")?;
        tracing::warn!("{INSECURE_WARNING}");
    } else if options.store != RootStore::Embedded {
        return Err(RoleError::new(
            "--store etcd://…: root replicas do not share their CA and tokens through etcd yet, \
             so a secure replica group is not supported in this version; run the group with \
             --insecure (development only, loopback) or one root on the embedded store",
        ));
    } else if options
        .advertise
        .as_deref()
        .is_some_and(|a| a.starts_with("http://"))
    {
        return Err(RoleError::new(
            "--advertise http://…: a secure root is reached over https://HOST:PORT",
        ));
    }
    data_dir(&options.data)?;
    let (config, path) = match &options.store {
        RootStore::Embedded => {
            let path = options.data.join("root.redb");
            (StoreConfig::embedded(&path), path.display().to_string())
        }
        RootStore::Etcd { endpoints, prefix } => (
            StoreConfig::etcd(endpoints.clone(), prefix.clone()),
            format!("etcd {} under {prefix}", endpoints.join(",")),
        ),
    };
    let store = config
        .open()
        .await
        .map_err(|e| RoleError::new(format!("cannot open the store {path}: {e}")))?;
    let listener = bind(options.listen, "root API").await?;
    let trust = if options.insecure {
        None
    } else {
        let advertised: Vec<&str> = options.advertise.iter().map(String::as_str).collect();
        let names = server_names(options.listen, &advertised, &options.tls_san);
        Some(open_root_trust(&options.data, store.clone(), &names).await?)
    };
    let tokens = trust.as_ref().map(|t| {
        Arc::new(RootTokens {
            api: t.tokens.clone(),
            folder: t.folder.clone(),
        }) as Arc<dyn TokenAuthority>
    });
    let tls = match &trust {
        Some(trust) => Some(serving_certificate(
            trust.folder.clone(),
            &trust.server,
            trust.names.clone(),
        )?),
        None => None,
    };
    // clusters join with the root's join token and come back with the credential it issued
    let gate = |inner: Arc<dyn Registrar>| -> Arc<dyn Registrar> {
        match &trust {
            Some(trust) => Arc::new(JoinGate::new(
                inner,
                trust.folder.clone(),
                "cluster",
                "--join-token",
                issue_cluster_ca(),
            )),
            None => inner,
        }
    };
    let (stop, _) = tokio::sync::watch::channel(false);
    if options.store == RootStore::Embedded {
        let engine = build(&options, store, &path).await?;
        let ws = WsParent::new(
            "root",
            gate(Arc::new(engine.handle())),
            WsServerConfig::default(),
        );
        let app = ws
            .router()
            .merge(api_router(Arc::new(engine.handle()), &tokens));
        let server = serve_maybe_tls(listener, app, &tls)
            .map_err(|e| RoleError::new(format!("cannot serve on {}: {e}", options.listen)))?;
        let mut running = Running::new(server.url(), "root".into(), stop.clone());
        let stopped = Running::stopped(&stop);
        running.spawn(async move {
            let links = ws.clone();
            let result = engine.run(Arc::new(ws), stopped).await;
            // the clusters see their link close and redial, rather than wait on a silent one
            links.close_all();
            let _ = server.shutdown().await;
            result.map_err(|e| RoleError::new(format!("root engine stopped: {e}")))
        });
        tracing::info!(url = %running.url, "root listening");
        return Ok(running);
    }

    // a replica of a group: it holds the links of the clusters that dial it from the start,
    // and answers the API by forwarding it to the leader until it leads itself
    let addr = listener
        .local_addr()
        .map_err(|e| RoleError::new(format!("cannot read the bound address: {e}")))?;
    let me = options
        .advertise
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let lease = store
        .grant_lease(LEASE_TTL)
        .await
        .map_err(|e| RoleError::new(format!("cannot take a lease on etcd: {e}")))?;
    let mut keeper = Box::pin(keep_lease(store.clone(), lease));
    let relay = RelayConfig::new(me.trim_start_matches("http://"), lease);
    let registrar = RelayRegistrar::new(store.clone(), relay.clone());
    let ws = WsParent::new("root", gate(Arc::new(registrar)), WsServerConfig::default());
    let holder = tokio::spawn(hold_links(
        store.clone(),
        Arc::new(ws.clone()),
        relay.clone(),
    ));
    let find: FindLeader = {
        let store = store.clone();
        Arc::new(move || {
            let store = store.clone();
            Box::pin(async move { store.leader(ELECTION).await.map_err(|e| e.to_string()) })
        })
    };
    let api = RouterSwitch::new(forwarding_router(find));
    let mut app = ws.router().merge(api.router());
    if tokens.is_none() {
        app = health_warning(app, INSECURE_WARNING);
    }
    let server = serve_maybe_tls(listener, app, &tls)
        .map_err(|e| RoleError::new(format!("cannot serve on {addr}: {e}")))?;
    let mut running = Running::new(server.url(), "root".into(), stop.clone());
    let stopped = Running::stopped(&stop);
    running.spawn(async move {
        let mut stopped = Box::pin(stopped);
        let bus = store.clone();
        if let Ok(Some(leader)) = store.leader(ELECTION).await {
            tracing::info!(%leader, "standby: another root leads; waiting");
        }
        let result = tokio::select! {
            won = store.campaign(ELECTION, &me, lease) => match won {
                Ok(()) => {
                    let api = (&api, &tokens);
                    lead(&options, store, &path, relay, api, stopped, &mut keeper).await
                }
                Err(e) => Err(RoleError::new(format!("cannot run for leadership on etcd: {e}"))),
            },
            lost = &mut keeper => Err(lost),
            _ = &mut stopped => Ok(()),
        };
        holder.abort();
        ws.close_all();
        // a clean stop hands over at once: the election key and this replica's relay keys
        // go with the lease (a crash leaves them to its TTL)
        match bus.revoke_lease(lease).await {
            Ok(()) => tracing::info!("lease revoked: another replica may lead now"),
            Err(e) => tracing::warn!(error = %e, "the lease could not be revoked; it will expire"),
        }
        let _ = server.shutdown().await;
        result
    });
    tracing::info!(url = %running.url, "root replica listening (standby until it leads)");
    Ok(running)
}

/// Runs the engine of the replica that won the election until `stopped` or until its lease
/// is lost (`keeper` ends): the API switches from forwarding to the engine's, and the engine
/// reaches the clusters through the store relay, wherever they are linked.
async fn lead(
    options: &RootOptions,
    store: Arc<dyn edgeio_core::store::Store>,
    path: &str,
    relay: RelayConfig,
    (api, tokens): (&RouterSwitch, &Option<Arc<dyn TokenAuthority>>),
    stopped: impl std::future::Future<Output = ()> + Send,
    keeper: &mut (impl std::future::Future<Output = RoleError> + Unpin),
) -> Result<(), RoleError> {
    tracing::info!(replica = %relay.replica, "this root leads");
    let engine = build(options, store.clone(), path).await?;
    api.set(api_router(Arc::new(engine.handle()), tokens));
    let clusters = RelayParent::start(store, relay, Arc::new(engine.handle()));
    tokio::select! {
        result = engine.run(Arc::new(clusters), stopped) => {
            result.map_err(|e| RoleError::new(format!("root engine stopped: {e}")))
        }
        lost = keeper => Err(lost),
    }
}

/// The API over `api`: behind bearer tokens when the root is secure, open (with the
/// warning in `/healthz`) when it runs `--insecure`.
fn api_router(api: Arc<dyn RootApi>, tokens: &Option<Arc<dyn TokenAuthority>>) -> axum::Router {
    match tokens {
        Some(tokens) => secured_router(api, KnownRuntimes::default(), tokens.clone()),
        None => health_warning(router(api), INSECURE_WARNING),
    }
}

/// The root engine on `store`, as the options configure it.
async fn build(
    options: &RootOptions,
    store: Arc<dyn edgeio_core::store::Store>,
    path: &str,
) -> Result<RootEngine, RoleError> {
    let scheduler: Arc<dyn Scheduler> = Arc::new(LocationFirst {
        located: LocationAware::default(),
        otherwise: build_scheduler(options.scheduler)?,
    });
    let config = RootConfig {
        aggregate_interval: options.aggregate_interval,
        missed_aggregates: options.missed_aggregates,
        cluster_timeout: options.cluster_timeout,
        ..RootConfig::default()
    };
    let engine = RootEngine::new(config, store, scheduler)
        .await
        .map_err(|e| RoleError::new(format!("cannot read the store {path}: {e}")))?;
    Ok(engine)
}

/// Keeps this replica's lease alive; ends (with the reason) when it cannot, which stops the
/// replica: its relay keys and its candidacy die with the lease, so two never act as leader.
async fn keep_lease(store: Arc<dyn edgeio_core::store::Store>, lease: LeaseId) -> RoleError {
    let mut tick = tokio::time::interval(LEASE_TTL / 3);
    loop {
        tick.tick().await;
        if let Err(e) = store.keep_alive(lease).await {
            return RoleError::new(format!(
                "lost the etcd lease, and with it any leadership: it could not be renewed ({e})"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_urls_are_http_host_port() {
        assert_eq!(
            parse_advertise("http://10.0.0.5:7070/").unwrap(),
            "http://10.0.0.5:7070"
        );
        for bad in [
            "10.0.0.5:7070",
            "ftp://a:1",
            "http://a",
            "http://:7070",
            "http://a:0",
            "http://a:1/api",
        ] {
            let e = parse_advertise(bad).unwrap_err();
            assert!(e.contains("https://HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn stores_parse_and_refuse_with_the_rule() {
        assert_eq!(read_store("embedded", true).unwrap(), RootStore::Embedded);
        assert_eq!(
            read_store("etcd://10.0.0.1:2379,10.0.0.2:2379/prod", true).unwrap(),
            RootStore::Etcd {
                endpoints: vec!["http://10.0.0.1:2379".into(), "http://10.0.0.2:2379".into()],
                prefix: "prod/".into(),
            }
        );
        assert_eq!(
            read_store("etcd://etcd:2379", true).unwrap(),
            RootStore::Etcd {
                endpoints: vec!["http://etcd:2379".into()],
                prefix: DEFAULT_PREFIX.into(),
            }
        );
        let bad = read_store("redis://x:1", true).unwrap_err();
        assert!(bad.contains("embedded or etcd://"), "{bad}");
        for text in [
            "etcd://",
            "etcd://host",
            "etcd://host:0",
            "etcd://:2379",
            "etcd://h:99999",
        ] {
            let e = read_store(text, true).unwrap_err();
            assert!(e.contains("HOST:PORT"), "{text}: {e}");
        }
    }

    #[test]
    fn a_build_without_etcd_refuses_etcd_stores_saying_how_to_rebuild() {
        assert_eq!(read_store("embedded", false).unwrap(), RootStore::Embedded);
        let e = read_store("etcd://10.0.0.1:2379/prod", false).unwrap_err();
        assert_eq!(
            e,
            "\"etcd://10.0.0.1:2379/prod\": this root was built without etcd support; \
             rebuild it with --features etcd (which needs protoc: Debian's protobuf-compiler)"
        );
        // this build answers as its features say
        assert_eq!(
            parse_store("etcd://10.0.0.1:2379").is_ok(),
            cfg!(feature = "etcd")
        );
    }
}
