//! The worker engine's loop against the in-memory transport and the fake runtime.
#![cfg(feature = "testing")]

use edgeio_core::job::{InstanceSpec, JobSpec};
use edgeio_core::model::{InstanceId, JobId, Resources};
use edgeio_core::reliable::{CommandOutcome, ReliableChild, ReliableConfig, ReliableParent};
use edgeio_core::runtime::Runtime;
use edgeio_core::state::InstanceState;
use edgeio_core::testing::{FakeRuntime, MemoryHub};
use edgeio_core::transport::{ParentEvent, ParentTransport};
use edgeio_core::wire::{Deploy, Envelope, InstanceEvent, Message, NodeStatus, Terminate};
use edgeio_engine::worker::{Worker, WorkerConfig};
use std::sync::Arc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

fn config() -> WorkerConfig {
    WorkerConfig {
        node_id: "node-1".into(),
        status_interval: Duration::from_millis(200),
        grace: Duration::from_secs(1),
        total: Resources {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            ..Resources::ZERO
        },
    }
}

fn deploy(id: &str) -> (InstanceSpec, Envelope) {
    let job = JobSpec::minimal(
        "web",
        "fake:run",
        "native",
        Resources {
            cpu_millis: 1000,
            ..Resources::ZERO
        },
    );
    let spec = InstanceSpec::for_job(
        InstanceId::new(id).unwrap(),
        JobId::new("web").unwrap(),
        &job,
    );
    let body = Message::Deploy(Box::new(Deploy {
        job: spec.job.clone(),
        spec: job,
        instance: Some(spec.clone()),
        first_instance: 0,
        instance_prefix: None,
        seq: 0,
    }));
    (spec, Envelope::new("cluster", body))
}

/// Receives parent events until `pick` returns something, answering nothing else.
async fn next<T>(parent: &ReliableParent, mut pick: impl FnMut(&Message) -> Option<T>) -> T {
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let ParentEvent::Message { envelope, .. } = parent.recv().await.expect("link up") {
                if let Some(found) = pick(&envelope.body) {
                    return found;
                }
            }
        }
    })
    .await
    .expect("the expected message within 10 s")
}

fn event(m: &Message) -> Option<InstanceEvent> {
    match m {
        Message::InstanceEvent(e) => Some(e.clone()),
        _ => None,
    }
}

