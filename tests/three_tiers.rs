//! The three tiers as separate OS processes over real protocols on loopback: the built
//! `root`, two `cluster`s (one with its embedded broker, one on Debian's Mosquitto) and three
//! `worker`s. Five jobs pinned so they land on different clusters and nodes all reach
//! RUNNING; `mosquitto_sub` sees the workers' status on the cluster's broker; a job nothing
//! can hold is NOT_DEPLOYABLE with the schedulers' reasons; a bad descriptor is a 400 naming
//! the field; terminating leaves no process of a job behind.
#![cfg(all(feature = "roles", feature = "testing"))]

mod support;

use edgeio::state::JobState;
use edgeio::testing::require;
use edgeio::transport_mqtt::testing::{free_port, Mosquitto};
use std::process::Command;
use support::{
    binary, cluster_of, job, processes_running, root_and_cluster, root_client, root_data, secure,
    serves, until, Proc,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_two_clusters_and_three_workers_run_jobs_as_separate_processes() {
    if !require::mosquitto() {
        return;
    }
    let mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = |sub: &str| dir.path().join(sub).display().to_string();
    let root_port = free_port();
    let root_url = secure::https(root_port);
    let a_port = free_port();
    let a_broker = free_port();
    let b_port = free_port();

    let mut procs = vec![Proc::start(
        "root",
        "root",
        &[
            "--listen".into(),
            format!("127.0.0.1:{root_port}"),
            "--data".into(),
            d("root"),
            "--scheduler".into(),
            "least-loaded".into(),
            "--aggregate-interval".into(),
            "300ms".into(),
        ],
        dir.path(),
    )];
    let client = root_client(dir.path(), root_port, &mut procs).await;

    let cluster = |name: &str, port: u16, broker: Vec<String>, location: &str| {
        let [flag, token] = secure::join_args(&root_data(dir.path()));
        let mut args = vec![
            "--root".into(),
            root_url.clone(),
            flag,
            token,
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--name".into(),
            name.into(),
            "--location".into(),
            location.into(),
            "--data".into(),
            d(name),
            "--status-interval".into(),
            "300ms".into(),
            "--missed-heartbeats".into(),
            "10".into(),
        ];
        args.extend(broker);
        Proc::start(name, "cluster", &args, dir.path())
    };
    procs.push(cluster(
        "cluster-a",
        a_port,
        vec!["--mqtt-listen".into(), format!("127.0.0.1:{a_broker}")],
        "Garching@48.25,11.65",
    ));
    procs.push(cluster(
        "cluster-b",
        b_port,
        vec!["--broker".into(), mosquitto.url()],
        "Munich@48.14,11.58",
    ));
    for port in [a_port, b_port] {
        serves(dir.path(), port, &mut procs).await;
    }
    let worker = |name: &str, port: u16, labels: &str| {
        let cluster = if port == a_port {
            "cluster-a"
        } else {
            "cluster-b"
        };
        let [flag, token] = secure::join_args(&dir.path().join(cluster));
        Proc::start(
            name,
            "worker",
            &[
                "--cluster".into(),
                secure::https(port),
                flag,
                token,
                "--name".into(),
                name.into(),
                "--labels".into(),
                labels.into(),
                "--allow-native".into(),
                "/bin/sleep".into(),
                "--data".into(),
                d(name),
                "--docker=false".into(),
                "--mirage=false".into(),
            ],
            dir.path(),
        )
    };
    procs.push(worker("w1", a_port, "zone=a"));
    procs.push(worker("w2", a_port, "zone=a,disk=ssd"));
    procs.push(worker("w3", b_port, "zone=b"));

    until(
        "both clusters reporting their workers",
        &mut procs,
        async || {
            let clusters = client.clusters().await.ok()?;
            let ready = |id: &str, n: u32| {
                clusters
                    .iter()
                    .any(|c| c.id == id && c.aggregate.as_ref().is_some_and(|a| a.ready_nodes == n))
            };
            (ready("cluster-a", 2) && ready("cluster-b", 1)).then_some(())
        },
    )
    .await;

    // the workers' status reaches the broker, as the real Mosquitto client sees it
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &mosquitto.port().to_string()])
        .args(["-t", "edgeio/nodes/+/info", "-C", "1", "-W", "20"])
        .output()
        .expect("mosquitto_sub runs");
    let seen = String::from_utf8_lossy(&sub.stdout);
    assert!(
        seen.contains("\"node_status\""),
        "mosquitto_sub saw: {seen:?} {:?}",
        sub.stderr
    );
    assert!(seen.contains("\"from\":\"w3\""), "{seen}");

    // five jobs, forced onto different clusters and nodes
    let marker = format!("{}", 7_000_000 + std::process::id() % 1_000_000);
    let jobs = [
        ("on-w1", "worker_node: w1", "cluster-a", "w1"),
        ("on-w2", "worker_node: w2", "cluster-a", "w2"),
        ("on-w3", "worker_node: w3", "cluster-b", "w3"),
        (
            "zone-b",
            "cluster: cluster-b\nnode_selector:\n  zone: b",
            "cluster-b",
            "w3",
        ),
        (
            "ssd",
            "node_selector:\n  disk: ssd\ncluster: cluster-a",
            "cluster-a",
            "w2",
        ),
    ];
    let mut ids = Vec::new();
    for (name, pin, _, _) in &jobs {
        let view = client
            .submit(job(name, &marker, pin).into_bytes(), "application/yaml")
            .await
            .unwrap_or_else(|e| panic!("deploy {name}: {e}"));
        assert_eq!(view.state, JobState::Requested);
        ids.push(view.id.to_string());
    }
    for ((name, _, cluster, node), id) in jobs.iter().zip(&ids) {
        let view = until(&format!("job {name} RUNNING"), &mut procs, async || {
            let view = client.job(id).await.ok()?;
            assert!(
                !matches!(view.state, JobState::Failed | JobState::NotDeployable),
                "{name}: {:#?}",
                view.history
            );
            (view.state == JobState::Running).then_some(view)
        })
        .await;
        assert_eq!(view.cluster.as_deref(), Some(*cluster), "{name}");
        assert_eq!(view.instances[0].node.as_deref(), Some(*node), "{name}");
    }
    assert_eq!(processes_running(&format!("sleep {marker}")).len(), 5);

    // nodes are asked of each cluster through the one root address
    let nodes = client.nodes("cluster-a").await.unwrap();
    let mut names: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    names.sort();
    assert_eq!(names, ["w1", "w2"]);

    // nothing can hold this one: NOT_DEPLOYABLE, with the root scheduler's reasons
    let huge = client
        .submit(
            job("huge", &marker, "")
                .replace("cpu: 50m", "cpu: 500")
                .into_bytes(),
            "application/yaml",
        )
        .await
        .unwrap();
    let huge = until("job huge NOT_DEPLOYABLE", &mut procs, async || {
        let view = client.job(huge.id.as_str()).await.ok()?;
        (view.state == JobState::NotDeployable).then_some(view)
    })
    .await;
    assert!(!huge.unschedulable.is_empty());
    let reason = &huge.history.last().unwrap().reason;
    assert!(reason.contains("cpu") || reason.contains("CPU"), "{reason}");

    // a bad descriptor: 400 naming the field, and no job created
    let before = client.jobs().await.unwrap().len();
    let err = client
        .submit(
            b"api_version: v1\njob_name: bad\nimage_runtime: native\n".to_vec(),
            "application/yaml",
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("image"), "{err}");
    assert_eq!(client.jobs().await.unwrap().len(), before);

    // terminate everything: the jobs end TERMINATED and no process of theirs is left
    for id in &ids {
        client.terminate(id).await.unwrap();
    }
    for id in &ids {
        until(&format!("job {id} TERMINATED"), &mut procs, async || {
            let view = client.job(id).await.ok()?;
            (view.state == JobState::Terminated).then_some(())
        })
        .await;
    }
    until("the jobs' processes gone", &mut procs, async || {
        processes_running(&format!("sleep {marker}"))
            .is_empty()
            .then_some(())
    })
    .await;

    // clean shutdown, children first
    for p in procs.iter_mut().rev() {
        let name = p.name.clone();
        assert!(p.stop(), "{name} did not stop cleanly:\n{}", p.log());
    }
}

