//! Sealed links over a real Mosquitto, the external broker case: an outsider on the broker
//! can publish and subscribe on a node's topics, and what it publishes — unsigned, forged or
//! replayed — never reaches the engines above the sealing layers.

mod common;

use common::*;
use edgeio_core::seal::{ChildKeys, Direction, SealedChild, SealedParent, Sealer, SigningKey};
use edgeio_core::testing::require;
use edgeio_core::transport::{ChildTransport, ParentEvent, ParentTransport};
use edgeio_core::wire::{Codec, Envelope, Message, Scale, Topics};
use edgeio_transport_mqtt::{BrokerUrl, MqttChild, MqttParent};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::Duration;
use tokio::sync::mpsc;

fn scale(replicas: u32) -> Envelope {
    Envelope::new(
        "sealed-cluster",
        Message::Scale(Scale {
            job: "web".parse().expect("job id"),
            replicas,
        }),
    )
}

/// What the outsider's event loop saw.
#[derive(Debug)]
enum Seen {
    SubAck,
    PubAck,
    Publish(Vec<u8>),
}

/// A client of the broker that is neither parent nor child.
struct Outsider {
    client: AsyncClient,
    seen: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Outsider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Outsider {
    fn connect(url: &str) -> Outsider {
        let url: BrokerUrl = url.parse().expect("url");
        let options = MqttOptions::new(unique("outsider"), url.host(), url.port());
        let (client, mut eventloop) = AsyncClient::new(options, 10);
        let (tx, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let seen = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => Seen::SubAck,
                    Ok(Event::Incoming(Packet::PubAck(_))) => Seen::PubAck,
                    Ok(Event::Incoming(Packet::Publish(p))) => Seen::Publish(p.payload.to_vec()),
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "outsider reconnects");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        });
        Outsider { client, seen, task }
    }

    async fn wait(&mut self, what: &str, wanted: impl Fn(&Seen) -> bool) -> Seen {
        let search = async {
            loop {
                let seen = self.seen.recv().await.expect("outsider's loop runs");
                if wanted(&seen) {
                    return seen;
                }
            }
        };
        tokio::time::timeout(WAIT, search)
            .await
            .unwrap_or_else(|_| panic!("outsider: timed out waiting for {what}"))
    }

    async fn subscribe(&mut self, topic: &str) {
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .expect("subscribe queued");
        self.wait("suback", |s| matches!(s, Seen::SubAck)).await;
    }

    /// Publishes at QoS 1 and returns once the broker has it, so it reaches subscribers
    /// before anything published after this returns.
    async fn publish(&mut self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish queued");
        self.wait("puback", |s| matches!(s, Seen::PubAck)).await;
    }

    /// The next payload published on a topic it subscribed to.
    async fn captured(&mut self) -> Vec<u8> {
        match self
            .wait("a publish", |s| matches!(s, Seen::Publish(_)))
            .await
        {
            Seen::Publish(payload) => payload,
            other => panic!("expected a publish, got {other:?}"),
        }
    }
}

/// Messages reaching the parent's engine until the one with `id`, within [`WAIT`].
async fn messages_until(parent: &dyn ParentTransport, id: &str) -> Vec<Envelope> {
    let mut passed = Vec::new();
    wait_event(parent, &format!("message {id}"), |e| match e {
        ParentEvent::Message { envelope, .. } => {
            passed.push(envelope.clone());
            envelope.id == id
        }
        _ => false,
    })
    .await;
    passed
}

async fn command(child: &dyn ChildTransport) -> Envelope {
    tokio::time::timeout(WAIT, child.recv())
        .await
        .expect("a command within the deadline")
        .expect("the link is up")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_links_over_mosquitto_drop_unsigned_forged_and_replayed_messages() {
    if !require::mosquitto() {
        return;
    }
    let mosquitto = Mosquitto::start();
    let url = mosquitto.url();
    let node = unique("sealed");
    let topics = Topics::for_node(&node);
    let key = SigningKey::generate().expect("randomness");
    let keys = ChildKeys::new();
    keys.insert(node.clone(), key.clone());

    let parent = SealedParent::new(
        MqttParent::connect(parent_config(&url))
            .await
            .expect("parent"),
        1,
        keys,
    );
    let mut outsider = Outsider::connect(&url);
    outsider.subscribe(&topics.control).await;
    outsider.subscribe(&topics.info).await;
    // The announcement at connect goes out unsealed (the layer wraps the child after it):
    // the outsider sees it, the parent drops it.
    let child = SealedChild::new(
        MqttChild::connect(child_config(&node, &url), status(&node))
            .await
            .expect("child"),
        key.clone(),
        1,
    );
    outsider.captured().await;

    // Up: a sealed status passes, after the layer's ChildUp.
    let first = status(&node);
    child.send(&first).await.expect("status sent");
    let up = wait_event(&parent, "ChildUp", |e| {
        matches!(e, ParentEvent::ChildUp { .. } | ParentEvent::Message { .. })
    })
    .await;
    assert_eq!(
        up,
        ParentEvent::ChildUp {
            child: node.clone()
        }
    );
    assert_eq!(
        messages_until(&parent, &first.id).await,
        vec![first.clone()]
    );
    let captured_up = outsider.captured().await;
    assert!(String::from_utf8_lossy(&captured_up).contains(&first.id));

    // Up, from the outsider: an unsigned status, one sealed with another key, and the
    // captured genuine one again; then the child's next status. Only that one passes.
    let codec = Codec::default();
    let unsigned = status(&node);
    outsider
        .publish(&topics.info, codec.encode(&unsigned).expect("encodes"))
        .await;
    let forged = Sealer::new(Direction::Up, 1)
        .seal(&SigningKey::generate().expect("randomness"), &status(&node))
        .expect("seals");
    outsider
        .publish(&topics.info, codec.encode(&forged).expect("encodes"))
        .await;
    outsider.publish(&topics.info, captured_up).await;
    let second = status(&node);
    child.send(&second).await.expect("status sent");
    assert_eq!(messages_until(&parent, &second.id).await, vec![second]);

    // Down: a sealed command passes; the outsider captured it on the control topic.
    let genuine = scale(1);
    parent.send(&node, &genuine).await.expect("command sent");
    assert_eq!(command(&child).await, genuine);
    let captured_down = loop {
        let payload = outsider.captured().await;
        if String::from_utf8_lossy(&payload).contains(&genuine.id) {
            break payload;
        }
    };

    // Down, from the outsider: an unsigned command, a forged one, the captured one again;
    // then the parent's next command, which is the next thing the child's engine sees.
    outsider
        .publish(&topics.control, codec.encode(&scale(66)).expect("encodes"))
        .await;
    let forged = Sealer::new(Direction::Down, 1)
        .seal(&SigningKey::generate().expect("randomness"), &scale(67))
        .expect("seals");
    outsider
        .publish(&topics.control, codec.encode(&forged).expect("encodes"))
        .await;
    outsider.publish(&topics.control, captured_down).await;
    let next = scale(2);
    parent.send(&node, &next).await.expect("command sent");
    assert_eq!(command(&child).await, next);

    // Nothing of the outsider's is still on its way to either side.
    let late = tokio::time::timeout(Duration::from_millis(300), child.recv()).await;
    assert!(late.is_err(), "the child received {late:?}");
    let late = tokio::time::timeout(Duration::from_millis(300), parent.recv()).await;
    assert!(
        !matches!(late, Ok(Ok(ParentEvent::Message { .. }))),
        "the parent received {late:?}"
    );
}
