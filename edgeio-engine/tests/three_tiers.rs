//! Root, cluster and worker engines wired by the in-memory transport and the fake runtime:
//! the deploy flow, refusal and NOT_DEPLOYABLE, termination, node and logs queries, node loss,
//! scaling, migration, replicas spread over several clusters.
//! (The same flow over real processes and protocols is the facade's `three_tiers` test.)
#![cfg(feature = "testing")]

use edgeio_core::api::{LogsQuery, RootApi};
use edgeio_core::job::JobSpec;
use edgeio_core::model::{Arch, Capabilities, JobId, Resources, RuntimeInfo};
use edgeio_core::reliable::{ReliableChild, ReliableConfig};
use edgeio_core::runtime::Runtime;
use edgeio_core::state::{InstanceState, JobState, NodeState};
use edgeio_core::testing::{FakeRuntime, MemoryHub, MemoryStore, SimpleScheduler};
use edgeio_core::transport::{ParentEvent, ParentTransport, Registrar};
use edgeio_core::wire::{
    ChannelKind, ChannelSettings, Deploy, Envelope, Message, Nack, PeerRole, RegisterRequest,
};
use edgeio_engine::cluster::{ClusterConfig, ClusterEngine};
use edgeio_engine::root::{RootConfig, RootEngine, RootHandle};
use edgeio_engine::worker::{Worker, WorkerConfig};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

fn reliable() -> ReliableConfig {
    ReliableConfig {
        resend_initial: Duration::from_millis(50),
        resend_max: Duration::from_millis(200),
        ..ReliableConfig::default()
    }
}

fn capabilities(cores: u32) -> Capabilities {
    Capabilities {
        arch: Arch::Amd64,
        cores,
        memory_bytes: 4 << 30,
        disk_bytes: 10 << 30,
        gpus: 0,
        runtimes: vec![RuntimeInfo {
            kind: "native".into(),
            version: "1".into(),
        }],
        labels: Default::default(),
        location: None,
    }
}

