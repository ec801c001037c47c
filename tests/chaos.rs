//! Chaos over real processes: SIGKILL a tier and check the result (not the log). Workers of
//! the only fitting cluster die → the job moves to another cluster; a cluster manager dies →
//! INACTIVE, its job re-placed after the timeout, its copy stopped when it returns; the root
//! dies → jobs keep running and a restarted root has them intact; Mosquitto dies under load
//! → no command is lost and none applied twice. Also over real processes: migration across
//! clusters, replicas spread over two clusters, root replicas on etcd.
#![cfg(all(feature = "roles", feature = "testing"))]

mod support;

use edgeio::state::{ClusterState, InstanceState, JobState};
use edgeio::testing::require;
use edgeio::transport_mqtt::testing::{free_port, Mosquitto};
use edgeio::transport_ws::RootClient;
use std::time::Duration;
use support::{
    cluster_args, job, processes_running, ready_nodes, root_answers, root_args, root_client,
    serves, until, worker_args, Proc,
};

/// A marker no other test's `sleep` uses, so `pgrep` counts this test's processes only.
fn marker(base: u32) -> String {
    format!("{}", base + std::process::id() % 1_000_000)
}

/// Root, cluster-a (Garching) and cluster-b (Munich), one worker each: `wa`, `wb`.
struct TwoClusters {
    procs: Vec<Proc>,
    client: RootClient,
    a_args: Vec<String>,
    wa_args: Vec<String>,
}

/// `wb_allows` is the program `wb` may run (`/bin/sleep` like `wa`, or another to make it
/// refuse the jobs).
async fn two_clusters(dir: &std::path::Path, root_extra: &[&str], wb_allows: &str) -> TwoClusters {
    let root_port = free_port();
    let mut procs = vec![Proc::start(
        "root",
        "root",
        &root_args(dir, root_port, root_extra),
        dir,
    )];
    let client = root_client(dir, root_port, &mut procs).await;
    let (a_port, b_port) = (free_port(), free_port());
    let a_args = cluster_args(
        dir,
        "cluster-a",
        root_port,
        a_port,
        free_port(),
        &["--location", "Garching@48.25,11.65"],
    );
    let b_args = cluster_args(
        dir,
        "cluster-b",
        root_port,
        b_port,
        free_port(),
        &["--location", "Munich@48.14,11.58"],
    );
    procs.push(Proc::start("cluster-a", "cluster", &a_args, dir));
    procs.push(Proc::start("cluster-b", "cluster", &b_args, dir));
    serves(dir, a_port, &mut procs).await;
    serves(dir, b_port, &mut procs).await;
    let wa_args = worker_args(dir, "wa", a_port, "cluster-a");
    procs.push(Proc::start("wa", "worker", &wa_args, dir));
    let mut wb_args = worker_args(dir, "wb", b_port, "cluster-b");
    let at = wb_args
        .iter()
        .position(|a| a == "--allow-native")
        .expect("flag")
        + 1;
    wb_args[at] = wb_allows.to_string();
    procs.push(Proc::start("wb", "worker", &wb_args, dir));
    ready_nodes(&client, &mut procs, &["cluster-a", "cluster-b"], 1).await;
    TwoClusters {
        procs,
        client,
        a_args,
        wa_args,
    }
}

/// Root, `cluster-1` (its own broker unless `cluster_extra` names `--broker`) and native
/// workers named `workers`, all READY; with the root's arguments, to restart it.
struct OneCluster {
    procs: Vec<Proc>,
    client: RootClient,
    root: Vec<String>,
}

async fn one_cluster(d: &std::path::Path, cluster_extra: &[&str], workers: &[&str]) -> OneCluster {
    let (root_port, cluster_port) = (free_port(), free_port());
    let root = root_args(d, root_port, &[]);
    let mut procs = vec![Proc::start("root", "root", &root, d)];
    let client = root_client(d, root_port, &mut procs).await;
    let cluster = cluster_args(
        d,
        "cluster-1",
        root_port,
        cluster_port,
        free_port(),
        cluster_extra,
    );
    procs.push(Proc::start("cluster-1", "cluster", &cluster, d));
    serves(d, cluster_port, &mut procs).await;
    for name in workers {
        procs.push(Proc::start(
            name,
            "worker",
            &worker_args(d, name, cluster_port, "cluster-1"),
            d,
        ));
    }
    ready_nodes(&client, &mut procs, &["cluster-1"], workers.len() as u32).await;
    OneCluster {
        procs,
        client,
        root,
    }
}

