//! `deploy_measure`: deploys native jobs one after another through a root, a cluster with its
//! embedded broker and a worker (real WebSocket, MQTT and processes on loopback, one process
//! here) and prints p50/p99 from `POST` to RUNNING with a breakdown, beside the raw cost of the
//! same parts measured in the same run: a WebSocket round trip, an MQTT round trip through the
//! broker, one durable store write (times the writes the path makes) and one fork/exec.
//!
//! ```text
//! cargo run --release --example deploy_measure --features roles            # 200 jobs
//! EDGEIO_BENCH_JOBS=50 cargo run --release --example deploy_measure --features roles
//! # the cluster on an external broker instead of the embedded one:
//! EDGEIO_BENCH_BROKER=mqtt://127.0.0.1:1883 cargo run --release --example deploy_measure --features roles
//! ```
//!
//! Times of the breakdown come from the job's own history (milliseconds, the root's clock):
//! `api` is the `POST` round trip seen by the client; `root` REQUESTED → SCHEDULED_CLUSTER
//! (root scheduling and its store write); `cluster` SCHEDULED_CLUSTER → SCHEDULED_NODE (the
//! deploy down the WebSocket, cluster scheduling and write, the event back up); `node`
//! SCHEDULED_NODE → RUNNING (the deploy over MQTT, the process start, events up).
//!
//! The deployment measured is secure (TLS on every link, the admin token, MQTT logins); the
//! same run first measures one started `--insecure`, and prints both, for the cost of
//! security.

use edgeio::roles::{
    start_cluster, start_root, start_worker, ClusterOptions, Kvm, RootOptions, RootStore, Running,
    WorkerOptions,
};
use edgeio::state::JobState;
use edgeio::store::Store;
use edgeio::transport::{ChildTransport, ParentEvent, ParentTransport};
use edgeio::transport_mqtt::{
    BrokerConfig, ChildConfig, EmbeddedBroker, MqttChild, MqttParent, ParentConfig,
};
use edgeio::transport_ws::{register, serve, RootClient, WsClientConfig, WsParent, WsServerConfig};
use edgeio::wire::{
    ChannelKind, ChannelSettings, Envelope, ErrorBody, Message, NodeStatus, PeerRole,
    RegisterReply, RegisterRequest, DEFAULT_MAX_MESSAGE_BYTES,
};
use edgeio_scheduler::PolicyKind;
use edgeio_store::embedded::{EmbeddedOptions, EmbeddedStore};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/stats.rs"]
mod stats;

#[path = "support/secure.rs"]
mod secure;

use stats::summary;

struct Names;

#[async_trait::async_trait]
impl edgeio::transport::Registrar for Names {
    async fn register(&self, r: RegisterRequest) -> Result<RegisterReply, ErrorBody> {
        Ok(RegisterReply {
            id: r.name,
            channel: ChannelSettings {
                kind: ChannelKind::Ws,
                broker: None,
                topics: None,
                status_interval_ms: 1000,
                max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            },
            credentials: None,
        })
    }
}

fn ping() -> Message {
    Message::NodeStatus(NodeStatus {
        free: Default::default(),
        total: Default::default(),
        instances: Vec::new(),
        usage: None,
    })
}

