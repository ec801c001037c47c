//! A cluster engine answering a root's deploys directly (the test plays the root over the
//! in-memory transport): the instance prefix a spread job's part carries is checked, and a
//! cluster that can take only some replicas says how many.
#![cfg(feature = "testing")]

use edgeio_core::engine::cluster::{ClusterConfig, ClusterEngine};
use edgeio_core::job::JobSpec;
use edgeio_core::model::{Arch, Capabilities, JobId, Resources, RuntimeInfo};
use edgeio_core::reliable::{ReliableChild, ReliableConfig};
use edgeio_core::testing::{MemoryHub, MemoryStore, SimpleScheduler};
use edgeio_core::transport::{ParentEvent, ParentTransport, Registrar};
use edgeio_core::wire::{
    ChannelKind, ChannelSettings, Deploy, Envelope, Message, Nack, PeerRole, RegisterRequest,
};
use std::sync::Arc;
use std::time::Duration;

/// A cluster `edge` with one registered node of two cores (its channel never opens: the
/// cluster knows it from registration, which is all placement needs), and the root's end.
async fn cluster() -> (Arc<dyn ParentTransport>, tokio::task::JoinHandle<()>) {
    let reliable = ReliableConfig {
        resend_initial: Duration::from_millis(50),
        ..ReliableConfig::default()
    };
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
async fn deploy(root: &dyn ParentTransport, replicas: u32, prefix: Option<&str>) -> Message {
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
    let (root, task) = cluster().await;
    let long = format!("web-1.{}", "x".repeat(200));
    for bad in [
        "other.edge",
        "web-1",
        "web-1.",
        "web-1.a/b",
        "web-10.edge",
        long.as_str(),
    ] {
        let n = nack(deploy(root.as_ref(), 1, Some(bad)).await);
        assert_eq!(n.error.code, "invalid", "{bad}: {n:?}");
        assert!(
            n.error.message.contains("instance_prefix"),
            "{}",
            n.error.message
        );
    }
    // a good one is taken
    let answer = deploy(root.as_ref(), 1, Some("web-1.edge")).await;
    assert!(matches!(answer, Message::Ack(_)), "{answer:?}");
    task.abort();
}

#[tokio::test]
async fn a_cluster_that_fits_some_replicas_says_how_many() {
    let (root, task) = cluster().await;
    let n = nack(deploy(root.as_ref(), 5, None).await);
    assert_eq!(n.error.code, "unschedulable");
    assert!(
        n.error.message.contains("5 replicas asked, 2 fit"),
        "{}",
        n.error.message
    );
    assert_eq!(n.unschedulable.expect("an explanation").fits, 2);
    task.abort();
}
