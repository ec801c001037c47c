//! Secure by default, over real processes, TLS and tokens: anonymous REST calls get 401, a
//! viewer's deploy 403, an operator deploys; the embedded broker refuses a client without a
//! login and a worker's login reaching for another node's topics; a cluster with no or a
//! wrong join token is refused in one line, and the root logs the attempt; and no log of the
//! run holds any of the secrets it issued.
#![cfg(all(feature = "roles", feature = "testing"))]

mod support;

use edgeio::auth::{NewJoinToken, NewToken, Role};
use edgeio::state::JobState;
use edgeio::transport_mqtt::testing::free_port;
use std::path::Path;
use std::process::Command;
use support::{
    cluster_args, job, processes_running, ready_nodes, root_args, root_client, root_data, secure,
    serves, until, worker_args, Proc,
};

/// A secret file's one line.
fn secret(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// `mosquitto_sub` against the cluster's broker on `port`, trusting the cluster's CA, with
/// `extra` arguments; its exit status and output (stdout and stderr together).
fn mosquitto_sub(dir: &Path, port: u16, extra: &[&str]) -> (bool, String) {
    let ca = dir.join("cluster-1").join("ca.crt");
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["--cafile", &ca.display().to_string()])
        .args(["-d", "-C", "1", "-W", "3"])
        .args(extra)
        .output()
        .expect("mosquitto_sub runs (Debian's mosquitto-clients)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_tokens_broker_logins_and_join_tokens_hold_and_no_log_holds_a_secret() {
    if !edgeio::testing::require::mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = dir.path();
    let (root_port, cluster_port, broker_port) = (free_port(), free_port(), free_port());
    let mut procs = vec![Proc::start(
        "root",
        "root",
        &root_args(d, root_port, &[]),
        d,
    )];
    let admin = root_client(d, root_port, &mut procs).await;
    let cluster = cluster_args(d, "cluster-1", root_port, cluster_port, broker_port, &[]);
    procs.push(Proc::start("cluster-1", "cluster", &cluster, d));
    serves(d, cluster_port, &mut procs).await;
    let worker = worker_args(d, "w1", cluster_port, "cluster-1");
    procs.push(Proc::start("w1", "worker", &worker, d));
    ready_nodes(&admin, &mut procs, &["cluster-1"], 1).await;

    // REST: nobody → 401; a viewer reads but cannot deploy (403); an operator deploys
    let anonymous = secure::health_client(&root_data(d), root_port).unwrap();
    let e = anonymous.jobs().await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    let issue = async |role: Role| {
        let request = NewToken {
            role,
            name: Some(format!("test-{role}")),
            ttl_s: Some(3600),
        };
        admin
            .create_token(&request)
            .await
            .expect("an admin issues tokens")
    };
    let viewer = issue(Role::Viewer).await;
    let operator = issue(Role::Operator).await;
    let as_viewer =
        secure::client_with(&root_data(d), root_port, Some(viewer.token.clone())).unwrap();
    let as_operator =
        secure::client_with(&root_data(d), root_port, Some(operator.token.clone())).unwrap();
    assert!(as_viewer.jobs().await.is_ok());
    let marker = format!("{}", 5_100_000 + std::process::id() % 1_000_000);
    let refused = as_viewer
        .submit(job("viewer", &marker, "").into_bytes(), "application/yaml")
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(403), "{refused}");
    assert!(refused.to_string().contains("operator"), "{refused}");
    let view = as_operator
        .submit(
            job("operated", &marker, "").into_bytes(),
            "application/yaml",
        )
        .await
        .expect("an operator deploys");
    let id = view.id.to_string();
    until("the operator's job RUNNING", &mut procs, async || {
        (as_operator.job(&id).await.ok()?.state == JobState::Running).then_some(())
    })
    .await;
    // a revoked token ends at once
    admin.revoke_token(&operator.view.id).await.unwrap();
    assert_eq!(as_operator.jobs().await.unwrap_err().status(), Some(401));

    // the broker: no login → refused at connect; a worker's login cannot reach another node
    let (ok, text) = mosquitto_sub(d, broker_port, &["-t", "#"]);
    assert!(!ok, "an anonymous client was let in: {text}");
    assert!(
        text.contains("not authorised") || text.contains("Connection Refused"),
        "{text}"
    );
    let credential = secret(&d.join("w1").join("parent.credential"));
    let login = ["-i", "w1", "-u", "w1", "-P", credential.as_str()];
    let (_, text) = mosquitto_sub(
        d,
        broker_port,
        &[&login[..], &["-t", "edgeio/nodes/w2/control"]].concat(),
    );
    assert!(text.contains("Subscribed (mid: 1): 128"), "{text}");
    let (_, text) = mosquitto_sub(d, broker_port, &[&login[..], &["-t", "#"]].concat());
    assert!(text.contains("Subscribed (mid: 1): 128"), "{text}");

    // joining: no token, a wrong one → refused in one line; the root logs the attempt
    let other = |name: &str, extra: &[&str]| {
        let mut args = cluster_args(d, name, root_port, free_port(), free_port(), &[]);
        let at = args.iter().position(|a| a == "--join-token-file").unwrap();
        args.drain(at..at + 2);
        args.extend(extra.iter().map(|a| a.to_string()));
        let out = Command::new(support::binary("cluster"))
            .args(&args)
            .env("RUST_LOG", "off")
            .output()
            .expect("cluster runs");
        assert!(!out.status.success(), "{name} joined");
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    };
    let e = other("no-token", &[]);
    assert!(e.contains("--join-token") && e.lines().count() == 1, "{e}");
    let good = secret(&root_data(d).join("join.token"));
    let parts: Vec<&str> = good.split('.').collect();
    let wrong = format!("{}.{}.{}.{}", parts[0], parts[1], "x".repeat(32), parts[3]);
    let e = other("wrong-token", &["--join-token", &wrong]);
    assert!(
        e.contains("not valid here") && e.lines().count() == 1,
        "{e}"
    );
    assert!(
        !e.contains(&"x".repeat(32)),
        "the secret is not echoed: {e}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !procs_log(&procs, "root").contains("join refused") {
        assert!(
            std::time::Instant::now() < deadline,
            "the root did not log the refused join:\n{}",
            procs_log(&procs, "root")
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // a join token made through the API, good for one join: one cluster joins, the next is
    // told it is used up
    let once = admin
        .create_join_token(&NewJoinToken {
            tier: "cluster".into(),
            cluster: None,
            name: Some("one-more".into()),
            ttl_s: Some(600),
            uses: Some(1),
        })
        .await
        .expect("an admin issues join tokens");
    let listed = admin.tokens().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|t| t.id == once.view.id && t.uses_left == Some(1)),
        "{listed:?}"
    );
    let c2_port = free_port();
    let mut c2 = cluster_args(d, "c2", root_port, c2_port, free_port(), &[]);
    let at = c2.iter().position(|a| a == "--join-token-file").unwrap();
    c2.splice(at..at + 2, ["--join-token".to_string(), once.token.clone()]);
    procs.push(Proc::start("c2", "cluster", &c2, d));
    serves(d, c2_port, &mut procs).await;
    let e = other("c3", &["--join-token", &once.token]);
    assert!(e.contains("used up") && e.lines().count() == 1, "{e}");

    // no log holds a secret this run issued
    let secrets = [
        secret(&root_data(d).join("admin.token")),
        good.clone(),
        secret(&d.join("cluster-1").join("join.token")),
        secret(&d.join("cluster-1").join("parent.credential")),
        credential.clone(),
        viewer.token.clone(),
        operator.token.clone(),
        once.token.clone(),
        secret(&d.join("c2").join("parent.credential")),
    ];
    for p in &procs {
        let log = p.log();
        for s in &secrets {
            // the secret part (after the id) of each token
            let tail = s.rsplit('.').next().unwrap_or(s);
            let tail = if s.starts_with("edgeio1.") {
                s.split('.').nth(2).unwrap()
            } else {
                tail
            };
            assert!(!log.contains(tail), "{}'s log holds a secret", p.name);
        }
    }
    as_viewer.job(&id).await.unwrap();
    admin.terminate(&id).await.unwrap();
    let pattern = format!("sleep {marker}");
    until("no process left", &mut procs, async || {
        processes_running(&pattern).is_empty().then_some(())
    })
    .await;
}