/// Round trips parent → child → parent over the WebSocket transport, in ms.
async fn ws_round_trips(n: usize) -> Vec<f64> {
    let parent = WsParent::new("p", Arc::new(Names), WsServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = serve(listener, parent.router()).expect("serve");
    let request = RegisterRequest {
        role: PeerRole::Node,
        name: "c".into(),
        previous_id: None,
        capabilities: None,
        location: None,
        labels: Default::default(),
        auth: None,
    };
    let reg = register(
        &server.url(),
        PeerRole::Node,
        request,
        WsClientConfig::default(),
    )
    .await
    .expect("register");
    let child = reg.channel.expect("ws channel");
    let _ = parent.recv().await;
    let mut out = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        parent
            .send("c", &Envelope::new("p", ping()))
            .await
            .expect("send");
        let e = child.recv().await.expect("recv");
        child.send(&e).await.expect("echo");
        loop {
            if let ParentEvent::Message { .. } = parent.recv().await.expect("recv") {
                break;
            }
        }
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = child.close().await;
    let _ = server.shutdown().await;
    out
}

/// Round trips parent → broker → child → broker → parent over MQTT, in ms.
async fn mqtt_round_trips(n: usize, external: Option<String>) -> Vec<f64> {
    let url = match external {
        Some(url) => url,
        None => EmbeddedBroker::start(BrokerConfig::default())
            .expect("broker")
            .url(),
    };
    let parent = MqttParent::connect(ParentConfig::new("bench-cluster", url.clone()))
        .await
        .expect("parent");
    let child = MqttChild::connect(
        ChildConfig::new("bench-node", url),
        Envelope::new("bench-node", ping()),
    )
    .await
    .expect("child");
    // the child's announcement
    while !matches!(parent.recv().await, Ok(ParentEvent::Message { .. })) {}
    let mut out = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let scale = Message::Scale(edgeio::wire::Scale {
            job: "x".parse().expect("id"),
            replicas: 1,
        });
        parent
            .send("bench-node", &Envelope::new("bench-cluster", scale))
            .await
            .expect("send");
        let e = child.recv().await.expect("recv");
        child.send(&e.ack("bench-node")).await.expect("answer");
        loop {
            if let ParentEvent::Message { .. } = parent.recv().await.expect("recv") {
                break;
            }
        }
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = child.close().await;
    out
}

/// Durable writes to the embedded store, in ms each.
async fn store_writes(dir: &std::path::Path, n: usize) -> Vec<f64> {
    let store = EmbeddedStore::open(dir.join("raw.redb"), EmbeddedOptions::default())
        .await
        .expect("store");
    let value = bytes::Bytes::from(vec![b'x'; 2048]);
    let mut out = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        store
            .put(&format!("jobs/{i}"), value.clone())
            .await
            .expect("put");
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    out
}

/// fork/exec/wait of `/bin/true`, in ms.
fn fork_execs(n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let _ = std::process::Command::new("/bin/true").status();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

async fn revision_of(path: std::path::PathBuf) -> u64 {
    match EmbeddedStore::open(path, EmbeddedOptions::default()).await {
        Ok(store) => store.revision().await.unwrap_or(0),
        Err(_) => 0,
    }
}

/// A root, cluster and worker in this process under `dir`, secure (TLS, join tokens, the
/// admin token) or `--insecure`; answers them and a client of the root once a worker is
/// READY.
async fn deployment(
    dir: &Path,
    secure: bool,
    external: Option<String>,
) -> (Running, Running, Running, RootClient) {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    let root = start_root(RootOptions {
        listen: any,
        data: dir.join("root"),
        scheduler: PolicyKind::LeastLoaded,
        aggregate_interval: Duration::from_millis(200),
        missed_aggregates: 3,
        cluster_timeout: Duration::from_secs(30),
        store: RootStore::Embedded,
        advertise: None,
        insecure: !secure,
        tls_san: Vec::new(),
    })
    .await
    .expect("root");
    let cluster = start_cluster(ClusterOptions {
        root: root.url.clone(),
        listen: any,
        mqtt_listen: any,
        broker: external,
        name: "bench".into(),
        location: None,
        labels: Default::default(),
        data: Some(dir.join("cluster")),
        scheduler: PolicyKind::LeastLoaded,
        status_interval: Duration::from_millis(500),
        missed_heartbeats: 20,
        join_token: None,
        join_token_file: secure.then(|| dir.join("root").join("join.token")),
        advertise: None,
        mqtt_advertise: None,
        tls_san: Vec::new(),
        insecure: !secure,
    })
    .await
    .expect("cluster");
    let worker = start_worker(WorkerOptions {
        cluster: cluster.url.clone(),
        name: Some("bench-worker".into()),
        labels: Default::default(),
        location: None,
        allow_native: vec!["/bin/sleep".into()],
        data: Some(dir.join("worker")),
        docker: false,
        mirage: false,
        allow_kernel: Vec::new(),
        kvm: Kvm::Auto,
        join_token: None,
        join_token_file: secure.then(|| dir.join("cluster").join("join.token")),
        insecure: !secure,
    })
    .await
    .expect("worker");
    let client = if secure {
        secure::admin_client(&dir.join("root"), port_of(&root.url)).expect("the admin's client")
    } else {
        RootClient::new(&root.url).expect("client")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client.clusters().await.ok().is_some_and(|c| {
            c.iter()
                .any(|c| c.aggregate.as_ref().is_some_and(|a| a.ready_nodes > 0))
        });
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the worker did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (root, cluster, worker, client)
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a URL ending in a port")
}

/// Milliseconds of each deploy: POST → RUNNING, the POST, and each tier's share.
#[derive(Default)]
struct Samples {
    total: Vec<f64>,
    api: Vec<f64>,
    at_root: Vec<f64>,
    at_cluster: Vec<f64>,
    at_node: Vec<f64>,
}

/// Deploys `jobs` native jobs one after another through `client`, each to RUNNING.
async fn deploy_all(client: &RootClient, jobs: usize, tag: &str) -> Samples {
    let mut samples = Samples::default();
    for i in 0..jobs {
        let body = format!(
            "api_version: v1\njob_name: {tag}-{i}\nimage: /bin/sleep\nimage_runtime: native\n\
             args: [\"600\"]\nrequirements:\n  cpu: 1m\n  memory: 1Mi\n"
        );
        let posted_ms = edgeio::wire::now_ms();
        let t = Instant::now();
        let view = client
            .submit(body.into_bytes(), "application/yaml")
            .await
            .expect("submit");
        samples.api.push(t.elapsed().as_secs_f64() * 1e3);
        let id = view.id.to_string();
        let done = loop {
            let job = client.job(&id).await.expect("job");
            if job.state == JobState::Running {
                break job;
            }
            assert!(
                !matches!(job.state, JobState::Failed | JobState::NotDeployable),
                "job {id}: {:?}",
                job.history
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        let at = |s: JobState| {
            done.history
                .iter()
                .find(|h| h.state == s)
                .map_or(0, |h| h.at_ms) as f64
        };
        samples.total.push(at(JobState::Running) - posted_ms as f64);
        samples
            .at_root
            .push(at(JobState::ScheduledCluster) - at(JobState::Requested));
        samples
            .at_cluster
            .push(at(JobState::ScheduledNode) - at(JobState::ScheduledCluster));
        samples
            .at_node
            .push(at(JobState::Running) - at(JobState::ScheduledNode));
    }
    samples
}

/// Terminates every job and stops the three tiers.
async fn tear_down(client: &RootClient, tiers: (Running, Running, Running)) {
    let ids: Vec<String> = client
        .jobs()
        .await
        .expect("jobs")
        .into_iter()
        .map(|j| j.id.to_string())
        .collect();
    for id in &ids {
        let _ = client.terminate(id).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (root, cluster, worker) = tiers;
    worker.stop(Duration::from_secs(5)).await;
    cluster.stop(Duration::from_secs(5)).await;
    root.stop(Duration::from_secs(5)).await;
}

#[tokio::main]
async fn main() {
    let jobs: usize = std::env::var("EDGEIO_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .clamp(1, 2000);
    let external = std::env::var("EDGEIO_BENCH_BROKER").ok();
    let dir = std::env::temp_dir().join(format!("edgeio-deploy-measure-{}", std::process::id()));
    // the same run measures a deployment started --insecure, for the cost of security
    let open_dir = dir.join("insecure");
    let (root, cluster, worker, client) = deployment(&open_dir, false, external.clone()).await;
    let insecure = deploy_all(&client, jobs, "open").await;
    tear_down(&client, (root, cluster, worker)).await;

    let (root, cluster, worker, client) = deployment(&dir, true, external.clone()).await;
    let Samples {
        total,
        api,
        at_root,
        at_cluster,
        at_node,
    } = deploy_all(&client, jobs, "bench").await;
    tear_down(&client, (root, cluster, worker)).await;
    let writes = revision_of(dir.join("root/root.redb")).await
        + revision_of(dir.join("cluster/cluster.redb")).await;
    // the terminations wrote too: count the deploy path's share only
    let writes_per_deploy = (writes as f64 / jobs as f64 / 2.0).max(1.0);

    let n = 200;
    let (ws, _) = summary(ws_round_trips(n).await);
    let (mqtt, _) = summary(mqtt_round_trips(n, external.clone()).await);
    let (write, _) = summary(store_writes(&dir, n).await);
    let (fork, _) = summary(fork_execs(n));
    let _ = std::fs::remove_dir_all(&dir);

    let raw = ws + mqtt + write * writes_per_deploy + fork;
    let (p50, p99) = summary(total);
    println!(
        "deploy latency, {jobs} native jobs one after another (ms; machine: {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| part | p50 | p99 |");
    println!("|---|---:|---:|");
    println!("| POST → RUNNING | {p50:.1} | {p99:.1} |");
    for (name, v) in [
        ("api (POST round trip)", api),
        (
            "root: schedule + write (REQUESTED → SCHEDULED_CLUSTER)",
            at_root,
        ),
        (
            "cluster: WS hop, schedule, write, event up (→ SCHEDULED_NODE)",
            at_cluster,
        ),
        (
            "node: MQTT hop, process start, events up (→ RUNNING)",
            at_node,
        ),
    ] {
        let (a, b) = summary(v);
        println!("| {name} | {a:.1} | {b:.1} |");
    }
    println!();
    println!("raw parts, same run (p50 of {n} each, ms)");
    println!("| part | p50 |");
    println!("|---|---:|");
    println!("| WebSocket round trip | {ws:.2} |");
    let broker = external.as_deref().unwrap_or("the embedded broker");
    println!("| MQTT round trip via {broker} | {mqtt:.2} |");
    println!("| durable store write (redb) × {writes_per_deploy:.1} writes per deploy | {write:.2} × {writes_per_deploy:.1} |");
    println!("| fork/exec/wait of /bin/true | {fork:.2} |");
    println!("| sum of raw parts | {raw:.1} |");
    println!();
    let (open50, open99) = summary(insecure.total);
    println!();
    println!("the cost of security, same run (POST → RUNNING, ms)");
    println!("| deployment | p50 | p99 |");
    println!("|---|---:|---:|");
    println!("| secure (TLS, tokens, MQTT logins) | {p50:.1} | {p99:.1} |");
    println!("| --insecure | {open50:.1} | {open99:.1} |");
    println!(
        "secure p50 = {:.2}× insecure (goals: ≤ 1.5×, ≤ 10 ms)",
        p50 / open50.max(f64::MIN_POSITIVE)
    );
    println!();
    println!(
        "p50 POST → RUNNING = {p50:.1} ms = {:.1}× the raw parts (goals: ≤ 20 ms, ≤ 3×)",
        p50 / raw
    );
}
