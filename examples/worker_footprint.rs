//! `worker_footprint`: the RSS and CPU of an idle `worker` process (status every second)
//! beside Prometheus node_exporter scraped once a second, both measured over the same window.
//!
//! ```text
//! cargo build --release --features roles --examples
//! target/release/examples/worker_footprint            # 60 s; EDGEIO_BENCH_SECS=20 for less
//! ```
//!
//! It starts the sibling `root`, `cluster` and `worker` binaries from its own folder (build
//! them with the same profile) and Debian's `prometheus-node-exporter` when installed. RSS is
//! read from `/proc/PID/status` once a second; CPU is the process's user + system time over
//! the window, as a share of one core. Linux only.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/secure.rs"]
mod secure;

#[path = "support/procs.rs"]
mod procs;

use procs::{free_port, start_sibling, Proc};

fn start(name: &str, args: &[String]) -> Proc {
    start_sibling(name, args, "warn,rumqttd=off")
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `path` exists (a tier writes its join token once it has joined).
fn wait_file(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.is_file() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the command name (which may hold spaces) start after the last ')'
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

struct Sample {
    name: String,
    pid: u32,
    rss: Vec<u64>,
    ticks_start: u64,
    ticks_end: u64,
}

fn main() {
    let secs: u64 = std::env::var("EDGEIO_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
        .clamp(5, 3600);
    let dir = std::env::temp_dir().join(format!("edgeio-footprint-{}", std::process::id()));
    let d = |s: &str| dir.join(s).display().to_string();
    let (root_port, cluster_port, broker_port) = (free_port(), free_port(), free_port());
    let _root = start(
        "root",
        &[
            "--listen".into(),
            format!("127.0.0.1:{root_port}"),
            "--data".into(),
            d("root"),
        ],
    );
    wait_port(root_port);
    wait_file(&dir.join("root").join("join.token"));
    let [flag, token] = secure::join_args(&dir.join("root"));
    let _cluster = start(
        "cluster",
        &[
            "--root".into(),
            secure::https(root_port),
            flag,
            token,
            "--listen".into(),
            format!("127.0.0.1:{cluster_port}"),
            "--mqtt-listen".into(),
            format!("127.0.0.1:{broker_port}"),
            "--data".into(),
            d("cluster"),
            "--status-interval".into(),
            "1s".into(),
        ],
    );
    wait_port(cluster_port);
    wait_file(&dir.join("cluster").join("join.token"));
    let [flag, token] = secure::join_args(&dir.join("cluster"));
    let worker = start(
        "worker",
        &[
            "--cluster".into(),
            secure::https(cluster_port),
            flag,
            token,
            "--name".into(),
            "idle".into(),
            "--data".into(),
            d("worker"),
            "--docker=false".into(),
            "--mirage=false".into(),
        ],
    );
    let exporter_port = free_port();
    let exporter = Command::new("prometheus-node-exporter")
        .arg(format!("--web.listen-address=127.0.0.1:{exporter_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Proc)
        .map_err(|e| {
            eprintln!("node_exporter not measured: {e} (apt-get install prometheus-node-exporter)")
        })
        .ok();
    if exporter.is_some() {
        wait_port(exporter_port);
    }
    // let start-up settle before the window opens
    std::thread::sleep(Duration::from_secs(3));

    let mut samples = vec![Sample {
        name: "edgeio worker (status every 1 s)".into(),
        pid: worker.0.id(),
        rss: Vec::new(),
        ticks_start: 0,
        ticks_end: 0,
    }];
    if let Some(e) = &exporter {
        samples.push(Sample {
            name: "node_exporter (scraped every 1 s)".into(),
            pid: e.0.id(),
            rss: Vec::new(),
            ticks_start: 0,
            ticks_end: 0,
        });
    }
    for s in &mut samples {
        s.ticks_start = cpu_ticks(s.pid).expect("the process runs");
    }
    let started = Instant::now();
    let mut scrape_bytes = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        let tick = Instant::now();
        if exporter.is_some() {
            let url = format!("http://127.0.0.1:{exporter_port}/metrics");
            if let Ok(body) = reqwest::blocking::get(url).and_then(|r| r.bytes()) {
                scrape_bytes = body.len();
            }
        }
        for s in &mut samples {
            if let Some(rss) = rss_kib(s.pid) {
                s.rss.push(rss);
            }
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let window = started.elapsed().as_secs_f64();
    // /proc counts in USER_HZ ticks, 100 a second on Linux
    let hz = 100.0;
    for s in &mut samples {
        s.ticks_end = cpu_ticks(s.pid).expect("the process still runs");
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "idle footprint over {window:.0} s (machine: {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| process | RSS mean (MB) | RSS max (MB) | CPU (% of one core) |");
    println!("|---|---:|---:|---:|");
    for s in &samples {
        let mean = s.rss.iter().sum::<u64>() as f64 / s.rss.len().max(1) as f64 / 1024.0;
        let max = s.rss.iter().max().copied().unwrap_or(0) as f64 / 1024.0;
        let cpu = (s.ticks_end - s.ticks_start) as f64 / hz / window * 100.0;
        println!("| {} | {mean:.1} | {max:.1} | {cpu:.2} |", s.name);
    }
    println!("| Eclipse Ankaios agent (FACTS.md, same machine kind) | 8.1–8.3 | | 0.07–0.10 |");
    if exporter.is_some() {
        println!("(node_exporter served {scrape_bytes} bytes per scrape)");
    }
    println!("goals: worker RSS ≤ 8 MB and CPU ≤ 0.1% of a core, below node_exporter, at or below Ankaios");
}
