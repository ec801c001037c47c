//! Create-start and force-remove of 50 containers through `DockerRuntime` and, in the same
//! run, through the `docker` CLI (`docker run -d` / `docker rm -f`); prints p50/p99 of both
//! and their ratio as a Markdown table.
//!
//! `cargo bench -p edgeio-runtime-docker --bench docker_lifecycle`. Without a Docker Engine
//! it prints why it skipped and exits 0. Not a timed test: nothing fails on a slow figure.

#[path = "../tests/support/mod.rs"]
mod support;

use edgeio_core::model::JobId;
use edgeio_core::runtime::Runtime;
use futures::StreamExt;
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 50;
const WARMUP: usize = 3;

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    // nearest rank
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn cli(args: &[&str]) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Default)]
struct Series {
    create_start: Vec<Duration>,
    remove: Vec<Duration>,
}

fn main() {
    if let Err(reason) = edgeio_core::testing::require::command_succeeds("docker", &["info"]) {
        println!("docker_lifecycle skipped: no Docker Engine ({reason})");
        return;
    }
    support::ensure_image();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    tokio.block_on(run());
}

async fn run() {
    let job = JobId::new(support::unique("bench")).unwrap();
    let _cleanup = support::Cleanup::job(&job);
    let label = format!("edgeio.job={job}");
    let runtime = support::runtime();
    let probe = runtime.probe().await.unwrap();
    // a worker always listens to events; so does the benchmark, to pay what a worker pays
    let mut events = runtime.events();
    let drain = tokio::spawn(async move { while events.next().await.is_some() {} });

    let mut edgeio = Series::default();
    let mut docker = Series::default();
    for i in 0..WARMUP + RUNS {
        let record = i >= WARMUP;
        // alternate who goes first, so drift in the engine favours neither
        for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            let id = format!("bench-{i}-{side}-{}", support::unique("c"));
            if side == 0 {
                let spec = support::spec(&id, &job, &["sleep", "3600"]);
                let t0 = Instant::now();
                runtime.deploy(&spec).await.expect("deploy");
                let t1 = Instant::now();
                runtime
                    .terminate(&spec.id, Duration::ZERO)
                    .await
                    .expect("terminate");
                let t2 = Instant::now();
                if record {
                    edgeio.create_start.push(t1 - t0);
                    edgeio.remove.push(t2 - t1);
                }
            } else {
                let name = format!("edgeio-cli-{id}");
                let t0 = Instant::now();
                cli(&[
                    "run",
                    "-d",
                    "--name",
                    &name,
                    "--label",
                    &label,
                    support::IMAGE,
                    "sleep",
                    "3600",
                ]);
                let t1 = Instant::now();
                cli(&["rm", "-f", &name]);
                let t2 = Instant::now();
                if record {
                    docker.create_start.push(t1 - t0);
                    docker.remove.push(t2 - t1);
                }
            }
        }
    }
    drain.abort();

    let total = |s: &Series| -> Vec<Duration> {
        s.create_start
            .iter()
            .zip(&s.remove)
            .map(|(a, b)| *a + *b)
            .collect()
    };
    println!(
        "docker_lifecycle: {RUNS} containers each way (after {WARMUP} warm-up), {}",
        probe.detail
    );
    println!();
    println!("| operation | edgeio p50 | edgeio p99 | docker CLI p50 | docker CLI p99 | p50 ratio edgeio/CLI |");
    println!("|---|---:|---:|---:|---:|---:|");
    let rows = [
        (
            "create + start",
            edgeio.create_start.clone(),
            docker.create_start.clone(),
        ),
        ("force remove", edgeio.remove.clone(), docker.remove.clone()),
        ("both", total(&edgeio), total(&docker)),
    ];
    for (name, ours, theirs) in rows {
        let (o50, o99) = (percentile(&ours, 50.0), percentile(&ours, 99.0));
        let (t50, t99) = (percentile(&theirs, 50.0), percentile(&theirs, 99.0));
        println!(
            "| {name} | {} | {} | {} | {} | {:.2}× |",
            ms(o50),
            ms(o99),
            ms(t50),
            ms(t99),
            o50.as_secs_f64() / t50.as_secs_f64()
        );
    }
}
