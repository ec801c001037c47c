//! The reference binaries with every runtime of the default build, as processes: a `worker`
//! started without runtime flags runs a Docker job and a unikernel job deployed through the
//! root's REST API, `worker --help` names its runtimes and their switches, and the
//! quickstart's root runs a Docker job deployed into it.
//!
//! Tests that need Docker or qemu ask `require` first: without the component they are
//! skipped with a printed reason, or fail when `EDGEIO_REQUIRE` names it (as in CI).
#![cfg(all(
    feature = "roles",
    feature = "testing",
    feature = "runtime-docker",
    feature = "runtime-mirage"
))]

mod support;

use edgeio::runtime_docker::testing::{docker, docker_ok, ensure_image, IMAGE};
use edgeio::runtime_mirage::testing::{kernel, Kernel, HELLO};
use edgeio::state::{InstanceState, JobState};
use edgeio::testing::require;
use edgeio::transport_ws::RootClient;
use futures::StreamExt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{
    binary, cluster_of, processes_running, root_and_cluster, until, Proc, RUNNING_WITHIN,
};

/// A job running the test image until SIGTERM (which ends it at once).
fn docker_job(name: &str) -> String {
    format!(
        "api_version: v1\njob_name: {name}\nimage: {IMAGE}\nimage_runtime: docker\n\
         args: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done\"]\n\
         requirements:\n  cpu: 100m\n  memory: 32Mi\n"
    )
}

/// A job booting the kernel at `image` under the unikernel runtime.
fn unikernel_job(name: &str, image: &Path) -> String {
    format!(
        "api_version: v1\njob_name: {name}\nimage: {:?}\nimage_runtime: unikernel\n\
         requirements:\n  cpu: 100m\n  memory: 32Mi\n",
        image.display().to_string()
    )
}

/// Ids of the containers (running or not) whose `edgeio.job` label starts with `job_prefix`.
/// One `docker ps` lists ids and labels together: other tests remove their containers
/// meanwhile, so a list-then-inspect would race with them.
fn containers(job_prefix: &str) -> Vec<String> {
    docker_ok(&[
        "ps",
        "-a",
        "--filter",
        "label=edgeio.job",
        "--format",
        "{{.ID}} {{.Label \"edgeio.job\"}}",
    ])
    .lines()
    .filter_map(|line| line.split_once(' '))
    .filter(|(_, job)| job.starts_with(job_prefix))
    .map(|(id, _)| id.to_string())
    .collect()
}

/// Removes the containers of jobs named `.0`, also when the test failed half-way.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        for c in containers(&self.0) {
            let _ = docker(&["rm", "-f", &c]);
        }
    }
}

/// `worker` arguments with no runtime flag but the kernel allow list and software emulation
/// (KVM took seconds to boot a guest on these nested-virtualisation machines).
fn default_worker(dir: &Path, name: &str, cluster_port: u16, kernels: &[&Path]) -> Vec<String> {
    let mut args = cluster_of(dir, cluster_port, "cluster");
    args.extend([
        "--name".into(),
        name.into(),
        "--data".into(),
        dir.join(name).display().to_string(),
        "--kvm".into(),
        "off".into(),
    ]);
    if !kernels.is_empty() {
        let list: Vec<String> = kernels.iter().map(|k| k.display().to_string()).collect();
        args.extend(["--allow-kernel".into(), list.join(",")]);
    }
    args
}

/// Root, cluster and a default worker named `name`, READY at the root.
async fn hierarchy(dir: &Path, name: &str, kernels: &[&Path]) -> (Vec<Proc>, RootClient) {
    let (mut procs, client, cluster_port) = root_and_cluster(dir).await;
    procs.push(Proc::start(
        name,
        "worker",
        &default_worker(dir, name, cluster_port, kernels),
        dir,
    ));
    until("the worker READY at the root", &mut procs, async || {
        let clusters = client.clusters().await.ok()?;
        clusters
            .iter()
            .any(|c| c.aggregate.as_ref().is_some_and(|a| a.ready_nodes == 1))
            .then_some(())
    })
    .await;
    (procs, client)
}

/// The runtimes the worker registered with, as its cluster reports them.
async fn offered_runtimes(client: &RootClient) -> Vec<String> {
    let clusters = client.clusters().await.expect("clusters");
    let nodes = client.nodes(&clusters[0].id).await.expect("nodes");
    nodes[0]
        .capabilities
        .runtimes
        .iter()
        .map(|r| r.kind.to_string())
        .collect()
}