fn status(m: &Message) -> Option<NodeStatus> {
    match m {
        Message::NodeStatus(s) => Some(s.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn a_worker_runs_commands_reports_changes_at_once_and_sends_status() {
    let hub = MemoryHub::new();
    let parent = ReliableParent::new(Arc::new(hub.parent()), ReliableConfig::default());
    let child = Arc::new(ReliableChild::new(
        Arc::new(hub.connect("node-1").await.unwrap()),
        ReliableConfig::default(),
    ));
    let fake = FakeRuntime::new();
    let runtime: Arc<dyn Runtime> = Arc::new(fake.clone());
    let worker = Worker::new(config(), child, vec![runtime]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));

    // deploy: acked, then RUNNING arrives as an event; the command is driven by a recv loop
    let (spec, envelope) = deploy("web-0");
    let parent2 = parent.clone();
    let command = tokio::spawn(async move { parent2.command("node-1", envelope).await });
    let running = next(&parent, |m| {
        event(m).filter(|e| e.state == InstanceState::Running)
    })
    .await;
    assert_eq!(running.instance, spec.id);
    let outcome = tokio::time::timeout(DEADLINE, async {
        loop {
            if command.is_finished() {
                return command.await.unwrap();
            }
            // keep receiving so the ack is consumed by the reliable layer
            let _ = tokio::time::timeout(Duration::from_millis(50), parent.recv()).await;
        }
    })
    .await
    .expect("acked within 10 s");
    assert!(matches!(outcome, Ok(CommandOutcome::Acked)), "{outcome:?}");

    // status names the instance and reserves its CPU
    let report = next(&parent, |m| status(m).filter(|s| !s.instances.is_empty())).await;
    assert_eq!(report.free.cpu_millis, 3000);
    assert_eq!(report.instances[0].state, InstanceState::Running);

    // the same deploy again (a new request id) starts nothing
    let (_, again) = deploy("web-0");
    hub.parent().send("node-1", &again).await.unwrap();
    next(&parent, |m| {
        matches!(m, Message::Ack(a) if a.re == again.id).then_some(())
    })
    .await;
    assert_eq!(fake.deploy_count(), 1);

    // an exit is reported at once, with its code
    fake.exit(&spec.id, 3).unwrap();
    let exited = next(&parent, |m| {
        event(m).filter(|e| e.state == InstanceState::Exited)
    })
    .await;
    assert_eq!(exited.exit_code, Some(3));

    // terminate: TERMINATING, then TERMINATED, and the instance is gone from status
    let term = Envelope::new(
        "cluster",
        Message::Terminate(Terminate {
            job: spec.job.clone(),
            instance: None,
            grace_ms: 100,
        }),
    );
    hub.parent().send("node-1", &term).await.unwrap();
    next(&parent, |m| {
        event(m).filter(|e| e.state == InstanceState::Terminating)
    })
    .await;
    next(&parent, |m| {
        event(m).filter(|e| e.state == InstanceState::Terminated)
    })
    .await;
    next(&parent, |m| status(m).filter(|s| s.instances.is_empty())).await;

    let _ = stop.send(());
    tokio::time::timeout(DEADLINE, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_deploy_that_cannot_start_is_nacked_and_reported_failed() {
    let hub = MemoryHub::new();
    let parent = ReliableParent::new(Arc::new(hub.parent()), ReliableConfig::default());
    let child = Arc::new(hub.connect("node-1").await.unwrap());
    let fake = FakeRuntime::new();
    let worker = Worker::new(
        config(),
        child,
        vec![Arc::new(fake.clone()) as Arc<dyn Runtime>],
    );
    let task = tokio::spawn(worker.run(std::future::pending()));
    let (mut spec, _) = deploy("bad-0");
    spec.image = "fake:fail".into();
    let body = Message::Deploy(Box::new(Deploy {
        job: spec.job.clone(),
        spec: JobSpec::minimal("web", "fake:fail", "native", Resources::ZERO),
        instance: Some(spec.clone()),
        first_instance: 0,
        instance_prefix: None,
        seq: 0,
    }));
    let envelope = Envelope::new("cluster", body);
    hub.parent().send("node-1", &envelope).await.unwrap();
    let failed = next(&parent, |m| {
        event(m).filter(|e| e.state == InstanceState::Failed)
    })
    .await;
    assert!(failed.reason.contains("cannot start"), "{}", failed.reason);
    let nack = next(&parent, |m| match m {
        Message::Nack(n) if n.re == envelope.id => Some(n.error.clone()),
        _ => None,
    })
    .await;
    assert_eq!(nack.code, "deploy_failed");
    task.abort();
}

#[tokio::test]
async fn a_restarted_worker_adopts_what_still_runs_instead_of_starting_it_again() {
    let fake = FakeRuntime::new();
    let (spec, envelope) = deploy("web-0");
    fake.deploy(&spec).await.unwrap();
    let hub = MemoryHub::new();
    let parent = ReliableParent::new(Arc::new(hub.parent()), ReliableConfig::default());
    let child = Arc::new(hub.connect("node-1").await.unwrap());
    let mut worker = Worker::new(
        config(),
        child,
        vec![Arc::new(fake.clone()) as Arc<dyn Runtime>],
    );
    assert_eq!(worker.adopt().await, 1);
    assert_eq!(worker.instances()[&spec.id].state, InstanceState::Running);
    let task = tokio::spawn(worker.run(std::future::pending()));
    hub.parent().send("node-1", &envelope).await.unwrap();
    next(&parent, |m| {
        matches!(m, Message::Ack(a) if a.re == envelope.id).then_some(())
    })
    .await;
    assert_eq!(fake.deploy_count(), 1, "adopted, not started twice");
    task.abort();
}

#[tokio::test]
async fn an_exited_instance_restarts_on_its_node_until_the_limit_then_fails() {
    let hub = MemoryHub::new();
    let parent = ReliableParent::new(Arc::new(hub.parent()), ReliableConfig::default());
    let child = Arc::new(ReliableChild::new(
        Arc::new(hub.connect("node-1").await.unwrap()),
        ReliableConfig::default(),
    ));
    let fake = FakeRuntime::new();
    let runtime: Arc<dyn Runtime> = Arc::new(fake.clone());
    let worker = Worker::new(config(), child, vec![runtime]);
    let task = tokio::spawn(worker.run(std::future::pending()));

    let (spec, envelope) = deploy("web-0");
    let Message::Deploy(mut body) = envelope.body else {
        unreachable!("deploy() builds a deploy")
    };
    body.spec.restart = edgeio_core::job::RestartPolicy {
        policy: edgeio_core::job::RestartKind::OnFailure,
        limit: 1,
        backoff_ms: 10,
    };
    let envelope = Envelope::new("cluster", Message::Deploy(body));
    hub.parent().send("node-1", &envelope).await.unwrap();
    next(&parent, |m| {
        event(m).filter(|e| e.state == InstanceState::Running)
    })
    .await;

    // first failure: EXITED, RESTARTING, then it runs again on this node
    fake.exit(&spec.id, 2).unwrap();
    let restarting = next(&parent, |m| {
        event(m).filter(|e| e.state == InstanceState::Restarting)
    })
    .await;
    assert!(
        restarting.reason.contains("restart 1 of 1"),
        "{restarting:?}"
    );
    next(&parent, |m| {
        event(m).filter(|e| e.state == InstanceState::Running)
    })
    .await;
    assert_eq!(fake.deploy_count(), 2);

    // second failure: past the limit, FAILED with the reason (the cluster relocates it)
    fake.exit(&spec.id, 2).unwrap();
    let failed = next(&parent, |m| {
        event(m).filter(|e| e.state == InstanceState::Failed)
    })
    .await;
    assert!(
        failed.reason.contains("restart limit 1 reached"),
        "{failed:?}"
    );
    assert_eq!(failed.exit_code, Some(2));
    next(&parent, |m| status(m).filter(|s| s.instances.is_empty())).await;
    assert_eq!(fake.deploy_count(), 2);
    task.abort();
}
