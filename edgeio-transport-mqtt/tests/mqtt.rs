//! Behaviour beyond the conformance suite: wills, interop with Mosquitto's own clients,
//! reconnection after a broker restart, the embedded broker's address, oversized packets.

mod common;

use common::*;
use edgeio_core::model::InstanceId;
use edgeio_core::state::InstanceState;
use edgeio_core::testing::require;
use edgeio_core::transport::{ChildTransport, ParentEvent, ParentTransport, TransportError};
use edgeio_core::wire::{Envelope, InstanceEvent, Message, Scale};
use edgeio_transport_mqtt::{
    BrokerConfig, EmbeddedBroker, MqttChild, MqttParent, PACKET_OVERHEAD_BYTES,
};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn event(node: &str, n: u32) -> Envelope {
    Envelope::new(
        node,
        Message::InstanceEvent(InstanceEvent {
            job: "web".parse().expect("job id"),
            instance: format!("web-{n}")
                .parse::<InstanceId>()
                .expect("instance id"),
            node: node.to_string(),
            state: InstanceState::Running,
            exit_code: None,
            reason: format!("test event {n}"),
            unschedulable: None,
        }),
    )
}

fn scale(replicas: u32) -> Envelope {
    Envelope::new(
        "test-cluster",
        Message::Scale(Scale {
            job: "web".parse().expect("job id"),
            replicas,
        }),
    )
}

