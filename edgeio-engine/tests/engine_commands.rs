//! Every command an engine sends ends with that engine, and gives up after a bounded time
//! into an outcome the engine handles, never taken for a refusal: the root against a scripted
//! cluster, and a cluster against a scripted root and node (raw in-memory links that answer
//! only what the test tells them to, so every copy of a command is seen).
#![cfg(feature = "testing")]

use edgeio_core::api::RootApi;
use edgeio_core::job::JobSpec;
use edgeio_core::model::{Arch, InstanceId, Resources};
use edgeio_core::reliable::ReliableConfig;
use edgeio_core::state::{InstanceState, JobState};
use edgeio_core::testing::{MemoryChild, MemoryHub, MemoryStore, SimpleScheduler};
use edgeio_core::transport::{ChildTransport, Registrar};
use edgeio_core::wire::{
    ClusterAggregate, Envelope, InstanceEvent, LabelSummary, Message, NodeFilter, PeerRole, Query,
    RegisterRequest,
};
use edgeio_engine::root::{RootConfig, RootEngine, RootHandle};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

const DEADLINE: Duration = Duration::from_secs(10);

fn reliable(give_up_after: Option<Duration>) -> ReliableConfig {
    ReliableConfig {
        resend_initial: Duration::from_millis(50),
        resend_max: Duration::from_millis(200),
        give_up_after,
        ..ReliableConfig::default()
    }
}

struct Root {
    handle: RootHandle,
    stop: Option<oneshot::Sender<()>>,
    run: tokio::task::JoinHandle<()>,
    /// The scripted cluster `edge`.
    edge: MemoryChild,
}

/// A root whose only cluster is `edge`, scripted by the test; `edge` has told the root it
/// has one ready node of four cores.
async fn root(give_up_after: Option<Duration>) -> Root {
    let engine = RootEngine::new(
        RootConfig {
            aggregate_interval: Duration::from_secs(60),
            reliable: reliable(give_up_after),
            ..RootConfig::default()
        },
        Arc::new(MemoryStore::new()),
        Arc::new(SimpleScheduler),
    )
    .await
    .unwrap();
    let handle = engine.handle();
    let hub = MemoryHub::new();
    let down = Arc::new(hub.parent());
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        let ended = engine
            .run(down, async {
                // a dropped sender stops the engine too
                let _ = stopped.await;
            })
            .await;
        assert!(ended.is_ok(), "the root ended with {ended:?}");
    });
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
    let edge = hub.connect(&reply.id).await.unwrap();
    // a registered cluster whose link comes up is asked what it keeps: nothing yet
    let sync = next(&edge, "the re-sync on linking").await;
    assert!(
        matches!(sync.body, Message::Query(Query::Jobs)),
        "expected the re-sync query, got {sync:?}"
    );
    edge.send(&sync.reply("edge", Ok(serde_json::json!([]))))
        .await
        .unwrap();
    let four_cores = Resources {
        cpu_millis: 4000,
        memory_bytes: 4 << 30,
        ..Resources::ZERO
    };
    edge.send(&Envelope::new(
        "edge",
        Message::ClusterAggregate(ClusterAggregate {
            nodes: 1,
            ready_nodes: 1,
            total: four_cores,
            free: four_cores,
            largest_free: four_cores,
            architectures: vec![Arch::Amd64],
            runtimes: vec!["native".into()],
            labels: Default::default(),
            location: None,
            node_label_summary: Some(LabelSummary::default()),
            node_filter: Some(NodeFilter::of(["n1"].into_iter())),
            deploys_seen: None,
        }),
    ))
    .await
    .unwrap();
    let root = Root {
        handle,
        stop: Some(stop),
        run,
        edge,
    };
    within("the aggregate", async {
        while root.handle.clusters().await.unwrap()[0].aggregate.is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    root
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
}

/// The next message the scripted cluster receives.
async fn next(edge: &MemoryChild, what: &str) -> Envelope {
    within(what, edge.recv()).await.unwrap()
}

fn job() -> JobSpec {
    JobSpec::minimal(
        "web",
        "fake:run",
        "native",
        Resources {
            cpu_millis: 1000,
            ..Resources::ZERO
        },
    )
}

#[tokio::test]
async fn commands_pending_when_the_engine_stops_are_not_sent_again() {
    let mut root = root(None).await;
    root.handle.submit(job()).await.unwrap();
    // unanswered, the deploy is re-sent…
    let first = next(&root.edge, "the deploy").await;
    assert_eq!(first.kind(), "deploy");
    let again = next(&root.edge, "a re-sent deploy").await;
    assert_eq!(again.id, first.id);

    // …until the engine stops: its commands end with it
    root.stop.take().map(|stop| stop.send(()));
    within("the engine's end", &mut root.run).await.unwrap();
    let mut after = Vec::new();
    // longer than the longest wait between two re-sends
    let quiet = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match root.edge.recv().await {
                Ok(envelope) => after.push(envelope),
                Err(e) => return e,
            }
        }
    })
    .await;
    let deploys: Vec<&Envelope> = after.iter().filter(|e| e.kind() == "deploy").collect();
    assert!(
        deploys.is_empty(),
        "{} deploy(s) sent after the engine stopped (link: {quiet:?})",
        deploys.len()
    );
}

