//! `relay_measure`: what root replicas cost a deploy. First one root on its embedded store
//! with one cluster (`direct`: the root's engine writes to the WebSocket itself); then two
//! roots on one etcd (started here, on loopback) with two clusters: `near` links to the
//! leader, `far` to the standby. On etcd every cluster is reached through the store relay
//! (a put each way per message, plus a delete) and the engine's own records go to etcd.
//! Native jobs, each on one worker, are deployed one after another on each cluster in turn;
//! p50/p99 from `POST` to RUNNING is printed per cluster, beside the p50 of one durable etcd
//! put in the same run. Then the leading root is SIGKILLed (its lease left to expire) or
//! SIGTERMed (a clean stop revokes it) and started again as a standby, several times each:
//! how long until the other replica serves the API as leader, and until a job deployed then
//! runs on each cluster (the one that was linked at the dead replica redials first). The
//! roots are processes (the sibling `root` binary); clusters and workers run in here.
//!
//! ```text
//! cargo run --release --example relay_measure --features roles,testing   # 100 jobs each
//! EDGEIO_BENCH_JOBS=20 EDGEIO_BENCH_HANDOVERS=3 cargo run --release --example relay_measure --features roles,testing
//! ```
//!
//! Needs the `etcd` binary on the PATH (Debian: `etcd-server`) and the `root` example built
//! beside this one (`cargo build --release --examples --features roles,testing`).
//!
//! Every tier runs `--insecure`: root replicas on etcd do not share a CA yet, so a secure
//! replica group is refused; `deploy_measure` gives the cost of security.

use edgeio::roles::{start_cluster, start_worker, ClusterOptions, Kvm, Running, WorkerOptions};
use edgeio::state::JobState;
use edgeio::stores::testing::EtcdServer;
use edgeio::stores::StoreConfig;
use edgeio::transport_ws::RootClient;
use edgeio_scheduler::PolicyKind;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

#[path = "support/procs.rs"]
mod procs;

use procs::{free_port, start_sibling, Proc};
use std::time::{Duration, Instant};

#[path = "support/stats.rs"]
mod stats;

use stats::summary;

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().expect("an address")
}

/// A root process on `port` keeping its state in `store` (`embedded` or `etcd://…`), once it
/// answers `/healthz`.
async fn root(dir: &Path, name: &str, store: &str, port: u16) -> Proc {
    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data",
        &dir.join(name).display().to_string(),
        "--store",
        store,
        "--aggregate-interval",
        "200ms",
        // root replicas on etcd share no CA yet (a secure group is refused): every tier of
        // this comparison runs --insecure, the single root too, so the figures compare alike
        "--insecure",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let proc = start_sibling("root", &args, "error");
    let client = RootClient::new(&format!("http://127.0.0.1:{port}")).expect("a client");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.health().await.is_err() {
        assert!(Instant::now() < deadline, "root {name} did not answer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proc
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
        join_token: None,
        join_token_file: None,
        advertise: None,
        mqtt_advertise: None,
        tls_san: Vec::new(),
        insecure: true,
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
        mirage: false,
        allow_kernel: Vec::new(),
        kvm: Kvm::Auto,
        join_token: None,
        join_token_file: None,
        insecure: true,
    })
    .await
    .expect("a worker");
    (cluster, worker)
}

/// Deploys a job pinned to `cluster` and waits until it runs: ms from `POST` to RUNNING.
async fn deploy(client: &RootClient, cluster: &str, n: usize) -> f64 {
    try_deploy(client, cluster, &n.to_string())
        .await
        .unwrap_or_else(|history| panic!("{cluster}-{n} was not deployable: {history}"))
}

