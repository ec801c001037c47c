//! The root orchestrator: REST API, the clusters' WebSocket, the root scheduler.

use super::common::{bind, data_dir, parse_duration, RoleError, Running};
use edgeio_core::engine::root::{RootConfig, RootEngine};
use edgeio_core::scheduler::Scheduler;
use edgeio_scheduler::{LocationAware, LocationFirst, PolicyKind, SchedulerConfig};
use edgeio_store::StoreConfig;
use edgeio_transport_ws::{serve, WsParent, WsServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Options of `root`. Each flag is also an environment variable (`EDGEIO_ROOT_<FLAG>`).
#[derive(Debug, Clone, clap::Args)]
pub struct RootOptions {
    /// Address of the REST API and of the clusters' WebSocket (`/ws/cluster`). Loopback by
    /// default: there is no authentication yet, and anyone who reaches the API can run jobs.
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
}

pub(crate) fn policy(text: &str) -> Result<PolicyKind, String> {
    text.parse::<PolicyKind>().map_err(|e| e.to_string())
}

pub(crate) fn build_scheduler(kind: PolicyKind) -> Result<Arc<dyn Scheduler>, RoleError> {
    SchedulerConfig::policy(kind)
        .build()
        .map_err(|e| RoleError::new(format!("scheduler {kind}: {e}")))
}

/// Starts a root: opens its store, binds its address, serves the API and `/ws/cluster`.
pub async fn start_root(options: RootOptions) -> Result<Running, RoleError> {
    data_dir(&options.data)?;
    let path = options.data.join("root.redb");
    let store = StoreConfig::embedded(&path)
        .open()
        .await
        .map_err(|e| RoleError::new(format!("cannot open the store {}: {e}", path.display())))?;
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
        .map_err(|e| RoleError::new(format!("cannot read the store {}: {e}", path.display())))?;
    let handle = engine.handle();
    let ws = WsParent::new("root", Arc::new(handle.clone()), WsServerConfig::default());
    let app = ws
        .router()
        .merge(edgeio_transport_ws::rest::router(Arc::new(handle)));
    let listener = bind(options.listen, "root API").await?;
    let server = serve(listener, app)
        .map_err(|e| RoleError::new(format!("cannot serve on {}: {e}", options.listen)))?;
    let (stop, _) = tokio::sync::watch::channel(false);
    let mut running = Running::new(server.url(), "root".into(), stop.clone());
    let stopped = Running::stopped(&stop);
    running.spawn(async move {
        let result = engine.run(Arc::new(ws), stopped).await;
        let _ = server.shutdown().await;
        result.map_err(|e| RoleError::new(format!("root engine stopped: {e}")))
    });
    tracing::info!(url = %running.url, "root listening");
    Ok(running)
}
