//! Ack means persisted, at both tiers: root, cluster and worker engines in memory, the root's
//! and the cluster's stores wrapped in a `FailingStore`. While a store refuses writes, what
//! depends on them is held — no ack, no deploy down, nothing started — and the command is
//! answered "not now" (retryable), never refused; once the store heals, the re-sent command is
//! acked and the job runs exactly once.
#![cfg(feature = "testing")]

use edgeio_core::api::{JobView, RootApi};
use edgeio_core::job::JobSpec;
use edgeio_core::model::{Arch, Capabilities, Resources, RuntimeInfo};
use edgeio_core::reliable::{ReliableChild, ReliableConfig};
use edgeio_core::runtime::Runtime;
use edgeio_core::state::{InstanceState, JobState};
use edgeio_core::testing::SimpleScheduler;
use edgeio_core::testing::{FailSwitch, FailingStore, FakeRuntime, MemoryHub, MemoryStore};
use edgeio_core::transport::Registrar;
use edgeio_core::wire::{ChannelKind, ChannelSettings, PeerRole, RegisterRequest};
use edgeio_engine::cluster::{ClusterConfig, ClusterEngine};
use edgeio_engine::root::{RootConfig, RootEngine, RootHandle};
use edgeio_engine::worker::{Worker, WorkerConfig};
use std::sync::Arc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);
/// Long enough for many re-sends (every 50–200 ms) and heartbeat ticks (100 ms).
const WHILE_FAILING: Duration = Duration::from_secs(1);

fn reliable() -> ReliableConfig {
    ReliableConfig {
        resend_initial: Duration::from_millis(50),
        resend_max: Duration::from_millis(200),
        ..ReliableConfig::default()
    }
}

