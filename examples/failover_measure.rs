//! `failover_measure`: how long a job is without a running instance when its worker dies,
//! from the kill to the replacement RUNNING on another worker, over repeated kills:
//! (a) the worker process is SIGKILLed (its MQTT link closes and the broker publishes its
//! will); (b) it is SIGSTOPped (its socket stays open: only missed heartbeats tell, with
//! `--status-interval 500ms --missed-heartbeats 3`). Each round the victim is brought back
//! (restarted or SIGCONTed) and the duplicate it returns with is stopped by the cluster.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/failover_measure          # 20 kills each; EDGEIO_BENCH_KILLS=5 for fewer
//! ```
//!
//! It runs the sibling `root`, `cluster` and `worker` binaries of its own folder. Linux only.

use edgeio::state::{InstanceState, JobState};
use edgeio::transport_ws::RootClient;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/secure.rs"]
mod secure;

#[path = "support/procs.rs"]
mod procs;

use procs::{free_port, start_sibling, Proc};

fn start(name: &str, args: &[String]) -> Proc {
    start_sibling(name, args, "error,rumqttd=off")
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

async fn until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[path = "support/stats.rs"]
mod stats;

use stats::summary;

#[tokio::main]
async fn main() {
    let kills: usize = std::env::var("EDGEIO_BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .clamp(1, 200);
    let dir: PathBuf = std::env::temp_dir().join(format!("edgeio-failover-{}", std::process::id()));
    let d = |s: &str| dir.join(s).display().to_string();
    let (root_port, cluster_port, broker_port) = (free_port(), free_port(), free_port());
    let root_url = secure::https(root_port);
    let root_data = dir.join("root");
    let _root = start(
        "root",
        &[
            "--listen".into(),
            format!("127.0.0.1:{root_port}"),
            "--data".into(),
            d("root"),
            "--aggregate-interval".into(),
            "200ms".into(),
        ],
    );
    let client = until("the root answering", async || {
        let client = secure::admin_client(&root_data, root_port)?;
        client.health().await.ok().map(|()| client)
    })
    .await;
    let [flag, token] = secure::join_args(&root_data);
    let _cluster = start(
        "cluster",
        &[
            "--root".into(),
            root_url.clone(),
            flag,
            token,
            "--listen".into(),
            format!("127.0.0.1:{cluster_port}"),
            "--mqtt-listen".into(),
            format!("127.0.0.1:{broker_port}"),
            "--data".into(),
            d("cluster"),
            "--status-interval".into(),
            "500ms".into(),
            "--missed-heartbeats".into(),
            "3".into(),
            "--scheduler".into(),
            "least-loaded".into(),
        ],
    );
    until("the cluster answering", async || {
        let cluster = secure::health_client(&root_data, cluster_port)?;
        cluster.health().await.ok()
    })
    .await;
    let worker_args = |name: &str| -> Vec<String> {
        let [flag, token] = secure::join_args(&dir.join("cluster"));
        vec![
            "--cluster".into(),
            secure::https(cluster_port),
            flag,
            token,
            "--name".into(),
            name.into(),
            "--allow-native".into(),
            "/bin/sleep".into(),
            "--data".into(),
            d(name),
            "--docker=false".into(),
            "--mirage=false".into(),
        ]
    };
    let names = ["wa", "wb"];
    let mut workers: Vec<Proc> = names
        .iter()
        .map(|n| start("worker", &worker_args(n)))
        .collect();
    until("both workers READY", async || {
        let clusters = client.clusters().await.ok()?;
        clusters
            .iter()
            .any(|c| c.aggregate.as_ref().is_some_and(|a| a.ready_nodes == 2))
            .then_some(())
    })
    .await;
    let body = "api_version: v1\njob_name: failover\nimage: /bin/sleep\nimage_runtime: native\n\
                args: [\"3600\"]\nrequirements:\n  cpu: 10m\n  memory: 1Mi\n";
    let job = client
        .submit(body.as_bytes().to_vec(), "application/yaml")
        .await
        .expect("submit");
    let id = job.id.to_string();
    until("the job RUNNING", async || {
        (client.job(&id).await.ok()?.state == JobState::Running).then_some(())
    })
    .await;

    let mut results = Vec::new();
    for (case, stop) in [
        ("SIGKILL (will)", true),
        ("SIGSTOP (missed heartbeats)", false),
    ] {
        let mut times = Vec::new();
        for _ in 0..kills {
            let job = client.job(&id).await.expect("job");
            let live = job
                .instances
                .iter()
                .find(|i| i.state == InstanceState::Running)
                .expect("a running instance");
            let (victim_instance, victim_node) =
                (live.id.clone(), live.node.clone().expect("placed"));
            let slot = names
                .iter()
                .position(|n| *n == victim_node)
                .expect("known worker");
            let pid = workers[slot].0.id();
            let killed_ms = edgeio::wire::now_ms();
            signal(pid, if stop { "-KILL" } else { "-STOP" });
            let running_ms = until("a replacement RUNNING", async || {
                let job = client.job(&id).await.ok()?;
                job.instances
                    .iter()
                    .find(|i| i.id != victim_instance && i.state == InstanceState::Running)
                    .and_then(|i| {
                        i.history
                            .iter()
                            .rev()
                            .find(|h| h.state == InstanceState::Running)
                    })
                    .map(|h| h.at_ms)
            })
            .await;
            times.push(running_ms.saturating_sub(killed_ms) as f64);
            // bring the victim back; the cluster stops the duplicate it returns with
            if stop {
                let _ = workers[slot].0.wait();
                workers[slot] = start("worker", &worker_args(names[slot]));
            } else {
                signal(pid, "-CONT");
            }
            until(
                "the victim READY again and its duplicate gone",
                async || {
                    let job = client.job(&id).await.ok()?;
                    let settled = job.instances.iter().all(|i| {
                        matches!(i.state, InstanceState::Running | InstanceState::Terminated)
                    });
                    let nodes = cluster_nodes(&client).await?;
                    (settled && nodes == 2 && job.state == JobState::Running).then_some(())
                },
            )
            .await;
        }
        results.push((case, summary(times)));
    }
    let _ = client.terminate(&id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(workers);
    let _ = std::fs::remove_dir_all(&dir);

    println!("kill → replacement RUNNING on the other worker, {kills} kills each (ms; machine: {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!("| worker failure | p50 | p99 | goal |");
    println!("|---|---:|---:|---|");
    for (case, (p50, p99)) in results {
        let goal = if case.starts_with("SIGKILL") {
            "p50 ≤ 100"
        } else {
            "p99 ≤ 2,500"
        };
        println!("| {case} | {p50:.0} | {p99:.0} | {goal} |");
    }
    println!(
        "(Kubernetes evicts after about 350 s by default; Nomad notices a lost node after 20–30 s)"
    );
}

/// READY nodes of the one cluster, as the root's aggregate says.
async fn cluster_nodes(client: &RootClient) -> Option<u32> {
    let clusters = client.clusters().await.ok()?;
    clusters.first()?.aggregate.as_ref().map(|a| a.ready_nodes)
}