fn index(procs: &[Proc], name: &str) -> usize {
    procs.iter().position(|p| p.name == name).expect("started")
}

/// Submits a job that prefers cluster-a (by location) and waits until it runs on `wa`.
async fn deploy_on_a(t: &mut TwoClusters, name: &str, marker: &str) -> String {
    let view = t
        .client
        .submit(
            job(name, marker, "cluster_location: Garching").into_bytes(),
            "application/yaml",
        )
        .await
        .unwrap();
    let id = view.id.to_string();
    let client = &t.client;
    let job = until("the job RUNNING on wa", &mut t.procs, async || {
        let job = client.job(&id).await.ok()?;
        (job.state == JobState::Running).then_some(job)
    })
    .await;
    assert_eq!(job.cluster.as_deref(), Some("cluster-a"));
    assert_eq!(job.instances[0].node.as_deref(), Some("wa"));
    id
}

/// Waits until job `id` runs on `node` (of another cluster than before), returning its reasons.
async fn running_on(client: &RootClient, procs: &mut [Proc], id: &str, node: &str) -> Vec<String> {
    let what = format!("the job RUNNING on {node}");
    let job = until(&what, procs, async || {
        let job = client.job(id).await.ok()?;
        let there = job
            .instances
            .iter()
            .any(|i| i.node.as_deref() == Some(node) && i.state == InstanceState::Running);
        (there && job.state == JobState::Running).then_some(job)
    })
    .await;
    job.history.iter().map(|h| h.reason.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_only_fitting_clusters_workers_die_the_job_moves_to_another_cluster() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut t = two_clusters(dir.path(), &[], "/bin/sleep").await;
    let marker = marker(5_000_000);
    let pattern = format!("sleep {marker}");
    let id = deploy_on_a(&mut t, "escalated", &marker).await;

    let wa = index(&t.procs, "wa");
    t.procs[wa].kill();
    t.procs.remove(wa);
    let reasons = running_on(&t.client, &mut t.procs, &id, "wb").await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("escalated by cluster cluster-a")),
        "{reasons:?}"
    );
    let job = t.client.job(&id).await.unwrap();
    assert_eq!(job.cluster.as_deref(), Some("cluster-b"));
    // ids stay unique across the move: the replacement continues the numbering
    assert!(job.instances[1].id.as_str().ends_with("-1"), "{job:?}");
    // the dead worker's process outlived it
    assert_eq!(processes_running(&pattern).len(), 2);

    // wa comes back with it: cluster-a let go of the job, so it stops that copy
    t.procs
        .push(Proc::start("wa again", "worker", &t.wa_args, dir.path()));
    until("the old copy stopped", &mut t.procs, async || {
        (processes_running(&pattern).len() == 1).then_some(())
    })
    .await;
    t.client.terminate(&id).await.unwrap();
    until("no process left", &mut t.procs, async || {
        processes_running(&pattern).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cluster_is_inactive_its_job_moves_after_the_timeout_and_its_copy_stops_on_return()
{
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut t = two_clusters(dir.path(), &["--cluster-timeout", "2s"], "/bin/sleep").await;
    let marker = marker(6_000_000);
    let pattern = format!("sleep {marker}");
    let id = deploy_on_a(&mut t, "orphaned", &marker).await;

    let a = index(&t.procs, "cluster-a");
    t.procs[a].kill();
    t.procs.remove(a);
    let client = &t.client;
    until("cluster-a INACTIVE", &mut t.procs, async || {
        (client.cluster("cluster-a").await.ok()?.state == ClusterState::Inactive).then_some(())
    })
    .await;
    let reasons = running_on(&t.client, &mut t.procs, &id, "wb").await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("cluster cluster-a INACTIVE for more than")),
        "{reasons:?}"
    );
    // wa still runs the first copy: its cluster is gone, not the worker
    assert_eq!(processes_running(&pattern).len(), 2);

    // cluster-a returns on its store: the root's re-sync finds the job moved and has it
    // stopped there
    t.procs.push(Proc::start(
        "cluster-a again",
        "cluster",
        &t.a_args,
        dir.path(),
    ));
    let client = &t.client;
    until(
        "cluster-a ACTIVE and its copy stopped",
        &mut t.procs,
        async || {
            let active = client.cluster("cluster-a").await.ok()?.state == ClusterState::Active;
            (active && processes_running(&pattern).len() == 1).then_some(())
        },
    )
    .await;
    let job = t.client.job(&id).await.unwrap();
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.cluster.as_deref(), Some("cluster-b"));
    t.client.terminate(&id).await.unwrap();
    until("no process left", &mut t.procs, async || {
        processes_running(&pattern).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_root_leaves_jobs_running_and_restarted_on_its_store_has_them_intact() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = dir.path();
    let OneCluster {
        mut procs,
        client,
        root,
    } = one_cluster(d, &[], &["w1"]).await;

    let marker = marker(7_000_000);
    let pattern = format!("sleep {marker}");
    let view = client
        .submit(job("steady", &marker, "").into_bytes(), "application/yaml")
        .await
        .unwrap();
    let id = view.id.to_string();
    until("the job RUNNING", &mut procs, async || {
        (client.job(&id).await.ok()?.state == JobState::Running).then_some(())
    })
    .await;

    procs[0].kill();
    procs.remove(0);
    // nothing below the root stops: the cluster keeps dialing, the job keeps running
    tokio::time::sleep(Duration::from_secs(2)).await;
    for p in procs.iter_mut() {
        assert!(p.alive(), "{} died with the root:\n{}", p.name, p.log());
    }
    assert_eq!(processes_running(&pattern).len(), 1);

    procs.insert(0, Proc::start("root again", "root", &root, d));
    root_answers(&client, &mut procs).await;
    ready_nodes(&client, &mut procs, &["cluster-1"], 1).await;
    let job = client.job(&id).await.expect("the job survived the restart");
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.instances.len(), 1, "{job:?}");
    // the link works both ways again: a new job runs, and termination reaches the worker
    let second = client
        .submit(job_text("after", &marker).into_bytes(), "application/yaml")
        .await
        .unwrap();
    let second = second.id.to_string();
    until("the new job RUNNING", &mut procs, async || {
        (client.job(&second).await.ok()?.state == JobState::Running).then_some(())
    })
    .await;
    assert_eq!(
        processes_running(&pattern).len(),
        2,
        "nothing started twice"
    );
    client.terminate(&id).await.unwrap();
    client.terminate(&second).await.unwrap();
    until("no process left", &mut procs, async || {
        processes_running(&pattern).is_empty().then_some(())
    })
    .await;
}

