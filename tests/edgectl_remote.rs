//! `edgectl` against a root: deploy, get, describe, delete and logs through the real REST
//! router (`edgeio_transport_ws::router`) over loopback, in front of the in-memory
//! `FakeRootApi`. The CLI runs in-process through `edgeio::cli::run`, as a user would call it.
#![cfg(all(feature = "testing", feature = "transport-ws"))]

use edgeio::transport_ws::testing::FakeRootApi;
use edgeio::transport_ws::{router, serve, ServerHandle};
use edgeio_core::api::{ApiError, ClusterView, InstanceView, NodeView};
use edgeio_core::model::{Arch, Capabilities, InstanceId, Location, Resources, Tier};
use edgeio_core::scheduler::Unschedulable;
use edgeio_core::state::{ClusterState, HistoryEntry, InstanceState, JobState, NodeState};
use edgeio_core::wire::{ClusterAggregate, HostUsage, LabelSummary, NodeFilter};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const THESIS: &str = "api_version: v0.1
job_name: image_detection
image: quay.io/codait/max-object-detector
image_runtime: docker
requirements:
    cpu: 2 # cores
    memory: 1000 # in MB
cluster_location: Garching
worker_node: e580
";

/// A root on 127.0.0.1 served by its own runtime, so the CLI (which builds its own) runs
/// on the test's thread as it would in a terminal.
struct Root {
    api: Arc<FakeRootApi>,
    url: String,
    server: Option<ServerHandle>,
    runtime: tokio::runtime::Runtime,
}

impl Root {
    fn start() -> Root {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let api = Arc::new(FakeRootApi::new());
        let server = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            serve(listener, router(api.clone())).expect("serve")
        });
        Root {
            api,
            url: server.url(),
            server: Some(server),
            runtime,
        }
    }

    /// Runs edgectl with `--server` pointing here.
    fn edgectl(&self, args: &[&str], stdin: &[u8]) -> Outcome {
        let mut full = vec!["--server", self.url.as_str()];
        full.extend_from_slice(args);
        edgectl(&full, stdin)
    }

    fn deploy_thesis(&self) {
        let outcome = self.edgectl(&["deploy", "-f", "-"], THESIS.as_bytes());
        assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = self.runtime.block_on(server.shutdown());
        }
    }
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn edgectl(args: &[&str], stdin: &[u8]) -> Outcome {
    let mut input = stdin;
    let mut out = Vec::new();
    let mut err = Vec::new();
    // a config file that does not exist: no user's contexts reach these tests
    let argv = [
        "edgectl",
        "--config",
        "/nonexistent/edgectl-test/config.yaml",
    ]
    .into_iter()
    .chain(args.iter().copied());
    let code = edgeio::cli::run(argv, &mut input, &mut out, &mut err);
    Outcome {
        code,
        stdout: String::from_utf8(out).expect("stdout is UTF-8"),
        stderr: String::from_utf8(err).expect("stderr is UTF-8"),
    }
}

/// A file in the temp dir with the given extension, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn with(extension: &str, contents: &[u8]) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "edgectl-remote-{}-{}.{extension}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn cluster(id: &str, location: &str) -> ClusterView {
    ClusterView {
        id: id.to_string(),
        name: format!("{id}-name"),
        state: ClusterState::Active,
        history: Vec::new(),
        location: Some(Location::named(location)),
        labels: Default::default(),
        aggregate: Some(ClusterAggregate {
            nodes: 2,
            ready_nodes: 1,
            total: Resources::ZERO,
            free: Resources::ZERO,
            largest_free: Resources::ZERO,
            architectures: Vec::new(),
            runtimes: Vec::new(),
            labels: Default::default(),
            location: None,
            node_label_summary: Some(LabelSummary::of([&Default::default()])),
            node_filter: Some(NodeFilter::of(["node-1"].into_iter())),
            deploys_seen: None,
        }),
        last_seen_ms: 1,
    }
}

fn node(id: &str, cpu_millis: u64) -> NodeView {
    let free = Resources {
        cpu_millis,
        memory_bytes: 3 << 29,
        disk_bytes: 0,
        gpus: 0,
    };
    NodeView {
        id: id.to_string(),
        name: format!("{id}-host"),
        state: NodeState::Ready,
        capabilities: Capabilities {
            arch: Arch::Arm64,
            cores: 4,
            memory_bytes: 8 << 30,
            disk_bytes: 0,
            gpus: 0,
            runtimes: Vec::new(),
            labels: Default::default(),
            location: None,
        },
        free,
        total: free,
        instances: 0,
        last_seen_ms: 1,
        usage: (id == "n1").then_some(HostUsage {
            cpu_permille: 125,
            memory_permille: 431,
        }),
    }
}