struct Tiers {
    root: RootHandle,
    runtime: FakeRuntime,
    node_hub: MemoryHub,
    /// Every cluster's node hub, in the order given (the first is `node_hub`).
    hubs: Vec<MemoryHub>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Tiers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One root, one cluster (`edge`), one worker with `cores` cores.
async fn tiers(cores: u32) -> Tiers {
    tiers_of(cores, 1).await
}

/// One root, one cluster (`edge`), `workers` workers (`worker-1` …) with `cores` cores each,
/// sharing one fake runtime.
async fn tiers_of(cores: u32, workers: usize) -> Tiers {
    clusters(&[("edge", cores, workers)]).await
}

/// One root and the clusters given as (name, cores per worker, workers); the workers of
/// `edge` are `worker-1` …, those of another cluster `{cluster}-worker-1` …; all share one
/// fake runtime. `node_hub` is the first cluster's.
async fn clusters(specs: &[(&str, u32, usize)]) -> Tiers {
    clusters_with(specs, false).await
}

/// As [`clusters`]; with `relay`, the root runs as two replicas on one store: the leader's
/// engine talks through the store relay, and the clusters link and register at either
/// replica in turn (the first at the standby).
async fn clusters_with(specs: &[(&str, u32, usize)], relay: bool) -> Tiers {
    use edgeio_core::store::Store;
    use edgeio_engine::relay::{hold_links, RelayConfig, RelayParent, RelayRegistrar};
    let mut tasks = Vec::new();
    let root_config = RootConfig {
        aggregate_interval: Duration::from_millis(100),
        reliable: reliable(),
        ..RootConfig::default()
    };
    let root = RootEngine::new(
        root_config,
        Arc::new(MemoryStore::new()),
        Arc::new(SimpleScheduler),
    )
    .await
    .unwrap();
    let handle = root.handle();
    let cluster_hub = MemoryHub::new();
    // with the relay: each replica's links and registrations, standby first
    let mut replicas: Vec<(MemoryHub, Arc<dyn Registrar>)> = Vec::new();
    let root_down: Arc<dyn ParentTransport> = if relay {
        let bus: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let mut configs = Vec::new();
        for name in ["standby", "leader"] {
            let lease = bus.grant_lease(Duration::from_secs(60)).await.unwrap();
            let config = RelayConfig::new(name, lease);
            let hub = MemoryHub::new();
            tasks.push(tokio::spawn(hold_links(
                bus.clone(),
                Arc::new(hub.parent()),
                config.clone(),
            )));
            replicas.push((
                hub,
                Arc::new(RelayRegistrar::new(bus.clone(), config.clone())),
            ));
            configs.push(config);
        }
        Arc::new(RelayParent::start(
            bus,
            configs.remove(1),
            Arc::new(handle.clone()),
        ))
    } else {
        Arc::new(cluster_hub.parent())
    };
    tasks.push(tokio::spawn(async move {
        let _ = root.run(root_down, std::future::pending()).await;
    }));
    let runtime = FakeRuntime::new();
    let mut hubs = Vec::new();
    let mut expected = Vec::new();
    for (n, &(cluster_name, cores, workers)) in specs.iter().enumerate() {
        // the cluster registers (as over WS), then opens its channel
        let (hub, registrar): (MemoryHub, Arc<dyn Registrar>) = match replicas.get(n % 2) {
            Some((hub, registrar)) if relay => (hub.clone(), registrar.clone()),
            _ => (cluster_hub.clone(), Arc::new(handle.clone())),
        };
        let reply = registrar
            .register(RegisterRequest {
                role: PeerRole::Cluster,
                name: cluster_name.into(),
                previous_id: None,
                capabilities: None,
                location: None,
                labels: Default::default(),
                auth: None,
            })
            .await
            .unwrap();
        assert_eq!(reply.id, cluster_name);
        let up = Arc::new(ReliableChild::new(
            Arc::new(hub.connect(cluster_name).await.unwrap()),
            reliable(),
        ));
        let cluster_config = ClusterConfig {
            id: cluster_name.into(),
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
        };
        let cluster = ClusterEngine::new(
            cluster_config,
            Arc::new(MemoryStore::new()),
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

        let names: Vec<String> = (1..=workers)
            .map(|n| match cluster_name {
                "edge" => format!("worker-{n}"),
                other => format!("{other}-worker-{n}"),
            })
            .collect();
        for name in &names {
            let reply = registrar
                .register(RegisterRequest {
                    role: PeerRole::Node,
                    name: name.clone(),
                    previous_id: None,
                    capabilities: Some(capabilities(cores)),
                    location: None,
                    labels: Default::default(),
                    auth: None,
                })
                .await
                .unwrap();
            assert_eq!(&reply.id, name);
            let worker_link = Arc::new(ReliableChild::new(
                Arc::new(node_hub.connect(name).await.unwrap()),
                reliable(),
            ));
            let worker = Worker::new(
                WorkerConfig {
                    node_id: name.clone(),
                    status_interval: Duration::from_millis(100),
                    grace: Duration::from_secs(1),
                    total: Resources {
                        cpu_millis: u64::from(cores) * 1000,
                        memory_bytes: 4 << 30,
                        ..Resources::ZERO
                    },
                },
                worker_link,
                vec![Arc::new(runtime.clone()) as Arc<dyn Runtime>],
            );
            tasks.push(tokio::spawn(async move {
                let _ = worker.run(std::future::pending()).await;
            }));
        }
        hubs.push(node_hub);
        expected.push((cluster_name.to_string(), names));
    }

    // wait until the root has an aggregate of every cluster whose filter holds its workers
    wait(&handle, |root| {
        let expected = expected.clone();
        async move {
            let clusters = root.clusters().await.unwrap();
            expected.iter().all(|(id, names)| {
                clusters
                    .iter()
                    .find(|c| &c.id == id)
                    .and_then(|c| c.aggregate.as_ref())
                    .is_some_and(|a| {
                        a.ready_nodes as usize == names.len()
                            && names
                                .iter()
                                .all(|n| a.node_filter.as_ref().is_some_and(|f| f.may_contain(n)))
                    })
            })
        }
    })
    .await;
    Tiers {
        root: handle,
        runtime,
        node_hub: hubs[0].clone(),
        hubs,
        tasks,
    }
}

async fn wait<F, Fut>(root: &RootHandle, mut check: F)
where
    F: FnMut(RootHandle) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(DEADLINE, async {
        loop {
            if check(root.clone()).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition within the deadline");
}

async fn wait_state(root: &RootHandle, id: &str, state: JobState) {
    let id = id.to_string();
    tokio::time::timeout(DEADLINE, async {
        loop {
            let job = root.job(&id).await.unwrap();
            if job.state == state {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let now = futures::executor::block_on(root.job(&id));
        panic!("job {id} did not reach {state} within {DEADLINE:?}: {now:#?}")
    });
}

fn job(name: &str, cpu_millis: u64) -> JobSpec {
    JobSpec::minimal(
        name,
        "fake:run",
        "native",
        Resources {
            cpu_millis,
            ..Resources::ZERO
        },
    )
}

#[tokio::test]
async fn a_job_goes_from_requested_to_running_and_to_terminated() {
    let t = tiers(4).await;
    let view = t.root.submit(job("web", 1000)).await.unwrap();
    assert_eq!(view.state, JobState::Requested);
    wait_state(&t.root, view.id.as_str(), JobState::Running).await;

    let running = t.root.job(view.id.as_str()).await.unwrap();
    let states: Vec<JobState> = running.history.iter().map(|h| h.state).collect();
    assert_eq!(
        states,
        [
            JobState::Requested,
            JobState::ScheduledCluster,
            JobState::ScheduledNode,
            JobState::Running
        ]
    );
    assert_eq!(running.cluster.as_deref(), Some("edge"));
    assert_eq!(running.instances.len(), 1);
    assert_eq!(running.instances[0].node.as_deref(), Some("worker-1"));
    assert_eq!(running.instances[0].state, InstanceState::Running);
    assert_eq!(t.runtime.deploy_count(), 1);

    // a second live job of the same name is a conflict naming the field
    let err = t.root.submit(job("web", 100)).await.unwrap_err();
    assert_eq!(err.code(), "conflict");
    assert_eq!(err.details()[0].path, "job_name");

    // logs come from the worker, through cluster and root
    let instance = running.instances[0].id.clone();
    t.runtime
        .emit_log(&instance, "hello from the fake")
        .unwrap();
    let mut logs = t
        .root
        .logs(view.id.as_str(), LogsQuery::default())
        .await
        .unwrap();
    let text = logs.next().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&text).contains("hello from the fake"),
        "{text:?}"
    );

    // nodes are asked of the cluster
    let nodes = t.root.nodes("edge").await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].state, NodeState::Ready);
    assert_eq!(
        t.root.nodes("nowhere").await.unwrap_err().code(),
        "not_found"
    );

    t.root.terminate(view.id.as_str()).await.unwrap();
    wait_state(&t.root, view.id.as_str(), JobState::Terminated).await;
    let done = t.root.job(view.id.as_str()).await.unwrap();
    assert_eq!(done.instances[0].state, InstanceState::Terminated);
    // the name is free again
    t.root.submit(job("web", 100)).await.unwrap();
}

#[tokio::test]
async fn a_job_nothing_fits_is_not_deployable_with_both_tiers_reasons() {
    let t = tiers(2).await;
    // fits the aggregate's total, not the one node's free CPU
    let view = t.root.submit(job("huge", 64_000)).await.unwrap();
    wait_state(&t.root, view.id.as_str(), JobState::NotDeployable).await;
    let job = t.root.job(view.id.as_str()).await.unwrap();
    assert!(!job.unschedulable.is_empty());
    let last = job.history.last().unwrap();
    assert!(last.reason.contains("64000"), "{}", last.reason);
    // terminating a job that never ran ends at once
    let done = t.root.terminate(view.id.as_str()).await.unwrap();
    assert_eq!(done.state, JobState::Terminated);
}

#[tokio::test]
async fn a_cluster_refusal_sends_the_job_back_and_the_root_explains_it() {
    let t = tiers_of(2, 2).await;
    // two 1.2-core jobs leave 0.8 of a core on each 2-core worker: 1.6 cores free in all,
    // which the root (which knows the sum and the emptiest node, not every node) counts as
    // room for a third, and the cluster refuses
    let first = t.root.submit(job("first", 1200)).await.unwrap();
    let second = t.root.submit(job("second", 1200)).await.unwrap();
    let third = t.root.submit(job("third", 1200)).await.unwrap();
    wait_state(&t.root, first.id.as_str(), JobState::Running).await;
    wait_state(&t.root, second.id.as_str(), JobState::Running).await;
    wait_state(&t.root, third.id.as_str(), JobState::NotDeployable).await;
    let refused = t.root.job(third.id.as_str()).await.unwrap();
    let reasons: Vec<&str> = refused.history.iter().map(|h| h.reason.as_str()).collect();
    // submitted right after the others, it was scheduled on the aggregate from before they
    // took their CPU, less what the root sent them: the cluster refused, and the root found
    // no other cluster
    assert!(
        reasons.iter().any(|r| r.contains("cluster edge refused")),
        "{reasons:?}"
    );
    assert!(!refused.unschedulable.is_empty());
}

#[tokio::test]
async fn unknown_ids_are_not_found_and_a_lost_node_marks_its_instances_lost() {
    let t = tiers(4).await;
    assert_eq!(t.root.job("nope").await.unwrap_err().code(), "not_found");
    assert_eq!(
        t.root.terminate("nope").await.unwrap_err().code(),
        "not_found"
    );
    assert_eq!(
        t.root.cluster("nope").await.unwrap_err().code(),
        "not_found"
    );

    let view = t.root.submit(job("web", 1000)).await.unwrap();
    wait_state(&t.root, view.id.as_str(), JobState::Running).await;
    assert!(t.node_hub.cut("worker-1"));
    let id = view.id.to_string();
    wait(&t.root, |root| {
        let id = id.clone();
        async move { root.job(&id).await.unwrap().instances[0].state == InstanceState::Lost }
    })
    .await;
}

#[tokio::test]
async fn followed_logs_stream_new_lines_through_the_tiers_until_the_reader_leaves() {
    let t = tiers(4).await;
    let view = t.root.submit(job("chatty", 100)).await.unwrap();
    wait_state(&t.root, view.id.as_str(), JobState::Running).await;
    let instance = t.root.job(view.id.as_str()).await.unwrap().instances[0]
        .id
        .clone();
    t.runtime.emit_log(&instance, "before").unwrap();
    let follow = LogsQuery {
        tail: None,
        follow: true,
    };
    let mut logs = t.root.logs(view.id.as_str(), follow).await.unwrap();
    let mut seen = String::new();
    let mut n = 0;
    tokio::time::timeout(DEADLINE, async {
        while !seen.contains("line 3") {
            // new lines keep coming while the stream is open
            if seen.contains("before") && n < 4 {
                n += 1;
                t.runtime.emit_log(&instance, &format!("line {n}")).unwrap();
            }
            let chunk = logs.next().await.expect("the stream stays open").unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("followed lines within the deadline; saw {seen:?}"));
    assert!(seen.starts_with("before\nline 1\n"), "{seen:?}");
    // the reader leaves: the root forgets the stream and the cancel travels down
    drop(logs);
    // a new follow still works afterwards
    let mut again = t.root.logs(view.id.as_str(), follow).await.unwrap();
    let first = tokio::time::timeout(DEADLINE, again.next()).await.unwrap();
    assert!(String::from_utf8_lossy(&first.unwrap().unwrap()).contains("before"));
}

fn running_on(job: &edgeio_core::api::JobView) -> Vec<String> {
    job.instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .filter_map(|i| i.node.clone())
        .collect()
}

#[tokio::test]
async fn scaling_up_places_more_and_scaling_down_stops_the_newest_first() {
    let t = tiers_of(4, 2).await;
    let view = t.root.submit(job("web", 500)).await.unwrap();
    let id = view.id.to_string();
    wait_state(&t.root, &id, JobState::Running).await;

    let scaled = t.root.scale(&id, 3).await.unwrap();
    assert_eq!(scaled.state, JobState::Scaling);
    wait(&t.root, |root| {
        let id = id.clone();
        async move {
            let job = root.job(&id).await.unwrap();
            job.state == JobState::Running && running_on(&job).len() == 3
        }
    })
    .await;

    t.root.scale(&id, 1).await.unwrap();
    wait(&t.root, |root| {
        let id = id.clone();
        async move {
            let job = root.job(&id).await.unwrap();
            job.state == JobState::Running && running_on(&job).len() == 1
        }
    })
    .await;
    let job = t.root.job(&id).await.unwrap();
    // the first instance stayed; the two newest went
    assert_eq!(job.instances[0].state, InstanceState::Running);
    assert!(job.instances[1..]
        .iter()
        .all(|i| i.state == InstanceState::Terminated));
    let reasons: Vec<&str> = job.history.iter().map(|h| h.reason.as_str()).collect();
    assert!(reasons.contains(&"scaled to 3 replicas"), "{reasons:?}");
    assert!(reasons.contains(&"scaled to 1 replicas"), "{reasons:?}");

    // bad counts are refused naming the field; more than fits is refused by the cluster
    // and the count stays
    assert_eq!(t.root.scale(&id, 0).await.unwrap_err().code(), "invalid");
    assert_eq!(
        t.root.scale("nope", 2).await.unwrap_err().code(),
        "not_found"
    );
    t.root.scale(&id, 40).await.unwrap();
    wait(&t.root, |root| {
        let id = id.clone();
        async move {
            let job = root.job(&id).await.unwrap();
            job.state == JobState::Running && job.spec.replicas == 1
        }
    })
    .await;
    let job = t.root.job(&id).await.unwrap();
    let last = &job.history.last().unwrap().reason;
    assert!(last.contains("scale to 40 refused"), "{last}");
    assert!(!job.unschedulable.is_empty());
}

#[tokio::test]
async fn migrating_starts_the_new_instance_before_it_stops_the_old_one() {
    use edgeio_core::wire::MigrateTarget;
    let t = tiers_of(4, 2).await;
    let view = t.root.submit(job("mover", 500)).await.unwrap();
    let id = view.id.to_string();
    wait_state(&t.root, &id, JobState::Running).await;
    let first = t.root.job(&id).await.unwrap();
    let from = first.instances[0].node.clone().unwrap();
    let to = if from == "worker-1" {
        "worker-2"
    } else {
        "worker-1"
    };

    let moving = t
        .root
        .migrate(&id, MigrateTarget::Node(to.into()), None)
        .await
        .unwrap();
    assert_eq!(moving.state, JobState::Migrating);
    wait(&t.root, |root| {
        let id = id.clone();
        async move {
            let job = root.job(&id).await.unwrap();
            job.state == JobState::Running && job.instances[0].state == InstanceState::Terminated
        }
    })
    .await;
    let job = t.root.job(&id).await.unwrap();
    assert_eq!(running_on(&job), [to]);
    // make-before-break: the new one ran before the old one was asked to stop
    let new_running = job.instances[1]
        .history
        .iter()
        .find(|h| h.state == InstanceState::Running)
        .unwrap()
        .at_ms;
    let old_stopping = job.instances[0]
        .history
        .iter()
        .find(|h| h.state == InstanceState::Terminating)
        .unwrap();
    assert!(new_running <= old_stopping.at_ms);
    assert!(
        old_stopping.reason.contains("migration"),
        "{}",
        old_stopping.reason
    );
    let states: Vec<JobState> = job.history.iter().map(|h| h.state).collect();
    assert!(
        states.ends_with(&[JobState::Migrating, JobState::Running]),
        "{states:?}"
    );

    // to where it already is, or to nowhere: refused, and nothing moves
    let same = t
        .root
        .migrate(&id, MigrateTarget::Node(to.into()), None)
        .await;
    assert_eq!(same.unwrap_err().code(), "invalid");
    assert_eq!(
        t.root
            .migrate(&id, MigrateTarget::Cluster("edge".into()), None)
            .await
            .unwrap_err()
            .code(),
        "invalid"
    );
    assert_eq!(
        t.root
            .migrate(&id, MigrateTarget::Node("ghost".into()), None)
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );
    // anywhere else: the other node, since this cluster has one
    t.root
        .migrate(&id, MigrateTarget::Anywhere, None)
        .await
        .unwrap();
    wait(&t.root, |root| {
        let (id, from) = (id.clone(), from.clone());
        async move {
            let job = root.job(&id).await.unwrap();
            job.state == JobState::Running && running_on(&job) == [from]
        }
    })
    .await;
}

/// Waits until job `id` passes `check`; on timeout, fails showing the job.
async fn wait_job(root: &RootHandle, id: &str, check: impl Fn(&edgeio_core::api::JobView) -> bool) {
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            if check(&root.job(id).await.unwrap()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if found.is_err() {
        panic!("job {id} not as expected: {:#?}", root.job(id).await);
    }
}

/// The clusters a job's running instances report, in instance order.
fn running_clusters(job: &edgeio_core::api::JobView) -> Vec<String> {
    job.instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .filter_map(|i| i.cluster.clone())
        .collect()
}

/// Whether a job is RUNNING with `running` instances running and none on its way.
fn settled(job: &edgeio_core::api::JobView, running: usize) -> bool {
    job.state == JobState::Running
        && job
            .instances
            .iter()
            .all(|i| i.state == InstanceState::Running || i.state == InstanceState::Terminated)
        && running_on(job).len() == running
}

/// Each part of a job: its cluster and count.
fn parts(job: &edgeio_core::api::JobView) -> Vec<(String, u32)> {
    job.parts
        .iter()
        .map(|p| (p.cluster.clone(), p.replicas))
        .collect()
}

/// Three clusters of one two-core worker each and a job `web` of three one-core replicas
/// (so spread: two on edge-a, one on edge-b), RUNNING; its id.
async fn three_clusters_and_a_spread_job() -> (Tiers, String) {
    let t = clusters(&[("edge-a", 2, 1), ("edge-b", 2, 1), ("edge-c", 2, 1)]).await;
    let mut spec = job("web", 1000);
    spec.replicas = 3;
    let id = t.root.submit(spec).await.unwrap().id.to_string();
    wait_state(&t.root, &id, JobState::Running).await;
    (t, id)
}

#[tokio::test]
async fn replicas_no_one_cluster_can_take_are_spread_over_several() {
    let (t, id) = three_clusters_and_a_spread_job().await;
    let job = t.root.job(&id).await.unwrap();
    assert_eq!(parts(&job), [("edge-a".into(), 2), ("edge-b".into(), 1)]);
    assert_eq!(job.cluster.as_deref(), Some("edge-a"));
    let mut on = running_clusters(&job);
    on.sort();
    assert_eq!(on, ["edge-a", "edge-a", "edge-b"]);
    // every instance id names one placement only, and says which cluster numbered it
    let mut ids: Vec<String> = job.instances.iter().map(|i| i.id.to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for i in &job.instances {
        let cluster = i.cluster.as_deref().unwrap();
        assert!(
            i.id.as_str().starts_with(&format!("{id}.{cluster}-")),
            "{}",
            i.id
        );
    }
    let reasons: Vec<&str> = job.history.iter().map(|h| h.reason.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("spread over clusters edge-a (2), edge-b (1)")),
        "{reasons:?}"
    );

    // one more fits on the newest part's cluster
    t.root.scale(&id, 4).await.unwrap();
    wait_job(&t.root, &id, |job| {
        job.state == JobState::Running && running_on(job).len() == 4
    })
    .await;
    // the fifth does not: it goes to a cluster that holds none yet
    t.root.scale(&id, 5).await.unwrap();
    wait_job(&t.root, &id, |job| {
        job.state == JobState::Running && running_on(job).len() == 5
    })
    .await;
    let job = t.root.job(&id).await.unwrap();
    assert_eq!(
        parts(&job),
        [
            ("edge-a".into(), 2),
            ("edge-b".into(), 2),
            ("edge-c".into(), 1)
        ]
    );
    // a sixth fits on the newest part's cluster again
    t.root.scale(&id, 6).await.unwrap();
    wait_job(&t.root, &id, |job| {
        job.state == JobState::Running && running_on(job).len() == 6
    })
    .await;
    // a seventh fits nowhere: refused with the reason, the count stays
    t.root.scale(&id, 7).await.unwrap();
    wait_job(&t.root, &id, |job| {
        job.state == JobState::Running && job.spec.replicas == 6
    })
    .await;
    let job = t.root.job(&id).await.unwrap();
    assert_eq!(running_on(&job).len(), 6);
    let last = &job.history.last().unwrap().reason;
    assert!(last.contains("it keeps 6"), "{last}");
    assert_eq!(job.parts.len(), 3);

    // a spread job moves one part at a time: which one must be said
    let refused = t
        .root
        .migrate(&id, edgeio_core::wire::MigrateTarget::Anywhere, None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "invalid", "{refused}");
    assert!(refused.to_string().contains("which part"), "{refused}");

    // scaling down lets go of the newest parts first: edge-c's, then edge-b's
    t.root.scale(&id, 2).await.unwrap();
    wait_job(&t.root, &id, |job| settled(job, 2)).await;
    let job = t.root.job(&id).await.unwrap();
    assert_eq!(running_clusters(&job), ["edge-a", "edge-a"]);
    assert_eq!(job.parts.len(), 1);

    // terminating it reaches every cluster that held a part
    t.root.terminate(&id).await.unwrap();
    wait_state(&t.root, &id, JobState::Terminated).await;
    assert!(t
        .root
        .job(&id)
        .await
        .unwrap()
        .instances
        .iter()
        .all(|i| i.state == InstanceState::Terminated));
}

#[tokio::test]
async fn migrating_one_of_several_replicas_leaves_the_others_running() {
    use edgeio_core::wire::MigrateTarget;
    let t = tiers_of(4, 2).await;
    let mut spec = job("pair", 500);
    spec.replicas = 2;
    let id = t.root.submit(spec).await.unwrap().id.to_string();
    wait_state(&t.root, &id, JobState::Running).await;
    let job = t.root.job(&id).await.unwrap();
    let moving = job.instances[0].clone();
    let to = if moving.node.as_deref() == Some("worker-1") {
        "worker-2"
    } else {
        "worker-1"
    };
    t.root
        .migrate(&id, MigrateTarget::Node(to.into()), Some(moving.id.clone()))
        .await
        .unwrap();
    wait_job(&t.root, &id, |job| {
        job.state == JobState::Running
            && job.instances[0].state == InstanceState::Terminated
            && running_on(job).len() == 2
    })
    .await;
    let job = t.root.job(&id).await.unwrap();
    // the other replica never stopped; the new one runs on the node asked for
    assert_eq!(job.instances[1].state, InstanceState::Running);
    assert_eq!(job.instances[2].node.as_deref(), Some(to));
    let last = job.history.last().unwrap();
    assert!(last.reason.contains("migrated to"), "{}", last.reason);
}

#[tokio::test]
async fn a_spread_jobs_part_migrates_alone_make_before_break() {
    use edgeio_core::wire::MigrateTarget;
    let (t, id) = three_clusters_and_a_spread_job().await;
    let job = t.root.job(&id).await.unwrap();
    assert_eq!(parts(&job), [("edge-a".into(), 2), ("edge-b".into(), 1)]);
    let on_b = job
        .instances
        .iter()
        .find(|i| i.cluster.as_deref() == Some("edge-b"))
        .unwrap()
        .id
        .clone();

    // to a cluster that already holds a part, or without saying which part: refused
    for (target, instance, field) in [
        (
            MigrateTarget::Cluster("edge-a".into()),
            Some(on_b.clone()),
            "cluster",
        ),
        (MigrateTarget::Cluster("edge-c".into()), None, "instance"),
        (
            MigrateTarget::Node("edge-a-worker-1".into()),
            Some(on_b.clone()),
            "node",
        ),
    ] {
        let e = t.root.migrate(&id, target, instance).await.unwrap_err();
        assert_eq!(e.code(), "invalid", "{e}");
        let edgeio_core::api::ApiError::Invalid { details, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(details[0].path, field, "{e}");
    }
    assert_eq!(t.root.job(&id).await.unwrap().state, JobState::Running);

    // edge-b's part goes to edge-c; edge-a's replicas stay
    let moving = t
        .root
        .migrate(
            &id,
            MigrateTarget::Cluster("edge-c".into()),
            Some(on_b.clone()),
        )
        .await
        .unwrap();
    assert_eq!(moving.state, JobState::Migrating);
    wait_job(&t.root, &id, |job| settled(job, 3)).await;
    let job = t.root.job(&id).await.unwrap();
    assert_eq!(parts(&job), [("edge-a".into(), 2), ("edge-c".into(), 1)]);
    let mut on = running_clusters(&job);
    on.sort();
    assert_eq!(on, ["edge-a", "edge-a", "edge-c"]);
    let old = job.instances.iter().find(|i| i.id == on_b).unwrap();
    assert_eq!(old.state, InstanceState::Terminated);
    let new = job
        .instances
        .iter()
        .find(|i| i.cluster.as_deref() == Some("edge-c"))
        .unwrap();
    // make-before-break: the new replica ran before the old one was asked to stop
    let ran = new
        .history
        .iter()
        .find(|h| h.state == InstanceState::Running)
        .unwrap()
        .at_ms;
    let stopping = old
        .history
        .iter()
        .find(|h| h.state == InstanceState::Terminating)
        .unwrap()
        .at_ms;
    assert!(ran <= stopping);
    let reasons: Vec<&str> = job.history.iter().map(|h| h.reason.as_str()).collect();
    assert!(
        reasons.iter().any(
            |r| r.contains("migrate the part on cluster edge-b (1 replicas) to cluster edge-c")
        ),
        "{reasons:?}"
    );

    // edge-a's part, anywhere else: its cluster has no other node, so the part goes whole
    // to the cluster that holds none (edge-b, free again)
    let on_a = job
        .instances
        .iter()
        .find(|i| i.cluster.as_deref() == Some("edge-a") && i.state == InstanceState::Running)
        .unwrap()
        .id
        .clone();
    t.root
        .migrate(&id, MigrateTarget::Anywhere, Some(on_a))
        .await
        .unwrap();
    wait_job(&t.root, &id, |job| {
        settled(job, 3) && job.parts.iter().any(|p| p.cluster == "edge-b")
    })
    .await;
    let job = t.root.job(&id).await.unwrap();
    assert_eq!(parts(&job), [("edge-b".into(), 2), ("edge-c".into(), 1)]);

    // terminating reaches both parts
    t.root.terminate(&id).await.unwrap();
    wait_state(&t.root, &id, JobState::Terminated).await;
}

#[tokio::test]
async fn with_root_replicas_clusters_at_either_replica_run_a_spread_job_through_the_store() {
    let t = clusters_with(&[("edge-a", 2, 1), ("edge-b", 2, 1)], true).await;
    let mut spec = job("web", 1000);
    spec.replicas = 3;
    let id = t.root.submit(spec).await.unwrap().id.to_string();
    wait_state(&t.root, &id, JobState::Running).await;
    let mut on = running_clusters(&t.root.job(&id).await.unwrap());
    on.sort();
    assert_eq!(on, ["edge-a", "edge-a", "edge-b"]);
    // queries go down and their answers come up the same way
    let nodes = t.root.nodes("edge-a").await.unwrap();
    assert_eq!(nodes.len(), 1);
    t.root.terminate(&id).await.unwrap();
    wait_state(&t.root, &id, JobState::Terminated).await;
}

#[tokio::test]
async fn a_spread_that_the_clusters_cannot_hold_together_is_not_deployable() {
    let t = clusters(&[("edge-a", 2, 1), ("edge-b", 2, 1)]).await;
    let mut spec = job("big", 1000);
    spec.replicas = 5;
    let id = t.root.submit(spec).await.unwrap().id.to_string();
    wait_state(&t.root, &id, JobState::NotDeployable).await;
    let job = t.root.job(&id).await.unwrap();
    assert!(job.parts.is_empty() && job.instances.is_empty());
    // each cluster said how many fit
    let text: Vec<String> = job.unschedulable.iter().map(|u| u.to_string()).collect();
    assert!(
        job.unschedulable.iter().filter(|u| u.fits == 2).count() == 2,
        "{text:?}"
    );
    assert_eq!(t.runtime.deploy_count(), 0);
}

#[tokio::test]
async fn a_part_whose_cluster_cannot_keep_it_moves_to_a_cluster_that_holds_none() {
    let t = clusters(&[("edge-a", 2, 1), ("edge-b", 2, 1), ("edge-c", 2, 1)]).await;
    let mut spec = job("web", 1000);
    spec.replicas = 3;
    let id = t.root.submit(spec).await.unwrap().id.to_string();
    wait_state(&t.root, &id, JobState::Running).await;
    // edge-b's only worker goes: edge-b cannot replace its replica and says so
    assert!(t.hubs[1].cut("edge-b-worker-1"));
    wait_job(&t.root, &id, |job| {
        let on: Vec<(&str, u32)> = job
            .parts
            .iter()
            .map(|p| (p.cluster.as_str(), p.replicas))
            .collect();
        job.state == JobState::Running && on == [("edge-a", 2), ("edge-c", 1)]
    })
    .await;
    let job = t.root.job(&id).await.unwrap();
    let mut on = running_clusters(&job);
    on.sort();
    assert_eq!(on, ["edge-a", "edge-a", "edge-c"]);
    let left: Vec<(&str, InstanceState)> = job
        .instances
        .iter()
        .filter(|i| i.state != InstanceState::Running)
        .map(|i| (i.cluster.as_deref().unwrap_or("-"), i.state))
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].0, "edge-b");
    assert!(
        matches!(left[0].1, InstanceState::Lost | InstanceState::Terminated),
        "{left:?}"
    );
    let reasons: Vec<&str> = job.history.iter().map(|h| h.reason.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("escalated by cluster edge-b")),
        "{reasons:?}"
    );
}

// A cluster engine answering a root's deploys directly (the test plays the root): the
// instance prefix a spread job's part carries is checked, and a cluster that can take only
// some replicas says how many.

/// A cluster `edge` with one registered node of two cores (its channel never opens: the
/// cluster knows it from registration, which is all placement needs), and the root's end.
async fn lone_cluster() -> (Arc<dyn ParentTransport>, tokio::task::JoinHandle<()>) {
    let reliable = reliable();
    let hub = MemoryHub::new();
    let root: Arc<dyn ParentTransport> = Arc::new(hub.parent());
    let up = Arc::new(ReliableChild::new(
        Arc::new(hub.connect("edge").await.unwrap()),
        reliable.clone(),
    ));
    let engine = ClusterEngine::new(
        ClusterConfig {
            id: "edge".into(),
            channel: ChannelSettings {
                kind: ChannelKind::Ws,
                broker: None,
                topics: None,
                status_interval_ms: 100,
                max_message_bytes: 1 << 20,
            },
            missed_heartbeats: 100,
            aggregate_interval: Duration::from_secs(60),
            location: None,
            labels: Default::default(),
            grace: Duration::from_secs(1),
            reliable,
        },
        Arc::new(MemoryStore::new()),
        Arc::new(SimpleScheduler),
    )
    .await
    .unwrap();
    engine
        .registrar()
        .register(RegisterRequest {
            role: PeerRole::Node,
            name: "n1".into(),
            previous_id: None,
            capabilities: Some(capabilities(2)),
            location: None,
            labels: Default::default(),
            auth: None,
        })
        .await
        .unwrap();
    let nodes = Arc::new(MemoryHub::new().parent());
    let task = tokio::spawn(async move {
        let _ = engine.run(nodes, up, std::future::pending()).await;
    });
    (root, task)
}

/// Sends a deploy of `replicas` one-core replicas with `prefix`, and returns the answer.
async fn deploy_to_edge(
    root: &dyn ParentTransport,
    replicas: u32,
    prefix: Option<&str>,
) -> Message {
    let mut spec = JobSpec::minimal(
        "web",
        "fake:run",
        "native",
        Resources {
            cpu_millis: 1000,
            ..Resources::ZERO
        },
    );
    spec.replicas = replicas;
    let command = Envelope::new(
        "root",
        Message::Deploy(Box::new(Deploy {
            job: JobId::new("web-1").unwrap(),
            spec,
            instance: None,
            first_instance: 0,
            instance_prefix: prefix.map(str::to_string),
            seq: 0,
        })),
    );
    root.send("edge", &command).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let ParentEvent::Message { envelope, .. } = root.recv().await.unwrap() {
                match &envelope.body {
                    Message::Ack(a) if a.re == command.id => return envelope.body,
                    Message::Nack(n) if n.re == command.id => return envelope.body,
                    _ => {}
                }
            }
        }
    })
    .await
    .expect("an answer within the deadline")
}

