//! The secure embedded broker, end to end over real TLS: a test CA made with rcgen issues the
//! broker's certificate; nodes and the cluster log in with user name and secret; the topic
//! rule holds against other nodes' topics and wildcards; credentials change while it runs;
//! plain TCP and untrusted clients are refused.

mod common;

use common::*;
use edgeio_core::transport::{ChildTransport, ParentEvent, ParentTransport, TransportError};
use edgeio_core::wire::{Codec, Envelope, Message, Scale, DEFAULT_MAX_MESSAGE_BYTES};
use edgeio_transport_mqtt::{
    BrokerConfig, BrokerHandle, BrokerSecurity, BrokerTls, ChildConfig, EmbeddedBroker,
    LinkCredentials, LinkTls, MqttChild, MqttParent, NodeCredentials, ParentConfig,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Packet, QoS, SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLUSTER: &str = "cluster";
const CLUSTER_SECRET: &str = "cluster-secret";

/// A CA and a server certificate for `localhost` and 127.0.0.1 issued by it, as PEM.
struct TestCa {
    ca_pem: String,
    chain_pem: String,
    key_pem: String,
}

fn test_ca(name: &str) -> TestCa {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("ca certificate");
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut server = CertificateParams::default();
    server
        .distinguished_name
        .push(DnType::CommonName, "edgeio test broker");
    server.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().expect("dns name")),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ];
    let cert = server.signed_by(&key, &issuer).expect("server certificate");
    TestCa {
        ca_pem: ca_cert.pem(),
        // leaf first, then the CA, as a deployment hands over its chain
        chain_pem: format!("{}{}", cert.pem(), ca_cert.pem()),
        key_pem: key.serialize_pem(),
    }
}

/// A secure broker on a free port, its CA and the node credentials it checks.
struct Secure {
    broker: BrokerHandle,
    nodes: NodeCredentials,
    ca: TestCa,
}

fn secure_broker() -> Secure {
    let ca = test_ca("edgeio test CA");
    let nodes = NodeCredentials::new();
    let tls = BrokerTls::from_pem(ca.chain_pem.as_bytes(), ca.key_pem.as_bytes()).expect("tls");
    let security = BrokerSecurity::new(tls, CLUSTER, CLUSTER_SECRET, Arc::new(nodes.clone()))
        .expect("security");
    let broker =
        EmbeddedBroker::start_secure(BrokerConfig::default(), security).expect("secure broker");
    assert!(
        broker.url().starts_with("mqtts://127.0.0.1:"),
        "{}",
        broker.url()
    );
    Secure { broker, nodes, ca }
}

impl Secure {
    fn tls(&self) -> LinkTls {
        LinkTls::from_ca_pem(self.ca.ca_pem.as_bytes()).expect("link tls")
    }

    fn parent(&self) -> ParentConfig {
        let mut config = parent_config(&self.broker.url());
        config.link.tls = Some(self.tls());
        config.link.credentials = Some(LinkCredentials::new(CLUSTER, CLUSTER_SECRET));
        config
    }

    fn child(&self, node: &str, user: &str, secret: &str) -> ChildConfig {
        let mut config = child_config(node, &self.broker.url());
        config.link.tls = Some(self.tls());
        config.link.credentials = Some(LinkCredentials::new(user, secret));
        config.link.connect_timeout_ms = 3_000;
        config
    }

    /// A bare rumqttc client over TLS, to send what MqttChild never would.
    fn raw(
        &self,
        client_id: &str,
        user: &str,
        secret: &str,
        will: Option<LastWill>,
    ) -> (AsyncClient, EventLoop) {
        let port = self.broker.addr().port();
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_credentials(user, secret);
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            self.tls().client_config().clone(),
        )));
        if let Some(will) = will {
            options.set_last_will(will);
        }
        AsyncClient::new(options, 16)
    }
}

/// Polls `eventloop` until `wanted` picks an event or the loop fails, within [`WAIT`].
async fn poll_until<T>(
    eventloop: &mut EventLoop,
    what: &str,
    mut wanted: impl FnMut(&Event) -> Option<T>,
) -> Result<T, Box<ConnectionError>> {
    let search = async {
        loop {
            let event = eventloop.poll().await.map_err(Box::new)?;
            if let Some(found) = wanted(&event) {
                return Ok(found);
            }
        }
    };
    tokio::time::timeout(WAIT, search)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

async fn connack(eventloop: &mut EventLoop) -> Result<(), Box<ConnectionError>> {
    poll_until(eventloop, "a CONNACK", |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())
    })
    .await
}

