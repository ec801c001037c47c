//! `quickstart`: a root, one cluster with its embedded MQTT broker and one worker, in one
//! process on free loopback ports; deploys a sample job with the native runtime through the
//! REST API, shows it reach RUNNING and where it runs, and prints the edgectl commands to try
//! (the edgectl of this same build, beside this program). Ctrl-C terminates the job and shuts
//! everything down.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! It builds with a bare Rust toolchain (no protoc). The sample job is this very program
//! started with `--sample` (it prints a line every two seconds); it is the one program the
//! worker is allowed to run natively. The worker also offers Docker when an engine answers,
//! so jobs with `image_runtime: docker` can be deployed into the root it prints.

use clap::Parser;
use edgeio::roles::{
    interrupted, read_token_file, start_cluster, start_root, start_worker, ClusterOptions, Kvm,
    RootOptions, RootStore, WorkerOptions, ADMIN_TOKEN_FILE, CA_FILE,
};
use edgeio::state::JobState;
use edgeio::transport_ws::RootClient;
use edgeio_scheduler::PolicyKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    name = "quickstart",
    version,
    about = "Root, cluster and worker in one process: deploys a sample job and shows it run"
)]
struct Cli {
    /// Deploy, wait for RUNNING, list the jobs, and shut down (for scripts and tests).
    #[arg(long)]
    once: bool,

    /// Be the sample job: print a line every two seconds.
    #[arg(long, hide = true)]
    sample: bool,
}

const WAIT: Duration = Duration::from_secs(60);