/// Deploys jobs pinned to `cluster` until one runs (a new leader refuses a cluster it has
/// not heard from yet as not deployable).
async fn deploy_until_it_runs(client: &RootClient, cluster: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for attempt in 0.. {
        if try_deploy(client, cluster, &format!("{n}-{attempt}"))
            .await
            .is_ok()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{cluster} took no job for 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Deploys a job pinned to `cluster`, named with `suffix`: ms from `POST` to RUNNING, or the
/// job's history when it is not deployable.
async fn try_deploy(client: &RootClient, cluster: &str, suffix: &str) -> Result<f64, String> {
    let body = format!(
        "api_version: v1\njob_name: {cluster}-{suffix}\nimage: /bin/sleep\nimage_runtime: native\n\
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
            return Ok(t.elapsed().as_secs_f64() * 1e3);
        }
        if job.state == JobState::NotDeployable {
            return Err(format!("{:?}", job.history));
        }
        assert!(job.state != JobState::Failed, "job {id}: {:?}", job.history);
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
async fn stop(client: &RootClient, clusters: Vec<(Running, Running)>) {
    for job in client.jobs().await.expect("jobs") {
        let _ = client.terminate(job.id.as_str()).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (cluster, worker) in clusters {
        worker.stop(Duration::from_secs(5)).await;
        cluster.stop(Duration::from_secs(5)).await;
    }
}

#[tokio::main]
async fn main() {
    let jobs: usize = std::env::var("EDGEIO_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let handovers: usize = std::env::var("EDGEIO_BENCH_HANDOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .clamp(1, 50);
    let etcd = EtcdServer::start().expect("etcd starts (is etcd-server installed?)");
    let dir = std::env::temp_dir().join(format!("edgeio-relay-measure-{}", std::process::id()));

    // one root, no relay
    let port = free_port();
    let single = root(&dir, "root", "embedded", port).await;
    let url = format!("http://127.0.0.1:{port}");
    let client = RootClient::new(&url).expect("a client");
    let direct = cluster(&dir, "direct", &url).await;
    wait_ready(&client, 1).await;
    let mut at_direct = Vec::new();
    for n in 0..jobs {
        at_direct.push(deploy(&client, "direct", n).await);
    }
    stop(&client, vec![direct]).await;
    drop(single);

    // two roots on etcd
    let store = format!(
        "etcd://{}/edgeio-bench",
        etcd.endpoint.trim_start_matches("http://")
    );
    let ports = [free_port(), free_port()];
    let urls = ports.map(|p| format!("http://127.0.0.1:{p}"));
    let names = ["root-a", "root-b"];
    let leader = root(&dir, names[0], &store, ports[0]).await;
    let client = RootClient::new(&urls[0]).expect("a client");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.clusters().await.is_err() {
        assert!(Instant::now() < deadline, "the first root did not lead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let standby = root(&dir, names[1], &store, ports[1]).await;
    // each cluster knows both roots; near dials the leader first, far the standby
    let near = cluster(&dir, "near", &format!("{},{}", urls[0], urls[1])).await;
    let far = cluster(&dir, "far", &format!("{},{}", urls[1], urls[0])).await;
    wait_ready(&client, 2).await;
    let (mut at_near, mut at_far) = (Vec::new(), Vec::new());
    for n in 0..jobs {
        at_near.push(deploy(&client, "near", n).await);
        at_far.push(deploy(&client, "far", n).await);
    }

    // handovers: the leader is killed or stopped, the other takes over
    let mut roots = [Some(leader), Some(standby)];
    let mut times: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    let mut lead = 0;
    for round in 0..2 * handovers {
        let (next, clean) = (1 - lead, round % 2 == 1);
        let mut dead = roots[lead].take().expect("the leader runs");
        let pid = dead.0.id().to_string();
        let t = Instant::now();
        let sig = if clean { "-TERM" } else { "-KILL" };
        let _ = Command::new("kill").args([sig, &pid]).status();
        let _ = dead.0.wait();
        let client = RootClient::new(&urls[next]).expect("a client");
        let deadline = Instant::now() + Duration::from_secs(30);
        // the other replica answers from its own engine (a standby forwarding to the dead
        // leader answers 503)
        while client.clusters().await.is_err() {
            assert!(Instant::now() < deadline, "no replica took over");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (to_api, to_jobs) = &mut times[usize::from(clean)];
        to_api.push(t.elapsed().as_secs_f64() * 1e3);
        for name in ["near", "far"] {
            deploy_until_it_runs(&client, name, jobs + round).await;
        }
        to_jobs.push(t.elapsed().as_secs_f64() * 1e3);
        roots[lead] = Some(root(&dir, names[lead], &store, ports[lead]).await);
        lead = next;
    }
    let client = RootClient::new(&urls[lead]).expect("a client");
    stop(&client, vec![near, far]).await;
    drop(roots);

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
    println!();
    println!("leader handover, {handovers} times each (ms; the lease lives 3 s)");
    println!("| the leader | to the other serving the API as leader, p50 / p99 | to a new job RUNNING on each cluster, p50 / p99 |");
    println!("|---|---:|---:|");
    let [(kill_api, kill_jobs), (term_api, term_jobs)] = times;
    for (what, api, jobs) in [
        ("SIGKILLed (its lease expires)", kill_api, kill_jobs),
        (
            "SIGTERMed (a clean stop revokes its lease)",
            term_api,
            term_jobs,
        ),
    ] {
        let ((a50, a99), (j50, j99)) = (summary(api), summary(jobs));
        println!("| {what} | {a50:.0} / {a99:.0} | {j50:.0} / {j99:.0} |");
    }
}