fn procs_log(procs: &[Proc], name: &str) -> String {
    procs
        .iter()
        .find(|p| p.name == name)
        .map(Proc::log)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mosquitto_a_command_without_the_clusters_signature_is_ignored() {
    use edgeio::transport_mqtt::testing::Mosquitto;
    if !edgeio::testing::require::mosquitto() {
        return;
    }
    let mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = dir.path();
    let (root_port, cluster_port) = (free_port(), free_port());
    let mut procs = vec![Proc::start(
        "root",
        "root",
        &root_args(d, root_port, &[]),
        d,
    )];
    let admin = root_client(d, root_port, &mut procs).await;
    let broker = mosquitto.url();
    let cluster = cluster_args(
        d,
        "cluster-1",
        root_port,
        cluster_port,
        0,
        &["--broker", &broker],
    );
    procs.push(Proc::start("cluster-1", "cluster", &cluster, d));
    serves(d, cluster_port, &mut procs).await;
    let worker = worker_args(d, "w1", cluster_port, "cluster-1");
    procs.push(Proc::start("w1", "worker", &worker, d));
    ready_nodes(&admin, &mut procs, &["cluster-1"], 1).await;
    assert!(
        d.join("w1").join("signing.key").is_file(),
        "a key was issued"
    );

    // an outsider on the broker sees the cluster's (signed) deploy go by
    let port = mosquitto.port().to_string();
    let capture = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "edgeio/nodes/w1/control",
        ])
        .args(["-C", "1", "-W", "30"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let marker = format!("{}", 5_200_000 + std::process::id() % 1_000_000);
    let pattern = format!("sleep {marker}");
    let view = admin
        .submit(job("signed", &marker, "").into_bytes(), "application/yaml")
        .await
        .unwrap();
    let id = view.id.to_string();
    until("the signed job RUNNING", &mut procs, async || {
        (admin.job(&id).await.ok()?.state == JobState::Running).then_some(())
    })
    .await;
    let out = capture.wait_with_output().expect("the capture ends");
    let seen = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut deploy: serde_json::Value = serde_json::from_str(&seen).expect("an envelope");
    assert_eq!(deploy["kind"], "deploy", "{seen}");
    assert!(deploy.get("seal").is_some(), "the cluster signs: {seen}");
    admin.terminate(&id).await.unwrap();
    until("the signed job's process gone", &mut procs, async || {
        processes_running(&pattern).is_empty().then_some(())
    })
    .await;

    // the outsider publishes it again: verbatim, then as a new command unsigned, then with
    // the old signature over a new id — the worker starts nothing and says why
    let publish = |text: String| {
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-q", "1"])
            .args(["-t", "edgeio/nodes/w1/control", "-m", &text])
            .status()
            .expect("mosquitto_pub runs");
        assert!(status.success());
    };
    publish(seen.clone());
    deploy["id"] = serde_json::Value::String("6f1c2d3e-0000-4000-8000-000000000001".into());
    publish(deploy.to_string());
    deploy.as_object_mut().unwrap().remove("seal");
    deploy["id"] = serde_json::Value::String("6f1c2d3e-0000-4000-8000-000000000002".into());
    publish(deploy.to_string());
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        processes_running(&pattern).is_empty(),
        "a forged or replayed deploy started the job again"
    );
    let log = procs[2].log();
    assert!(log.contains("command dropped"), "{log}");
}
