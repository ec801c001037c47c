//! What the process tests share: the built example binaries, child processes that are
//! killed on drop with their output in a log file, waiting with a deadline, job descriptors.
#![allow(dead_code)] // each test crate uses its own part

#[path = "../../examples/support/secure.rs"]
pub mod secure;

use edgeio::transport_mqtt::testing::free_port;
use edgeio::transport_ws::RootClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const RUNNING_WITHIN: Duration = Duration::from_secs(60);

/// The example binaries, built by the same `cargo test`/`nextest` run (or built here).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    // target/<profile>/deps/three_tiers-<hash> → target/<profile>/examples/<name>
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = profile.join("examples").join(name);
    if !path.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--all-features", "--example", name])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building example {name} failed");
    }
    path
}

/// A child process killed (and reaped) on drop, its output kept in a log file.
pub struct Proc {
    /// Its name in logs and failures.
    pub name: String,
    /// The process.
    pub child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn start(name: &str, program: &str, args: &[String], dir: &Path) -> Proc {
        Proc::spawn(name, Command::new(binary(program)), args, dir)
    }

    /// [`Proc::start`] inside the network namespace `netns` (`ip netns exec`, which execs
    /// the program: the child's pid is the program's).
    pub fn start_in(netns: &str, name: &str, program: &str, args: &[String], dir: &Path) -> Proc {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns]).arg(binary(program));
        Proc::spawn(name, command, args, dir)
    }

    fn spawn(name: &str, mut command: Command, args: &[String], dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = command
            .args(args)
            .env("RUST_LOG", "info,rumqttd=off")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn until<T>(
    what: &str,
    procs: &mut [Proc],
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        for p in procs.iter_mut() {
            assert!(
                p.alive(),
                "{} died while waiting for {what}:\n{}",
                p.name,
                p.log()
            );
        }
        if started.elapsed() > RUNNING_WITHIN {
            let logs: Vec<String> = procs
                .iter()
                .map(|p| format!("--- {} ---\n{}", p.name, p.log()))
                .collect();
            panic!(
                "{what} did not happen within {RUNNING_WITHIN:?}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn job(name: &str, sleep_arg: &str, pin: &str) -> String {
    format!(
        "api_version: v1\njob_name: {name}\nimage: /bin/sleep\nimage_runtime: native\n\
         args: [\"{sleep_arg}\"]\nrequirements:\n  cpu: 50m\n  memory: 8Mi\n{pin}\n"
    )
}

pub fn processes_running(pattern: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A secure root and one cluster (`cluster`, joined with the root's join token), both
/// answering; the admin's client of the root, and the cluster's port.
pub async fn root_and_cluster(dir: &Path) -> (Vec<Proc>, RootClient, u16) {
    let (root_port, cluster_port, broker_port) = (free_port(), free_port(), free_port());
    let mut procs = vec![Proc::start(
        "root",
        "root",
        &root_args(dir, root_port, &[]),
        dir,
    )];
    let client = root_client(dir, root_port, &mut procs).await;
    let mut args = cluster_args(dir, "cluster", root_port, cluster_port, broker_port, &[]);
    // this cluster keeps its data under dir/cluster and goes by the engine's default name
    let at = args.iter().position(|a| a == "--name").unwrap();
    args.drain(at..at + 2);
    procs.push(Proc::start("cluster", "cluster", &args, dir));
    serves(dir, cluster_port, &mut procs).await;
    (procs, client, cluster_port)
}

/// The root's data folder in a test folder.
pub fn root_data(dir: &Path) -> PathBuf {
    dir.join("root")
}

/// Waits until the root of `dir` on `port` answers, and answers the admin's client of it.
pub async fn root_client(dir: &Path, port: u16, procs: &mut [Proc]) -> RootClient {
    let data = root_data(dir);
    until("the root answering", procs, async || {
        let client = secure::admin_client(&data, port)?;
        client.health().await.ok().map(|()| client)
    })
    .await
}

impl Proc {
    /// SIGKILL, and reaps it: the process gets no chance to say goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Arguments of a `root` on `port` keeping its store under `dir/root`.
pub fn root_args(dir: &Path, port: u16, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--data".into(),
        dir.join("root").display().to_string(),
        "--aggregate-interval".into(),
        "300ms".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Arguments of a `cluster` named `name` on `port` with its embedded broker on `broker`
/// (unless `extra` names `--broker`), reporting to the root on `root_port`.
pub fn cluster_args(
    dir: &Path,
    name: &str,
    root_port: u16,
    port: u16,
    broker: u16,
    extra: &[&str],
) -> Vec<String> {
    let [flag, token] = secure::join_args(&root_data(dir));
    let mut args = vec![
        "--root".to_string(),
        secure::https(root_port),
        flag,
        token,
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--name".into(),
        name.into(),
        "--data".into(),
        dir.join(name).display().to_string(),
        "--status-interval".into(),
        "300ms".into(),
    ];
    if !extra.contains(&"--broker") {
        args.extend(["--mqtt-listen".into(), format!("127.0.0.1:{broker}")]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// `--cluster URL --join-token-file FILE`: a worker of the cluster `cluster` (its data in
/// `dir/cluster`) on `cluster_port`.
pub fn cluster_of(dir: &Path, cluster_port: u16, cluster: &str) -> Vec<String> {
    let [flag, token] = secure::join_args(&dir.join(cluster));
    vec!["--cluster".into(), secure::https(cluster_port), flag, token]
}

/// Arguments of a native-only `worker` named `name` of the cluster `cluster` (its data in
/// `dir/cluster`) on `cluster_port`, joining with that cluster's join token.
pub fn worker_args(dir: &Path, name: &str, cluster_port: u16, cluster: &str) -> Vec<String> {
    let mut args = cluster_of(dir, cluster_port, cluster);
    args.extend([
        "--name".into(),
        name.into(),
        "--allow-native".into(),
        "/bin/sleep".into(),
        "--data".into(),
        dir.join(name).display().to_string(),
        "--docker=false".into(),
        "--mirage=false".into(),
    ]);
    args
}

/// Waits until the root `client` talks to answers (again, after a restart).
pub async fn root_answers(client: &RootClient, procs: &mut [Proc]) {
    until("the root answering", procs, async || {
        client.health().await.ok()
    })
    .await;
}

/// Waits until every cluster named reports `ready` READY nodes.
pub async fn ready_nodes(client: &RootClient, procs: &mut [Proc], clusters: &[&str], ready: u32) {
    until("the workers READY", procs, async || {
        let all = client.clusters().await.ok()?;
        clusters
            .iter()
            .all(|name| {
                all.iter().any(|c| {
                    c.id == *name
                        && c.state == edgeio::state::ClusterState::Active
                        && c.aggregate.as_ref().is_some_and(|a| a.ready_nodes == ready)
                })
            })
            .then_some(())
    })
    .await;
}

/// Waits until the root or cluster on `port` answers `/healthz` over TLS (a cluster must,
/// before its workers dial in), trusting the CA of the root of `dir`.
pub async fn serves(dir: &Path, port: u16, procs: &mut [Proc]) {
    let data = root_data(dir);
    let what = format!("port {port} answering /healthz");
    until(&what, procs, async || {
        let client = secure::health_client(&data, port)?;
        client.health().await.ok()
    })
    .await;
}