#[test]
fn quickstart_deploys_its_sample_and_shuts_down_cleanly() {
    let out = Command::new(binary("quickstart"))
        .arg("--once")
        .env("RUST_LOG", "error,rumqttd=off")
        .output()
        .expect("quickstart runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("root API      https://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("  RUNNING\n"), "{stdout}");
    assert!(
        stdout.contains("runs on cluster quickstart, node quickstart-worker"),
        "{stdout}"
    );
    assert!(stdout.contains("jobs:\n  hello-"), "{stdout}");
    assert!(stdout.trim_end().ends_with("stopped"), "{stdout}");
}

/// Runs a role binary that must fail at once; returns its stderr.
fn fails(program: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = Command::new(binary(program))
        .args(args)
        .current_dir(dir.path())
        .env("RUST_LOG", "off")
        .output()
        .expect("runs");
    assert!(!out.status.success(), "{program} {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_binaries_refuse_bad_flags_busy_ports_and_unreachable_parents_in_one_line() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let err = fails("root", &["--listen", &format!("127.0.0.1:{port}")]);
    assert_eq!(
        err.trim(),
        format!("root: cannot listen on 127.0.0.1:{port} for the root API: the port is in use")
    );

    // a secure worker refuses a plain http cluster, naming the fix
    let err = fails(
        "worker",
        &["--cluster", &format!("http://127.0.0.1:{}", free_port())],
    );
    assert!(
        err.trim()
            .starts_with("worker: --cluster http://127.0.0.1:")
            && err.contains("https://HOST:PORT")
            && err.contains("--insecure"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // the first start needs a join token, and says where it is
    let err = fails(
        "worker",
        &["--cluster", &format!("https://127.0.0.1:{}", free_port())],
    );
    assert!(
        err.contains("--join-token") && err.contains("join.token"),
        "{err}"
    );
    // an unreachable cluster, with a well-formed token
    let token = format!("edgeio1.abcd1234.{}.{}", "s".repeat(32), "0".repeat(64));
    let err = fails(
        "worker",
        &[
            "--cluster",
            &format!("https://127.0.0.1:{}", free_port()),
            "--join-token",
            &token,
        ],
    );
    assert!(
        err.trim()
            .starts_with("worker: cannot register with the cluster at https://127.0.0.1:"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        !err.contains(&"s".repeat(32)),
        "the token's secret is not echoed: {err}"
    );

    let err = fails(
        "cluster",
        &[
            "--root",
            "ftp://example",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert!(err.contains("ftp://example"), "{err}");

    let err = fails("cluster", &["--location", "x@200,0"]);
    assert!(err.contains("coordinates must be LAT,LON"), "{err}");
    let err = fails("cluster", &["--status-interval", "soon"]);
    assert!(err.contains("write e.g. 500ms"), "{err}");
    let err = fails("root", &["--listen", "nowhere"]);
    assert!(err.contains("nowhere"), "{err}");
    let err = fails("root", &["--scheduler", "random"]);
    assert!(err.contains("first-fit"), "{err}");
}

#[test]
fn a_config_file_sets_options_and_its_mistakes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let good = dir.path().join("root.yaml");
    std::fs::write(
        &good,
        format!("listen: 127.0.0.1:{port}\nscheduler: spread\n"),
    )
    .unwrap();
    // the file's listen address is used (and found busy)
    let err = fails("root", &["--config", good.to_str().unwrap()]);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listen: 127.0.0.1:0\ncolour: blue\n").unwrap();
    let err = fails("root", &["--config", bad.to_str().unwrap()]);
    assert!(err.contains("colour: not an option of root"), "{err}");

    let err = fails("worker", &["--config", "/nonexistent/worker.yaml"]);
    assert!(
        err.contains("cannot read the config file /nonexistent/worker.yaml"),
        "{err}"
    );
}

/// A root and one cluster (embedded broker, status every 300 ms) as processes in `dir`:
/// the processes, a client of the root, and the cluster's port.
/// Root, cluster and one worker; deploys `descriptor`, SIGKILLs the worker, starts it again on
/// the same data folder, and checks that it comes back under its id and adopts the job's
/// process (`running()` counts them) instead of starting it twice; then terminates it.
/// `node` names the worker: workers sharing one Docker engine (tests running side by side)
/// need distinct ids, since a worker adopts the containers labelled with its own.
async fn worker_restart_scenario(node: &str, descriptor: String, running: impl Fn() -> usize) {
    use edgeio::state::InstanceState;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = |sub: &str| dir.path().join(sub).display().to_string();
    let (mut procs, client, cluster_port) = root_and_cluster(dir.path()).await;
    let mut worker_args = cluster_of(dir.path(), cluster_port, "cluster");
    worker_args.extend([
        "--name".into(),
        node.into(),
        "--allow-native".into(),
        "/bin/sleep".into(),
        "--data".into(),
        d(node),
    ]);
    let mut worker = Proc::start("worker", "worker", &worker_args, dir.path());
    until("the worker READY at the root", &mut procs, async || {
        let clusters = client.clusters().await.ok()?;
        clusters
            .iter()
            .any(|c| c.aggregate.as_ref().is_some_and(|a| a.ready_nodes == 1))
            .then_some(())
    })
    .await;

    let view = client
        .submit(descriptor.into_bytes(), "application/yaml")
        .await
        .unwrap();
    let id = view.id.to_string();
    until("the job RUNNING", &mut procs, async || {
        (client.job(&id).await.ok()?.state == JobState::Running).then_some(())
    })
    .await;
    assert_eq!(running(), 1);

    // the worker dies without a word: its will makes the node LOST, and the instance with it
    let _ = worker.child.kill();
    let _ = worker.child.wait();
    until("the instance LOST", &mut procs, async || {
        let job = client.job(&id).await.ok()?;
        (job.instances[0].state == InstanceState::Lost).then_some(())
    })
    .await;
    // the job's process outlived the worker
    assert_eq!(running(), 1);

    // back under the same id, it adopts the process instead of starting it again
    procs.push(Proc::start(
        "worker again",
        "worker",
        &worker_args,
        dir.path(),
    ));
    until("the instance RUNNING again", &mut procs, async || {
        let job = client.job(&id).await.ok()?;
        (job.instances[0].state == InstanceState::Running).then_some(job)
    })
    .await;
    let nodes = client.nodes("cluster-1").await.unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0].id, node);
    assert_eq!(running(), 1);

    client.terminate(&id).await.unwrap();
    until("the job TERMINATED", &mut procs, async || {
        (client.job(&id).await.ok()?.state == JobState::Terminated).then_some(())
    })
    .await;
    until("its process gone", &mut procs, async || {
        (running() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_comes_back_under_its_id_and_adopts_its_native_process() {
    let marker = format!("{}", 8_000_000 + std::process::id() % 1_000_000);
    let pattern = format!("sleep {marker}");
    worker_restart_scenario("w-native", job("survivor", &marker, ""), || {
        processes_running(&pattern).len()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_comes_back_and_adopts_its_docker_container() {
    use edgeio::runtime_docker::testing::{docker, docker_ok, ensure_image, IMAGE};
    if !require::docker() {
        return;
    }
    ensure_image();
    let name = format!("survivor-docker-{}", std::process::id());
    let descriptor = format!(
        "api_version: v1\njob_name: {name}\nimage: {IMAGE}\nimage_runtime: docker\n\
         args: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done\"]\n\
         requirements:\n  cpu: 100m\n  memory: 32Mi\n"
    );
    // the job id starts with its name; containers carry it in their edgeio.job label. One
    // `docker ps` lists ids and labels together: other tests remove their containers
    // meanwhile, so a list-then-inspect would race with them.
    fn containers(all: bool, job_prefix: &str) -> Vec<String> {
        let mut args = vec!["ps", "--filter", "label=edgeio.job"];
        if all {
            args.push("-a");
        }
        args.extend(["--format", "{{.ID}} {{.Label \"edgeio.job\"}}"]);
        docker_ok(&args)
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter(|(_, job)| job.starts_with(job_prefix))
            .map(|(id, _)| id.to_string())
            .collect()
    }
    let filter = |all: bool| containers(all, &name).len();
    struct Sweep(String);
    impl Drop for Sweep {
        fn drop(&mut self) {
            // containers of this test only, even when it failed half-way
            for c in containers(true, &self.0) {
                let _ = docker(&["rm", "-f", &c]);
            }
        }
    }
    let _sweep = Sweep(name.clone());
    worker_restart_scenario("w-docker", descriptor, || filter(true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_runs_elsewhere_and_its_duplicate_is_stopped_when_it_returns() {
    use edgeio::state::InstanceState;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = |sub: &str| dir.path().join(sub).display().to_string();
    let (mut procs, client, cluster_port) = root_and_cluster(dir.path()).await;
    let worker_args = |name: &str| -> Vec<String> {
        let mut args = cluster_of(dir.path(), cluster_port, "cluster");
        args.extend([
            "--name".into(),
            name.into(),
            "--allow-native".into(),
            "/bin/sleep".into(),
            "--data".into(),
            d(name),
            "--docker=false".into(),
            "--mirage=false".into(),
        ]);
        args
    };
    let mut w1 = Proc::start("w1", "worker", &worker_args("w1"), dir.path());
    procs.push(Proc::start("w2", "worker", &worker_args("w2"), dir.path()));
    until("both workers READY", &mut procs, async || {
        let clusters = client.clusters().await.ok()?;
        clusters
            .iter()
            .any(|c| c.aggregate.as_ref().is_some_and(|a| a.ready_nodes == 2))
            .then_some(())
    })
    .await;

    let marker = format!("{}", 9_000_000 + std::process::id() % 1_000_000);
    let pattern = format!("sleep {marker}");
    let view = client
        .submit(job("mover", &marker, "").into_bytes(), "application/yaml")
        .await
        .unwrap();
    let id = view.id.to_string();
    let first = until("the job RUNNING", &mut procs, async || {
        let job = client.job(&id).await.ok()?;
        (job.state == JobState::Running).then_some(job)
    })
    .await;
    // first-fit in id order: w1
    assert_eq!(first.instances[0].node.as_deref(), Some("w1"));

    let _ = w1.child.kill();
    let _ = w1.child.wait();
    let moved = until("a replacement RUNNING on w2", &mut procs, async || {
        let job = client.job(&id).await.ok()?;
        let replaced = job
            .instances
            .iter()
            .any(|i| i.node.as_deref() == Some("w2") && i.state == InstanceState::Running);
        (replaced && job.state == JobState::Running).then_some(job)
    })
    .await;
    assert_eq!(moved.instances[0].state, InstanceState::Lost);
    let reasons: Vec<&str> = moved.history.iter().map(|h| h.reason.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("replaces") && r.contains("node w1 lost")),
        "{reasons:?}"
    );
    // the lost worker's process still runs on this machine, beside its replacement
    assert_eq!(processes_running(&pattern).len(), 2);

    // w1 comes back with the old instance: the newer placement wins
    procs.push(Proc::start(
        "w1 again",
        "worker",
        &worker_args("w1"),
        dir.path(),
    ));
    until("the duplicate stopped", &mut procs, async || {
        let job = client.job(&id).await.ok()?;
        let old = job.instances[0].state == InstanceState::Terminated;
        (old && processes_running(&pattern).len() == 1 && job.state == JobState::Running)
            .then_some(())
    })
    .await;

    client.terminate(&id).await.unwrap();
    until("no process left", &mut procs, async || {
        processes_running(&pattern).is_empty().then_some(())
    })
    .await;
}
