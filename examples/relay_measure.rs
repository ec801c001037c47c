//! `relay_measure`: what root replicas cost a deploy. First one root on its embedded store
//! with one cluster (`direct`: the root's engine writes to the WebSocket itself); then two
//! roots on one etcd (started here, on loopback) with two clusters: `near` links to the
//! leader, `far` to the standby. On etcd every cluster is reached through the store relay
//! (a put each way per message, plus a delete) and the engine's own records go to etcd.
//! Native jobs, each on one worker, are deployed one after another on each cluster in turn;
//! p50/p99 from `POST` to RUNNING is printed per cluster, beside the p50 of one durable etcd
//! put in the same run.
//!
//! ```text
//! cargo run --release --example relay_measure --features roles,testing   # 100 jobs each
//! EDGEIO_BENCH_JOBS=20 cargo run --release --example relay_measure --features roles,testing
//! ```
//!
//! Needs the `etcd` binary on the PATH (Debian: `etcd-server`).

use edgeio::roles::{
    start_cluster, start_root, start_worker, ClusterOptions, RootOptions, RootStore, Running,
    WorkerOptions,
};
use edgeio::state::JobState;
use edgeio::stores::testing::EtcdServer;
use edgeio::stores::StoreConfig;
use edgeio::transport_ws::RootClient;
use edgeio_scheduler::PolicyKind;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().expect("an address")
}

async fn root(dir: &Path, name: &str, store: &RootStore) -> Running {
    start_root(RootOptions {
        listen: any(),
        data: dir.join(name),
        scheduler: PolicyKind::FirstFit,
        aggregate_interval: Duration::from_millis(200),
        missed_aggregates: 3,
        cluster_timeout: Duration::from_secs(30),
        store: store.clone(),
        advertise: None,
    })
    .await
    .expect("a root")
}

/// A cluster named `name` linked to `root`, with one worker; both handles.
async fn cluster(dir: &Path, name: &str, root: &str) -> (Running, Running) {
    let cluster = start_cluster(ClusterOptions {
        root: root.to_string(),
        listen: any(),
        mqtt_listen: any(),
        broker: None,
        name: name.into(),
        location: None,
        labels: Default::default(),
        data: Some(dir.join(name)),
        scheduler: PolicyKind::LeastLoaded,
        status_interval: Duration::from_millis(500),
        missed_heartbeats: 20,
    })
    .await
    .expect("a cluster");
    let worker = start_worker(WorkerOptions {
        cluster: cluster.url.clone(),
        name: Some(format!("{name}-worker")),
        labels: Default::default(),
        location: None,
        allow_native: vec!["/bin/sleep".into()],
        data: Some(dir.join(format!("{name}-worker"))),
        docker: false,
    })
    .await
    .expect("a worker");
    (cluster, worker)
}

/// Deploys a job pinned to `cluster` and waits until it runs: ms from `POST` to RUNNING.
async fn deploy(client: &RootClient, cluster: &str, n: usize) -> f64 {
    let body = format!(
        "api_version: v1\njob_name: {cluster}-{n}\nimage: /bin/sleep\nimage_runtime: native\n\
         args: [\"600\"]\nrequirements:\n  cpu: 1m\n  memory: 1Mi\ncluster: {cluster}\n"
    );
    let t = Instant::now();
    let id = client
        .submit(body.into_bytes(), "application/yaml")
        .await
        .expect("submit")
        .id
        .to_string();
    loop {
        let job = client.job(&id).await.expect("job");
        if job.state == JobState::Running {
            return t.elapsed().as_secs_f64() * 1e3;
        }
        assert!(
            !matches!(job.state, JobState::Failed | JobState::NotDeployable),
            "job {id}: {:?}",
            job.history
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// Waits until `clusters` clusters report a READY node.
async fn wait_ready(client: &RootClient, clusters: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client.clusters().await.ok().is_some_and(|c| {
            c.iter()
                .filter(|c| c.aggregate.as_ref().is_some_and(|a| a.ready_nodes > 0))
                .count()
                == clusters
        });
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "the clusters did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Terminates every job, then stops the clusters with their workers and the roots.
async fn stop(client: &RootClient, clusters: Vec<(Running, Running)>, roots: Vec<Running>) {
    for job in client.jobs().await.expect("jobs") {
        let _ = client.terminate(job.id.as_str()).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (cluster, worker) in clusters {
        worker.stop(Duration::from_secs(5)).await;
        cluster.stop(Duration::from_secs(5)).await;
    }
    for root in roots {
        root.stop(Duration::from_secs(5)).await;
    }
}

#[tokio::main]
async fn main() {
    let jobs: usize = std::env::var("EDGEIO_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let etcd = EtcdServer::start().expect("etcd starts (is etcd-server installed?)");
    let dir = std::env::temp_dir().join(format!("edgeio-relay-measure-{}", std::process::id()));

    // one root, no relay
    let single = root(&dir, "root", &RootStore::Embedded).await;
    let client = RootClient::new(&single.url).expect("a client");
    let direct = cluster(&dir, "direct", &single.url).await;
    wait_ready(&client, 1).await;
    let mut at_direct = Vec::new();
    for n in 0..jobs {
        at_direct.push(deploy(&client, "direct", n).await);
    }
    stop(&client, vec![direct], vec![single]).await;

    // two roots on etcd
    let store = RootStore::Etcd {
        endpoints: vec![etcd.endpoint.clone()],
        prefix: "edgeio-bench/".into(),
    };
    let leader = root(&dir, "root-a", &store).await;
    let client = RootClient::new(&leader.url).expect("a client");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.clusters().await.is_err() {
        assert!(Instant::now() < deadline, "the first root did not lead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let standby = root(&dir, "root-b", &store).await;
    let near = cluster(&dir, "near", &leader.url).await;
    let far = cluster(&dir, "far", &standby.url).await;
    wait_ready(&client, 2).await;
    let (mut at_near, mut at_far) = (Vec::new(), Vec::new());
    for n in 0..jobs {
        at_near.push(deploy(&client, "near", n).await);
        at_far.push(deploy(&client, "far", n).await);
    }
    stop(&client, vec![near, far], vec![standby, leader]).await;

    // the raw cost of one relayed message's write, same etcd, same run
    let raw = StoreConfig::etcd(vec![etcd.endpoint.clone()], "edgeio-bench-raw/")
        .open()
        .await
        .expect("etcd answers");
    let mut puts = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        raw.put(&format!("k{i}"), vec![b'x'; 300].into())
            .await
            .expect("put");
        puts.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_dir_all(&dir);

    let (direct50, direct99) = summary(at_direct);
    let (near50, near99) = summary(at_near);
    let (far50, far99) = summary(at_far);
    let (put50, _) = summary(puts);
    println!(
        "deploy POST → RUNNING, {jobs} native jobs per cluster (ms; machine: {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| cluster linked at | p50 | p99 |");
    println!("|---|---:|---:|");
    println!("| the only root, embedded store, no relay | {direct50:.1} | {direct99:.1} |");
    println!("| the leader of two on etcd (relayed like any other) | {near50:.1} | {near99:.1} |");
    println!("| the standby of two on etcd | {far50:.1} | {far99:.1} |");
    println!();
    println!("one durable etcd put of 300 bytes, same run: p50 {put50:.2} ms");
}
