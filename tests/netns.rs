//! A worker on another host, as far as the network goes: the worker runs in its own network
//! namespace, joined to this host by a veth pair, and reaches its cluster only through the
//! address the cluster advertises. The cluster listens on 0.0.0.0 and says where it is
//! reached (`--advertise`, `--mqtt-advertise`); its certificates cover that address, so the
//! worker joins over TLS with the join token alone, runs a job, and — as `ss` inside its
//! namespace shows — listens on nothing there.
//!
//! Needs root and iproute2 (`ip netns`); elsewhere it is skipped with the reason.

#![cfg(all(feature = "roles", feature = "testing"))]

mod support;

use edgeio::state::JobState;
use edgeio::transport_mqtt::testing::free_port;
use std::process::Command;
use support::*;

/// A network namespace joined to this host by a veth pair, removed on drop (even when the
/// test fails). Names carry the test's pid, so parallel runs do not collide.
struct Netns {
    name: String,
    host_link: String,
    /// This host's address on the pair: what the namespace reaches the host at.
    host_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let pid = std::process::id();
        let name = format!("edgeio-w{pid}");
        let (host_link, ns_link) = (
            format!("eh{}", pid % 1_000_000),
            format!("en{}", pid % 1_000_000),
        );
        // a /30 of 10.213.0.0/16 chosen by pid
        let block = (pid % 16_000) * 4;
        let (a, b) = (block / 256, block % 256);
        let host_ip = format!("10.213.{a}.{}", b + 1);
        let ns_ip = format!("10.213.{a}.{}", b + 2);
        let netns = Netns {
            name: name.clone(),
            host_link: host_link.clone(),
            host_ip: host_ip.clone(),
        };
        ip(&["netns", "add", &name])?;
        ip(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", &ns_link,
        ])?;
        ip(&["link", "set", &ns_link, "netns", &name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_link])?;
        ip(&["link", "set", &host_link, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", name.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_link])?;
        inside(&["link", "set", &ns_link, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The listening sockets `ss` shows inside the namespace, one line each.
    fn listening(&self) -> String {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "ss", "-H", "-l", "-t", "-u", "-n", "-p",
            ])
            .output()
            .expect("ss runs in the namespace");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_link]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_in_its_own_network_namespace_joins_a_cluster_by_its_advertised_address() {
    let netns = match Netns::create() {
        Ok(netns) => netns,
        Err(e) => {
            // a machine without root or iproute2 cannot build the namespace
            eprintln!("SKIPPED: network namespaces unavailable ({e})");
            assert!(
                std::env::var("CI").is_err(),
                "CI runs as root with iproute2: network namespaces must work there ({e})"
            );
            return;
        }
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = dir.path();
    let (root_port, cluster_port, broker_port) = (free_port(), free_port(), free_port());
    let mut procs = vec![Proc::start(
        "root",
        "root",
        &root_args(d, root_port, &[]),
        d,
    )];
    let client = root_client(d, root_port, &mut procs).await;
    let host = &netns.host_ip;
    let mut cluster = cluster_args(d, "cluster-1", root_port, cluster_port, broker_port, &[]);
    for (flag, value) in [
        ("--listen", format!("0.0.0.0:{cluster_port}")),
        ("--mqtt-listen", format!("0.0.0.0:{broker_port}")),
    ] {
        let at = cluster.iter().position(|a| a == flag).expect(flag);
        cluster[at + 1] = value;
    }
    cluster.extend([
        "--advertise".into(),
        format!("https://{host}:{cluster_port}"),
        "--mqtt-advertise".into(),
        format!("{host}:{broker_port}"),
    ]);
    procs.push(Proc::start("cluster-1", "cluster", &cluster, d));
    serves(d, cluster_port, &mut procs).await;

    // the worker dials the advertised address from its namespace (127.0.0.1 there is its own)
    let mut worker = worker_args(d, "w-far", cluster_port, "cluster-1");
    worker[1] = format!("https://{host}:{cluster_port}");
    procs.push(Proc::start_in(&netns.name, "w-far", "worker", &worker, d));
    ready_nodes(&client, &mut procs, &["cluster-1"], 1).await;
    let log = procs[2].log();
    assert!(
        log.contains(&format!("mqtts://{host}:{broker_port}")),
        "{log}"
    );

    let marker = format!("{}", 5_300_000 + std::process::id() % 1_000_000);
    let view = client
        .submit(job("far", &marker, "").into_bytes(), "application/yaml")
        .await
        .expect("the job is accepted");
    let id = view.id.to_string();
    until("the job RUNNING in the namespace", &mut procs, async || {
        (client.job(&id).await.ok()?.state == JobState::Running).then_some(())
    })
    .await;
    let worker_pid = procs[2].child.id();
    let listening = netns.listening();
    assert!(
        !listening.contains(&format!("pid={worker_pid},")),
        "the worker listens in its namespace:\n{listening}"
    );

    client.terminate(&id).await.expect("terminate");
    let pattern = format!("sleep {marker}");
    until("no process left", &mut procs, async || {
        processes_running(&pattern).is_empty().then_some(())
    })
    .await;
    for p in procs.iter_mut().rev() {
        let name = p.name.clone();
        assert!(p.stop(), "{name} did not stop cleanly:\n{}", p.log());
    }
}