fn nack(answer: Message) -> Nack {
    match answer {
        Message::Nack(n) => n,
        other => panic!("expected a nack, got {other:?}"),
    }
}

#[tokio::test]
async fn a_part_prefix_that_is_not_the_jobs_is_refused_naming_the_field() {
    let (root, task) = lone_cluster().await;
    let long = format!("web-1.{}", "x".repeat(200));
    for bad in [
        "other.edge",
        "web-1",
        "web-1.",
        "web-1.a/b",
        "web-10.edge",
        long.as_str(),
    ] {
        let n = nack(deploy_to_edge(root.as_ref(), 1, Some(bad)).await);
        assert_eq!(n.error.code, "invalid", "{bad}: {n:?}");
        assert!(
            n.error.message.contains("instance_prefix"),
            "{}",
            n.error.message
        );
    }
    // a good one is taken
    let answer = deploy_to_edge(root.as_ref(), 1, Some("web-1.edge")).await;
    assert!(matches!(answer, Message::Ack(_)), "{answer:?}");
    task.abort();
}

#[tokio::test]
async fn a_cluster_that_fits_some_replicas_says_how_many() {
    let (root, task) = lone_cluster().await;
    let n = nack(deploy_to_edge(root.as_ref(), 5, None).await);
    assert_eq!(n.error.code, "unschedulable");
    assert!(
        n.error.message.contains("5 replicas asked, 2 fit"),
        "{}",
        n.error.message
    );
    assert_eq!(n.unschedulable.expect("an explanation").fits, 2);
    task.abort();
}