struct Tiers {
    root: RootHandle,
    root_store: FailingStore,
    cluster_store: FailingStore,
    runtime: FakeRuntime,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Tiers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A root, a cluster `edge` and a worker `worker-1` with 4 cores; both stores can fail.
async fn tiers() -> Tiers {
    let mut tasks = Vec::new();
    let root_store = FailingStore::new(Arc::new(MemoryStore::new()));
    let root = RootEngine::new(
        RootConfig {
            aggregate_interval: Duration::from_millis(100),
            reliable: reliable(),
            ..RootConfig::default()
        },
        Arc::new(root_store.clone()),
        Arc::new(SimpleScheduler),
    )
    .await
    .unwrap();
    let handle = root.handle();
    let cluster_hub = MemoryHub::new();
    let root_down = Arc::new(cluster_hub.parent());
    tasks.push(tokio::spawn(async move {
        let _ = root.run(root_down, std::future::pending()).await;
    }));

    let reply = handle
        .register(RegisterRequest {
            role: PeerRole::Cluster,
            name: "edge".into(),
            previous_id: None,
            capabilities: None,
            location: None,
            labels: Default::default(),
            auth: None,
        })
        .await
        .unwrap();
    let up = Arc::new(ReliableChild::new(
        Arc::new(cluster_hub.connect(&reply.id).await.unwrap()),
        reliable(),
    ));
    let cluster_store = FailingStore::new(Arc::new(MemoryStore::new()));
    let cluster = ClusterEngine::new(
        ClusterConfig {
            id: reply.id.clone(),
            channel: ChannelSettings {
                kind: ChannelKind::Ws,
                broker: None,
                topics: None,
                status_interval_ms: 100,
                max_message_bytes: 1 << 20,
            },
            missed_heartbeats: 3,
            aggregate_interval: Duration::from_millis(100),
            location: None,
            labels: Default::default(),
            grace: Duration::from_secs(1),
            reliable: reliable(),
        },
        Arc::new(cluster_store.clone()),
        Arc::new(SimpleScheduler),
    )
    .await
    .unwrap();
    let registrar = cluster.registrar();
    let node_hub = MemoryHub::new();
    let cluster_down = Arc::new(node_hub.parent());
    tasks.push(tokio::spawn(async move {
        let _ = cluster.run(cluster_down, up, std::future::pending()).await;
    }));

    let runtime = FakeRuntime::new();
    registrar
        .register(RegisterRequest {
            role: PeerRole::Node,
            name: "worker-1".into(),
            previous_id: None,
            capabilities: Some(Capabilities {
                arch: Arch::Amd64,
                cores: 4,
                memory_bytes: 4 << 30,
                disk_bytes: 10 << 30,
                gpus: 0,
                runtimes: vec![RuntimeInfo {
                    kind: "native".into(),
                    version: "1".into(),
                }],
                labels: Default::default(),
                location: None,
            }),
            location: None,
            labels: Default::default(),
            auth: None,
        })
        .await
        .unwrap();
    let worker = Worker::new(
        WorkerConfig {
            node_id: "worker-1".into(),
            status_interval: Duration::from_millis(100),
            grace: Duration::from_secs(1),
            total: Resources {
                cpu_millis: 4000,
                memory_bytes: 4 << 30,
                ..Resources::ZERO
            },
        },
        Arc::new(ReliableChild::new(
            Arc::new(node_hub.connect("worker-1").await.unwrap()),
            reliable(),
        )),
        vec![Arc::new(runtime.clone()) as Arc<dyn Runtime>],
    );
    tasks.push(tokio::spawn(async move {
        let _ = worker.run(std::future::pending()).await;
    }));

    let tiers = Tiers {
        root: handle,
        root_store,
        cluster_store,
        runtime,
        tasks,
    };
    // the root knows the worker through the cluster's aggregate
    wait_for(
        &tiers.root,
        "the worker in the aggregate",
        |root| async move {
            root.clusters().await.unwrap().iter().any(|c| {
                c.aggregate.as_ref().is_some_and(|a| {
                    a.ready_nodes == 1
                        && a.node_filter
                            .as_ref()
                            .is_some_and(|f| f.may_contain("worker-1"))
                })
            })
        },
    )
    .await;
    tiers
}

async fn wait_for<F, Fut>(root: &RootHandle, what: &str, mut check: F)
where
    F: FnMut(RootHandle) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let waited = tokio::time::timeout(DEADLINE, async {
        while !check(root.clone()).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "no {what} within {DEADLINE:?}");
}

async fn wait_state(root: &RootHandle, id: &str, state: JobState) -> JobView {
    wait_for(root, &format!("job {id} {state}"), |root| {
        let id = id.to_string();
        async move { root.job(&id).await.unwrap().state == state }
    })
    .await;
    root.job(id).await.unwrap()
}

fn job(name: &str) -> JobSpec {
    JobSpec::minimal(
        name,
        "fake:run",
        "native",
        Resources {
            cpu_millis: 1000,
            ..Resources::ZERO
        },
    )
}

async fn stored_jobs(store: &FailingStore) -> usize {
    store.inner().list("jobs/").await.unwrap().items.len()
}

#[tokio::test]
async fn a_cluster_that_cannot_store_a_deploy_says_not_now_starts_nothing_and_runs_it_once_healed()
{
    let t = tiers().await;
    let failing: FailSwitch = t.cluster_store.switch();
    failing.fail();
    let view = t.root.submit(job("web")).await.unwrap();
    let id = view.id.to_string();

    tokio::time::sleep(WHILE_FAILING).await;
    let waiting = t.root.job(&id).await.unwrap();
    assert_eq!(
        waiting.state,
        JobState::ScheduledCluster,
        "a \"not now\" is not a refusal: the job stays with its cluster, not REQUESTED or \
         NOT_DEPLOYABLE: {waiting:#?}"
    );
    assert!(waiting.unschedulable.is_empty(), "{waiting:#?}");
    assert!(
        waiting.instances.is_empty(),
        "no instance reported: {waiting:#?}"
    );
    assert_eq!(t.runtime.deploy_count(), 0, "nothing started");
    assert_eq!(stored_jobs(&t.cluster_store).await, 0);
    let refused = failing.refused();
    assert!(
        refused >= 2,
        "the cluster tried to store the job again for the re-sent deploy ({refused} writes refused)"
    );

    failing.heal();
    let running = wait_state(&t.root, &id, JobState::Running).await;
    assert_eq!(running.cluster.as_deref(), Some("edge"));
    assert_eq!(running.instances.len(), 1, "{running:#?}");
    assert_eq!(running.instances[0].state, InstanceState::Running);
    assert_eq!(stored_jobs(&t.cluster_store).await, 1);
    // and it stays at one: no held deploy goes out a second time
    tokio::time::sleep(WHILE_FAILING).await;
    assert_eq!(t.runtime.deploy_count(), 1, "started exactly once");
    assert_eq!(t.root.job(&id).await.unwrap().instances.len(), 1);
}

#[tokio::test]
async fn a_root_that_cannot_store_a_job_answers_unavailable_and_creates_nothing() {
    let t = tiers().await;
    t.root_store.switch().fail();
    let err = t.root.submit(job("web")).await.unwrap_err();
    assert_eq!(err.code(), "unavailable", "{err}");
    assert!(
        t.root.jobs().await.unwrap().is_empty(),
        "nothing half-created"
    );
    assert_eq!(stored_jobs(&t.root_store).await, 0);
    tokio::time::sleep(WHILE_FAILING).await;
    assert_eq!(t.runtime.deploy_count(), 0);

    t.root_store.switch().heal();
    let view = t.root.submit(job("web")).await.unwrap();
    wait_state(&t.root, view.id.as_str(), JobState::Running).await;
    assert_eq!(t.runtime.deploy_count(), 1);
}

#[tokio::test]
async fn a_change_the_root_cannot_store_is_unavailable_and_undone() {
    let t = tiers().await;
    let view = t.root.submit(job("web")).await.unwrap();
    let id = view.id.to_string();
    wait_state(&t.root, &id, JobState::Running).await;

    t.root_store.switch().fail();
    let err = t.root.scale(&id, 2).await.unwrap_err();
    assert_eq!(err.code(), "unavailable", "{err}");
    let unscaled = t.root.job(&id).await.unwrap();
    assert_eq!(
        (unscaled.state, unscaled.spec.replicas),
        (JobState::Running, 1),
        "the refused scale was undone: {unscaled:#?}"
    );
    let err = t.root.terminate(&id).await.unwrap_err();
    assert_eq!(err.code(), "unavailable", "{err}");
    tokio::time::sleep(WHILE_FAILING).await;
    let still = t.root.job(&id).await.unwrap();
    assert_eq!(
        still.instances[0].state,
        InstanceState::Running,
        "no terminate went down: {still:#?}"
    );
    let stored = t
        .root_store
        .inner()
        .get(&format!("jobs/{id}"))
        .await
        .unwrap()
        .expect("the job is stored");
    let stored: serde_json::Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(
        stored["lifecycle"]["state"], "RUNNING",
        "the store still holds the job as it was: {stored:#}"
    );

    assert_eq!(
        still.state,
        JobState::Running,
        "the refused change was undone: {still:#?}"
    );

    // healed, nothing of the refused terminate happens by itself (the caller was told it
    // did not take); asked again, it does
    t.root_store.switch().heal();
    tokio::time::sleep(WHILE_FAILING).await;
    let after = t.root.job(&id).await.unwrap();
    assert_eq!(after.state, JobState::Running, "{after:#?}");
    assert_eq!(after.instances[0].state, InstanceState::Running);
    t.root.terminate(&id).await.unwrap();
    let done = wait_state(&t.root, &id, JobState::Terminated).await;
    assert_eq!(done.instances[0].state, InstanceState::Terminated);
    assert_eq!(t.runtime.deploy_count(), 1);
}

#[tokio::test]
async fn a_registration_the_store_refuses_is_answered_unavailable_and_taken_once_healed() {
    let t = tiers().await;
    let request = RegisterRequest {
        role: PeerRole::Cluster,
        name: "second".into(),
        previous_id: None,
        capabilities: None,
        location: None,
        labels: Default::default(),
        auth: None,
    };
    t.root_store.switch().fail();
    let refused = t.root.register(request.clone()).await.unwrap_err();
    assert_eq!(refused.code, "unavailable", "{refused:?}");
    assert!(refused.message.contains("retry"), "{refused:?}");

    t.root_store.switch().heal();
    let reply = t.root.register(request).await.unwrap();
    assert_eq!(reply.id, "second");
    let stored = t.root_store.inner().list("clusters/").await.unwrap();
    assert!(
        stored.items.iter().any(|kv| kv.key == "clusters/second"),
        "{:?}",
        stored.items.iter().map(|kv| &kv.key).collect::<Vec<_>>()
    );
}