#[tokio::test]
async fn a_deploy_never_answered_gives_up_into_a_re_sync_not_a_refusal() {
    let root = root(Some(Duration::from_millis(500))).await;
    let view = root.handle.submit(job()).await.unwrap();
    let id = view.id.to_string();

    // the cluster is alive but answers nothing: after the give-up the root asks what it
    // keeps instead of taking the silence for a refusal
    let first = next(&root.edge, "the deploy").await;
    assert_eq!(first.kind(), "deploy");
    let query = loop {
        let envelope = next(&root.edge, "the re-sync query").await;
        match &envelope.body {
            Message::Deploy(_) => assert_eq!(envelope.id, first.id, "re-sends keep the id"),
            Message::Query(Query::Jobs) => break envelope,
            other => panic!("unexpected {other:?}"),
        }
    };
    // it keeps nothing (the deploy was lost on the way): the root sends it again, anew
    root.edge
        .send(&query.reply("edge", Ok(serde_json::json!([]))))
        .await
        .unwrap();
    let second = loop {
        let envelope = next(&root.edge, "the deploy sent again").await;
        if envelope.kind() == "deploy" && envelope.id != first.id {
            break envelope;
        }
    };
    match (&first.body, &second.body) {
        (Message::Deploy(a), Message::Deploy(b)) => assert_eq!(a.job, b.job),
        other => panic!("expected two deploys, got {other:?}"),
    }
    root.edge.send(&second.ack("edge")).await.unwrap();

    let job = root.handle.job(&id).await.unwrap();
    let states: Vec<JobState> = job.history.iter().map(|h| h.state).collect();
    assert_eq!(
        states,
        [JobState::Requested, JobState::ScheduledCluster],
        "never given back nor refused: {job:#?}"
    );
    assert_eq!(job.cluster.as_deref(), Some("edge"));
}

#[tokio::test]
async fn a_slow_cluster_that_took_the_deploy_is_followed_after_the_give_up_and_not_asked_again() {
    let root = root(Some(Duration::from_millis(500))).await;
    let view = root.handle.submit(job()).await.unwrap();
    let id = view.id.to_string();
    let first = next(&root.edge, "the deploy").await;
    let query = loop {
        let envelope = next(&root.edge, "the re-sync query").await;
        if matches!(envelope.body, Message::Query(Query::Jobs)) {
            break envelope;
        }
    };
    // slow, not dead: it did take the deploy, and its instance runs
    let running = InstanceEvent {
        job: view.id.clone(),
        instance: InstanceId::new(format!("{id}-0")).unwrap(),
        node: "n1".into(),
        state: InstanceState::Running,
        exit_code: None,
        reason: "started".into(),
        unschedulable: None,
    };
    root.edge
        .send(&query.reply("edge", Ok(serde_json::to_value(vec![running]).unwrap())))
        .await
        .unwrap();
    within("RUNNING", async {
        while root.handle.job(&id).await.unwrap().state != JobState::Running {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // and it is not deployed again, here or anywhere
    let later = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let envelope = root.edge.recv().await.unwrap();
            if envelope.kind() == "deploy" && envelope.id != first.id {
                return envelope;
            }
        }
    })
    .await;
    assert!(later.is_err(), "deployed again: {later:?}");
    let job = root.handle.job(&id).await.unwrap();
    assert_eq!(job.instances.len(), 1, "{job:#?}");
}

#[tokio::test]
async fn a_deploy_a_node_never_answers_is_sent_again_not_failed_after_the_give_up() {
    use edgeio_core::model::{Capabilities, JobId, RuntimeInfo};
    use edgeio_core::transport::{ParentEvent, ParentTransport};
    use edgeio_core::wire::{ChannelKind, ChannelSettings, Deploy};
    use edgeio_engine::cluster::{ClusterConfig, ClusterEngine};

    // the cluster `edge` between a scripted root and a scripted node `n1`
    let root_hub = MemoryHub::new();
    let root = root_hub.parent();
    let up = Arc::new(edgeio_core::reliable::ReliableChild::new(
        Arc::new(root_hub.connect("edge").await.unwrap()),
        reliable(None),
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
            reliable: reliable(Some(Duration::from_millis(500))),
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
            capabilities: Some(Capabilities {
                arch: Arch::Amd64,
                cores: 2,
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
    let node_hub = MemoryHub::new();
    let nodes = Arc::new(node_hub.parent());
    let n1 = node_hub.connect("n1").await.unwrap();
    let task = tokio::spawn(async move {
        let _ = engine.run(nodes, up, std::future::pending()).await;
    });

    let command = Envelope::new(
        "root",
        Message::Deploy(Box::new(Deploy {
            job: JobId::new("web-1").unwrap(),
            spec: job(),
            instance: None,
            first_instance: 0,
            instance_prefix: None,
            seq: 0,
        })),
    );
    root.send("edge", &command).await.unwrap();
    let first = next(&n1, "the deploy to the node").await;
    assert_eq!(first.kind(), "deploy");
    // the node is slow: after the give-up the same instance is asked for again, anew
    let second = loop {
        let envelope = next(&n1, "the deploy sent again").await;
        if envelope.kind() == "deploy" && envelope.id != first.id {
            break envelope;
        }
    };
    match (&first.body, &second.body) {
        (Message::Deploy(a), Message::Deploy(b)) => assert_eq!(
            a.instance.as_ref().map(|i| &i.id),
            b.instance.as_ref().map(|i| &i.id),
            "the same instance"
        ),
        other => panic!("expected two deploys, got {other:?}"),
    }
    // and the root never hears of a failure
    let mut up_events = Vec::new();
    let drained = tokio::time::timeout(Duration::from_millis(300), async {
        while let Ok(event) = root.recv().await {
            up_events.push(event);
        }
    })
    .await;
    assert!(drained.is_err(), "the cluster's link to the root closed");
    let failed = up_events.iter().any(|e| {
        matches!(e, ParentEvent::Message { envelope, .. }
            if matches!(&envelope.body, Message::InstanceEvent(ev) if ev.state == InstanceState::Failed))
    });
    assert!(!failed, "the instance was failed: {up_events:#?}");
    task.abort();
}