fn command(replicas: u32) -> Envelope {
    Envelope::new(
        "test-cluster",
        Message::Scale(Scale {
            job: "web".parse().expect("job id"),
            replicas,
        }),
    )
}

fn codec() -> Codec {
    Codec::new(DEFAULT_MAX_MESSAGE_BYTES)
}

fn refused(result: Result<MqttChild, TransportError>, what: &str) -> String {
    match result {
        Ok(child) => panic!("{what}: connected as {child:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_the_cluster_link_over_tls_with_their_credentials() {
    let secure = secure_broker();
    let node = unique("tls-node");
    secure.nodes.insert(&node, "node-secret").expect("insert");
    let parent = MqttParent::connect(secure.parent())
        .await
        .expect("the cluster connects");
    let child = MqttChild::connect(secure.child(&node, &node, "node-secret"), status(&node))
        .await
        .expect("the node connects");
    wait_up(&parent, &node).await;
    // down: the cluster publishes on the node's control topic
    let down = command(3);
    parent.send(&node, &down).await.expect("send down");
    let got = tokio::time::timeout(WAIT, child.recv())
        .await
        .expect("a command in time")
        .expect("decodes");
    assert_eq!(got.id, down.id);
    // up: events, then the close notice on the will topic
    let up = status(&node);
    child.send(&up).await.expect("send up");
    wait_event(
        &parent,
        "the node's status",
        |e| matches!(e, ParentEvent::Message { envelope, .. } if envelope.id == up.id),
    )
    .await;
    child.close().await.expect("close");
    wait_event(
        &parent,
        "ChildLost",
        |e| matches!(e, ParentEvent::ChildLost { child, .. } if *child == node),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wrong_or_borrowed_credentials_are_refused_at_connect() {
    let secure = secure_broker();
    let node = unique("node");
    let other = unique("other");
    secure.nodes.insert(&node, "right").expect("insert");
    secure.nodes.insert(&other, "other").expect("insert");

    let mut none = secure.child(&node, &node, "x");
    none.link.credentials = None;
    let started = Instant::now();
    let reason = refused(MqttChild::connect(none, status(&node)).await, "no login");
    assert!(
        reason.contains("refused") && reason.contains("NotAuthorized"),
        "{reason}"
    );
    // a refusal ends `connect` at once, not at the end of connect_timeout_ms
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        started.elapsed()
    );

    for (client_id, user, secret, what) in [
        (&node, &node, "wrong", "a wrong secret"),
        (&node, &node, "", "an empty secret"),
        (&node, &unique("unknown"), "right", "an unknown user"),
        (
            &other,
            &node,
            "right",
            "a node's login under another client id",
        ),
        (
            &node,
            &CLUSTER.to_string(),
            "right",
            "the cluster's name with a node's secret",
        ),
    ] {
        let reason = refused(
            MqttChild::connect(secure.child(client_id, user, secret), status(client_id)).await,
            what,
        );
        assert!(reason.contains("BadUserNamePassword"), "{what}: {reason}");
        assert!(
            !reason.contains("right"),
            "{what}: the secret is in {reason}"
        );
    }
    // and the right login still works after all that
    MqttChild::connect(secure.child(&node, &node, "right"), status(&node))
        .await
        .expect("the right login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_may_subscribe_only_its_own_control_topic() {
    let secure = secure_broker();
    let node = unique("node");
    let other = unique("other");
    secure.nodes.insert(&node, "n").expect("insert");
    secure.nodes.insert(&other, "o").expect("insert");
    let parent = MqttParent::connect(secure.parent()).await.expect("cluster");
    // the other node is up, so the cluster sends to it
    let _other_child = MqttChild::connect(secure.child(&other, &other, "o"), status(&other))
        .await
        .expect("other node");
    wait_up(&parent, &other).await;

    let (client, mut eventloop) = secure.raw(&node, &node, "n", None);
    connack(&mut eventloop).await.expect("the node's login");
    let filters = [
        format!("edgeio/nodes/{other}/control"),
        "edgeio/nodes/+/control".to_string(),
        "edgeio/nodes/#".to_string(),
        "#".to_string(),
        format!("$share/g/edgeio/nodes/{other}/control"),
        format!("edgeio/nodes/{node}/control"),
    ];
    client
        .subscribe_many(
            filters
                .iter()
                .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
        )
        .await
        .expect("subscribe");
    let codes = poll_until(&mut eventloop, "the SUBACK", |e| match e {
        Event::Incoming(Packet::SubAck(ack)) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await
    .expect("a SUBACK");
    let mut expected = vec![SubscribeReasonCode::Failure; filters.len() - 1];
    expected.push(SubscribeReasonCode::Success(QoS::AtLeastOnce));
    assert_eq!(codes, expected, "filters {filters:?}");

    // the cluster commands the other node, then this one: only this one's arrives
    let theirs = command(1);
    let ours = command(2);
    parent.send(&other, &theirs).await.expect("to the other");
    // the cluster only sends to nodes it saw: announce this raw one
    let announce = codec().encode(&status(&node)).expect("encode");
    client
        .publish(
            format!("edgeio/nodes/{node}/info"),
            QoS::AtLeastOnce,
            false,
            announce,
        )
        .await
        .expect("announce");
    let poll_raw = async {
        poll_until(&mut eventloop, "a command", |e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
    };
    let (received, ()) = tokio::join!(poll_raw, async {
        wait_up(&parent, &node).await;
        parent.send(&node, &ours).await.expect("to this one");
    });
    let received = received.expect("a publish");
    assert_eq!(received.topic, format!("edgeio/nodes/{node}/control"));
    let envelope = codec().decode(&received.payload).expect("envelope");
    assert_eq!(
        envelope.id, ours.id,
        "the other node's command was delivered first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_publish_as_another_node() {
    let secure = secure_broker();
    let node = unique("node");
    let victim = unique("victim");
    secure.nodes.insert(&node, "n").expect("insert");
    secure.nodes.insert(&victim, "v").expect("insert");
    let parent = MqttParent::connect(secure.parent()).await.expect("cluster");

    // a status as the victim: dropped, and the publisher disconnected
    let (client, mut eventloop) = secure.raw(&node, &node, "n", None);
    connack(&mut eventloop).await.expect("the node's login");
    let forged = codec().encode(&status(&victim)).expect("encode");
    client
        .publish(
            format!("edgeio/nodes/{victim}/info"),
            QoS::AtLeastOnce,
            false,
            forged,
        )
        .await
        .expect("queued");
    let outcome = poll_until(&mut eventloop, "the refusal", |e| match e {
        Event::Incoming(Packet::PubAck(_)) => Some("acknowledged"),
        _ => None,
    })
    .await;
    assert!(
        outcome.is_err(),
        "a forged publish was {outcome:?} instead of closing the connection"
    );

    // a will on the victim's will topic: refused at CONNECT
    let will = LastWill::new(
        format!("edgeio/nodes/{victim}/will"),
        "lost",
        QoS::AtLeastOnce,
        false,
    );
    let (_client, mut eventloop) = secure.raw(&node, &node, "n", Some(will));
    match connack(&mut eventloop).await {
        Err(e)
            if matches!(
                *e,
                ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)
            ) => {}
        other => panic!("a will as another node: {other:?}"),
    }

    // the node's own messages still pass, and nothing of the victim's arrived before them
    let child = MqttChild::connect(secure.child(&node, &node, "n"), status(&node))
        .await
        .expect("the node itself");
    let first = wait_event(&parent, "any event", |_| true).await;
    assert!(
        matches!(&first, ParentEvent::ChildUp { child } if *child == node),
        "first event {first:?}"
    );
    let up = status(&node);
    child.send(&up).await.expect("send");
    let next = wait_event(&parent, "the node's messages", |e| {
        matches!(e, ParentEvent::Message { envelope, .. } if envelope.id == up.id)
            || !matches!(e, ParentEvent::Message { child, .. } if *child == node)
    })
    .await;
    assert!(
        matches!(&next, ParentEvent::Message { envelope, .. } if envelope.id == up.id),
        "unexpected {next:?}"
    );
    assert!(!parent.children().await.contains(&victim));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_identity_may_do_everything() {
    let secure = secure_broker();
    let node = unique("node");
    secure.nodes.insert(&node, "n").expect("insert");
    let (client, mut eventloop) = secure.raw("any-client-id", CLUSTER, CLUSTER_SECRET, None);
    connack(&mut eventloop).await.expect("the cluster's login");
    client
        .subscribe_many(
            ["#", "edgeio/nodes/+/control"]
                .map(|f| SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce)),
        )
        .await
        .expect("subscribe");
    let codes = poll_until(&mut eventloop, "the SUBACK", |e| match e {
        Event::Incoming(Packet::SubAck(ack)) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await
    .expect("a SUBACK");
    assert_eq!(
        codes,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); 2]
    );
    // it publishes on a node's info topic and hears its own message through `#`
    let topic = format!("edgeio/nodes/{node}/info");
    client
        .publish(topic.clone(), QoS::AtLeastOnce, false, "hello")
        .await
        .expect("publish");
    let heard = poll_until(&mut eventloop, "its own publish", |e| match e {
        Event::Incoming(Packet::Publish(p)) => Some(p.topic.clone()),
        _ => None,
    })
    .await
    .expect("a publish");
    assert_eq!(heard, topic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_credentials_cannot_connect_again_and_a_connected_node_is_closed() {
    let secure = secure_broker();
    let node = unique("node");
    let parent = MqttParent::connect(secure.parent()).await.expect("cluster");
    // registered while the broker runs
    secure.nodes.insert(&node, "n").expect("insert");
    let child = MqttChild::connect(secure.child(&node, &node, "n"), status(&node))
        .await
        .expect("connects once registered");
    wait_up(&parent, &node).await;

    assert!(secure.nodes.remove(&node));
    let reason = refused(
        MqttChild::connect(secure.child(&node, &node, "n"), status(&node)).await,
        "removed credentials",
    );
    assert!(reason.contains("BadUserNamePassword"), "{reason}");

    // the node still connected is closed at its next publish: the cluster sees it lost
    let _ = child.send(&status(&node)).await;
    wait_event(
        &parent,
        "ChildLost of the removed node",
        |e| matches!(e, ParentEvent::ChildLost { child, .. } if *child == node),
    )
    .await;
    eventually("the removed node to be disconnected", WAIT, || {
        !child.is_connected()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tcp_client_is_refused_by_the_tls_listener() {
    let secure = secure_broker();
    let node = unique("node");
    secure.nodes.insert(&node, "n").expect("insert");
    let plain_url = format!("mqtt://127.0.0.1:{}", secure.broker.addr().port());

    // MqttChild without TLS, with the right login
    let mut config = child_config(&node, &plain_url);
    config.link.credentials = Some(LinkCredentials::new(&node, "n"));
    config.link.connect_timeout_ms = 1_500;
    let reason = refused(
        MqttChild::connect(config, status(&node)).await,
        "plain MQTT",
    );
    assert!(reason.contains("could not connect"), "{reason}");

    // a raw plain CONNECT is never answered with a CONNACK
    let mut stream = tokio::net::TcpStream::connect(secure.broker.addr())
        .await
        .expect("tcp");
    let connect = [
        0x10, 0x10, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 5, 0, 4, b'p', b'l', b'a', b'n',
    ];
    stream.write_all(&connect).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the TLS listener held a plain socket open");
    assert_ne!(
        answer.first(),
        Some(&0x20),
        "a CONNACK over plain TCP: {answer:02x?}"
    );

    // and it keeps serving TLS clients
    MqttChild::connect(secure.child(&node, &node, "n"), status(&node))
        .await
        .expect("a TLS node after the plain one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_ca_fails_the_handshake() {
    let secure = secure_broker();
    let node = unique("node");
    secure.nodes.insert(&node, "n").expect("insert");
    let stranger = test_ca("another CA");
    let mut config = secure.child(&node, &node, "n");
    config.link.tls = Some(LinkTls::from_ca_pem(stranger.ca_pem.as_bytes()).expect("tls"));
    config.link.connect_timeout_ms = 1_500;
    let reason = refused(
        MqttChild::connect(config, status(&node)).await,
        "untrusted CA",
    );
    assert!(reason.contains("certificate"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_does_not_stop_the_listener() {
    let secure = secure_broker();
    let node = unique("node");
    secure.nodes.insert(&node, "n").expect("insert");
    // a TCP connection that never starts its TLS handshake
    let _stalled = tokio::net::TcpStream::connect(secure.broker.addr())
        .await
        .expect("tcp");
    let started = Instant::now();
    MqttChild::connect(secure.child(&node, &node, "n"), status(&node))
        .await
        .expect("a node while another socket stalls");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