/// A port nothing listens on.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn deploy_prints_the_id_and_state() {
    let root = Root::start();
    let file = TempFile::with("yaml", THESIS.as_bytes());
    let outcome = root.edgectl(&["deploy", "-f", file.path()], b"");
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(outcome.stdout, "job-1 REQUESTED\n");
    assert_eq!(outcome.stderr, "");

    // A .json file is sent as JSON; stdin as YAML.
    let json = TempFile::with(
        "json",
        br#"{"api_version": "v1", "job_name": "web", "image": "nginx", "image_runtime": "docker",
            "requirements": {"cpu": "500m", "memory": "64Mi"}}"#,
    );
    let outcome = root.edgectl(&["deploy", "-f", json.path(), "-o", "json"], b"");
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let view: serde_json::Value = serde_json::from_str(&outcome.stdout).expect("json");
    assert_eq!(view["id"], "job-2");
    assert_eq!(view["spec"]["resources"]["cpu_millis"], 500);

    let stdin = THESIS.replace("image_detection", "from-stdin");
    let outcome = root.edgectl(&["deploy", "-f", "-"], stdin.as_bytes());
    assert_eq!(
        (outcome.code, outcome.stdout.as_str()),
        (0, "job-3 REQUESTED\n")
    );
}

#[test]
fn a_refused_descriptor_lists_each_problem_and_exits_2() {
    let root = Root::start();
    let broken = THESIS
        .replace("image: quay.io/codait/max-object-detector\n", "")
        .replace("memory: 1000", "memory: -5");
    let file = TempFile::with("yaml", broken.as_bytes());
    let outcome = root.edgectl(&["deploy", "-f", file.path()], b"");
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert_eq!(outcome.stdout, "");
    let lines: Vec<&str> = outcome.stderr.lines().collect();
    let path = file.path();
    assert!(
        lines.contains(&format!("{path}: image: (missing): is required").as_str()),
        "{lines:?}"
    );
    assert!(
        lines.contains(
            &format!("{path}: requirements.memory: -5: must be a positive number of MB").as_str()
        ),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
}

#[test]
fn deploying_a_live_name_again_is_one_line_and_exit_2() {
    let root = Root::start();
    root.deploy_thesis();
    let outcome = root.edgectl(&["deploy", "-f", "-"], THESIS.as_bytes());
    assert_eq!(outcome.code, 2);
    assert_eq!(outcome.stderr.lines().count(), 1, "{}", outcome.stderr);
    assert!(
        outcome.stderr.starts_with(
            "edgectl: a job named \"image_detection\" is alive: job-1 (REQUESTED): job_name: image_detection: "
        ),
        "{}",
        outcome.stderr
    );
}

#[test]
fn an_unreadable_file_is_exit_2_before_any_request() {
    // No server at all: the file is read first.
    let outcome = edgectl(
        &[
            "--server",
            &closed_port_url(),
            "deploy",
            "-f",
            "/no/such/job.yaml",
        ],
        b"",
    );
    assert_eq!(outcome.code, 2);
    assert_eq!(
        outcome.stderr,
        "/no/such/job.yaml: cannot read: no such file\n"
    );
}

#[test]
fn get_jobs_prints_a_table_or_json() {
    let root = Root::start();
    root.deploy_thesis();
    root.api.update_job("job-1", |job| {
        job.state = JobState::Running;
        job.cluster = Some("cluster-a".into());
        job.instances = vec![InstanceView {
            id: InstanceId::new("inst-1").expect("id"),
            node: Some("e580".into()),
            cluster: None,
            state: InstanceState::Running,
            exit_code: None,
            history: Vec::new(),
        }];
    });
    let outcome = root.edgectl(&["get", "jobs"], b"");
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let lines: Vec<Vec<&str>> = outcome
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["ID", "NAME", "STATE", "CLUSTER", "NODE", "INSTANCES", "AGE"]
    );
    assert_eq!(
        lines[1][..6],
        [
            "job-1",
            "image_detection",
            "RUNNING",
            "cluster-a",
            "e580",
            "1/1"
        ]
    );
    assert!(lines[1][6].ends_with('s'), "{:?}", lines[1]);
    assert_eq!(lines.len(), 2);

    let outcome = root.edgectl(&["get", "jobs", "-o", "json"], b"");
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let jobs: serde_json::Value = serde_json::from_str(&outcome.stdout).expect("json");
    assert_eq!(jobs[0]["id"], "job-1");
    assert_eq!(jobs[0]["state"], "RUNNING");

    let outcome = root.edgectl(&["get", "jobs", "--cluster", "cluster-b"], b"");
    assert_eq!(outcome.stdout.lines().count(), 1, "header only");
}