async fn wait_message(parent: &MqttParent, id: &str) -> (String, Envelope) {
    match wait_event(
        parent,
        &format!("message {id}"),
        |e| matches!(e, ParentEvent::Message { envelope, .. } if envelope.id == id),
    )
    .await
    {
        ParentEvent::Message { child, envelope } => (child, envelope),
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn recv_down(child: &MqttChild) -> Envelope {
    tokio::time::timeout(WAIT, child.recv())
        .await
        .expect("a command within the deadline")
        .expect("the command decodes")
}

/// Kills the child process on drop, so a failing test leaves nothing behind.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real child process, killed with SIGKILL, is reported lost through its will.
async fn killed_child_process_is_reported_lost(url: &str) {
    let parent = MqttParent::connect(parent_config(url))
        .await
        .expect("parent");
    let node = unique("killed");
    let mut process = Killed(
        Command::new(env!("CARGO_BIN_EXE_edgeio-mqtt-test-child"))
            .args([url, node.as_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the test child starts"),
    );
    let stdout = process.0.stdout.take().expect("piped stdout");
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(WAIT, ready)
        .await
        .expect("the test child connects within the deadline")
        .expect("reader task")
        .expect("stdout readable");
    assert_eq!(line.trim(), "ready", "the test child's first line");
    wait_up(&parent, &node).await;

    process.0.kill().expect("SIGKILL");
    let killed_at = Instant::now();
    let _ = process.0.wait();
    let lost = wait_event(
        &parent,
        &format!("ChildLost of {node}"),
        |e| matches!(e, ParentEvent::ChildLost { child, .. } if *child == node),
    )
    .await;
    assert!(killed_at.elapsed() < Duration::from_secs(10));
    match lost {
        ParentEvent::ChildLost { reason, .. } => assert!(reason.contains("last will"), "{reason}"),
        other => panic!("expected ChildLost, got {other:?}"),
    }
    assert!(!parent.children().await.contains(&node));
    assert!(matches!(
        parent.send(&node, &scale(1)).await,
        Err(TransportError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_process_killed_with_sigkill_is_lost_through_its_will_on_the_embedded_broker() {
    let broker = EmbeddedBroker::start(BrokerConfig::default()).expect("broker");
    killed_child_process_is_reported_lost(&broker.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_process_killed_with_sigkill_is_lost_through_its_will_on_mosquitto() {
    if !require::mosquitto() {
        return;
    }
    let mosquitto = Mosquitto::start();
    killed_child_process_is_reported_lost(&mosquitto.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_child_without_close_fires_its_will() {
    let broker = EmbeddedBroker::start(BrokerConfig::default()).expect("broker");
    let parent = MqttParent::connect(parent_config(&broker.url()))
        .await
        .expect("parent");
    let child = MqttChild::connect(
        child_config("dropped-1", &broker.url()),
        status("dropped-1"),
    )
    .await
    .expect("child");
    wait_up(&parent, "dropped-1").await;
    drop(child);
    wait_event(
        &parent,
        "ChildLost of dropped-1",
        |e| matches!(e, ParentEvent::ChildLost { child, .. } if child == "dropped-1"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_sees_the_status_json_a_child_published() {
    if !require::mosquitto() {
        return;
    }
    let mosquitto = Mosquitto::start();
    let child = MqttChild::connect(
        child_config("interop-1", &mosquitto.url()),
        status("interop-1"),
    )
    .await
    .expect("child");
    let port = mosquitto.port().to_string();
    // -W 10 makes mosquitto_sub exit by itself within 10 s, so it cannot outlive the test.
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "edgeio/nodes/+/info"])
        .args(["-C", "1", "-W", "10"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub starts");
    // mosquitto_sub gives no sign when it has subscribed, so the child publishes its status
    // every 100 ms until mosquitto_sub has one (it exits after one message, -C 1).
    let waiter = tokio::task::spawn_blocking(move || sub.wait_with_output());
    let publishing = async {
        loop {
            child.send(&status("interop-1")).await.expect("status sent");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let output = tokio::select! {
        out = tokio::time::timeout(Duration::from_secs(15), waiter) => out
            .expect("mosquitto_sub finishes within 15 s")
            .expect("waiter task")
            .expect("mosquitto_sub output"),
        _ = publishing => unreachable!("the publishing loop never ends"),
    };
    assert!(
        output.status.success(),
        "mosquitto_sub failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("mosquitto_sub printed JSON");
    assert_eq!(json["kind"], "node_status", "{json}");
    assert_eq!(json["from"], "interop-1", "{json}");
    assert_eq!(json["v"], 1, "{json}");
    child.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_reconnect_after_mosquitto_restarts_on_the_same_port() {
    if !require::mosquitto() {
        return;
    }
    let mut mosquitto = Mosquitto::start();
    let url = mosquitto.url();
    let parent = MqttParent::connect(parent_config(&url))
        .await
        .expect("parent");
    let child = MqttChild::connect(child_config("restart-1", &url), status("restart-1"))
        .await
        .expect("child");
    wait_up(&parent, "restart-1").await;

    mosquitto.kill();
    eventually("both sides notice the broker is gone", WAIT, || {
        !parent.is_connected() && !child.is_connected()
    })
    .await;
    assert!(matches!(
        child.send(&event("restart-1", 0)).await,
        Err(TransportError::Unavailable { .. })
    ));
    assert!(
        mosquitto.restart(),
        "mosquitto restarts on port {}",
        mosquitto.port()
    );
    eventually("both sides reconnect", Duration::from_secs(15), || {
        parent.is_connected() && child.is_connected()
    })
    .await;

    let up = event("restart-1", 1);
    child.send(&up).await.expect("send after the restart");
    let (from, got) = wait_message(&parent, &up.id).await;
    assert_eq!((from.as_str(), &got), ("restart-1", &up));
    let down = scale(7);
    parent
        .send("restart-1", &down)
        .await
        .expect("command after the restart");
    assert_eq!(recv_down(&child).await, down);
    child.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_reports_a_connectable_address_and_two_get_different_ports() {
    let first = EmbeddedBroker::start(BrokerConfig::default()).expect("first broker");
    let second = EmbeddedBroker::start(BrokerConfig::default()).expect("second broker");
    for broker in [&first, &second] {
        assert_ne!(broker.addr().port(), 0);
        assert!(broker.addr().ip().is_loopback());
        assert_eq!(
            broker.url(),
            format!("mqtt://127.0.0.1:{}", broker.addr().port())
        );
        TcpStream::connect_timeout(&broker.addr(), Duration::from_secs(2))
            .expect("the reported address accepts connections");
    }
    assert_ne!(first.addr().port(), second.addr().port());

    // Both are real MQTT brokers, each with its own subscribers.
    let parent = MqttParent::connect(parent_config(&second.url()))
        .await
        .expect("parent");
    let child = MqttChild::connect(child_config("second-1", &second.url()), status("second-1"))
        .await
        .expect("child");
    wait_up(&parent, "second-1").await;
    child.close().await.expect("close");
}

#[tokio::test]
async fn an_embedded_broker_on_a_port_in_use_is_unavailable_and_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let addr = taken.local_addr().expect("its address");
    let config = BrokerConfig {
        listen: addr,
        ..BrokerConfig::default()
    };
    match EmbeddedBroker::start(config) {
        Err(TransportError::Unavailable { reason }) => {
            assert!(reason.contains(&addr.to_string()), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn connecting_to_a_dead_broker_fails_in_time_and_names_the_url() {
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let mut config = parent_config(&url);
    config.link.connect_timeout_ms = 1_000;
    let started = Instant::now();
    match MqttParent::connect(config).await {
        Err(TransportError::Unavailable { reason }) => assert!(reason.contains(&url), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut config = child_config("nobody-1", &url);
    config.link.connect_timeout_ms = 1_000;
    match MqttChild::connect(config, status("nobody-1")).await {
        Err(TransportError::Unavailable { reason }) => assert!(reason.contains(&url), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_settings_are_invalid_before_any_connection() {
    for (node, url) in [("n/1", "mqtt://127.0.0.1:1"), ("n1", "http://127.0.0.1:1")] {
        match MqttChild::connect(child_config(node, url), status("n1")).await {
            Err(TransportError::Invalid { reason, .. }) => {
                assert!(reason.contains(node) || reason.contains(url), "{reason}")
            }
            other => panic!("{node} {url}: expected Invalid, got {other:?}"),
        }
    }
}

/// A raw publish over the packet limit, from a client that bypasses the codec, never
/// reaches the parent, and the link between parent and child carries on.
async fn oversized_raw_packet_does_not_break_the_link(url: &str) {
    let parent = MqttParent::connect(parent_config(url))
        .await
        .expect("parent");
    let node = unique("big");
    let child = MqttChild::connect(child_config(&node, url), status(&node))
        .await
        .expect("child");
    wait_up(&parent, &node).await;

    let limit = edgeio_core::wire::DEFAULT_MAX_MESSAGE_BYTES + PACKET_OVERHEAD_BYTES;
    let url_parsed: edgeio_transport_mqtt::BrokerUrl = url.parse().expect("url");
    let mut options =
        rumqttc::MqttOptions::new(unique("rogue"), url_parsed.host(), url_parsed.port());
    options.set_max_packet_size(4 * limit, 4 * limit);
    let (rogue, mut rogue_loop) = rumqttc::AsyncClient::new(options, 10);
    rogue
        .publish(
            format!("edgeio/nodes/{node}/events"),
            rumqttc::QoS::AtMostOnce,
            false,
            vec![b'x'; 2 * limit],
        )
        .await
        .expect("rogue publish queued");
    // Drive the rogue until its big packet is written (or the broker drops it).
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match rogue_loop.poll().await {
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(_))) => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    })
    .await;
    drop(rogue_loop);

    // The link still works both ways; a parent that dropped its connection on the big packet
    // reconnects, so the child repeats its event until one arrives.
    let deadline = Instant::now() + Duration::from_secs(15);
    let got = loop {
        assert!(
            Instant::now() < deadline,
            "no event crossed after the oversized packet"
        );
        let up = event(&node, 1);
        if child.send(&up).await.is_ok() {
            let wait = tokio::time::timeout(Duration::from_millis(500), async {
                loop {
                    match parent.recv().await {
                        Ok(ParentEvent::Message {
                            envelope,
                            child: from,
                        }) if envelope.id == up.id => return (from, envelope),
                        Ok(ParentEvent::Message { envelope, .. }) => {
                            assert!(
                                envelope.kind() != "error",
                                "the oversized payload reached the parent"
                            );
                        }
                        Ok(ParentEvent::Invalid { error, .. }) => {
                            // Only a broker without a packet limit lets it through; the codec
                            // then refuses it as too large, and the link survives.
                            assert_eq!(error.error.code(), "too_large", "{error}");
                        }
                        Ok(_) => {}
                        Err(e) => panic!("parent recv: {e}"),
                    }
                }
            })
            .await;
            if let Ok(got) = wait {
                break got;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got.0, node);
    eventually("the parent is connected", WAIT, || parent.is_connected()).await;
    let down = scale(3);
    parent
        .send(&node, &down)
        .await
        .expect("command after the oversized packet");
    assert_eq!(recv_down(&child).await, down);
    child.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_raw_packet_is_refused_by_the_embedded_broker_and_the_link_survives() {
    let broker = EmbeddedBroker::start(BrokerConfig::default()).expect("broker");
    oversized_raw_packet_does_not_break_the_link(&broker.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_raw_packet_through_mosquitto_does_not_break_the_link() {
    if !require::mosquitto() {
        return;
    }
    let mosquitto = Mosquitto::start();
    oversized_raw_packet_does_not_break_the_link(&mosquitto.url()).await;
}

/// A child whose connection is taken over (another client with its id) is lost through its
/// will, reconnects by itself and announces itself again: the parent sees it up again and
/// can command it.
async fn a_child_cut_off_comes_back_up_by_itself(url: &str) {
    let parent = MqttParent::connect(parent_config(url))
        .await
        .expect("parent");
    let node = unique("cut");
    let child = MqttChild::connect(child_config(&node, url), status(&node))
        .await
        .expect("child");
    wait_up(&parent, &node).await;

    // A second connection with the child's client id makes the broker drop the child's
    // connection without a DISCONNECT, which fires the child's will.
    let broker: edgeio_transport_mqtt::BrokerUrl = url.parse().expect("url");
    let options = rumqttc::MqttOptions::new(node.clone(), broker.host(), broker.port());
    let (_intruder, mut intruder_loop) = rumqttc::AsyncClient::new(options, 10);
    tokio::time::timeout(WAIT, async {
        loop {
            match intruder_loop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("intruder connect: {e}"),
            }
        }
    })
    .await
    .expect("the intruder connects");
    drop(intruder_loop);

    wait_event(
        &parent,
        &format!("ChildLost of {node}"),
        |e| matches!(e, ParentEvent::ChildLost { child, .. } if *child == node),
    )
    .await;
    wait_up(&parent, &node).await;
    let down = scale(5);
    parent
        .send(&node, &down)
        .await
        .expect("command after the child came back");
    assert_eq!(recv_down(&child).await, down);
    child.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_cut_off_comes_back_up_by_itself_on_the_embedded_broker() {
    let broker = EmbeddedBroker::start(BrokerConfig::default()).expect("broker");
    a_child_cut_off_comes_back_up_by_itself(&broker.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_cut_off_comes_back_up_by_itself_on_mosquitto() {
    if !require::mosquitto() {
        return;
    }
    let mosquitto = Mosquitto::start();
    a_child_cut_off_comes_back_up_by_itself(&mosquitto.url()).await;
}