fn job_text(name: &str, marker: &str) -> String {
    job(name, &format!("{marker}1"), "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_killed_and_restarted_under_load_loses_no_command_and_repeats_none() {
    if !require::mosquitto() {
        return;
    }
    let mut mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = dir.path();
    // heartbeats missed while the broker is down must not make the node LOST here
    let broker = mosquitto.url();
    let extra = ["--broker", &broker, "--missed-heartbeats", "100"];
    let OneCluster {
        mut procs, client, ..
    } = one_cluster(d, &extra, &["w1"]).await;

    const JOBS: usize = 12;
    let marker = marker(4_000_000);
    let pattern = format!("sleep {marker}");
    let mut ids = Vec::new();
    for n in 0..JOBS {
        if n == JOBS / 3 {
            mosquitto.kill();
        }
        if n == 2 * JOBS / 3 {
            assert!(mosquitto.restart(), "mosquitto restarts on its port");
        }
        let text = job(&format!("load-{n}"), &format!("{marker}{n:02}"), "");
        let view = client
            .submit(text.into_bytes(), "application/yaml")
            .await
            .unwrap();
        ids.push(view.id.to_string());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until("every job RUNNING", &mut procs, async || {
        for id in &ids {
            if client.job(id).await.ok()?.state != JobState::Running {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert_eq!(
        processes_running(&pattern).len(),
        JOBS,
        "each job started exactly once"
    );
    for id in &ids {
        client.terminate(id).await.unwrap();
    }
    until("no process left", &mut procs, async || {
        processes_running(&pattern).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_job_restarts_on_its_node_then_moves_to_another_then_fails_with_the_reason() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = dir.path();
    let OneCluster {
        mut procs, client, ..
    } = one_cluster(d, &[], &["w1", "w2"]).await;

    // `sleep not-a-number` exits with code 1 at once, every time
    let policy = "restart:\n  policy: on-failure\n  limit: 1\n  backoff: 100ms";
    let view = client
        .submit(
            job("crasher", "not-a-number", policy).into_bytes(),
            "application/yaml",
        )
        .await
        .unwrap();
    let id = view.id.to_string();
    let job = until("the job FAILED", &mut procs, async || {
        let job = client.job(&id).await.ok()?;
        (job.state == JobState::Failed).then_some(job)
    })
    .await;
    let placements: Vec<(Option<&str>, InstanceState)> = job
        .instances
        .iter()
        .map(|i| (i.node.as_deref(), i.state))
        .collect();
    assert_eq!(
        placements,
        [
            (Some("w1"), InstanceState::Failed),
            (Some("w2"), InstanceState::Failed)
        ],
        "{job:?}"
    );
    for instance in &job.instances {
        // restarted once on its node before giving up there
        let states: Vec<InstanceState> = instance.history.iter().map(|h| h.state).collect();
        assert!(states.contains(&InstanceState::Restarting), "{states:?}");
        assert_eq!(instance.exit_code, Some(1));
    }
    let moved = &job.instances[1].history[0].reason;
    assert!(
        moved.contains("replaces") && moved.contains("failed on w1"),
        "{moved}"
    );
    let last = &job.history.last().unwrap().reason;
    assert!(last.contains("restart limit 1 reached"), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_migrates_to_another_cluster_make_before_break_and_scales_there() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut t = two_clusters(dir.path(), &[], "/bin/sleep").await;
    let marker = marker(3_000_000);
    let pattern = format!("sleep {marker}");
    let id = deploy_on_a(&mut t, "traveller", &marker).await;

    let moving = t
        .client
        .migrate(&id, None, Some("cluster-b"), None)
        .await
        .unwrap();
    assert_eq!(moving.state, JobState::Migrating);
    let reasons = running_on(&t.client, &mut t.procs, &id, "wb").await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("migrated to cluster cluster-b")),
        "{reasons:?}"
    );
    let client = &t.client;
    until("the old instance stopped", &mut t.procs, async || {
        let job = client.job(&id).await.ok()?;
        let old = job.instances[0].state == InstanceState::Terminated;
        (old && processes_running(&pattern).len() == 1).then_some(())
    })
    .await;
    let job = t.client.job(&id).await.unwrap();
    assert_eq!(job.cluster.as_deref(), Some("cluster-b"));
    // the new one ran before the old one was told to stop
    let started = job.instances[1]
        .history
        .iter()
        .find(|h| h.state == InstanceState::Running)
        .unwrap()
        .at_ms;
    let stopping = job.instances[0]
        .history
        .iter()
        .find(|h| h.state == InstanceState::Terminating)
        .unwrap()
        .at_ms;
    assert!(started <= stopping, "{job:?}");

    // two replicas on cluster-b's one node, then back to one
    t.client.scale(&id, 2).await.unwrap();
    let client = &t.client;
    until("two replicas running", &mut t.procs, async || {
        let job = client.job(&id).await.ok()?;
        (job.state == JobState::Running && processes_running(&pattern).len() == 2).then_some(())
    })
    .await;
    t.client.scale(&id, 1).await.unwrap();
    until("one replica left", &mut t.procs, async || {
        let job = client.job(&id).await.ok()?;
        (job.state == JobState::Running && processes_running(&pattern).len() == 1).then_some(())
    })
    .await;
    t.client.terminate(&id).await.unwrap();
    until("no process left", &mut t.procs, async || {
        processes_running(&pattern).is_empty().then_some(())
    })
    .await;
}

/// Starts cluster `names.0`, dialing the roots on `roots` in that order, and its worker
/// `names.1`, once the cluster serves. Root replicas on etcd do not share a CA yet, so the
/// group and its members run `--insecure` (loopback only).
#[cfg(feature = "etcd")]
async fn cluster_of_roots(
    d: &std::path::Path,
    procs: &mut Vec<Proc>,
    names: (&str, &str),
    roots: [u16; 2],
) {
    let (cluster, worker) = names;
    let port = free_port();
    let mut args = cluster_args(d, cluster, roots[0], port, free_port(), &["--insecure"]);
    let at = args.iter().position(|a| a == "--root").unwrap();
    args[at + 1] = roots.map(|p| format!("http://127.0.0.1:{p}")).join(",");
    // no join token without security
    let at = args.iter().position(|a| a == "--join-token-file").unwrap();
    args.drain(at..at + 2);
    procs.push(Proc::start(cluster, "cluster", &args, d));
    let health = RootClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    root_answers(&health, procs).await;
    let mut args = worker_args(d, worker, port, cluster);
    let at = args.iter().position(|a| a == "--join-token-file").unwrap();
    args.drain(at..at + 2);
    args[1] = format!("http://127.0.0.1:{port}");
    args.push("--insecure".into());
    procs.push(Proc::start(worker, "worker", &args, d));
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_roots_on_etcd_the_standby_takes_over_when_the_leader_is_killed() {
    use edgeio::stores::testing::{fresh_prefix, EtcdServer};
    if !require::etcd() {
        return;
    }
    let etcd = EtcdServer::start().expect("etcd starts");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = dir.path();
    let member = etcd.endpoint.trim_start_matches("http://").to_string();
    let prefix = fresh_prefix("roots");
    let store = format!("etcd://{member}/{prefix}");
    let (a_port, b_port) = (free_port(), free_port());
    // root replicas on etcd do not share a CA yet: the group runs --insecure
    let root = |port: u16| root_args(d, port, &["--store", &store, "--insecure"]);
    let mut procs = vec![Proc::start("root-a", "root", &root(a_port), d)];
    let a = RootClient::new(&format!("http://127.0.0.1:{a_port}")).unwrap();
    root_answers(&a, &mut procs).await;
    // the second is a standby: it serves the API by forwarding it to the leader
    procs.push(Proc::start("root-b", "root", &root(b_port), d));
    let b = RootClient::new(&format!("http://127.0.0.1:{b_port}")).unwrap();
    root_answers(&b, &mut procs).await;
    until(
        "the standby forwarding to the leader",
        &mut procs,
        async || b.clusters().await.ok(),
    )
    .await;

    // the cluster is given the standby first: it links there, and the leader's engine
    // reaches it through etcd (the standby passes messages both ways)
    cluster_of_roots(d, &mut procs, ("cluster-1", "w1"), [b_port, a_port]).await;
    // a second cluster is given the leader first: it links there
    cluster_of_roots(d, &mut procs, ("cluster-2", "w2"), [a_port, b_port]).await;
    ready_nodes(&a, &mut procs, &["cluster-1", "cluster-2"], 1).await;
    let etcd_view = edgeio::stores::StoreConfig::etcd(vec![etcd.endpoint.clone()], prefix)
        .open()
        .await
        .expect("etcd answers");
    let links = async || -> Vec<String> {
        let listing = etcd_view.list("relay/links/").await.unwrap();
        listing.items.into_iter().map(|kv| kv.key).collect()
    };
    assert_eq!(
        links().await,
        [
            format!("relay/links/cluster-1/127.0.0.1:{b_port}"),
            format!("relay/links/cluster-2/127.0.0.1:{a_port}")
        ],
        "each cluster is linked at the replica it dialed first"
    );

    // a job submitted through the standby is the leader's
    let marker = marker(2_000_000);
    let pattern = format!("sleep {marker}");
    let id = b
        .submit(job("ha", &marker, "").into_bytes(), "application/yaml")
        .await
        .unwrap()
        .id
        .to_string();
    until("the job RUNNING", &mut procs, async || {
        (a.job(&id).await.ok()?.state == JobState::Running).then_some(())
    })
    .await;
    // errors pass through as the leader gave them
    let missing = b.job("no-such-job").await.unwrap_err();
    assert_eq!(missing.status(), Some(404), "{missing}");

    // the leader dies: the standby wins the election, reads the state from etcd and finds
    // the first cluster linked at itself; the second redials down its list to it
    procs[0].kill();
    procs.remove(0);
    ready_nodes(&b, &mut procs, &["cluster-1", "cluster-2"], 1).await;
    until(
        "the second cluster linked at the new leader",
        &mut procs,
        async || {
            let now = links().await;
            (now.len() == 2 && now.iter().all(|k| k.ends_with(&format!(":{b_port}")))).then_some(())
        },
    )
    .await;
    let known = b
        .job(&id)
        .await
        .expect("the job is known to the new leader");
    assert_eq!(known.state, JobState::Running);
    assert_eq!(
        processes_running(&pattern).len(),
        1,
        "nothing started twice"
    );
    // a new job for the cluster that moved over reaches it
    let text = job(
        "after-failover",
        &format!("{marker}1"),
        "cluster: cluster-2",
    );
    let second = b
        .submit(text.into_bytes(), "application/yaml")
        .await
        .unwrap()
        .id
        .to_string();
    until(
        "a new job RUNNING on cluster-2 through the new leader",
        &mut procs,
        async || {
            let job = b.job(&second).await.ok()?;
            (job.state == JobState::Running && job.cluster.as_deref() == Some("cluster-2"))
                .then_some(())
        },
    )
    .await;
    assert_eq!(processes_running(&pattern).len(), 2);
    b.terminate(&id).await.unwrap();
    b.terminate(&second).await.unwrap();
    until("no process left", &mut procs, async || {
        processes_running(&pattern).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_whose_new_placement_fails_leaves_the_job_where_it_ran() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // wb may run /bin/true only: it refuses the job
    let mut t = two_clusters(dir.path(), &[], "/bin/true").await;
    let marker = marker(1_000_000);
    let pattern = format!("sleep {marker}");
    let id = deploy_on_a(&mut t, "homebody", &marker).await;
    t.client
        .migrate(&id, None, Some("cluster-b"), None)
        .await
        .unwrap();
    let client = &t.client;
    let job = until("the migration abandoned", &mut t.procs, async || {
        let job = client.job(&id).await.ok()?;
        (job.state == JobState::Running
            && job
                .history
                .iter()
                .any(|h| h.reason.contains("migration abandoned")))
        .then_some(job)
    })
    .await;
    assert_eq!(job.cluster.as_deref(), Some("cluster-a"), "{job:?}");
    assert_eq!(job.instances[0].state, InstanceState::Running);
    assert_eq!(processes_running(&pattern).len(), 1);
    t.client.terminate(&id).await.unwrap();
    let client = &t.client;
    until("the job TERMINATED", &mut t.procs, async || {
        let done = client.job(&id).await.ok()?.state == JobState::Terminated;
        (done && processes_running(&pattern).is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_one_cluster_cannot_take_are_spread_over_both_and_all_stop_on_terminate() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut t = two_clusters(dir.path(), &[], "/bin/sleep").await;
    let marker = marker(5_000_000);
    let pattern = format!("sleep {marker}");
    // each replica takes half of a node's cores: two fit on a node, three on no cluster
    let total = t.client.nodes("cluster-a").await.unwrap()[0]
        .total
        .cpu_millis;
    let half = total / 2;
    let text = format!(
        "api_version: v1\njob_name: spread\nimage: /bin/sleep\nimage_runtime: native\n\
         args: [\"{marker}\"]\nreplicas: 3\nrequirements:\n  cpu: {half}m\n  memory: 8Mi\n"
    );
    let id = t
        .client
        .submit(text.into_bytes(), "application/yaml")
        .await
        .unwrap()
        .id
        .to_string();
    let client = &t.client;
    let job = until(
        "three replicas running on two clusters",
        &mut t.procs,
        async || {
            let job = client.job(&id).await.ok()?;
            (job.state == JobState::Running && processes_running(&pattern).len() == 3)
                .then_some(job)
        },
    )
    .await;
    let mut parts: Vec<u32> = job.parts.iter().map(|p| p.replicas).collect();
    parts.sort();
    assert_eq!(parts, [1, 2], "{job:?}");
    let mut nodes: Vec<String> = job
        .instances
        .iter()
        .filter_map(|i| i.node.clone())
        .collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes, ["wa", "wb"]);

    t.client.terminate(&id).await.unwrap();
    until("every part stopped", &mut t.procs, async || {
        let job = client.job(&id).await.ok()?;
        (job.state == JobState::Terminated && processes_running(&pattern).is_empty()).then_some(())
    })
    .await;
}