#[test]
fn get_clusters_and_nodes_print_tables() {
    let root = Root::start();
    root.api.add_cluster(
        cluster("cluster-a", "Garching"),
        vec![node("n1", 1500), node("n2", 2000)],
    );
    root.api
        .add_cluster(cluster("cluster-b", "Munich"), vec![node("n3", 250)]);

    let outcome = root.edgectl(&["get", "clusters"], b"");
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(
        outcome.stdout,
        "ID          NAME             STATE    NODES   LOCATION\n\
         cluster-a   cluster-a-name   ACTIVE   1/2     Garching\n\
         cluster-b   cluster-b-name   ACTIVE   1/2     Munich\n"
    );

    // the aggregate names no node: a label summary and a node filter of bounded size; the
    // nodes themselves are listed under /clusters/{id}/nodes
    let outcome = root.edgectl(&["get", "clusters", "-o", "json"], b"");
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let clusters: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
    let aggregate = &clusters[0]["aggregate"];
    assert_eq!(aggregate["ready_nodes"], 1);
    assert_eq!(aggregate["node_filter"]["hashes"], 3);
    assert!(aggregate["node_label_summary"]["values"].is_object());
    assert!(aggregate.get("node_names").is_none(), "{aggregate}");
    assert!(aggregate.get("node_labels").is_none(), "{aggregate}");

    let outcome = root.edgectl(&["get", "nodes"], b"");
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(
        outcome.stdout,
        "ID   NAME      STATE   CLUSTER     ARCH    FREE-CPU   FREE-MEM   CPU%   MEM%\n\
         n1   n1-host   READY   cluster-a   arm64   1500m      1.5GiB     12.5   43.1\n\
         n2   n2-host   READY   cluster-a   arm64   2          1.5GiB     -      -\n\
         n3   n3-host   READY   cluster-b   arm64   250m       1.5GiB     -      -\n"
    );

    let outcome = root.edgectl(
        &["get", "nodes", "--cluster", "cluster-b", "-o", "yaml"],
        b"",
    );
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(
        outcome
            .stdout
            .starts_with("- cluster: cluster-b\n  id: n3\n"),
        "{}",
        outcome.stdout
    );

    let outcome = root.edgectl(&["get", "nodes", "--cluster", "nope"], b"");
    assert_eq!(outcome.code, 2);
    assert_eq!(outcome.stderr, "edgectl: cluster \"nope\" not found\n");
}