/// Every reason in a job's history and its instances' histories.
fn reasons(job: &edgeio::api::JobView) -> Vec<String> {
    job.history
        .iter()
        .map(|h| h.reason.clone())
        .chain(
            job.instances
                .iter()
                .flat_map(|i| i.history.iter().map(|h| h.reason.clone())),
        )
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_worker_runs_a_docker_job_deployed_through_the_root() {
    if !require::docker() {
        return;
    }
    ensure_image();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let name = format!("rt-docker-{}", std::process::id());
    let _sweep = Sweep(name.clone());
    let (mut procs, client) = hierarchy(dir.path(), &format!("w-{name}"), &[]).await;
    let runtimes = offered_runtimes(&client).await;
    assert!(runtimes.contains(&"docker".to_string()), "{runtimes:?}");

    let view = client
        .submit(docker_job(&name).into_bytes(), "application/yaml")
        .await
        .expect("the job is accepted");
    let id = view.id.to_string();
    until("the docker job RUNNING", &mut procs, async || {
        (client.job(&id).await.ok()?.state == JobState::Running).then_some(())
    })
    .await;
    assert_eq!(containers(&name).len(), 1, "one container for the job");

    client.terminate(&id).await.expect("terminate");
    until(
        "the job TERMINATED and its container gone",
        &mut procs,
        async || {
            let job = client.job(&id).await.ok()?;
            (job.state == JobState::Terminated && containers(&name).is_empty()).then_some(())
        },
    )
    .await;
    for p in procs.iter_mut().rev() {
        let name = p.name.clone();
        assert!(p.stop(), "{name} did not stop cleanly:\n{}", p.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_worker_boots_an_allowed_unikernel_and_refuses_one_it_was_not_given() {
    if !require::qemu() {
        return;
    }
    let kernels = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernels");
    let allowed = kernel(Kernel::Loop, &kernels);
    let other = kernel(Kernel::Exit(3), &kernels);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = format!("w-rt-mirage-{}", std::process::id());
    let (mut procs, client) = hierarchy(dir.path(), &node, &[&allowed]).await;
    let runtimes = offered_runtimes(&client).await;
    assert!(runtimes.contains(&"mirage".to_string()), "{runtimes:?}");
    // the unikernels' qemu runs name the worker's state folder on their command lines
    let state = dir.path().join(&node).join("mirage").display().to_string();

    let view = client
        .submit(
            unikernel_job("hello-kernel", &allowed).into_bytes(),
            "application/yaml",
        )
        .await
        .expect("the job is accepted");
    let id = view.id.to_string();
    until("the unikernel job RUNNING", &mut procs, async || {
        (client.job(&id).await.ok()?.state == JobState::Running).then_some(())
    })
    .await;
    assert_eq!(processes_running(&state).len(), 1, "one qemu for the job");
    // the guest's serial console reaches the root's logs API
    let logs = until(
        "the kernel's line in the job's logs",
        &mut procs,
        async || {
            let mut stream = client.logs(&id, Default::default()).await.ok()?;
            let mut text = Vec::new();
            while let Some(chunk) = stream.next().await {
                text.extend_from_slice(&chunk.ok()?);
            }
            let text = String::from_utf8_lossy(&text).into_owned();
            text.contains(HELLO).then_some(text)
        },
    )
    .await;
    assert!(logs.contains(HELLO), "{logs}");

    // a kernel the operator did not name is refused at the worker, saying how to allow it
    let refused = client
        .submit(
            unikernel_job("not-allowed", &other).into_bytes(),
            "application/yaml",
        )
        .await
        .expect("the job is accepted");
    let refused_id = refused.id.to_string();
    let why = until("the unlisted kernel refused", &mut procs, async || {
        let job = client.job(&refused_id).await.ok()?;
        let failed = job.state == JobState::Failed
            || job
                .instances
                .iter()
                .any(|i| i.state == InstanceState::Failed);
        failed.then(|| reasons(&job))
    })
    .await;
    assert!(
        why.iter().any(|r| r
            .contains("not allowed on this worker: start the worker with --allow-kernel <path>")),
        "{why:?}"
    );

    client.terminate(&id).await.expect("terminate");
    until(
        "the job TERMINATED and its qemu gone",
        &mut procs,
        async || {
            let job = client.job(&id).await.ok()?;
            (job.state == JobState::Terminated && processes_running(&state).is_empty())
                .then_some(())
        },
    )
    .await;
    for p in procs.iter_mut().rev() {
        let name = p.name.clone();
        assert!(p.stop(), "{name} did not stop cleanly:\n{}", p.log());
    }
}

#[test]
fn worker_help_lists_the_runtimes_of_the_build_and_how_to_switch_each_off() {
    let out = Command::new(binary("worker"))
        .arg("--help")
        .output()
        .expect("worker --help runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "Runtimes in this build:",
        "native  programs named by --allow-native",
        "docker  containers, when the Docker engine answers at start; --docker=false switches it off",
        "mirage  unikernels named by --allow-kernel",
        "--mirage=false switches it off",
        "--allow-kernel <ALLOW_KERNEL>",
        "[env: EDGEIO_WORKER_ALLOW_KERNEL=]",
        "--kvm <KVM>",
    ] {
        assert!(help.contains(line), "{line:?} not in:\n{help}");
    }
    assert!(!help.contains("Not in this build"), "{help}");
}

/// The quickstart as a process, its stdout read line by line on a thread.
struct Quickstart {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Quickstart {
    fn start() -> Quickstart {
        let mut child = Command::new(binary("quickstart"))
            .env("RUST_LOG", "error,rumqttd=off")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("quickstart starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Quickstart {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `text` (within [`RUNNING_WITHIN`]); returns it.
    fn line_with(&mut self, text: &str) -> String {
        let deadline = Instant::now() + RUNNING_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no line with {text:?} from the quickstart ({e}); it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_root_runs_a_docker_job_deployed_into_it() {
    if !require::docker() {
        return;
    }
    ensure_image();
    let name = format!("qs-docker-{}", std::process::id());
    let _sweep = Sweep(name.clone());
    // built beside the quickstart (a `--test` run builds only the examples it asks for)
    let built = binary("edgectl");
    let mut quickstart = Quickstart::start();
    let api = quickstart.line_with("root API");
    let url = api
        .split_whitespace()
        .last()
        .expect("the root's URL ends the line")
        .to_string();
    // the commands it prints run the edgectl of the same build, beside the quickstart
    let get_jobs = quickstart.line_with(" get jobs");
    let edgectl = get_jobs.split_whitespace().next().expect("a program");
    let edgectl = std::path::absolute(edgectl).expect("an absolute path");
    assert_eq!(edgectl, built, "{get_jobs}");
    assert_eq!(built, binary("quickstart").with_file_name("edgectl"));
    quickstart.line_with("Ctrl-C stops the job");
    // the command exactly as printed (its paths hold no spaces): server, CA and token file
    let printed: Vec<&str> = get_jobs.split_whitespace().skip(1).collect();
    assert!(
        printed.contains(&"--ca") && printed.contains(&"--token-file"),
        "{get_jobs}"
    );
    let out = Command::new(&edgectl)
        .args(&printed)
        .output()
        .expect("the printed edgectl runs");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && listed.contains("hello"), "{listed}");

    let flag = |name: &str| {
        let at = printed.iter().position(|a| *a == name).expect("printed");
        printed[at + 1].to_string()
    };
    let token = std::fs::read_to_string(flag("--token-file")).expect("the admin token");
    let client = RootClient::builder(&url)
        .token(Some(token.trim().to_string()))
        .ca_pem(Some(std::fs::read(flag("--ca")).expect("the CA")))
        .build()
        .expect("a client of the quickstart's root");
    let view = client
        .submit(docker_job(&name).into_bytes(), "application/yaml")
        .await
        .expect("the job is accepted");
    let id = view.id.to_string();
    let deadline = Instant::now() + RUNNING_WITHIN;
    loop {
        let job = client.job(&id).await.expect("the job");
        if job.state == JobState::Running {
            break;
        }
        assert!(
            Instant::now() < deadline && job.state != JobState::Failed,
            "the docker job is {} after {:?}: {:?}",
            job.state,
            RUNNING_WITHIN,
            reasons(&job)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(containers(&name).len(), 1, "one container for the job");
    client.terminate(&id).await.expect("terminate");
    let deadline = Instant::now() + RUNNING_WITHIN;
    while !containers(&name).is_empty() {
        assert!(Instant::now() < deadline, "the container outlived its job");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Ctrl-C: the quickstart stops its own job and everything it started, and exits 0
    let pid = quickstart.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs")
        .success());
    quickstart.line_with("stopped");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = quickstart.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the quickstart did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