fn sample() -> ExitCode {
    let mut n: u64 = 0;
    loop {
        n += 1;
        println!("hello from the edgeio quickstart sample, line {n}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn descriptor(program: &Path) -> String {
    format!(
        "api_version: v1\n\
         job_name: hello\n\
         image: {program:?}\n\
         image_runtime: native\n\
         args: [\"--sample\"]\n\
         requirements:\n  cpu: 100m\n  memory: 16Mi\n",
        program = program.display().to_string()
    )
}

async fn until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> Result<T, String> {
    let started = Instant::now();
    loop {
        if let Some(found) = probe().await {
            return Ok(found);
        }
        if started.elapsed() > WAIT {
            return Err(format!("{what} did not happen within {WAIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run(cli: Cli, data: &Path) -> Result<(), String> {
    let program = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let root = start_root(RootOptions {
        listen: "127.0.0.1:0".parse().expect("a literal address"),
        data: data.join("root"),
        scheduler: PolicyKind::FirstFit,
        aggregate_interval: Duration::from_millis(500),
        missed_aggregates: 3,
        cluster_timeout: Duration::from_secs(30),
        store: RootStore::Embedded,
        advertise: None,
        insecure: false,
        tls_san: Vec::new(),
    })
    .await
    .map_err(|e| e.to_string())?;
    let cluster = start_cluster(ClusterOptions {
        root: root.url.clone(),
        listen: "127.0.0.1:0".parse().expect("a literal address"),
        mqtt_listen: "127.0.0.1:0".parse().expect("a literal address"),
        broker: None,
        name: "quickstart".into(),
        location: None,
        labels: Default::default(),
        data: Some(data.join("cluster")),
        scheduler: PolicyKind::FirstFit,
        status_interval: Duration::from_millis(500),
        missed_heartbeats: 3,
        // secure as any cluster: it joins with the token the root just wrote
        join_token: None,
        join_token_file: Some(data.join("root").join("join.token")),
        advertise: None,
        mqtt_advertise: None,
        tls_san: Vec::new(),
        insecure: false,
    })
    .await
    .map_err(|e| e.to_string())?;
    let worker = start_worker(WorkerOptions {
        cluster: cluster.url.clone(),
        // its own name: Docker containers carry the node's id, and a worker adopts those of
        // its id, so two quickstarts sharing an engine must not share one
        name: Some(format!("quickstart-worker-{}", std::process::id())),
        labels: Default::default(),
        location: None,
        allow_native: vec![program.clone()],
        data: Some(data.join("worker")),
        docker: true,
        // no kernel to allow: the reference worker boots only kernels its operator named
        mirage: false,
        allow_kernel: Vec::new(),
        kvm: Kvm::Auto,
        join_token: None,
        join_token_file: Some(data.join("cluster").join("join.token")),
        insecure: false,
    })
    .await
    .map_err(|e| e.to_string())?;

    println!("edgeio quickstart");
    println!("  root API      {}", root.url);
    println!(
        "  cluster       {} ({}, MQTT broker {})",
        cluster.id,
        cluster.url,
        cluster.broker.as_deref().unwrap_or("external")
    );
    println!("  worker        {}", worker.id);

    let ca_file = data.join("root").join(CA_FILE);
    let token_file = data.join("root").join(ADMIN_TOKEN_FILE);
    let token = read_token_file(&token_file)?;
    let ca = std::fs::read(&ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?;
    let client = RootClient::builder(&root.url)
        .token(Some(token))
        .ca_pem(Some(ca))
        .build()
        .map_err(|e| e.to_string())?;
    until("the cluster reporting a READY worker", async || {
        let clusters = client.clusters().await.ok()?;
        clusters
            .iter()
            .any(|c| c.aggregate.as_ref().is_some_and(|a| a.ready_nodes > 0))
            .then_some(())
    })
    .await?;

    let job = client
        .submit(descriptor(&program).into_bytes(), "application/yaml")
        .await
        .map_err(|e| format!("deploy failed: {e}"))?;
    println!("\ndeployed job {} ({})", job.id, job.name);
    let mut seen = job.state;
    println!("  {seen}");
    let id = job.id.to_string();
    let running = until("the job reaching RUNNING", async || {
        let job = client.job(&id).await.ok()?;
        if job.state != seen {
            seen = job.state;
            println!("  {seen}");
        }
        (job.state == JobState::Running
            || job.state.to_string().contains("FAIL")
            || job.state == JobState::NotDeployable)
            .then_some(job)
    })
    .await?;
    if running.state != JobState::Running {
        let why = running
            .history
            .last()
            .map(|h| h.reason.clone())
            .unwrap_or_default();
        return Err(format!("job {id} is {}: {why}", running.state));
    }
    let node = running
        .instances
        .first()
        .and_then(|i| i.node.clone())
        .unwrap_or_default();
    println!(
        "  runs on cluster {}, node {node}",
        running.cluster.as_deref().unwrap_or("?")
    );

    let server = &root.url;
    let edgectl = Edgectl::beside(&program);
    println!("\ntry, in another terminal:");
    if let Some(build) = &edgectl.build {
        println!("  {build}    # once: edgectl of this build");
    }
    let edgectl = &edgectl.path;
    // the token stays in its file (0600): the commands name the file, never the secret
    let (ca, token) = (ca_file.display(), token_file.display());
    let flags = format!("--server {server} --ca {ca} --token-file {token}");
    println!("  {edgectl} {flags} get jobs");
    println!("  {edgectl} {flags} describe job {id}");
    println!("  {edgectl} {flags} logs {id}");
    println!("  {edgectl} {flags} get nodes");
    println!("  curl --cacert {ca} -H \"Authorization: Bearer $(cat {token})\" {server}/api/v1/jobs/{id}");

    if cli.once {
        let jobs = client.jobs().await.map_err(|e| e.to_string())?;
        println!("\njobs:");
        for job in jobs {
            println!("  {} {} {}", job.id, job.name, job.state);
        }
    } else {
        println!("\nCtrl-C stops the job and shuts down.");
        interrupted().await;
    }

    println!("\nstopping: terminating {id}");
    if client.terminate(&id).await.is_ok() {
        let _ = until("the job reaching TERMINATED", async || {
            let job = client.job(&id).await.ok()?;
            (job.state == JobState::Terminated).then_some(())
        })
        .await;
    }
    worker.stop(Duration::from_secs(5)).await;
    cluster.stop(Duration::from_secs(5)).await;
    root.stop(Duration::from_secs(5)).await;
    println!("stopped");
    Ok(())
}

/// The `edgectl` of this build: the example binary in this program's own folder (so the
/// commands printed reuse the build that is running, whatever its profile or target folder),
/// shown relative to the current folder when it lies below it.
struct Edgectl {
    /// How to run it.
    path: String,
    /// The command that builds it, when it is not built yet (`cargo run --example
    /// quickstart` builds the quickstart alone).
    build: Option<String>,
}

impl Edgectl {
    fn beside(program: &Path) -> Edgectl {
        let folder = program.parent().unwrap_or(Path::new("."));
        let binary = folder.join(format!("edgectl{}", std::env::consts::EXE_SUFFIX));
        let shown = std::env::current_dir()
            .ok()
            .and_then(|here| binary.strip_prefix(here).ok().map(Path::to_path_buf))
            .unwrap_or_else(|| binary.clone());
        // target/<profile>/examples/quickstart: the profile names the cargo flag
        let profile = folder
            .parent()
            .and_then(Path::file_name)
            .and_then(|p| p.to_str());
        let flag = match profile {
            Some("debug") | None => String::new(),
            Some("release") => " --release".into(),
            Some(other) => format!(" --profile {other}"),
        };
        Edgectl {
            path: shown.display().to_string(),
            build: (!binary.is_file()).then(|| format!("cargo build{flag} --example edgectl")),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.sample {
        return sample();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttd=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let data: PathBuf =
        std::env::temp_dir().join(format!("edgeio-quickstart-{}", std::process::id()));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("quickstart: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli, &data));
    let _ = std::fs::remove_dir_all(&data);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: {e}");
            ExitCode::FAILURE
        }
    }
}
