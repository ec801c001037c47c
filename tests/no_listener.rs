//! The worker accepts no connection: it dials its cluster (WebSocket to register, MQTT after)
//! and listens on nothing, so a worker behind NAT or a firewall needs no open port and offers
//! a stranger nothing to reach. Shown the way an operator would check it: `ss -ltnup` by the
//! worker's pid, while it runs a job.
//!
//! The same from the worker's own network namespace, joining a cluster by the address it
//! advertises: `tests/netns.rs`.

#![cfg(all(feature = "roles", feature = "testing"))]

mod support;

use edgeio::state::JobState;
use std::process::Command;
use support::*;

/// The listening TCP sockets and bound UDP sockets `ss` shows for `pid`, one line each.
fn listening(pid: u32) -> Vec<String> {
    let out = Command::new("ss")
        .args(["-H", "-l", "-t", "-u", "-n", "-p"])
        .output()
        .expect("ss runs (iproute2)");
    assert!(
        out.status.success(),
        "ss: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let needle = format!("pid={pid},");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains(&needle))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_running_a_job_listens_on_no_socket() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut procs, client, cluster_port) = root_and_cluster(dir.path()).await;
    let node = format!("w-quiet-{}", std::process::id());
    procs.push(Proc::start(
        &node,
        "worker",
        &worker_args(dir.path(), &node, cluster_port, "cluster"),
        dir.path(),
    ));
    let job = support::job(&format!("quiet-{}", std::process::id()), "300", "");
    let view = client
        .submit(job.into_bytes(), "application/yaml")
        .await
        .expect("the job is accepted");
    let id = view.id.to_string();
    until("the job RUNNING", &mut procs, async || {
        (client.job(&id).await.ok()?.state == JobState::Running).then_some(())
    })
    .await;

    // the check can fail: the cluster, in the same run, is seen listening
    let cluster_pid = procs[1].child.id();
    assert!(
        !listening(cluster_pid).is_empty(),
        "ss shows the cluster's listeners (else this check proves nothing)"
    );
    let worker_pid = procs[2].child.id();
    let worker = listening(worker_pid);
    assert!(
        worker.is_empty(),
        "the worker listens:\n{}",
        worker.join("\n")
    );

    client.terminate(&id).await.expect("terminate");
    for p in procs.iter_mut().rev() {
        let name = p.name.clone();
        assert!(p.stop(), "{name} did not stop cleanly:\n{}", p.log());
    }
}
