//! What a stranger reaches at the embedded broker before authenticating — the MQTT CONNECT —
//! answered for arbitrary bytes without a crash or a hang, and never accepted: afterwards a
//! real parent and child still link through it. Cases come from a deterministic proptest
//! runner, one broker for all of them.

mod common;

use common::*;
use edgeio_core::transport::ParentTransport;
use edgeio_transport_mqtt::{BrokerConfig, BrokerUrl, EmbeddedBroker, MqttChild, MqttParent};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CASES: usize = 48;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_bytes_for_a_connect_are_never_accepted_and_the_broker_keeps_serving() {
    let broker = EmbeddedBroker::start(BrokerConfig::default()).expect("broker");
    let url: BrokerUrl = broker.url().parse().expect("url");
    let mut runner = TestRunner::deterministic();
    for case in 0..CASES {
        let mut bytes = proptest::collection::vec(proptest::num::u8::ANY, 0..4096)
            .new_tree(&mut runner)
            .expect("a value")
            .current();
        if case % 3 == 0 {
            // a CONNECT's fixed header with a length that may lie, then garbage
            bytes.splice(0..0, [0x10, 0xff, 0xff, 0x7f]);
        }
        let mut stream = tokio::net::TcpStream::connect((url.host(), url.port()))
            .await
            .expect("connect");
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
        // whatever comes back (most likely nothing) is not a CONNACK that accepts
        let mut answer = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "case {case}: the broker held the socket open");
        assert!(
            !answer.starts_with(&[0x20, 0x02, 0x00, 0x00]),
            "case {case}: garbage was accepted as a CONNECT"
        );
    }
    let parent = MqttParent::connect(parent_config(&broker.url()))
        .await
        .expect("a parent after the hostile input");
    let node = unique("after-hostile");
    let child = MqttChild::connect(child_config(&node, &broker.url()), status(&node))
        .await
        .expect("a child after the hostile input");
    wait_up(&parent, &node).await;
    drop(child);
    assert!(parent.children().await.len() <= 1);
}