#[test]
fn describe_job_shows_instances_history_and_the_schedulers_reasons() {
    let root = Root::start();
    root.deploy_thesis();
    let why = Unschedulable::new(3)
        .in_tier(Tier::Nodes)
        .refused(
            "resources",
            2,
            "insufficient memory (need 1000 MiB, best free 512 MiB)",
        )
        .refused("arch", 1, "arch arm64 is not amd64");
    root.api.update_job("job-1", |job| {
        job.cluster = Some("cluster-a".into());
        job.state = JobState::NotDeployable;
        job.history.push(HistoryEntry {
            state: JobState::ScheduledCluster,
            at_ms: 1_714_564_800_000,
            reason: "cluster-a is closest to Garching".into(),
        });
        job.history.push(HistoryEntry {
            state: JobState::NotDeployable,
            at_ms: 1_714_564_801_000,
            reason: "no node fits".into(),
        });
        job.instances = vec![InstanceView {
            id: InstanceId::new("inst-1").expect("id"),
            node: Some("e580".into()),
            cluster: None,
            state: InstanceState::Failed,
            exit_code: Some(137),
            history: vec![HistoryEntry {
                state: InstanceState::Failed,
                at_ms: 1_714_564_800_500,
                reason: "exit code 137 (OOM killed)".into(),
            }],
        }];
        job.unschedulable = vec![why.clone()];
    });
    let outcome = root.edgectl(&["describe", "job", "job-1"], b"");
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let text = outcome.stdout;
    for needle in [
        "Name:      image_detection\n",
        "ID:        job-1\n",
        "State:     NOT_DEPLOYABLE\n",
        "Cluster:   cluster-a\n",
        "Nodes:     e580\n",
        "Image:     quay.io/codait/max-object-detector (docker)\n",
        "inst-1   e580   FAILED   137    exit code 137 (OOM killed)\n",
        "REQUESTED",
        "2024-05-01T12:00:00Z   SCHEDULED_CLUSTER   cluster-a is closest to Garching\n",
        "2024-05-01T12:00:01Z   NOT_DEPLOYABLE      no node fits\n",
        "Unschedulable:\n  - 2 nodes: insufficient memory (need 1000 MiB, best free 512 MiB); 1 node: arch arm64 is not amd64\n",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    assert_eq!(format!("{why}"), "2 nodes: insufficient memory (need 1000 MiB, best free 512 MiB); 1 node: arch arm64 is not amd64");

    let outcome = root.edgectl(&["describe", "job", "job-1", "-o", "yaml"], b"");
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(
        outcome.stdout.contains("state: NOT_DEPLOYABLE"),
        "{}",
        outcome.stdout
    );

    let outcome = root.edgectl(&["describe", "job", "nope"], b"");
    assert_eq!(outcome.code, 2);
    assert_eq!(outcome.stderr, "edgectl: job \"nope\" not found\n");
}

#[test]
fn delete_prints_terminating() {
    let root = Root::start();
    root.deploy_thesis();
    let outcome = root.edgectl(&["delete", "job", "job-1"], b"");
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(outcome.stdout, "job-1 TERMINATING\n");
    let outcome = root.edgectl(&["delete", "job", "job-9"], b"");
    assert_eq!(outcome.code, 2);
}

#[test]
fn scale_and_migrate_print_the_new_state() {
    let root = Root::start();
    root.deploy_thesis();
    let outcome = root.edgectl(&["scale", "job-1", "3"], b"");
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(outcome.stdout, "job-1 SCALING\n");
    let outcome = root.edgectl(&["migrate", "job-1", "--node", "e580"], b"");
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(outcome.stdout, "job-1 MIGRATING\n");
    let outcome = root.edgectl(&["migrate", "job-1"], b"");
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    // usage errors before any request: a count out of range, both targets at once
    for args in [
        &["scale", "job-1", "0"][..],
        &["scale", "job-1", "many"],
        &["migrate", "job-1", "--node", "a", "--cluster", "b"],
    ] {
        let outcome = root.edgectl(args, b"");
        assert_eq!(outcome.code, 2, "{args:?}: {}", outcome.stderr);
    }
    let outcome = root.edgectl(&["scale", "job-9", "2"], b"");
    assert_eq!(outcome.code, 2, "an unknown job is the user's mistake");
}

#[test]
fn logs_are_printed_as_they_are() {
    let root = Root::start();
    root.deploy_thesis();
    for line in ["starting\n", "model loaded\n", "serving on :5000\n"] {
        root.api.push_log("job-1", line);
    }
    let outcome = root.edgectl(&["logs", "job-1"], b"");
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(outcome.stdout, "starting\nmodel loaded\nserving on :5000\n");
    let outcome = root.edgectl(&["logs", "job-1", "--tail", "1"], b"");
    assert_eq!(outcome.stdout, "serving on :5000\n");
    let outcome = root.edgectl(&["logs", "job-1", "--tail", "x"], b"");
    assert_eq!(outcome.code, 2, "a usage error");
}

#[test]
fn an_unreachable_server_is_one_line_and_exit_1() {
    let url = closed_port_url();
    let outcome = edgectl(&["--server", &url, "get", "jobs"], b"");
    assert_eq!(outcome.code, 1);
    assert_eq!(outcome.stdout, "");
    assert_eq!(
        outcome.stderr,
        format!("edgectl: cannot reach {url}: connection refused\n")
    );
}

#[test]
fn server_failures_exit_1_and_bad_urls_exit_2() {
    let root = Root::start();
    root.api.fail_next(ApiError::Unavailable {
        reason: "cluster-a does not answer".into(),
    });
    let outcome = root.edgectl(&["get", "jobs"], b"");
    assert_eq!(outcome.code, 1);
    assert_eq!(
        outcome.stderr,
        "edgectl: unavailable: cluster-a does not answer\n"
    );

    let outcome = edgectl(&["--server", "ftp://root:7070", "get", "jobs"], b"");
    assert_eq!(outcome.code, 2);
    assert_eq!(outcome.stderr.lines().count(), 1, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("ftp://root:7070"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn watch_is_accepted_and_a_failure_ends_it() {
    // Watching stops at the first failure, so against no server it returns at once.
    let url = closed_port_url();
    for args in [
        &["get", "jobs", "--watch"][..],
        &["describe", "job", "job-1", "-w"],
    ] {
        let mut full = vec!["--server", url.as_str()];
        full.extend_from_slice(args);
        let outcome = edgectl(&full, b"");
        assert_eq!(outcome.code, 1, "{args:?}: {}", outcome.stderr);
        assert!(
            outcome.stderr.contains("cannot reach"),
            "{}",
            outcome.stderr
        );
    }
    let outcome = edgectl(&["logs", "job-1", "--watch"], b"");
    assert_eq!(outcome.code, 2, "logs has no --watch");
}
